//! Dead-code elimination: keeps the nodes some result needs, renumbered densely in order.

use crate::ir::{Graph, NodeId};

/// The graph without nodes that no result depends on.
pub fn eliminate(graph: &Graph) -> Graph {
    let mut live = vec![false; graph.nodes.len()];
    for id in graph.results() {
        live[id.index()] = true;
    }
    // One backward sweep suffices: arguments always precede their users.
    for i in (0..graph.nodes.len()).rev() {
        if live[i] {
            for a in &graph.nodes[i].args {
                live[a.index()] = true;
            }
        }
    }
    let mut out = graph.empty_like();
    let mut map = vec![NodeId(u32::MAX); graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        if live[i] {
            let args: Vec<NodeId> = node.args.iter().map(|a| map[a.index()]).collect();
            map[i] = out.add(node.op.clone(), &args, node.origin);
        }
    }
    out.map_results(graph, |id| map[id.index()]);
    out
}

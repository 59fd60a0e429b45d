//! Stage 5, opt: graph in, equivalent smaller graph out. Passes rebuild the graph node by node
//! (no in-place surgery): `simplify` folds constants, applies algebraic identities and the
//! rewrites that make gradients readable; common subexpressions merge as nodes are re-added
//! (the graph hash-conses); `dce` drops what no result needs.

mod dce;
mod simplify;

use crate::ir::{Graph, NodeId};

/// Simplifies until nothing changes (at most a few rounds), then removes dead nodes.
pub fn optimize(graph: &Graph) -> Graph {
    let mut current = dce::eliminate(graph);
    for _ in 0..4 {
        let next = dce::eliminate(&rebuild(&current));
        let done = next.nodes.len() == current.nodes.len();
        current = next;
        if done {
            break;
        }
    }
    current
}

/// One simplifying pass over every node, in order.
fn rebuild(graph: &Graph) -> Graph {
    let mut out = graph.empty_like();
    let mut map: Vec<NodeId> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let args: Vec<NodeId> = node.args.iter().map(|a| map[a.index()]).collect();
        let id = simplify::simplify(&mut out, node.op.clone(), args, node.origin);
        map.push(id);
    }
    out.map_results(graph, |id| map[id.index()]);
    out
}

#[cfg(test)]
mod tests;

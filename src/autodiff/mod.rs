//! Stage 4, autodiff: forward graph in, the same graph extended with the loss's gradient with
//! respect to every parameter (`differentiate`), and then with the optimizer's update
//! (`step::train_step`). Gradients are ordinary graph nodes derived symbolically, one rule per
//! operation (`rules.rs`), never a tape replayed at run time. Only nodes that depend on a
//! parameter are differentiated, so no gradient of the input batch is ever computed.

mod emit;
mod rules;
pub mod step;

use crate::ir::{Graph, NodeId, Op, Origin};
use emit::Emitter;

/// Adds `graph.gradients`: d loss / d parameter for every parameter (zeros for a parameter the
/// loss does not reach).
pub fn differentiate(forward: &Graph) -> Graph {
    let mut graph = forward.clone();
    let loss = graph.result("loss").expect("a forward graph has a loss");
    let count = graph.nodes.len();
    // Which nodes a parameter flows into: only they need gradients.
    let mut depends = vec![false; count];
    for i in 0..count {
        let node = &graph.nodes[i];
        depends[i] =
            matches!(node.op, Op::Param(_)) || node.args.iter().any(|a| depends[a.index()]);
    }
    let mut grads: Vec<Option<NodeId>> = vec![None; count];
    let origin = graph.node(loss).origin;
    grads[loss.index()] = Some(
        Emitter {
            graph: &mut graph,
            origin,
        }
        .scalar(1.0),
    );
    for i in (0..count).rev() {
        let Some(g) = grads[i] else { continue };
        if !depends[i] {
            continue;
        }
        let id = NodeId(i as u32);
        let origin = graph.node(id).origin;
        let wanted: Vec<bool> = graph
            .node(id)
            .args
            .iter()
            .map(|a| depends[a.index()])
            .collect();
        let mut emitter = Emitter {
            graph: &mut graph,
            origin,
        };
        for (position, contribution) in rules::vjp(&mut emitter, id, g, &wanted) {
            let target = emitter.graph.node(id).args[position];
            if !wanted[position] {
                continue;
            }
            grads[target.index()] = Some(match grads[target.index()] {
                Some(sum) => emitter.add(sum, contribution),
                None => contribution,
            });
        }
    }
    for param in 0..graph.params.len() {
        let node = graph.add(Op::Param(param), &[], Origin::default());
        let gradient = match grads.get(node.index()).copied().flatten() {
            Some(g) => g,
            None => {
                let shape = graph.params[param].shape.clone();
                Emitter {
                    graph: &mut graph,
                    origin: Origin::default(),
                }
                .fill(0.0, &shape)
            }
        };
        graph.gradients.push((param, gradient));
    }
    graph
}

//! The optimizer update, built into the graph: from a graph with gradients to one training step
//! that computes every parameter's new value (`Graph::param_updates`) and the optimizer's state
//! (`Graph::state_updates`). The runtime supplies two scalars each step: `lr`, the learning
//! rate, and `step`, the 1-based step number for Adam's bias correction.

use super::emit::Emitter;
use crate::check::model::Optimizer;
use crate::ir::{DType, Decl, Graph, NodeId, Op, Origin, UnaryOp};

/// Index of the learning rate in `Graph::hypers`.
pub const LR: usize = 0;
/// Index of the step number in `Graph::hypers`.
pub const STEP: usize = 1;

/// Adds the optimizer update for every parameter. Optimizer state tensors are appended to the
/// graph's states (named `<param>.momentum`, `<param>.adam_m`, `<param>.adam_v`) and start at zero.
pub fn train_step(with_grads: &Graph, optimizer: &Optimizer) -> Graph {
    let mut graph = with_grads.clone();
    graph.hypers = vec!["lr".into(), "step".into()];
    let gradients = graph.gradients.clone();
    for (param, gradient) in gradients {
        let update = update(&mut graph, optimizer, param, gradient);
        graph.param_updates.push((param, update));
    }
    graph
}

fn update(graph: &mut Graph, optimizer: &Optimizer, param: usize, gradient: NodeId) -> NodeId {
    let origin = graph.node(gradient).origin;
    let w = graph.add(Op::Param(param), &[], Origin::default());
    let lr = graph.add(Op::Hyper(LR), &[], Origin::default());
    let weight_decay = optimizer.weight_decay();
    let mut e = Emitter { graph, origin };
    // L2 weight decay folded into the gradient, as PyTorch's SGD and Adam do: g' = g + λ·w
    let g = if weight_decay > 0.0 {
        let decay = e.scale(w, weight_decay);
        e.add(gradient, decay)
    } else {
        gradient
    };
    let direction = match *optimizer {
        Optimizer::Sgd {
            momentum, nesterov, ..
        } => {
            if momentum == 0.0 {
                g
            } else {
                // v ← μ·v + g'; step along v, or along g' + μ·v with Nesterov
                let v = state(&mut e, param, "momentum");
                let decayed = e.scale(v, momentum);
                let v_new = e.add(decayed, g);
                record(&mut e, v, v_new);
                if nesterov {
                    let ahead = e.scale(v_new, momentum);
                    e.add(g, ahead)
                } else {
                    v_new
                }
            }
        }
        Optimizer::Adam {
            beta1, beta2, eps, ..
        } => {
            // m ← β1·m + (1 − β1)·g';  v ← β2·v + (1 − β2)·g'²
            let m = state(&mut e, param, "adam_m");
            let v = state(&mut e, param, "adam_v");
            let m_kept = e.scale(m, beta1);
            let m_new_part = e.scale(g, 1.0 - beta1);
            let m_new = e.add(m_kept, m_new_part);
            let g2 = e.unary(UnaryOp::Square, g);
            let v_kept = e.scale(v, beta2);
            let v_new_part = e.scale(g2, 1.0 - beta2);
            let v_new = e.add(v_kept, v_new_part);
            record(&mut e, m, m_new);
            record(&mut e, v, v_new);
            // Bias correction: m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ); direction m̂ / (√v̂ + ε)
            let m_hat = bias_corrected(&mut e, m_new, beta1);
            let v_hat = bias_corrected(&mut e, v_new, beta2);
            let root = e.unary(UnaryOp::Sqrt, v_hat);
            let eps = e.scalar(eps);
            let denominator = e.add(root, eps);
            e.div(m_hat, denominator)
        }
    };
    // w ← w − lr · direction
    let step = e.mul(direction, lr);
    e.sub(w, step)
}

/// `x / (1 − βᵗ)`, with βᵗ computed as exp(t · ln β) from the step number t.
fn bias_corrected(e: &mut Emitter, x: NodeId, beta: f64) -> NodeId {
    if beta == 0.0 {
        return x;
    }
    let t = e.op(Op::Hyper(STEP), &[]);
    let log_beta = e.scalar(beta.ln());
    let exponent = e.mul(t, log_beta);
    let power = e.unary(UnaryOp::Exp, exponent);
    let one = e.scalar(1.0);
    let correction = e.sub(one, power);
    e.div(x, correction)
}

/// A new zero-initialized optimizer state shaped like the parameter.
fn state(e: &mut Emitter, param: usize, kind: &str) -> NodeId {
    let decl = &e.graph.params[param];
    let name = format!("{}.{kind}", decl.name);
    let shape = decl.shape.clone();
    e.graph.states.push(Decl {
        name,
        shape,
        dtype: DType::F32,
    });
    let index = e.graph.states.len() - 1;
    e.op(Op::State(index), &[])
}

/// Records a state's value after the step.
fn record(e: &mut Emitter, state: NodeId, value: NodeId) {
    let Op::State(index) = e.graph.node(state).op else {
        unreachable!("recording a state update for a non-state node")
    };
    e.graph.state_updates.push((index, value));
}

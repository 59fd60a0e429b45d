//! The optimizer update, built into the graph: from a graph with gradients to one training step
//! that computes every parameter's new value (`Graph::param_updates`) and the optimizer's state
//! (`Graph::state_updates`). The learning rate of each step is the schedule's function of the
//! step, computed in the graph from four scalars the runtime supplies (`HYPERS`), so that a run
//! resumed at step s takes the same rate as one that never stopped.

use super::emit::Emitter;
use crate::check::model::{Optimizer, Rule, Schedule, ScheduleKind};
use crate::ir::{DType, Decl, Graph, NodeId, Op, Origin, UnaryOp};

/// Index of the learning rate in `Graph::hypers`: the optimizer's, or `--lr`.
pub const LR: usize = 0;
/// Index of the step number, from 1: Adam's bias correction and the schedule read it.
pub const STEP: usize = 1;
/// Index of the number of steps in an epoch (the training set's batches, the last partial).
pub const STEPS_PER_EPOCH: usize = 2;
/// Index of the run's epochs: the length of a schedule that does not give its own.
pub const EPOCHS: usize = 3;
/// The scalars a training step reads, in index order.
pub const HYPERS: [&str; 4] = ["lr", "step", "steps_per_epoch", "epochs"];

/// PyTorch's guard against dividing by a zero norm when clipping.
const CLIP_EPS: f64 = 1e-6;

/// Adds the optimizer update for every parameter. Optimizer state tensors are appended to the
/// graph's states (named `<param>.momentum`, `<param>.adam_m`, ...) and start at zero. The
/// graph declares the step scalars up to the last it reads, and at least `lr` and `step`: a
/// model with a constant rate has the graph, and so the checkpoint hash, it always had.
pub fn train_step(with_grads: &Graph, optimizer: &Optimizer, schedule: &Schedule) -> Graph {
    let mut graph = with_grads.clone();
    graph.hypers = HYPERS.iter().map(|h| h.to_string()).collect();
    let gradients = graph.gradients.clone();
    let mut e = Emitter {
        graph: &mut graph,
        origin: Origin::default(),
    };
    let lr = scheduled(&mut e, schedule);
    let clip = optimizer
        .clip
        .map(|max| clip_factor(&mut e, &gradients, max));
    for (param, gradient) in gradients {
        let origin = e.graph.node(gradient).origin;
        let mut e = Emitter {
            graph: e.graph,
            origin,
        };
        let gradient = match clip {
            Some(factor) => e.mul(gradient, factor),
            None => gradient,
        };
        let update = update(&mut e, optimizer, lr, param, gradient);
        e.graph.param_updates.push((param, update));
    }
    let read = graph.nodes.iter().filter_map(|n| match n.op {
        Op::Hyper(i) => Some(i + 1),
        _ => None,
    });
    graph.hypers.truncate(read.max().unwrap_or(0).max(STEP + 1));
    graph
}

/// The update half of a data-parallel step: `train_step`'s update, from gradients the graph
/// reads as inputs (`<param>.grad`, summed over the processes) instead of computing them. Its
/// parameters and states are the whole step's, in the same order, so one checkpoint serves both.
pub fn update_step(forward: &Graph, optimizer: &Optimizer, schedule: &Schedule) -> Graph {
    let mut graph = forward.empty_like();
    graph.name = format!("{}.update", forward.name);
    graph.inputs = forward
        .params
        .iter()
        .map(|p| Decl {
            name: format!("{}.grad", p.name),
            shape: p.shape.clone(),
            dtype: p.dtype,
        })
        .collect();
    for param in 0..forward.params.len() {
        let gradient = graph.add(Op::Input(param), &[], Origin::default());
        graph.gradients.push((param, gradient));
    }
    train_step(&graph, optimizer, schedule)
}

/// A graph of the schedule alone and its node: the rate the training step computes, for the
/// log and the tests to read at any step.
pub fn learning_rate(schedule: &Schedule) -> (Graph, NodeId) {
    let mut graph = Graph::new("learning_rate");
    graph.hypers = HYPERS.iter().map(|h| h.to_string()).collect();
    let mut e = Emitter {
        graph: &mut graph,
        origin: Origin::default(),
    };
    let rate = scheduled(&mut e, schedule);
    (graph, rate)
}

/// The learning rate of this step. With t = (step − 1) / steps_per_epoch, the epochs done
/// before it, step-shaped schedules change at whole epochs (⌊t⌋) and the others every step.
fn scheduled(e: &mut Emitter, schedule: &Schedule) -> NodeId {
    let lr = e.op(Op::Hyper(LR), &[]);
    let one = e.scalar(1.0);
    let rate = match &schedule.kind {
        ScheduleKind::Constant => lr,
        // lr · factor^⌊t / every⌋
        ScheduleKind::Step { every, factor } => {
            let t = epochs_done(e);
            let periods = e.scale(t, 1.0 / *every as f64);
            let periods = e.unary(UnaryOp::Floor, periods);
            power_times(e, *factor, periods, lr)
        }
        // lr · factor^(milestones passed): epoch ⌊t⌋ is past `m` when ⌊t⌋ − m + ½ > 0
        ScheduleKind::MultiFactor { at, factor } => {
            let t = epochs_done(e);
            let epoch = e.unary(UnaryOp::Floor, t);
            let mut passed = e.scalar(0.0);
            for &m in at {
                let margin = e.scalar(0.5 - m as f64);
                let shifted = e.add(epoch, margin);
                let past = e.unary(UnaryOp::Step, shifted);
                passed = e.add(passed, past);
            }
            power_times(e, *factor, passed, lr)
        }
        // final + (lr − final) · (1 + cos πp) / 2
        ScheduleKind::Cosine { final_lr, epochs } => {
            let p = progress(e, schedule.warmup, *epochs);
            let angle = e.scale(p, std::f64::consts::PI);
            let cos = e.unary(UnaryOp::Cos, angle);
            let shifted = e.add(cos, one);
            let c = e.scale(shifted, 0.5);
            decayed(e, lr, *final_lr, c)
        }
        // final + (lr − final) · (1 − p)^power
        ScheduleKind::Poly {
            power,
            final_lr,
            epochs,
        } => {
            let p = progress(e, schedule.warmup, *epochs);
            let left = e.sub(one, p);
            let c = if *power == 1.0 {
                left
            } else {
                let log = e.unary(UnaryOp::Log, left);
                let scaled = e.scale(log, *power);
                e.unary(UnaryOp::Exp, scaled)
            };
            decayed(e, lr, *final_lr, c)
        }
    };
    if schedule.warmup == 0.0 {
        return rate;
    }
    // Warm-up: × min(1, step / (warm-up steps)), reaching the full rate at its last step.
    let step = e.op(Op::Hyper(STEP), &[]);
    let per_epoch = e.op(Op::Hyper(STEPS_PER_EPOCH), &[]);
    let warmup_steps = e.scale(per_epoch, schedule.warmup);
    let fraction = e.div(step, warmup_steps);
    let ramp = at_most_one(e, fraction);
    e.mul(rate, ramp)
}

/// t = (step − 1) / steps_per_epoch: the epochs done before this step, with their fraction.
fn epochs_done(e: &mut Emitter) -> NodeId {
    let step = e.op(Op::Hyper(STEP), &[]);
    let per_epoch = e.op(Op::Hyper(STEPS_PER_EPOCH), &[]);
    let one = e.scalar(1.0);
    let done = e.sub(step, one);
    e.div(done, per_epoch)
}

/// `lr · factor^n`, as exp(n · ln factor).
fn power_times(e: &mut Emitter, factor: f64, n: NodeId, lr: NodeId) -> NodeId {
    let exponent = e.scale(n, factor.ln());
    let power = e.unary(UnaryOp::Exp, exponent);
    e.mul(lr, power)
}

/// How far through its decay a schedule is, from 0 to 1: (t − warm-up) / (T − warm-up),
/// clamped, with T the schedule's epochs or the run's.
fn progress(e: &mut Emitter, warmup: f64, epochs: Option<u64>) -> NodeId {
    let t = epochs_done(e);
    let length = match epochs {
        Some(epochs) => e.scalar(epochs as f64),
        None => e.op(Op::Hyper(EPOCHS), &[]),
    };
    let warmup = e.scalar(warmup);
    let since = e.sub(t, warmup);
    let span = e.sub(length, warmup);
    let p = e.div(since, span);
    let p = e.unary(UnaryOp::Relu, p);
    at_most_one(e, p)
}

/// min(x, 1) = 1 − relu(1 − x).
fn at_most_one(e: &mut Emitter, x: NodeId) -> NodeId {
    let one = e.scalar(1.0);
    let below = e.sub(one, x);
    let below = e.unary(UnaryOp::Relu, below);
    e.sub(one, below)
}

/// `final + (lr − final) · c`.
fn decayed(e: &mut Emitter, lr: NodeId, final_lr: f64, c: NodeId) -> NodeId {
    if final_lr == 0.0 {
        return e.mul(lr, c);
    }
    let floor = e.scalar(final_lr);
    let range = e.sub(lr, floor);
    let part = e.mul(range, c);
    e.add(floor, part)
}

/// The factor every gradient is multiplied by so that their global norm is at most `max`:
/// min(1, max / (‖g‖ + 10⁻⁶)), as PyTorch's `clip_grad_norm_`.
fn clip_factor(e: &mut Emitter, gradients: &[(usize, NodeId)], max: f64) -> NodeId {
    let mut total = e.scalar(0.0);
    for &(_, g) in gradients {
        let squares = e.unary(UnaryOp::Square, g);
        let axes = (0..e.shape(g).rank()).collect();
        let sum = e.sum(squares, axes);
        total = e.add(total, sum);
    }
    let norm = e.unary(UnaryOp::Sqrt, total);
    let guard = e.scalar(CLIP_EPS);
    let norm = e.add(norm, guard);
    let max = e.scalar(max);
    let factor = e.div(max, norm);
    at_most_one(e, factor)
}

/// The parameter's value after the step at learning rate `lr`.
fn update(
    e: &mut Emitter,
    optimizer: &Optimizer,
    lr: NodeId,
    param: usize,
    gradient: NodeId,
) -> NodeId {
    let w = e.op(Op::Param(param), &[]);
    let decoupled = matches!(
        optimizer.rule,
        Rule::Adam {
            decoupled: true,
            ..
        }
    );
    // L2 weight decay folded into the gradient, as PyTorch's optimizers do: g' = g + λ·w
    let g = if optimizer.weight_decay > 0.0 && !decoupled {
        let decay = e.scale(w, optimizer.weight_decay);
        e.add(gradient, decay)
    } else {
        gradient
    };
    let direction = match optimizer.rule {
        Rule::Sgd { momentum, nesterov } => {
            if momentum == 0.0 {
                g
            } else {
                // v ← μ·v + g'; step along v, or along g' + μ·v with Nesterov
                let v = state(e, param, "momentum");
                let v_new = moving(e, v, momentum, g, 1.0);
                if nesterov {
                    let ahead = e.scale(v_new, momentum);
                    e.add(g, ahead)
                } else {
                    v_new
                }
            }
        }
        Rule::Adam {
            beta1, beta2, eps, ..
        } => {
            // m ← β1·m + (1 − β1)·g';  v ← β2·v + (1 − β2)·g'²
            let m = state(e, param, "adam_m");
            let v = state(e, param, "adam_v");
            let m_new = moving(e, m, beta1, g, 1.0 - beta1);
            let g2 = e.unary(UnaryOp::Square, g);
            let v_new = moving(e, v, beta2, g2, 1.0 - beta2);
            // Bias correction: m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ); direction m̂ / (√v̂ + ε)
            let m_hat = bias_corrected(e, m_new, beta1);
            let v_hat = bias_corrected(e, v_new, beta2);
            over_root(e, m_hat, v_hat, eps)
        }
        Rule::Adagrad { eps } => {
            // s ← s + g'²; direction g' / (√s + ε)
            let s = state(e, param, "adagrad_sum");
            let g2 = e.unary(UnaryOp::Square, g);
            let s_new = moving(e, s, 1.0, g2, 1.0);
            over_root(e, g, s_new, eps)
        }
        Rule::Rmsprop {
            alpha,
            eps,
            momentum,
        } => {
            // v ← α·v + (1 − α)·g'²; direction g' / (√v + ε), or its momentum b ← μ·b + that
            let v = state(e, param, "rmsprop_v");
            let g2 = e.unary(UnaryOp::Square, g);
            let v_new = moving(e, v, alpha, g2, 1.0 - alpha);
            let scaled = over_root(e, g, v_new, eps);
            if momentum == 0.0 {
                scaled
            } else {
                let b = state(e, param, "rmsprop_momentum");
                moving(e, b, momentum, scaled, 1.0)
            }
        }
        Rule::Adadelta { rho, eps } => {
            // v ← ρ·v + (1 − ρ)·g'²; Δ = √(u + ε) / √(v + ε) · g'; u ← ρ·u + (1 − ρ)·Δ²
            let v = state(e, param, "adadelta_v");
            let u = state(e, param, "adadelta_delta");
            let g2 = e.unary(UnaryOp::Square, g);
            let v_new = moving(e, v, rho, g2, 1.0 - rho);
            let eps = e.scalar(eps);
            let root = |e: &mut Emitter, x: NodeId| {
                let shifted = e.add(x, eps);
                e.unary(UnaryOp::Sqrt, shifted)
            };
            let numerator = root(e, u);
            let denominator = root(e, v_new);
            let ratio = e.div(numerator, denominator);
            let delta = e.mul(ratio, g);
            let delta2 = e.unary(UnaryOp::Square, delta);
            moving(e, u, rho, delta2, 1.0 - rho);
            delta
        }
    };
    // w ← w − lr · direction; AdamW first decays the weights: w ← w · (1 − lr·λ)
    let w = if decoupled && optimizer.weight_decay > 0.0 {
        let decay = e.scale(lr, optimizer.weight_decay);
        let one = e.scalar(1.0);
        let kept = e.sub(one, decay);
        e.mul(w, kept)
    } else {
        w
    };
    let step = e.mul(direction, lr);
    e.sub(w, step)
}

/// The state's new value `keep·s + add·x`, recorded as its update (a factor of 1 is not
/// multiplied).
fn moving(e: &mut Emitter, s: NodeId, keep: f64, x: NodeId, add: f64) -> NodeId {
    let kept = if keep == 1.0 { s } else { e.scale(s, keep) };
    let added = if add == 1.0 { x } else { e.scale(x, add) };
    let new = e.add(kept, added);
    record(e, s, new);
    new
}

/// `x / (√v + ε)`
fn over_root(e: &mut Emitter, x: NodeId, v: NodeId, eps: f64) -> NodeId {
    let root = e.unary(UnaryOp::Sqrt, v);
    let eps = e.scalar(eps);
    let denominator = e.add(root, eps);
    e.div(x, denominator)
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

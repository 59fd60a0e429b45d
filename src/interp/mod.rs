//! The reference interpreter: executes any graph with plain loops, in f32 or f64. It is the
//! oracle that compiled code is checked against, so it favours clarity over speed. Values are
//! dropped after their last use, so memory stays near the live set of one step.

mod kernels;

use crate::ir::{BinaryOp, Graph, NodeId, Op, UnaryOp};
use crate::tensor::{dims, Bindings, Real, Tensor};

/// The first node that produced a NaN or an infinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonFinite(pub NodeId);

/// Evaluates `wanted` nodes of `graph`. With `check_finite`, stops at the first node whose
/// value holds a NaN or an infinity.
pub fn run<T: Real>(
    graph: &Graph,
    bind: &Bindings<T>,
    wanted: &[NodeId],
    check_finite: bool,
) -> Result<Vec<Tensor<T>>, NonFinite> {
    let count = graph.nodes.len();
    let Liveness { needed, last_use } = Liveness::of(graph, wanted);
    let mut values: Vec<Option<Tensor<T>>> = vec![None; count];
    for i in 0..count {
        if !needed[i] {
            continue;
        }
        let node = &graph.nodes[i];
        let value = {
            let args: Vec<&Tensor<T>> = node
                .args
                .iter()
                .map(|a| values[a.index()].as_ref().expect("arguments come first"))
                .collect();
            eval(graph, NodeId(i as u32), &args, bind)
        };
        if check_finite && value.data.iter().any(|v| !v.f64().is_finite()) {
            return Err(NonFinite(NodeId(i as u32)));
        }
        values[i] = Some(value);
        for a in &node.args {
            if last_use[a.index()] == i {
                values[a.index()] = None;
            }
        }
    }
    Ok(wanted
        .iter()
        .map(|id| values[id.index()].clone().expect("wanted values are kept"))
        .collect())
}

/// Which nodes a run computes, and the node after which each value is dropped.
struct Liveness {
    needed: Vec<bool>,
    last_use: Vec<usize>,
}

impl Liveness {
    /// Only what the wanted nodes need is computed, and each value lives until its last use.
    fn of(graph: &Graph, wanted: &[NodeId]) -> Liveness {
        let count = graph.nodes.len();
        let mut needed = vec![false; count];
        for id in wanted {
            needed[id.index()] = true;
        }
        for i in (0..count).rev() {
            if needed[i] {
                for a in &graph.nodes[i].args {
                    needed[a.index()] = true;
                }
            }
        }
        let mut last_use = vec![0usize; count];
        for (i, node) in graph.nodes.iter().enumerate() {
            for a in &node.args {
                last_use[a.index()] = i;
            }
        }
        for id in wanted {
            last_use[id.index()] = usize::MAX;
        }
        Liveness { needed, last_use }
    }
}

/// The most elements `run` holds at once for a batch (the bound tensors excluded), or `None`
/// when counting overflows: what a run on the interpreter needs, checked before it starts.
pub fn peak_elements(graph: &Graph, wanted: &[NodeId], batch: usize) -> Option<u64> {
    let Liveness { needed, last_use } = Liveness::of(graph, wanted);
    let size = |i: usize| -> Option<u64> {
        dims(&graph.nodes[i].shape, batch)
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
    };
    let (mut live, mut peak) = (0u64, 0u64);
    let mut held = vec![false; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        live = live.checked_add(size(i)?)?;
        peak = peak.max(live);
        held[i] = true;
        for a in &node.args {
            if last_use[a.index()] == i && std::mem::replace(&mut held[a.index()], false) {
                live -= size(a.index())?;
            }
        }
    }
    Some(peak)
}

fn eval<T: Real>(graph: &Graph, id: NodeId, args: &[&Tensor<T>], bind: &Bindings<T>) -> Tensor<T> {
    let node = graph.node(id);
    let out_dims = dims(&node.shape, bind.batch);
    let map = |f: &dyn Fn(T) -> T| {
        Tensor::new(
            args[0].dims.clone(),
            args[0].data.iter().map(|&x| f(x)).collect(),
        )
    };
    let zip = |f: &dyn Fn(T, T) -> T| {
        Tensor::new(
            args[0].dims.clone(),
            args[0]
                .data
                .iter()
                .zip(&args[1].data)
                .map(|(&a, &b)| f(a, b))
                .collect(),
        )
    };
    let (zero, one) = (T::default(), T::of(1.0));
    match &node.op {
        Op::Input(i) => checked(&bind.inputs[*i], &out_dims),
        Op::Param(i) => checked(&bind.params[*i], &out_dims),
        Op::State(i) => checked(&bind.states[*i], &out_dims),
        Op::Const(c) => Tensor::scalar(T::of(c.0)),
        Op::Hyper(i) => Tensor::scalar(T::of(bind.hypers[*i])),
        Op::BatchSize => Tensor::scalar(T::of(bind.batch as f64)),
        Op::Unary(op) => match op {
            UnaryOp::Neg => map(&|x| -x),
            UnaryOp::Relu => map(&|x| if x > zero { x } else { zero }),
            UnaryOp::Sigmoid => map(&|x| one / (one + (-x).exp())),
            UnaryOp::Tanh => map(&|x| x.tanh()),
            UnaryOp::Exp => map(&|x| x.exp()),
            UnaryOp::Log => map(&|x| x.ln()),
            UnaryOp::Abs => map(&|x| x.abs()),
            UnaryOp::Sqrt => map(&|x| x.sqrt()),
            UnaryOp::Square => map(&|x| x * x),
            UnaryOp::Sin => map(&|x| x.sin()),
            UnaryOp::Cos => map(&|x| x.cos()),
            UnaryOp::Floor => map(&|x| x.floor()),
            UnaryOp::Step => map(&|x| if x > zero { one } else { zero }),
            UnaryOp::Sign => map(&|x| {
                if x > zero {
                    one
                } else if x < zero {
                    -one
                } else {
                    zero
                }
            }),
        },
        Op::Binary(op) => match op {
            BinaryOp::Add => zip(&|a, b| a + b),
            BinaryOp::Sub => zip(&|a, b| a - b),
            BinaryOp::Mul => zip(&|a, b| a * b),
            BinaryOp::Div => zip(&|a, b| a / b),
            BinaryOp::Equal => zip(&|a, b| if a == b { one } else { zero }),
        },
        Op::Broadcast(_) => kernels::broadcast(args[0], &out_dims),
        Op::Reduce(op, axes) => kernels::reduce(args[0], axes, *op),
        Op::MatMul => kernels::matmul(args[0], args[1]),
        Op::Reshape(_) => Tensor::new(out_dims, args[0].data.clone()),
        Op::Transpose(perm) => kernels::transpose(args[0], perm),
        Op::Softmax { axis } => kernels::softmax(args[0], *axis, false),
        Op::LogSoftmax { axis } => kernels::softmax(args[0], *axis, true),
        Op::OneHot { classes } => {
            let classes = *classes as usize;
            let mut out = Tensor::full(&out_dims, zero);
            for (row, &label) in args[0].data.iter().enumerate() {
                let class = label.f64() as usize;
                if class < classes {
                    out.data[row * classes + class] = one;
                }
            }
            out
        }
        Op::Conv2d(window) => kernels::conv2d(args[0], args[1], window, &out_dims),
        Op::Conv2dGradInput(window, _) => {
            kernels::conv2d_grad_input(args[0], args[1], window, &out_dims)
        }
        Op::Conv2dGradWeight(window) => {
            kernels::conv2d_grad_weight(args[0], args[1], window, &out_dims)
        }
        Op::Pool(op, window) => kernels::pool(args[0], *op, window, &out_dims),
        Op::PoolGrad(op, window) => kernels::pool_grad(args[0], args[1], *op, window),
        Op::Concat(axis) => kernels::concat(args, *axis, &out_dims),
        Op::Slice { axis, start, .. } => kernels::slice(args[0], *axis, *start as usize, &out_dims),
        Op::DropoutMask { p } => {
            let keep = T::of(1.0 / (1.0 - p.0));
            let data = (0..args[0].data.len())
                .map(|j| {
                    if kernels::uniform(bind.seed, id.0 as u64, j as u64) < p.0 {
                        zero
                    } else {
                        keep
                    }
                })
                .collect();
            Tensor::new(out_dims, data)
        }
    }
}

/// A bound tensor, after checking it has the declared dimensions.
fn checked<T: Real>(tensor: &Tensor<T>, dims: &[usize]) -> Tensor<T> {
    assert_eq!(
        tensor.dims, dims,
        "a bound tensor does not have its declared shape"
    );
    tensor.clone()
}

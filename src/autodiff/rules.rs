//! One vector-Jacobian product per operation, nothing else: given a node and the gradient of the
//! loss with respect to it, the gradients with respect to each of its arguments.

use super::emit::Emitter;
use crate::ir::{BinaryOp, NodeId, Op, ReduceOp, UnaryOp};

/// The contributions of `node`'s gradient `g` to the arguments that `wanted` selects, as
/// (argument position, gradient). Operations with no differentiable inputs contribute nothing.
pub fn vjp(e: &mut Emitter, node: NodeId, g: NodeId, wanted: &[bool]) -> Vec<(usize, NodeId)> {
    let n = e.graph.node(node).clone();
    let arg = |i: usize| n.args[i];
    match &n.op {
        Op::Input(_)
        | Op::Param(_)
        | Op::State(_)
        | Op::Const(_)
        | Op::Hyper(_)
        | Op::BatchSize
        | Op::OneHot { .. }
        | Op::DropoutMask { .. }
        // Gradients of gradients are never needed: netc differentiates once.
        | Op::Conv2dGradInput(..)
        | Op::Conv2dGradWeight(_)
        | Op::PoolGrad(..)
        | Op::Slice { .. } => vec![],
        Op::Unary(op) => {
            let (x, y) = (arg(0), node);
            let dx = match op {
                // d(−x) = −g
                UnaryOp::Neg => e.neg(g),
                // d relu(x) = g · [x > 0] = g · [y > 0]: reading the output, like σ and tanh,
                // leaves the pre-activation unused once the forward pass is done, so the bias
                // and the activation become one loop that writes only y.
                UnaryOp::Relu => {
                    let step = e.unary(UnaryOp::Step, y);
                    e.mul(g, step)
                }
                // d σ(x) = g · y · (1 − y)
                UnaryOp::Sigmoid => {
                    let one = e.scalar(1.0);
                    let rest = e.sub(one, y);
                    let slope = e.mul(y, rest);
                    e.mul(g, slope)
                }
                // d tanh(x) = g · (1 − y²)
                UnaryOp::Tanh => {
                    let one = e.scalar(1.0);
                    let y2 = e.unary(UnaryOp::Square, y);
                    let slope = e.sub(one, y2);
                    e.mul(g, slope)
                }
                // d exp(x) = g · y
                UnaryOp::Exp => e.mul(g, y),
                // d log(x) = g / x
                UnaryOp::Log => e.div(g, x),
                // d |x| = g · sign(x)
                UnaryOp::Abs => {
                    let sign = e.unary(UnaryOp::Sign, x);
                    e.mul(g, sign)
                }
                // d √x = g / (2y)
                UnaryOp::Sqrt => {
                    let twice = e.scale(y, 2.0);
                    e.div(g, twice)
                }
                // d x² = g · 2x
                UnaryOp::Square => {
                    let twice = e.scale(x, 2.0);
                    e.mul(g, twice)
                }
                // d sin(x) = g · cos(x)
                UnaryOp::Sin => {
                    let slope = e.unary(UnaryOp::Cos, x);
                    e.mul(g, slope)
                }
                // d cos(x) = −g · sin(x)
                UnaryOp::Cos => {
                    let slope = e.unary(UnaryOp::Sin, x);
                    let product = e.mul(g, slope);
                    e.neg(product)
                }
                // Piecewise constant: zero almost everywhere.
                UnaryOp::Step | UnaryOp::Sign | UnaryOp::Floor => return vec![],
            };
            vec![(0, dx)]
        }
        Op::Binary(op) => {
            let (a, b) = (arg(0), arg(1));
            let mut out = Vec::new();
            match op {
                BinaryOp::Add | BinaryOp::Sub => {
                    if wanted[0] {
                        out.push((0, g));
                    }
                    if wanted[1] {
                        let db = if *op == BinaryOp::Sub { e.neg(g) } else { g };
                        out.push((1, db));
                    }
                }
                // d(a·b) = (g·b, g·a)
                BinaryOp::Mul => {
                    if wanted[0] {
                        out.push((0, e.mul(g, b)));
                    }
                    if wanted[1] {
                        out.push((1, e.mul(g, a)));
                    }
                }
                // d(a/b) = (g/b, −(g/b)·(a/b))
                BinaryOp::Div => {
                    let da = e.div(g, b);
                    if wanted[0] {
                        out.push((0, da));
                    }
                    if wanted[1] {
                        let scaled = e.mul(da, node);
                        out.push((1, e.neg(scaled)));
                    }
                }
                BinaryOp::Equal => {}
            }
            out
        }
        // A broadcast's gradient is a sum over the stretched axes.
        Op::Broadcast(_) => {
            let from = e.shape(arg(0));
            vec![(0, e.sum_to(g, &from))]
        }
        Op::Reduce(op, axes) => {
            let x = arg(0);
            let full = e.shape(x);
            let spread = e.unreduce(g, &full, axes);
            let dx = match op {
                ReduceOp::Sum => spread,
                // d mean = g / count, spread over the reduced axes
                ReduceOp::Mean => {
                    let count = e.count(&full, axes);
                    e.div(spread, count)
                }
                // d max = g where x attains the max (every tied element receives it)
                ReduceOp::Max => {
                    let max = e.unreduce(node, &full, axes);
                    let mask = e.binary(BinaryOp::Equal, x, max);
                    e.mul(spread, mask)
                }
            };
            vec![(0, dx)]
        }
        // d(A·B) = (G·Bᵀ, Aᵀ·G)
        Op::MatMul => {
            let (a, b) = (arg(0), arg(1));
            let mut out = Vec::new();
            if wanted[0] {
                let bt = e.transpose(b);
                out.push((0, e.op(Op::MatMul, &[g, bt])));
            }
            if wanted[1] {
                let at = e.transpose(a);
                out.push((1, e.op(Op::MatMul, &[at, g])));
            }
            out
        }
        Op::Reshape(_) => {
            let from = e.shape(arg(0));
            vec![(0, e.reshape(g, &from))]
        }
        Op::Transpose(perm) => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![(0, e.op(Op::Transpose(inverse), &[g]))]
        }
        // d softmax = y · (g − Σ g·y)
        Op::Softmax { axis } => {
            let y = node;
            let full = e.shape(y);
            let gy = e.mul(g, y);
            let total = e.sum(gy, vec![*axis]);
            let total = e.unreduce(total, &full, &[*axis]);
            let centred = e.sub(g, total);
            vec![(0, e.mul(y, centred))]
        }
        // d log_softmax = g − softmax(x) · Σ g
        Op::LogSoftmax { axis } => {
            let x = arg(0);
            let full = e.shape(x);
            let p = e.op(Op::Softmax { axis: *axis }, &[x]);
            let total = e.sum(g, vec![*axis]);
            let total = e.unreduce(total, &full, &[*axis]);
            let spread = e.mul(p, total);
            vec![(0, e.sub(g, spread))]
        }
        Op::Conv2d(window) => {
            let (x, w) = (arg(0), arg(1));
            let mut out = Vec::new();
            if wanted[0] {
                let x_shape = e.shape(x);
                out.push((0, e.op(Op::Conv2dGradInput(*window, x_shape), &[g, w])));
            }
            if wanted[1] {
                out.push((1, e.op(Op::Conv2dGradWeight(*window), &[x, g])));
            }
            out
        }
        Op::Pool(op, window) => vec![(0, e.op(Op::PoolGrad(*op, *window), &[arg(0), g]))],
        // Each part's gradient is its slice of g.
        Op::Concat(axis) => {
            let mut start = 0;
            let mut out = Vec::new();
            for (i, &part) in n.args.iter().enumerate() {
                let len = e.shape(part).fixed_dim(*axis).expect("concat joins fixed axes");
                if wanted[i] {
                    let slice = Op::Slice {
                        axis: *axis,
                        start,
                        len,
                    };
                    out.push((i, e.op(slice, &[g])));
                }
                start += len;
            }
            out
        }
    }
}

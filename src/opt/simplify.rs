//! Peephole rewrites, applied as each node is re-added. Every rule keeps the value the same
//! (exactly, or up to float rounding for the factoring rules) and never makes a graph larger.
//! A rewrite's new nodes are simplified in turn.
//!
//! Together the rules turn the derived gradient of `cross_entropy` into the textbook
//! `(softmax(o) − onehot(y)) · 1/N`: negations move outward past broadcasts, reshapes, sums and
//! products; a one-hot row sums to one; and a common factor comes out of a difference.

use crate::ir::{BinaryOp, Graph, NodeId, Op, Origin, ReduceOp, Scalar, UnaryOp};
use crate::shape::{Dim, Shape};

/// Adds `op(args)` to `g` in simplest form and returns the node that holds its value.
pub fn simplify(g: &mut Graph, op: Op, args: Vec<NodeId>, origin: Origin) -> NodeId {
    let mut s = Simplifier { g, origin };
    s.node(op, args)
}

struct Simplifier<'a> {
    g: &'a mut Graph,
    origin: Origin,
}

impl Simplifier<'_> {
    fn op(&self, id: NodeId) -> &Op {
        &self.g.node(id).op
    }

    fn arg(&self, id: NodeId, i: usize) -> NodeId {
        self.g.node(id).args[i]
    }

    fn shape(&self, id: NodeId) -> Shape {
        self.g.shape(id).clone()
    }

    /// The constant a node holds everywhere, if it is a scalar constant or a broadcast of one.
    fn fill(&self, id: NodeId) -> Option<f64> {
        match self.op(id) {
            Op::Const(c) => Some(c.0),
            Op::Broadcast(_) => self.fill(self.arg(id, 0)),
            _ => None,
        }
    }

    /// The scalar a node broadcasts, if it is a broadcast of a scalar.
    fn broadcast_scalar(&self, id: NodeId) -> Option<NodeId> {
        match self.op(id) {
            Op::Broadcast(_) if self.shape(self.arg(id, 0)).rank() == 0 => Some(self.arg(id, 0)),
            _ => None,
        }
    }

    /// The argument of a negation.
    fn negated(&self, id: NodeId) -> Option<NodeId> {
        match self.op(id) {
            Op::Unary(UnaryOp::Neg) => Some(self.arg(id, 0)),
            _ => None,
        }
    }

    fn neg(&mut self, x: NodeId) -> NodeId {
        self.node(Op::Unary(UnaryOp::Neg), vec![x])
    }

    fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        self.node(Op::Binary(op), vec![a, b])
    }

    fn node(&mut self, op: Op, args: Vec<NodeId>) -> NodeId {
        match self.rewrite(&op, &args) {
            Some(id) => id,
            None => self.g.add(op, &args, self.origin),
        }
    }

    fn rewrite(&mut self, op: &Op, args: &[NodeId]) -> Option<NodeId> {
        match op {
            Op::Unary(u) => self.unary(*u, args[0]),
            Op::Binary(b) => self.binary_rules(*b, args[0], args[1]),
            Op::Broadcast(shape) | Op::Reshape(shape) => self.reshaping(op, shape, args[0]),
            Op::Transpose(perm) => self.transpose(perm, args[0]),
            Op::Reduce(r, axes) => self.reduce(*r, axes, args[0]),
            _ => None,
        }
    }

    fn unary(&mut self, op: UnaryOp, x: NodeId) -> Option<NodeId> {
        // Constant folding.
        if let Op::Const(c) = self.op(x) {
            let c = c.0;
            let value = match op {
                UnaryOp::Neg => -c,
                UnaryOp::Relu => c.max(0.0),
                UnaryOp::Sigmoid => 1.0 / (1.0 + (-c).exp()),
                UnaryOp::Tanh => c.tanh(),
                UnaryOp::Exp => c.exp(),
                UnaryOp::Log => c.ln(),
                UnaryOp::Abs => c.abs(),
                UnaryOp::Sqrt => c.sqrt(),
                UnaryOp::Square => c * c,
                UnaryOp::Sin => c.sin(),
                UnaryOp::Cos => c.cos(),
                UnaryOp::Floor => c.floor(),
                UnaryOp::Step => f64::from(c > 0.0),
                UnaryOp::Sign => c.signum() * f64::from(c != 0.0),
            };
            return Some(self.node(Op::Const(Scalar(value)), vec![]));
        }
        // −(−x) = x
        if op == UnaryOp::Neg {
            return self.negated(x);
        }
        None
    }

    fn binary_rules(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Option<NodeId> {
        use BinaryOp::*;
        // Constant folding, and scalar arithmetic done once before broadcasting.
        if let (Op::Const(x), Op::Const(y)) = (self.op(a), self.op(b)) {
            let (x, y) = (x.0, y.0);
            let value = match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                Equal => f64::from(x == y),
            };
            return Some(self.node(Op::Const(Scalar(value)), vec![]));
        }
        if let (Some(x), Some(y)) = (self.broadcast_scalar(a), self.broadcast_scalar(b)) {
            let shape = self.shape(a);
            let scalar = self.binary(op, x, y);
            return Some(self.node(Op::Broadcast(shape), vec![scalar]));
        }
        // Identities: x·1, 1·x, x + 0, 0 + x, x − 0, x / 1, 0 − x.
        match (op, self.fill(a), self.fill(b)) {
            (Mul, _, Some(1.0)) | (Add | Sub, _, Some(0.0)) | (Div, _, Some(1.0)) => {
                return Some(a)
            }
            (Mul, Some(1.0), _) | (Add, Some(0.0), _) => return Some(b),
            (Sub, Some(0.0), _) => return Some(self.neg(b)),
            _ => {}
        }
        // c / x with c < 0 becomes −(|c| / x), so the sign can move outward.
        if let (Div, Op::Const(c)) = (op, self.op(a)) {
            if c.0 < 0.0 {
                let positive = self.node(Op::Const(Scalar(-c.0)), vec![]);
                let quotient = self.binary(Div, positive, b);
                return Some(self.neg(quotient));
            }
        }
        // Negations move outward: (−a)·b = −(a·b), (−a)/b = −(a/b), a − (−b) = a + b, ...
        match (op, self.negated(a), self.negated(b)) {
            (Mul, Some(x), Some(y)) => return Some(self.binary(Mul, x, y)),
            (Mul, Some(x), None) => {
                let product = self.binary(Mul, x, b);
                return Some(self.neg(product));
            }
            (Mul, None, Some(y)) | (Div, None, Some(y)) => {
                let product = self.binary(op, a, y);
                return Some(self.neg(product));
            }
            (Div, Some(x), None) => {
                let quotient = self.binary(Div, x, b);
                return Some(self.neg(quotient));
            }
            (Sub, Some(x), Some(y)) => return Some(self.binary(Sub, y, x)),
            (Sub, None, Some(y)) => return Some(self.binary(Add, a, y)),
            (Add, None, Some(y)) => return Some(self.binary(Sub, a, y)),
            (Add, Some(x), None) => return Some(self.binary(Sub, b, x)),
            _ => {}
        }
        // A common factor comes out of a sum or difference: a·k ± b·k = (a ± b)·k.
        if matches!(op, Add | Sub) {
            if let (Some((a1, a2)), Some((b1, b2))) = (self.product(a), self.product(b)) {
                let pair = if a2 == b2 {
                    Some((a1, b1, a2))
                } else if a1 == b1 {
                    Some((a2, b2, a1))
                } else if a2 == b1 {
                    Some((a1, b2, a2))
                } else if a1 == b2 {
                    Some((a2, b1, a1))
                } else {
                    None
                };
                if let Some((x, y, k)) = pair {
                    let inner = self.binary(op, x, y);
                    return Some(self.binary(Mul, inner, k));
                }
            }
        }
        None
    }

    /// The two factors of a product node.
    fn product(&self, id: NodeId) -> Option<(NodeId, NodeId)> {
        match self.op(id) {
            Op::Binary(BinaryOp::Mul) => Some((self.arg(id, 0), self.arg(id, 1))),
            _ => None,
        }
    }

    /// Broadcasts and reshapes: drop no-ops, merge chains, and move negations outward.
    fn reshaping(&mut self, op: &Op, target: &Shape, x: NodeId) -> Option<NodeId> {
        if &self.shape(x) == target {
            return Some(x);
        }
        if let Some(inner) = self.negated(x) {
            let moved = self.node(op.clone(), vec![inner]);
            return Some(self.neg(moved));
        }
        let source = match self.op(x) {
            // A reshape of a reshape is one reshape; a broadcast of a broadcast is one broadcast.
            Op::Reshape(_) if matches!(op, Op::Reshape(_)) => self.arg(x, 0),
            Op::Broadcast(_) if matches!(op, Op::Broadcast(_)) => self.arg(x, 0),
            _ if matches!(op, Op::Broadcast(_)) => return None,
            // A reshape of a scalar, or of a broadcast scalar, is a broadcast of that scalar.
            _ if self.shape(x).rank() == 0 => {
                return Some(self.node(Op::Broadcast(target.clone()), vec![x]))
            }
            _ => {
                let scalar = self.broadcast_scalar(x)?;
                return Some(self.node(Op::Broadcast(target.clone()), vec![scalar]));
            }
        };
        Some(self.node(op.clone(), vec![source]))
    }

    fn transpose(&mut self, perm: &[usize], x: NodeId) -> Option<NodeId> {
        let composed: Vec<usize> = match self.op(x) {
            Op::Transpose(inner) => perm.iter().map(|&p| inner[p]).collect(),
            _ => return perm.iter().enumerate().all(|(i, &p)| i == p).then_some(x),
        };
        let source = self.arg(x, 0);
        if composed.iter().enumerate().all(|(i, &p)| i == p) {
            return Some(source);
        }
        Some(self.node(Op::Transpose(composed), vec![source]))
    }

    fn reduce(&mut self, op: ReduceOp, axes: &[usize], x: NodeId) -> Option<NodeId> {
        if matches!(op, ReduceOp::Sum | ReduceOp::Mean) {
            if let Some(inner) = self.negated(x) {
                let reduced = self.node(Op::Reduce(op, axes.to_vec()), vec![inner]);
                return Some(self.neg(reduced));
            }
        }
        // A one-hot row sums to one: Σ_c onehot(y)_c · s = s when s does not vary along c.
        if let (ReduceOp::Sum, [axis], Some((p, q))) = (op, axes, self.product(x)) {
            for (onehot, other) in [(p, q), (q, p)] {
                if matches!(self.op(onehot), Op::OneHot { .. }) && *axis == 1 {
                    if let Some(constant) = self.constant_along(other, 1) {
                        let out = self.shape(x);
                        let out = Shape(
                            out.0
                                .iter()
                                .enumerate()
                                .filter(|&(i, _)| i != 1)
                                .map(|(_, d)| *d)
                                .collect(),
                        );
                        return Some(self.node(Op::Broadcast(out), vec![constant]));
                    }
                }
            }
        }
        None
    }

    /// For a broadcast that does not vary along `axis`, the value with that axis removed.
    fn constant_along(&mut self, id: NodeId, axis: usize) -> Option<NodeId> {
        if !matches!(self.op(id), Op::Broadcast(_)) {
            return None;
        }
        let source = self.arg(id, 0);
        let (full, from) = (self.shape(id), self.shape(source));
        let lead = full.rank() - from.rank();
        if axis < lead {
            return Some(source);
        }
        if from.0[axis - lead] != Dim::Fixed(1) {
            return None;
        }
        let squeezed = Shape(
            from.0
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != axis - lead)
                .map(|(_, d)| *d)
                .collect(),
        );
        Some(self.node(Op::Reshape(squeezed), vec![source]))
    }
}

//! Small helpers for appending derived nodes to a graph, stamped with the source line of the
//! forward node they come from.

use crate::ir::{BinaryOp, Graph, NodeId, Op, Origin, ReduceOp, Scalar, UnaryOp};
use crate::shape::{Dim, Shape};

/// Appends nodes to a graph, each with one source line.
pub struct Emitter<'a> {
    pub graph: &'a mut Graph,
    pub origin: Origin,
}

impl Emitter<'_> {
    /// Any operation.
    pub fn op(&mut self, op: Op, args: &[NodeId]) -> NodeId {
        self.graph.add(op, args, self.origin)
    }

    /// The shape of a node.
    pub fn shape(&self, id: NodeId) -> Shape {
        self.graph.shape(id).clone()
    }

    /// A scalar constant.
    pub fn scalar(&mut self, value: f64) -> NodeId {
        self.op(Op::Const(Scalar(value)), &[])
    }

    /// A tensor of `shape` filled with `value`.
    pub fn fill(&mut self, value: f64, shape: &Shape) -> NodeId {
        let c = self.scalar(value);
        self.broadcast(c, shape)
    }

    /// Broadcasts to `shape` unless the node has it already.
    pub fn broadcast(&mut self, id: NodeId, shape: &Shape) -> NodeId {
        if self.graph.shape(id) == shape {
            id
        } else {
            self.op(Op::Broadcast(shape.clone()), &[id])
        }
    }

    /// Reshapes unless the node has the shape already.
    pub fn reshape(&mut self, id: NodeId, shape: &Shape) -> NodeId {
        if self.graph.shape(id) == shape {
            id
        } else {
            self.op(Op::Reshape(shape.clone()), &[id])
        }
    }

    /// An elementwise function.
    pub fn unary(&mut self, op: UnaryOp, a: NodeId) -> NodeId {
        self.op(Op::Unary(op), &[a])
    }

    /// An elementwise operation; a scalar operand is broadcast to the other's shape.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let (a, b) = match (sa.rank(), sb.rank()) {
            (0, r) if r > 0 => (self.broadcast(a, &sb), b),
            (r, 0) if r > 0 => (a, self.broadcast(b, &sa)),
            _ => (a, b),
        };
        self.op(Op::Binary(op), &[a, b])
    }

    /// `a + b`
    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Add, a, b)
    }

    /// `a − b`
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// `a · b`
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `a / b`
    pub fn div(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `−a`
    pub fn neg(&mut self, a: NodeId) -> NodeId {
        self.unary(UnaryOp::Neg, a)
    }

    /// `a` scaled by a constant.
    pub fn scale(&mut self, a: NodeId, factor: f64) -> NodeId {
        let c = self.scalar(factor);
        self.mul(a, c)
    }

    /// Sums over `axes` (none: returns the node).
    pub fn sum(&mut self, id: NodeId, axes: Vec<usize>) -> NodeId {
        if axes.is_empty() {
            id
        } else {
            self.op(Op::Reduce(ReduceOp::Sum, axes), &[id])
        }
    }

    /// A reduced tensor (its `axes` of `full` removed) stretched back over those axes.
    pub fn unreduce(&mut self, id: NodeId, full: &Shape, axes: &[usize]) -> NodeId {
        let kept = Shape(
            full.0
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { Dim::Fixed(1) } else { d })
                .collect(),
        );
        let kept = self.reshape(id, &kept);
        self.broadcast(kept, full)
    }

    /// The number of elements over `axes` of `shape`, as a scalar node (it involves the batch
    /// size when the batch axis is among them).
    pub fn count(&mut self, shape: &Shape, axes: &[usize]) -> NodeId {
        let fixed: u64 = axes.iter().filter_map(|&a| shape.fixed_dim(a)).product();
        let fixed = self.scalar(fixed as f64);
        if axes.iter().any(|&a| shape.0[a] == Dim::Batch) {
            let batch = self.op(Op::BatchSize, &[]);
            self.mul(fixed, batch)
        } else {
            fixed
        }
    }

    /// Sums a broadcast result back to the shape it was broadcast from (numpy rules).
    pub fn sum_to(&mut self, id: NodeId, target: &Shape) -> NodeId {
        let from = self.shape(id);
        if &from == target {
            return id;
        }
        let lead = from.rank() - target.rank();
        let axes: Vec<usize> = (0..from.rank())
            .filter(|&i| {
                i < lead || (target.0[i - lead] == Dim::Fixed(1) && from.0[i] != Dim::Fixed(1))
            })
            .collect();
        let summed = self.sum(id, axes);
        self.reshape(summed, target)
    }

    /// Swaps the two axes of a matrix.
    pub fn transpose(&mut self, id: NodeId) -> NodeId {
        self.op(Op::Transpose(vec![1, 0]), &[id])
    }
}

//! Each rewrite on a small graph, printed before and after.

use super::optimize;
use crate::ir::{BinaryOp, DType, Decl, Graph, NodeId, Op, ReduceOp, Scalar, UnaryOp};
use crate::shape::{Dim, Shape};

fn graph_with(inputs: &[(&str, Shape)]) -> (Graph, Vec<NodeId>) {
    let mut g = Graph::new("t");
    for (name, shape) in inputs {
        g.inputs.push(Decl {
            name: (*name).into(),
            shape: shape.clone(),
            dtype: DType::F32,
        });
    }
    let ids = (0..inputs.len())
        .map(|i| g.add(Op::Input(i), &[], 0))
        .collect();
    (g, ids)
}

fn c(g: &mut Graph, v: f64) -> NodeId {
    g.add(Op::Const(Scalar(v)), &[], 0)
}

fn before_after(mut g: Graph, result: NodeId) -> String {
    g.outputs.push(("result".into(), result));
    format!("{g}----- optimized\n{}", optimize(&g))
}

#[test]
fn constants_fold_and_identities_vanish() {
    let (mut g, x) = graph_with(&[("x", Shape::batched(&[3]))]);
    let (two, three) = (c(&mut g, 2.0), c(&mut g, 3.0));
    let six = g.add(Op::Binary(BinaryOp::Mul), &[two, three], 0);
    let one = g.add(Op::Binary(BinaryOp::Div), &[three, three], 0);
    let plain_zero = c(&mut g, 0.0);
    let zero = g.add(Op::Unary(UnaryOp::Neg), &[plain_zero], 0);
    let shape = Shape::batched(&[3]);
    let ones = g.add(Op::Broadcast(shape.clone()), &[one], 0);
    let zeros = g.add(Op::Broadcast(shape.clone()), &[zero], 0);
    let sixes = g.add(Op::Broadcast(shape), &[six], 0);
    let a = g.add(Op::Binary(BinaryOp::Mul), &[x[0], ones], 0);
    let b = g.add(Op::Binary(BinaryOp::Add), &[a, zeros], 0);
    let r = g.add(Op::Binary(BinaryOp::Mul), &[b, sixes], 0);
    insta::assert_snapshot!(before_after(g, r));
}

#[test]
fn common_subexpressions_merge_and_dead_code_goes() {
    let (mut g, x) = graph_with(&[("x", Shape::batched(&[3]))]);
    let e1 = g.add(Op::Unary(UnaryOp::Exp), &[x[0]], 0);
    let _unused = g.add(Op::Unary(UnaryOp::Tanh), &[x[0]], 0);
    let neg = g.add(Op::Unary(UnaryOp::Neg), &[x[0]], 0);
    let back = g.add(Op::Unary(UnaryOp::Neg), &[neg], 0);
    let e2 = g.add(Op::Unary(UnaryOp::Exp), &[back], 0);
    let r = g.add(Op::Binary(BinaryOp::Add), &[e1, e2], 0);
    insta::assert_snapshot!(before_after(g, r));
}

#[test]
fn transposes_and_reshapes_collapse() {
    let (mut g, x) = graph_with(&[("w", Shape::fixed(&[3, 4, 5]))]);
    let t1 = g.add(Op::Transpose(vec![1, 0, 2]), &[x[0]], 0);
    let t2 = g.add(Op::Transpose(vec![1, 0, 2]), &[t1], 0);
    let r1 = g.add(Op::Reshape(Shape::fixed(&[12, 5])), &[t2], 0);
    let r2 = g.add(Op::Reshape(Shape::fixed(&[60])), &[r1], 0);
    insta::assert_snapshot!(before_after(g, r2));
}

#[test]
fn negations_move_outward() {
    let (mut g, x) = graph_with(&[("a", Shape::batched(&[3])), ("b", Shape::batched(&[3]))]);
    let na = g.add(Op::Unary(UnaryOp::Neg), &[x[0]], 0);
    let nb = g.add(Op::Unary(UnaryOp::Neg), &[x[1]], 0);
    let p = g.add(Op::Binary(BinaryOp::Mul), &[na, x[1]], 0);
    let q = g.add(Op::Binary(BinaryOp::Sub), &[p, nb], 0);
    let s = g.add(Op::Reduce(ReduceOp::Sum, vec![1]), &[q], 0);
    insta::assert_snapshot!(before_after(g, s));
}

#[test]
fn a_one_hot_row_sums_to_one() {
    let mut g = Graph::new("t");
    g.inputs.push(Decl {
        name: "y".into(),
        shape: Shape(vec![Dim::Batch]),
        dtype: DType::I32,
    });
    let y = g.add(Op::Input(0), &[], 0);
    let onehot = g.add(Op::OneHot { classes: 10 }, &[y], 0);
    let batch = g.add(Op::BatchSize, &[], 0);
    let spread = g.add(Op::Broadcast(Shape::batched(&[10])), &[batch], 0);
    let product = g.add(Op::Binary(BinaryOp::Mul), &[spread, onehot], 0);
    let s = g.add(Op::Reduce(ReduceOp::Sum, vec![1]), &[product], 0);
    insta::assert_snapshot!(before_after(g, s));
}

#[test]
fn a_common_factor_comes_out() {
    let (mut g, x) = graph_with(&[
        ("a", Shape::batched(&[3])),
        ("b", Shape::batched(&[3])),
        ("k", Shape::batched(&[3])),
    ]);
    let ak = g.add(Op::Binary(BinaryOp::Mul), &[x[0], x[2]], 0);
    let kb = g.add(Op::Binary(BinaryOp::Mul), &[x[2], x[1]], 0);
    let d = g.add(Op::Binary(BinaryOp::Sub), &[ak, kb], 0);
    insta::assert_snapshot!(before_after(g, d));
}

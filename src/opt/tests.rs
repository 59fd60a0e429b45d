//! Each rewrite on a small graph, printed before and after.

use super::optimize;
use crate::ir::{BinaryOp, DType, Decl, Graph, NodeId, Op, Origin, ReduceOp, Scalar, UnaryOp};
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
        .map(|i| g.add(Op::Input(i), &[], Origin::default()))
        .collect();
    (g, ids)
}

fn c(g: &mut Graph, v: f64) -> NodeId {
    g.add(Op::Const(Scalar(v)), &[], Origin::default())
}

fn before_after(mut g: Graph, result: NodeId) -> String {
    g.outputs.push(("result".into(), result));
    format!("{g}----- optimized\n{}", optimize(&g))
}

#[test]
fn constants_fold_and_identities_vanish() {
    let (mut g, x) = graph_with(&[("x", Shape::batched(&[3]))]);
    let (two, three) = (c(&mut g, 2.0), c(&mut g, 3.0));
    let six = g.add(Op::Binary(BinaryOp::Mul), &[two, three], Origin::default());
    let one = g.add(
        Op::Binary(BinaryOp::Div),
        &[three, three],
        Origin::default(),
    );
    let plain_zero = c(&mut g, 0.0);
    let zero = g.add(Op::Unary(UnaryOp::Neg), &[plain_zero], Origin::default());
    let shape = Shape::batched(&[3]);
    let ones = g.add(Op::Broadcast(shape.clone()), &[one], Origin::default());
    let zeros = g.add(Op::Broadcast(shape.clone()), &[zero], Origin::default());
    let sixes = g.add(Op::Broadcast(shape), &[six], Origin::default());
    let a = g.add(Op::Binary(BinaryOp::Mul), &[x[0], ones], Origin::default());
    let b = g.add(Op::Binary(BinaryOp::Add), &[a, zeros], Origin::default());
    let r = g.add(Op::Binary(BinaryOp::Mul), &[b, sixes], Origin::default());
    insta::assert_snapshot!(before_after(g, r));
}

#[test]
fn common_subexpressions_merge_and_dead_code_goes() {
    let (mut g, x) = graph_with(&[("x", Shape::batched(&[3]))]);
    let e1 = g.add(Op::Unary(UnaryOp::Exp), &[x[0]], Origin::default());
    let _unused = g.add(Op::Unary(UnaryOp::Tanh), &[x[0]], Origin::default());
    let neg = g.add(Op::Unary(UnaryOp::Neg), &[x[0]], Origin::default());
    let back = g.add(Op::Unary(UnaryOp::Neg), &[neg], Origin::default());
    let e2 = g.add(Op::Unary(UnaryOp::Exp), &[back], Origin::default());
    let r = g.add(Op::Binary(BinaryOp::Add), &[e1, e2], Origin::default());
    insta::assert_snapshot!(before_after(g, r));
}

#[test]
fn transposes_and_reshapes_collapse() {
    let (mut g, x) = graph_with(&[("w", Shape::fixed(&[3, 4, 5]))]);
    let t1 = g.add(Op::Transpose(vec![1, 0, 2]), &[x[0]], Origin::default());
    let t2 = g.add(Op::Transpose(vec![1, 0, 2]), &[t1], Origin::default());
    let r1 = g.add(
        Op::Reshape(Shape::fixed(&[12, 5])),
        &[t2],
        Origin::default(),
    );
    let r2 = g.add(Op::Reshape(Shape::fixed(&[60])), &[r1], Origin::default());
    insta::assert_snapshot!(before_after(g, r2));
}

#[test]
fn negations_move_outward() {
    let (mut g, x) = graph_with(&[("a", Shape::batched(&[3])), ("b", Shape::batched(&[3]))]);
    let na = g.add(Op::Unary(UnaryOp::Neg), &[x[0]], Origin::default());
    let nb = g.add(Op::Unary(UnaryOp::Neg), &[x[1]], Origin::default());
    let p = g.add(Op::Binary(BinaryOp::Mul), &[na, x[1]], Origin::default());
    let q = g.add(Op::Binary(BinaryOp::Sub), &[p, nb], Origin::default());
    let s = g.add(Op::Reduce(ReduceOp::Sum, vec![1]), &[q], Origin::default());
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
    let y = g.add(Op::Input(0), &[], Origin::default());
    let onehot = g.add(Op::OneHot { classes: 10 }, &[y], Origin::default());
    let batch = g.add(Op::BatchSize, &[], Origin::default());
    let spread = g.add(
        Op::Broadcast(Shape::batched(&[10])),
        &[batch],
        Origin::default(),
    );
    let product = g.add(
        Op::Binary(BinaryOp::Mul),
        &[spread, onehot],
        Origin::default(),
    );
    let s = g.add(
        Op::Reduce(ReduceOp::Sum, vec![1]),
        &[product],
        Origin::default(),
    );
    insta::assert_snapshot!(before_after(g, s));
}

#[test]
fn a_common_factor_comes_out() {
    let (mut g, x) = graph_with(&[
        ("a", Shape::batched(&[3])),
        ("b", Shape::batched(&[3])),
        ("k", Shape::batched(&[3])),
    ]);
    let ak = g.add(Op::Binary(BinaryOp::Mul), &[x[0], x[2]], Origin::default());
    let kb = g.add(Op::Binary(BinaryOp::Mul), &[x[2], x[1]], Origin::default());
    let d = g.add(Op::Binary(BinaryOp::Sub), &[ak, kb], Origin::default());
    insta::assert_snapshot!(before_after(g, d));
}

//! Lowers a checked model to primitive graph operations: layers, losses and sugar such as
//! `dense`, `flatten` and `cross_entropy` become the same matmuls, broadcasts and reductions that
//! hand-written equations produce, so both styles of a model lower to the same graph.

use super::graph::*;
use crate::check::model::{
    self as m, LabelKind, LayerKind, LossKind, Model, TExpr, TExprKind, ValueKind,
};
use crate::shape::{self, Dim, Shape};
use crate::source::SourceFile;

/// Training mode samples dropout and normalizes with batch statistics; evaluation mode turns
/// dropout off and uses the running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Builds the forward graph of `model`: results `output` (if the model has one) and `loss`
/// (with penalties in training mode), plus running-statistics updates in training mode.
pub fn build(model: &Model, source: &SourceFile, mode: Mode) -> Graph {
    let mut graph = Graph::new(&model.name);
    for input in &model.inputs {
        graph.inputs.push(Decl {
            name: input.name.clone(),
            shape: Shape::batched(&input.shape),
            dtype: DType::F32,
        });
    }
    if let Some(label) = &model.label {
        let (shape, dtype) = match &label.kind {
            LabelKind::Class(_) => (Shape(vec![Dim::Batch]), DType::I32),
            LabelKind::Target(dims) => (Shape::batched(dims), DType::F32),
        };
        graph.inputs.push(Decl {
            name: label.name.clone(),
            shape,
            dtype,
        });
    }
    for param in &model.params {
        graph.params.push(Decl {
            name: param.name.clone(),
            shape: param.shape.clone(),
            dtype: DType::F32,
        });
    }
    for state in &model.states {
        graph.states.push(Decl {
            name: state.name.clone(),
            shape: state.shape.clone(),
            dtype: DType::F32,
        });
    }
    let mut builder = Builder {
        graph,
        model,
        source,
        mode,
        values: Vec::new(),
        origin: Origin::default(),
    };
    // Declarations come first, in order, so both styles of a model number their nodes alike.
    for i in 0..builder.graph.inputs.len() {
        builder.graph.add(Op::Input(i), &[], Origin::default());
    }
    for i in 0..builder.graph.params.len() {
        builder.graph.add(Op::Param(i), &[], Origin::default());
    }
    for value in &model.values {
        builder.origin.block = builder.graph.block_index(&value.block);
        let id = builder.value(value);
        builder.values.push(id);
    }
    builder.origin.block = 0;
    if let Some(output) = model.output {
        let id = builder.values[output];
        builder.graph.outputs.push(("output".into(), id));
    }
    let mut loss = builder.expr(&model.loss);
    if mode == Mode::Train {
        for penalty in &model.penalties {
            let term = builder.penalty(penalty);
            loss = builder.binary(BinaryOp::Add, loss, term);
        }
    }
    builder.graph.outputs.push(("loss".into(), loss));
    builder.graph
}

struct Builder<'a> {
    graph: Graph,
    model: &'a Model,
    source: &'a SourceFile,
    mode: Mode,
    /// The node of each model value, by value index.
    values: Vec<NodeId>,
    /// Where what is being lowered comes from, stamped on new nodes.
    origin: Origin,
}

impl Builder<'_> {
    fn add(&mut self, op: Op, args: &[NodeId]) -> NodeId {
        self.graph.add(op, args, self.origin)
    }

    fn at(&mut self, span: crate::source::Span) {
        self.origin.line = self.source.line_of(span.start) as u32;
    }

    fn constant(&mut self, value: f64) -> NodeId {
        self.add(Op::Const(Scalar(value)), &[])
    }

    /// Broadcasts `id` to `shape` unless it already has it.
    fn broadcast(&mut self, id: NodeId, shape: &Shape) -> NodeId {
        if self.graph.shape(id) == shape {
            id
        } else {
            self.add(Op::Broadcast(shape.clone()), &[id])
        }
    }

    fn reshape(&mut self, id: NodeId, shape: Shape) -> NodeId {
        if *self.graph.shape(id) == shape {
            id
        } else {
            self.add(Op::Reshape(shape), &[id])
        }
    }

    /// An elementwise operation with numpy broadcasting made explicit.
    fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        let shape = shape::broadcast(self.graph.shape(a), self.graph.shape(b))
            .expect("checked: operands broadcast");
        let (a, b) = (self.broadcast(a, &shape), self.broadcast(b, &shape));
        self.add(Op::Binary(op), &[a, b])
    }

    fn unary(&mut self, op: UnaryOp, a: NodeId) -> NodeId {
        self.add(Op::Unary(op), &[a])
    }

    /// The mean over every axis.
    fn mean_all(&mut self, id: NodeId) -> NodeId {
        let axes: Vec<usize> = (0..self.graph.shape(id).rank()).collect();
        if axes.is_empty() {
            return id;
        }
        self.add(Op::Reduce(ReduceOp::Mean, axes), &[id])
    }

    fn value(&mut self, value: &m::Value) -> NodeId {
        match &value.kind {
            ValueKind::Expr(expr) => self.expr(expr),
            ValueKind::Layers { input, layers } => {
                let mut x = self.expr(input);
                for layer in layers {
                    self.at(layer.span);
                    x = self.layer(layer, x);
                }
                x
            }
        }
    }

    fn expr(&mut self, expr: &TExpr) -> NodeId {
        self.at(expr.span);
        match &expr.kind {
            TExprKind::Input(i) => self.add(Op::Input(*i), &[]),
            TExprKind::Label => self.add(Op::Input(self.model.inputs.len()), &[]),
            TExprKind::Param(i) => self.add(Op::Param(*i), &[]),
            TExprKind::Value(i) => self.values[*i],
            TExprKind::Const(c) => self.constant(*c),
            TExprKind::Unary(op, a) => {
                let a = self.expr(a);
                self.at(expr.span);
                self.unary(*op, a)
            }
            TExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                self.at(expr.span);
                self.binary(*op, a, b)
            }
            TExprKind::MatMul(a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                self.at(expr.span);
                self.matmul(a, b, &expr.shape)
            }
            TExprKind::Reduce { op, axes, arg } => {
                let a = self.expr(arg);
                self.at(expr.span);
                let axes = axes
                    .clone()
                    .unwrap_or_else(|| (0..arg.shape.rank()).collect());
                if axes.is_empty() {
                    a
                } else {
                    self.add(Op::Reduce(*op, axes), &[a])
                }
            }
            TExprKind::Softmax { log, axis, arg } => {
                let a = self.expr(arg);
                self.at(expr.span);
                let axis = *axis;
                self.add(
                    if *log {
                        Op::LogSoftmax { axis }
                    } else {
                        Op::Softmax { axis }
                    },
                    &[a],
                )
            }
            TExprKind::Reshape(arg) => {
                let a = self.expr(arg);
                self.at(expr.span);
                self.reshape(a, expr.shape.clone())
            }
            TExprKind::Transpose { perm, arg } => {
                let a = self.expr(arg);
                self.at(expr.span);
                self.add(Op::Transpose(perm.clone()), &[a])
            }
            TExprKind::Dropout { p, arg } => {
                let a = self.expr(arg);
                self.at(expr.span);
                self.dropout(*p, a)
            }
            TExprKind::Concat { axis, args } => {
                let parts: Vec<NodeId> = args.iter().map(|a| self.expr(a)).collect();
                self.at(expr.span);
                self.add(Op::Concat(*axis), &parts)
            }
            TExprKind::Loss { kind, pred, target } => {
                let (p, t) = (self.expr(pred), self.expr(target));
                self.at(expr.span);
                self.loss(*kind, p, t)
            }
        }
    }

    /// `a @ b`, with vectors made into one-row or one-column matrices and back.
    fn matmul(&mut self, a: NodeId, b: NodeId, result: &Shape) -> NodeId {
        let (sa, sb) = (self.graph.shape(a).clone(), self.graph.shape(b).clone());
        let a = if sa.rank() == 1 {
            self.reshape(a, Shape(vec![Dim::Fixed(1), sa.0[0]]))
        } else {
            a
        };
        let b = if sb.rank() == 1 {
            self.reshape(b, Shape(vec![sb.0[0], Dim::Fixed(1)]))
        } else {
            b
        };
        let product = self.add(Op::MatMul, &[a, b]);
        self.reshape(product, result.clone())
    }

    fn loss(&mut self, kind: LossKind, pred: NodeId, target: NodeId) -> NodeId {
        match kind {
            LossKind::CrossEntropy => {
                // −mean over the batch of Σ_c onehot(y)_c · log_softmax(o)_c
                let classes = self
                    .graph
                    .shape(pred)
                    .fixed_dim(1)
                    .expect("checked: logits are [N, C]");
                let log_probs = self.add(Op::LogSoftmax { axis: 1 }, &[pred]);
                let onehot = self.add(Op::OneHot { classes }, &[target]);
                let picked = self.binary(BinaryOp::Mul, onehot, log_probs);
                let per_example = self.add(Op::Reduce(ReduceOp::Sum, vec![1]), &[picked]);
                let mean = self.mean_all(per_example);
                self.unary(UnaryOp::Neg, mean)
            }
            LossKind::Mse => {
                let diff = self.binary(BinaryOp::Sub, pred, target);
                let squared = self.unary(UnaryOp::Square, diff);
                self.mean_all(squared)
            }
            LossKind::L1 => {
                let diff = self.binary(BinaryOp::Sub, pred, target);
                let abs = self.unary(UnaryOp::Abs, diff);
                self.mean_all(abs)
            }
            LossKind::BinaryCrossEntropy => {
                // −mean(t·log p + (1 − t)·log(1 − p))
                let one = self.constant(1.0);
                let log_p = self.unary(UnaryOp::Log, pred);
                let not_p = self.binary(BinaryOp::Sub, one, pred);
                let log_not_p = self.unary(UnaryOp::Log, not_p);
                let not_t = self.binary(BinaryOp::Sub, one, target);
                let a = self.binary(BinaryOp::Mul, target, log_p);
                let b = self.binary(BinaryOp::Mul, not_t, log_not_p);
                let sum = self.binary(BinaryOp::Add, a, b);
                let mean = self.mean_all(sum);
                self.unary(UnaryOp::Neg, mean)
            }
            LossKind::Hinge | LossKind::Perceptron => {
                // hinge: mean(relu(1 − t·p)); perceptron: mean(relu(−t·p))
                let margin = self.binary(BinaryOp::Mul, target, pred);
                let shortfall = match kind {
                    LossKind::Hinge => {
                        let one = self.constant(1.0);
                        self.binary(BinaryOp::Sub, one, margin)
                    }
                    _ => self.unary(UnaryOp::Neg, margin),
                };
                let clipped = self.unary(UnaryOp::Relu, shortfall);
                self.mean_all(clipped)
            }
        }
    }

    fn penalty(&mut self, penalty: &m::Penalty) -> NodeId {
        // l1: strength·Σ|w|; l2: strength/2·Σw²
        let (op, scale) = match penalty.kind {
            m::PenaltyKind::L1 => (UnaryOp::Abs, penalty.strength),
            m::PenaltyKind::L2 => (UnaryOp::Square, penalty.strength / 2.0),
        };
        let mut total = None;
        for &param in &penalty.params {
            let w = self.add(Op::Param(param), &[]);
            let magnitude = self.unary(op, w);
            let axes = (0..self.graph.shape(w).rank()).collect();
            let sum = self.add(Op::Reduce(ReduceOp::Sum, axes), &[magnitude]);
            total = Some(match total {
                Some(t) => self.binary(BinaryOp::Add, t, sum),
                None => sum,
            });
        }
        let scale = self.constant(scale);
        match total {
            Some(t) => self.binary(BinaryOp::Mul, scale, t),
            None => self.constant(0.0),
        }
    }

    /// Dropout in training; the identity in evaluation.
    fn dropout(&mut self, p: f64, x: NodeId) -> NodeId {
        match self.mode {
            Mode::Train => {
                let mask = self.add(Op::DropoutMask { p: Scalar(p) }, &[x]);
                self.binary(BinaryOp::Mul, x, mask)
            }
            Mode::Eval => x,
        }
    }

    fn layer(&mut self, layer: &m::Layer, x: NodeId) -> NodeId {
        match &layer.kind {
            LayerKind::Flatten => self.reshape(x, layer.shape.clone()),
            LayerKind::Activation(op) => self.unary(*op, x),
            LayerKind::Softmax { log } => {
                let axis = layer.shape.rank() - 1;
                self.add(
                    if *log {
                        Op::LogSoftmax { axis }
                    } else {
                        Op::Softmax { axis }
                    },
                    &[x],
                )
            }
            LayerKind::Dropout { p } => self.dropout(*p, x),
            LayerKind::Dense { weight, bias } => {
                let w = self.add(Op::Param(*weight), &[]);
                let y = self.add(Op::MatMul, &[x, w]);
                match bias {
                    Some(b) => {
                        let b = self.add(Op::Param(*b), &[]);
                        self.binary(BinaryOp::Add, y, b)
                    }
                    None => y,
                }
            }
            LayerKind::Conv2d {
                weight,
                bias,
                window,
            } => {
                let w = self.add(Op::Param(*weight), &[]);
                let y = self.add(Op::Conv2d(*window), &[x, w]);
                match bias {
                    Some(b) => {
                        let b = self.add(Op::Param(*b), &[]);
                        let b = self.per_channel(b, layer.shape.rank());
                        self.binary(BinaryOp::Add, y, b)
                    }
                    None => y,
                }
            }
            LayerKind::Pool { op, window } => self.add(Op::Pool(*op, *window), &[x]),
            LayerKind::GlobalPool(op) => {
                let pooled = self.add(Op::Reduce(*op, vec![2, 3]), &[x]);
                self.reshape(pooled, layer.shape.clone())
            }
            LayerKind::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                eps,
                momentum,
            } => {
                let rank = layer.shape.rank();
                // Statistics per channel: over the batch, and over height and width for images.
                let axes: Vec<usize> = if rank == 4 { vec![0, 2, 3] } else { vec![0] };
                let (mean, var) = match self.mode {
                    Mode::Train => {
                        let mean = self.add(Op::Reduce(ReduceOp::Mean, axes.clone()), &[x]);
                        let mean_b = self.per_channel(mean, rank);
                        let centred = self.binary(BinaryOp::Sub, x, mean_b);
                        let squared = self.unary(UnaryOp::Square, centred);
                        let var = self.add(Op::Reduce(ReduceOp::Mean, axes), &[squared]);
                        // running ← (1 − momentum)·running + momentum·batch statistic
                        for (state, stat) in [(*running_mean, mean), (*running_var, var)] {
                            let old = self.add(Op::State(state), &[]);
                            let keep = self.constant(1.0 - momentum);
                            let take = self.constant(*momentum);
                            let kept = self.binary(BinaryOp::Mul, keep, old);
                            let taken = self.binary(BinaryOp::Mul, take, stat);
                            let new = self.binary(BinaryOp::Add, kept, taken);
                            self.graph.state_updates.push((state, new));
                        }
                        (mean, var)
                    }
                    Mode::Eval => (
                        self.add(Op::State(*running_mean), &[]),
                        self.add(Op::State(*running_var), &[]),
                    ),
                };
                // y = (x − mean) · gamma / sqrt(var + eps) + beta
                let eps = self.constant(*eps);
                let var_eps = self.binary(BinaryOp::Add, var, eps);
                let std = self.unary(UnaryOp::Sqrt, var_eps);
                let g = self.add(Op::Param(*gamma), &[]);
                let scale = self.binary(BinaryOp::Div, g, std);
                let mean_b = self.per_channel(mean, rank);
                let centred = self.binary(BinaryOp::Sub, x, mean_b);
                let scale_b = self.per_channel(scale, rank);
                let scaled = self.binary(BinaryOp::Mul, centred, scale_b);
                let b = self.add(Op::Param(*beta), &[]);
                let b = self.per_channel(b, rank);
                self.binary(BinaryOp::Add, scaled, b)
            }
        }
    }

    /// A per-channel vector `[C]` shaped to broadcast against `[N, C]` or `[N, C, H, W]`.
    fn per_channel(&mut self, v: NodeId, rank: usize) -> NodeId {
        if rank == 4 {
            let c = self.graph.shape(v).0[0];
            self.reshape(v, Shape(vec![c, Dim::Fixed(1), Dim::Fixed(1)]))
        } else {
            v
        }
    }
}

//! The checked model: every name resolved, every value shaped, every hyperparameter typed and in
//! range. Built only by `check`; the IR builder lowers it without further checks.

use crate::shape::{Shape, Window};
use crate::source::Span;

/// A model that passed every check.
#[derive(Clone, Debug)]
pub struct Model {
    pub name: String,
    pub inputs: Vec<Input>,
    pub label: Option<Label>,
    pub params: Vec<Param>,
    /// Non-trained tensors carried between steps (batchnorm running statistics).
    pub states: Vec<State>,
    /// Equations and layers blocks in source order, each block use's values before the
    /// value that uses it.
    pub values: Vec<Value>,
    /// Every use of a block, in the order they were expanded (outer before inner).
    pub block_uses: Vec<BlockUse>,
    /// The value that is the network's prediction, if any.
    pub output: Option<usize>,
    /// The scalar training objective, penalties excluded.
    pub loss: TExpr,
    pub penalties: Vec<Penalty>,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub train: TrainSettings,
    /// What is reported besides the loss, in the order given.
    pub metrics: Vec<Metric>,
}

/// An input with its per-example shape.
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    pub shape: Vec<u64>,
    pub span: Span,
}

/// What the model is trained to predict.
#[derive(Clone, Debug)]
pub struct Label {
    pub name: String,
    pub kind: LabelKind,
    pub span: Span,
}

/// A class index in `0..classes`, or a real-valued target of a per-example shape.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelKind {
    Class(u64),
    Target(Vec<u64>),
}

/// A trained tensor.
#[derive(Clone, Debug)]
pub struct Param {
    /// The declared name, or `dense1.weight` style for layer parameters.
    pub name: String,
    pub shape: Shape,
    pub init: Init,
    pub span: Span,
}

/// A non-trained tensor updated during training (running mean and variance).
#[derive(Clone, Debug)]
pub struct State {
    pub name: String,
    pub shape: Shape,
    pub init: Init,
}

/// How a parameter's first values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Constant(f64),
    Normal { mean: f64, std: f64 },
    Uniform { low: f64, high: f64 },
    XavierNormal,
    XavierUniform,
    HeNormal,
    HeUniform,
}

/// One use of a block, expanded into values.
#[derive(Clone, Debug)]
pub struct BlockUse {
    /// Where it is used: `residual3`, `features.vgg_block2`; its parameters' names start so.
    pub path: String,
    /// How many block uses it is inside.
    pub depth: usize,
    pub shape: Shape,
    /// The first of its values.
    pub first_value: usize,
    /// The call.
    pub span: Span,
}

/// A named equation or a layers block.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: Option<String>,
    /// The path of the innermost block use it belongs to; empty at the model's top level.
    pub block: String,
    pub kind: ValueKind,
    pub shape: Shape,
    pub span: Span,
}

/// How a value is computed.
#[derive(Clone, Debug)]
pub enum ValueKind {
    Expr(TExpr),
    Layers { input: TExpr, layers: Vec<Layer> },
}

/// A typed, shaped expression.
#[derive(Clone, Debug)]
pub struct TExpr {
    pub kind: TExprKind,
    pub shape: Shape,
    pub span: Span,
}

/// The kinds of typed expression.
#[derive(Clone, Debug)]
pub enum TExprKind {
    Input(usize),
    /// The label or target; a class label's shape is `[N]` of class indices.
    Label,
    Param(usize),
    Value(usize),
    Const(f64),
    Unary(UnaryOp, Box<TExpr>),
    Binary(BinaryOp, Box<TExpr>, Box<TExpr>),
    MatMul(Box<TExpr>, Box<TExpr>),
    /// A reduction over the given axes (ascending, distinct), or over all when `None`.
    Reduce {
        op: ReduceOp,
        axes: Option<Vec<usize>>,
        arg: Box<TExpr>,
    },
    /// In training, each element zeroed with probability `p` and the rest scaled by
    /// 1/(1 − p); the identity in evaluation.
    Dropout {
        p: f64,
        arg: Box<TExpr>,
    },
    /// The arguments joined along `axis` (never the batch axis).
    Concat {
        axis: usize,
        args: Vec<TExpr>,
    },
    Softmax {
        log: bool,
        axis: usize,
        arg: Box<TExpr>,
    },
    /// Reshape (and flatten) to this expression's shape.
    Reshape(Box<TExpr>),
    Transpose {
        perm: Vec<usize>,
        arg: Box<TExpr>,
    },
    Loss {
        kind: LossKind,
        pred: Box<TExpr>,
        target: Box<TExpr>,
    },
}

pub use crate::ops::{BinaryOp, PoolOp, ReduceOp, UnaryOp};

/// The built-in losses; each is the mean over the batch of a per-example loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    Mse,
    L1,
    CrossEntropy,
    BinaryCrossEntropy,
    Hinge,
    Perceptron,
}

/// One layer of a layers block, with the shapes around it.
#[derive(Clone, Debug)]
pub struct Layer {
    pub kind: LayerKind,
    /// `dense1`, `relu`, ...: the name shown in the summary and used for its parameters.
    pub name: String,
    pub input_shape: Shape,
    pub shape: Shape,
    pub span: Span,
}

/// The layers, with their parameters as indices into `Model::params` and `Model::states`.
#[derive(Clone, Debug)]
pub enum LayerKind {
    Dense {
        weight: usize,
        bias: Option<usize>,
    },
    Conv2d {
        weight: usize,
        bias: Option<usize>,
        window: Window,
    },
    Pool {
        op: PoolOp,
        window: Window,
    },
    BatchNorm {
        gamma: usize,
        beta: usize,
        running_mean: usize,
        running_var: usize,
        eps: f64,
        momentum: f64,
    },
    Dropout {
        p: f64,
    },
    Activation(UnaryOp),
    Softmax {
        log: bool,
    },
    Flatten,
    /// The mean or maximum of each channel's plane: `[N, C, H, W]` to `[N, C, 1, 1]`.
    GlobalPool(ReduceOp),
}

/// An L1 or L2 penalty on some parameters, added to the loss.
#[derive(Clone, Debug)]
pub struct Penalty {
    pub kind: PenaltyKind,
    pub strength: f64,
    pub params: Vec<usize>,
}

/// `l1`: strength·Σ|w|; `l2`: strength/2·Σw² (so its gradient is strength·w, as weight decay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PenaltyKind {
    L1,
    L2,
}

/// The optimizer: its rule, the learning rate the model declares (the command line may override
/// it), L2 weight decay and gradient clipping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub rule: Rule,
    pub lr: f64,
    /// Folded into the gradient (`g + λ·w`), except for `adamw`, which decays the weights
    /// directly.
    pub weight_decay: f64,
    /// The largest global norm of the gradients; larger ones are scaled down to it.
    pub clip: Option<f64>,
}

/// How an optimizer turns a gradient into a step, with the hyperparameters of that rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    /// Adam, or AdamW when `decoupled` (weight decay applied to the weights, not the gradient).
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        decoupled: bool,
    },
    Adagrad {
        eps: f64,
    },
    Rmsprop {
        alpha: f64,
        eps: f64,
        momentum: f64,
    },
    Adadelta {
        rho: f64,
        eps: f64,
    },
}

impl Optimizer {
    /// The name a model file gives it.
    pub fn name(&self) -> &'static str {
        match self.rule {
            Rule::Sgd { .. } => "sgd",
            Rule::Adam {
                decoupled: false, ..
            } => "adam",
            Rule::Adam {
                decoupled: true, ..
            } => "adamw",
            Rule::Adagrad { .. } => "adagrad",
            Rule::Rmsprop { .. } => "rmsprop",
            Rule::Adadelta { .. } => "adadelta",
        }
    }

    /// Whether each step divides by a running root mean square of the gradient: where a
    /// gradient is of the order of `eps`, such a step is ill-conditioned.
    pub fn is_adaptive(&self) -> bool {
        !matches!(self.rule, Rule::Sgd { .. })
    }
}

/// How the learning rate changes over training: a factor of the optimizer's rate that is a
/// function of the step, computed in the training graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Epochs of linear warm-up from 0 (may be fractional).
    pub warmup: f64,
}

/// The shape of a schedule. Times are in epochs; `epochs: None` means the run's.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    Constant,
    /// × `factor` every `every` epochs.
    Step {
        every: u64,
        factor: f64,
    },
    /// × `factor` after each of the epochs `at`, in increasing order.
    MultiFactor {
        at: Vec<u64>,
        factor: f64,
    },
    /// From the rate down to `final_lr` along half a cosine.
    Cosine {
        final_lr: f64,
        epochs: Option<u64>,
    },
    /// From the rate down to `final_lr` as (1 − t/T)^power.
    Poly {
        power: f64,
        final_lr: f64,
        epochs: Option<u64>,
    },
}

impl Schedule {
    /// A constant rate, the default.
    pub const CONSTANT: Schedule = Schedule {
        kind: ScheduleKind::Constant,
        warmup: 0.0,
    };

    /// The name a model file gives it.
    pub fn name(&self) -> &'static str {
        match self.kind {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Step { .. } => "step",
            ScheduleKind::MultiFactor { .. } => "multifactor",
            ScheduleKind::Cosine { .. } => "cosine",
            ScheduleKind::Poly { .. } => "poly",
        }
    }
}

/// Default training settings; the command line may override them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainSettings {
    pub batch: u64,
    pub epochs: u64,
    pub seed: u64,
    pub shuffle: bool,
}

/// The largest batch a run may use. With the checker's bound of 2^34 elements per example, every
/// batched size stays below 2^58 elements, so size arithmetic on 64 bits cannot overflow.
pub const MAX_BATCH: u64 = 1 << 24;

/// The largest learning rate or other hyperparameter: generated code holds them as f32.
pub const MAX_HYPERPARAMETER: f64 = f32::MAX as f64;

impl TrainSettings {
    /// Checks a batch size, from the model file or the command line: the one limit both obey.
    pub fn check_batch(batch: u64) -> Result<u64, String> {
        if (1..=MAX_BATCH).contains(&batch) {
            Ok(batch)
        } else {
            Err(format!(
                "`batch` must be between 1 and {MAX_BATCH} (2^24), found {batch}"
            ))
        }
    }

    /// Checks a learning rate, from the model file or the command line.
    pub fn check_lr(lr: f64) -> Result<f64, String> {
        if lr > 0.0 && lr <= MAX_HYPERPARAMETER {
            Ok(lr)
        } else {
            Err(format!(
                "the learning rate must be above 0 and at most {MAX_HYPERPARAMETER:.1e} (the largest f32), found {lr:e}"
            ))
        }
    }
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            batch: 32,
            epochs: 1,
            seed: 0,
            shuffle: true,
        }
    }
}

/// What is reported besides the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The share of right predictions (arg-max class, or a threshold for one output).
    Accuracy,
    /// √(mean (p − t)²) over every element of the set.
    Rmse,
    /// mean |p − t|.
    Mae,
    /// √(mean (log max(p, 1) − log t)²): d2l's house-price score, relative errors.
    LogRmse,
}

impl Metric {
    /// Every metric, in the order the docs list them.
    pub const ALL: [Metric; 4] = [Metric::Accuracy, Metric::Rmse, Metric::Mae, Metric::LogRmse];

    /// As a model file names it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::LogRmse => "log_rmse",
        }
    }

    /// As the epoch line and the log name it (`train_acc`, `test_rmse`).
    pub fn short(self) -> &'static str {
        match self {
            Metric::Accuracy => "acc",
            other => other.name(),
        }
    }
}

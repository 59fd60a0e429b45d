//! Signatures of everything callable (functions, layers, losses, optimizers, initializers,
//! penalties, training settings) and the one binder that matches call arguments against them:
//! unknown, repeated, missing and surplus arguments, argument types and value ranges.

use super::suggest::suggest;
use super::Checker;
use crate::diagnostics::{Code, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{Arg, Expr, ExprKind};

/// What an argument must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Tensor,
    Number,
    Int,
    Bool,
    /// An integer or a list of two (`kernel: 5` or `kernel: [5, 3]`).
    IntPair,
    /// A list of integers (`[-1, 784]`).
    IntList,
    /// An axis or a list of axes (`axis: 1`, `axis: [2, 3]`).
    Axes,
    /// An initializer (`zeros`, `normal(0, 0.01)`).
    Init,
    /// One parameter name or a list of them.
    Names,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Tensor => "a tensor expression",
            Ty::Number => "a number",
            Ty::Int => "a whole number",
            Ty::Bool => "`true` or `false`",
            Ty::IntPair => "a whole number or a list of two",
            Ty::IntList => "a list of whole numbers",
            Ty::Axes => "an axis or a list of axes",
            Ty::Init => "an initializer such as `zeros` or `normal(0, 0.01)`",
            Ty::Names => "a parameter name or a list of them",
        }
    }
}

/// The values an argument may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    Any,
    /// `> 0`
    Positive,
    /// `>= 0`
    NonNegative,
    /// `>= 1`
    AtLeastOne,
    /// `0 <= x < 1`
    Fraction,
    /// `0 <= x <= 1`
    Probability,
}

impl Range {
    fn contains(self, x: f64) -> bool {
        match self {
            Range::Any => true,
            Range::Positive => x > 0.0,
            Range::NonNegative => x >= 0.0,
            Range::AtLeastOne => x >= 1.0,
            Range::Fraction => (0.0..1.0).contains(&x),
            Range::Probability => (0.0..=1.0).contains(&x),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Range::Any => "any value",
            Range::Positive => "greater than 0",
            Range::NonNegative => "at least 0",
            Range::AtLeastOne => "at least 1",
            Range::Fraction => "at least 0 and below 1",
            Range::Probability => "between 0 and 1",
        }
    }
}

/// One parameter of a signature (`'s`: a block's, borrowed from its definition; else static).
#[derive(Clone, Copy, Debug)]
pub struct Spec<'s> {
    pub name: &'s str,
    pub ty: Ty,
    pub required: bool,
    pub range: Range,
}

const fn req(name: &'static str, ty: Ty, range: Range) -> Spec<'static> {
    Spec {
        name,
        ty,
        required: true,
        range,
    }
}

const fn opt(name: &'static str, ty: Ty, range: Range) -> Spec<'static> {
    Spec {
        name,
        ty,
        required: false,
        range,
    }
}

/// A callable's name and parameters, in positional order.
#[derive(Clone, Copy, Debug)]
pub struct Signature<'s> {
    pub name: &'s str,
    pub params: &'s [Spec<'s>],
}

const fn sig(name: &'static str, params: &'static [Spec<'static>]) -> Signature<'static> {
    Signature { name, params }
}

use crate::ops::{PoolOp, ReduceOp, UnaryOp};
use std::sync::OnceLock;
use Range::*;
use Ty::*;

const X: Spec<'static> = req("x", Tensor, Any);
const AXIS: Spec<'static> = opt("axis", Int, Any);
const PRED_TARGET: &[Spec<'static>] = &[req("pred", Tensor, Any), req("target", Tensor, Any)];

/// Functions usable in expressions: the elementwise functions, softmax, the reductions and
/// the shape functions, then the losses (which are functions too). The elementwise functions
/// and reductions come from `ops`, the one list of operations.
pub fn functions() -> &'static [Signature<'static>] {
    static TABLE: OnceLock<Vec<Signature<'static>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let unary = UnaryOp::ALL
            .iter()
            .filter(|op| op.info().surface.is_function())
            .map(|op| sig(op.name(), &[X]));
        let reduce = ReduceOp::ALL
            .iter()
            .filter(|op| op.info().surface.is_function())
            .map(|op| sig(op.name(), REDUCE));
        unary
            .chain(SOFTMAX.iter().copied())
            .chain(reduce)
            .chain(SHAPE_AND_LOSS_FUNCTIONS.iter().copied())
            .collect()
    })
}

const REDUCE: &[Spec<'static>] = &[X, opt("axis", Axes, Any)];

const SOFTMAX: &[Signature<'static>] =
    &[sig("softmax", &[X, AXIS]), sig("log_softmax", &[X, AXIS])];

const SHAPE_AND_LOSS_FUNCTIONS: &[Signature<'static>] = &[
    sig("reshape", &[X, req("shape", IntList, Any)]),
    sig("flatten", &[X]),
    sig("transpose", &[X, opt("perm", IntList, Any)]),
    sig("dropout", &[X, req("p", Number, Fraction)]),
    // Any number of tensors, then `axis`: bound by `Checker::concat`, not by `bind`.
    sig("concat", &[X, AXIS]),
    sig("mse", PRED_TARGET),
    sig("l1", PRED_TARGET),
    sig("cross_entropy", PRED_TARGET),
    sig("binary_cross_entropy", PRED_TARGET),
    sig("hinge", PRED_TARGET),
    sig("perceptron", PRED_TARGET),
];

/// The names of the built-in losses (a subset of `functions()`).
pub const LOSSES: &[&str] = &[
    "mse",
    "l1",
    "cross_entropy",
    "binary_cross_entropy",
    "hinge",
    "perceptron",
];

const POOL: &[Spec<'static>] = &[
    req("kernel", IntPair, AtLeastOne),
    opt("stride", IntPair, AtLeastOne),
    opt("padding", IntPair, NonNegative),
];

/// Layers usable in a `layers` block; the activations and pooling layers come from `ops`.
pub fn layers() -> &'static [Signature<'static>] {
    static TABLE: OnceLock<Vec<Signature<'static>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let activations = UnaryOp::ALL
            .iter()
            .filter(|op| op.info().surface.is_layer())
            .map(|op| sig(op.name(), &[]));
        let pools = PoolOp::ALL
            .iter()
            .filter(|op| op.info().surface.is_layer())
            .map(|op| sig(op.name(), POOL));
        let mut table = LAYERS_BEFORE.to_vec();
        table.extend(activations);
        table.extend(LAYERS_BETWEEN);
        table.extend(pools);
        table.extend(LAYERS_AFTER);
        table
    })
}

const LAYERS_BEFORE: [Signature<'static>; 2] = [
    sig("flatten", &[]),
    sig(
        "dense",
        &[
            req("units", Int, AtLeastOne),
            opt("bias", Bool, Any),
            opt("init", Init, Any),
        ],
    ),
];

const LAYERS_BETWEEN: [Signature<'static>; 4] = [
    sig("softmax", &[]),
    sig("log_softmax", &[]),
    sig("dropout", &[req("p", Number, Fraction)]),
    sig(
        "conv2d",
        &[
            req("channels", Int, AtLeastOne),
            req("kernel", IntPair, AtLeastOne),
            opt("stride", IntPair, AtLeastOne),
            opt("padding", IntPair, NonNegative),
            opt("bias", Bool, Any),
            opt("init", Init, Any),
        ],
    ),
];

const LAYERS_AFTER: [Signature<'static>; 3] = [
    sig(
        "batchnorm",
        &[
            opt("eps", Number, Positive),
            opt("momentum", Number, Probability),
        ],
    ),
    sig("global_avgpool", &[]),
    sig("global_maxpool", &[]),
];

const WEIGHT_DECAY: Spec<'static> = opt("weight_decay", Number, NonNegative);
const CLIP: Spec<'static> = opt("clip", Number, Positive);
const ADAM: &[Spec<'static>] = &[
    opt("lr", Number, Positive),
    opt("beta1", Number, Fraction),
    opt("beta2", Number, Fraction),
    opt("eps", Number, Positive),
    WEIGHT_DECAY,
    CLIP,
];

/// Optimizers (their defaults, which are PyTorch's, are in `Checker::optimizer`).
pub const OPTIMIZERS: &[Signature<'static>] = &[
    sig(
        "sgd",
        &[
            req("lr", Number, Positive),
            opt("momentum", Number, Fraction),
            opt("nesterov", Bool, Any),
            WEIGHT_DECAY,
            CLIP,
        ],
    ),
    sig("adam", ADAM),
    sig("adamw", ADAM),
    sig(
        "adagrad",
        &[
            opt("lr", Number, Positive),
            opt("eps", Number, Positive),
            WEIGHT_DECAY,
            CLIP,
        ],
    ),
    sig(
        "rmsprop",
        &[
            opt("lr", Number, Positive),
            opt("alpha", Number, Fraction),
            opt("eps", Number, Positive),
            opt("momentum", Number, Fraction),
            WEIGHT_DECAY,
            CLIP,
        ],
    ),
    sig(
        "adadelta",
        &[
            opt("lr", Number, Positive),
            opt("rho", Number, Fraction),
            opt("eps", Number, Positive),
            WEIGHT_DECAY,
            CLIP,
        ],
    ),
];

const WARMUP: Spec<'static> = opt("warmup", Number, NonNegative);
const FINAL_LR: Spec<'static> = opt("final_lr", Number, NonNegative);
const LENGTH: Spec<'static> = opt("epochs", Int, AtLeastOne);

/// Learning-rate schedules; every one may start with a linear warm-up.
pub const SCHEDULES: &[Signature<'static>] = &[
    sig("constant", &[WARMUP]),
    sig(
        "step",
        &[
            req("every", Int, AtLeastOne),
            opt("factor", Number, Positive),
            WARMUP,
        ],
    ),
    sig(
        "multifactor",
        &[
            req("at", IntList, AtLeastOne),
            opt("factor", Number, Positive),
            WARMUP,
        ],
    ),
    sig("cosine", &[FINAL_LR, LENGTH, WARMUP]),
    sig(
        "poly",
        &[opt("power", Number, Positive), FINAL_LR, LENGTH, WARMUP],
    ),
];

/// Initializers, with the aliases users know from other frameworks.
pub const INITS: &[Signature<'static>] = &[
    sig("zeros", &[]),
    sig("ones", &[]),
    sig("constant", &[req("value", Number, Any)]),
    sig(
        "normal",
        &[opt("mean", Number, Any), opt("std", Number, NonNegative)],
    ),
    sig(
        "uniform",
        &[opt("low", Number, Any), opt("high", Number, Any)],
    ),
    sig("xavier", &[]),
    sig("xavier_normal", &[]),
    sig("xavier_uniform", &[]),
    sig("glorot", &[]),
    sig("glorot_normal", &[]),
    sig("glorot_uniform", &[]),
    sig("he", &[]),
    sig("he_normal", &[]),
    sig("he_uniform", &[]),
    sig("kaiming", &[]),
    sig("kaiming_normal", &[]),
    sig("kaiming_uniform", &[]),
];

/// Penalties.
pub const PENALTIES: &[Signature<'static>] = &[
    sig(
        "l1",
        &[req("strength", Number, NonNegative), opt("on", Names, Any)],
    ),
    sig(
        "l2",
        &[req("strength", Number, NonNegative), opt("on", Names, Any)],
    ),
];

/// The `train { ... }` settings, all by keyword.
pub const TRAIN: Signature<'static> = sig(
    "train",
    &[
        opt("batch", Int, AtLeastOne),
        opt("epochs", Int, AtLeastOne),
        opt("seed", Int, NonNegative),
        opt("shuffle", Bool, Any),
    ],
);

/// Names from PyTorch and d2l's Python that learners carry over, with netc's for the same thing.
const HABITS: &[(&str, &str)] = &[
    ("batch_size", "batch"),
    ("num_epochs", "epochs"),
    ("n_epochs", "epochs"),
    ("learning_rate", "lr"),
    ("out_features", "units"),
    ("out_channels", "channels"),
    ("kernel_size", "kernel"),
    ("num_hiddens", "units"),
    ("dropout", "p"),
    // d2l's RMSProp and PyTorch's schedulers and clipping.
    ("gamma", "alpha"),
    ("gamma", "factor"),
    ("step_size", "every"),
    ("milestones", "at"),
    ("eta_min", "final_lr"),
    ("T_max", "epochs"),
    ("max_norm", "clip"),
    ("warmup_epochs", "warmup"),
];

/// PyTorch's optimizer and scheduler classes whose netc names differ by more than case.
pub const TORCH_CLASSES: &[(&str, &str)] = &[
    ("StepLR", "step"),
    ("MultiStepLR", "multifactor"),
    ("CosineAnnealingLR", "cosine"),
    ("cosine_annealing", "cosine"),
    ("PolynomialLR", "poly"),
    ("ConstantLR", "constant"),
];

/// Finds a signature by name.
pub fn lookup(
    table: &'static [Signature<'static>],
    name: &str,
) -> Option<&'static Signature<'static>> {
    table.iter().find(|s| s.name == name)
}

/// The names in a table, for suggestions.
pub fn names(table: &'static [Signature<'static>]) -> impl Iterator<Item = &'static str> {
    table.iter().map(|s| s.name)
}

/// Arguments matched to a signature's parameters.
pub struct Bound<'a> {
    pub signature: &'a Signature<'a>,
    slots: Vec<Option<&'a Arg>>,
    /// Where the whole call is, for errors about it.
    pub span: Span,
}

impl<'a> Bound<'a> {
    /// The expression given for parameter `name`, if any.
    pub fn expr(&self, name: &str) -> Option<&'a Expr> {
        let index = self.signature.params.iter().position(|p| p.name == name)?;
        self.slots[index].map(|arg| &arg.value)
    }

    fn spec(&self, name: &str) -> Spec<'a> {
        *self
            .signature
            .params
            .iter()
            .find(|p| p.name == name)
            .expect("argument names are taken from the signature")
    }
}

/// Which codes a binding failure uses: the train block speaks of settings, the rest of arguments.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Call,
    Train,
}

impl Checker {
    /// Matches `args` to `signature`, reporting unknown, repeated, surplus and missing arguments.
    pub fn bind<'a>(
        &mut self,
        signature: &'a Signature<'a>,
        args: &'a [Arg],
        span: Span,
        context: Context,
    ) -> Bound<'a> {
        let params = signature.params;
        let mut slots: Vec<Option<&'a Arg>> = vec![None; params.len()];
        let mut next_positional = 0;
        let mut keyword_seen = false;
        // Parameters given under another framework's name: reported as that, not as missing.
        let mut named_otherwise = vec![false; params.len()];
        for arg in args {
            let index = match &arg.name {
                None if context == Context::Train => {
                    self.report(
                        Diagnostic::new(
                            Code::E0501,
                            "training settings are given by name",
                            arg.span(),
                            "no setting named",
                        )
                        .with_help(format!("write e.g. `batch: {}`", source_hint(&arg.value))),
                    );
                    continue;
                }
                None => {
                    if keyword_seen {
                        self.report(Diagnostic::new(
                            Code::E0404,
                            "positional argument after a keyword argument",
                            arg.span(),
                            "give this argument by name",
                        ));
                        continue;
                    }
                    if next_positional >= params.len() {
                        let most = match params.len() {
                            0 => "no arguments".to_string(),
                            1 => "1 argument".to_string(),
                            n => format!("{n} arguments"),
                        };
                        self.report(
                            Diagnostic::new(
                                Code::E0404,
                                format!("too many arguments to `{}`", signature.name),
                                arg.span(),
                                "unexpected argument",
                            )
                            .with_note(format!("`{}` takes {most}", signature.name)),
                        );
                        continue;
                    }
                    next_positional += 1;
                    next_positional - 1
                }
                Some(name) => {
                    keyword_seen = true;
                    match params.iter().position(|p| p.name == name.name) {
                        Some(index) => index,
                        None => {
                            let code = match context {
                                Context::Call => Code::E0207,
                                Context::Train => Code::E0501,
                            };
                            let what = match context {
                                Context::Call => {
                                    format!("`{}` has no argument `{}`", signature.name, name.name)
                                }
                                Context::Train => {
                                    format!("unknown training setting `{}`", name.name)
                                }
                            };
                            let diagnostic = Diagnostic::new(code, what, name.span, "unknown name");
                            let habit = HABITS.iter().find(|(theirs, ours)| {
                                *theirs == name.name && params.iter().any(|p| p.name == *ours)
                            });
                            if let Some((theirs, ours)) = habit {
                                let ours_at = params.iter().position(|p| p.name == *ours);
                                named_otherwise
                                    [ours_at.expect("the habit's name is a parameter")] = true;
                                self.report(diagnostic.with_help(format!(
                                    "`{theirs}` is PyTorch's and d2l's name; netc calls it `{ours}`"
                                )));
                                continue;
                            }
                            let names = params.iter().map(|p| p.name);
                            let kind = format!("arguments of `{}`", signature.name);
                            self.report(suggest(diagnostic, &name.name, &kind, names));
                            continue;
                        }
                    }
                }
            };
            if let Some(first) = slots[index] {
                self.report(
                    Diagnostic::new(
                        Code::E0406,
                        format!("`{}` given twice", params[index].name),
                        arg.span(),
                        "given again here",
                    )
                    .with_label(first.span(), "first given here"),
                );
                continue;
            }
            slots[index] = Some(arg);
        }
        for ((spec, slot), elsewhere) in params.iter().zip(&slots).zip(named_otherwise) {
            if spec.required && slot.is_none() && !elsewhere {
                self.report(
                    Diagnostic::new(
                        Code::E0403,
                        format!("`{}` needs the argument `{}`", signature.name, spec.name),
                        span,
                        format!("`{}` missing", spec.name),
                    )
                    .with_help(format!(
                        "add `{}: <{}>`",
                        spec.name,
                        spec.ty.describe()
                    )),
                );
            }
        }
        Bound {
            signature,
            slots,
            span,
        }
    }

    /// A number argument, type- and range-checked. `None` when absent or invalid (reported).
    pub fn number_arg(&mut self, bound: &Bound, name: &str, context: Context) -> Option<f64> {
        let expr = bound.expr(name)?;
        let value = self.literal_number(expr, false)?;
        self.in_range(bound, name, value, expr.span, context)
    }

    /// A number argument that defaults to `default` when absent; `None` only when invalid.
    pub fn number_or(
        &mut self,
        bound: &Bound,
        name: &str,
        default: f64,
        context: Context,
    ) -> Option<f64> {
        match bound.expr(name) {
            Some(_) => self.number_arg(bound, name, context),
            None => Some(default),
        }
    }

    /// A pair argument that defaults to `default` when absent; `None` only when invalid.
    pub fn pair_or(&mut self, bound: &Bound, name: &str, default: [u64; 2]) -> Option<[u64; 2]> {
        match bound.expr(name) {
            Some(_) => self.pair_arg(bound, name),
            None => Some(default),
        }
    }

    /// An integer argument, type- and range-checked.
    pub fn int_arg(&mut self, bound: &Bound, name: &str, context: Context) -> Option<i64> {
        let expr = bound.expr(name)?;
        let value = self.literal_number(expr, true)?;
        self.in_range(bound, name, value, expr.span, context)
            .map(|v| v as i64)
    }

    /// A non-negative integer argument that counts or sizes something.
    pub fn count_arg(&mut self, bound: &Bound, name: &str, context: Context) -> Option<u64> {
        self.int_arg(bound, name, context).map(|v| v.max(0) as u64)
    }

    /// A boolean argument.
    pub fn bool_arg(&mut self, bound: &Bound, name: &str) -> Option<bool> {
        let expr = bound.expr(name)?;
        match expr.kind {
            ExprKind::Bool(b) => Some(b),
            _ => {
                self.wrong_type(expr, Ty::Bool);
                None
            }
        }
    }

    /// An integer or a pair of integers (height, width).
    pub fn pair_arg(&mut self, bound: &Bound, name: &str) -> Option<[u64; 2]> {
        let expr = bound.expr(name)?;
        let items: Vec<&Expr> = match &expr.kind {
            ExprKind::List(items) if items.len() == 2 => items.iter().collect(),
            ExprKind::List(_) => {
                self.wrong_type(expr, Ty::IntPair);
                return None;
            }
            _ => vec![expr, expr],
        };
        let mut pair = [0u64; 2];
        for (slot, item) in pair.iter_mut().zip(items) {
            let value = self.literal_number(item, true)?;
            *slot = self.in_range(bound, name, value, item.span, Context::Call)? as u64;
        }
        Some(pair)
    }

    /// A list of integers, possibly negative.
    pub fn int_list_arg(&mut self, bound: &Bound, name: &str) -> Option<Vec<(i64, Span)>> {
        let expr = bound.expr(name)?;
        let ExprKind::List(items) = &expr.kind else {
            self.wrong_type(expr, Ty::IntList);
            return None;
        };
        items
            .iter()
            .map(|item| {
                self.literal_number(item, true)
                    .map(|v| (v as i64, item.span))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    }

    /// A number literal, possibly negated; `integer` demands a whole number.
    pub fn literal_number(&mut self, expr: &Expr, integer: bool) -> Option<f64> {
        let value = match &expr.kind {
            ExprKind::Number { value, is_integer } => Some((*value, *is_integer)),
            ExprKind::Neg(inner) => match inner.kind {
                ExprKind::Number { value, is_integer } => Some((-value, is_integer)),
                _ => None,
            },
            _ => None,
        };
        match value {
            Some((value, is_integer)) if is_integer || !integer => {
                if integer && value.abs() > 9.0e15 {
                    self.report(Diagnostic::new(
                        Code::E0102,
                        "integer too large",
                        expr.span,
                        "at most 9e15 is allowed here",
                    ));
                    return None;
                }
                Some(value)
            }
            _ => {
                self.wrong_type(expr, if integer { Ty::Int } else { Ty::Number });
                None
            }
        }
    }

    fn in_range(
        &mut self,
        bound: &Bound,
        name: &str,
        value: f64,
        span: Span,
        context: Context,
    ) -> Option<f64> {
        let spec = bound.spec(name);
        let fits_f32 = value.abs() <= super::model::MAX_HYPERPARAMETER;
        if spec.range.contains(value) && fits_f32 {
            return Some(value);
        }
        let must = if fits_f32 {
            spec.range.describe()
        } else {
            "at most 3.4e38 in size (the largest f32)"
        };
        let (code, what) = match context {
            Context::Call => (
                Code::E0405,
                format!("`{}` of `{}`", name, bound.signature.name),
            ),
            Context::Train => (Code::E0502, format!("training setting `{name}`")),
        };
        self.report(
            Diagnostic::new(
                code,
                format!("{what} is out of range"),
                span,
                format!("must be {must}"),
            )
            .with_note(format!("`{name}` must be {must}, found {value}")),
        );
        None
    }

    /// Reports that `expr` is not of type `ty`.
    pub fn wrong_type(&mut self, expr: &Expr, ty: Ty) {
        let found = match &expr.kind {
            ExprKind::Number {
                is_integer: false, ..
            } => "a fractional number",
            ExprKind::Number { .. } => "a number",
            ExprKind::Bool(_) => "a boolean",
            ExprKind::Name(_) => "a name",
            ExprKind::Call(_) => "a call",
            ExprKind::Neg(_) | ExprKind::Binary(..) => "an expression",
            ExprKind::List(_) => "a list",
        };
        self.report(Diagnostic::new(
            Code::E0401,
            format!("expected {}, found {found}", ty.describe()),
            expr.span,
            format!("expected {}", ty.describe()),
        ));
    }
}

/// A short rendering of a literal for help messages.
fn source_hint(expr: &Expr) -> String {
    crate::syntax::print::expr_text(expr)
}

//! Stage 2, check: AST in, checked model out. Resolves every name, types every argument, infers
//! every shape (batch dimension symbolic), and validates hyperparameters, reporting all
//! independent problems (E02xx–E05xx, W0201) in one run. A value that failed to check is
//! poisoned: its uses report nothing more, so one mistake gives one error.

mod args;
mod expr;
mod layers;
pub mod model;
mod suggest;
pub mod summary;

pub use args::{FUNCTIONS, INITS, LAYERS, LOSSES, METRICS, OPTIMIZERS, PENALTIES, TRAIN};
pub use model::Model;

use crate::diagnostics::{has_errors, Code, Diagnostic};
use crate::shape::Shape;
use crate::source::Span;
use crate::syntax::ast::{self, ExprKind, Ident, Item};
use args::Context;
use model::*;
use std::collections::BTreeMap;
use suggest::suggest;

/// Checks a parsed model. Returns the checked model when there are no errors, and all
/// diagnostics (warnings included) in source order.
pub fn check(ast: &ast::Model) -> (Option<Model>, Vec<Diagnostic>) {
    let mut checker = Checker::default();
    let model = checker.model(ast);
    let mut diagnostics = checker.diagnostics;
    diagnostics.sort_by_key(|d| d.span().start);
    match model {
        Some(model) if !has_errors(&diagnostics) => (Some(model), diagnostics),
        _ => (None, diagnostics),
    }
}

/// What a name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Input(usize),
    Label,
    Param(usize),
    Value(usize),
    /// A value whose definition failed to check.
    Poisoned,
}

/// The checker's state while it walks one model.
#[derive(Default)]
pub struct Checker {
    diagnostics: Vec<Diagnostic>,
    /// Every defined name with what it is and where it was declared.
    scope: BTreeMap<String, (Entry, Span)>,
    /// Equations not yet reached, to explain a use before definition.
    later: BTreeMap<String, Span>,
    inputs: Vec<Input>,
    /// Input declarations, including those that failed to check.
    input_decls: usize,
    label: Option<Label>,
    params: Vec<Param>,
    states: Vec<State>,
    values: Vec<Value>,
}

/// The single sections of a model and where each was first given.
#[derive(Default)]
struct Sections<'a> {
    label: Option<Span>,
    layers: Option<&'a ast::LayersBlock>,
    loss: Option<(&'a ast::Expr, Span)>,
    optimizer: Option<(&'a ast::Expr, Span)>,
    train: Option<(&'a [ast::Arg], Span)>,
    metric: Option<(&'a Ident, Span)>,
}

impl Checker {
    fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn model(&mut self, ast: &ast::Model) -> Option<Model> {
        let sections = self.declarations(ast);
        let mut output = None;
        let mut output_poisoned = false;
        for item in &ast.items {
            let (name, value, prefix) = match item {
                Item::Equation { name, value } => {
                    (Some(name), value.clone(), format!("{}.", name.name))
                }
                // A second unnamed block was reported as such; checking it would only repeat names.
                Item::Layers(block)
                    if sections
                        .layers
                        .is_some_and(|first| !std::ptr::eq(first, block)) =>
                {
                    continue
                }
                Item::Layers(block) => (None, ast::Value::Layers(block.clone()), String::new()),
                _ => continue,
            };
            let checked = self.value(name, &value, &prefix);
            // The unnamed layers block is the output; otherwise the last equation is.
            if sections.layers.is_none() || name.is_none() {
                output = checked;
                output_poisoned = checked.is_none();
            }
        }
        let penalties = self.penalties(ast);
        let loss = match sections.loss {
            Some((value, _)) => self.loss_item(value, output, output_poisoned),
            None => {
                self.missing(
                    ast,
                    "loss",
                    "add one, e.g. `loss cross_entropy` or `loss mse`",
                );
                None
            }
        };
        let optimizer = match sections.optimizer {
            Some((value, _)) => self.optimizer(value),
            None => {
                self.missing(ast, "optimizer", "add one, e.g. `optimizer sgd(lr: 0.1)`");
                None
            }
        };
        let train = match sections.train {
            Some((settings, keyword)) => self.train(settings, keyword),
            None => Some(TrainSettings::default()),
        };
        let metric = self.metric(sections.metric);
        if self.input_decls == 0 {
            self.missing(ast, "input", "declare one, e.g. `input x: [784]`");
        }
        let loss = loss?;
        self.unused_params(&loss);
        Some(Model {
            name: ast.name.name.clone(),
            inputs: std::mem::take(&mut self.inputs),
            label: self.label.take(),
            params: std::mem::take(&mut self.params),
            states: std::mem::take(&mut self.states),
            values: std::mem::take(&mut self.values),
            output,
            loss,
            penalties: penalties?,
            optimizer: optimizer?,
            train: train?,
            metric: metric?,
        })
    }

    /// First pass: inputs, label, parameters and the single sections; equation names are noted
    /// so that a use before definition can say where the definition is.
    fn declarations<'a>(&mut self, ast: &'a ast::Model) -> Sections<'a> {
        let mut sections = Sections::default();
        for item in &ast.items {
            match item {
                Item::Input { name, shape } => {
                    self.input_decls += 1;
                    let shape = self.dims(shape);
                    if let Some(shape) = shape {
                        self.inputs.push(Input {
                            name: name.name.clone(),
                            shape,
                            span: name.span,
                        });
                        self.declare(name, Entry::Input(self.inputs.len() - 1));
                    } else {
                        self.declare(name, Entry::Poisoned);
                    }
                }
                Item::Label {
                    name,
                    classes: (count, span),
                } => {
                    if *count < 2 {
                        self.report(
                            Diagnostic::new(Code::E0405, "a class label needs at least 2 classes", *span, "too few classes")
                                .with_help("for a yes/no answer use `class(2)`, or a `target y: [1]` with `binary_cross_entropy`"),
                        );
                    }
                    self.declare_label(&mut sections.label, name, LabelKind::Class(*count));
                }
                Item::Target { name, shape } => {
                    let dims = self.dims(shape).unwrap_or_default();
                    self.declare_label(&mut sections.label, name, LabelKind::Target(dims));
                }
                Item::Param { name, shape, init } => {
                    let dims = self.dims(shape);
                    let init = match init {
                        Some(expr) => self.init(expr),
                        None => Some(Init::Zeros),
                    };
                    let param = dims.zip(init).and_then(|(dims, init)| {
                        let shape = Shape::fixed(&dims);
                        self.init_fits(init, &shape, name.span).then_some(Param {
                            name: name.name.clone(),
                            shape,
                            init,
                            span: name.span,
                        })
                    });
                    match param {
                        Some(param) => {
                            self.declare_param(param);
                        }
                        None => {
                            self.declare(name, Entry::Poisoned);
                        }
                    }
                }
                Item::Equation { name, .. } => {
                    self.later.entry(name.name.clone()).or_insert(name.span);
                }
                Item::Layers(block) => {
                    if let Some(first) = sections.layers {
                        self.twice("layers", block.keyword, first.keyword);
                    } else {
                        sections.layers = Some(block);
                    }
                }
                Item::Loss { keyword, value } => {
                    self.once_with(&mut sections.loss, (value, *keyword), "loss")
                }
                Item::Optimizer { keyword, value } => {
                    self.once_with(&mut sections.optimizer, (value, *keyword), "optimizer")
                }
                Item::Train { keyword, settings } => {
                    self.once_with(&mut sections.train, (settings, *keyword), "train")
                }
                Item::Metric { keyword, name } => {
                    self.once_with(&mut sections.metric, (name, *keyword), "metric")
                }
                Item::Penalty { .. } => {}
            }
        }
        sections
    }

    /// The label or target; a model has one, and a second is reported and ignored.
    fn declare_label(&mut self, first: &mut Option<Span>, name: &Ident, kind: LabelKind) {
        if let Some(earlier) = *first {
            self.twice("label or target", name.span, earlier);
            return;
        }
        *first = Some(name.span);
        self.label = Some(Label {
            name: name.name.clone(),
            kind,
            span: name.span,
        });
        self.declare(name, Entry::Label);
    }

    fn once_with<T>(&mut self, first: &mut Option<(T, Span)>, item: (T, Span), what: &str) {
        match first {
            Some((_, earlier)) => {
                let earlier = *earlier;
                self.twice(what, item.1, earlier);
            }
            None => *first = Some(item),
        }
    }

    fn twice(&mut self, what: &str, span: Span, first: Span) {
        self.report(
            Diagnostic::new(
                Code::E0209,
                format!("a model has one {what} section"),
                span,
                "given again here",
            )
            .with_label(first, "first given here")
            .with_help("remove one of them"),
        );
    }

    fn missing(&mut self, ast: &ast::Model, what: &str, help: &str) {
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        self.report(
            Diagnostic::new(
                Code::E0210,
                format!("the model has no {what}"),
                ast.name.span,
                format!("`{}` needs {article} {what}", ast.name.name),
            )
            .with_help(help),
        );
    }

    fn declare(&mut self, name: &Ident, entry: Entry) -> bool {
        if let Some(&(_, first)) = self.scope.get(&name.name) {
            self.report(
                Diagnostic::new(
                    Code::E0202,
                    format!("`{}` is defined twice", name.name),
                    name.span,
                    "defined again here",
                )
                .with_label(first, "first defined here")
                .with_help("rename one of them"),
            );
            return false;
        }
        self.scope.insert(name.name.clone(), (entry, name.span));
        true
    }

    /// Adds a parameter and its name; `None` if the name is taken (reported).
    fn declare_param(&mut self, param: Param) -> Option<usize> {
        let ident = Ident {
            name: param.name.clone(),
            span: param.span,
        };
        if !self.fits(&param.shape, param.span) {
            return None;
        }
        let index = self.params.len();
        self.declare(&ident, Entry::Param(index)).then(|| {
            self.params.push(param);
            index
        })
    }

    /// The per-example dimensions of a declared shape.
    fn dims(&mut self, shape: &ast::ShapeLit) -> Option<Vec<u64>> {
        const LIMIT: u64 = 1 << 31;
        let mut ok = true;
        for &(dim, span) in &shape.dims {
            if !(1..=LIMIT).contains(&dim) {
                ok = false;
                self.report(
                    Diagnostic::new(
                        Code::E0310,
                        format!("dimension {dim} is not allowed"),
                        span,
                        "must be between 1 and 2^31",
                    )
                    .with_note("every dimension of a declared shape counts at least one element"),
                );
            }
        }
        let dims: Vec<u64> = shape.dims.iter().map(|&(d, _)| d).collect();
        (ok && self.fits(&Shape::fixed(&dims), shape.span)).then_some(dims)
    }

    /// No tensor may hold more than 2^34 elements (64 GiB of f32, per example when batched):
    /// beyond that a shape is a typo, and sizes stay far from overflowing 64-bit arithmetic.
    pub fn fits(&mut self, shape: &Shape, span: Span) -> bool {
        const MAX_ELEMENTS: u64 = 1 << 34;
        let elements = shape.elements_per_example();
        if elements <= MAX_ELEMENTS {
            return true;
        }
        self.report(
            Diagnostic::new(
                Code::E0310,
                format!("a tensor of shape {shape} is too large"),
                span,
                "too many elements",
            )
            .with_note("a tensor (one example's worth, when batched) holds at most 2^34 elements"),
        );
        false
    }

    fn value(&mut self, name: Option<&Ident>, value: &ast::Value, prefix: &str) -> Option<usize> {
        let (span, checked) = match value {
            ast::Value::Expr(expr) => (
                expr.span,
                self.expr(expr)
                    .map(|e| (e.shape.clone(), ValueKind::Expr(e))),
            ),
            ast::Value::Layers(block) => (
                block.span,
                self.layers(block, prefix).map(|(input, layers)| {
                    let shape = layers
                        .last()
                        .map_or_else(|| input.shape.clone(), |l| l.shape.clone());
                    (shape, ValueKind::Layers { input, layers })
                }),
            ),
        };
        let index = checked.map(|(shape, kind)| {
            self.values.push(Value {
                name: name.map(|n| n.name.clone()),
                kind,
                shape,
                span,
            });
            self.values.len() - 1
        });
        if let Some(name) = name {
            self.declare(name, index.map_or(Entry::Poisoned, Entry::Value));
        }
        index
    }

    /// `loss NAME` applies a built-in loss to the network output and the label; anything
    /// else is an expression that must be a scalar.
    fn loss_item(
        &mut self,
        value: &ast::Expr,
        output: Option<usize>,
        output_poisoned: bool,
    ) -> Option<TExpr> {
        let loss = match &value.kind {
            ExprKind::Name(name) if !self.scope.contains_key(name) => {
                if !LOSSES.contains(&name.as_str()) {
                    self.unknown_loss(name, value.span);
                    return None;
                }
                let pred = match output {
                    Some(i) => {
                        // Point at the layer that produces the prediction, not the whole block.
                        let value = &self.values[i];
                        let span = match &value.kind {
                            ValueKind::Layers { layers, .. } => {
                                layers.last().map_or(value.span, |l| l.span)
                            }
                            ValueKind::Expr(_) => value.span,
                        };
                        TExpr {
                            kind: TExprKind::Value(i),
                            shape: value.shape.clone(),
                            span,
                        }
                    }
                    None if output_poisoned => return None,
                    None => {
                        self.report(
                            Diagnostic::new(Code::E0212, format!("`{name}` has no prediction to score"), value.span, "needs the network output")
                                .with_help("add a `layers { ... }` block or an equation, or write the loss out: `loss mse(o, y)`"),
                        );
                        return None;
                    }
                };
                let Some(label) = &self.label else {
                    self.report(
                        Diagnostic::new(
                            Code::E0212,
                            format!("`{name}` has nothing to compare with"),
                            value.span,
                            "needs a label or target",
                        )
                        .with_help("declare `label y: class(N)` or `target y: [...]`"),
                    );
                    return None;
                };
                let target = TExpr {
                    kind: TExprKind::Label,
                    shape: match &label.kind {
                        LabelKind::Class(_) => Shape(vec![crate::shape::Dim::Batch]),
                        LabelKind::Target(dims) => Shape::batched(dims),
                    },
                    span: value.span,
                };
                self.loss(name, pred, target, value.span)?
            }
            ExprKind::Call(call)
                if args::lookup(FUNCTIONS, &call.callee.name).is_none()
                    && !self.scope.contains_key(&call.callee.name) =>
            {
                self.unknown_loss(&call.callee.name, call.callee.span);
                return None;
            }
            _ => self.expr(value)?,
        };
        if loss.shape.rank() != 0 {
            self.report(
                Diagnostic::new(
                    Code::E0309,
                    "the loss must be a scalar",
                    value.span,
                    format!("this has shape {}", loss.shape),
                )
                .with_help("reduce it, e.g. `mean(...)`"),
            );
            return None;
        }
        Some(loss)
    }

    fn unknown_loss(&mut self, name: &str, span: Span) {
        let diagnostic = Diagnostic::new(
            Code::E0205,
            format!("unknown loss `{name}`"),
            span,
            "not a loss",
        );
        self.report(suggest(diagnostic, name, "losses", LOSSES.iter().copied()));
    }

    /// An initializer: `zeros`, `normal(0, 0.01)`, `xavier`, ...
    fn init(&mut self, expr: &ast::Expr) -> Option<Init> {
        let Some((callee, call_args, span)) = callee(expr) else {
            self.wrong_type(expr, args::Ty::Init);
            return None;
        };
        let Some(signature) = args::lookup(INITS, &callee.name) else {
            let diagnostic = Diagnostic::new(
                Code::E0208,
                format!("unknown initializer `{}`", callee.name),
                callee.span,
                "not an initializer",
            );
            self.report(suggest(
                diagnostic,
                &callee.name,
                "initializers",
                args::names(INITS),
            ));
            return None;
        };
        let bound = self.bind(signature, call_args, span, Context::Call);
        Some(match signature.name {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "constant" => Init::Constant(self.number_arg(&bound, "value", Context::Call)?),
            "normal" => {
                let mean = self.number_or(&bound, "mean", 0.0, Context::Call);
                let std = self.number_or(&bound, "std", 1.0, Context::Call);
                Init::Normal {
                    mean: mean?,
                    std: std?,
                }
            }
            "uniform" => {
                let low = self.number_or(&bound, "low", 0.0, Context::Call)?;
                let high = self.number_or(&bound, "high", 1.0, Context::Call)?;
                if low >= high {
                    self.report(
                        Diagnostic::new(
                            Code::E0405,
                            "`uniform` needs low < high",
                            span,
                            format!("low is {low}, high is {high}"),
                        )
                        .with_help(format!("write `uniform({high}, {low})`")),
                    );
                    return None;
                }
                Init::Uniform { low, high }
            }
            "xavier" | "xavier_uniform" | "glorot" | "glorot_uniform" => Init::XavierUniform,
            "xavier_normal" | "glorot_normal" => Init::XavierNormal,
            "he" | "he_normal" | "kaiming" | "kaiming_normal" => Init::HeNormal,
            "he_uniform" | "kaiming_uniform" => Init::HeUniform,
            other => unreachable!("initializer `{other}` is in the table but not checked"),
        })
    }

    /// Fan-based initializers need a matrix `[fan_in, fan_out]` or a convolution kernel.
    fn init_fits(&mut self, init: Init, shape: &Shape, span: Span) -> bool {
        let fan_based = matches!(
            init,
            Init::XavierNormal | Init::XavierUniform | Init::HeNormal | Init::HeUniform
        );
        if fan_based && shape.rank() != 2 && shape.rank() != 4 {
            self.report(
                Diagnostic::new(Code::E0407, format!("this initializer needs a matrix or a kernel, not {shape}"), span, "initialized here")
                    .with_note("Xavier and He draw from the fan-in and fan-out, which are defined for [in, out] matrices and [out, in, kh, kw] kernels")
                    .with_help("use `zeros` or `normal(0, 0.01)` for vectors"),
            );
            return false;
        }
        true
    }

    fn penalties(&mut self, ast: &ast::Model) -> Option<Vec<Penalty>> {
        let mut penalties = Some(Vec::new());
        for item in &ast.items {
            let Item::Penalty { value, .. } = item else {
                continue;
            };
            let penalty = self.penalty(value);
            penalties = penalties.zip(penalty).map(|(mut all, one)| {
                all.push(one);
                all
            });
        }
        penalties
    }

    fn penalty(&mut self, value: &ast::Expr) -> Option<Penalty> {
        let ExprKind::Call(call) = &value.kind else {
            self.report(
                Diagnostic::new(
                    Code::E0401,
                    "expected a penalty such as `l2(0.0001)`",
                    value.span,
                    "not a penalty call",
                )
                .with_note(
                    "the penalties are `l1(strength, on: [...])` and `l2(strength, on: [...])`",
                ),
            );
            return None;
        };
        let Some(signature) = args::lookup(PENALTIES, &call.callee.name) else {
            let diagnostic = Diagnostic::new(
                Code::E0203,
                format!("unknown penalty `{}`", call.callee.name),
                call.callee.span,
                "not a penalty",
            );
            self.report(suggest(
                diagnostic,
                &call.callee.name,
                "penalties",
                args::names(PENALTIES),
            ));
            return None;
        };
        let bound = self.bind(signature, &call.args, call.span, Context::Call);
        let strength = self.number_arg(&bound, "strength", Context::Call);
        let params = match bound.expr("on") {
            Some(on) => self.param_names(on),
            // By default a penalty covers the weights (rank ≥ 2), not biases or batchnorm scales.
            None => Some(
                (0..self.params.len())
                    .filter(|&i| self.params[i].shape.rank() >= 2)
                    .collect(),
            ),
        };
        let kind = if signature.name == "l1" {
            PenaltyKind::L1
        } else {
            PenaltyKind::L2
        };
        Some(Penalty {
            kind,
            strength: strength?,
            params: params?,
        })
    }

    fn param_names(&mut self, expr: &ast::Expr) -> Option<Vec<usize>> {
        let items: Vec<&ast::Expr> = match &expr.kind {
            ExprKind::List(items) => items.iter().collect(),
            _ => vec![expr],
        };
        let mut params = Some(Vec::new());
        for item in items {
            let found = match &item.kind {
                ExprKind::Name(name) => match self.scope.get(name).map(|(entry, _)| *entry) {
                    Some(Entry::Param(i)) => Some(i),
                    Some(Entry::Poisoned) => None,
                    Some(_) => {
                        self.report(
                            Diagnostic::new(Code::E0401, format!("`{name}` is not a parameter"), item.span, "not a parameter")
                                .with_note("penalties apply to parameters: `param` declarations and layer parameters such as `dense1.weight`"),
                        );
                        None
                    }
                    None => {
                        self.undefined_param(name, item.span);
                        None
                    }
                },
                _ => {
                    self.wrong_type(item, args::Ty::Names);
                    None
                }
            };
            params = params.zip(found).map(|(mut all, one)| {
                all.push(one);
                all
            });
        }
        params
    }

    fn undefined_param(&mut self, name: &str, span: Span) {
        let params: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let diagnostic = Diagnostic::new(
            Code::E0201,
            format!("no parameter `{name}`"),
            span,
            "not defined",
        );
        self.report(suggest(diagnostic, name, "parameters", params));
    }

    fn optimizer(&mut self, value: &ast::Expr) -> Option<Optimizer> {
        let Some((callee, call_args, span)) = callee(value) else {
            self.report(Diagnostic::new(
                Code::E0401,
                "expected an optimizer such as `sgd(lr: 0.1)`",
                value.span,
                "not an optimizer",
            ));
            return None;
        };
        let Some(signature) = args::lookup(OPTIMIZERS, &callee.name) else {
            let diagnostic = Diagnostic::new(
                Code::E0206,
                format!("unknown optimizer `{}`", callee.name),
                callee.span,
                "not an optimizer",
            );
            self.report(suggest(
                diagnostic,
                &callee.name,
                "optimizers",
                args::names(OPTIMIZERS),
            ));
            return None;
        };
        let bound = self.bind(signature, call_args, span, Context::Call);
        let weight_decay = self.number_or(&bound, "weight_decay", 0.0, Context::Call);
        if signature.name == "sgd" {
            let lr = self.number_arg(&bound, "lr", Context::Call);
            let momentum = self.number_or(&bound, "momentum", 0.0, Context::Call);
            let nesterov = self.bool_arg(&bound, "nesterov").unwrap_or(false);
            if nesterov && momentum == Some(0.0) {
                let at = bound.expr("nesterov").map_or(span, |e| e.span);
                self.report(
                    Diagnostic::new(
                        Code::E0405,
                        "Nesterov momentum needs `momentum` above 0",
                        at,
                        "nesterov is on",
                    )
                    .with_help("add e.g. `momentum: 0.9`"),
                );
                return None;
            }
            Some(Optimizer::Sgd {
                lr: lr?,
                momentum: momentum?,
                nesterov,
                weight_decay: weight_decay?,
            })
        } else {
            let lr = self.number_or(&bound, "lr", 0.001, Context::Call);
            let beta1 = self.number_or(&bound, "beta1", 0.9, Context::Call);
            let beta2 = self.number_or(&bound, "beta2", 0.999, Context::Call);
            let eps = self.number_or(&bound, "eps", 1e-8, Context::Call);
            Some(Optimizer::Adam {
                lr: lr?,
                beta1: beta1?,
                beta2: beta2?,
                eps: eps?,
                weight_decay: weight_decay?,
            })
        }
    }

    fn train(&mut self, settings: &[ast::Arg], keyword: Span) -> Option<TrainSettings> {
        let bound = self.bind(&TRAIN, settings, keyword, Context::Train);
        let defaults = TrainSettings::default();
        let setting = |this: &mut Checker, name: &str, default: u64| match bound.expr(name) {
            Some(_) => this.count_arg(&bound, name, Context::Train),
            None => Some(default),
        };
        let batch = setting(self, "batch", defaults.batch);
        let epochs = setting(self, "epochs", defaults.epochs);
        let seed = setting(self, "seed", defaults.seed);
        let shuffle = match bound.expr("shuffle") {
            Some(_) => self.bool_arg(&bound, "shuffle"),
            None => Some(defaults.shuffle),
        };
        Some(TrainSettings {
            batch: batch?,
            epochs: epochs?,
            seed: seed?,
            shuffle: shuffle?,
        })
    }

    /// The metric; classification models report accuracy unless told otherwise.
    fn metric(&mut self, given: Option<(&Ident, Span)>) -> Option<Option<Metric>> {
        let label = self.label.as_ref().map(|l| (l.kind.clone(), l.span));
        let Some((name, _)) = given else {
            return Some(
                matches!(label, Some((LabelKind::Class(_), _))).then_some(Metric::Accuracy),
            );
        };
        if !METRICS.contains(&name.name.as_str()) {
            let diagnostic = Diagnostic::new(
                Code::E0211,
                format!("unknown metric `{}`", name.name),
                name.span,
                "not a metric",
            );
            self.report(suggest(
                diagnostic,
                &name.name,
                "metrics",
                METRICS.iter().copied(),
            ));
            return None;
        }
        match label {
            Some((LabelKind::Class(_), _)) => {}
            Some((LabelKind::Target(dims), _)) if dims == [1] => {}
            Some((LabelKind::Target(dims), span)) => {
                self.report(
                    Diagnostic::new(Code::E0503, "accuracy needs classes", name.span, "cannot be measured here")
                        .with_label(span, format!("the target has shape {}", Shape::fixed(&dims)))
                        .with_note("accuracy applies to a class label, or to a target of shape [1] holding 0/1 or -1/+1"),
                );
                return None;
            }
            None => {
                self.report(Diagnostic::new(
                    Code::E0503,
                    "accuracy needs a label",
                    name.span,
                    "nothing to compare with",
                ));
                return None;
            }
        }
        Some(Some(Metric::Accuracy))
    }

    /// Warns about parameters that the loss does not depend on: they would never change.
    fn unused_params(&mut self, loss: &TExpr) {
        let mut reached = vec![false; self.params.len()];
        let mut seen_values = vec![false; self.values.len()];
        self.mark(loss, &mut reached, &mut seen_values);
        for (param, reached) in self.params.iter().zip(reached) {
            if !reached {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::W0201,
                        format!("`{}` does not reach the loss", param.name),
                        param.span,
                        "never used by the loss",
                    )
                    .with_note("its gradient is always zero, so training never changes it"),
                );
            }
        }
    }

    fn mark(&self, expr: &TExpr, reached: &mut [bool], seen: &mut [bool]) {
        match &expr.kind {
            TExprKind::Param(i) => reached[*i] = true,
            TExprKind::Value(i) => self.mark_value(*i, reached, seen),
            TExprKind::Input(_) | TExprKind::Label | TExprKind::Const(_) => {}
            TExprKind::Unary(_, a)
            | TExprKind::Reduce { arg: a, .. }
            | TExprKind::Softmax { arg: a, .. }
            | TExprKind::Reshape(a)
            | TExprKind::Transpose { arg: a, .. } => self.mark(a, reached, seen),
            TExprKind::Binary(_, a, b)
            | TExprKind::MatMul(a, b)
            | TExprKind::Loss {
                pred: a, target: b, ..
            } => {
                self.mark(a, reached, seen);
                self.mark(b, reached, seen);
            }
        }
    }

    fn mark_value(&self, index: usize, reached: &mut [bool], seen: &mut [bool]) {
        if std::mem::replace(&mut seen[index], true) {
            return;
        }
        match &self.values[index].kind {
            ValueKind::Expr(expr) => self.mark(expr, reached, seen),
            ValueKind::Layers { input, layers } => {
                self.mark(input, reached, seen);
                for layer in layers {
                    for param in layer.kind.params() {
                        reached[param] = true;
                    }
                }
            }
        }
    }

    fn label_span(&self) -> Span {
        self.label.as_ref().map_or(Span::default(), |l| l.span)
    }
}

/// A name or a call, as initializers and optimizers are written: its callee, arguments and span.
fn callee(expr: &ast::Expr) -> Option<(Ident, &[ast::Arg], Span)> {
    match &expr.kind {
        ExprKind::Name(name) => Some((
            Ident {
                name: name.clone(),
                span: expr.span,
            },
            &[],
            expr.span,
        )),
        ExprKind::Call(call) => Some((call.callee.clone(), &call.args, call.span)),
        _ => None,
    }
}

impl LayerKind {
    /// The indices of the parameters this layer owns.
    pub fn params(&self) -> Vec<usize> {
        match *self {
            LayerKind::Dense { weight, bias } | LayerKind::Conv2d { weight, bias, .. } => {
                std::iter::once(weight).chain(bias).collect()
            }
            LayerKind::BatchNorm { gamma, beta, .. } => vec![gamma, beta],
            LayerKind::Pool { .. }
            | LayerKind::Dropout { .. }
            | LayerKind::Activation(_)
            | LayerKind::Softmax { .. }
            | LayerKind::Flatten => {
                vec![]
            }
        }
    }
}

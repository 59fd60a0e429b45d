//! The checker's single sections and their helpers: the loss, initializers, penalties, the
//! optimizer, the training settings and the metric, and the warning for parameters the loss
//! never reaches.

use super::args::{self, Bound, Context};
use super::model::*;
use super::suggest::suggest;
use super::{functions, Checker, Entry, INITS, LOSSES, OPTIMIZERS, PENALTIES, SCHEDULES, TRAIN};
use crate::diagnostics::{Code, Diagnostic};
use crate::shape::Shape;
use crate::source::Span;
use crate::syntax::ast::{self, ExprKind, Ident, Item};

impl Checker {
    /// `loss NAME` applies a built-in loss to the network output and the label; anything
    /// else is an expression that must be a scalar.
    pub(super) fn loss_item(
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
                if args::lookup(functions(), &call.callee.name).is_none()
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

    pub(super) fn unknown_loss(&mut self, name: &str, span: Span) {
        let diagnostic = Diagnostic::new(
            Code::E0205,
            format!("unknown loss `{name}`"),
            span,
            "not a loss",
        );
        self.report(suggest(diagnostic, name, "losses", LOSSES.iter().copied()));
    }

    /// The signature `name` calls in `table`, or an "unknown `kind`" error with a suggestion.
    fn signature(
        &mut self,
        table: &'static [args::Signature<'static>],
        name: &Ident,
        code: Code,
        kind: &str,
        kinds: &str,
    ) -> Option<&'static args::Signature<'static>> {
        let found = args::lookup(table, &name.name);
        if found.is_none() {
            let what = format!("unknown {kind} `{}`", name.name);
            let label = format!("not {} {kind}", super::article(kind));
            let diagnostic = Diagnostic::new(code, what, name.span, label);
            // PyTorch's class names: `SGD`, `AdamW`, `CosineAnnealingLR`.
            let ours = args::names(table)
                .find(|ours| ours.eq_ignore_ascii_case(&name.name))
                .or_else(|| {
                    let torch = args::TORCH_CLASSES.iter().find(|(t, _)| *t == name.name);
                    torch.map(|&(_, ours)| ours)
                })
                .filter(|ours| args::lookup(table, ours).is_some());
            self.report(match ours {
                Some(ours) => diagnostic.with_help(format!(
                    "`{}` is PyTorch's name; netc writes `{ours}`",
                    name.name
                )),
                None => suggest(diagnostic, &name.name, kinds, args::names(table)),
            });
        }
        found
    }

    /// An initializer: `zeros`, `normal(0, 0.01)`, `xavier`, ...
    pub(super) fn init(&mut self, expr: &ast::Expr) -> Option<Init> {
        let Some((callee, call_args, span)) = callee(expr) else {
            self.wrong_type(expr, args::Ty::Init);
            return None;
        };
        let signature =
            self.signature(INITS, &callee, Code::E0208, "initializer", "initializers")?;
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
    pub(super) fn init_fits(&mut self, init: Init, shape: &Shape, span: Span) -> bool {
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

    pub(super) fn penalties(&mut self, ast: &ast::Model) -> Option<Vec<Penalty>> {
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

    pub(super) fn penalty(&mut self, value: &ast::Expr) -> Option<Penalty> {
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
        let signature =
            self.signature(PENALTIES, &call.callee, Code::E0203, "penalty", "penalties")?;
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

    pub(super) fn param_names(&mut self, expr: &ast::Expr) -> Option<Vec<usize>> {
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

    pub(super) fn undefined_param(&mut self, name: &str, span: Span) {
        let params: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let diagnostic = Diagnostic::new(
            Code::E0201,
            format!("no parameter `{name}`"),
            span,
            "not defined",
        );
        self.report(suggest(diagnostic, name, "parameters", params));
    }

    pub(super) fn optimizer(&mut self, value: &ast::Expr) -> Option<Optimizer> {
        let Some((callee, call_args, span)) = callee(value) else {
            self.report(Diagnostic::new(
                Code::E0401,
                "expected an optimizer such as `sgd(lr: 0.1)`",
                value.span,
                "not an optimizer",
            ));
            return None;
        };
        let signature =
            self.signature(OPTIMIZERS, &callee, Code::E0206, "optimizer", "optimizers")?;
        let bound = self.bind(signature, call_args, span, Context::Call);
        if let Some(lr) = bound.expr("lr") {
            self.large_learning_rate(lr);
        }
        let number = |this: &mut Checker, name: &str, default: f64| {
            this.number_or(&bound, name, default, Context::Call)
        };
        // PyTorch's defaults, so that a model and its PyTorch twin train alike.
        let (lr, weight_decay) = match signature.name {
            "sgd" => (
                self.number_arg(&bound, "lr", Context::Call),
                number(self, "weight_decay", 0.0),
            ),
            "adam" => (number(self, "lr", 0.001), number(self, "weight_decay", 0.0)),
            "adamw" => (
                number(self, "lr", 0.001),
                number(self, "weight_decay", 0.01),
            ),
            "adagrad" | "rmsprop" => (number(self, "lr", 0.01), number(self, "weight_decay", 0.0)),
            _ => (number(self, "lr", 1.0), number(self, "weight_decay", 0.0)),
        };
        let clip = match bound.expr("clip") {
            Some(_) => self.number_arg(&bound, "clip", Context::Call).map(Some),
            None => Some(None),
        };
        let rule = match signature.name {
            "sgd" => {
                let momentum = number(self, "momentum", 0.0);
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
                Rule::Sgd {
                    momentum: momentum?,
                    nesterov,
                }
            }
            // Every argument is read before any `?`, so that each bad one is reported.
            "adam" | "adamw" => {
                let beta1 = number(self, "beta1", 0.9);
                let beta2 = number(self, "beta2", 0.999);
                let eps = number(self, "eps", 1e-8);
                Rule::Adam {
                    beta1: beta1?,
                    beta2: beta2?,
                    eps: eps?,
                    decoupled: signature.name == "adamw",
                }
            }
            "adagrad" => Rule::Adagrad {
                eps: number(self, "eps", 1e-10)?,
            },
            "rmsprop" => {
                let alpha = number(self, "alpha", 0.99);
                let eps = number(self, "eps", 1e-8);
                let momentum = number(self, "momentum", 0.0);
                Rule::Rmsprop {
                    alpha: alpha?,
                    eps: eps?,
                    momentum: momentum?,
                }
            }
            _ => {
                let rho = number(self, "rho", 0.9);
                let eps = number(self, "eps", 1e-6);
                Rule::Adadelta {
                    rho: rho?,
                    eps: eps?,
                }
            }
        };
        Some(Optimizer {
            rule,
            lr: lr?,
            weight_decay: weight_decay?,
            clip: clip?,
        })
    }

    /// The learning-rate schedule: how the optimizer's rate changes with the epoch.
    pub(super) fn schedule(&mut self, value: &ast::Expr) -> Option<Schedule> {
        let Some((callee, call_args, span)) = callee(value) else {
            self.report(Diagnostic::new(
                Code::E0401,
                "expected a schedule such as `cosine(warmup: 1)`",
                value.span,
                "not a schedule",
            ));
            return None;
        };
        let signature = self.signature(SCHEDULES, &callee, Code::E0215, "schedule", "schedules")?;
        let bound = self.bind(signature, call_args, span, Context::Call);
        let number = |this: &mut Checker, name: &str, default: f64| {
            this.number_or(&bound, name, default, Context::Call)
        };
        let warmup = number(self, "warmup", 0.0);
        let length = match bound.expr("epochs") {
            Some(_) => self.count_arg(&bound, "epochs", Context::Call).map(Some),
            None => Some(None),
        };
        let kind = match signature.name {
            "constant" => ScheduleKind::Constant,
            // Every argument is read before any `?`, so that each bad one is reported.
            "step" => {
                let every = self.count_arg(&bound, "every", Context::Call);
                let factor = number(self, "factor", 0.1);
                ScheduleKind::Step {
                    every: every?,
                    factor: factor?,
                }
            }
            "multifactor" => {
                let at = self.milestones(&bound);
                let factor = number(self, "factor", 0.1);
                ScheduleKind::MultiFactor {
                    at: at?,
                    factor: factor?,
                }
            }
            "cosine" => ScheduleKind::Cosine {
                final_lr: number(self, "final_lr", 0.0)?,
                epochs: length?,
            },
            _ => {
                let power = number(self, "power", 1.0);
                let final_lr = number(self, "final_lr", 0.0);
                ScheduleKind::Poly {
                    power: power?,
                    final_lr: final_lr?,
                    epochs: length?,
                }
            }
        };
        let (warmup, length) = (warmup?, length?);
        if let Some(length) = length.filter(|&l| warmup >= l as f64) {
            let at = bound.expr("warmup").map_or(span, |e| e.span);
            self.report(
                Diagnostic::new(
                    Code::E0405,
                    "the warm-up is as long as the schedule",
                    at,
                    format!("{warmup} epochs of warm-up"),
                )
                .with_note(format!(
                    "the {} schedule lasts {length} epochs, warm-up included",
                    signature.name
                ))
                .with_help("shorten the warm-up or lengthen `epochs`"),
            );
            return None;
        }
        Some(Schedule { kind, warmup })
    }

    /// `multifactor`'s epochs: whole numbers from 1, increasing.
    fn milestones(&mut self, bound: &Bound) -> Option<Vec<u64>> {
        let items = self.int_list_arg(bound, "at")?;
        let mut at: Vec<u64> = Vec::with_capacity(items.len());
        for (value, span) in items {
            if value < 1 {
                self.report(Diagnostic::new(
                    Code::E0405,
                    "`at` lists epochs, which count from 1",
                    span,
                    "not an epoch count",
                ));
                return None;
            }
            if let Some(&last) = at.last().filter(|&&last| last >= value as u64) {
                self.report(
                    Diagnostic::new(
                        Code::E0405,
                        "`at` must list epochs in increasing order",
                        span,
                        format!("not after {last}"),
                    )
                    .with_help("list each epoch once, smallest first: `at: [15, 30]`"),
                );
                return None;
            }
            at.push(value as u64);
        }
        if at.is_empty() {
            let expr = bound.expr("at").expect("`at` is required and was bound");
            self.report(
                Diagnostic::new(Code::E0405, "`at` lists no epochs", expr.span, "empty")
                    .with_help("e.g. `at: [15, 30]`, or use `constant`"),
            );
            return None;
        }
        Some(at)
    }

    pub(super) fn train(&mut self, settings: &[ast::Arg], keyword: Span) -> Option<TrainSettings> {
        let bound = self.bind(&TRAIN, settings, keyword, Context::Train);
        let defaults = TrainSettings::default();
        let setting = |this: &mut Checker, name: &str, default: u64| match bound.expr(name) {
            Some(_) => this.count_arg(&bound, name, Context::Train),
            None => Some(default),
        };
        let batch = setting(self, "batch", defaults.batch).and_then(|batch| {
            TrainSettings::check_batch(batch)
                .map_err(|why| {
                    let span = bound.expr("batch").map_or(keyword, |e| e.span);
                    self.report(
                        Diagnostic::new(
                            Code::E0502,
                            "training setting `batch` is out of range",
                            span,
                            "too large",
                        )
                        .with_note(why),
                    )
                })
                .ok()
        });
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

    /// The metrics; classification models report accuracy unless told otherwise.
    pub(super) fn metrics(&mut self, given: Option<(&[Ident], Span)>) -> Option<Vec<Metric>> {
        let label = self.label.as_ref().map(|l| (l.kind.clone(), l.span));
        let Some((names, _)) = given else {
            let classes = matches!(label, Some((LabelKind::Class(_), _)));
            return Some(if classes {
                vec![Metric::Accuracy]
            } else {
                vec![]
            });
        };
        let mut metrics = Vec::with_capacity(names.len());
        let mut failed = false;
        for name in names {
            match self.metric(name, label.as_ref()) {
                Some(metric) if metrics.contains(&metric) => {
                    self.report(Diagnostic::new(
                        Code::E0406,
                        format!("metric `{}` given twice", name.name),
                        name.span,
                        "again",
                    ));
                    failed = true;
                }
                Some(metric) => metrics.push(metric),
                None => failed = true,
            }
        }
        (!failed).then_some(metrics)
    }

    /// One metric, if it is known and applies to the label.
    fn metric(&mut self, name: &Ident, label: Option<&(LabelKind, Span)>) -> Option<Metric> {
        let Some(metric) = Metric::ALL.into_iter().find(|m| m.name() == name.name) else {
            let diagnostic = Diagnostic::new(
                Code::E0211,
                format!("unknown metric `{}`", name.name),
                name.span,
                "not a metric",
            );
            let names = Metric::ALL.iter().map(|m| m.name());
            self.report(suggest(diagnostic, &name.name, "metrics", names));
            return None;
        };
        let Some((kind, span)) = label else {
            self.report(Diagnostic::new(
                Code::E0503,
                format!("{} needs a label or target", metric.name()),
                name.span,
                "nothing to compare with",
            ));
            return None;
        };
        match (metric, kind) {
            (Metric::Accuracy, LabelKind::Class(_)) => Some(metric),
            (Metric::Accuracy, LabelKind::Target(dims)) if dims == &[1] => Some(metric),
            (Metric::Accuracy, LabelKind::Target(dims)) => {
                self.report(
                    Diagnostic::new(Code::E0503, "accuracy needs classes", name.span, "cannot be measured here")
                        .with_label(*span, format!("the target has shape {}", Shape::fixed(dims)))
                        .with_note("accuracy applies to a class label, or to a target of shape [1] holding 0/1 or -1/+1"),
                );
                None
            }
            (_, LabelKind::Class(classes)) => {
                self.report(
                    Diagnostic::new(
                        Code::E0503,
                        format!("{} compares numbers, not classes", metric.name()),
                        name.span,
                        "cannot be measured here",
                    )
                    .with_label(*span, format!("the label is one of {classes} classes"))
                    .with_help("use `metric accuracy` for a class label"),
                );
                None
            }
            (_, LabelKind::Target(_)) => Some(metric),
        }
    }

    /// Warns about parameters that the loss does not depend on: they would never change.
    pub(super) fn unused_params(&mut self, loss: &TExpr) {
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

    /// W0203 for a learning rate above 10: d2l's go up to 0.9 (LeNet with sigmoid); beyond 10
    /// a step usually overshoots and the loss diverges in the first epoch.
    fn large_learning_rate(&mut self, lr: &ast::Expr) {
        let ExprKind::Number { value, .. } = lr.kind else {
            return;
        };
        // Beyond f32's range it is an error (E0405), reported where the argument is bound.
        if value > 10.0 && value <= super::model::MAX_HYPERPARAMETER {
            let written = crate::syntax::print::expr_text(lr);
            self.report(
                Diagnostic::new(
                    Code::W0203,
                    format!("a learning rate of {written} is very large"),
                    lr.span,
                    "above 10",
                )
                .with_note("typical rates are 0.001 to 1; larger steps overshoot and the loss diverges")
                .with_help("for a typo, write the rate meant, e.g. `lr: 0.1`; to explore divergence on purpose, ignore this warning"),
            );
        }
    }

    /// Marks the parameters `loss` depends on. Values are followed through a worklist, not
    /// by recursion: a chain of 100,000 equations is as easy as one.
    fn mark(&self, loss: &TExpr, reached: &mut [bool], seen: &mut [bool]) {
        let mut pending = Vec::new();
        self.mark_expr(loss, reached, seen, &mut pending);
        while let Some(index) = pending.pop() {
            match &self.values[index].kind {
                ValueKind::Expr(expr) => self.mark_expr(expr, reached, seen, &mut pending),
                ValueKind::Layers { input, layers } => {
                    self.mark_expr(input, reached, seen, &mut pending);
                    for layer in layers {
                        for param in layer.kind.params() {
                            reached[param] = true;
                        }
                    }
                }
            }
        }
    }

    /// Marks the parameters one expression reads, and queues the values it reads.
    fn mark_expr(
        &self,
        expr: &TExpr,
        reached: &mut [bool],
        seen: &mut [bool],
        pending: &mut Vec<usize>,
    ) {
        match &expr.kind {
            TExprKind::Param(i) => reached[*i] = true,
            TExprKind::Value(i) => {
                if !std::mem::replace(&mut seen[*i], true) {
                    pending.push(*i);
                }
            }
            TExprKind::Input(_) | TExprKind::Label | TExprKind::Const(_) => {}
            TExprKind::Concat { args, .. } => {
                for a in args {
                    self.mark_expr(a, reached, seen, pending);
                }
            }
            TExprKind::Unary(_, a)
            | TExprKind::Reduce { arg: a, .. }
            | TExprKind::Dropout { arg: a, .. }
            | TExprKind::Softmax { arg: a, .. }
            | TExprKind::Reshape(a)
            | TExprKind::Transpose { arg: a, .. } => self.mark_expr(a, reached, seen, pending),
            TExprKind::Binary(_, a, b)
            | TExprKind::MatMul(a, b)
            | TExprKind::Loss {
                pred: a, target: b, ..
            } => {
                self.mark_expr(a, reached, seen, pending);
                self.mark_expr(b, reached, seen, pending);
            }
        }
    }
}

/// A name or a call, as initializers and optimizers are written: its callee, arguments and span.
pub(super) fn callee(expr: &ast::Expr) -> Option<(Ident, &[ast::Arg], Span)> {
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

//! Stage 2, check: AST in, checked model out. Resolves every name, types every argument, infers
//! every shape (batch dimension symbolic), and validates hyperparameters, reporting all
//! independent problems (E02xx–E05xx, W0201) in one run. A value that failed to check is
//! poisoned: its uses report nothing more, so one mistake gives one error.

mod args;
mod blocks;
mod expr;
mod layers;
pub mod model;
mod sections;
mod suggest;
pub mod summary;

pub use args::{functions, layers, INITS, LOSSES, OPTIMIZERS, PENALTIES, SCHEDULES, TRAIN};
pub use model::Model;

use crate::diagnostics::{has_errors, Code, Diagnostic};
use crate::shape::Shape;
use crate::source::Span;
use crate::syntax::ast::{self, Ident, Item};
use model::*;
use std::collections::BTreeMap;

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

/// Checks a learning-rate schedule given outside the model file (`--schedule`).
pub fn schedule(expr: &ast::Expr) -> (Option<Schedule>, Vec<Diagnostic>) {
    let mut checker = Checker::default();
    let schedule = checker.schedule(expr);
    (schedule, checker.diagnostics)
}

/// "a" or "an" before a word.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// What a name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Input(usize),
    Label,
    Param(usize),
    Value(usize),
    /// A shared block instance (`enc = encoder(32)`), by index into `Checker::instances`.
    Instance(usize),
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
    /// The file's blocks that checked, by name.
    blocks: BTreeMap<String, std::rc::Rc<ast::Block>>,
    /// Blocks whose definitions were reported: their uses report nothing more.
    broken_blocks: std::collections::BTreeSet<String>,
    /// The blocks being expanded, outermost first, with the span of each use.
    block_stack: Vec<(String, Span)>,
    /// The path of the block use being expanded (empty at the top level).
    path: String,
    block_uses: Vec<BlockUse>,
    /// Layers and block uses so far, unrolled.
    expanded: usize,
    instances: Vec<blocks::Instance>,
    /// While a shared instance is used again: layer parameters of the same name are reused.
    sharing: bool,
}

/// The single sections of a model and where each was first given.
#[derive(Default)]
struct Sections<'a> {
    label: Option<Span>,
    layers: Option<&'a ast::LayersBlock>,
    loss: Option<(&'a ast::Expr, Span)>,
    optimizer: Option<(&'a ast::Expr, Span)>,
    schedule: Option<(&'a ast::Expr, Span)>,
    train: Option<(&'a [ast::Arg], Span)>,
    metric: Option<(&'a [Ident], Span)>,
}

impl Checker {
    fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn model(&mut self, ast: &ast::Model) -> Option<Model> {
        self.define_blocks(&ast.blocks);
        let sections = self.declarations(ast);
        let mut output = None;
        let mut output_poisoned = false;
        for item in &ast.items {
            let (name, value, prefix) = match item {
                Item::Equation {
                    name,
                    value:
                        ast::Value::Expr(ast::Expr {
                            kind: ast::ExprKind::Call(call),
                            ..
                        }),
                } if self.blocks.contains_key(&call.callee.name)
                    || self.broken_blocks.contains(&call.callee.name) =>
                {
                    self.declare_instance(name, call);
                    continue;
                }
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
        let schedule = match sections.schedule {
            Some((value, _)) => self.schedule(value),
            None => Some(Schedule::CONSTANT),
        };
        let train = match sections.train {
            Some((settings, keyword)) => self.train(settings, keyword),
            None => Some(TrainSettings::default()),
        };
        let metrics = self.metrics(sections.metric);
        // A model without inputs is an objective over its parameters alone (d2l's f(x1, x2)),
        // trained without data; a label or a metric needs examples to compare with.
        let predicts = ast.items.iter().any(|item| {
            matches!(
                item,
                Item::Label { .. } | Item::Target { .. } | Item::Metric { .. }
            )
        });
        if self.input_decls == 0 && predicts {
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
            block_uses: std::mem::take(&mut self.block_uses),
            output,
            loss,
            penalties: penalties?,
            optimizer: optimizer?,
            schedule: schedule?,
            train: train?,
            metrics: metrics?,
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
                Item::Schedule { keyword, value } => {
                    self.once_with(&mut sections.schedule, (value, *keyword), "schedule")
                }
                Item::Metric { keyword, names } => {
                    self.once_with(&mut sections.metric, (names, *keyword), "metric")
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
        let article = article(what);
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

    /// Adds a parameter and its name; `None` if the name is taken (reported). A shared
    /// block's later uses get its first use's parameter.
    fn declare_param(&mut self, param: Param) -> Option<usize> {
        let ident = Ident {
            name: param.name.clone(),
            span: param.span,
        };
        if self.sharing {
            let first = self.params.iter().position(|p| p.name == param.name)?;
            if self.params[first].shape != param.shape {
                let earlier = &self.params[first];
                let diagnostic = Diagnostic::new(
                    Code::E0313,
                    format!("the uses of a shared block give `{}` two shapes", param.name),
                    param.span,
                    format!(
                        "{} in this use, {} in the first",
                        param.shape, earlier.shape
                    ),
                )
                .with_note("a shared block has one set of parameters, so every use must give it inputs of one shape");
                self.report(diagnostic);
                return None;
            }
            self.scope
                .insert(param.name, (Entry::Param(first), param.span));
            return Some(first);
        }
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
        let index = checked
            .map(|(shape, kind)| self.push_value(name.map(|n| n.name.clone()), kind, shape, span));
        if let Some(name) = name {
            self.declare(name, index.map_or(Entry::Poisoned, Entry::Value));
        }
        index
    }

    /// Adds a value to the model, in the block use being expanded.
    fn push_value(
        &mut self,
        name: Option<String>,
        kind: ValueKind,
        shape: Shape,
        span: Span,
    ) -> usize {
        self.values.push(Value {
            name,
            block: self.path.clone(),
            kind,
            shape,
            span,
        });
        self.values.len() - 1
    }

    fn label_span(&self) -> Span {
        self.label.as_ref().map_or(Span::default(), |l| l.span)
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
            | LayerKind::GlobalPool(_)
            | LayerKind::Flatten => {
                vec![]
            }
        }
    }
}

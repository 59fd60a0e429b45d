//! Blocks: their definitions (names, typed parameters, defaults) and their uses. A use binds
//! its arguments like a layer's, puts their values into a copy of the block's body, and checks
//! that body in a scope of its own whose only names are its input `x` and its equations; its
//! values join the model's, named by the use (`residual3.conv2d1.weight`). `repeat` and `if`
//! are unrolled here, so everything after `check` sees plain layers and expressions.

use super::args::{self, Context, Range, Spec, Ty};
use super::model::*;
use super::suggest::suggest;
use super::{Checker, Entry};
use crate::diagnostics::{Code, Diagnostic};
use crate::shape::Shape;
use crate::source::Span;
use crate::syntax::ast::{
    Arg, Block, BlockValue, Call, Expr, ExprKind, Ident, LayerItem, LayersBlock, Value as AstValue,
};
use std::collections::BTreeMap;
use std::rc::Rc;

/// The types a block parameter may have, as written.
const TYPES: &[(&str, Ty)] = &[("int", Ty::Int), ("float", Ty::Number), ("bool", Ty::Bool)];

/// At most this many repetitions in one `repeat`, and this many layers and block uses in a
/// whole model once unrolled: beyond either, a count is a typo, not a network.
const MAX_REPEAT: f64 = 4096.0;
const MAX_EXPANDED: usize = 1 << 16;

/// A diagnostic from inside nested blocks names at most this many places.
const MAX_LABELS: usize = 6;

/// Blocks use blocks at most this deep, so no file can exhaust the checker's stack.
const MAX_BLOCK_DEPTH: usize = 64;

/// A block's parameter values at one use, by name.
type Bindings = BTreeMap<String, Expr>;

impl Checker {
    /// Records the file's blocks, reporting bad names, types and defaults.
    pub fn define_blocks(&mut self, blocks: &[Block]) {
        for block in blocks {
            let name = &block.name;
            if args::lookup(args::layers(), &name.name).is_some() {
                self.report(
                    Diagnostic::new(
                        Code::E0202,
                        format!("`{}` is a built-in layer", name.name),
                        name.span,
                        "a block cannot take its name",
                    )
                    .with_help("rename the block"),
                );
                continue;
            }
            if let Some(first) = self.blocks.get(&name.name) {
                let first = first.name.span;
                self.report(
                    Diagnostic::new(
                        Code::E0202,
                        format!("block `{}` is defined twice", name.name),
                        name.span,
                        "defined again here",
                    )
                    .with_label(first, "first defined here")
                    .with_help("rename one of them"),
                );
                continue;
            }
            let mut ok = true;
            let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
            for param in &block.params {
                if param.name.name == "x" {
                    ok = false;
                    self.report(
                        Diagnostic::new(
                            Code::E0202,
                            "`x` is the block's input",
                            param.name.span,
                            "a parameter cannot take its name",
                        )
                        .with_help("rename the parameter"),
                    );
                } else if let Some(&first) = seen.get(param.name.name.as_str()) {
                    ok = false;
                    self.report(
                        Diagnostic::new(
                            Code::E0202,
                            format!("parameter `{}` is defined twice", param.name.name),
                            param.name.span,
                            "defined again here",
                        )
                        .with_label(first, "first defined here"),
                    );
                }
                seen.insert(&param.name.name, param.name.span);
                let Some(ty) = param_type(&param.ty) else {
                    ok = false;
                    let diagnostic = Diagnostic::new(
                        Code::E0408,
                        format!("unknown parameter type `{}`", param.ty.name),
                        param.ty.span,
                        "not a type",
                    );
                    let types = TYPES.iter().map(|(name, _)| *name);
                    self.report(suggest(
                        diagnostic,
                        &param.ty.name,
                        "parameter types",
                        types,
                    ));
                    continue;
                };
                if let Some(default) = &param.default {
                    ok &= self.literal(default, ty).is_some();
                }
            }
            if ok {
                self.blocks
                    .insert(name.name.clone(), Rc::new(block.clone()));
            } else {
                self.broken_blocks.insert(name.name.clone());
            }
        }
    }

    /// The value of a compile-time argument of type `ty`, as a literal; `None` if it is not one
    /// (reported).
    fn literal(&mut self, expr: &Expr, ty: Ty) -> Option<Expr> {
        let kind = match ty {
            Ty::Bool => match expr.kind {
                ExprKind::Bool(b) => ExprKind::Bool(b),
                _ => {
                    self.wrong_type(expr, Ty::Bool);
                    return None;
                }
            },
            _ => {
                let integer = ty == Ty::Int;
                let value = self.literal_number(expr, integer)?;
                ExprKind::Number {
                    value,
                    is_integer: integer,
                }
            }
        };
        Some(Expr {
            kind,
            span: expr.span,
        })
    }

    /// Checks a sequence of layers from `chain`'s current output, appending to it; block uses
    /// end the chain's layers in a value of their own. Layer names start with `prefix`.
    pub fn sequence(
        &mut self,
        items: &[LayerItem],
        chain: &mut Chain,
        counts: &mut BTreeMap<String, usize>,
        prefix: &str,
    ) -> Option<()> {
        for (at, item) in items.iter().enumerate() {
            if self.item(item, chain, counts, prefix).is_none() {
                // The shapes after a mistake are unknown, but unknown names are still errors.
                self.unknown_names(&items[at + 1..]);
                return None;
            }
        }
        Some(())
    }

    /// Reports every layer name in `items` that is neither a layer, a block nor an instance.
    fn unknown_names(&mut self, items: &[LayerItem]) {
        for item in items {
            match item {
                LayerItem::Layer(call) => {
                    let name = &call.callee.name;
                    let known = args::lookup(args::layers(), name).is_some()
                        || self.blocks.contains_key(name)
                        || self.broken_blocks.contains(name)
                        || self.scope.contains_key(name);
                    if !known {
                        self.unknown_layer(call);
                    }
                }
                LayerItem::Repeat { body, .. } => self.unknown_names(body),
                LayerItem::If {
                    then, otherwise, ..
                } => {
                    self.unknown_names(then);
                    self.unknown_names(otherwise);
                }
            }
        }
    }

    /// Checks one item of a sequence.
    fn item(
        &mut self,
        item: &LayerItem,
        chain: &mut Chain,
        counts: &mut BTreeMap<String, usize>,
        prefix: &str,
    ) -> Option<()> {
        match item {
            LayerItem::Layer(call) => {
                if let Some(signature) = args::lookup(args::layers(), &call.callee.name) {
                    let name = numbered(counts, signature.name, prefix);
                    let layer = self.layer(signature, call, &chain.shape(), name)?;
                    if !self.fits(&layer.shape, call.span) {
                        return None;
                    }
                    chain.layers.push(layer);
                } else if let Some(&(Entry::Instance(i), _)) = self.scope.get(&call.callee.name) {
                    let input = self.close(chain);
                    chain.input = self.use_instance(i, call, input)?;
                } else if let Some(block) = self.blocks.get(&call.callee.name).cloned() {
                    let path = numbered(counts, &block.name.name, prefix);
                    let input = self.close(chain);
                    chain.input = self.use_block(&block, call, input, path)?;
                } else if self.broken_blocks.contains(&call.callee.name)
                    || matches!(
                        self.scope.get(&call.callee.name),
                        Some((Entry::Poisoned, _))
                    )
                {
                    return None; // its definition was reported
                } else {
                    self.unknown_layer(call);
                    return None;
                }
                self.unrolled(call.span)?;
            }
            LayerItem::Repeat { count, body, .. } => {
                let times = self.literal_number(count, true)?;
                if !(0.0..=MAX_REPEAT).contains(&times) {
                    self.report(Diagnostic::new(
                        Code::E0405,
                        "`repeat` count is out of range",
                        count.span,
                        format!("must be between 0 and {MAX_REPEAT}"),
                    ));
                    return None;
                }
                for _ in 0..times as usize {
                    // Empty repetitions count too: they take time to unroll.
                    self.unrolled(count.span)?;
                    self.sequence(body, chain, counts, prefix)?;
                }
            }
            LayerItem::If {
                condition,
                then,
                otherwise,
                ..
            } => {
                let ExprKind::Bool(choice) = condition.kind else {
                    self.wrong_type(condition, Ty::Bool);
                    return None;
                };
                let branch = if choice { then } else { otherwise };
                self.sequence(branch, chain, counts, prefix)?;
            }
        }
        Some(())
    }

    /// Counts one more layer, block use or repetition unrolled; `None` past the limit
    /// (reported).
    fn unrolled(&mut self, span: Span) -> Option<()> {
        self.expanded += 1;
        if self.expanded <= MAX_EXPANDED {
            return Some(());
        }
        self.report(
            Diagnostic::new(
                Code::E0310,
                "the model has too many layers",
                span,
                "one more, unrolled, is over the limit",
            )
            .with_note("a model holds at most 65,536 layers, block uses and repetitions once every `repeat` is unrolled"),
        );
        None
    }

    /// Ends a chain's layers in a value and returns that value as the chain's new input.
    fn close(&mut self, chain: &mut Chain) -> TExpr {
        if chain.layers.is_empty() && matches!(chain.input.kind, TExprKind::Value(_)) {
            return chain.input.clone();
        }
        let shape = chain.shape();
        let span = chain.input.span;
        let kind = ValueKind::Layers {
            input: chain.input.clone(),
            layers: std::mem::take(&mut chain.layers),
        };
        let index = self.push_value(None, kind, shape.clone(), span);
        chain.input = TExpr {
            kind: TExprKind::Value(index),
            shape,
            span,
        };
        chain.input.clone()
    }

    /// Expands one use of `block` on `input` (a value), returning the block's output.
    fn use_block(
        &mut self,
        block: &Rc<Block>,
        call: &Call,
        input: TExpr,
        path: String,
    ) -> Option<TExpr> {
        let name = &block.name.name;
        if let Some(&(_, outer)) = self.block_stack.iter().find(|(n, _)| n == name) {
            self.report(
                Diagnostic::new(
                    Code::E0213,
                    format!("block `{name}` uses itself"),
                    call.span,
                    "used again inside itself here",
                )
                .with_label(outer, "the outer use")
                .with_label(block.name.span, "defined here")
                .with_note("a block is unrolled where it is used, so it cannot use itself, directly or through another block"),
            );
            return None;
        }
        if self.block_stack.len() >= MAX_BLOCK_DEPTH {
            self.report(
                Diagnostic::new(
                    Code::E0103,
                    "blocks nested too deeply",
                    call.span,
                    format!("the {}th block inside another", MAX_BLOCK_DEPTH + 1),
                )
                .with_note(format!(
                    "blocks may use blocks at most {MAX_BLOCK_DEPTH} deep"
                )),
            );
            return None;
        }
        let bindings = self.bind_block(block, call)?;
        self.expand(block, &bindings, call, input, &path, path.clone())
    }

    /// Unrolls `block` with these parameter values on `input`: its parameters are named from
    /// `prefix`, its values and the summary's row from `label`.
    fn expand(
        &mut self,
        block: &Rc<Block>,
        bindings: &Bindings,
        call: &Call,
        input: TExpr,
        prefix: &str,
        label: String,
    ) -> Option<TExpr> {
        let name = &block.name.name;
        let body = substitute_block(block, bindings);
        self.block_stack.push((name.clone(), call.span));
        let saved_scope = std::mem::take(&mut self.scope);
        let saved_later = std::mem::take(&mut self.later);
        let saved_path = std::mem::replace(&mut self.path, label.clone());
        let use_index = self.block_uses.len();
        self.block_uses.push(BlockUse {
            path: label,
            depth: self.block_stack.len() - 1,
            shape: input.shape.clone(),
            first_value: self.values.len(),
            span: call.span,
        });
        let input_span = block.name.span; // where `x` is declared, implicitly
        self.scope.insert(
            "x".into(),
            (
                Entry::Value(match input.kind {
                    TExprKind::Value(i) => i,
                    _ => unreachable!("a block's input is closed into a value"),
                }),
                input_span,
            ),
        );
        for (name, _) in &body.equations {
            self.later.entry(name.name.clone()).or_insert(name.span);
        }
        let reported = self.diagnostics.len();
        let output = self.block_body(&body, prefix, input);
        // The uses that led to a mistake, innermost first, as far out as stays readable.
        for diagnostic in &mut self.diagnostics[reported..] {
            if diagnostic.labels.len() < MAX_LABELS {
                *diagnostic = diagnostic
                    .clone()
                    .with_label(call.span, format!("in this use of `{name}`"));
            }
        }
        let scope = std::mem::replace(&mut self.scope, saved_scope);
        self.later = saved_later;
        self.path = saved_path;
        self.block_stack.pop();
        // Its parameters stay nameable (in penalties) by their full names.
        for (name, entry) in scope {
            if matches!(entry.0, Entry::Param(_)) {
                self.scope.insert(name, entry);
            }
        }
        let output = output?;
        self.block_uses[use_index].shape = output.shape.clone();
        Some(TExpr {
            span: call.span,
            ..output
        })
    }

    /// The body of a block with its parameters substituted, in the block's own scope.
    fn block_body(&mut self, body: &Block, path: &str, input: TExpr) -> Option<TExpr> {
        let mut ok = true;
        for (name, value) in &body.equations {
            ok &= self
                .value(Some(name), value, &format!("{path}.{}.", name.name))
                .is_some();
        }
        let value = match &body.value {
            BlockValue::Layers(items) => match expression_of(items) {
                Some(expr) => BlockValue::Expr(expr),
                None => BlockValue::Layers(items.clone()),
            },
            other => other.clone(),
        };
        let (kind, shape, span) = match &value {
            BlockValue::Expr(expr) => {
                let checked = self.expr(expr)?;
                let shape = checked.shape.clone();
                (ValueKind::Expr(checked), shape, expr.span)
            }
            BlockValue::Layers(items) => {
                if let Some((first, _)) = body.equations.first() {
                    let span = items.first().map_or(body.span, LayerItem::span);
                    self.report(
                        Diagnostic::new(
                            Code::E0214,
                            "a block with equations ends with an expression, not layers",
                            span,
                            "layers after equations",
                        )
                        .with_label(first.span, "the block's first equation")
                        .with_help("name these layers in an equation, `h = layers(y) { ... }`, and end the block with `h`"),
                    );
                    return None;
                }
                let mut chain = Chain {
                    input,
                    layers: Vec::new(),
                };
                self.sequence(items, &mut chain, &mut BTreeMap::new(), &format!("{path}."))?;
                let shape = chain.shape();
                let span = chain.input.span;
                (
                    ValueKind::Layers {
                        input: chain.input,
                        layers: chain.layers,
                    },
                    shape,
                    span,
                )
            }
        };
        if !ok {
            return None;
        }
        let index = self.push_value(None, kind, shape.clone(), span);
        Some(TExpr {
            kind: TExprKind::Value(index),
            shape,
            span,
        })
    }

    /// Declares `name = block(args)`: one instance of a block whose uses share its parameters.
    pub fn declare_instance(&mut self, name: &Ident, call: &Call) {
        let Some(block) = self.blocks.get(&call.callee.name).cloned() else {
            // Its definition was reported.
            self.declare(name, Entry::Poisoned);
            return;
        };
        let entry = match self.bind_block(&block, call) {
            Some(bindings) => {
                self.instances.push(Instance {
                    block,
                    bindings,
                    name: name.name.clone(),
                    uses: 0,
                    span: call.span,
                });
                Entry::Instance(self.instances.len() - 1)
            }
            None => Entry::Poisoned,
        };
        self.declare(name, entry);
    }

    /// Applies a shared instance to `input`: its first use creates its parameters, later uses
    /// reuse them, so their gradients add up.
    fn use_instance(&mut self, index: usize, call: &Call, input: TExpr) -> Option<TExpr> {
        if let Some(first) = call.args.first() {
            self.report(
                Diagnostic::new(
                    Code::E0404,
                    format!(
                        "`{}` is a shared block: it takes no arguments",
                        call.callee.name
                    ),
                    first.span(),
                    "unexpected argument",
                )
                .with_label(self.instances[index].span, "its arguments are given here"),
            );
            return None;
        }
        let instance = &mut self.instances[index];
        instance.uses += 1;
        let (block, bindings) = (instance.block.clone(), instance.bindings.clone());
        let (prefix, uses) = (instance.name.clone(), instance.uses);
        let label = match uses {
            1 => prefix.clone(),
            n => format!("{prefix}#{n}"),
        };
        let sharing = std::mem::replace(&mut self.sharing, uses > 1);
        let output = self.expand(&block, &bindings, call, input, &prefix, label);
        self.sharing = sharing;
        output
    }

    /// Binds a use's arguments to the block's parameters, defaults filled in.
    fn bind_block(&mut self, block: &Block, call: &Call) -> Option<Bindings> {
        let specs: Vec<Spec> = block
            .params
            .iter()
            .map(|p| Spec {
                name: &p.name.name,
                ty: param_type(&p.ty).expect("checked when defined"),
                required: p.default.is_none(),
                range: Range::Any,
            })
            .collect();
        let signature = args::Signature {
            name: &block.name.name,
            params: &specs,
        };
        let reported = self.diagnostics.len();
        let bound = self.bind(&signature, &call.args, call.span, Context::Call);
        let mut bindings = Bindings::new();
        for (param, spec) in block.params.iter().zip(&specs) {
            // A missing argument was reported by `bind`.
            let given = bound.expr(spec.name).or(param.default.as_ref());
            if let Some(literal) = given.and_then(|given| self.literal(given, spec.ty)) {
                bindings.insert(param.name.name.clone(), literal);
            }
        }
        if self.diagnostics.len() == reported {
            return Some(bindings);
        }
        // Each mistake in the use also shows the definition.
        let definition = signature_text(block);
        for diagnostic in &mut self.diagnostics[reported..] {
            *diagnostic = diagnostic
                .clone()
                .with_label(block.name.span, definition.clone());
        }
        None
    }
}

/// `enc = encoder(32)`: a block with its arguments, whose uses share parameters.
pub struct Instance {
    block: Rc<Block>,
    bindings: Bindings,
    name: String,
    /// Uses so far: the first creates the parameters.
    uses: usize,
    /// The declaration's call.
    span: Span,
}

/// A layer sequence being checked: its input and the layers after it so far.
pub struct Chain {
    pub input: TExpr,
    pub layers: Vec<Layer>,
}

impl Chain {
    /// The shape the next layer receives.
    pub fn shape(&self) -> Shape {
        self.layers
            .last()
            .map_or_else(|| self.input.shape.clone(), |l| l.shape.clone())
    }
}

/// `name` with its count in this sequence: `conv2d3`, `residual2`.
fn numbered(counts: &mut BTreeMap<String, usize>, name: &str, prefix: &str) -> String {
    let count = counts.entry(name.to_string()).or_default();
    *count += 1;
    format!("{prefix}{name}{count}")
}

fn param_type(ty: &Ident) -> Option<Ty> {
    TYPES
        .iter()
        .find(|(name, _)| *name == ty.name)
        .map(|&(_, ty)| ty)
}

/// `residual(channels: int, stride: int = 1)`, for a label on a definition.
fn signature_text(block: &Block) -> String {
    format!(
        "defined as `{}`",
        crate::syntax::print::block_signature(block)
    )
}

/// A block's value that parsed as layers but is one expression: a name (`x`, `y`), or a
/// call of a function that is not a layer taking no arguments (`relu(y + x)`,
/// `concat(a, b, axis: 1)`).
fn expression_of(items: &[LayerItem]) -> Option<Expr> {
    let [LayerItem::Layer(call)] = items else {
        return None;
    };
    let name = call.callee.name.as_str();
    let is_layer = args::lookup(args::layers(), name).is_some();
    let is_function = args::lookup(args::functions(), name).is_some();
    let kind = if call.args.is_empty() && !is_layer && !is_function {
        ExprKind::Name(name.to_string())
    } else if is_function && !(is_layer && call.args.is_empty()) {
        ExprKind::Call(call.clone())
    } else {
        return None;
    };
    Some(Expr {
        kind,
        span: call.span,
    })
}

impl LayerItem {
    /// The whole item's span.
    pub fn span(&self) -> Span {
        match self {
            LayerItem::Layer(call) => call.span,
            LayerItem::Repeat { keyword, body, .. } => {
                body.last().map_or(*keyword, |last| keyword.to(last.span()))
            }
            LayerItem::If {
                keyword,
                then,
                otherwise,
                ..
            } => otherwise
                .last()
                .or(then.last())
                .map_or(*keyword, |last| keyword.to(last.span())),
        }
    }
}

/// A copy of `block` with each parameter's value in place of its name, and arithmetic on
/// numbers (`channels * 2`) folded.
fn substitute_block(block: &Block, bindings: &Bindings) -> Block {
    Block {
        equations: block
            .equations
            .iter()
            .map(|(name, value)| (name.clone(), substitute_value(value, bindings)))
            .collect(),
        value: match &block.value {
            BlockValue::Layers(items) => BlockValue::Layers(substitute_items(items, bindings)),
            BlockValue::Expr(expr) => BlockValue::Expr(substitute(expr, bindings)),
        },
        ..block.clone()
    }
}

fn substitute_value(value: &AstValue, bindings: &Bindings) -> AstValue {
    match value {
        AstValue::Expr(expr) => AstValue::Expr(substitute(expr, bindings)),
        AstValue::Layers(block) => AstValue::Layers(LayersBlock {
            input: block.input.as_ref().map(|e| substitute(e, bindings)),
            layers: substitute_items(&block.layers, bindings),
            ..block.clone()
        }),
    }
}

fn substitute_items(items: &[LayerItem], bindings: &Bindings) -> Vec<LayerItem> {
    items
        .iter()
        .map(|item| match item {
            LayerItem::Layer(call) => LayerItem::Layer(substitute_call(call, bindings)),
            LayerItem::Repeat {
                keyword,
                count,
                body,
            } => LayerItem::Repeat {
                keyword: *keyword,
                count: substitute(count, bindings),
                body: substitute_items(body, bindings),
            },
            LayerItem::If {
                keyword,
                condition,
                then,
                otherwise,
            } => LayerItem::If {
                keyword: *keyword,
                condition: substitute(condition, bindings),
                then: substitute_items(then, bindings),
                otherwise: substitute_items(otherwise, bindings),
            },
        })
        .collect()
}

fn substitute_call(call: &Call, bindings: &Bindings) -> Call {
    Call {
        args: call
            .args
            .iter()
            .map(|arg| Arg {
                name: arg.name.clone(),
                value: substitute(&arg.value, bindings),
            })
            .collect(),
        ..call.clone()
    }
}

/// Substitutes parameters in an expression; the value keeps the span of the argument that
/// gave it, so a bad value is shown where it was chosen.
fn substitute(expr: &Expr, bindings: &Bindings) -> Expr {
    let kind = match &expr.kind {
        ExprKind::Name(name) => match bindings.get(name) {
            Some(value) => return value.clone(),
            None => ExprKind::Name(name.clone()),
        },
        ExprKind::Number { .. } | ExprKind::Bool(_) => expr.kind.clone(),
        ExprKind::Call(call) => ExprKind::Call(substitute_call(call, bindings)),
        ExprKind::Neg(inner) => ExprKind::Neg(Box::new(substitute(inner, bindings))),
        ExprKind::List(items) => {
            ExprKind::List(items.iter().map(|e| substitute(e, bindings)).collect())
        }
        ExprKind::Binary(op, left, right) => {
            let (left, right) = (substitute(left, bindings), substitute(right, bindings));
            match fold(*op, &left, &right) {
                Some(kind) => kind,
                None => ExprKind::Binary(*op, Box::new(left), Box::new(right)),
            }
        }
    };
    Expr {
        kind,
        span: expr.span,
    }
}

/// `a op b` for two number literals; whole numbers stay whole where the result is whole.
fn fold(op: crate::syntax::ast::BinOp, left: &Expr, right: &Expr) -> Option<ExprKind> {
    use crate::syntax::ast::BinOp;
    let number = |e: &Expr| match e.kind {
        ExprKind::Number { value, is_integer } => Some((value, is_integer)),
        ExprKind::Neg(ref inner) => match inner.kind {
            ExprKind::Number { value, is_integer } => Some((-value, is_integer)),
            _ => None,
        },
        _ => None,
    };
    let ((a, a_int), (b, b_int)) = (number(left)?, number(right)?);
    let value = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::MatMul => return None,
    };
    if !value.is_finite() {
        return None; // left for the checker to report as an expression
    }
    Some(ExprKind::Number {
        value,
        is_integer: a_int && b_int && value.fract() == 0.0,
    })
}

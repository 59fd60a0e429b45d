//! Turns pest's parse tree into the AST. The grammar has already accepted the text, so every
//! shape of tree met here is one the grammar allows; what can still be wrong is a number that
//! does not fit, which is reported as E0102.

use super::ast::*;
use super::grammar::Rule;
use crate::diagnostics::{Code, Diagnostic};
use crate::source::Span;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use std::sync::OnceLock;

/// Collects number and depth errors while lowering.
#[derive(Default)]
pub struct Lowerer {
    pub diagnostics: Vec<Diagnostic>,
    /// Operators and brackets enclosing the expression being lowered.
    depth: usize,
}

/// How deep operators may nest in one expression, counting every operator and bracket between
/// the outermost expression and the innermost operand (a chain `a + b + c` of 256 terms is as
/// deep as 256 nested brackets). Every later stage walks expressions recursively: this bound,
/// with the bracket limit, is what keeps them within the stack.
pub const MAX_EXPR_DEPTH: usize = 256;

fn span(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::matmul, Assoc::Left))
            .op(Op::prefix(Rule::neg))
    })
}

impl Lowerer {
    /// Lowers the `file` rule's single `net` pair.
    /// Lowers the `file` rule: its blocks and its one `net`.
    pub fn model(&mut self, file: Pair<Rule>) -> Model {
        let mut blocks = Vec::new();
        let mut net = None;
        for pair in file.into_inner() {
            match pair.as_rule() {
                Rule::block_decl => blocks.push(self.block(pair)),
                Rule::net => net = Some(pair),
                _ => {} // EOI
            }
        }
        let net = net.expect("grammar: a file holds a net");
        let whole = span(&net);
        let mut inner = net.into_inner();
        inner.next(); // the `net` keyword
        let name = ident(inner.next().expect("grammar: net has a name"));
        let items = inner.map(|pair| self.item(pair)).collect();
        Model {
            name,
            items,
            blocks,
            span: whole,
        }
    }

    fn item(&mut self, pair: Pair<Rule>) -> Item {
        let rule = pair.as_rule();
        if rule == Rule::equation {
            let (name, value) = self.equation(pair);
            return Item::Equation { name, value };
        }
        let mut inner = pair.into_inner();
        let mut next = || inner.next().expect("grammar: item has all its parts");
        match rule {
            Rule::input_decl => {
                next();
                Item::Input {
                    name: ident(next()),
                    shape: self.shape(next()),
                }
            }
            Rule::label_decl => {
                next();
                let name = ident(next());
                next(); // `class`
                let count = next();
                Item::Label {
                    name,
                    classes: (self.integer(&count), span(&count)),
                }
            }
            Rule::target_decl => {
                next();
                Item::Target {
                    name: ident(next()),
                    shape: self.shape(next()),
                }
            }
            Rule::param_decl => {
                next();
                let name = ident(next());
                let shape = self.shape(next());
                let init = inner.next().map(|e| self.expr(e));
                Item::Param { name, shape, init }
            }
            Rule::layers_decl => Item::Layers(self.layers(next())),
            Rule::loss_decl => Item::Loss {
                keyword: span(&next()),
                value: self.expr(next()),
            },
            Rule::optimizer_decl => Item::Optimizer {
                keyword: span(&next()),
                value: self.expr(next()),
            },
            Rule::schedule_decl => Item::Schedule {
                keyword: span(&next()),
                value: self.expr(next()),
            },
            Rule::penalty_decl => Item::Penalty {
                keyword: span(&next()),
                value: self.expr(next()),
            },
            Rule::metric_decl => Item::Metric {
                keyword: span(&next()),
                names: inner.map(ident).collect(),
            },
            Rule::train_decl => {
                let keyword = span(&next());
                Item::Train {
                    keyword,
                    settings: inner.map(|arg| self.arg(arg)).collect(),
                }
            }
            other => unreachable!("grammar: {other:?} is not an item"),
        }
    }

    fn layers(&mut self, pair: Pair<Rule>) -> LayersBlock {
        let whole = span(&pair);
        let mut inner = pair.into_inner().peekable();
        let keyword = span(&inner.next().expect("grammar: layers keyword"));
        let input = match inner.peek().map(Pair::as_rule) {
            Some(Rule::expr) => inner.next().map(|e| self.expr(e)),
            _ => None,
        };
        LayersBlock {
            keyword,
            input,
            layers: inner.map(|item| self.layer_item(item)).collect(),
            span: whole,
        }
    }

    fn layer_item(&mut self, pair: Pair<Rule>) -> LayerItem {
        let whole = span(&pair);
        let rule = pair.as_rule();
        let mut parts = pair.into_inner();
        match rule {
            Rule::repeat_layers => {
                let keyword = span(&parts.next().expect("grammar: repeat keyword"));
                let count = self.expr(parts.next().expect("grammar: repeat count"));
                LayerItem::Repeat {
                    keyword,
                    count,
                    body: parts.map(|item| self.layer_item(item)).collect(),
                }
            }
            Rule::if_layers => {
                let keyword = span(&parts.next().expect("grammar: if keyword"));
                let condition = self.expr(parts.next().expect("grammar: if condition"));
                let then = self.layer_group(parts.next().expect("grammar: if body"));
                parts.next(); // `else`
                let otherwise = parts
                    .next()
                    .map_or_else(Vec::new, |group| self.layer_group(group));
                LayerItem::If {
                    keyword,
                    condition,
                    then,
                    otherwise,
                }
            }
            _ => {
                let callee = ident(parts.next().expect("grammar: layer has a name"));
                let args = parts.next().map_or_else(Vec::new, |args| self.args(args));
                LayerItem::Layer(Call {
                    callee,
                    args,
                    span: whole,
                })
            }
        }
    }

    fn layer_group(&mut self, pair: Pair<Rule>) -> Vec<LayerItem> {
        pair.into_inner()
            .map(|item| self.layer_item(item))
            .collect()
    }

    fn block(&mut self, pair: Pair<Rule>) -> Block {
        let whole = span(&pair);
        let mut inner = pair.into_inner();
        inner.next(); // `block`
        let name = ident(inner.next().expect("grammar: block has a name"));
        let (mut params, mut equations) = (Vec::new(), Vec::new());
        let mut value = None;
        for part in inner {
            match part.as_rule() {
                Rule::block_param => {
                    let mut parts = part.into_inner();
                    let name = ident(parts.next().expect("grammar: parameter name"));
                    let ty = ident(parts.next().expect("grammar: parameter type"));
                    let default = parts.next().map(|e| self.expr(e));
                    params.push(BlockParam { name, ty, default });
                }
                Rule::equation => equations.push(self.equation(part)),
                _ => {
                    let inner = part.into_inner().next().expect("grammar: block value");
                    value = Some(match inner.as_rule() {
                        Rule::block_layers => BlockValue::Layers(
                            inner
                                .into_inner()
                                .map(|item| self.layer_item(item))
                                .collect(),
                        ),
                        _ => BlockValue::Expr(self.expr(inner)),
                    });
                }
            }
        }
        Block {
            name,
            params,
            equations,
            value: value.expect("grammar: a block ends with its value"),
            span: whole,
        }
    }

    fn equation(&mut self, pair: Pair<Rule>) -> (Ident, Value) {
        let mut inner = pair.into_inner();
        let name = ident(inner.next().expect("grammar: equation name"));
        let value = inner.next().expect("grammar: equation value");
        let value = match value.as_rule() {
            Rule::layers_block => Value::Layers(self.layers(value)),
            _ => Value::Expr(self.expr(value)),
        };
        (name, value)
    }

    fn shape(&mut self, pair: Pair<Rule>) -> ShapeLit {
        let whole = span(&pair);
        let dims = pair
            .into_inner()
            .map(|dim| (self.integer(&dim), span(&dim)))
            .collect();
        ShapeLit { dims, span: whole }
    }

    fn integer(&mut self, pair: &Pair<Rule>) -> u64 {
        pair.as_str().parse().unwrap_or_else(|_| {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::E0102,
                    "integer too large",
                    span(pair),
                    "does not fit in 64 bits",
                )
                .with_help("sizes and counts must be below 18446744073709551616"),
            );
            0
        })
    }

    fn args(&mut self, pair: Pair<Rule>) -> Vec<Arg> {
        pair.into_inner().map(|arg| self.arg(arg)).collect()
    }

    fn arg(&mut self, pair: Pair<Rule>) -> Arg {
        let mut inner = pair.into_inner();
        let first = inner.next().expect("grammar: argument has a value");
        match inner.next() {
            Some(value) => Arg {
                name: Some(ident(first)),
                value: self.expr(value),
            },
            None => Arg {
                name: None,
                value: self.expr(first),
            },
        }
    }

    /// The expression of an `expr_text`.
    pub fn expr_text(&mut self, pair: Pair<Rule>) -> Expr {
        let expr = pair
            .into_inner()
            .next()
            .expect("grammar: expr_text holds an expr");
        self.expr(expr)
    }

    fn expr(&mut self, pair: Pair<Rule>) -> Expr {
        self.expr_pairs(pair.into_inner())
    }

    fn expr_pairs(&mut self, pairs: Pairs<Rule>) -> Expr {
        // Counted before the Pratt parser runs: it recurses once per prefix operator.
        let operators = pairs
            .clone()
            .filter(|p| {
                matches!(
                    p.as_rule(),
                    Rule::neg | Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::matmul
                )
            })
            .count();
        let depth = self.depth + 1 + operators;
        if depth > MAX_EXPR_DEPTH {
            let whole = pairs
                .clone()
                .map(|p| span(&p))
                .reduce(|a, b| a.to(b))
                .unwrap_or_default();
            self.diagnostics.push(
                Diagnostic::new(
                    Code::E0103,
                    "expression nested too deeply",
                    whole,
                    format!("{operators} operators here"),
                )
                .with_note(format!(
                    "operators and brackets may nest at most {MAX_EXPR_DEPTH} deep in one expression"
                ))
                .with_help("name parts of it in equations of their own (`h = ...`)"),
            );
            return Expr {
                span: whole,
                kind: ExprKind::Number {
                    value: 0.0,
                    is_integer: true,
                },
            };
        }
        // The Pratt closures all need `self`; a RefCell-free way is to collect errors separately.
        let mut errors = Vec::new();
        let expr = pratt()
            .map_primary(|primary| primary_expr(primary, depth, &mut errors))
            .map_prefix(|op, operand| Expr {
                span: span(&op).to(operand.span),
                kind: ExprKind::Neg(Box::new(operand)),
            })
            .map_infix(|left, op, right| {
                let op = match op.as_rule() {
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    Rule::matmul => BinOp::MatMul,
                    other => unreachable!("grammar: {other:?} is not an operator"),
                };
                Expr {
                    span: left.span.to(right.span),
                    kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
                }
            })
            .parse(pairs);
        self.diagnostics.append(&mut errors);
        expr
    }
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        span: span(&pair),
        name: pair.as_str().to_string(),
    }
}

fn primary_expr(pair: Pair<Rule>, depth: usize, errors: &mut Vec<Diagnostic>) -> Expr {
    let whole = span(&pair);
    let mut lowerer = Lowerer {
        diagnostics: Vec::new(),
        depth,
    };
    let kind = match pair.as_rule() {
        Rule::number => {
            let text = pair.as_str();
            let value: f64 = text.parse().unwrap_or(f64::INFINITY);
            if !value.is_finite() {
                errors.push(
                    Diagnostic::new(
                        Code::E0102,
                        "number too large",
                        whole,
                        "this is not a finite number",
                    )
                    .with_note("numbers are 64-bit floats: at most about 1.8e308"),
                );
            }
            ExprKind::Number {
                value,
                is_integer: text.bytes().all(|b| b.is_ascii_digit()),
            }
        }
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::path => ExprKind::Name(pair.as_str().to_string()),
        Rule::call => {
            let mut inner = pair.into_inner();
            let callee = ident(inner.next().expect("grammar: call has a name"));
            let args = inner.next().map_or_else(Vec::new, |a| lowerer.args(a));
            ExprKind::Call(Call {
                callee,
                args,
                span: whole,
            })
        }
        Rule::list => ExprKind::List(pair.into_inner().map(|e| lowerer.expr(e)).collect()),
        Rule::expr => {
            let inner = lowerer.expr(pair);
            errors.append(&mut lowerer.diagnostics);
            return inner;
        }
        other => unreachable!("grammar: {other:?} is not a primary expression"),
    };
    errors.append(&mut lowerer.diagnostics);
    Expr { kind, span: whole }
}

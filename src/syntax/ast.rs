//! The abstract syntax tree: what the file says, with a span on every node, before any meaning
//! is checked.

use crate::source::Span;

/// A name with its place in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole model file.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub items: Vec<Item>,
    /// The blocks defined in the file, in source order.
    pub blocks: Vec<Block>,
    pub span: Span,
}

/// `block name(params) { equations value }`: a reusable piece of network over its input `x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub name: Ident,
    pub params: Vec<BlockParam>,
    pub equations: Vec<(Ident, Value)>,
    pub value: BlockValue,
    pub span: Span,
}

/// `channels: int = 64`: a compile-time parameter of a block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParam {
    pub name: Ident,
    /// The type as written: `int`, `float` or `bool` (checked by `check`).
    pub ty: Ident,
    pub default: Option<Expr>,
}

/// What a block computes: layers over its input, or an expression over its equations.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockValue {
    Layers(Vec<LayerItem>),
    Expr(Expr),
}

/// A declared per-example shape such as `[1, 28, 28]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeLit {
    pub dims: Vec<(u64, Span)>,
    pub span: Span,
}

/// One item of the model body.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Input {
        name: Ident,
        shape: ShapeLit,
    },
    Label {
        name: Ident,
        classes: (u64, Span),
    },
    Target {
        name: Ident,
        shape: ShapeLit,
    },
    Param {
        name: Ident,
        shape: ShapeLit,
        init: Option<Expr>,
    },
    /// `name = value`.
    Equation {
        name: Ident,
        value: Value,
    },
    /// An unnamed `layers` block: the network's output.
    Layers(LayersBlock),
    Loss {
        keyword: Span,
        value: Expr,
    },
    Optimizer {
        keyword: Span,
        value: Expr,
    },
    Schedule {
        keyword: Span,
        value: Expr,
    },
    Train {
        keyword: Span,
        settings: Vec<Arg>,
    },
    Metric {
        keyword: Span,
        names: Vec<Ident>,
    },
    Penalty {
        keyword: Span,
        value: Expr,
    },
}

/// The right-hand side of an equation.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Expr(Expr),
    Layers(LayersBlock),
}

/// `layers(input) { layer* }`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayersBlock {
    pub keyword: Span,
    pub input: Option<Expr>,
    pub layers: Vec<LayerItem>,
    pub span: Span,
}

/// One entry of a layer sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerItem {
    /// A built-in layer or a block use: `conv2d(6, kernel: 5)`, `residual(64)`.
    Layer(Call),
    /// `repeat count { ... }`.
    Repeat {
        keyword: Span,
        count: Expr,
        body: Vec<LayerItem>,
    },
    /// `if condition { ... } else { ... }`; a missing `else` is no layers.
    If {
        keyword: Span,
        condition: Expr,
        then: Vec<LayerItem>,
        otherwise: Vec<LayerItem>,
    },
}

/// `callee(args)`; for layers and bare names the argument list may be absent.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// A positional (`name` is `None`) or keyword argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Arg {
    /// The span of the whole argument, keyword included.
    pub fn span(&self) -> crate::source::Span {
        match &self.name {
            Some(name) => name.span.to(self.value.span),
            None => self.value.span,
        }
    }
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// The kinds of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A number as written; `is_integer` when it has no point or exponent.
    Number {
        value: f64,
        is_integer: bool,
    },
    Bool(bool),
    /// A name, possibly dotted (`dense1.weight`).
    Name(String),
    Call(Call),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
}

/// The binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
        }
    }
}

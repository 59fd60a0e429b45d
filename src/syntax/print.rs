//! The AST's printed form (`netc emit-ir --stage ast`): the model re-written in canonical layout,
//! one item per line, with every binary operation parenthesized so the parse is visible.

use super::ast::*;
use std::fmt::{self, Write};

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for block in &self.blocks {
            block_to(f, block)?;
        }
        writeln!(f, "net {} {{", self.name.name)?;
        for item in &self.items {
            item_to(f, item)?;
        }
        writeln!(f, "}}")
    }
}

fn item_to(f: &mut fmt::Formatter<'_>, item: &Item) -> fmt::Result {
    match item {
        Item::Input { name, shape } => writeln!(f, "  input {}: {}", name.name, shape_text(shape)),
        Item::Label { name, classes } => writeln!(f, "  label {}: class({})", name.name, classes.0),
        Item::Target { name, shape } => {
            writeln!(f, "  target {}: {}", name.name, shape_text(shape))
        }
        Item::Param { name, shape, init } => {
            write!(f, "  param {}: {}", name.name, shape_text(shape))?;
            match init {
                Some(init) => writeln!(f, " = {}", expr_text(init)),
                None => writeln!(f),
            }
        }
        Item::Equation { name, value } => equation_to(f, name, value),
        Item::Layers(block) => {
            write!(f, "  ")?;
            layers_to(f, block)
        }
        Item::Loss { value, .. } => writeln!(f, "  loss {}", expr_text(value)),
        Item::Optimizer { value, .. } => writeln!(f, "  optimizer {}", expr_text(value)),
        Item::Penalty { value, .. } => writeln!(f, "  penalty {}", expr_text(value)),
        Item::Schedule { value, .. } => writeln!(f, "  schedule {}", expr_text(value)),
        Item::Metric { names, .. } => {
            let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
            writeln!(f, "  metric {}", names.join(", "))
        }
        Item::Train { settings, .. } => writeln!(f, "  train {{ {} }}", args_text(settings)),
    }
}

fn equation_to(f: &mut fmt::Formatter<'_>, name: &Ident, value: &Value) -> fmt::Result {
    match value {
        Value::Expr(expr) => writeln!(f, "  {} = {}", name.name, expr_text(expr)),
        Value::Layers(block) => {
            write!(f, "  {} = ", name.name)?;
            layers_to(f, block)
        }
    }
}

/// A block's name and parameters as written: `residual(channels: int, stride: int = 1)`.
pub fn block_signature(block: &Block) -> String {
    let params: Vec<String> = block
        .params
        .iter()
        .map(|p| match &p.default {
            Some(default) => format!("{}: {} = {}", p.name.name, p.ty.name, expr_text(default)),
            None => format!("{}: {}", p.name.name, p.ty.name),
        })
        .collect();
    format!("{}({})", block.name.name, params.join(", "))
}

fn block_to(f: &mut fmt::Formatter<'_>, block: &Block) -> fmt::Result {
    writeln!(f, "block {} {{", block_signature(block))?;
    for (name, value) in &block.equations {
        equation_to(f, name, value)?;
    }
    match &block.value {
        BlockValue::Layers(items) => items_to(f, items, 2)?,
        BlockValue::Expr(expr) => writeln!(f, "  {}", expr_text(expr))?,
    }
    writeln!(f, "}}")
}

fn layers_to(f: &mut fmt::Formatter<'_>, block: &LayersBlock) -> fmt::Result {
    write!(f, "layers")?;
    if let Some(input) = &block.input {
        write!(f, "({})", expr_text(input))?;
    }
    writeln!(f, " {{")?;
    items_to(f, &block.layers, 4)?;
    writeln!(f, "  }}")
}

fn items_to(f: &mut fmt::Formatter<'_>, items: &[LayerItem], indent: usize) -> fmt::Result {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            LayerItem::Layer(call) => writeln!(f, "{pad}{}", call_text(call))?,
            LayerItem::Repeat { count, body, .. } => {
                writeln!(f, "{pad}repeat {} {{", expr_text(count))?;
                items_to(f, body, indent + 2)?;
                writeln!(f, "{pad}}}")?;
            }
            LayerItem::If {
                condition,
                then,
                otherwise,
                ..
            } => {
                writeln!(f, "{pad}if {} {{", expr_text(condition))?;
                items_to(f, then, indent + 2)?;
                if !otherwise.is_empty() {
                    writeln!(f, "{pad}}} else {{")?;
                    items_to(f, otherwise, indent + 2)?;
                }
                writeln!(f, "{pad}}}")?;
            }
        }
    }
    Ok(())
}

fn shape_text(shape: &ShapeLit) -> String {
    let dims: Vec<String> = shape.dims.iter().map(|(d, _)| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

fn args_text(args: &[Arg]) -> String {
    let parts: Vec<String> = args
        .iter()
        .map(|arg| match &arg.name {
            Some(name) => format!("{}: {}", name.name, expr_text(&arg.value)),
            None => expr_text(&arg.value),
        })
        .collect();
    parts.join(", ")
}

fn call_text(call: &Call) -> String {
    if call.args.is_empty() {
        call.callee.name.clone()
    } else {
        format!("{}({})", call.callee.name, args_text(&call.args))
    }
}

/// An expression in canonical form, binary operations parenthesized.
pub fn expr_text(expr: &Expr) -> String {
    let mut out = String::new();
    match &expr.kind {
        ExprKind::Number { value, is_integer } => {
            if *is_integer {
                let _ = write!(out, "{value}");
            } else {
                let _ = write!(out, "{value:?}");
            }
        }
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Name(name) => out.push_str(name),
        ExprKind::Call(call) => {
            let _ = write!(out, "{}({})", call.callee.name, args_text(&call.args));
        }
        ExprKind::Neg(inner) => {
            let _ = write!(out, "-{}", expr_text(inner));
        }
        ExprKind::Binary(op, left, right) => {
            let _ = write!(
                out,
                "({} {} {})",
                expr_text(left),
                op.symbol(),
                expr_text(right)
            );
        }
        ExprKind::List(items) => {
            let parts: Vec<String> = items.iter().map(expr_text).collect();
            let _ = write!(out, "[{}]", parts.join(", "));
        }
    }
    out
}

//! `netc check --summary`: a per-layer table of output shapes, parameter counts, forward FLOPs
//! and activation memory per example. Counts follow one convention throughout: a multiply-add is
//! 2 FLOPs, any other elementwise operation 1 per element, a softmax 4 per element, a pooling
//! window one per element it reads; activations are 4-byte floats.

use super::model::*;
use crate::shape::Shape;
use crate::source::SourceFile;
use std::fmt::Write;

struct Row {
    name: String,
    line: usize,
    shape: Shape,
    params: u64,
    flops: u64,
    bytes: u64,
    /// Block uses it is inside.
    depth: usize,
    /// The innermost block use it is inside (empty at the top level).
    path: String,
    /// A block use's row, whose figures are its contents' totals.
    header: Option<String>,
}

impl Row {
    fn new(name: String, line: usize, shape: Shape, depth: usize) -> Row {
        Row {
            name,
            line,
            shape,
            params: 0,
            flops: 0,
            bytes: 0,
            depth,
            path: String::new(),
            header: None,
        }
    }

    /// Whether a row is inside the block use at `path`.
    fn inside(&self, path: &str) -> bool {
        self.path == path
            || self
                .path
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// The summary table of a checked model, with block uses as indented groups; rows more than
/// `depth` blocks deep are folded into their block's row.
pub fn summary(model: &Model, source: &SourceFile, depth: Option<usize>) -> String {
    let mut rows = Vec::new();
    let mut counted = vec![false; model.params.len()];
    for input in &model.inputs {
        let shape = Shape::batched(&input.shape);
        let mut row = Row::new(
            format!("{} (input)", input.name),
            source.line_of(input.span.start),
            shape,
            0,
        );
        row.bytes = row.shape.elements_per_example().saturating_mul(4);
        rows.push(row);
    }
    let mut uses = model.block_uses.iter().peekable();
    for (index, value) in model.values.iter().enumerate() {
        while let Some(block) = uses.next_if(|u| u.first_value == index) {
            let name = block.path.rsplit('.').next().unwrap_or_default();
            let mut row = Row::new(
                name.to_string(),
                source.line_of(block.span.start),
                block.shape.clone(),
                block.depth,
            );
            row.header = Some(block.path.clone());
            rows.push(row);
        }
        let depth = model
            .block_uses
            .iter()
            .find(|u| u.path == value.block)
            .map_or(0, |u| u.depth + 1);
        // Names inside a block are shown relative to it: `y.conv2d1` in `stage1.residual1`.
        // A shared instance's later uses (`enc#2`) name the parameters of its first (`enc`).
        let prefix = value.block.split('#').next().unwrap_or_default();
        let local = |name: &str| match prefix {
            "" => name.to_string(),
            path => name
                .strip_prefix(&format!("{path}."))
                .unwrap_or(name)
                .to_string(),
        };
        match &value.kind {
            ValueKind::Expr(expr) => {
                let name = match &value.name {
                    Some(name) => name.clone(),
                    None => short_text(source.slice(value.span)),
                };
                let line = source.line_of(value.span.start);
                let mut row = Row::new(name, line, value.shape.clone(), depth);
                row.path = value.block.clone();
                tally(expr, model, &mut counted, &mut row);
                rows.push(row);
            }
            ValueKind::Layers { input, layers } => {
                // `layers(relu(x @ w + b)) { ... }`: the expression is computed here too.
                if !matches!(
                    input.kind,
                    TExprKind::Value(_) | TExprKind::Input(_) | TExprKind::Param(_)
                ) {
                    let name = short_text(source.slice(input.span));
                    let line = source.line_of(input.span.start);
                    let mut row = Row::new(name, line, input.shape.clone(), depth);
                    row.path = value.block.clone();
                    tally(input, model, &mut counted, &mut row);
                    rows.push(row);
                }
                for layer in layers {
                    let params = layer
                        .kind
                        .params()
                        .into_iter()
                        .filter(|&p| !std::mem::replace(&mut counted[p], true))
                        .map(|p| model.params[p].shape.elements_per_example())
                        .fold(0u64, u64::saturating_add);
                    let name = match &value.name {
                        Some(owner) if layer.kind.params().is_empty() => {
                            format!("{owner}.{}", layer.name)
                        }
                        _ => local(&layer.name),
                    };
                    let mut row = Row::new(
                        name,
                        source.line_of(layer.span.start),
                        layer.shape.clone(),
                        depth,
                    );
                    row.path = value.block.clone();
                    row.params = params;
                    row.flops = layer_flops(layer, model);
                    // A flatten is a view of its input: it stores nothing new.
                    row.bytes = match layer.kind {
                        LayerKind::Flatten => 0,
                        _ => layer.shape.elements_per_example().saturating_mul(4),
                    };
                    rows.push(row);
                }
            }
        }
    }
    let mut loss = Row::new(
        "loss".into(),
        source.line_of(model.loss.span.start),
        Shape::scalar(),
        0,
    );
    tally(&model.loss, model, &mut counted, &mut loss);
    rows.push(loss);
    let leaves = || rows.iter().filter(|r| r.header.is_none());
    let total_flops = leaves().map(|r| r.flops).fold(0u64, u64::saturating_add);
    let total_bytes = leaves().map(|r| r.bytes).fold(0u64, u64::saturating_add);
    // A block use's row shows the totals of the rows inside it.
    let totals: Vec<Option<(u64, u64, u64)>> = rows
        .iter()
        .map(|row| {
            let path = row.header.as_ref()?;
            Some(
                leaves()
                    .filter(|r| r.inside(path))
                    .fold((0u64, 0u64, 0u64), |t, r| {
                        (
                            t.0.saturating_add(r.params),
                            t.1.saturating_add(r.flops),
                            t.2.saturating_add(r.bytes),
                        )
                    }),
            )
        })
        .collect();
    for (row, total) in rows.iter_mut().zip(totals) {
        if let Some((params, flops, bytes)) = total {
            (row.params, row.flops, row.bytes) = (params, flops, bytes);
        }
    }
    let width = rows
        .iter()
        .filter(|r| depth.is_none_or(|d| r.depth <= d))
        .map(|r| 2 * r.depth + r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);

    let total_params: u64 = model
        .params
        .iter()
        .map(|p| p.shape.elements_per_example())
        .fold(0u64, u64::saturating_add);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}: batch dimension N; FLOPs and activations per example",
        model.name
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<width$} {:>5}  {:<18} {:>11} {:>14} {:>12}",
        "layer", "line", "output", "params", "FLOPs", "activations"
    );
    let rule = "-".repeat(width + 66);
    let _ = writeln!(out, "{rule}");
    for row in rows.iter().filter(|r| depth.is_none_or(|d| r.depth <= d)) {
        let name = format!("{}{}", "  ".repeat(row.depth), row.name);
        let _ = writeln!(
            out,
            "{:<width$} {:>5}  {:<18} {:>11} {:>14} {:>12}",
            name,
            row.line,
            row.shape.to_string(),
            thousands(row.params),
            thousands(row.flops),
            bytes(row.bytes)
        );
    }
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "{:<width$} {:>5}  {:<18} {:>11} {:>14} {:>12}",
        "total",
        "",
        "",
        thousands(total_params),
        thousands(total_flops),
        bytes(total_bytes)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "parameters: {} ({} as f32)",
        thousands(total_params),
        bytes(total_params.saturating_mul(4))
    );
    if !model.states.is_empty() {
        let state: u64 = model
            .states
            .iter()
            .map(|s| s.shape.elements_per_example())
            .fold(0u64, u64::saturating_add);
        let _ = writeln!(out, "running statistics: {}", thousands(state));
    }
    out
}

/// An expression's source on one line, shortened to fit the table's first column.
fn short_text(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= 24 {
        return text;
    }
    let cut: String = text.chars().take(23).collect();
    format!("{cut}…")
}

/// Adds an equation's own operations (not those of values it refers to) to a row.
fn tally(expr: &TExpr, model: &Model, counted: &mut [bool], row: &mut Row) {
    let out = expr.shape.elements_per_example();
    let (flops, stored) = match &expr.kind {
        TExprKind::Param(p) => {
            if !std::mem::replace(&mut counted[*p], true) {
                row.params = row
                    .params
                    .saturating_add(model.params[*p].shape.elements_per_example());
            }
            (0, false)
        }
        TExprKind::Input(_) | TExprKind::Label | TExprKind::Value(_) | TExprKind::Const(_) => {
            (0, false)
        }
        TExprKind::Unary(..) | TExprKind::Binary(..) | TExprKind::Dropout { .. } => (out, true),
        TExprKind::MatMul(a, _) => (
            out.saturating_mul(2)
                .saturating_mul(a.shape.last().map_or(1, dim_size)),
            true,
        ),
        TExprKind::Reduce { arg, .. } => (arg.shape.elements_per_example(), true),
        TExprKind::Softmax { .. } => (out.saturating_mul(4), true),
        TExprKind::Reshape(_) | TExprKind::Transpose { .. } => (0, false),
        TExprKind::Concat { .. } => (0, true),
        TExprKind::Loss { pred, .. } => {
            (pred.shape.elements_per_example().saturating_mul(4), false)
        }
    };
    row.flops = row.flops.saturating_add(flops);
    if stored && expr.shape.has_batch() {
        row.bytes = row.bytes.saturating_add(out.saturating_mul(4));
    }
    match &expr.kind {
        TExprKind::Unary(_, a)
        | TExprKind::Dropout { arg: a, .. }
        | TExprKind::Reduce { arg: a, .. }
        | TExprKind::Softmax { arg: a, .. }
        | TExprKind::Reshape(a)
        | TExprKind::Transpose { arg: a, .. } => tally(a, model, counted, row),
        TExprKind::Binary(_, a, b)
        | TExprKind::MatMul(a, b)
        | TExprKind::Loss {
            pred: a, target: b, ..
        } => {
            tally(a, model, counted, row);
            tally(b, model, counted, row);
        }
        TExprKind::Concat { args, .. } => {
            for a in args {
                tally(a, model, counted, row);
            }
        }
        _ => {}
    }
}

fn dim_size(dim: crate::shape::Dim) -> u64 {
    match dim {
        crate::shape::Dim::Fixed(n) => n,
        crate::shape::Dim::Batch => 1,
    }
}

fn layer_flops(layer: &Layer, model: &Model) -> u64 {
    let out = layer.shape.elements_per_example();
    let bias = |b: &Option<usize>| if b.is_some() { out } else { 0 };
    match &layer.kind {
        LayerKind::Dense { weight, bias: b } => model.params[*weight]
            .shape
            .elements_per_example()
            .saturating_mul(2)
            .saturating_add(bias(b)),
        LayerKind::Conv2d {
            weight, bias: b, ..
        } => {
            // Each output element is a dot product over in_channels·kh·kw weights.
            let w = &model.params[*weight].shape;
            let per_output = w.elements_per_example() / w.fixed_dim(0).unwrap_or(1);
            per_output
                .saturating_mul(2)
                .saturating_mul(out)
                .saturating_add(bias(b))
        }
        LayerKind::Pool { window, .. } => window.kernel[0]
            .saturating_mul(window.kernel[1])
            .saturating_mul(out),
        LayerKind::BatchNorm { .. } => out.saturating_mul(4),
        LayerKind::Dropout { .. } | LayerKind::Activation(_) => out,
        LayerKind::Softmax { .. } => out.saturating_mul(4),
        LayerKind::Flatten => 0,
        LayerKind::GlobalPool(_) => layer.input_shape.elements_per_example(),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

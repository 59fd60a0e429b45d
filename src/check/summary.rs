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
}

/// The summary table of a checked model.
pub fn summary(model: &Model, source: &SourceFile) -> String {
    let mut rows = Vec::new();
    let mut counted = vec![false; model.params.len()];
    for input in &model.inputs {
        let shape = Shape::batched(&input.shape);
        rows.push(Row {
            name: format!("{} (input)", input.name),
            line: source.line_of(input.span.start),
            bytes: shape.elements_per_example().saturating_mul(4),
            shape,
            params: 0,
            flops: 0,
        });
    }
    for value in &model.values {
        match &value.kind {
            ValueKind::Expr(expr) => {
                let mut row = Row {
                    name: value.name.clone().unwrap_or_default(),
                    line: source.line_of(value.span.start),
                    shape: value.shape.clone(),
                    params: 0,
                    flops: 0,
                    bytes: 0,
                };
                tally(expr, model, &mut counted, &mut row);
                rows.push(row);
            }
            ValueKind::Layers { layers, .. } => {
                for layer in layers {
                    let params = layer
                        .kind
                        .params()
                        .into_iter()
                        .filter(|&p| !std::mem::replace(&mut counted[p], true))
                        .map(|p| model.params[p].shape.elements_per_example())
                        .fold(0u64, u64::saturating_add);
                    rows.push(Row {
                        name: match &value.name {
                            Some(block) if !layer.name.starts_with(&format!("{block}.")) => {
                                format!("{block}.{}", layer.name)
                            }
                            _ => layer.name.clone(),
                        },
                        line: source.line_of(layer.span.start),
                        shape: layer.shape.clone(),
                        params,
                        flops: layer_flops(layer, model),
                        // A flatten is a view of its input: it stores nothing new.
                        bytes: match layer.kind {
                            LayerKind::Flatten => 0,
                            _ => layer.shape.elements_per_example().saturating_mul(4),
                        },
                    });
                }
            }
        }
    }
    let mut loss = Row {
        name: "loss".into(),
        line: source.line_of(model.loss.span.start),
        shape: Shape::scalar(),
        params: 0,
        flops: 0,
        bytes: 0,
    };
    tally(&model.loss, model, &mut counted, &mut loss);
    rows.push(loss);

    let total_params: u64 = model
        .params
        .iter()
        .map(|p| p.shape.elements_per_example())
        .fold(0u64, u64::saturating_add);
    let total_flops = rows.iter().map(|r| r.flops).fold(0u64, u64::saturating_add);
    let total_bytes = rows.iter().map(|r| r.bytes).fold(0u64, u64::saturating_add);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}: batch dimension N; FLOPs and activations per example",
        model.name
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22} {:>5}  {:<18} {:>11} {:>14} {:>12}",
        "layer", "line", "output", "params", "FLOPs", "activations"
    );
    let _ = writeln!(out, "{}", "-".repeat(88));
    for row in &rows {
        let _ = writeln!(
            out,
            "{:<22} {:>5}  {:<18} {:>11} {:>14} {:>12}",
            row.name,
            row.line,
            row.shape.to_string(),
            thousands(row.params),
            thousands(row.flops),
            bytes(row.bytes)
        );
    }
    let _ = writeln!(out, "{}", "-".repeat(88));
    let _ = writeln!(
        out,
        "{:<22} {:>5}  {:<18} {:>11} {:>14} {:>12}",
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
        TExprKind::Unary(..) | TExprKind::Binary(..) => (out, true),
        TExprKind::MatMul(a, _) => (
            out.saturating_mul(2)
                .saturating_mul(a.shape.last().map_or(1, dim_size)),
            true,
        ),
        TExprKind::Reduce { arg, .. } => (arg.shape.elements_per_example(), true),
        TExprKind::Softmax { .. } => (out.saturating_mul(4), true),
        TExprKind::Reshape(_) | TExprKind::Transpose { .. } => (0, false),
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

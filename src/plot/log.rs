//! Reading the JSON-lines logs of `netc run --log` back into epoch reports.

use crate::check::model::Metric;
use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::{EpochReport, Measured};
use std::path::Path;

/// The epochs of a log, in order; E0513 naming the file and line of the first bad one.
pub fn read(path: &Path) -> Result<Vec<EpochReport>, Diagnostic> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::plain(Code::E0504, format!("cannot read {name}: {e}")))?;
    let mut epochs: Vec<EpochReport> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Diagnostic::plain(Code::E0513, format!("{name}:{}: {why}", i + 1));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let number = |field: &str| {
            value
                .get(field)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| bad(format!("`{field}` is missing or not a number")))
        };
        let optional = |field: &str| match value.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => (v.as_f64().map(Some))
                .ok_or_else(|| bad(format!("`{field}` is not a number or null"))),
        };
        let epoch = (value.get("epoch").and_then(serde_json::Value::as_u64))
            .ok_or_else(|| bad("`epoch` is missing or not a whole number".into()))?;
        if let Some(last) = epochs.last() {
            if epoch <= last.epoch {
                return Err(bad(format!(
                    "epoch {epoch} follows epoch {}: epochs must increase",
                    last.epoch
                )));
            }
        }
        let mut metrics = Vec::new();
        for metric in Metric::ALL {
            let train = optional(&format!("train_{}", metric.short()))?;
            let test = optional(&format!("test_{}", metric.short()))?;
            if train.is_some() || test.is_some() {
                metrics.push(Measured {
                    metric,
                    train,
                    test,
                });
            }
        }
        epochs.push(EpochReport {
            epoch,
            lr: optional("lr")?,
            train_loss: number("train_loss")?,
            test_loss: number("test_loss")?,
            metrics,
            seconds: optional("seconds")?.unwrap_or(0.0),
            examples_per_second: 0.0,
            contended: optional("contended")?,
        });
    }
    if epochs.is_empty() {
        return Err(Diagnostic::plain(
            Code::E0513,
            format!("{name} has no epochs to plot"),
        ));
    }
    Ok(epochs)
}

//! CSV tables: a header row naming the columns, numeric fields, one column named by `--target`.
//! The rows are shuffled with the seed and the last fifth held out for testing.

use super::{Dataset, Features, Split};
use crate::diagnostics::{Code, Diagnostic};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Loads `path`, predicting column `target` from all the others.
pub fn load(path: &Path, target: &str, seed: u64) -> Result<Split, Diagnostic> {
    let name = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| Diagnostic::plain(Code::E0504, format!("cannot open {name}: {e}")))?;
    let header = reader
        .headers()
        .map_err(|e| Diagnostic::plain(Code::E0506, format!("{name}: unreadable header row: {e}")))?
        .clone();
    let columns: Vec<&str> = header.iter().collect();
    let target_at = columns.iter().position(|c| *c == target).ok_or_else(|| {
        Diagnostic::plain(Code::E0506, format!("{name} has no column `{target}`"))
            .with_note(format!("its columns are: {}", columns.join(", ")))
    })?;
    let width = columns.len();
    let mut features = Vec::new();
    let mut targets = Vec::new();
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e
                .position()
                .map_or(String::new(), |p| format!(", line {}", p.line()));
            Diagnostic::plain(Code::E0506, format!("{name}{line}: {e}"))
        })?;
        // The line the record starts on (quoted fields may hold line breaks).
        let line = record
            .position()
            .map_or(lines.len() + 2, |p| p.line() as usize);
        lines.push(line);
        if record.len() != width {
            return Err(Diagnostic::plain(
                Code::E0506,
                format!(
                    "{name}, line {line}: {} fields, but the header names {width}",
                    record.len()
                ),
            ));
        }
        for (column, field) in record.iter().enumerate() {
            let value: f32 = match field.parse::<f32>() {
                Ok(v) if v.is_finite() => v,
                _ if field.is_empty() => {
                    return Err(Diagnostic::plain(
                        Code::E0506,
                        format!(
                            "{name}, line {line}: column `{}` is missing",
                            columns[column]
                        ),
                    ))
                }
                _ => {
                    return Err(Diagnostic::plain(
                        Code::E0506,
                        format!(
                            "{name}, line {line}: column `{}` holds `{field}`, not a finite number",
                            columns[column]
                        ),
                    ))
                }
            };
            if column == target_at {
                targets.push(value);
            } else {
                features.push(value);
            }
        }
    }
    let len = targets.len();
    if len < 2 {
        return Err(Diagnostic::plain(
            Code::E0506,
            format!("{name} has {len} records: at least 2 are needed to hold one out for testing"),
        ));
    }
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let held_out = (len / 5).max(1);
    let per = width - 1;
    let take = |rows: &[usize]| Dataset {
        len: rows.len(),
        feature_dims: vec![per],
        features: Features::F32(
            rows.iter()
                .flat_map(|&r| features[r * per..(r + 1) * per].iter().copied())
                .collect(),
        ),
        target_dims: vec![1],
        targets: rows.iter().map(|&r| targets[r]).collect(),
        origin: name.clone(),
        lines: rows.iter().map(|&r| lines[r]).collect(),
    };
    Ok(Split {
        train: take(&order[..len - held_out]),
        test: take(&order[len - held_out..]),
        class_names: None,
    })
}

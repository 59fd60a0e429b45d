//! The model's metrics over a set of predictions, summed batch by batch in f64 and finished
//! once the set is done: accuracy counts rows, the error metrics average over every element,
//! so a partial last batch weighs what it holds.

use crate::check::model::{LabelKind, LossKind, Metric, Model, TExprKind};
use crate::tensor::Tensor;

/// Running sums for each of a model's metrics.
pub struct Tally<'m> {
    model: &'m Model,
    sums: Vec<f64>,
    rows: usize,
    elements: usize,
}

impl<'m> Tally<'m> {
    pub fn new(model: &'m Model) -> Tally<'m> {
        Tally {
            model,
            sums: vec![0.0; model.metrics.len()],
            rows: 0,
            elements: 0,
        }
    }

    /// Adds a batch's outputs and targets.
    pub fn add(&mut self, output: &Tensor<f32>, targets: &Tensor<f32>) {
        let rows = output.dims.first().copied().unwrap_or(0);
        self.rows += rows;
        self.elements += targets.data.len();
        for (sum, metric) in self.sums.iter_mut().zip(&self.model.metrics) {
            *sum += match metric {
                Metric::Accuracy => correct(self.model, output, targets, rows) as f64,
                Metric::Rmse => errors(output, targets, |p, t| (p - t) * (p - t)),
                Metric::Mae => errors(output, targets, |p, t| (p - t).abs()),
                Metric::LogRmse => errors(output, targets, |p, t| {
                    let d = p.max(1.0).ln() - t.max(1.0).ln();
                    d * d
                }),
            };
        }
    }

    /// The running sums, as numbers another process's tally can be added to (`set_totals`).
    pub fn totals(&self) -> Vec<f64> {
        let counts = [self.rows as f64, self.elements as f64];
        self.sums.iter().copied().chain(counts).collect()
    }

    /// Replaces the running sums with `totals` (several processes' `totals`, summed).
    pub fn set_totals(&mut self, totals: &[f64]) {
        let (sums, counts) = totals.split_at(self.sums.len());
        self.sums.copy_from_slice(sums);
        // Counts below 2^53 are exact in f64.
        (self.rows, self.elements) = (counts[0] as usize, counts[1] as usize);
    }

    /// Each metric over everything added, in the model's order.
    pub fn finish(&self) -> Vec<f64> {
        let (rows, elements) = (self.rows.max(1) as f64, self.elements.max(1) as f64);
        self.sums
            .iter()
            .zip(&self.model.metrics)
            .map(|(&sum, metric)| match metric {
                Metric::Accuracy => sum / rows,
                Metric::Mae => sum / elements,
                Metric::Rmse | Metric::LogRmse => (sum / elements).sqrt(),
            })
            .collect()
    }
}

/// Σ f(prediction, target) over the elements, in f64.
fn errors(output: &Tensor<f32>, targets: &Tensor<f32>, f: impl Fn(f64, f64) -> f64) -> f64 {
    output
        .data
        .iter()
        .zip(&targets.data)
        .map(|(&p, &t)| f(p as f64, t as f64))
        .sum()
}

/// How many of a batch's `rows` predictions are right.
fn correct(model: &Model, output: &Tensor<f32>, targets: &Tensor<f32>, rows: usize) -> usize {
    match &model.label.as_ref().map(|l| &l.kind) {
        Some(LabelKind::Class(classes)) => {
            let classes = *classes as usize;
            (0..rows)
                .filter(|&r| {
                    argmax(&output.data[r * classes..(r + 1) * classes]) == targets.data[r] as usize
                })
                .count()
        }
        _ if signed_targets(model) => (0..rows)
            .filter(|&r| (output.data[r] >= 0.0) == (targets.data[r] >= 0.0))
            .count(),
        _ => (0..rows)
            .filter(|&r| (output.data[r] >= 0.5) == (targets.data[r] >= 0.5))
            .count(),
    }
}

/// Hinge and perceptron models use ±1 targets; accuracy compares signs.
fn signed_targets(model: &Model) -> bool {
    matches!(
        model.loss.kind,
        TExprKind::Loss {
            kind: LossKind::Hinge | LossKind::Perceptron,
            ..
        }
    )
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

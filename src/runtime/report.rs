//! Reporting a run: one line per epoch on stdout, a progress bar on stderr when it is a
//! terminal, the same figures as JSON lines in `--log PATH`, and to each `Watcher` (pictures
//! and event files) the figures and the session.

use super::Session;
use crate::check::model::Metric;
use crate::diagnostics::Diagnostic;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// The figures of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub epoch: u64,
    /// The learning rate of the epoch's last step (absent from older logs).
    pub lr: Option<f64>,
    pub train_loss: f64,
    pub test_loss: f64,
    /// The model's metrics, in its order.
    pub metrics: Vec<Measured>,
    pub seconds: f64,
    pub examples_per_second: f64,
    /// The share of the epoch's 20 ms windows in which a worker waited for a core a quarter of
    /// the time or more, other programs wanting the cores (see `codegen::Pool::contention`),
    /// when any window was measured.
    pub contended: Option<f64>,
}

/// One metric of an epoch: on the training batches as they were trained, and on the test set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub metric: Metric,
    pub train: Option<f64>,
    pub test: Option<f64>,
}

impl EpochReport {
    /// A metric's figures, if the model reports it.
    pub fn metric(&self, metric: Metric) -> Option<&Measured> {
        self.metrics.iter().find(|m| m.metric == metric)
    }

    pub fn train_accuracy(&self) -> Option<f64> {
        self.metric(Metric::Accuracy).and_then(|m| m.train)
    }

    pub fn test_accuracy(&self) -> Option<f64> {
        self.metric(Metric::Accuracy).and_then(|m| m.test)
    }
}

/// Where epoch reports go.
pub struct Reporter {
    log: Option<std::fs::File>,
    bar: Option<ProgressBar>,
    quiet: bool,
    /// Whether the epoch line shows the learning rate (it changes only under a schedule).
    pub scheduled: bool,
    /// Every report so far, for callers that want the figures.
    pub history: Vec<EpochReport>,
    /// The first failure to write the log, if any: training goes on, and the caller reports it.
    pub log_error: Option<std::io::Error>,
    /// What follows the run epoch by epoch (`--plot`, `--tensorboard`, `--animate`).
    pub watchers: Vec<Box<dyn Watcher>>,
    /// The first failure of a watcher: training goes on, and the caller reports it.
    pub watch_error: Option<Diagnostic>,
}

/// Something that follows a run epoch by epoch (and, if it wants, step by step).
pub trait Watcher {
    /// After each step, with the session's new weights.
    fn step(&mut self, _session: &mut Session) -> Result<(), Diagnostic> {
        Ok(())
    }

    /// After each epoch, with the session as it stands and every report so far.
    fn epoch(&mut self, session: &mut Session, history: &[EpochReport]) -> Result<(), Diagnostic>;

    /// Once the run has ended, however it ended.
    fn end(&mut self, history: &[EpochReport]) -> Result<(), Diagnostic>;
}

impl Reporter {
    /// A reporter writing JSON lines to `log` if given; quiet ones print nothing.
    pub fn new(log: Option<std::fs::File>, quiet: bool) -> Reporter {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps, {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Reporter {
            log,
            bar,
            quiet,
            scheduled: false,
            history: Vec::new(),
            log_error: None,
            watchers: Vec::new(),
            watch_error: None,
        }
    }

    /// Marks the start of an epoch of `steps` steps.
    pub fn start_epoch(&mut self, epoch: u64, steps: u64) {
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(steps);
            bar.set_prefix(epoch.to_string());
        }
    }

    /// One step done: `session` holds its weights.
    pub fn advance(&mut self, session: &mut Session) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        for watcher in &mut self.watchers {
            if let Err(e) = watcher.step(session) {
                self.watch_error.get_or_insert(e);
            }
        }
    }

    /// Prints and logs an epoch's figures, and shows them and `session` to the watchers.
    pub fn finish_epoch(&mut self, report: &EpochReport, session: &mut Session) {
        let mut line = format!(
            "epoch {:>3}  train_loss {:.4}",
            report.epoch, report.train_loss
        );
        for m in &report.metrics {
            if let Some(v) = m.train {
                line += &format!("  train_{} {v:.4}", m.metric.short());
            }
        }
        if report.test_accuracy().is_none() {
            line += &format!("  test_loss {:.6}", report.test_loss);
        }
        for m in &report.metrics {
            if let Some(v) = m.test {
                line += &format!("  test_{} {v:.4}", m.metric.short());
            }
        }
        if let Some(lr) = report.lr.filter(|_| self.scheduled) {
            line += &format!("  lr {}", rate(lr));
        }
        line += &format!(
            "  {:.2} s  {:.0} ex/s",
            report.seconds, report.examples_per_second
        );
        // Said only when it happened: an epoch slowed by other programs says why.
        if let Some(share) = report.contended.filter(|&share| share > 0.0) {
            line += &format!("  cores shared {:.0}%", 100.0 * share);
        }
        if let Some(bar) = &self.bar {
            bar.println(&line);
        } else if !self.quiet {
            say!("{line}");
        }
        if let Some(file) = &mut self.log {
            let mut json = serde_json::json!({
                "epoch": report.epoch,
                "train_loss": report.train_loss,
                "test_loss": report.test_loss,
                "lr": report.lr,
                "seconds": report.seconds,
                "contended": report.contended,
            });
            for m in &report.metrics {
                json[format!("train_{}", m.metric.short())] = m.train.into();
                json[format!("test_{}", m.metric.short())] = m.test.into();
            }
            // A log line that cannot be written is not worth stopping training for; it is
            // reported once training ends.
            if let Err(e) = writeln!(file, "{json}").and_then(|()| file.flush()) {
                self.log_error.get_or_insert(e);
            }
        }
        self.history.push(report.clone());
        for watcher in &mut self.watchers {
            if let Err(e) = watcher.epoch(session, &self.history) {
                self.watch_error.get_or_insert(e);
            }
        }
    }

    /// Removes the progress bar and tells the watchers the run has ended.
    pub fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        for watcher in &mut self.watchers {
            if let Err(e) = watcher.end(&self.history) {
                self.watch_error.get_or_insert(e);
            }
        }
    }
}

/// A learning rate in four significant figures: `0.1000`, `0.0025`, `3.125e-5`.
fn rate(lr: f64) -> String {
    if lr >= 1e-3 {
        format!("{lr:.4}")
    } else {
        format!("{lr:.3e}")
    }
}

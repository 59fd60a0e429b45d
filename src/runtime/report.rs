//! Reporting a run: one line per epoch on stdout, a progress bar on stderr when it is a
//! terminal, and the same figures as JSON lines in `--log PATH`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// The figures of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub epoch: u64,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: Option<f64>,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// Where epoch reports go.
pub struct Reporter {
    log: Option<std::fs::File>,
    bar: Option<ProgressBar>,
    quiet: bool,
    /// Every report so far, for callers that want the figures.
    pub history: Vec<EpochReport>,
    /// The first failure to write the log, if any: training goes on, and the caller reports it.
    pub log_error: Option<std::io::Error>,
    /// Called with every report so far after each epoch (`--plot` redraws its picture).
    pub after_epoch: Option<AfterEpoch>,
    /// The first failure of `after_epoch`: training goes on, and the caller reports it.
    pub after_epoch_error: Option<crate::diagnostics::Diagnostic>,
}

/// What a reporter calls after each epoch, with every report so far.
pub type AfterEpoch = Box<dyn FnMut(&[EpochReport]) -> Result<(), crate::diagnostics::Diagnostic>>;

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
            history: Vec::new(),
            log_error: None,
            after_epoch: None,
            after_epoch_error: None,
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

    /// One step done.
    pub fn advance(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Prints and logs an epoch's figures.
    pub fn finish_epoch(&mut self, report: &EpochReport) {
        let mut line = format!(
            "epoch {:>3}  train_loss {:.4}",
            report.epoch, report.train_loss
        );
        if let Some(acc) = report.train_accuracy {
            line += &format!("  train_acc {acc:.4}");
        }
        match report.test_accuracy {
            Some(acc) => line += &format!("  test_acc {acc:.4}"),
            None => line += &format!("  test_loss {:.6}", report.test_loss),
        }
        line += &format!(
            "  {:.2} s  {:.0} ex/s",
            report.seconds, report.examples_per_second
        );
        if let Some(bar) = &self.bar {
            bar.println(&line);
        } else if !self.quiet {
            say!("{line}");
        }
        if let Some(file) = &mut self.log {
            let json = serde_json::json!({
                "epoch": report.epoch,
                "train_loss": report.train_loss,
                "train_acc": report.train_accuracy,
                "test_acc": report.test_accuracy,
                "test_loss": report.test_loss,
                "seconds": report.seconds,
            });
            // A log line that cannot be written is not worth stopping training for; it is
            // reported once training ends.
            if let Err(e) = writeln!(file, "{json}").and_then(|()| file.flush()) {
                self.log_error.get_or_insert(e);
            }
        }
        self.history.push(report.clone());
        if let Some(after) = &mut self.after_epoch {
            if let Err(e) = after(&self.history) {
                self.after_epoch_error.get_or_insert(e);
            }
        }
    }

    /// Removes the progress bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

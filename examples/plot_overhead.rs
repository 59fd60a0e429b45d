//! Measures what `netc run --plot` costs: trains models on Fashion-MNIST with the live
//! training-curves picture and reports, in one run, the time spent drawing against the time
//! spent training, overall and for the epoch that paid the most. `--plot` promises at most 1%.
//!
//! Usage: cargo run --release --example plot_overhead [EPOCHS]   (default 10)

use netc::diagnostics::Diagnostic;
use netc::plot::LiveCurves;
use netc::runtime::{EpochReport, Reporter, RunSettings, Session, Watcher};
use netc::source::SourceFile;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A watcher timing another: each epoch's call, then the call when the run ends.
struct Timed {
    inner: LiveCurves,
    times: Rc<RefCell<Vec<Duration>>>,
}

impl Watcher for Timed {
    fn epoch(&mut self, session: &mut Session, history: &[EpochReport]) -> Result<(), Diagnostic> {
        let started = Instant::now();
        let result = self.inner.epoch(session, history);
        self.times.borrow_mut().push(started.elapsed());
        result
    }

    fn end(&mut self, history: &[EpochReport]) -> Result<(), Diagnostic> {
        let started = Instant::now();
        let result = self.inner.end(history);
        self.times.borrow_mut().push(started.elapsed());
        result
    }
}

fn main() {
    let epochs: u64 = std::env::args()
        .nth(1)
        .map_or(10, |e| e.parse().expect("a number of epochs"));
    let split = netc::data::Source::parse("fmnist", None, None)
        .and_then(|source| source.load(0))
        .unwrap_or_else(|d| panic!("Fashion-MNIST: {}", d.message));
    println!("model       epochs  training s  drawing ms  overall  worst epoch");
    for name in ["softmax", "mlp"] {
        let path = format!("models/{name}.net");
        let source = SourceFile::new(
            path.clone(),
            std::fs::read_to_string(&path).expect("a model"),
        );
        let (Some((_, model)), _) = netc::front_end(&source) else {
            panic!("{path} checks")
        };
        let mut session = Session::new(&model, &source, 0).expect("a session");
        let batch = model.train.batch as usize;
        session.compile(batch, false).expect("compiles");
        let picture = std::env::temp_dir().join(format!("netc-plot-overhead-{name}.png"));
        let times = Rc::new(RefCell::new(Vec::new()));
        let mut reporter = Reporter::new(None, true);
        reporter.watchers.push(Box::new(Timed {
            inner: LiveCurves::new(picture.clone(), name.into()),
            times: times.clone(),
        }));
        let settings = RunSettings {
            epochs,
            batch,
            lr: 0.1,
            seed: 0,
            shuffle: true,
            checkpoints: None,
        };
        let started = Instant::now();
        session
            .fit(&split, &settings, &mut reporter)
            .expect("trains");
        reporter.finish();
        let total = started.elapsed();
        let times = times.borrow();
        let drawing: Duration = times.iter().sum();
        let training: f64 = reporter.history.iter().map(|e| e.seconds).sum();
        // The drawing after an epoch delays the next one; the last is drawn after training.
        let worst = (reporter.history.iter().zip(times.iter()))
            .map(|(e, d)| d.as_secs_f64() / e.seconds)
            .fold(0.0, f64::max);
        println!(
            "{name:<10} {epochs:>7} {training:>11.3} {:>11.2} {:>7.2}% {:>11.2}%",
            drawing.as_secs_f64() * 1e3,
            100.0 * drawing.as_secs_f64() / total.as_secs_f64(),
            100.0 * worst
        );
        std::fs::remove_file(picture).ok();
    }
}

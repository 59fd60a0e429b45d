//! Stage 6, runtime: a checked model and a data set in, a trained model out. Runs the
//! optimized training step batch by batch (shuffled from the seed each epoch, a partial last
//! batch included), reports each epoch, evaluates on the held-out set, stops with a diagnostic
//! when the loss stops being finite, and saves and resumes checkpoints exactly.

pub mod checkpoint;
mod init;
mod metrics;
mod parallel;
mod report;

use crate::check::model::{LabelKind, Model, Schedule};
use crate::codegen::{CompileError, Compiled, Pool};
use crate::data::{Dataset, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::interp;
use crate::ir::{Decl, Graph, NodeId};
use crate::source::SourceFile;
use crate::step::Step;
use crate::tensor::{Bindings, Tensor};
use checkpoint::Checkpoint;
pub use metrics::Tally;
pub use parallel::{data_fingerprint, fingerprint, share, Group, Parallel, Timing};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
pub use report::{EpochReport, Measured, Reporter, Watcher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Set (by the command line's Ctrl-C handler) to stop training after the current step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Settings of one training run (the model's `train` block, overridden from the command line).
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub epochs: u64,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub shuffle: bool,
    /// Where and how often to save checkpoints while training (`--save-every`).
    pub checkpoints: Option<(PathBuf, Every)>,
}

impl RunSettings {
    /// The scalars a training step reads (`autodiff::step::HYPERS`) at `step`.
    pub fn hypers(&self, step: u64, steps_per_epoch: usize) -> [f64; 4] {
        [
            self.lr,
            step as f64,
            steps_per_epoch as f64,
            self.epochs as f64,
        ]
    }
}

/// How often something happens during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    Epochs(u64),
    Steps(u64),
}

/// How a training run ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every epoch asked for is done.
    Finished,
    /// Stopped early by an interrupt (Ctrl-C), after a whole step.
    Interrupted,
}

/// A model compiled for training and evaluation, with its current weights.
pub struct Session<'a> {
    pub model: &'a Model,
    pub source: &'a SourceFile,
    pub train: Step,
    pub eval: Step,
    pub hash: String,
    pub params: Vec<Tensor<f32>>,
    pub states: Vec<Tensor<f32>>,
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Steps completed of the epoch after `epoch`, when a run stopped inside it.
    pub epoch_step: u64,
    /// The batch size those steps took, which a run resuming inside the epoch must keep (0
    /// before any training).
    pub batch: usize,
    pub engine: Engine,
    /// The workers that gather batches and run compiled steps (set before `compile`).
    pub pool: Arc<Pool>,
    /// The weights and state before the last step (or spare tensors of their shapes).
    previous: (Vec<Tensor<f32>>, Vec<Tensor<f32>>),
    /// The processes this one trains with, when the run is data-parallel (`distribute`).
    pub parallel: Option<Box<Parallel>>,
}

/// How a session executes its graphs: the reference interpreter, or both graphs compiled to
/// native code for batches up to a size.
pub enum Engine {
    Interp,
    Jit {
        train: Box<Compiled>,
        eval: Box<Compiled>,
    },
}

/// Which of a session's graphs a run is for.
#[derive(Clone, Copy)]
enum Graphs {
    Train,
    Eval,
}

impl Engine {
    /// Runs one of the steps, leaving its results in `results` (whose tensors compiled code
    /// reuses).
    fn run(
        &mut self,
        step: &Step,
        bind: &Bindings<f32>,
        which: Graphs,
        results: &mut Vec<Tensor<f32>>,
    ) {
        let compiled = match (self, which) {
            (Engine::Interp, _) => None,
            (Engine::Jit { train, .. }, Graphs::Train) => Some(&mut **train),
            (Engine::Jit { eval, .. }, Graphs::Eval) => Some(&mut **eval),
        };
        run_step(compiled, step, bind, results);
    }
}

/// Runs a step's code, or the interpreter when it has none, into `results`.
fn run_step(
    compiled: Option<&mut Compiled>,
    step: &Step,
    bind: &Bindings<f32>,
    results: &mut Vec<Tensor<f32>>,
) {
    match compiled {
        // The session binds the graph's declared shapes and the batch it compiled for.
        Some(compiled) => compiled
            .run_into(bind, results)
            .expect("the session binds what it compiled"),
        None => {
            *results =
                interp::run(&step.graph, bind, &step.results, false).expect("unchecked runs finish")
        }
    }
}

/// The loss and the model's metrics over a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub loss: f64,
    /// In the order of `Model::metrics`.
    pub metrics: Vec<f64>,
}

impl<'a> Session<'a> {
    /// Builds the model's training and evaluation graphs and draws its first weights, after
    /// checking that the weights, their updates and the last good copy fit in memory (E0511).
    pub fn new(
        model: &'a Model,
        source: &'a SourceFile,
        seed: u64,
    ) -> Result<Session<'a>, Diagnostic> {
        let train = Step::train(model, source);
        let eval = Step::eval(model, source);
        let elements = train
            .graph
            .params
            .iter()
            .chain(&train.graph.states)
            .try_fold(0u64, |sum, d| {
                sum.checked_add(d.shape.elements_per_example())
            });
        crate::memory::ensure(
            elements.and_then(|n| crate::memory::bytes(n, 4 * 3)),
            "the model's weights and optimizer state (three copies while training)",
        )?;
        // The schedule is not part of what a checkpoint must match: weights trained under one
        // resume or export under another, as the model file declares its rate constant.
        let hash = if model.schedule == Schedule::CONSTANT {
            checkpoint::model_hash(&train.graph)
        } else {
            let constant = Model {
                schedule: Schedule::CONSTANT,
                ..model.clone()
            };
            checkpoint::model_hash(&crate::train_graph(&constant, source))
        };
        let shapes: Vec<_> = train.graph.states.iter().map(|d| d.shape.clone()).collect();
        let (params, states) = init::initial(model, &shapes, seed);
        Ok(Session {
            model,
            source,
            train,
            eval,
            hash,
            params,
            states,
            step: 0,
            epoch: 0,
            epoch_step: 0,
            batch: 0,
            engine: Engine::Interp,
            pool: Pool::new(crate::codegen::default_threads()),
            previous: (Vec::new(), Vec::new()),
            parallel: None,
        })
    }

    /// Makes training data-parallel over `group`: each step runs the gradient half on this
    /// process's share of the batch and the update half on every process's sum. Called before
    /// `compile`, which then compiles the halves.
    pub fn distribute(&mut self, group: Box<dyn Group>) {
        let gradients = Step::gradients(self.model, self.source);
        let update = Step::update(self.model, self.source);
        self.parallel = Some(Box::new(Parallel::new(
            group,
            &self.train,
            gradients,
            update,
        )));
    }

    /// Compiles both graphs to native code for batches of up to `batch` examples; later runs use it.
    pub fn compile(
        &mut self,
        batch: usize,
        profile: bool,
    ) -> Result<std::time::Duration, CompileError> {
        let started = std::time::Instant::now();
        // A data-parallel run trains with the step's two halves, the gradient half in the
        // training slot, with ticks between its kernels to report finished gradients.
        let (train, update, ticks) = match &self.parallel {
            Some(parallel) => (&parallel.gradients, Some(&parallel.update), true),
            None => (&self.train, None, profile),
        };
        // The graphs compile at the same time, on two threads.
        let (train, eval, update) = std::thread::scope(|scope| {
            let others = scope.spawn(|| {
                let eval = Compiled::new(&self.eval, batch, false, &self.pool);
                let update = update.map(|u| Compiled::new(u, 1, false, &self.pool));
                (eval, update)
            });
            let train = Compiled::new(train, batch, ticks, &self.pool);
            let (eval, update) = others.join().expect("compiling does not panic");
            (train, eval, update)
        });
        let (train, eval, update) = (train?, eval?, update.transpose()?);
        if let Some(parallel) = &mut self.parallel {
            parallel.update_code = update.map(Box::new);
        }
        self.engine = Engine::Jit {
            train: Box::new(train),
            eval: Box::new(eval),
        };
        Ok(started.elapsed())
    }

    /// The training step's time per kernel so far, when it was compiled with profiling.
    pub fn profile(&self) -> Option<crate::codegen::Profile> {
        match &self.engine {
            Engine::Jit { train, .. } => Some(train.take_profile()),
            Engine::Interp => None,
        }
    }

    /// The FLOPs of one training step's products at `batch`, when compiled.
    pub fn step_flops(&self, batch: usize) -> Option<crate::codegen::Flops> {
        match &self.engine {
            Engine::Jit { train, .. } => Some(train.flops(batch)),
            Engine::Interp => None,
        }
    }

    /// Replaces the weights and position with a checkpoint's, after checking it fits.
    pub fn restore(&mut self, path: &std::path::Path) -> Result<Checkpoint, Diagnostic> {
        let checkpoint = checkpoint::load(path, &self.train.graph, &self.hash)?;
        self.params = checkpoint.params.clone();
        self.states = checkpoint.states.clone();
        self.step = checkpoint.step;
        self.epoch = checkpoint.epoch;
        self.epoch_step = checkpoint.epoch_step;
        // Sizes above 2^24 are refused when the checkpoint is read.
        self.batch = checkpoint.batch.map_or(0, |b| b as usize);
        Ok(checkpoint)
    }

    /// Saves the current weights and position.
    pub fn save(&self, path: &std::path::Path, seed: u64) -> Result<(), Diagnostic> {
        let checkpoint = Checkpoint {
            model_hash: self.hash.clone(),
            params: self.params.clone(),
            states: self.states.clone(),
            step: self.step,
            epoch: self.epoch,
            epoch_step: self.epoch_step,
            batch: (self.batch > 0).then_some(self.batch as u64),
            seed,
        };
        checkpoint::save(path, &self.train.graph, &checkpoint)
    }

    /// Trains until `settings.epochs` epochs are done, reporting each, or until `INTERRUPTED`
    /// is set (then it stops after a whole step). On divergence the weights are put back to the
    /// last ones whose loss was finite, and the error is returned.
    pub fn fit(
        &mut self,
        data: &Split,
        settings: &RunSettings,
        reporter: &mut Reporter,
    ) -> Result<Stop, Diagnostic> {
        fits(self.model, &data.train)?;
        fits(self.model, &data.test)?;
        // Steps into an epoch are counted in batches: another size would skip other examples.
        if self.epoch_step > 0 && self.batch > 0 && self.batch != settings.batch {
            return Err(Diagnostic::plain(
                Code::E0502,
                format!(
                    "the run stopped {} steps into epoch {} with batches of {}; going on with batches of {} would skip other examples than those it trained on",
                    self.epoch_step,
                    self.epoch + 1,
                    self.batch,
                    settings.batch
                ),
            )
            .with_help(format!("resume with `--batch {}`", self.batch)));
        }
        self.batch = settings.batch;
        if let Engine::Interp = self.engine {
            let peak =
                interp::peak_elements(&self.train.graph, &self.train.results, settings.batch);
            crate::memory::ensure(
                peak.and_then(|n| crate::memory::bytes(n, 4)),
                &format!("the interpreter's values for batches of {}", settings.batch),
            )?;
        }
        let (output, updates) = (self.train.output(), self.train.first_update());
        // Three sets of weights take turns, so that nothing is copied: the current ones, the
        // step's results, and the previous step's weights (with their position), put back if
        // the current ones give a non-finite loss. The third set lives in the session, so that
        // a caller running one step per `fit` (`netc bench`) copies nothing after the first.
        if self.previous.0.len() != self.params.len() || self.previous.1.len() != self.states.len()
        {
            self.previous = (self.params.clone(), self.states.clone());
        }
        let mut previous_position: Option<Position> = None;
        let mut stop = false;
        let mut values = Vec::new();
        let mut inputs = Vec::new();
        while self.epoch < settings.epochs {
            let epoch = self.epoch + 1;
            let started = std::time::Instant::now();
            let windows_before = self.pool.contention();
            let mut order: Vec<usize> = (0..data.train.len).collect();
            if settings.shuffle {
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    settings.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ));
            }
            let (mut total_loss, mut seen) = (0.0, 0usize);
            let mut tally = Tally::new(self.model);
            let batches = order.len().div_ceil(settings.batch);
            let skip = usize::try_from(self.epoch_step).unwrap_or(usize::MAX);
            reporter.start_epoch(epoch, batches as u64);
            for (index, rows) in order.chunks(settings.batch).enumerate().skip(skip) {
                let mine = match &self.parallel {
                    Some(parallel) => parallel.share(rows),
                    None => rows,
                };
                batch_tensors(
                    &self.train.graph.inputs,
                    &data.train,
                    mine,
                    &mut inputs,
                    &self.pool,
                );
                let position = self.position();
                let step = self
                    .step
                    .checked_add(1)
                    .filter(|&s| s <= MAX_STEP)
                    .ok_or_else(|| {
                        Diagnostic::plain(
                            Code::E0502,
                            format!("the step counter would pass {MAX_STEP}"),
                        )
                    })?;
                let hypers = settings.hypers(step, batches);
                let bind = Bindings {
                    batch: mine.len(),
                    inputs: &inputs,
                    params: &self.params,
                    states: &self.states,
                    hypers: &hypers,
                    seed: step_seed(settings.seed, step),
                };
                // Every process of a data-parallel run stops at the same step, when any asks.
                stop = match &mut self.parallel {
                    Some(parallel) => {
                        let interrupted = INTERRUPTED.load(Ordering::Relaxed);
                        let (engine, whole) = (&mut self.engine, &self.train);
                        parallel.step(engine, whole, &bind, rows.len(), interrupted, &mut values)
                    }
                    None => {
                        self.engine
                            .run(&self.train, &bind, Graphs::Train, &mut values);
                        INTERRUPTED.load(Ordering::Relaxed)
                    }
                };
                let step_loss = values[0].item() as f64;
                if !step_loss.is_finite() {
                    let diagnostic = self.diverged(&bind, epoch, index + 1);
                    return Err(match previous_position {
                        Some(kept) => {
                            std::mem::swap(&mut self.params, &mut self.previous.0);
                            std::mem::swap(&mut self.states, &mut self.previous.1);
                            self.set_position(kept);
                            diagnostic.with_note(format!(
                                "the weights are put back to those after step {}, the last whose loss was finite",
                                kept.step
                            ))
                        }
                        None => diagnostic.with_note(format!(
                            "the weights are kept as they were before this run's first step (step {})",
                            self.step
                        )),
                    });
                }
                if let Some(output) =
                    output.filter(|_| !self.model.metrics.is_empty() && !mine.is_empty())
                {
                    tally.add(&values[output], &inputs[1]);
                }
                let mut results = values[updates..].iter_mut();
                for (&(p, _), value) in self.train.graph.param_updates.iter().zip(results.by_ref())
                {
                    std::mem::swap(&mut self.previous.0[p], &mut self.params[p]);
                    std::mem::swap(&mut self.params[p], value);
                }
                for (&(s, _), value) in self.train.graph.state_updates.iter().zip(results) {
                    std::mem::swap(&mut self.previous.1[s], &mut self.states[s]);
                    std::mem::swap(&mut self.states[s], value);
                }
                previous_position = Some(position);
                total_loss += step_loss * rows.len() as f64;
                seen += rows.len();
                self.step = step;
                self.epoch_step = index as u64 + 1;
                reporter.advance(self);
                if let Some((path, Every::Steps(n))) = &settings.checkpoints {
                    if step.is_multiple_of(*n) {
                        self.save(path, settings.seed)?;
                    }
                }
                if stop {
                    return Ok(Stop::Interrupted);
                }
            }
            if let Some(parallel) = &mut self.parallel {
                let mut totals = tally.totals();
                parallel.sum_f64(&mut totals);
                tally.set_totals(&totals);
            }
            self.epoch = epoch;
            self.epoch_step = 0;
            let test = self.evaluate(&data.test, settings.batch);
            let seconds = started.elapsed().as_secs_f64();
            let seen = seen.max(1) as f64;
            let windows = self.pool.contention();
            let (contended, measured) =
                (windows.0 - windows_before.0, windows.1 - windows_before.1);
            let metrics = (self
                .model
                .metrics
                .iter()
                .zip(tally.finish())
                .zip(test.metrics))
            .map(|((&metric, train), test)| Measured {
                metric,
                train: Some(train),
                test: Some(test),
            })
            .collect();
            let report = EpochReport {
                epoch,
                lr: Some(self.learning_rate(settings, self.step, batches)),
                train_loss: total_loss / seen,
                test_loss: test.loss,
                metrics,
                seconds,
                examples_per_second: seen / seconds,
                contended: (measured > 0).then(|| contended as f64 / measured as f64),
            };
            reporter.finish_epoch(&report, self);
            if let Some((path, Every::Epochs(n))) = &settings.checkpoints {
                if epoch.is_multiple_of(*n) {
                    self.save(path, settings.seed)?;
                }
            }
            // A data-parallel run goes by its last step's shared flag, which every process has.
            if stop || self.parallel.is_none() && INTERRUPTED.load(Ordering::Relaxed) {
                return Ok(Stop::Interrupted);
            }
        }
        Ok(Stop::Finished)
    }

    /// Where training stands.
    fn position(&self) -> Position {
        Position {
            step: self.step,
            epoch: self.epoch,
            epoch_step: self.epoch_step,
        }
    }

    fn set_position(&mut self, at: Position) {
        self.step = at.step;
        self.epoch = at.epoch;
        self.epoch_step = at.epoch_step;
    }

    /// The loss and metrics on a data set, with the evaluation graph, in batches (each process
    /// of a data-parallel run taking its share of each).
    pub fn evaluate(&mut self, data: &Dataset, batch: usize) -> Score {
        let all: Vec<usize> = (0..data.len).collect();
        let batches: Vec<&[usize]> = (all.chunks(batch))
            .map(|rows| match &self.parallel {
                Some(parallel) => parallel.share(rows),
                None => rows,
            })
            .filter(|rows| !rows.is_empty())
            .collect();
        let predictions = self.predict_batches(data, &batches);
        let mut loss = 0.0;
        let mut tally = Tally::new(self.model);
        for (rows, (batch_loss, outputs)) in batches.iter().zip(predictions) {
            loss += batch_loss * rows.len() as f64;
            if let Some(out) = outputs.filter(|_| !self.model.metrics.is_empty()) {
                tally.add(&out, &batch_targets(&self.eval.graph, data, rows));
            }
        }
        if let Some(parallel) = &mut self.parallel {
            let mut totals = tally.totals();
            totals.push(loss);
            parallel.sum_f64(&mut totals);
            loss = totals.pop().expect("the loss was pushed");
            tally.set_totals(&totals);
        }
        Score {
            loss: loss / data.len as f64,
            metrics: tally.finish(),
        }
    }

    /// The learning rate the schedule gives at `step` (from 1), computed by the interpreter from
    /// the same nodes the training step holds.
    pub fn learning_rate(&self, settings: &RunSettings, step: u64, steps_per_epoch: usize) -> f64 {
        let (graph, rate) = crate::autodiff::step::learning_rate(&self.model.schedule);
        let bind: Bindings<f32> = Bindings {
            batch: 1,
            inputs: &[],
            params: &[],
            states: &[],
            hypers: &settings.hypers(step.max(1), steps_per_epoch),
            seed: 0,
        };
        let rate = interp::run(&graph, &bind, &[rate], false).expect("scalars run");
        rate[0].item() as f64
    }

    /// The evaluation graph's loss and output for each batch of a data set, in order.
    pub fn predict(&mut self, data: &Dataset, batch: usize) -> Vec<(f64, Option<Tensor<f32>>)> {
        let rows: Vec<usize> = (0..data.len).collect();
        let batches: Vec<&[usize]> = rows.chunks(batch).collect();
        self.predict_batches(data, &batches)
    }

    /// The evaluation graph's loss and output for each of some batches of a data set's rows.
    fn predict_batches(
        &mut self,
        data: &Dataset,
        batches: &[&[usize]],
    ) -> Vec<(f64, Option<Tensor<f32>>)> {
        let output = self.eval.output();
        let mut inputs = Vec::new();
        batches
            .iter()
            .map(|rows| {
                batch_tensors(&self.eval.graph.inputs, data, rows, &mut inputs, &self.pool);
                let model_states = &self.states[..self.eval.graph.states.len()];
                let bind = Bindings {
                    batch: rows.len(),
                    inputs: &inputs,
                    params: &self.params,
                    states: model_states,
                    hypers: &[],
                    seed: 0,
                };
                let mut values = Vec::new();
                self.engine
                    .run(&self.eval, &bind, Graphs::Eval, &mut values);
                let out = output.map(|o| values.swap_remove(o));
                (values[0].item() as f64, out)
            })
            .collect()
    }

    /// Re-runs a diverged step with checks to name the first operation that went non-finite.
    fn diverged(&self, bind: &Bindings<f32>, epoch: u64, step: usize) -> Diagnostic {
        let loss = self.train.results[0];
        let mut diagnostic = Diagnostic::plain(
            Code::E0509,
            format!("the loss is not finite at epoch {epoch}, step {step}"),
        );
        if let Err(interp::NonFinite(node)) = interp::run(&self.train.graph, bind, &[loss], true) {
            diagnostic = diagnostic.with_note(describe_node(&self.train.graph, node, self.source));
        }
        diagnostic.with_help("lower the learning rate (`--lr`), or check the scale of the inputs")
    }
}

/// The last step a run may reach: steps are passed to generated code as numbers that must stay
/// exact (2^53), and a checkpoint claiming more is refused.
pub const MAX_STEP: u64 = 1 << 53;

/// A point in training: steps done, epochs done, and steps done of the next epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    step: u64,
    epoch: u64,
    epoch_step: u64,
}

/// "the first non-finite value came from `exp` at models/x.net line 13".
fn describe_node(graph: &Graph, node: NodeId, source: &SourceFile) -> String {
    let n = graph.node(node);
    let op = n.op.to_string();
    let op = op.split(['(', '[', ' ']).next().unwrap_or("");
    match n.origin.line {
        0 => format!("the first non-finite value came from `{op}` ({node})"),
        line => format!(
            "the first non-finite value came from `{op}` ({node}) at {} line {line}",
            source.name
        ),
    }
}

/// A per-step seed for dropout masks: depends only on the run's seed and the step number.
fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ step
}

/// The features and targets of some rows, as batch tensors shaped as the graph's `inputs`
/// declare them, written over `batch` (whose memory is reused once it holds two tensors), the
/// features gathered by `pool`.
pub fn batch_tensors(
    inputs: &[Decl],
    data: &Dataset,
    rows: &[usize],
    batch: &mut Vec<Tensor<f32>>,
    pool: &Pool,
) {
    // An objective (no inputs) reads nothing from its one empty example.
    let [features, targets] = inputs else {
        batch.clear();
        return;
    };
    batch.resize_with(2, || Tensor::scalar(0.0));
    let width = data.feature_size();
    gather(
        features,
        (width, rows),
        &mut batch[0],
        Some(pool),
        &|r, row| data.features.copy_to(r * width, row),
    );
    batch_targets_into(targets, data, rows, &mut batch[1]);
}

fn batch_targets(graph: &Graph, data: &Dataset, rows: &[usize]) -> Tensor<f32> {
    let mut targets = Tensor::scalar(0.0);
    batch_targets_into(&graph.inputs[1], data, rows, &mut targets);
    targets
}

fn batch_targets_into(input: &Decl, data: &Dataset, rows: &[usize], out: &mut Tensor<f32>) {
    let width = data.target_size();
    // Targets are a float or a few per example: one thread copies them.
    gather(input, (width, rows), out, None, &|r, row| {
        row.copy_from_slice(&data.targets[r * width..(r + 1) * width])
    });
}

/// The given rows (each `width` values, written by `copy_row`) into `out`, shaped as `input`
/// declares. A large batch is copied in pieces by the pool's workers, when given: an epoch's
/// copies are a pass over the whole data set.
fn gather(
    input: &Decl,
    (width, rows): (usize, &[usize]),
    out: &mut Tensor<f32>,
    pool: Option<&Pool>,
    copy_row: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    out.dims = crate::tensor::dims(&input.shape, rows.len());
    out.data.resize(rows.len() * width, 0.0);
    let width = width.max(1);
    let per_piece = GATHER_PIECE.div_ceil(width);
    let pieces: Vec<Mutex<(&[usize], &mut [f32])>> = rows
        .chunks(per_piece)
        .zip(out.data.chunks_mut(per_piece * width))
        .map(Mutex::new)
        .collect();
    let copy = |piece: usize, _| {
        let (rows, out) = &mut *pieces[piece].lock().expect("each piece is taken once");
        for (&r, row) in rows.iter().zip(out.chunks_exact_mut(width)) {
            copy_row(r, row);
        }
    };
    match pool {
        Some(pool) => pool.run(pieces.len(), &copy),
        None => (0..pieces.len()).for_each(|piece| copy(piece, 0)),
    }
}

/// Floats a piece of a gathered batch holds at least (as a map's pieces, `PIECE_FLOATS`).
const GATHER_PIECE: usize = 1 << 14;

/// Checks that a data set's examples fit the model's input and label (E0507), pointing at the
/// declaration in the model file.
pub fn fits(model: &Model, data: &Dataset) -> Result<(), Diagnostic> {
    if data.len == 0 {
        return Err(Diagnostic::plain(
            Code::E0507,
            format!("{} has no examples", data.origin),
        ));
    }
    let input = match (model.inputs.as_slice(), data.is_nothing()) {
        ([], true) => return Ok(()),
        ([], false) => {
            return Err(Diagnostic::plain(
                Code::E0507,
                format!(
                    "`{}` has no input: it is an objective over its parameters, and takes no data",
                    model.name
                ),
            )
            .with_help("run it with `--data none`"))
        }
        ([input], true) => {
            return Err(Diagnostic::new(
                Code::E0507,
                format!("`--data none` has no examples for `{}`", input.name),
                input.span,
                "this input needs data",
            )
            .with_help(
                "give a data source: fmnist, linear, beans, xor, separable, or a .csv file",
            ))
        }
        ([input], false) => input,
        _ => {
            return Err(Diagnostic::plain(
                Code::E0507,
                "data sources feed models with exactly one input",
            ))
        }
    };
    let declared: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    if declared != data.feature_dims {
        let flat: usize = data.feature_dims.iter().product();
        let mut d = crate::diagnostics::Diagnostic::new(
            Code::E0507,
            format!(
                "the data's examples have shape {:?}, but `{}` is declared {:?}",
                data.feature_dims, input.name, declared
            ),
            input.span,
            format!("declared {declared:?}"),
        );
        if declared.iter().product::<usize>() == flat {
            d = d.with_help(format!(
                "declare `input {}: {:?}` and flatten it in the model",
                input.name, data.feature_dims
            ));
        }
        return Err(d);
    }
    let Some(label) = &model.label else {
        return Ok(());
    };
    match &label.kind {
        LabelKind::Class(classes) => {
            if !data.target_dims.is_empty() && data.target_dims != [1] {
                return Err(Diagnostic::new(
                    Code::E0507,
                    "the data's targets are not class indices",
                    label.span,
                    "a class label",
                ));
            }
            if let Some((row, &bad)) = data
                .targets
                .iter()
                .enumerate()
                .find(|&(_, &t)| t < 0.0 || t.fract() != 0.0 || t as u64 >= *classes)
            {
                return Err(Diagnostic::new(
                    Code::E0507,
                    format!(
                        "{} has label {bad}, which is not a class in 0..{classes}",
                        data.describe(row)
                    ),
                    label.span,
                    format!("{classes} classes declared here"),
                ));
            }
        }
        LabelKind::Target(dims) => {
            let declared: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let found = if data.target_dims.is_empty() {
                vec![]
            } else {
                data.target_dims.clone()
            };
            if declared != found && !(found.is_empty() && declared == [1]) {
                return Err(Diagnostic::new(
                    Code::E0507,
                    format!("the data's targets have shape {found:?}, but `{}` is declared {declared:?}", label.name),
                    label.span,
                    format!("declared {declared:?}"),
                ));
            }
        }
    }
    Ok(())
}

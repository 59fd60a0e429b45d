//! Data-parallel training: P processes each run the gradient half of the step
//! (`Step::gradients`) on their share of every batch, sum what it gives in rank order through
//! a `Group`, and run the update half (`Step::update`) on the sum, so that every process
//! applies the same update to the same weights. The session's training loop calls
//! `Parallel::step` where one process runs the whole step; everything else — shuffling,
//! checkpoints, reports — is the single process's code.
//!
//! Guarantees: a process's share of a batch is fixed by its rank (`share`); every sum over
//! processes is added in rank order, so P processes give the same bits for the same P every
//! time; the loss, running statistics and the stop flag are summed with the gradients, so every
//! process takes the same decisions (divergence, interrupts) at the same step.

use super::{Engine, Graphs};
use crate::diagnostics::{Code, Diagnostic};
use crate::step::Step;
use crate::tensor::{Bindings, Tensor};
use std::ops::Range;
use std::time::{Duration, Instant};

/// The processes of a data-parallel run, as the runtime sees them. The MPI implementation is
/// `crate::distributed` (cargo feature `mpi`). Each call is a collective every process makes
/// in the same order; one that does not complete in time ends every process with E0516 (the
/// implementation reports it and aborts the run), so no caller goes on out of step.
pub trait Group {
    /// This process's place, from 0.
    fn rank(&self) -> usize;
    /// How many processes take part.
    fn size(&self) -> usize;
    /// Σ over processes of each one's `local`, added in rank order; every process gets the
    /// same `sum` (of `local`'s length, which every process must share).
    fn sum(&mut self, local: &[f32], sum: &mut [f32]);
    /// The same for f64 sums (the metrics' tallies), in place.
    fn sum_f64(&mut self, values: &mut [f64]);
    /// Every process's `value`, in rank order.
    fn gather(&mut self, value: u64) -> Vec<u64>;
    /// Bytes this process has sent so far.
    fn bytes_sent(&self) -> u64;
}

/// The rows of `rows` that process `rank` of `size` takes: consecutive, the first
/// `rows % size` processes one more than the rest.
pub fn share(rows: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (rows / size, rows % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Where time goes in a data-parallel step, summed over the steps taken.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub steps: u64,
    /// Running the gradient and update halves.
    pub compute: Duration,
    /// Packing, summing across processes and unpacking.
    pub communicate: Duration,
    /// Bytes this process sent.
    pub bytes: u64,
}

/// A session's data-parallel state: the group, both halves of the step, and the buffers a step
/// reuses.
pub struct Parallel {
    pub group: Box<dyn Group>,
    pub gradients: Step,
    pub update: Step,
    /// The update half compiled (the gradient half takes the engine's training slot); `None`
    /// runs it on the interpreter.
    pub(super) update_code: Option<Box<crate::codegen::Compiled>>,
    /// Where each of the whole step's state updates comes from, in its order.
    states: Vec<StateFrom>,
    /// The length of what is summed.
    length: usize,
    /// This process's part: [loss, stop, gradients…, running statistics…], weighted by its
    /// share of the batch; and the sum of every process's.
    local: Vec<f32>,
    summed: Vec<f32>,
    /// The summed gradients, the update half's inputs.
    summed_gradients: Vec<Tensor<f32>>,
    half: Vec<Tensor<f32>>,
    updates: Vec<Tensor<f32>>,
    pub timing: Timing,
}

/// The source of a state's new value in a data-parallel step.
#[derive(Clone, Copy, Debug)]
enum StateFrom {
    /// The model's own (running statistics): summed with the gradients, at this offset.
    Summed { start: usize, len: usize },
    /// The optimizer's: the update half's result of this index.
    Update(usize),
}

/// Where the loss and the stop flag sit in the summed vector; the gradients follow.
const LOSS: usize = 0;
const STOP: usize = 1;
const HEADER: usize = 2;

impl Parallel {
    /// Both halves of the session's step for `group`. Their parameters and states are the
    /// whole step's, in its order (checked), so checkpoints move between one process and many.
    pub fn new(group: Box<dyn Group>, whole: &Step, gradients: Step, update: Step) -> Parallel {
        let order = |updates: &[(usize, crate::ir::NodeId)]| -> Vec<usize> {
            updates.iter().map(|&(i, _)| i).collect()
        };
        assert!(
            same_decls(&update.graph.states, &whole.graph.states)
                && same_decls(&update.graph.params, &whole.graph.params)
                && same_decls(&gradients.graph.params, &whole.graph.params)
                && order(&update.graph.param_updates) == order(&whole.graph.param_updates)
                && order(&gradients.graph.param_updates) == order(&whole.graph.param_updates),
            "the halves of a step declare and update the whole step's tensors in its order"
        );
        let summed_gradients: Vec<_> = (update.graph.inputs.iter())
            .map(|d| Tensor::full(&crate::tensor::dims(&d.shape, 1), 0.0))
            .collect();
        let mut start = HEADER + summed_gradients.iter().map(|t| t.data.len()).sum::<usize>();
        let mut statistics = Vec::new();
        for &(state, _) in &gradients.graph.state_updates {
            let len = crate::tensor::dims(&whole.graph.states[state].shape, 1)
                .iter()
                .product();
            statistics.push((state, StateFrom::Summed { start, len }));
            start += len;
        }
        let states = (whole.graph.state_updates.iter())
            .map(
                |&(state, _)| match statistics.iter().find(|(s, _)| *s == state) {
                    Some(&(_, from)) => from,
                    None => StateFrom::Update(
                        (update.graph.state_updates.iter())
                            .position(|&(s, _)| s == state)
                            .expect("every state is updated by one half"),
                    ),
                },
            )
            .collect();
        Parallel {
            group,
            gradients,
            update,
            update_code: None,
            states,
            length: start,
            local: Vec::new(),
            summed: Vec::new(),
            summed_gradients,
            half: Vec::new(),
            updates: Vec::new(),
            timing: Timing::default(),
        }
    }

    /// This process's rows of a batch.
    pub fn share<'r>(&self, rows: &'r [usize]) -> &'r [usize] {
        &rows[share(rows.len(), self.group.rank(), self.group.size())]
    }

    /// One data-parallel step on this process's share of a batch of `rows` rows (`bind`, whose
    /// batch may be empty), leaving in `values` what the whole step returns: the loss of the
    /// whole batch, this share's output, and every process's same new weights and states.
    /// Returns whether any process asked to stop (`interrupted` here).
    pub(super) fn step(
        &mut self,
        engine: &mut Engine,
        whole: &Step,
        bind: &Bindings<f32>,
        rows: usize,
        interrupted: bool,
        values: &mut Vec<Tensor<f32>>,
    ) -> bool {
        let started = Instant::now();
        let first = self.gradients.first_update();
        self.local.clear();
        self.local.extend([0.0, f32::from(u8::from(interrupted))]);
        if bind.batch > 0 {
            // The halves' losses are means over each share: weighted by the shares, their sum
            // is the whole batch's mean, and so are the gradients.
            let weight = bind.batch as f32 / rows as f32;
            engine.run(&self.gradients, bind, Graphs::Train, &mut self.half);
            self.local[LOSS] = weight * self.half[0].item();
            for value in &self.half[first..] {
                self.local.extend(value.data.iter().map(|&x| weight * x));
            }
        }
        // A share of no rows adds nothing (the last batch of an epoch may have fewer rows than
        // there are processes).
        self.local.resize(self.length, 0.0);
        let computed = started.elapsed();
        let sent = self.group.bytes_sent();
        self.summed.resize(self.length, 0.0);
        self.group.sum(&self.local, &mut self.summed);
        self.timing.bytes += self.group.bytes_sent() - sent;
        let mut at = HEADER;
        for tensor in &mut self.summed_gradients {
            let len = tensor.data.len();
            tensor.data.copy_from_slice(&self.summed[at..at + len]);
            at += len;
        }
        let communicated = started.elapsed();
        let update_bind = Bindings {
            batch: 1,
            inputs: &self.summed_gradients,
            params: bind.params,
            states: bind.states,
            hypers: bind.hypers,
            seed: bind.seed,
        };
        super::run_step(
            self.update_code.as_deref_mut(),
            &self.update,
            &update_bind,
            &mut self.updates,
        );
        let updated = started.elapsed();
        // The whole step's layout: loss, output, the parameters' updates, the states' updates.
        values.resize_with(whole.results.len(), || Tensor::scalar(0.0));
        values[0] = Tensor::scalar(self.summed[LOSS]);
        if let (Some(o), true) = (whole.output(), bind.batch > 0) {
            std::mem::swap(&mut values[o], &mut self.half[o]);
        }
        let params = whole.graph.param_updates.len();
        let (param_values, state_values) = values[whole.first_update()..].split_at_mut(params);
        for (value, update) in param_values.iter_mut().zip(&mut self.updates) {
            std::mem::swap(value, update);
        }
        for ((value, from), (state, _)) in (state_values.iter_mut())
            .zip(&self.states)
            .zip(&whole.graph.state_updates)
        {
            match *from {
                StateFrom::Summed { start, len } => {
                    let dims = crate::tensor::dims(&whole.graph.states[*state].shape, 1);
                    value.dims = dims;
                    value.data.clear();
                    value
                        .data
                        .extend_from_slice(&self.summed[start..start + len]);
                }
                StateFrom::Update(k) => std::mem::swap(value, &mut self.updates[params + k]),
            }
        }
        self.timing.steps += 1;
        self.timing.compute += computed + (updated - communicated);
        self.timing.communicate += communicated - computed;
        self.summed[STOP] > 0.0
    }

    /// Checks that every process has the same `value` of `what`: E0515 naming the first that
    /// differs from process 0.
    pub fn agree(group: &mut dyn Group, value: u64, what: &str) -> Result<(), Diagnostic> {
        let all = group.gather(value);
        match all.iter().position(|&v| v != all[0]) {
            None => Ok(()),
            Some(rank) => Err(Diagnostic::plain(
                Code::E0515,
                format!(
                    "process {rank} of {} has another {what} than process 0",
                    group.size()
                ),
            )
            .with_help("start every process with the same model file, command line and data")),
        }
    }
}

fn same_decls(a: &[crate::ir::Decl], b: &[crate::ir::Decl]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.name == b.name && a.shape == b.shape)
}

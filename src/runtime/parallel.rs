//! Data-parallel training: P processes each run the gradient half of the step
//! (`Step::gradients`) on their share of every batch, sum what it gives in rank order through
//! a `Group`, and run the update half (`Step::update`) on the sum, so that every process
//! applies the same update to the same weights. The session's training loop calls
//! `Parallel::step` where one process runs the whole step; everything else — shuffling,
//! checkpoints, reports — is the single process's code.
//!
//! The sums overlap the backward pass, as PyTorch's DDP does: the gradient half's results are
//! packed into buckets in the order its kernels finish them (`Compiled::run_reporting`), and a
//! full bucket goes to a communication thread, which sums it while later kernels run.
//!
//! Guarantees: a process's share of a batch is fixed by its rank (`share`); every element is
//! summed over processes in rank order, so P processes give the same bits for the same P every
//! time, however the buckets fall; the loss, running statistics and the stop flag are summed
//! with the gradients, so every process takes the same decisions (divergence, interrupts) at
//! the same step.

use super::{Engine, Graphs};
use crate::diagnostics::{Code, Diagnostic};
use crate::step::Step;
use crate::tensor::{Bindings, Tensor};
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// The processes of a data-parallel run, as the runtime sees them. The MPI implementation is
/// `crate::distributed` (cargo feature `mpi`). Each call is a collective every process makes
/// in the same order; one that does not complete in time ends every process with E0516 (the
/// implementation reports it and aborts the run), so no caller goes on out of step. A group
/// is used by one thread at a time.
pub trait Group: Send {
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

/// A checksum of some bytes, the same on every host and build: what processes compare to
/// agree that they run the same thing.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);
    let mut digest = CRC.digest();
    for part in parts {
        // Lengths first, so that ["ab", "c"] and ["a", "bc"] differ.
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    digest.finalize()
}

/// A data set's fingerprint: its sizes, features and targets.
pub fn data_fingerprint(data: &crate::data::Dataset) -> u64 {
    let dims: Vec<u8> = [data.len]
        .iter()
        .chain(&data.feature_dims)
        .chain(&data.target_dims)
        .flat_map(|&d| (d as u64).to_le_bytes())
        .collect();
    // Pixels are checksummed where they lie; only floats need their bytes laid out.
    let features: std::borrow::Cow<[u8]> = match &data.features {
        crate::data::Features::Pixels(bytes) => bytes.into(),
        crate::data::Features::F32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let targets: Vec<u8> = data.targets.iter().flat_map(|v| v.to_le_bytes()).collect();
    fingerprint([&dims[..], &features[..], &targets[..]])
}

/// Where time goes in data-parallel steps, summed over the steps taken.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub steps: u64,
    /// Running the gradient and update halves.
    pub compute: Duration,
    /// The communication thread summing buckets, overlapped with computing or not.
    pub communicate: Duration,
    /// Waiting for sums after the gradient half: communication not hidden behind it.
    pub waiting: Duration,
    /// Bytes this process sent.
    pub bytes: u64,
    /// Buckets summed per step.
    pub buckets: usize,
}

/// The most a bucket holds before it is sent, in bytes: `NETC_BUCKET_KIB`, else 1 MiB (the
/// size of DDP's first bucket: on a network, small enough that the first sums start early in
/// the backward pass); 0 puts everything in one bucket, summed after the whole gradient half.
fn bucket_bytes() -> usize {
    std::env::var("NETC_BUCKET_KIB")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(1 << 20, |kib| match kib {
            0 => usize::MAX,
            kib => kib.saturating_mul(1024),
        })
}

/// Part of what one process adds to the sum, and the sum once it comes back.
struct Bucket {
    local: Vec<f32>,
    summed: Vec<f32>,
}

/// What the communication thread is asked to do.
enum Job {
    Sum(usize, Bucket),
    SumF64(Vec<f64>),
    Gather(u64),
}

/// What it answers: the job with its time and bytes sent.
enum Done {
    Sum(usize, Bucket, Duration, u64),
    SumF64(Vec<f64>),
    Gather(Vec<u64>),
}

/// The thread that makes every collective call of a distributed session, in the order asked.
struct Comm {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Comm {
    fn start(mut group: Box<dyn Group>) -> Comm {
        let (jobs, inbox) = channel::<Job>();
        let (outbox, done) = channel();
        let thread = std::thread::Builder::new()
            .name("netc-comm".into())
            .spawn(move || {
                for job in inbox {
                    let answer = match job {
                        Job::Sum(index, mut bucket) => {
                            let (started, sent) = (Instant::now(), group.bytes_sent());
                            group.sum(&bucket.local, &mut bucket.summed);
                            let bytes = group.bytes_sent() - sent;
                            Done::Sum(index, bucket, started.elapsed(), bytes)
                        }
                        Job::SumF64(mut values) => {
                            group.sum_f64(&mut values);
                            Done::SumF64(values)
                        }
                        Job::Gather(value) => Done::Gather(group.gather(value)),
                    };
                    if outbox.send(answer).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread can be started");
        Comm {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        }
    }

    fn send(&self, job: Job) {
        send(self.outbox(), job);
    }

    /// Where jobs go: a queue any thread may send on (generated code reports finished
    /// gradients from whichever worker runs the kernel that finished them).
    fn outbox(&self) -> &Sender<Job> {
        self.jobs.as_ref().expect("open until dropped")
    }

    fn receive(&self) -> Done {
        self.done.recv().expect("the communication thread answers")
    }
}

/// Sends `job` to the communication thread.
fn send(jobs: &Sender<Job>, job: Job) {
    jobs.send(job).expect("the communication thread runs");
}

impl Drop for Comm {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which must be done before MPI is finalized.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where one of the gradient half's results goes: its bucket and offset there.
#[derive(Clone, Copy, Debug)]
struct Place {
    bucket: usize,
    start: usize,
}

/// A session's data-parallel state: the processes, both halves of the step, the buckets and
/// the buffers a step reuses.
pub struct Parallel {
    rank: usize,
    size: usize,
    comm: Comm,
    pub gradients: Step,
    pub update: Step,
    /// The update half compiled (the gradient half takes the engine's training slot); `None`
    /// runs it on the interpreter.
    pub(super) update_code: Option<Box<crate::codegen::Compiled>>,
    /// Where each of the whole step's state updates comes from, in its order.
    states: Vec<StateFrom>,
    /// Where each result of the gradient half is summed (`None`: the output, not summed),
    /// planned at the first step from the order the engine finishes them in.
    places: Vec<Option<Place>>,
    /// Each bucket while it is here (`None` while the communication thread has it), and how
    /// many of its results are still to come this step.
    buckets: Vec<Option<Bucket>>,
    pending: Vec<usize>,
    /// The length of each result of the gradient half (the output's for one example).
    lengths: Vec<usize>,
    /// The summed gradients, the update half's inputs.
    summed_gradients: Vec<Tensor<f32>>,
    half: Vec<Tensor<f32>>,
    updates: Vec<Tensor<f32>>,
    pub timing: Timing,
}

/// The source of a state's new value in a data-parallel step.
#[derive(Clone, Copy, Debug)]
enum StateFrom {
    /// The model's own (running statistics): the gradient half's result of this index, summed.
    Summed(usize),
    /// The optimizer's: the update half's result of this index.
    Update(usize),
}

/// The stop flag travels after the loss, in the loss's bucket.
const STOP: usize = 1;

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
        let statistics = gradients.first_update() + gradients.graph.param_updates.len();
        let states = (whole.graph.state_updates.iter())
            .map(|&(state, _)| {
                let model = gradients.graph.state_updates.iter();
                match model.clone().position(|&(s, _)| s == state) {
                    Some(k) => StateFrom::Summed(statistics + k),
                    None => StateFrom::Update(
                        (update.graph.state_updates.iter())
                            .position(|&(s, _)| s == state)
                            .expect("every state is updated by one half"),
                    ),
                }
            })
            .collect();
        let lengths = (gradients.results.iter())
            .map(|&id| {
                let dims = crate::tensor::dims(gradients.graph.shape(id), 1);
                dims.iter().product()
            })
            .collect();
        Parallel {
            rank: group.rank(),
            size: group.size(),
            comm: Comm::start(group),
            gradients,
            update,
            update_code: None,
            states,
            places: Vec::new(),
            buckets: Vec::new(),
            pending: Vec::new(),
            lengths,
            summed_gradients,
            half: Vec::new(),
            updates: Vec::new(),
            timing: Timing::default(),
        }
    }

    /// This process's place among the processes, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many processes train.
    pub fn size(&self) -> usize {
        self.size
    }

    /// This process's rows of a batch.
    pub fn share<'r>(&self, rows: &'r [usize]) -> &'r [usize] {
        &rows[share(rows.len(), self.rank, self.size)]
    }

    /// Every process's `values` summed in rank order, in place.
    pub fn sum_f64(&mut self, values: &mut Vec<f64>) {
        self.comm.send(Job::SumF64(std::mem::take(values)));
        match self.comm.receive() {
            Done::SumF64(summed) => *values = summed,
            _ => unreachable!("answers come in the order asked"),
        }
    }

    /// Every process's `value`, in rank order.
    fn gather(&mut self, value: u64) -> Vec<u64> {
        self.comm.send(Job::Gather(value));
        match self.comm.receive() {
            Done::Gather(all) => all,
            _ => unreachable!("answers come in the order asked"),
        }
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

    /// Plans the buckets: the summed results in the order they are finished, a new bucket
    /// whenever the current one would pass `bucket_bytes`. The loss (result 0) carries the
    /// stop flag after it. Every process must plan the same buckets: when their orders differ
    /// (code compiled for other numbers of workers may finish results in another order), all
    /// take the results in index order.
    fn plan(&mut self, finishing: &[usize]) {
        let bytes: Vec<u8> = finishing
            .iter()
            .flat_map(|&i| (i as u64).to_le_bytes())
            .collect();
        let orders = self.gather(fingerprint([&bytes[..]]));
        let index_order: Vec<usize>;
        let finishing = if orders.iter().all(|&o| o == orders[0]) {
            finishing
        } else {
            index_order = (0..finishing.len()).collect();
            &index_order
        };
        let output = self.gradients.output();
        let length = |i: usize| self.lengths[i] + usize::from(i == 0);
        let capacity = bucket_bytes() / 4;
        self.places = vec![None; self.gradients.results.len()];
        let mut sizes: Vec<usize> = Vec::new();
        for &i in finishing.iter().filter(|&&i| Some(i) != output) {
            let len = length(i);
            if sizes.last().is_none_or(|&size| size + len > capacity) {
                sizes.push(0);
            }
            let bucket = sizes.len() - 1;
            self.places[i] = Some(Place {
                bucket,
                start: sizes[bucket],
            });
            sizes[bucket] += len;
        }
        self.buckets = (sizes.iter())
            .map(|&n| {
                Some(Bucket {
                    local: vec![0.0; n],
                    summed: vec![0.0; n],
                })
            })
            .collect();
        self.pending = vec![0; sizes.len()];
        self.timing.buckets = sizes.len();
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
        if self.places.is_empty() {
            let finishing = match engine {
                Engine::Jit { train, .. } => train.finishing_order().to_vec(),
                Engine::Interp => (0..self.gradients.results.len()).collect(),
            };
            self.plan(&finishing);
        }
        let started = Instant::now();
        self.pending.fill(0);
        for place in self.places.iter().flatten() {
            self.pending[place.bucket] += 1;
        }
        // The halves' losses are means over each share: weighted by the shares, their sum is
        // the whole batch's mean, and so are the gradients.
        let weight = bind.batch as f32 / rows as f32;
        let (outbox, places, buckets, pending) = (
            self.comm.outbox(),
            &self.places,
            &mut self.buckets,
            &mut self.pending,
        );
        let mut add = |i: usize, values: &[f32]| {
            let Some(place) = places[i] else {
                return;
            };
            let bucket = buckets[place.bucket].as_mut().expect("here until full");
            let into = &mut bucket.local[place.start..place.start + values.len()];
            for (into, &x) in into.iter_mut().zip(values) {
                *into = weight * x;
            }
            if i == 0 {
                bucket.local[place.start + STOP] = f32::from(u8::from(interrupted));
            }
            pending[place.bucket] -= 1;
            if pending[place.bucket] == 0 {
                let bucket = buckets[place.bucket].take().expect("sent once");
                send(outbox, Job::Sum(place.bucket, bucket));
            }
        };
        // The gradient half reads the model's own states, which come first. Dropout masks
        // depend on (seed, step, element): each process draws its own, so that no two rows of
        // a batch share a mask (process 0 draws a single process's).
        let bind_half = Bindings {
            states: &bind.states[..self.gradients.graph.states.len()],
            seed: bind.seed ^ (self.rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..*bind
        };
        if bind.batch > 0 {
            match engine {
                Engine::Jit { train, .. } => train
                    .run_reporting(&bind_half, &mut self.half, &mut add)
                    .expect("the session binds what it compiled"),
                Engine::Interp => {
                    engine.run(&self.gradients, &bind_half, Graphs::Train, &mut self.half);
                    for (i, value) in self.half.iter().enumerate() {
                        add(i, &value.data);
                    }
                }
            }
        } else {
            // A share of no rows adds nothing (the last batch of an epoch may have fewer rows
            // than there are processes).
            for (i, &len) in self.lengths.iter().enumerate() {
                add(i, &vec![0.0; len]);
            }
        }
        let computed = started.elapsed();
        // Every bucket comes back, in the order sent.
        let mut summed_buckets = 0;
        while summed_buckets < self.buckets.len() {
            match self.comm.receive() {
                Done::Sum(index, bucket, took, bytes) => {
                    self.buckets[index] = Some(bucket);
                    self.timing.communicate += took;
                    self.timing.bytes += bytes;
                    summed_buckets += 1;
                }
                _ => unreachable!("only buckets are summed during a step"),
            }
        }
        let waited = started.elapsed();
        let summed = |place: Option<Place>, len: usize| -> &[f32] {
            let place = place.expect("summed results have a place");
            let bucket = self.buckets[place.bucket].as_ref().expect("back");
            &bucket.summed[place.start..place.start + len]
        };
        let first = self.gradients.first_update();
        for (k, tensor) in self.summed_gradients.iter_mut().enumerate() {
            let len = tensor.data.len();
            tensor
                .data
                .copy_from_slice(summed(self.places[first + k], len));
        }
        let loss = summed(self.places[0], 2);
        let (loss, stop) = (loss[0], loss[STOP] > 0.0);
        let update_bind = Bindings {
            batch: 1,
            inputs: &self.summed_gradients,
            params: bind.params,
            states: bind.states,
            hypers: bind.hypers,
            seed: bind.seed,
        };
        let updating = Instant::now();
        super::run_step(
            self.update_code.as_deref_mut(),
            &self.update,
            &update_bind,
            &mut self.updates,
        );
        let updated = updating.elapsed();
        // The whole step's layout: loss, output, the parameters' updates, the states' updates.
        values.resize_with(whole.results.len(), || Tensor::scalar(0.0));
        values[0] = Tensor::scalar(loss);
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
                StateFrom::Summed(i) => {
                    let dims = crate::tensor::dims(&whole.graph.states[*state].shape, 1);
                    let len = dims.iter().product();
                    value.dims = dims;
                    value.data.clear();
                    value.data.extend_from_slice(summed(self.places[i], len));
                }
                StateFrom::Update(k) => std::mem::swap(value, &mut self.updates[params + k]),
            }
        }
        self.timing.steps += 1;
        self.timing.compute += computed + updated;
        self.timing.waiting += waited - computed;
        stop
    }
}

fn same_decls(a: &[crate::ir::Decl], b: &[crate::ir::Decl]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.name == b.name && a.shape == b.shape)
}

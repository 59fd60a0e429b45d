//! The worker pool: `threads` workers, of which the thread that calls `Pool::run` is worker 0
//! and the others are helper threads, started when the pool first runs a job of more than one
//! piece. A job is a number of pieces that its caller fixes (from a kernel's shape, never from
//! the number of workers). Each worker owns a block of consecutive pieces, which it runs from
//! the front; a worker whose block is done takes pieces from the back of another's. Unloaded,
//! every worker runs its own block, as a fixed split would, and finds the rows it wrote in the
//! last kernel still in its cache; when the operating system deschedules a worker, the others
//! take its pieces, so it holds up the job by at most the piece it is running. What a piece
//! computes depends only on its index, and every sum over pieces is added afterwards in piece
//! order (see `kernels::Sums`), so results are the same bits whatever the number of workers and
//! whichever took which piece.
//!
//! Waiting: a step hands the pool a job every few tens of microseconds, and waking a parked
//! thread through the operating system costs several microseconds, so a worker that finds no
//! piece spins for a short while (`SPIN`) and then parks; the caller waits for the pieces still
//! running the same way. A parked worker costs nothing and leaves its core to any other thread
//! that wants it; the spin is short enough that a core another program keeps busy loses
//! nothing measurable to it (see `SPIN`).
#![allow(unsafe_code)]

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// The most workers a pool has: far more than any machine's cores that a step's pieces (at most
/// `kernels::MAX_PIECES` per kernel) could keep busy.
pub const MAX_THREADS: usize = 256;

/// The most pieces in one job (pieces are counted in 16 bits of a claim).
pub const MAX_JOB_PIECES: usize = u16::MAX as usize;

/// How long a worker with nothing to do spins before it parks (and the caller before it parks
/// to wait for the last pieces), unless `NETC_SPIN_US` says otherwise. Measured with the MLP
/// on this 2-core machine (best epoch of three or four runs, alone / with one core kept busy
/// by another process): no spin 0.485 / 0.703 s, 20 µs 0.425 / 0.690 s, 50 µs 0.428 / 0.674 s,
/// 200 µs 0.407 / 0.869 s. Spinning pays alone, and costs under load once it outlasts the gaps
/// between a step's kernels. Spinning that yields the core every few iterations, and parks as
/// soon as a yield lets another thread run, measured worse both ways (0.560 / 1.005 s against
/// 0.493 / 0.826 s in one run): a yield is slow on this virtual machine.
const SPIN: Duration = Duration::from_micros(50);

/// Workers of pools made without a count (0: not set).
static DEFAULT_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The workers a pool has when nothing says otherwise: what `set_default_threads` set (the
/// command line's `--threads` or `NETC_THREADS`), else the cores this process may use (its
/// affinity mask and cgroup quota, as `available_parallelism` reads them).
pub fn default_threads() -> usize {
    match DEFAULT_THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Sets `default_threads`.
pub fn set_default_threads(threads: usize) {
    DEFAULT_THREADS.store(threads.clamp(1, MAX_THREADS), Ordering::Relaxed);
}

/// Which worker runs which piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Each worker runs its own block of pieces, then takes pieces from the back of others'
    /// blocks: what training uses.
    Dynamic,
    /// Worker `w` runs pieces `w`, `w + threads`, `w + 2·threads`, …: every worker runs a
    /// piece of every job that has as many pieces as workers. For tests, which must know that
    /// every worker really ran; it waits for descheduled workers, so it is slower.
    Strided,
}

/// A pool of workers that runs jobs of pieces (see the module header).
pub struct Pool {
    shared: Arc<Shared>,
    /// The helper threads, started by the first job that can use them.
    helpers: OnceLock<Vec<JoinHandle<()>>>,
    /// One job at a time; another caller waits its turn rather than run its job alone.
    busy: Mutex<()>,
}

/// What the workers share: the job being run, and how far it has got.
struct Shared {
    threads: usize,
    schedule: Schedule,
    spin: Duration,
    /// The generation of the latest job (0 before the first), on a line of its own: idle
    /// workers poll it.
    posted: Padded<AtomicU64>,
    /// The job: a pointer to the caller's `&dyn Fn(piece, worker)`. Written by the caller
    /// before it posts a job, read by a worker only after it claimed a piece of that job: the
    /// job cannot finish, and its caller cannot return, before that piece is done.
    job: AtomicUsize,
    /// Each worker's pieces not yet taken, as a range `front..back`: of piece indices for
    /// `Dynamic`, of `k` in `worker + k·threads` for `Strided`. A claim packs the job's
    /// generation (32 bits) with `front` and `back` (16 each), so that a worker looking at a
    /// claim of a finished job sees that it is finished.
    claims: Vec<Padded<AtomicU64>>,
    /// Pieces of the current job.
    pieces: AtomicUsize,
    /// Pieces of the current job that have finished.
    done: Padded<AtomicUsize>,
    /// Whether a piece of the current job panicked.
    panicked: AtomicBool,
    /// The caller, while it waits parked for the last pieces.
    caller: Mutex<Option<Thread>>,
    caller_parked: AtomicBool,
    /// Per helper (worker `w` at `w - 1`): parked, and its thread.
    sleeping: Vec<Padded<AtomicBool>>,
    threads_of: OnceLock<Vec<Thread>>,
    /// Pieces each worker has run, and the most pieces of one job, since the pool was made.
    pieces_run: Vec<Padded<AtomicU64>>,
    largest_job: AtomicUsize,
    exit: AtomicBool,
}

/// A value alone on its cache line, so that workers updating their own do not slow others.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// `n` default values, each on its own cache line.
fn padded<T: Default>(n: usize) -> Vec<Padded<T>> {
    (0..n).map(|_| Padded::default()).collect()
}

/// The job a worker runs its pieces of.
type Job<'a> = &'a (dyn Fn(usize, usize) + Sync);

impl Pool {
    /// A pool of `threads` workers (clamped to 1..=`MAX_THREADS`), taking pieces as they are
    /// free.
    pub fn new(threads: usize) -> Arc<Pool> {
        Pool::with_schedule(threads, Schedule::Dynamic)
    }

    /// A pool whose workers take pieces as `schedule` says.
    pub fn with_schedule(threads: usize, schedule: Schedule) -> Arc<Pool> {
        let threads = threads.clamp(1, MAX_THREADS);
        let spin = std::env::var("NETC_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(SPIN, Duration::from_micros);
        Arc::new(Pool {
            shared: Arc::new(Shared {
                threads,
                schedule,
                spin,
                posted: Padded::default(),
                job: AtomicUsize::new(0),
                claims: padded(threads),
                pieces: AtomicUsize::new(0),
                done: Padded::default(),
                panicked: AtomicBool::new(false),
                caller: Mutex::new(None),
                caller_parked: AtomicBool::new(false),
                sleeping: padded(threads - 1),
                threads_of: OnceLock::new(),
                pieces_run: padded(threads),
                largest_job: AtomicUsize::new(0),
                exit: AtomicBool::new(false),
            }),
            helpers: OnceLock::new(),
            busy: Mutex::new(()),
        })
    }

    /// The workers: the caller and its helpers.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// How many pieces each worker has run since the pool was made.
    pub fn pieces_run(&self) -> Vec<u64> {
        let run = &self.shared.pieces_run;
        run.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// The most pieces of one job the pool has run.
    pub fn largest_job(&self) -> usize {
        self.shared.largest_job.load(Ordering::Relaxed)
    }

    /// Runs `piece(index, worker)` for every index in `0..pieces`, on the pool's workers (this
    /// thread being worker 0), and returns once all have finished. A panic in a piece is raised
    /// again here, after every other piece has finished.
    pub fn run(&self, pieces: usize, piece: Job) {
        assert!(pieces <= MAX_JOB_PIECES, "{pieces} pieces in one job");
        let shared = &*self.shared;
        if pieces == 0 {
            return;
        }
        shared.largest_job.fetch_max(pieces, Ordering::Relaxed);
        if shared.threads == 1 || pieces == 1 {
            for index in 0..pieces {
                piece(index, 0);
            }
            shared.pieces_run[0].fetch_add(pieces as u64, Ordering::Relaxed);
            return;
        }
        // A panic raised here poisons nothing that matters: the job is over.
        let _held = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        self.start_helpers();
        let generation = shared.posted.load(Ordering::Relaxed) + 1;
        shared.done.store(0, Ordering::Relaxed);
        shared.panicked.store(false, Ordering::Relaxed);
        shared
            .job
            .store(&piece as *const Job as usize, Ordering::Relaxed);
        shared.pieces.store(pieces, Ordering::Relaxed);
        let blocks = shared.deal(pieces, generation);
        shared.posted.store(generation, Ordering::SeqCst);
        shared.wake_helpers(blocks);
        // The caller's pieces never unwind past this point, so that no helper is still
        // running the job when its closure is gone.
        shared.work(0, generation);
        shared.wait_until_done(pieces);
        if shared.panicked.load(Ordering::Relaxed) {
            panic!("a piece of a parallel job panicked");
        }
    }

    fn start_helpers(&self) {
        let shared = &self.shared;
        self.helpers.get_or_init(|| {
            let handles: Vec<JoinHandle<()>> = (1..shared.threads)
                .map(|worker| {
                    let shared = Arc::clone(shared);
                    std::thread::Builder::new()
                        .name(format!("netc-worker-{worker}"))
                        .spawn(move || shared.serve(worker))
                        .expect("a thread for a worker")
                })
                .collect();
            let threads = handles.iter().map(|h| h.thread().clone()).collect();
            shared.threads_of.set(threads).expect("helpers start once");
            handles
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.exit.store(true, Ordering::SeqCst);
        if let Some(handles) = self.helpers.take() {
            for handle in &handles {
                handle.thread().unpark();
            }
            for handle in handles {
                // A helper's panics are caught piece by piece: it ends only when told to.
                let _ = handle.join();
            }
        }
    }
}

/// A claim: generation (its low 32 bits: a worker never sleeps through 2^32 jobs), and the
/// range `front..back` not yet taken (see `Shared::claims`).
fn pack(generation: u64, front: usize, back: usize) -> u64 {
    (generation << 32) | ((front as u64) << 16) | back as u64
}

fn unpack(claim: u64) -> (u64, usize, usize) {
    (
        claim >> 32,
        ((claim >> 16) & 0xffff) as usize,
        (claim & 0xffff) as usize,
    )
}

/// Which end of a worker's range a claim takes from.
#[derive(Clone, Copy)]
enum End {
    /// The worker's own next piece.
    Front,
    /// Another worker's last piece.
    Back,
}

impl Shared {
    /// A helper's life: wait for a job, run pieces of it, again, until the pool is dropped.
    fn serve(&self, worker: usize) {
        let mut seen = 0;
        loop {
            let Some(generation) = self.next_job(worker, seen) else {
                return;
            };
            seen = generation;
            self.work(worker, generation);
        }
    }

    /// Waits for a job after `seen`: spins for `spin` (see `spin_until`), then parks. `None`
    /// once the pool is dropped.
    fn next_job(&self, worker: usize, seen: u64) -> Option<u64> {
        let news =
            || self.posted.load(Ordering::Acquire) != seen || self.exit.load(Ordering::Relaxed);
        spin_until(self.spin, news);
        loop {
            if self.exit.load(Ordering::Relaxed) {
                return None;
            }
            let posted = self.posted.load(Ordering::Acquire);
            if posted != seen {
                return Some(posted);
            }
            // Either the caller sees `sleeping` and wakes this worker, or this worker sees the
            // new job here.
            let sleeping = &self.sleeping[worker - 1];
            sleeping.store(true, Ordering::SeqCst);
            if self.posted.load(Ordering::SeqCst) == seen && !self.exit.load(Ordering::SeqCst) {
                std::thread::park();
            }
            sleeping.store(false, Ordering::SeqCst);
        }
    }

    /// Gives each worker its range of job `generation`'s pieces, and returns how many workers
    /// have any.
    fn deal(&self, pieces: usize, generation: u64) -> usize {
        let threads = self.threads;
        let per_worker = pieces.div_ceil(threads);
        for (worker, claim) in self.claims.iter().enumerate() {
            let (front, back) = match self.schedule {
                Schedule::Dynamic => {
                    let front = (worker * per_worker).min(pieces);
                    (front, (front + per_worker).min(pieces))
                }
                Schedule::Strided => (0, pieces.saturating_sub(worker).div_ceil(threads)),
            };
            claim.store(pack(generation, front, back), Ordering::Relaxed);
        }
        match self.schedule {
            Schedule::Dynamic => pieces.div_ceil(per_worker),
            Schedule::Strided => threads.min(pieces),
        }
    }

    /// Wakes the parked helpers among the first `workers`, whose ranges have pieces.
    fn wake_helpers(&self, workers: usize) {
        let threads = self.threads_of.get().expect("helpers started");
        let helpers = self.sleeping.iter().zip(threads);
        for (sleeping, thread) in helpers.take(workers.saturating_sub(1)) {
            if sleeping.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
    }

    /// Takes a piece of job `generation` from `owner`'s range, at `end`: its index, or `None`
    /// when the range is empty (or the job is another).
    fn claim(&self, owner: usize, end: End, generation: u64) -> Option<usize> {
        let claim = &self.claims[owner];
        loop {
            let current = claim.load(Ordering::Acquire);
            let (job, front, back) = unpack(current);
            if job != generation & 0xffff_ffff || front >= back {
                return None;
            }
            let (next, taken) = match end {
                End::Front => (pack(generation, front + 1, back), front),
                End::Back => (pack(generation, front, back - 1), back - 1),
            };
            if claim
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(match self.schedule {
                    Schedule::Dynamic => taken,
                    Schedule::Strided => owner + taken * self.threads,
                });
            }
        }
    }

    /// Runs pieces of job `generation` as `worker`: its own, then (for `Dynamic`) those left in
    /// others' ranges, until none is left.
    fn work(&self, worker: usize, generation: u64) {
        let others = (worker + 1..self.threads).chain(0..worker);
        let others = others.filter(|_| self.schedule == Schedule::Dynamic);
        let own = std::iter::from_fn(|| self.claim(worker, End::Front, generation));
        let stolen = others
            .flat_map(|owner| std::iter::from_fn(move || self.claim(owner, End::Back, generation)));
        for index in own.chain(stolen) {
            // SAFETY: this worker holds an unfinished piece of the job, so its caller is still
            // inside `Pool::run` and the job it stored is alive (see `Shared::job`).
            let job = unsafe { *(self.job.load(Ordering::Acquire) as *const Job) };
            if std::panic::catch_unwind(AssertUnwindSafe(|| job(index, worker))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            // Counted before the piece is reported done, so the count is complete when `run`
            // returns.
            self.pieces_run[worker].fetch_add(1, Ordering::Relaxed);
            let pieces = self.pieces.load(Ordering::Relaxed);
            if self.done.fetch_add(1, Ordering::SeqCst) + 1 == pieces
                && worker != 0
                && self.caller_parked.load(Ordering::SeqCst)
            {
                if let Some(caller) = &*self.caller.lock().unwrap_or_else(|e| e.into_inner()) {
                    caller.unpark();
                }
            }
        }
    }

    /// The caller's wait for the pieces other workers are still running: spins for `spin`,
    /// then parks until the last one wakes it.
    fn wait_until_done(&self, pieces: usize) {
        spin_until(self.spin, || self.done.load(Ordering::Acquire) >= pieces);
        while self.done.load(Ordering::Acquire) < pieces {
            *self.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
            self.caller_parked.store(true, Ordering::SeqCst);
            if self.done.load(Ordering::SeqCst) < pieces {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            self.caller_parked.store(false, Ordering::SeqCst);
        }
    }
}

/// Spins until `ready()` or for `limit`, whichever comes first.
fn spin_until(limit: Duration, ready: impl Fn() -> bool) {
    let started = Instant::now();
    let mut spins = 0u32;
    while !ready() {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) && started.elapsed() >= limit {
            return;
        }
        std::hint::spin_loop();
    }
}

// SAFETY: `job` holds the address of a `Job` that only the workers of a running job read (see
// `Shared::job`); everything else is atomics or behind locks.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A kernel's piece function: the entry point's arguments
/// `(pointers, arena, batch, hypers, seed, pool)`, then `first, end, piece, worker`.
pub type PieceFn = unsafe extern "C" fn(
    *const *const f32,
    *mut f32,
    i64,
    *const f32,
    i64,
    *const Pool,
    i64,
    i64,
    i64,
    i64,
);

/// Runs a kernel's `iterations` on `pool` in pieces of `per_piece` (the last one shorter), each
/// through `function`, and returns the number of pieces. Called by generated code.
pub extern "C" fn netc_parallel(
    pool: *const Pool,
    function: PieceFn,
    pointers: *const *const f32,
    arena: *mut f32,
    batch: i64,
    hypers: *const f32,
    seed: i64,
    iterations: i64,
    per_piece: i64,
) -> i64 {
    let per_piece = per_piece.max(1);
    let pieces = (iterations.max(0) + per_piece - 1) / per_piece;
    // Addresses as integers, so that the job can cross to the workers.
    let (pointers, arena, hypers) = (pointers as usize, arena as usize, hypers as usize);
    let address = pool as usize;
    // SAFETY: the entry point that calls this was given a live pool by `Compiled::run_into`.
    let pool = unsafe { &*pool };
    pool.run(pieces as usize, &|piece, worker| {
        let first = piece as i64 * per_piece;
        let end = (first + per_piece).min(iterations);
        // SAFETY: `function` was compiled from the piece signature for this plan; the entry
        // point checked every buffer's size, and each piece writes only its own part of the
        // output, its own sums and its worker's scratch.
        unsafe {
            function(
                pointers as *const *const f32,
                arena as *mut f32,
                batch,
                hypers as *const f32,
                seed,
                address as *const Pool,
                first,
                end,
                piece as i64,
                worker as i64,
            )
        }
    });
    pieces
}

#[cfg(test)]
mod tests {
    use super::{Pool, Schedule};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_piece_runs_once_on_any_number_of_workers() {
        for threads in [1, 2, 3, 8] {
            for schedule in [Schedule::Dynamic, Schedule::Strided] {
                let pool = Pool::with_schedule(threads, schedule);
                for pieces in [0, 1, 2, 5, 64, 1000] {
                    let runs: Vec<AtomicUsize> = (0..pieces).map(|_| AtomicUsize::new(0)).collect();
                    pool.run(pieces, &|i, _| {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
                }
                let run = pool.pieces_run();
                assert_eq!(run.iter().sum::<u64>(), 1072);
                if schedule == Schedule::Strided {
                    assert!(run.iter().all(|&n| n > 0), "{threads} workers: {run:?}");
                }
            }
        }
    }

    #[test]
    fn jobs_go_on_past_two_to_the_thirty_two() {
        let pool = Pool::new(2);
        pool.shared.posted.store((1 << 32) - 2, Ordering::Relaxed);
        for _ in 0..4 {
            let count = AtomicUsize::new(0);
            pool.run(8, &|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 8);
        }
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(3);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(10, &|i, _| assert!(i != 7, "in a worker"));
        }));
        assert!(caught.is_err());
        let count = AtomicUsize::new(0);
        pool.run(10, &|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }
}

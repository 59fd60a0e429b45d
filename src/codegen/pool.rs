//! The worker pool: `threads` workers, of which the thread that calls `Pool::chain` (or
//! `Pool::run`) is worker 0 and the others are helper threads, started by the pool's first
//! chain. What it runs is a chain (`Chain`): a serial part, a job of
//! pieces, the next serial part, and so on; a compiled step is one, each kernel cut into pieces
//! a job. A job is a number of pieces that the serial part before it fixes (from a kernel's
//! shape, never from the number of workers). Each worker owns a block of consecutive pieces,
//! which it runs from the front; a worker whose block is done takes pieces from the back of
//! another's; the worker that finishes a job's last piece runs the next serial part and posts
//! the next job. Unloaded, every worker runs its own block, as a fixed split would, and finds
//! the rows it wrote in the last kernel still in its cache; when the operating system
//! deschedules a worker, the others take its pieces and carry the chain on, so it holds up the
//! chain only by the piece it is in, if any (for as long as it waits for a core), whichever
//! worker it is (the caller included).
//! What a piece computes depends only on its index, and every sum over pieces is added
//! afterwards in piece order (see `kernels::Sums`), so results are the same bits whatever the
//! number of workers and whichever took which piece.
//!
//! Waiting: a step posts a job every few tens of microseconds, and waking a parked thread
//! through the operating system costs several microseconds, so a worker that finds no piece
//! spins for a short while (`SPIN`) and then parks, unless other threads want the cores
//! (`Preempted`): then a helper parks at once, leaving its core to them or to a worker that
//! waits for one. A parked worker costs nothing.
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

/// How long a worker with nothing to do spins before it parks while the cores are not contended
/// (see `Preempted`), unless `NETC_SPIN_US` fixes a spin for every case. Measured with the MLP
/// on this 2-core machine (best epoch of three or four runs, alone / with one core kept busy
/// by another process): no spin 0.485 / 0.703 s, 20 µs 0.425 / 0.690 s, 50 µs 0.428 / 0.674 s,
/// 200 µs 0.407 / 0.869 s. Spinning pays alone, and costs under load once it outlasts the gaps
/// between a step's kernels. Spinning that yields the core every few iterations, and parks as
/// soon as a yield lets another thread run, measured worse both ways (0.560 / 1.005 s against
/// 0.493 / 0.826 s in one run): a yield is slow on this virtual machine. With today's faster
/// step (median epoch of 4 runs, alone): no spin 0.186 s, 20 µs 0.158, 50 µs 0.159, 200 µs
/// 0.159.
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

/// Work the pool runs as a chain: a serial part, a job of pieces, the next serial part, and so
/// on. A compiled step is one: each kernel cut into pieces is a job, and what runs once around
/// those kernels (and the kernels not cut) is the serial parts between them.
pub trait Chain: Sync {
    /// Runs serial part `link` (after job `link - 1`, which ran in `pieces` pieces; for link 0,
    /// `pieces` is 0) and returns the number of pieces of job `link`, or `None` when the chain
    /// ends with this part.
    fn serial(&self, link: usize, pieces: usize) -> Option<usize>;

    /// Runs piece `piece` of job `link` as `worker`.
    fn piece(&self, link: usize, piece: usize, worker: usize);
}

/// A single job of `pieces`, as a chain with nothing serial around it.
struct OneJob<'a> {
    pieces: usize,
    job: &'a (dyn Fn(usize, usize) + Sync),
}

impl Chain for OneJob<'_> {
    fn serial(&self, link: usize, _pieces: usize) -> Option<usize> {
        (link == 0).then_some(self.pieces)
    }

    fn piece(&self, _link: usize, piece: usize, worker: usize) {
        (self.job)(piece, worker)
    }
}

/// A pool of workers that runs chains of jobs of pieces (see the module header).
pub struct Pool {
    shared: Arc<Shared>,
    /// The helper threads, started by the first chain that can use them.
    helpers: OnceLock<Vec<JoinHandle<()>>>,
    /// One chain at a time; another caller waits its turn rather than run its chain alone.
    busy: Mutex<()>,
}

/// What the workers share: the chain being run, its current job, and how far it has got.
struct Shared {
    threads: usize,
    schedule: Schedule,
    /// How long a worker spins before it parks, or `None` for `SPIN` (none for a helper
    /// while contended: see `Preempted`).
    spin: Option<Duration>,
    /// When the pool was made: the origin of `Preempted`'s times.
    started: Instant,
    /// Per worker: its time waiting for a core (see `Preempted`).
    preempted: Vec<Padded<Preempted>>,
    /// Until when the pool counts as contended, in nanoseconds since it was made.
    contended_until: AtomicU64,
    /// Windows measured since the pool was made: not contended, contended.
    windows: [AtomicU64; 2],
    /// The generation of the latest job (0 before the first), on a line of its own: idle
    /// workers poll it.
    posted: Padded<AtomicU64>,
    /// The chain: a pointer to the caller's `&dyn Chain`. Written by the caller before the
    /// chain's first serial part; read by a worker only after it claimed a piece of one of its
    /// jobs, or when it finished one's last piece: the chain cannot end, and its caller cannot
    /// return, before that piece is done and the next serial part has run.
    chain: AtomicUsize,
    /// The link of the chain whose job is the current one.
    link: AtomicUsize,
    /// Each worker's pieces not yet taken, as a range `front..back`: of piece indices for
    /// `Dynamic`, of `k` in `worker + k·threads` for `Strided`. A claim packs the job's
    /// generation (32 bits) with `front` and `back` (16 each), so that a worker looking at a
    /// claim of a finished job sees that it is finished.
    claims: Vec<Padded<AtomicU64>>,
    /// Pieces of the current job.
    pieces: AtomicUsize,
    /// Pieces of the current job that have finished.
    done: Padded<AtomicUsize>,
    /// Whether a piece or a serial part of the current chain panicked.
    panicked: AtomicBool,
    /// Whether the current chain has run its last serial part.
    over: AtomicBool,
    /// The thread that called `Pool::chain` (worker 0), for waking it.
    caller: Mutex<Option<Thread>>,
    /// Per worker: parked (or about to park) waiting for a job.
    sleeping: Vec<Padded<AtomicBool>>,
    /// The helpers' threads (worker `w` at `w - 1`).
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
            .map(Duration::from_micros);
        Arc::new(Pool {
            shared: Arc::new(Shared {
                threads,
                schedule,
                spin,
                started: Instant::now(),
                preempted: padded(threads),
                contended_until: AtomicU64::new(0),
                windows: [AtomicU64::new(0), AtomicU64::new(0)],
                posted: Padded::default(),
                chain: AtomicUsize::new(0),
                link: AtomicUsize::new(0),
                claims: padded(threads),
                pieces: AtomicUsize::new(0),
                done: Padded::default(),
                panicked: AtomicBool::new(false),
                over: AtomicBool::new(false),
                caller: Mutex::new(None),
                sleeping: padded(threads),
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

    /// Of the windows in which workers measured their waiting for a core since the pool was
    /// made (see `Preempted`), how many were contended, and how many there were.
    pub fn contention(&self) -> (u64, u64) {
        let [quiet, contended] = &self.shared.windows;
        let contended = contended.load(Ordering::Relaxed);
        (contended, contended + quiet.load(Ordering::Relaxed))
    }

    /// The most pieces of one job the pool has run.
    pub fn largest_job(&self) -> usize {
        self.shared.largest_job.load(Ordering::Relaxed)
    }

    /// Runs `piece(index, worker)` for every index in `0..pieces`, on the pool's workers (this
    /// thread being worker 0), and returns once all have finished. A panic in a piece is raised
    /// again here, after every other piece has finished.
    pub fn run(&self, pieces: usize, piece: &(dyn Fn(usize, usize) + Sync)) {
        assert!(pieces <= MAX_JOB_PIECES, "{pieces} pieces in one job");
        self.chain(&OneJob { pieces, job: piece });
    }

    /// Runs `chain` on the pool's workers, this thread being worker 0, and returns once its
    /// last serial part has run. Each serial part runs on whichever worker finished the last
    /// piece of the job before it (this thread for the first), so that a descheduled worker
    /// holds up the chain only by the piece it is in, if any, whichever it is. A panic in a
    /// piece or a serial part ends the chain there and is raised again here.
    pub fn chain(&self, chain: &dyn Chain) {
        let shared = &*self.shared;
        if shared.threads == 1 {
            return shared.chain_alone(chain);
        }
        // A panic raised here poisons nothing that matters: the chain is over.
        let _held = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        self.start_helpers();
        *shared.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
        shared
            .chain
            .store(&chain as *const &dyn Chain as usize, Ordering::Relaxed);
        shared.panicked.store(false, Ordering::Relaxed);
        shared.over.store(false, Ordering::Relaxed);
        let generation = shared.posted.load(Ordering::Relaxed);
        // The caller's pieces and serial parts never unwind past this point, so that no
        // helper is still running the chain when it is gone.
        shared.advance(0, (0, 0), generation);
        shared.serve(0, generation);
        if shared.panicked.load(Ordering::Relaxed) {
            panic!("a piece or a serial part of a chain on the pool panicked");
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
                        .spawn(move || shared.serve(worker, 0))
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
    /// A chain on a pool of one worker: everything in order on this thread.
    fn chain_alone(&self, chain: &dyn Chain) {
        let (mut link, mut pieces) = (0, 0);
        while let Some(next) = chain.serial(link, pieces) {
            self.largest_job.fetch_max(next, Ordering::Relaxed);
            for piece in 0..next {
                chain.piece(link, piece, 0);
            }
            self.pieces_run[0].fetch_add(next as u64, Ordering::Relaxed);
            (link, pieces) = (link + 1, next);
        }
    }

    /// A worker's life: wait for a job after generation `seen`, run pieces of it, again;
    /// helpers until the pool is dropped, the caller (worker 0) until its chain is over.
    fn serve(&self, worker: usize, mut seen: u64) {
        while let Some(generation) = self.next_job(worker, seen) {
            seen = generation;
            self.work(worker, generation);
        }
    }

    /// Whether `worker` is done serving: the caller when its chain is over, a helper when the
    /// pool is dropped.
    fn stopping(&self, worker: usize) -> bool {
        match worker {
            0 => self.over.load(Ordering::SeqCst),
            _ => self.exit.load(Ordering::SeqCst),
        }
    }

    /// Waits for a job after `seen`: spins for `spin` (see `spin_until`), then parks. `None`
    /// once `worker` is done serving.
    fn next_job(&self, worker: usize, seen: u64) -> Option<u64> {
        let news = || self.posted.load(Ordering::Acquire) != seen || self.stopping(worker);
        spin_until(self.spin_for(worker), news);
        loop {
            if self.stopping(worker) {
                return None;
            }
            let posted = self.posted.load(Ordering::Acquire);
            if posted != seen {
                return Some(posted);
            }
            // Either the poster (or whoever ends the chain) sees `sleeping` and wakes this
            // worker, or this worker sees the news here.
            let sleeping = &self.sleeping[worker];
            sleeping.store(true, Ordering::SeqCst);
            if self.posted.load(Ordering::SeqCst) == seen && !self.stopping(worker) {
                std::thread::park();
            }
            sleeping.store(false, Ordering::SeqCst);
        }
    }

    /// How long `worker` spins before it parks: `SPIN`, or for a helper not at all while other
    /// threads want the workers' cores (see `Preempted`), unless `NETC_SPIN_US` fixed it.
    fn spin_for(&self, worker: usize) -> Duration {
        if let Some(spin) = self.spin {
            return spin;
        }
        let now = self.started.elapsed().as_nanos() as u64;
        if let Some(contended) = self.preempted[worker].close_window(now) {
            self.windows[usize::from(contended)].fetch_add(1, Ordering::Relaxed);
            if contended {
                self.contended_until
                    .fetch_max(now + CONTENDED_FOR, Ordering::Relaxed);
            }
        }
        // The caller spins on: it is the thread that must come back when the chain is over,
        // and a parked thread waits for a contended core to be woken.
        if worker != 0 && now < self.contended_until.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            SPIN
        }
    }

    /// Wakes `worker` if it is parked.
    fn wake(&self, worker: usize) {
        if !self.sleeping[worker].load(Ordering::SeqCst) {
            return;
        }
        if worker == 0 {
            if let Some(caller) = &*self.caller.lock().unwrap_or_else(|e| e.into_inner()) {
                caller.unpark();
            }
        } else {
            let threads = self.threads_of.get().expect("helpers started");
            threads[worker - 1].unpark();
        }
    }

    /// The chain as `worker` carries it on from `link` (after a job of `pieces`; generation
    /// `generation` is the latest posted): serial parts, and jobs of one piece, run here, until
    /// a job of several pieces is posted or the chain is over.
    fn advance(&self, worker: usize, (mut link, mut pieces): (usize, usize), generation: u64) {
        // SAFETY: the caller set `chain` before its first serial part and waits for the chain
        // to be over; this worker is the one carrying it on (see `Shared::chain`).
        let chain = unsafe { *(self.chain.load(Ordering::Acquire) as *const &dyn Chain) };
        loop {
            if self.panicked.load(Ordering::Relaxed) {
                return self.end_chain();
            }
            let next =
                match std::panic::catch_unwind(AssertUnwindSafe(|| chain.serial(link, pieces))) {
                    Ok(Some(next)) if next <= MAX_JOB_PIECES => next,
                    Ok(None) => return self.end_chain(),
                    Ok(Some(_)) | Err(_) => {
                        self.panicked.store(true, Ordering::Relaxed);
                        return self.end_chain();
                    }
                };
            self.largest_job.fetch_max(next, Ordering::Relaxed);
            if next >= 2 {
                return self.post(worker, link, next, generation + 1);
            }
            for piece in 0..next {
                if std::panic::catch_unwind(AssertUnwindSafe(|| chain.piece(link, piece, worker)))
                    .is_err()
                {
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
            self.pieces_run[worker].fetch_add(next as u64, Ordering::Relaxed);
            (link, pieces) = (link + 1, next);
        }
    }

    /// Posts job `link` of `pieces` as generation `generation`, and wakes the parked workers
    /// that have pieces of it, but for `worker`, who posts it.
    fn post(&self, worker: usize, link: usize, pieces: usize, generation: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.pieces.store(pieces, Ordering::Relaxed);
        self.link.store(link, Ordering::Relaxed);
        let workers = self.deal(pieces, generation);
        self.posted.store(generation, Ordering::SeqCst);
        for other in (0..workers).filter(|&w| w != worker) {
            self.wake(other);
        }
    }

    /// Marks the chain over and wakes its caller.
    fn end_chain(&self) {
        self.over.store(true, Ordering::SeqCst);
        self.wake(0);
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
    /// others' ranges, until none is left. The worker that finishes the job's last piece
    /// carries the chain on (`advance`).
    fn work(&self, worker: usize, generation: u64) {
        let others = (worker + 1..self.threads).chain(0..worker);
        let others = others.filter(|_| self.schedule == Schedule::Dynamic);
        let own = std::iter::from_fn(|| self.claim(worker, End::Front, generation));
        let stolen = others
            .flat_map(|owner| std::iter::from_fn(move || self.claim(owner, End::Back, generation)));
        for index in own.chain(stolen) {
            // SAFETY: this worker holds an unfinished piece of the chain's current job, so its
            // caller is still inside `Pool::chain` and the chain it stored is alive.
            let chain = unsafe { *(self.chain.load(Ordering::Acquire) as *const &dyn Chain) };
            let link = self.link.load(Ordering::Relaxed);
            if std::panic::catch_unwind(AssertUnwindSafe(|| chain.piece(link, index, worker)))
                .is_err()
            {
                self.panicked.store(true, Ordering::Relaxed);
            }
            // Counted before the piece is reported done, so the count is complete when the
            // chain is over.
            self.pieces_run[worker].fetch_add(1, Ordering::Relaxed);
            let pieces = self.pieces.load(Ordering::Relaxed);
            if self.done.fetch_add(1, Ordering::SeqCst) + 1 == pieces {
                self.advance(worker, (link + 1, pieces), generation);
            }
        }
    }
}

/// Whether the workers' cores are wanted by other threads: a worker waited for a core (was
/// runnable but not running) `CONTENDED` of its time or more over one of its last `WINDOW`s.
/// Measured on this 2-core machine over windows of 20 ms, training the MLP and LeNet: alone, a
/// worker waits under 5% of nearly every window and at most 17% (44% once, while the steps were
/// being compiled on other threads); beside a process that keeps a core busy, the worker
/// sharing its core waits 25 to 60% of most windows. (Counting involuntary context switches
/// instead does not tell the two apart: netc's threads are switched out 300 times a second
/// alone, 750 beside that process.)
///
/// While contended, helpers park at once: a helper that spins takes time from those threads,
/// or from another worker sharing its core, and keeps its core from a worker waiting for one,
/// which an idle core would take in. The caller still spins for `SPIN`: it must come back at
/// the end of every chain, and a parked caller is woken only when its contended core is free.
/// Training with another process keeping one of the two cores busy (median seconds per epoch
/// over 3–4 runs, one session): every worker spinning 50 µs, MLP 0.326 and LeNet 2.239; every
/// worker parking at once, 0.293 and 2.046; helpers parking at once and the caller spinning,
/// 0.269 and 1.940.
struct Preempted {
    /// When this worker's current window started, and its time spent waiting then (`u64::MAX`:
    /// not read yet), in nanoseconds since the pool was made.
    window: AtomicU64,
    waited: AtomicU64,
}

impl Default for Preempted {
    fn default() -> Preempted {
        Preempted {
            window: AtomicU64::new(0),
            waited: AtomicU64::new(u64::MAX),
        }
    }
}

/// The window a worker's waiting is measured over, in nanoseconds: a few of the scheduler's
/// time slices.
const WINDOW: u64 = 20_000_000;

/// The share of a window spent waiting for a core that makes the pool contended.
const CONTENDED: f64 = 0.25;

/// How long the pool counts as contended after a window with `CONTENDED`, in nanoseconds.
const CONTENDED_FOR: u64 = 100_000_000;

impl Preempted {
    /// Closes this worker's window if it is over at `now` (a read of the worker's scheduler
    /// statistics, once a window): whether the worker waited `CONTENDED` of it, or `None` when
    /// no window closed or it could not be measured.
    fn close_window(&self, now: u64) -> Option<bool> {
        let start = self.window.load(Ordering::Relaxed);
        if now.saturating_sub(start) < WINDOW {
            return None;
        }
        self.window.store(now, Ordering::Relaxed);
        let waited = time_waiting()?;
        let before = self.waited.swap(waited, Ordering::Relaxed);
        (before != u64::MAX)
            .then(|| waited.saturating_sub(before) as f64 >= CONTENDED * (now - start) as f64)
    }
}

/// The time the calling thread has spent runnable but waiting for a core, in nanoseconds: the
/// second field of Linux's `/proc/thread-self/schedstat` (`None` where there is none).
fn time_waiting() -> Option<u64> {
    use std::io::Read;
    let mut text = [0u8; 96];
    let mut file = std::fs::File::open("/proc/thread-self/schedstat").ok()?;
    let len = file.read(&mut text).ok()?;
    let text = std::str::from_utf8(&text[..len]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
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

// SAFETY: `chain` holds the address of a `&dyn Chain` that only the workers of a running chain
// read (see `Shared::chain`); everything else is atomics or behind locks.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

#[cfg(test)]
mod tests {
    use super::{Chain, Pool, Schedule};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::thread::ThreadId;

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

    /// A chain of `links` jobs of `link % 5` pieces each, which checks as it goes that its
    /// serial parts run in order, each after every piece of the job before it, and its pieces
    /// after the serial part before them.
    struct Checked {
        links: usize,
        /// Pieces run, per link and piece.
        runs: Vec<Vec<AtomicUsize>>,
        /// The link whose serial part ran last.
        current: AtomicUsize,
        /// The threads that ran each serial part, in order, with the pieces they were given.
        serial: Mutex<Vec<(usize, usize, ThreadId)>>,
    }

    impl Checked {
        fn new(links: usize) -> Checked {
            Checked {
                links,
                runs: (0..links)
                    .map(|l| (0..l % 5).map(|_| AtomicUsize::new(0)).collect())
                    .collect(),
                current: AtomicUsize::new(usize::MAX),
                serial: Mutex::new(Vec::new()),
            }
        }
    }

    impl Chain for Checked {
        fn serial(&self, link: usize, pieces: usize) -> Option<usize> {
            let before = link.checked_sub(1).map_or(0, |l| l % 5);
            assert_eq!(
                pieces, before,
                "link {link} was told the wrong number of pieces"
            );
            if let Some(previous) = link.checked_sub(1) {
                let runs = &self.runs[previous];
                assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
            }
            let thread = std::thread::current().id();
            self.serial.lock().unwrap().push((link, pieces, thread));
            self.current.store(link, Ordering::Relaxed);
            (link < self.links).then_some(link % 5)
        }

        fn piece(&self, link: usize, piece: usize, worker: usize) {
            assert_eq!(self.current.load(Ordering::Relaxed), link);
            // Helpers finish last, so that they carry the chain on.
            if worker != 0 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            self.runs[link][piece].fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_chain_runs_in_order_and_any_worker_carries_it_on() {
        for threads in [1, 2, 3, 8] {
            for schedule in [Schedule::Dynamic, Schedule::Strided] {
                let pool = Pool::with_schedule(threads, schedule);
                for _ in 0..3 {
                    let chain = Checked::new(200);
                    pool.chain(&chain);
                    let serial = chain.serial.into_inner().unwrap();
                    let links: Vec<usize> = serial.iter().map(|s| s.0).collect();
                    assert_eq!(links, (0..=200).collect::<Vec<_>>());
                    let caller = std::thread::current().id();
                    let elsewhere = serial.iter().filter(|s| s.2 != caller).count();
                    // With `Strided`, a helper's pieces are its own: it finishes nearly every
                    // job of two or more pieces (120 of them) last and runs the next serial
                    // part, unless the caller was descheduled in its own piece.
                    if threads > 1 && schedule == Schedule::Strided {
                        assert!(elsewhere >= 30, "{threads} workers: {elsewhere} on helpers");
                    }
                    if threads == 1 {
                        assert_eq!(elsewhere, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn a_panic_in_a_serial_part_ends_the_chain() {
        struct Failing;
        impl Chain for Failing {
            fn serial(&self, link: usize, _pieces: usize) -> Option<usize> {
                assert!(link != 3, "in a serial part");
                Some(4)
            }
            fn piece(&self, _link: usize, _piece: usize, worker: usize) {
                if worker != 0 {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
        }
        let pool = Pool::with_schedule(2, Schedule::Strided);
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.chain(&Failing)));
        assert!(caught.is_err());
        let chain = Checked::new(20);
        pool.chain(&chain);
        assert_eq!(chain.serial.into_inner().unwrap().len(), 21);
    }

    #[test]
    fn workers_see_when_other_threads_want_their_cores() {
        use std::sync::atomic::AtomicBool;
        if super::time_waiting().is_none() {
            return;
        }
        // Twice as many spinning threads as cores: a worker waits for a core most of the time.
        let spinners = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = AtomicBool::new(false);
        let pool = Pool::new(2);
        std::thread::scope(|scope| {
            for _ in 0..spinners {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                });
            }
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_millis(400) {
                pool.chain(&Checked::new(20));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let (contended, windows) = pool.contention();
        assert!(contended > 0, "{contended} of {windows} windows contended");
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

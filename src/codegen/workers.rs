//! The worker pool: the thread that calls a compiled step is worker 0, and one persistent
//! helper thread, started by the first split kernel, is worker 1. A split kernel's work is cut
//! into the same two halves whatever the thread count, so results never depend on it; with
//! one thread the caller runs both halves, one after the other.
//!
//! A step hands the helper several kernels a millisecond, so waking it through the operating
//! system each time (tens of microseconds) would cost as much as the smaller kernels. The
//! helper instead spins for a short while after each job, sleeping only once no job has come
//! for `SPIN`; a step in progress finds it awake, and an idle helper costs nothing.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Threads for split kernels (the caller and the helper); 1 runs everything on the caller.
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// How long the helper waits for its next job before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Sets how many threads split kernels use. Results do not depend on it.
pub fn set_threads(threads: usize) {
    THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// A kernel's share function: `(pointers, arena, batch, hypers, seed, first, end, worker)`.
pub type ShareFn =
    unsafe extern "C" fn(*const *const f32, *mut f32, i64, *const f32, i64, i64, i64, i64);

/// One worker's share of a kernel: the function and its arguments, addresses as integers so
/// that the share can cross to the helper thread.
#[derive(Clone, Copy)]
struct Share {
    function: ShareFn,
    pointers: usize,
    arena: usize,
    batch: i64,
    hypers: usize,
    seed: i64,
    first: i64,
    end: i64,
    worker: i64,
}

impl Share {
    fn run(self) {
        // SAFETY: `function` was compiled from the share signature for this plan; the entry
        // point that called `netc_parallel` checked every buffer's size, and each worker writes
        // only its own part of the output and its own scratch.
        unsafe {
            (self.function)(
                self.pointers as *const *const f32,
                self.arena as *mut f32,
                self.batch,
                self.hypers as *const f32,
                self.seed,
                self.first,
                self.end,
                self.worker,
            )
        }
    }
}

/// Work for the helper, borrowed from the caller until the helper reports it finished.
type Job = *mut (dyn FnMut() + Send + 'static);

/// The helper's mailbox. A caller that holds `busy` writes `slot` and then bumps `posted`; the
/// helper takes the job once it sees the new count and bumps `finished` when it is done.
struct Helper {
    busy: Mutex<()>,
    slot: UnsafeCell<Option<Job>>,
    posted: AtomicU64,
    finished: AtomicU64,
    /// Whether the last job panicked (the panic is raised again on the caller).
    panicked: AtomicBool,
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

// SAFETY: `slot` is written only by the caller holding `busy`, before it publishes the write
// through `posted` (release), and read only by the helper after it sees that count (acquire);
// the caller does not touch it, or the job it points to, again until `finished` says the
// helper is done with it.
unsafe impl Sync for Helper {}

static HELPER: Helper = Helper {
    busy: Mutex::new(()),
    slot: UnsafeCell::new(None),
    posted: AtomicU64::new(0),
    finished: AtomicU64::new(0),
    panicked: AtomicBool::new(false),
    sleeping: AtomicBool::new(false),
    thread: OnceLock::new(),
};

impl Helper {
    fn thread(&'static self) -> &'static Thread {
        self.thread.get_or_init(|| {
            std::thread::Builder::new()
                .name("netc-worker".into())
                .spawn(move || self.serve())
                .expect("a thread for the second worker")
                .thread()
                .clone()
        })
    }

    /// The helper thread's loop: wait for a job, run it, report it done.
    fn serve(&self) {
        let mut seen = 0;
        loop {
            let idle = Instant::now();
            let mut spins = 0u32;
            while self.posted.load(Ordering::Acquire) == seen {
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(64) || idle.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                // Either the caller sees `sleeping` and wakes us, or we see its new job here.
                self.sleeping.store(true, Ordering::SeqCst);
                if self.posted.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                self.sleeping.store(false, Ordering::SeqCst);
            }
            seen += 1;
            // SAFETY: see `unsafe impl Sync for Helper`; the job outlives its run because the
            // caller waits for `finished`, even when it panics itself.
            let job = unsafe { (*self.slot.get()).take() }.expect("a posted job");
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job)() }));
            self.panicked.store(run.is_err(), Ordering::Relaxed);
            self.finished.store(seen, Ordering::Release);
        }
    }

    /// Runs `theirs` on the helper while the caller runs `mine`; false (having run neither)
    /// when another caller holds the helper.
    fn join(
        &'static self,
        mine: &mut (dyn FnMut() + Send),
        theirs: &mut (dyn FnMut() + Send),
    ) -> bool {
        // A panic raised through `join` poisons the lock; the helper is fine all the same.
        let _held = match self.busy.try_lock() {
            Ok(held) => held,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let thread = self.thread();
        // SAFETY: only the lifetime is erased; this function does not return before the
        // helper has finished with the job.
        let job: Job = unsafe { std::mem::transmute(theirs as *mut (dyn FnMut() + Send)) };
        // SAFETY: see `unsafe impl Sync for Helper`; the helper finished the previous job.
        unsafe { *self.slot.get() = Some(job) };
        let job = self.posted.fetch_add(1, Ordering::SeqCst) + 1;
        if self.sleeping.load(Ordering::SeqCst) {
            thread.unpark();
        }
        // Waits for the helper when dropped, so that `theirs` is never freed while it runs,
        // even if `mine` panics.
        let wait = Wait { helper: self, job };
        mine();
        drop(wait);
        assert!(
            !self.panicked.load(Ordering::Relaxed),
            "the second worker panicked"
        );
        true
    }
}

/// Until dropped, the helper may still be running job `job`.
struct Wait {
    helper: &'static Helper,
    job: u64,
}

impl Drop for Wait {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.helper.finished.load(Ordering::Acquire) < self.job {
            spins = spins.wrapping_add(1);
            // If the helper was descheduled, let it have this core.
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs a shared kernel's `count` iterations, the first half as worker 0 and the rest as worker
/// 1: the second half on the helper thread while the caller runs the first, when more than one
/// thread is allowed (and no other step holds the helper), else one after the other. The
/// halves are the same either way, so the results are too.
pub extern "C" fn netc_parallel(
    function: ShareFn,
    pointers: *const *const f32,
    arena: *mut f32,
    batch: i64,
    hypers: *const f32,
    seed: i64,
    count: i64,
) {
    let half = (count + 1) / 2;
    let share = |first, end, worker| Share {
        function,
        pointers: pointers as usize,
        arena: arena as usize,
        batch,
        hypers: hypers as usize,
        seed,
        first,
        end,
        worker,
    };
    let (mine, theirs) = (share(0, half, 0), share(half, count, 1));
    join(&mut || mine.run(), &mut || theirs.run());
}

/// Runs `theirs` on the helper thread while the caller runs `mine`, when more than one thread
/// is allowed and no other caller holds the helper; else one after the other.
pub fn join(mine: &mut (dyn FnMut() + Send), theirs: &mut (dyn FnMut() + Send)) {
    if THREADS.load(Ordering::Relaxed) > 1 && HELPER.join(mine, theirs) {
        return;
    }
    mine();
    theirs();
}

#[cfg(test)]
mod tests {
    use super::{join, set_threads};

    #[test]
    fn both_halves_run_and_a_panic_reaches_the_caller() {
        set_threads(2);
        let (mut a, mut b) = (0, 0);
        join(&mut || a = 1, &mut || b = 2);
        assert_eq!((a, b), (1, 2));
        let caught = std::panic::catch_unwind(|| join(&mut || {}, &mut || panic!("in a worker")));
        assert!(caught.is_err());
        // The pool still works.
        let mut c = 0;
        join(&mut || {}, &mut || c = 3);
        assert_eq!(c, 3);
    }
}

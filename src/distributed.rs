//! Data-parallel runs over MPI: joins the processes `mpirun` started and gives the runtime a
//! `runtime::Group` whose sums are added in rank order. MPI itself (rsmpi over the system's
//! Open MPI) is behind the cargo feature `mpi`; without it, a netc that `mpirun` starts as one
//! of several processes refuses to run (E0516) rather than train P separate copies.
//!
//! Guarantees: every sum is a reduce-scatter whose owner adds the P parts in rank order,
//! followed by an all-gather, so the bits depend on P only, never on the MPI library's choice of
//! reduction order; every collective is non-blocking and polled against a deadline, so a
//! process that dies or hangs stops every process with E0516 instead of hanging them.

use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::Group;

/// This process's rank and the number of processes, as the launcher (Open MPI's `mpirun`, or
/// MPICH's Hydra) put them in the environment; `None` when started alone.
pub fn launched() -> Option<(usize, usize)> {
    let read = |name: &str| std::env::var(name).ok()?.trim().parse::<usize>().ok();
    [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
    ]
    .iter()
    .find_map(|&(rank, size)| Some((read(rank)?, read(size)?)))
    .filter(|&(rank, size)| size > 1 && rank < size)
}

/// The processes of the run this one was started in, for as long as the command runs.
pub struct Processes {
    pub rank: usize,
    pub size: usize,
    #[cfg(feature = "mpi")]
    universe: mpi::environment::Universe,
}

impl Processes {
    /// Joins the other processes `mpirun` started: `None` for a process started alone. Each
    /// takes its share of the host's cores unless `--threads` or `NETC_THREADS` says otherwise.
    pub fn join() -> Result<Option<Processes>, Diagnostic> {
        let Some((rank, size)) = launched() else {
            return Ok(None);
        };
        let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        crate::codegen::set_default_threads((cores / local).max(1));
        Processes::init(rank, size)
    }

    #[cfg(feature = "mpi")]
    fn init(rank: usize, size: usize) -> Result<Option<Processes>, Diagnostic> {
        use mpi::traits::Communicator;
        let not_started = || {
            Diagnostic::plain(
                Code::E0516,
                format!("process {rank} of {size} could not start MPI"),
            )
        };
        let (universe, threading) =
            mpi::initialize_with_threading(mpi::Threading::Serialized).ok_or_else(not_started)?;
        // A session sums on its own thread: MPI must allow calls from a thread other than the
        // one that started it, one at a time.
        if !matches!(
            threading,
            mpi::Threading::Serialized | mpi::Threading::Multiple
        ) {
            return Err(not_started().with_note(format!(
                "the MPI library offers {threading:?} threading; netc needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Some(Processes {
            rank,
            size,
            universe,
        }))
    }

    #[cfg(not(feature = "mpi"))]
    fn init(rank: usize, size: usize) -> Result<Option<Processes>, Diagnostic> {
        Err(Diagnostic::plain(
            Code::E0516,
            format!("netc was started as process {rank} of {size} by mpirun, but was built without MPI"),
        )
        .with_help("build with `cargo build --release --features mpi` (Open MPI: `apt-get install libopenmpi-dev openmpi-bin libclang-dev`), or run one process"))
    }

    /// The group the runtime sums through.
    pub fn group(&self) -> Box<dyn Group> {
        #[cfg(feature = "mpi")]
        {
            Box::new(mpi_group::Mpi::new(timeout()))
        }
        #[cfg(not(feature = "mpi"))]
        unreachable!("without MPI no process joins others")
    }

    /// Stops every process of the run at once: for a failure of this process alone, which
    /// the others would otherwise wait for until their timeout.
    pub fn abort(&self) -> ! {
        #[cfg(feature = "mpi")]
        {
            use mpi::traits::Communicator;
            self.universe.world().abort(1)
        }
        #[cfg(not(feature = "mpi"))]
        unreachable!("without MPI no process joins others")
    }
}

/// How long a process waits for the others at any collective: `NETC_MPI_TIMEOUT` seconds, 120
/// unless set (a first compilation and a test-set evaluation fit well within it).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn timeout() -> std::time::Duration {
    let seconds = std::env::var("NETC_MPI_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .unwrap_or(120.0);
    std::time::Duration::from_secs_f64(seconds)
}

#[cfg(feature = "mpi")]
mod mpi_group {
    use super::{Code, Diagnostic};
    use crate::runtime::{share, Group};
    use mpi::datatype::{Partition, PartitionMut};
    use mpi::request::{Request, Scope};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator, CommunicatorCollectives};
    use std::time::{Duration, Instant};

    /// The most elements one collective moves: MPI's counts are 32-bit.
    const CHUNK: usize = 1 << 26;

    /// The processes of `MPI_COMM_WORLD`, from whichever thread sums (MPI is initialized for
    /// one thread at a time: a session's communication thread, or the main thread before and
    /// after it).
    pub(super) struct Mpi {
        rank: usize,
        size: usize,
        timeout: Duration,
        sent: u64,
        /// The parts of this process's segment, one from each process.
        parts: Vec<f32>,
        segment: Vec<f32>,
    }

    /// Polls `request` until it completes, or reports the other processes' silence and stops
    /// every process.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(
        world: &SimpleCommunicator,
        timeout: Duration,
        mut request: Request<'a, D, S>,
        doing: &str,
    ) {
        let deadline = Instant::now() + timeout;
        let mut polls = 0u32;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            polls = polls.saturating_add(1);
            // Spin while the others are likely a moment behind, then yield the core.
            if polls < 4096 {
                std::hint::spin_loop();
                continue;
            }
            if Instant::now() > deadline {
                let diagnostic = Diagnostic::plain(
                    Code::E0516,
                    format!(
                        "process {} of {}: the other processes did not answer within {} s while {doing}",
                        world.rank(),
                        world.size(),
                        timeout.as_secs_f64()
                    ),
                )
                .with_note("a process died, hangs or was stopped; every process stops now")
                .with_help("see the other processes' messages; NETC_MPI_TIMEOUT sets the wait in seconds");
                crate::diagnostics::emit_to_stderr(
                    &crate::source::SourceFile::new("", ""),
                    &[diagnostic],
                );
                world.abort(1);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    impl Mpi {
        pub(super) fn new(timeout: Duration) -> Mpi {
            let world = SimpleCommunicator::world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Mpi {
                rank,
                size,
                timeout,
                sent: 0,
                parts: Vec::new(),
                segment: Vec::new(),
            }
        }

        /// Sums one chunk: each process owns a segment, receives every process's part of it,
        /// adds them in rank order, and all gather the sums.
        fn sum_chunk(&mut self, local: &[f32], sum: &mut [f32]) {
            let p = self.size;
            let segments: Vec<_> = (0..p).map(|s| share(local.len(), s, p)).collect();
            // Lengths below CHUNK = 2^26 fit MPI's 32-bit counts.
            let counts: Vec<i32> = segments.iter().map(|s| s.len() as i32).collect();
            let starts: Vec<i32> = segments.iter().map(|s| s.start as i32).collect();
            let mine = segments[self.rank].len();
            self.parts.resize(mine * p, 0.0);
            {
                let send = Partition::new(local, &counts[..], &starts[..]);
                let part_starts: Vec<i32> = (0..p).map(|r| (r * mine) as i32).collect();
                let part_counts = vec![mine as i32; p];
                let mut receive =
                    PartitionMut::new(&mut self.parts[..], &part_counts[..], &part_starts[..]);
                let (world, timeout) = (&SimpleCommunicator::world(), self.timeout);
                mpi::request::scope(|scope| {
                    let request =
                        world.immediate_all_to_all_varcount_into(scope, &send, &mut receive);
                    wait(world, timeout, request, "summing gradients");
                });
            }
            self.segment.clear();
            self.segment.extend_from_slice(&self.parts[..mine]);
            for part in self.parts.chunks_exact(mine.max(1)).skip(1) {
                for (s, x) in self.segment.iter_mut().zip(part) {
                    *s += x;
                }
            }
            {
                let mut receive = PartitionMut::new(sum, &counts[..], &starts[..]);
                let (world, timeout, segment) = (
                    &SimpleCommunicator::world(),
                    self.timeout,
                    &self.segment[..],
                );
                mpi::request::scope(|scope| {
                    let request =
                        world.immediate_all_gather_varcount_into(scope, segment, &mut receive);
                    wait(world, timeout, request, "gathering summed gradients");
                });
            }
            let bytes = |n: usize| n as u64 * 4;
            self.sent += bytes(local.len() - mine) + bytes(mine) * (p as u64 - 1);
        }

        /// Every process's `values`, in rank order, one after another.
        fn all_gather<T: mpi::datatype::Equivalence + Copy + Default>(
            &mut self,
            values: &[T],
            doing: &str,
        ) -> Vec<T> {
            let mut all = vec![T::default(); values.len() * self.size];
            let (world, timeout) = (&SimpleCommunicator::world(), self.timeout);
            mpi::request::scope(|scope| {
                let request = world.immediate_all_gather_into(scope, values, &mut all[..]);
                wait(world, timeout, request, doing);
            });
            self.sent += (std::mem::size_of_val(values) * (self.size - 1)) as u64;
            all
        }
    }

    impl Group for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn sum(&mut self, local: &[f32], sum: &mut [f32]) {
            for (local, sum) in local.chunks(CHUNK).zip(sum.chunks_mut(CHUNK)) {
                self.sum_chunk(local, sum);
            }
        }

        fn sum_f64(&mut self, values: &mut [f64]) {
            let n = values.len();
            let all = self.all_gather(values, "summing metrics");
            for (i, value) in values.iter_mut().enumerate() {
                *value = (0..self.size).map(|r| all[r * n + i]).sum();
            }
        }

        fn gather(&mut self, value: u64) -> Vec<u64> {
            self.all_gather(&[value], "comparing the processes' settings")
        }

        fn bytes_sent(&self) -> u64 {
            self.sent
        }
    }
}

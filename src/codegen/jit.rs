//! The JIT: compiles a lowered plan with cranelift-jit for this machine and calls it. This is
//! the one place that turns generated code into a Rust function pointer.
#![allow(unsafe_code)]

use super::abi::{self, Entry, PieceFn, IMPORTS};
use super::alloc::ALIGN;
use super::direct::{netc_conv, netc_conv_weight};
use super::kernels::{Kernel, KernelId};
use super::layout::Base;
use super::lower;
use super::plan::{CompileError, Plan};
use super::pool::{Chain, Pool};
use super::rows::netc_rows;
use crate::ir::{Graph, NodeId};
use crate::step::Step;
use crate::tensor::{Bindings, Tensor};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

/// One thread's matrix product: large products are cut into pieces by the generated code (by
/// rows of the output), so that each piece's epilogue runs on the thread that has the piece in
/// its cache.
extern "C" fn netc_gemm(
    m: i64,
    n: i64,
    k: i64,
    dst: *mut f32,
    dst_rs: i64,
    lhs: *const f32,
    lhs_cs: i64,
    lhs_rs: i64,
    rhs: *const f32,
    rhs_cs: i64,
    rhs_rs: i64,
    accumulate: i64,
) {
    // SAFETY: the planner gives every operand a buffer of at least m·k, k·n and m·n elements
    // at these strides for the current batch, checked against the arena and the bound tensors
    // before the entry point runs.
    unsafe {
        gemm::gemm(
            m as usize,
            n as usize,
            k as usize,
            dst,
            1,
            dst_rs as isize,
            accumulate != 0,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            // dst = alpha·dst + beta·lhs·rhs, reading dst only when accumulating.
            if accumulate != 0 { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

extern "C" fn netc_logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn netc_sinf(x: f32) -> f32 {
    x.sin()
}

extern "C" fn netc_cosf(x: f32) -> f32 {
    x.cos()
}

/// The running profile of a compiled step.
#[derive(Default)]
struct Ticks {
    /// Nanoseconds per kernel.
    times: Vec<u64>,
    /// The kernel that started at the last tick, and when.
    last: Option<(usize, std::time::Instant)>,
}

/// What a run reports each finished result to: its index among the results and its values.
/// It may be called on any of the pool's threads (one call at a time).
pub type Ready<'a> = dyn FnMut(usize, &[f32]) + Send + 'a;

/// Per kernel, the results it finishes: (result, offset in the arena, length).
type FinishTable = Vec<Vec<(usize, usize, usize)>>;

/// What code compiled with ticks records a run in, through the entry point's `context`: the
/// profile, and where `Compiled::run_reporting` reports finished results. The chain's serial
/// parts, which tick, run one at a time, each after the one before it has finished (on
/// whichever worker), so they use it in turn.
struct Run<'a> {
    ticks: &'a mut Ticks,
    report: Option<Reporting<'a>>,
}

/// Where finished results are reported: the arena, the results each kernel finishes, the
/// callback.
struct Reporting<'a> {
    arena: *const f32,
    table: &'a FinishTable,
    ready: &'a mut Ready<'a>,
}

/// Called by code compiled with ticks before kernel `k` (and with the number of kernels at
/// the end): the time since the previous tick goes to the previous kernel, and the results
/// the previous kernel finished are reported when a run asked for them.
extern "C" fn netc_tick(run: *mut std::ffi::c_void, k: i64) {
    let now = std::time::Instant::now();
    // SAFETY: `run_with` passes its `Run` as the context of code compiled with ticks, and the
    // serial parts that tick run one after another (see `Run`).
    let run = unsafe { &mut *run.cast::<Run>() };
    let ticks = &mut *run.ticks;
    if let Some((previous, at)) = ticks.last.take() {
        if ticks.times.len() <= previous {
            ticks.times.resize(previous + 1, 0);
        }
        ticks.times[previous] += now.duration_since(at).as_nanos() as u64;
    }
    ticks.last = Some((k as usize, now));
    let Some(report) = &mut run.report else {
        return;
    };
    let Some(done) = (k as usize).checked_sub(1) else {
        return;
    };
    for &(result, start, len) in report.table.get(done).into_iter().flatten() {
        // SAFETY: the table's results lie inside the arena, and the kernels that finished
        // them write them no more.
        let values = unsafe { std::slice::from_raw_parts(report.arena.add(start), len) };
        (report.ready)(result, values);
    }
}

/// A step's run as a chain on the pool: the entry point's links, and each job's pieces through
/// its kernel's piece function.
struct StepChain<'a> {
    entry: Entry,
    /// Per job: the piece function and the iterations of a piece.
    jobs: &'a [(PieceFn, i64)],
    /// The first six arguments of the entry point and the piece functions.
    args: Args,
    /// The current job's iterations, as the link before it returned them.
    iterations: std::sync::atomic::AtomicI64,
}

/// `(pointers, arena, batch, hypers, seed, context)`: see `abi::Entry`.
type Args = (
    *const *const f32,
    *mut f32,
    i64,
    *const f32,
    i64,
    *mut std::ffi::c_void,
);

// SAFETY: the pointers are to memory `run_with` holds for the length of the chain; the
// generated code writes only what each piece or serial part owns, one serial part at a time.
unsafe impl Sync for StepChain<'_> {}

impl Chain for StepChain<'_> {
    fn serial(&self, link: usize, pieces: usize) -> Option<usize> {
        let (p, a, batch, h, seed, c) = self.args;
        // SAFETY: `run_with` checked every size before running the chain; `entry` was compiled
        // from `entry_signature`.
        let iterations =
            unsafe { (self.entry)(p, a, batch, h, seed, c, link as i64, pieces as i64) };
        let iterations = u64::try_from(iterations).ok()?;
        let (_, per_piece) = self.jobs[link];
        self.iterations
            .store(iterations as i64, std::sync::atomic::Ordering::Relaxed);
        Some(iterations.div_ceil(per_piece as u64) as usize)
    }

    fn piece(&self, link: usize, piece: usize, worker: usize) {
        let (p, a, batch, h, seed, c) = self.args;
        let (function, per_piece) = self.jobs[link];
        let iterations = self.iterations.load(std::sync::atomic::Ordering::Relaxed);
        let first = piece as i64 * per_piece;
        let end = (first + per_piece).min(iterations);
        let (piece, worker) = (piece as i64, worker as i64);
        // SAFETY: as in `serial`; `function` was compiled from the piece signature for this
        // plan, and each piece writes only its own part of the output, its own sums and its
        // worker's scratch.
        unsafe { function(p, a, batch, h, seed, c, first, end, piece, worker) }
    }
}

/// Time spent in each kernel of a profiled step, with what the kernel computes.
#[derive(Clone, Debug)]
pub struct Profile {
    /// (description, seconds), in kernel order.
    pub kernels: Vec<(String, f64)>,
}

/// Floating-point operations of a compiled step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flops {
    /// In matrix products (dense layers).
    pub matmul: f64,
    /// In convolutions' products (every pass).
    pub conv: f64,
}

/// Why a compiled step refused to run: its bindings do not match what it was compiled for.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected(pub String);

/// The buffers of a compiled step: zeroed floats starting on a cache line. They come from
/// `alloc_zeroed` with the alignment of a float, which the system allocator serves with
/// `calloc`: a large arena is fresh pages from the system that cost nothing until a step
/// touches them, so compile time does not grow with the batch. (With a cache line's
/// alignment it would be allocated and then zeroed by hand, touching every page.)
struct Arena {
    base: std::ptr::NonNull<f32>,
    /// The planned arena starts `start` floats into the allocation, on a cache line.
    start: usize,
    len: usize,
}

// SAFETY: the arena owns its memory, as a `Vec<f32>` would.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// `len` zeroed floats starting on a cache line, or `None` when they cannot be allocated.
    fn zeroed(len: usize) -> Option<Arena> {
        let layout = Arena::layout(len)?;
        // SAFETY: the layout's size is at least one cache line.
        let base =
            std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>())?;
        let start = base.as_ptr().align_offset(4 * ALIGN);
        (start <= ALIGN).then_some(Arena { base, start, len })
    }

    fn layout(len: usize) -> Option<std::alloc::Layout> {
        std::alloc::Layout::array::<f32>(len.checked_add(ALIGN)?).ok()
    }

    fn as_mut_ptr(&mut self) -> *mut f32 {
        // SAFETY: `start + len` floats lie inside the allocation.
        unsafe { self.base.as_ptr().add(self.start) }
    }

    fn floats(&self) -> &[f32] {
        // SAFETY: the floats were allocated and zeroed, so every one is initialized.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.start), self.len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let layout = Arena::layout(self.len).expect("the layout it was allocated with");
        // SAFETY: allocated by `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.base.as_ptr().cast(), layout) }
    }
}

/// A graph compiled to native code, with its arena and the pool its pieces run on.
pub struct Compiled {
    pool: std::sync::Arc<Pool>,
    graph: Graph,
    /// The step's results, kept after a run.
    wanted: Vec<NodeId>,
    plan: Plan,
    max_batch: usize,
    arena: Arena,
    entry: Entry,
    /// The generated Cranelift IR, for `emit-ir --stage clif` (empty unless asked for).
    clif: String,
    /// Per kernel cut into pieces, in order: its piece function and the iterations of a piece.
    jobs: Vec<(PieceFn, i64)>,
    /// Whether the code calls `netc_tick` between kernels (compiled with profiling).
    ticks: bool,
    /// The profile of the runs so far (code compiled with profiling).
    profile: std::sync::Mutex<Ticks>,
    /// For each wanted result, the last kernel that writes it.
    finished_by: Vec<Option<usize>>,
    /// The wanted results in the order a run finishes them (`finishing_order`).
    finishing: Vec<usize>,
    /// `finished_by` as a table per kernel for one batch size: (batch, per kernel the
    /// results it finishes, with their offsets and lengths).
    reporting: Option<(usize, FinishTable)>,
    // Owns the executable memory `entry` points into.
    _module: JITModule,
}

impl Compiled {
    /// Compiles a step for batches of up to `max_batch`, to run on `pool`; a run returns the
    /// step's results, which are the same bits for any pool.
    pub fn new(
        step: &Step,
        max_batch: usize,
        profile: bool,
        pool: &std::sync::Arc<Pool>,
    ) -> Result<Compiled, CompileError> {
        Compiled::build(
            &step.graph,
            max_batch,
            &step.results,
            (profile, false),
            pool,
        )
    }

    /// The printed program `new` would compile (see `listing`), for a pool of one worker.
    pub fn listing_of(step: &Step, max_batch: usize) -> Result<String, CompileError> {
        let pool = Pool::new(1);
        Ok(Compiled::build(&step.graph, max_batch, &step.results, (false, true), &pool)?.listing())
    }

    /// Compiles, keeping the Cranelift IR as text when `listing` (printing it takes longer than
    /// compiling some models).
    fn build(
        graph: &Graph,
        max_batch: usize,
        wanted: &[NodeId],
        (profile, listing): (bool, bool),
        pool: &std::sync::Arc<Pool>,
    ) -> Result<Compiled, CompileError> {
        let plan = super::plan::plan(graph, max_batch, wanted, pool.threads())?;
        let bytes = (plan.arena as u64).checked_mul(4);
        if bytes.is_none_or(|b| b > crate::memory::limit()) {
            return Err(CompileError::TooLarge { bytes });
        }
        let arena = Arena::zeroed(plan.arena).ok_or(CompileError::TooLarge { bytes })?;
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").expect("a known setting");
        let isa = cranelift_native::builder()
            .map_err(|e| CompileError::NoTarget(e.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| CompileError::NoTarget(e.to_string()))?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        // One address per name in IMPORTS: the array's length is checked against it.
        let helpers: [*const u8; IMPORTS.len()] = [
            netc_gemm as *const u8,
            netc_logf as *const u8,
            netc_tick as *const u8,
            netc_sinf as *const u8,
            netc_cosf as *const u8,
            netc_conv as *const u8,
            netc_conv_weight as *const u8,
            netc_rows as *const u8,
        ];
        for (name, address) in IMPORTS.iter().zip(helpers) {
            builder.symbol(*name, address);
        }
        let mut module = JITModule::new(builder);
        let config = module.target_config();
        let pointer = config.pointer_type();
        let signatures = abi::import_signatures(|| module.make_signature(), pointer);
        let import_ids: Vec<_> = IMPORTS
            .iter()
            .zip(&signatures)
            .map(|(name, sig)| {
                module
                    .declare_function(name, Linkage::Import, sig)
                    .expect("distinct imports")
            })
            .collect();
        // The piece function of each kernel cut into pieces, and the iterations of a piece.
        let mut context = module.make_context();
        let mut piece_ids = Vec::new();
        let mut piece_listing = String::new();
        for (k, kernel) in plan.kernels.iter().enumerate() {
            let Some(pieces) = kernel.kind().pieces(graph, max_batch) else {
                continue;
            };
            let k = KernelId::new(k);
            let signature = abi::piece_signature(|| module.make_signature(), pointer);
            let id = module
                .declare_function(
                    &format!("kernel{}_piece", k.index()),
                    Linkage::Local,
                    &signature,
                )
                .expect("one piece function per kernel");
            context.func.signature = signature;
            let imports: Vec<_> = import_ids
                .iter()
                .map(|&f| module.declare_func_in_func(f, &mut context.func))
                .collect();
            lower::lower_piece(graph, &plan, k, &mut context.func, &imports, config);
            if listing {
                piece_listing += &format!(
                    "\n; {k}: a piece of {}\n{}",
                    kernel.describe(graph, &plan),
                    context.func.display()
                );
            }
            module
                .define_function(id, &mut context)
                .map_err(|e| CompileError::Internal(format!("Cranelift rejected {k}: {e:?}")))?;
            module.clear_context(&mut context);
            piece_ids.push((id, pieces.per_piece));
        }
        let entry_sig = abi::entry_signature(|| module.make_signature(), pointer);
        let id = module
            .declare_function("step", Linkage::Export, &entry_sig)
            .expect("one entry point");
        context.func.signature = entry_sig;
        let imports: Vec<_> = import_ids
            .iter()
            .map(|&f| module.declare_func_in_func(f, &mut context.func))
            .collect();
        let (starts, resumed) =
            lower::lower(graph, &plan, &mut context.func, &imports, config, profile);
        // The function as printed, with a comment naming each kernel where its code begins
        // and each link where it resumes.
        let mut clif = String::new();
        if listing {
            let starts = starts.iter().enumerate().map(|(k, block)| {
                let kernel = plan.kernels[k].describe(graph, &plan);
                (block.to_string(), format!("\n; kernel {k}: {kernel}\n"))
            });
            let resumed = resumed.iter().enumerate().map(|(j, (block, k))| {
                let comment = format!(
                    "\n; link {}: after the pieces of {k}, on whichever worker ran the last\n",
                    j + 1
                );
                (block.to_string(), comment)
            });
            let named: std::collections::HashMap<String, String> = starts.chain(resumed).collect();
            for line in context.func.display().to_string().lines() {
                let block = line.split(['(', ':']).next().unwrap_or("");
                if let Some(comment) = named.get(block) {
                    clif += comment;
                }
                clif += line;
                clif.push('\n');
            }
        }
        module.define_function(id, &mut context).map_err(|e| {
            CompileError::Internal(format!("Cranelift rejected the step: {e:?}\n{clif}"))
        })?;
        let clif = clif + &piece_listing;
        module.clear_context(&mut context);
        module
            .finalize_definitions()
            .map_err(|e| CompileError::Internal(e.to_string()))?;
        let code = module.get_finalized_function(id);
        // SAFETY: `code` was compiled from `entry_signature`, which is `Entry` in the system ABI.
        let entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
        let jobs = piece_ids
            .into_iter()
            .map(|(id, per_piece)| {
                let code = module.get_finalized_function(id);
                // SAFETY: compiled from `piece_signature`, which is `PieceFn` in the system ABI.
                let function = unsafe { std::mem::transmute::<*const u8, PieceFn>(code) };
                (function, per_piece)
            })
            .collect();
        let finished_by = wanted
            .iter()
            .map(|id| {
                let buffer = plan.views[id.index()].as_ref().map(|v| v.base);
                (plan.kernels.iter()).rposition(|k| {
                    buffer.is_some_and(|b| k.writes().iter().any(|w| Base::Buffer(*w) == b))
                })
            })
            .collect::<Vec<_>>();
        // Without ticks nothing is reported before the end: every result finishes last.
        let mut finishing: Vec<usize> = (0..wanted.len()).collect();
        finishing.sort_by_key(|&i| match finished_by[i] {
            Some(k) if profile => k,
            _ => plan.kernels.len(),
        });
        Ok(Compiled {
            pool: std::sync::Arc::clone(pool),
            graph: graph.clone(),
            wanted: wanted.to_vec(),
            arena,
            plan,
            max_batch,
            entry,
            clif,
            jobs,
            ticks: profile,
            profile: std::sync::Mutex::default(),
            finished_by,
            finishing,
            reporting: None,
            _module: module,
        })
    }

    /// Runs the step on a batch and returns its results (see `run_into`).
    pub fn run(&mut self, bind: &Bindings<f32>) -> Result<Vec<Tensor<f32>>, Rejected> {
        let mut results = Vec::new();
        self.run_into(bind, &mut results)?;
        Ok(results)
    }

    /// Runs the step on a batch and copies its results into `results`, reusing its tensors'
    /// memory: a training loop that passes the same vector every step allocates nothing. The
    /// batch size and every bound tensor are checked first, and a mismatch is rejected before
    /// any generated code runs, so it only touches memory of the sizes it was planned for.
    pub fn run_into(
        &mut self,
        bind: &Bindings<f32>,
        results: &mut Vec<Tensor<f32>>,
    ) -> Result<(), Rejected> {
        self.run_with(bind, results, None)
    }

    /// `run_into`, calling `ready(i, values)` on this thread with result `i` as soon as the
    /// kernel that finishes it has run, while later kernels are still to run: each result
    /// once, in the order they are finished. (Code compiled without profiling has no ticks
    /// between kernels, so it reports every result at the end.)
    pub fn run_reporting(
        &mut self,
        bind: &Bindings<f32>,
        results: &mut Vec<Tensor<f32>>,
        ready: &mut Ready,
    ) -> Result<(), Rejected> {
        self.run_with(bind, results, Some(ready))
    }

    /// The order `run_reporting` reports the results in (by their index).
    pub fn finishing_order(&self) -> &[usize] {
        &self.finishing
    }

    fn run_with(
        &mut self,
        bind: &Bindings<f32>,
        results: &mut Vec<Tensor<f32>>,
        mut ready: Option<&mut Ready>,
    ) -> Result<(), Rejected> {
        let (batch, hypers, seed) = (bind.batch, bind.hypers, bind.seed);
        let (inputs, params, states) = (bind.inputs, bind.params, bind.states);
        if batch < 1 || batch > self.max_batch {
            return Err(Rejected(format!(
                "a batch of {batch} examples; this step was compiled for 1 to {}",
                self.max_batch
            )));
        }
        let declared = self
            .graph
            .inputs
            .iter()
            .chain(&self.graph.params)
            .chain(&self.graph.states);
        let bound: Vec<&Tensor<f32>> = inputs.iter().chain(params).chain(states).collect();
        if bound.len() != declared.clone().count() || hypers.len() < self.graph.hypers.len() {
            return Err(Rejected(
                "not every declared tensor and step scalar is bound".into(),
            ));
        }
        for (decl, tensor) in declared.zip(&bound) {
            let dims = crate::tensor::dims(&decl.shape, batch);
            if tensor.dims != dims || tensor.data.len() != dims.iter().product::<usize>() {
                return Err(Rejected(format!(
                    "`{}` has dimensions {:?}, not {dims:?}",
                    decl.name, tensor.dims
                )));
            }
        }
        let pointers: Vec<*const f32> = bound.iter().map(|t| t.data.as_ptr()).collect();
        let hypers: Vec<f32> = hypers.iter().map(|&h| h as f32).collect();
        let arena = self.arena.as_mut_ptr();
        if self.ticks {
            self.reporting_table(batch);
        }
        let mut ticks = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let mut run = Run {
            ticks: &mut ticks,
            report: match (&mut ready, &self.reporting) {
                (Some(ready), Some((_, table))) if self.ticks => Some(Reporting {
                    arena,
                    table,
                    ready: &mut **ready,
                }),
                _ => None,
            },
        };
        let chain = StepChain {
            entry: self.entry,
            jobs: &self.jobs,
            args: (
                pointers.as_ptr(),
                arena,
                batch as i64,
                hypers.as_ptr(),
                seed as i64,
                (&mut run as *mut Run).cast(),
            ),
            iterations: std::sync::atomic::AtomicI64::new(0),
        };
        // Sizes were checked above; the arena holds the plan for `max_batch` ≥ `batch`.
        self.pool.chain(&chain);
        let reported = run.report.is_some();
        drop(ticks);
        results.resize_with(self.wanted.len(), || Tensor::scalar(0.0));
        for (id, result) in self.wanted.iter().zip(results.iter_mut()) {
            let view = self.plan.views[id.index()]
                .as_ref()
                .expect("every node is planned");
            let Base::Buffer(buffer) = view.base else {
                unreachable!("wanted nodes end in buffers")
            };
            let dims = crate::tensor::dims(self.graph.shape(*id), batch);
            let start = self.plan.offset(buffer);
            let len: usize = dims.iter().product();
            if result.dims != dims {
                result.dims = dims;
            }
            result.data.clear();
            result
                .data
                .extend_from_slice(&self.arena.floats()[start..start + len]);
        }
        // What no tick reported, the run reports now.
        if let Some(ready) = ready {
            for &i in &self.finishing {
                if !reported || self.finished_by[i].is_none() {
                    ready(i, &results[i].data);
                }
            }
        }
        Ok(())
    }

    /// Per kernel, the results it finishes at `batch`, with their place in the arena.
    fn reporting_table(&mut self, batch: usize) -> &FinishTable {
        if self.reporting.as_ref().is_none_or(|(b, _)| *b != batch) {
            let mut table = vec![Vec::new(); self.plan.kernels.len()];
            for &i in &self.finishing {
                let Some(k) = self.finished_by[i] else {
                    continue;
                };
                let id = self.wanted[i];
                let view = self.plan.views[id.index()].as_ref().expect("planned");
                let Base::Buffer(buffer) = view.base else {
                    unreachable!("wanted nodes end in buffers")
                };
                let len = crate::tensor::dims(self.graph.shape(id), batch)
                    .iter()
                    .product();
                table[k].push((i, self.plan.offset(buffer), len));
            }
            self.reporting = Some((batch, table));
        }
        &self.reporting.as_ref().expect("just made").1
    }

    /// The time each kernel has taken so far (profiled code only), and resets the count.
    pub fn take_profile(&self) -> Profile {
        let times =
            std::mem::take(&mut self.profile.lock().unwrap_or_else(|e| e.into_inner()).times);
        let kernels = self
            .plan
            .kernels
            .iter()
            .enumerate()
            .map(|(k, kernel)| {
                (
                    kernel.describe(&self.graph, &self.plan),
                    times.get(k).copied().unwrap_or(0) as f64 / 1e9,
                )
            })
            .collect();
        Profile { kernels }
    }

    /// The printed program: one comment line per kernel naming the IR node it computes and
    /// its buffer, then the Cranelift IR of the step.
    pub fn listing(&self) -> String {
        kernel_lines(&self.graph, &self.plan) + &self.clif
    }

    /// The kernel lines of `listing` alone, from the plan, without generating code: what each
    /// kernel computes and fuses, for a reviewable record of every change to fusion.
    pub fn kernels_of(step: &Step, max_batch: usize) -> Result<String, CompileError> {
        let plan = super::plan::plan(&step.graph, max_batch, &step.results, 1)?;
        Ok(kernel_lines(&step.graph, &plan))
    }

    /// The floating-point operations of one run at `batch` (2 per multiply-add) in matrix
    /// products and in convolutions.
    pub fn flops(&self, batch: usize) -> Flops {
        let b = batch as i64;
        let mut flops = Flops::default();
        for kernel in &self.plan.kernels {
            match kernel {
                Kernel::Gemm(g) => {
                    flops.matmul += 2.0 * g.m.at(b) as f64 * g.n.at(b) as f64 * g.k.at(b) as f64;
                }
                Kernel::Conv(c) => {
                    let g = &c.geometry;
                    flops.conv +=
                        2.0 * g.outputs as f64 * g.patch() as f64 * g.columns().at(b) as f64;
                }
                Kernel::Map(_)
                | Kernel::Reduce(_)
                | Kernel::Copy(_)
                | Kernel::Pool(_)
                | Kernel::PoolGrad(_)
                | Kernel::Softmax(_) => {}
            }
        }
        flops
    }

    /// Floats in the arena (for the largest batch).
    pub fn arena_len(&self) -> usize {
        self.plan.arena
    }
}

/// A comment line on the arena, then one per kernel.
fn kernel_lines(graph: &Graph, plan: &Plan) -> String {
    let mut out = format!(
        "; {} kernels, arena of {} floats\n",
        plan.kernels.len(),
        plan.arena
    );
    for (k, kernel) in plan.kernels.iter().enumerate() {
        out += &format!("; kernel {k}: {}\n", kernel.describe(graph, plan));
    }
    out
}

//! The kinds of kernel a plan is made of. Each kind is a struct in a file of its own that owns
//! everything about it: what it reads and writes, how its work is cut into pieces, which
//! maps it can run on its pieces (its epilogue) and which sums it can compute from them, the
//! code it emits, and how the listing describes it. `Kernel` is the closed set of kinds;
//! `KernelKind` is what the planner, the fusion pass, the allocator, the lowering and the
//! listing ask of every kind.
//!
//! A new kind is a file here, a variant of `Kernel`, and the arms the compiler then asks for
//! (`Kernel::kind` and `kind_mut`, `fuse::with_epilogues`, `Compiled::flops`).
//! `KernelKind`'s required methods are what a kernel must answer to run correctly; its
//! provided methods are capabilities (splitting, an epilogue, sums) whose absence only makes a
//! kernel slower: it runs on one thread and fuses nothing.

mod conv;
mod copy;
mod gemm;
mod map;
mod pool;
mod reduce;
mod softmax;

pub use conv::{Conv, ConvPass, Geometry};
pub use copy::{Copy, Part};
pub use gemm::Gemm;
pub use map::{Expr, Map};
pub use pool::{Pool, PoolGrad};
pub use reduce::Reduce;
pub use softmax::Softmax;

use super::alloc::BufferId;
use super::layout::{Sym, View};
use super::lower::Lowerer;
use super::plan::Plan;
use crate::ir::{Graph, NodeId};
use cranelift_codegen::ir::Value;
use cranelift_frontend::FunctionBuilder;

/// One step of the compiled program.
#[derive(Clone, Debug)]
pub enum Kernel {
    Map(Map),
    Gemm(Gemm),
    Reduce(Reduce),
    Copy(Copy),
    Conv(Conv),
    Pool(Pool),
    PoolGrad(PoolGrad),
    Softmax(Softmax),
}

/// A kernel of a plan, by its index in `Plan::kernels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelId(u32);

impl KernelId {
    pub fn new(index: usize) -> KernelId {
        KernelId(u32::try_from(index).expect("fewer than 2^32 kernels"))
    }

    /// Its index into the plan's kernels.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for KernelId {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "kernel {}", self.0)
    }
}

/// The most pieces one kernel is cut into: more would only add claims and partial sums for
/// machines with more cores than a kernel at batch 256 has work for (see ARCHITECTURE.md).
pub const MAX_PIECES: i64 = 64;

/// Floats a piece of a memory-bound kernel (a map, pooling, a copy) writes at least: half the
/// size from which two pieces on two workers beat one thread, 2^15 floats as measured by
/// `examples/split_cutoff.rs` (between 2^14 and 2^17 over three runs). A kernel with less
/// than two pieces' work runs unsplit, on the thread that calls the step.
pub const PIECE_FLOATS: i64 = 1 << 14;

/// Multiply-adds a piece of a matrix product computes at least (as `PIECE_FLOATS`): two
/// pieces of the MLP's first product beat one call from 0.4 M to 1.6 M multiply-adds, and
/// its `[256, 10] @ [10, 256]` gradient (0.65 M) ran in 0.020 s per epoch in two pieces
/// against 0.037 s unsplit.
pub const PIECE_MACS: i64 = 1 << 18;

/// What a kernel's work is split along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Chunks of `chunk` images out of `images`.
    Chunks { images: Sym, chunk: i64 },
    /// The iterations of the kernel's outermost loop.
    Loop(Sym),
}

impl Share {
    /// `n` iterations, as the listing says them.
    fn unit(self, n: i64) -> String {
        match self {
            Share::Chunks { .. } if n == 1 => "1 chunk".into(),
            Share::Chunks { .. } => format!("{n} chunks"),
            Share::Loop(_) if n == 1 => "1 iteration".into(),
            Share::Loop(_) => format!("{n} iterations"),
        }
    }

    /// Iterations of the split loop (chunks, for `Chunks`) at a batch of `batch`.
    fn iterations(self, batch: i64) -> i64 {
        match self {
            Share::Chunks { images, chunk } => ceil_div(images.at(batch), chunk),
            Share::Loop(extent) => extent.at(batch),
        }
    }
}

/// `a / b` rounded up, for `a ≥ 0` and `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// How a kernel's work is cut into pieces for the pool: a fixed number of iterations of its
/// split loop per piece, chosen from the kernel's shape and never from the number of workers,
/// so that what each piece computes, and so every result, is the same on any machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pieces {
    pub along: Share,
    /// Iterations of the split loop per piece (the last piece may have fewer).
    pub per_piece: i64,
    /// Pieces at the largest batch: at least 2, at most `MAX_PIECES`.
    pub most: i64,
}

impl Pieces {
    /// Pieces of at least `least` units of work (floats or multiply-adds), an iteration of
    /// `along` being `work` units, in whole multiples of `granule` iterations, at most
    /// `MAX_PIECES` of them at a batch of `max_batch`; `None` when that makes fewer than two.
    pub fn cut(
        along: Share,
        work: i64,
        least: i64,
        granule: i64,
        max_batch: usize,
    ) -> Option<Pieces> {
        let iterations = along.iterations(max_batch as i64);
        if iterations < 2 {
            return None;
        }
        let round = |n: i64| ceil_div(n, granule).max(1) * granule;
        let least =
            round(ceil_div(least, work.max(1))).max(round(ceil_div(iterations, MAX_PIECES)));
        // As many pieces as that allows, then as even as whole granules make them.
        let per_piece = round(ceil_div(iterations, ceil_div(iterations, least)));
        let most = ceil_div(iterations, per_piece);
        (most >= 2).then_some(Pieces {
            along,
            per_piece,
            most,
        })
    }
}

/// A sum computed by the kernel whose pieces it sums, right after the epilogue, while they are
/// in cache: a bias gradient over the rows of a matrix product's output (or its epilogue's)
/// or over the images and each plane of a pooling gradient's epilogue output, or
/// cross-entropy's loss per example along each row of a softmax's epilogue output. When every
/// piece contributes to each sum, the first piece sums into `out` and piece `p` into part
/// `p - 1` of `partial`; the parts are then added to `out` in piece order, so the result does
/// not depend on which worker ran which piece.
#[derive(Clone, Debug)]
pub struct Sums {
    /// The reduction node.
    pub node: NodeId,
    pub out: BufferId,
    /// The buffer summed: the kernel's output or its epilogue's.
    pub input: BufferId,
    /// Floats of `out`: one per column, channel or row.
    pub len: Sym,
    /// The sums of pieces after the first (`len` floats each), when each sum has a part from
    /// each piece.
    pub partial: Option<BufferId>,
    /// Maps over the finished sums (the bias's update), run once they are complete.
    pub then: Vec<Map>,
}

/// What the planner, fusion, allocation, lowering and the listing ask of a kind of kernel.
pub trait KernelKind {
    /// A one-word name, for listings.
    fn name(&self) -> &'static str;

    /// The node the kernel computes.
    fn node(&self) -> NodeId;

    /// The buffers the kernel itself computes, before any epilogue: its output first.
    fn outputs(&self) -> Vec<BufferId>;

    /// The views the kernel itself reads (not its epilogue's).
    fn inputs(&self) -> Vec<&View>;

    /// What the listing says after the node's type: how it computes it, or nothing.
    fn detail(&self, graph: &Graph) -> String;

    /// Emits the kernel's code: all of it, or in a piece function the piece `l` names.
    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder);

    /// How the kernel's work is cut into pieces for the pool at batches up to `max_batch`, when
    /// it is large enough to be worth splitting (see `Pieces::cut`).
    fn pieces(&self, _graph: &Graph, _max_batch: usize) -> Option<Pieces> {
        None
    }

    /// Code the entry point runs once before the pool runs the pieces.
    fn before_pieces(&self, _l: &Lowerer, _b: &mut FunctionBuilder) {}

    /// Code the entry point runs once after the pool ran the pieces, given their number (see
    /// `Lowerer::dispatch`).
    fn after_pieces(&self, _l: &Lowerer, _b: &mut FunctionBuilder, _pieces: Value) {}

    /// The maps the kernel runs on each of its pieces, in order.
    fn epilogue(&self) -> &[Map] {
        &[]
    }

    /// Where a map goes that runs on the kernel's pieces, when `map` can (see `fuse`): it reads
    /// what the kernel writes, element for element, over the kernel's pieces.
    fn epilogue_for(&mut self, _graph: &Graph, _map: &Map) -> Option<&mut Vec<Map>> {
        None
    }

    /// What the listing says the epilogue runs on ("on each piece's rows").
    fn piece(&self) -> &'static str {
        ""
    }

    /// The rows and their length, for a kernel whose epilogue runs by rows.
    fn rows(&self) -> Option<(Sym, Sym)> {
        None
    }

    /// The sums the kernel computes from its pieces.
    fn sums(&self) -> Option<&Sums> {
        None
    }

    /// What the listing says the sums are taken over ("over the rows").
    fn summed(&self) -> &'static str {
        ""
    }

    /// For a sum over `axes` of its output or an epilogue's, contiguous with dimensions
    /// `input_dims`, that the kernel can compute from its pieces: where the sums go, their
    /// floats, and whether each sum has a part from each piece (then added in order).
    fn summing(
        &mut self,
        _graph: &Graph,
        _axes: &[usize],
        _input_dims: &[Sym],
    ) -> Option<(&mut Option<Sums>, Sym, bool)> {
        None
    }

    /// The kernel's complete result, once all its pieces are done (a bias gradient's sums, a
    /// summed weight gradient), and the maps that run on it then.
    fn finished(&mut self) -> Option<(NodeId, BufferId, &mut Vec<Map>)> {
        None
    }

    /// A buffer the kernel uses while it runs and that nothing reads after it.
    fn scratch(&self) -> Option<BufferId> {
        self.sums().and_then(|sums| sums.partial)
    }
}

impl Kernel {
    /// The kernel as its kind.
    pub fn kind(&self) -> &dyn KernelKind {
        match self {
            Kernel::Map(k) => k,
            Kernel::Gemm(k) => k,
            Kernel::Reduce(k) => k,
            Kernel::Copy(k) => k,
            Kernel::Conv(k) => k,
            Kernel::Pool(k) => k,
            Kernel::PoolGrad(k) => k,
            Kernel::Softmax(k) => k,
        }
    }

    /// The kernel as its kind, to add to its epilogue or sums.
    pub fn kind_mut(&mut self) -> &mut dyn KernelKind {
        match self {
            Kernel::Map(k) => k,
            Kernel::Gemm(k) => k,
            Kernel::Reduce(k) => k,
            Kernel::Copy(k) => k,
            Kernel::Conv(k) => k,
            Kernel::Pool(k) => k,
            Kernel::PoolGrad(k) => k,
            Kernel::Softmax(k) => k,
        }
    }

    /// The node this kernel computes.
    pub fn node(&self) -> NodeId {
        self.kind().node()
    }

    /// The buffer this kernel writes.
    pub fn out(&self) -> BufferId {
        self.kind().outputs()[0]
    }

    /// Every buffer the kernel writes for later kernels: its outputs, its epilogue's, its sums
    /// and the maps after them.
    pub fn writes(&self) -> Vec<BufferId> {
        let kind = self.kind();
        let mut writes = kind.outputs();
        writes.extend(kind.epilogue().iter().map(|map| map.out));
        if let Some(sums) = kind.sums() {
            writes.push(sums.out);
            writes.extend(sums.then.iter().map(|map| map.out));
        }
        writes
    }

    /// Every view the kernel reads, its epilogue and the maps after its sums included.
    pub fn reads(&self) -> Vec<&View> {
        let kind = self.kind();
        let mut reads = kind.inputs();
        reads.extend(kind.epilogue().iter().flat_map(|map| &map.args));
        let then = kind.sums().into_iter().flat_map(|s| &s.then);
        reads.extend(then.flat_map(|map| &map.args));
        reads
    }

    /// One line on what the kernel computes (see `describe`), and the pieces it is cut into.
    pub fn describe(&self, graph: &Graph, plan: &Plan) -> String {
        describe(self.kind(), graph, plan, true)
    }
}

/// One line on what a kernel computes: its kind, the IR node (and the nodes it fuses), the
/// node's type and `.net` line, the pieces it is cut into (when `pieces`: not for the maps it
/// runs on them), where its output goes in the arena, and what runs on its pieces.
fn describe(kind: &dyn KernelKind, graph: &Graph, plan: &Plan, pieces: bool) -> String {
    let node = graph.node(kind.node());
    let line = if let Some(origin) = graph.origin_text(node.origin) {
        format!(" ({origin})")
    } else {
        String::new()
    };
    let mut then: Vec<String> = kind
        .epilogue()
        .iter()
        .map(|map| describe(map, graph, plan, false))
        .collect();
    if let Some(sums) = kind.sums() {
        let summed = graph.node(sums.node);
        then.push(format!(
            "{} = {} : {}{} summed {} -> arena[{}..]",
            sums.node,
            summed.op,
            summed.dtype,
            summed.shape,
            kind.summed(),
            plan.offset(sums.out)
        ));
        then.extend(
            (sums.then.iter())
                .map(|map| format!("once summed, {}", describe(map, graph, plan, false))),
        );
    }
    let pieces = match kind.pieces(graph, plan.max_batch).filter(|_| pieces) {
        Some(p) => format!(
            " in up to {} pieces of {}",
            p.most,
            p.along.unit(p.per_piece)
        ),
        None => String::new(),
    };
    let then = if then.is_empty() {
        String::new()
    } else {
        format!("; then {}, {}", kind.piece(), then.join(", and "))
    };

    format!(
        "{} {} = {} : {}{}{}{line}{pieces} -> arena[{}..]{then}",
        kind.name(),
        kind.node(),
        node.op,
        node.dtype,
        node.shape,
        kind.detail(graph),
        plan.offset(kind.outputs()[0])
    )
}

//! The kinds of kernel a plan is made of. Each kind is a struct in a file of its own that owns
//! everything about it: what it reads and writes, how its work splits between workers, which
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
pub use copy::Copy;
pub use gemm::Gemm;
pub use map::{Expr, Map};
pub use pool::{Pool, PoolGrad};
pub use reduce::Reduce;
pub use softmax::Softmax;

use super::alloc::BufferId;
use super::layout::{dims, product, Sym, View};
use super::lower::Lowerer;
use super::plan::Plan;
use crate::ir::{Graph, NodeId};
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

/// The workers a kernel's work is split between (a convolution's each with its own im2col
/// buffer). The split does not depend on the number of threads, so neither do the results.
pub const WORKERS: i64 = 2;

/// Kernels writing fewer floats than this run on one thread: splitting costs more.
const SHARE_MIN: i64 = 1 << 16;

/// What a shared kernel's work is split along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Chunks of `chunk` images out of `images`.
    Chunks { images: Sym, chunk: i64 },
    /// The iterations of the kernel's outermost loop.
    Loop(Sym),
}

/// A sum computed by the kernel whose pieces it sums, right after the epilogue, while they are
/// in cache: a bias gradient over the rows of a matrix product's output (or its epilogue's)
/// or over the images and each plane of a pooling gradient's epilogue output, or
/// cross-entropy's loss per example along each row of a softmax's epilogue output. When both
/// workers contribute to each sum, the first sums into `out` and the second into `partial`,
/// which is then added to `out`, in that order whatever the thread count.
#[derive(Clone, Debug)]
pub struct Sums {
    /// The reduction node.
    pub node: NodeId,
    pub out: BufferId,
    /// The buffer summed: the kernel's output or its epilogue's.
    pub input: BufferId,
    /// Floats of `out`: one per column, channel or row.
    pub len: Sym,
    /// The second worker's sums, when each sum has a part from each worker.
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

    /// Emits the kernel's code: all of it, or in a share function the share `l` names.
    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder);

    /// The loop the kernel's work can be split along between workers.
    fn split(&self, _graph: &Graph) -> Option<Share> {
        None
    }

    /// Whether the kernel's work is split between workers at the largest batch: always for
    /// chunks of images, for a loop when it writes at least `SHARE_MIN` floats.
    fn shared(&self, graph: &Graph, max_batch: usize) -> bool {
        match self.split(graph) {
            Some(Share::Chunks { .. }) => true,
            Some(Share::Loop(_)) => {
                product(&dims(graph.shape(self.node()))).at(max_batch as i64) >= SHARE_MIN
            }
            None => false,
        }
    }

    /// Code the entry point runs once before the workers run their shares.
    fn before_shares(&self, _l: &Lowerer, _b: &mut FunctionBuilder) {}

    /// Code the entry point runs once after the workers ran their shares, before the sums'
    /// partial results are added (see `Lowerer::dispatch`).
    fn after_shares(&self, _l: &Lowerer, _b: &mut FunctionBuilder) {}

    /// The maps the kernel runs on each of its pieces, in order.
    fn epilogue(&self) -> &[Map] {
        &[]
    }

    /// Where a map goes that runs on the kernel's pieces, when `map` can (see `fuse`): it reads
    /// what the kernel writes, element for element, over the kernel's pieces.
    fn epilogue_for(&mut self, _graph: &Graph, _map: &Map) -> Option<&mut Vec<Map>> {
        None
    }

    /// What the listing says the epilogue runs on ("on each worker's rows").
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
    /// floats, and whether each sum has a part from each worker (then added in order).
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

    /// One line on what the kernel computes (see `describe`).
    pub fn describe(&self, graph: &Graph, plan: &Plan) -> String {
        describe(self.kind(), graph, plan)
    }
}

/// One line on what a kernel computes: its kind, the IR node (and the nodes it fuses), the
/// node's type and `.net` line, where its output goes in the arena, and what runs on its
/// pieces.
fn describe(kind: &dyn KernelKind, graph: &Graph, plan: &Plan) -> String {
    let node = graph.node(kind.node());
    let line = if node.line > 0 {
        format!(" (line {})", node.line)
    } else {
        String::new()
    };
    let mut then: Vec<String> = kind
        .epilogue()
        .iter()
        .map(|map| describe(map, graph, plan))
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
            (sums.then.iter()).map(|map| format!("once summed, {}", describe(map, graph, plan))),
        );
    }
    let then = if then.is_empty() {
        String::new()
    } else {
        format!("; then {}, {}", kind.piece(), then.join(", and "))
    };
    format!(
        "{} {} = {} : {}{}{}{line} -> arena[{}..]{then}",
        kind.name(),
        kind.node(),
        node.op,
        node.dtype,
        node.shape,
        kind.detail(graph),
        plan.offset(kind.outputs()[0])
    )
}

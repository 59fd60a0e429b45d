//! Planning: which nodes are views of others (reshape, broadcast, transpose), which need a
//! kernel and a buffer, and where each buffer lives in one arena sized for the largest batch.
//! Buffers are reused once their last reader has run (liveness, first fit).
//!
//! Convolutions are im2col and matrix products through the same GEMM as dense layers. A
//! direct convolution in generated code would be limited to Cranelift's 128-bit vectors and its
//! GEMM speed (a third of the `gemm` crate's here). im2col over the whole batch makes one large
//! product, but its matrix (25 MB for LeNet's first layer) streams from memory and the product
//! runs at a third of the core's speed; so each pass works through the batch a few images at a
//! time, with an im2col buffer of at most `SCRATCH` floats that stays in the core's cache
//! (measured here: 100–110 GFLOP/s for the chunked forward products, 38–46 unchunked). The
//! forward output is laid out `[O, N, OH·OW]`, which downstream kernels read as an
//! `[N, O, OH, OW]` view through strides, so the bias and activation that follow are one pass
//! that also writes the usual layout.
//!
//! Matrix products split between the two workers by rows of the output, rather than letting
//! the `gemm` crate split them its own way: each worker then runs the maps that consume the
//! product (the epilogue) on its own rows right after its half of the product, while they are
//! in its cache, and with one worker pool there is no second set of threads to wake. Alone,
//! the crate's own split is a few percent faster on the MLP's shapes; within the step, this
//! one is: 1.13 ms per MLP step against 1.58 with the crate splitting on its own threads.

use crate::ir::{Graph, NodeId, Op, PoolOp, ReduceOp};
use crate::shape::{Dim, Shape, Window};
use std::collections::HashMap;

/// A size or stride: `coef`, times the batch size when `batch` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    pub coef: i64,
    pub batch: bool,
}

impl Sym {
    pub const ZERO: Sym = Sym {
        coef: 0,
        batch: false,
    };

    pub fn fixed(n: i64) -> Sym {
        Sym {
            coef: n,
            batch: false,
        }
    }

    /// The value for a batch size.
    pub fn at(self, batch: i64) -> i64 {
        if self.batch {
            self.coef * batch
        } else {
            self.coef
        }
    }
}

/// The dimensions of a shape as `Sym`s.
pub fn dims(shape: &Shape) -> Vec<Sym> {
    shape
        .0
        .iter()
        .map(|&d| match d {
            Dim::Fixed(n) => Sym::fixed(n as i64),
            Dim::Batch => Sym {
                coef: 1,
                batch: true,
            },
        })
        .collect()
}

/// The product of sizes (at most one of which involves the batch).
pub fn product(sizes: &[Sym]) -> Sym {
    sizes.iter().fold(Sym::fixed(1), |acc, d| Sym {
        coef: acc.coef * d.coef,
        batch: acc.batch || d.batch,
    })
}

/// Merges adjacent axes that every view walks as one (the outer stride is the inner stride
/// times the inner size), so loops over them are fewer and the innermost one longer. `views`
/// holds one stride per axis for each view; the merged dims and strides are returned.
pub fn coalesce(dims: &[Sym], views: &[Vec<Sym>]) -> (Vec<Sym>, Vec<Vec<Sym>>) {
    let mut merged_dims: Vec<Sym> = Vec::new();
    let mut merged: Vec<Vec<Sym>> = vec![Vec::new(); views.len()];
    for axis in 0..dims.len() {
        let joins = merged_dims.last().is_some_and(|&last| {
            views.iter().zip(&merged).all(|(view, m)| {
                let (outer, inner) = (*m.last().expect("one stride per axis"), view[axis]);
                times(inner, dims[axis]) == Some(outer)
            }) && times(last, dims[axis]).is_some()
        });
        if joins {
            let last = merged_dims.last_mut().expect("checked above");
            *last = times(*last, dims[axis]).expect("checked above");
            for (view, m) in views.iter().zip(&mut merged) {
                *m.last_mut().expect("one stride per axis") = view[axis];
            }
        } else {
            merged_dims.push(dims[axis]);
            for (view, m) in views.iter().zip(&mut merged) {
                m.push(view[axis]);
            }
        }
    }
    (merged_dims, merged)
}

/// `a · b`, unless both involve the batch size.
fn times(a: Sym, b: Sym) -> Option<Sym> {
    (!(a.batch && b.batch)).then_some(Sym {
        coef: a.coef * b.coef,
        batch: a.batch || b.batch,
    })
}

/// Row-major strides of a shape.
pub fn contiguous(shape: &Shape) -> Vec<Sym> {
    row_major(&dims(shape))
}

/// Row-major strides for sizes (at most one of which involves the batch).
pub fn row_major(sizes: &[Sym]) -> Vec<Sym> {
    (0..sizes.len()).map(|i| product(&sizes[i + 1..])).collect()
}

/// A buffer of the arena, by index into `Plan::buffers` (its offset) and the planner's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(u32);

/// A new buffer of `floats` (a size in terms of the batch), recorded in `sizes`.
fn new_buffer(sizes: &mut Vec<Sym>, floats: Sym) -> BufferId {
    sizes.push(floats);
    BufferId(u32::try_from(sizes.len() - 1).expect("fewer than 2^32 buffers"))
}

impl BufferId {
    /// Its index into the plan's tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value's elements come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Base {
    /// Slot `i` of the pointer table: inputs, then parameters, then states.
    External(usize),
    /// A buffer of the arena.
    Buffer(BufferId),
    Const(f32),
    Hyper(usize),
    BatchSize,
}

/// A value as its base and a stride per axis of the value's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub base: Base,
    pub strides: Vec<Sym>,
}

impl View {
    fn is_contiguous(&self, shape: &Shape) -> bool {
        matches!(self.base, Base::External(_) | Base::Buffer(_))
            && self.strides == contiguous(shape)
    }

    fn is_scalar(&self) -> bool {
        matches!(self.base, Base::Const(_) | Base::Hyper(_) | Base::BatchSize)
    }
}

/// The deepest chain of operations one map fuses: a longer chain (thousands of equations
/// `h = h + b`) becomes several maps, so that fusing, emitting and compiling stay linear in
/// the graph and recursion over an expression stays shallow.
const MAX_FUSED_DEPTH: usize = 32;

/// How an elementwise kernel combines its arguments, per element.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Argument `i` of the kernel.
    Read(usize),
    /// A node's operation applied to sub-expressions.
    Apply(NodeId, Vec<Expr>),
}

impl Expr {
    /// Every node applied in the expression, outermost first.
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            Expr::Read(_) => vec![],
            Expr::Apply(node, children) => std::iter::once(*node)
                .chain(children.iter().flat_map(Expr::nodes))
                .collect(),
        }
    }

    /// Operations on the longest path from the result to an argument.
    fn depth(&self) -> usize {
        match self {
            Expr::Read(_) => 0,
            Expr::Apply(_, children) => 1 + children.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }

    fn shifted(self, by: usize) -> Expr {
        match self {
            Expr::Read(i) => Expr::Read(i + by),
            Expr::Apply(node, children) => {
                Expr::Apply(node, children.into_iter().map(|c| c.shifted(by)).collect())
            }
        }
    }
}

/// One step of the compiled program.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// An elementwise computation over `node`'s shape, written to `out` (contiguous): `expr`
    /// combines the `args` (views in the output's axes), fusing a chain of operations.
    Map {
        node: NodeId,
        out: BufferId,
        args: Vec<View>,
        expr: Expr,
    },
    /// `out = a @ b`: `a` is `[m, k]` and `b` `[k, n]`, both strided. A large product is
    /// split between the workers by rows of `out`.
    Gemm {
        node: NodeId,
        out: BufferId,
        a: View,
        b: View,
        m: Sym,
        n: Sym,
        k: Sym,
        /// Maps over the output (a bias and activation, an optimizer update), run in order by
        /// each worker on its rows right after its product, while they are in cache.
        epilogue: Vec<Kernel>,
        /// The column sums of the epilogue's output (or of the product's): a bias gradient.
        sums: Option<Sums>,
    },
    /// A reduction of `input` (in its own axes) over `axes`.
    Reduce {
        node: NodeId,
        out: BufferId,
        op: ReduceOp,
        input: View,
        input_dims: Vec<Sym>,
        axes: Vec<usize>,
    },
    /// A strided view copied into a contiguous buffer of `dims`.
    Copy {
        node: NodeId,
        out: BufferId,
        input: View,
        dims: Vec<Sym>,
    },
    /// One pass of a convolution, a chunk of `chunk` images at a time through an im2col buffer
    /// (`[C·KH·KW, chunk·OH·OW]`, one per worker in `scratch`): see `ConvPass` for what `input`
    /// and `other` are.
    Conv {
        node: NodeId,
        out: BufferId,
        scratch: BufferId,
        pass: ConvPass,
        input: View,
        other: View,
        conv: Conv,
        chunk: i64,
        /// Maps over the output, run in order: in the forward pass the bias and activation that
        /// follow, on each chunk's images right after its product, while they are in cache; in
        /// the weight-gradient pass the weight's update, once the gradient is summed.
        epilogue: Vec<Kernel>,
    },
    /// Max or average pooling of a contiguous `[N, C, H, W]` input.
    Pool {
        node: NodeId,
        out: BufferId,
        input: View,
        op: PoolOp,
        conv: Conv,
    },
    /// Pooling's gradient with respect to its input: `input` is the pooled input and `grad`
    /// the output's gradient, both contiguous.
    PoolGrad {
        node: NodeId,
        out: BufferId,
        input: View,
        grad: View,
        op: PoolOp,
        conv: Conv,
        /// Maps over the gradient (the activation's gradient before the pooling), run in order
        /// on each plane as soon as its windows are done.
        epilogue: Vec<Kernel>,
        /// The per-channel sums of the epilogue's output: a convolution's bias gradient.
        sums: Option<Sums>,
    },
    /// Softmax or log-softmax of a contiguous input over one axis, seen as
    /// `[outer, len, inner]`; with a `partner`, the other of the two as well, into its own
    /// buffer, from the same exponentials (cross-entropy needs log-softmax for the loss and,
    /// once simplified, softmax for the gradient).
    Softmax {
        node: NodeId,
        out: BufferId,
        input: View,
        outer: Sym,
        len: Sym,
        inner: Sym,
        log: bool,
        partner: Option<(NodeId, BufferId)>,
        /// Maps over the results (cross-entropy's terms and its gradient), run in order on
        /// each group of rows as soon as the group is done, when the axis is the innermost.
        epilogue: Vec<Kernel>,
        /// The sums along each row of an epilogue's output: cross-entropy's loss per example.
        sums: Option<RowSums>,
    },
}

/// The sums along each row of a softmax epilogue's output, in the interpreter's order,
/// computed as soon as the row is done.
#[derive(Clone, Debug)]
pub struct RowSums {
    /// The reduction node (a sum over axis 1).
    pub node: NodeId,
    pub out: BufferId,
    /// The buffer summed.
    pub input: BufferId,
}

/// A bias gradient computed by the kernel whose pieces it sums, from each worker's pieces
/// right after the epilogue, while they are in cache: a matrix product's output (or its
/// epilogue's) summed over the rows, or a pooling gradient's epilogue output summed over the
/// images and each plane. The first worker sums into `out` and the second into `partial`,
/// which is then added to `out`, in that order whatever the thread count.
#[derive(Clone, Debug)]
pub struct Sums {
    /// The reduction node (over axis 0 of a matrix, or axes 0, 2 and 3 of images).
    pub node: NodeId,
    pub out: BufferId,
    /// The buffer summed: the kernel's output or its epilogue's.
    pub input: BufferId,
    /// The second worker's sums: one float per column or channel.
    pub partial: BufferId,
    /// Maps over the finished sums (the bias's update), run once they are complete.
    pub then: Vec<Kernel>,
}

/// The alignment of every buffer in the arena, in floats: a 64-byte cache line.
pub const ALIGN: usize = 16;

/// Floats in a convolution's im2col buffer: a chunk of images whose patches fit the core's
/// cache next to the chunk's output.
const SCRATCH: i64 = 1 << 16;

/// The workers a kernel's work is split between (a convolution's each with its own im2col
/// buffer). The split does not depend on the number of threads, so neither do the results.
pub const WORKERS: i64 = 2;

/// Kernels writing fewer floats than this run on one thread: splitting costs more.
const SHARE_MIN: i64 = 1 << 16;

/// Matrix products with fewer multiply-adds than this run on one thread (measured here).
const GEMM_SHARE_MIN: i64 = 1 << 19;

/// Softmax over fewer elements than this runs on one thread.
const SOFTMAX_SHARE_MIN: i64 = 1 << 11;

/// What a shared kernel's work is split along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Chunks of `chunk` images out of `images`.
    Chunks { images: Sym, chunk: i64 },
    /// The iterations of the kernel's outermost loop.
    Loop(Sym),
}

/// Which product a convolution kernel computes, per chunk of images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// `input` is x `[N, C, H, W]`, `other` the weight `[O, C, KH, KW]`; the output is
    /// `[O, N, OH·OW]`: weight @ im2col(x).
    Forward,
    /// `input` is x, `other` the output gradient as `[O, N, OH·OW]`; the output is the weight's
    /// gradient, summed over the chunks in order: dy @ im2col(x)ᵀ.
    GradWeight,
    /// `input` is the output gradient as `[O, N, OH·OW]`, `other` the weight; the output is x's
    /// gradient `[N, C, H, W]`: col2im(weightᵀ @ dy).
    GradInput,
}

/// The geometry of a convolution or pooling window over `[N, C, H, W]`, with `O` output
/// channels (equal to `C` for pooling) and an output of `OH × OW` positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv {
    pub batch: Sym,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub outputs: i64,
    pub out_height: i64,
    pub out_width: i64,
    pub window: Window,
}

impl Conv {
    /// From the input shape, the output (or output gradient) shape and the window, whose
    /// kernel size is the weight's for a convolution.
    fn new(input: &Shape, output: &Shape, window: Window) -> Conv {
        let fixed = |shape: &Shape, axis| shape.fixed_dim(axis).expect("a fixed dimension") as i64;
        Conv {
            batch: dims(input)[0],
            channels: fixed(input, 1),
            height: fixed(input, 2),
            width: fixed(input, 3),
            outputs: fixed(output, 1),
            out_height: fixed(output, 2),
            out_width: fixed(output, 3),
            window,
        }
    }

    /// Rows of an im2col matrix: one per (channel, kernel row, kernel column).
    pub fn patch(&self) -> i64 {
        self.channels * (self.window.kernel[0] * self.window.kernel[1]) as i64
    }

    /// Output positions per image.
    pub fn positions(&self) -> i64 {
        self.out_height * self.out_width
    }

    /// Floats of one worker's im2col buffer for chunks of `chunk` images. The second worker's
    /// weight-gradient sum follows both workers' buffers, at `WORKERS` times this.
    pub fn im2col_floats(&self, chunk: i64) -> i64 {
        chunk * self.patch() * self.positions()
    }

    /// Output positions of the batch: every position of every image.
    pub fn columns(&self) -> Sym {
        Sym {
            coef: self.batch.coef * self.positions(),
            batch: self.batch.batch,
        }
    }

    /// Floats of an output (or output gradient) laid out `[O, N, OH·OW]`.
    fn by_channel(&self) -> Sym {
        Sym {
            coef: self.outputs * self.columns().coef,
            batch: self.batch.batch,
        }
    }
}

impl Kernel {
    /// The node this kernel computes.
    pub fn node(&self) -> NodeId {
        match self {
            Kernel::Map { node, .. }
            | Kernel::Gemm { node, .. }
            | Kernel::Reduce { node, .. }
            | Kernel::Copy { node, .. }
            | Kernel::Conv { node, .. }
            | Kernel::Pool { node, .. }
            | Kernel::PoolGrad { node, .. }
            | Kernel::Softmax { node, .. } => *node,
        }
    }

    /// The buffer this kernel writes.
    pub fn out(&self) -> BufferId {
        match self {
            Kernel::Map { out, .. }
            | Kernel::Gemm { out, .. }
            | Kernel::Reduce { out, .. }
            | Kernel::Copy { out, .. }
            | Kernel::Conv { out, .. }
            | Kernel::Pool { out, .. }
            | Kernel::PoolGrad { out, .. }
            | Kernel::Softmax { out, .. } => *out,
        }
    }

    /// A map's loop nest: its output's dimensions, merged where every operand allows, and the
    /// strides over them of the output and then of each argument. One-hot needs the class
    /// index, so a map that applies it keeps its axes.
    pub fn map_layout(&self, graph: &Graph) -> (Vec<Sym>, Vec<Vec<Sym>>) {
        let Kernel::Map {
            node, args, expr, ..
        } = self
        else {
            unreachable!("only maps have a map layout")
        };
        let shape = graph.shape(*node);
        let mut views = vec![contiguous(shape)];
        views.extend(args.iter().map(|a| a.strides.clone()));
        let one_hot = expr
            .nodes()
            .iter()
            .any(|n| matches!(graph.node(*n).op, Op::OneHot { .. }));
        if one_hot {
            (dims(shape), views)
        } else {
            coalesce(&dims(shape), &views)
        }
    }

    /// The loop a kernel's work can be split along between workers: the chunks of a
    /// convolution, the planes of pooling, the outermost axis of a map.
    pub fn split(&self, graph: &Graph) -> Option<Share> {
        match self {
            Kernel::Conv { conv, chunk, .. } => Some(Share::Chunks {
                images: conv.batch,
                chunk: *chunk,
            }),
            Kernel::Pool { conv, .. } | Kernel::PoolGrad { conv, .. } => Some(Share::Loop(Sym {
                coef: conv.batch.coef * conv.channels,
                batch: conv.batch.batch,
            })),
            Kernel::Map { .. } => self.map_layout(graph).0.first().map(|&d| Share::Loop(d)),
            Kernel::Gemm { m, .. } => Some(Share::Loop(*m)),
            Kernel::Softmax { outer, .. } => Some(Share::Loop(*outer)),
            _ => None,
        }
    }

    /// Whether the kernel's work is split between workers: always for a convolution, for
    /// matrix products of at least `GEMM_SHARE_MIN` multiply-adds, and for pooling and maps
    /// that write at least `SHARE_MIN` floats, at the largest batch.
    pub fn shared(&self, graph: &Graph, max_batch: usize) -> bool {
        let floats = product(&dims(graph.shape(self.node()))).at(max_batch as i64);
        match self {
            Kernel::Gemm { k, .. } => return floats * k.at(max_batch as i64) >= GEMM_SHARE_MIN,
            // About twenty operations per element, and more in its epilogue.
            Kernel::Softmax { .. } => return floats >= SOFTMAX_SHARE_MIN,
            _ => {}
        }
        match self.split(graph) {
            Some(Share::Chunks { .. }) => true,
            Some(Share::Loop(_)) => floats >= SHARE_MIN,
            None => false,
        }
    }

    /// Every buffer the kernel writes for later kernels: its output, and a softmax's partner.
    pub fn writes(&self) -> Vec<BufferId> {
        let mut writes = self.outputs();
        writes.extend(self.epilogue().iter().map(Kernel::out));
        if let Some(sums) = self.sums() {
            writes.push(sums.out);
            writes.extend(sums.then.iter().map(Kernel::out));
        }
        if let Kernel::Softmax {
            sums: Some(sums), ..
        } = self
        {
            writes.push(sums.out);
        }
        writes
    }

    /// The bias gradient a product or a pooling gradient sums from its pieces.
    pub fn sums(&self) -> Option<&Sums> {
        match self {
            Kernel::Gemm { sums, .. } | Kernel::PoolGrad { sums, .. } => sums.as_ref(),
            _ => None,
        }
    }

    /// The buffers the kernel itself computes, before any epilogue: its output, and a
    /// softmax's partner.
    pub fn outputs(&self) -> Vec<BufferId> {
        match self {
            Kernel::Softmax {
                out,
                partner: Some((_, other)),
                ..
            } => vec![*out, *other],
            _ => vec![self.out()],
        }
    }

    /// The rows of a kernel whose epilogue runs by rows, and their length: a matrix product's,
    /// and a softmax's over its innermost axis.
    pub fn rows(&self) -> Option<(Sym, Sym)> {
        match self {
            Kernel::Gemm { m, n, .. } => Some((*m, *n)),
            Kernel::Softmax {
                outer, len, inner, ..
            } if *inner == Sym::fixed(1) => Some((*outer, *len)),
            _ => None,
        }
    }

    /// The maps a matrix product, convolution, pooling gradient or softmax runs on each of
    /// its workers' rows, chunks, planes or groups of rows.
    pub fn epilogue(&self) -> &[Kernel] {
        match self {
            Kernel::Gemm { epilogue, .. }
            | Kernel::Conv { epilogue, .. }
            | Kernel::PoolGrad { epilogue, .. }
            | Kernel::Softmax { epilogue, .. } => epilogue,
            _ => &[],
        }
    }

    /// A buffer the kernel uses while it runs and that nothing reads after it.
    pub fn scratch(&self) -> Option<BufferId> {
        match self {
            Kernel::Conv { scratch, .. } => Some(*scratch),
            _ => self.sums().map(|sums| sums.partial),
        }
    }

    /// A one-word name of the kernel's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Kernel::Map { .. } => "map",
            Kernel::Gemm { .. } => "gemm",
            Kernel::Reduce { .. } => "reduce",
            Kernel::Copy { .. } => "copy",
            Kernel::Conv { .. } => "conv",
            Kernel::Pool { .. } => "pool",
            Kernel::PoolGrad { .. } => "pool_grad",
            Kernel::Softmax { .. } => "softmax",
        }
    }

    /// Every view the kernel reads, its epilogue and the maps after its sums included.
    fn reads(&self) -> Vec<&View> {
        let mut reads: Vec<&View> = match self {
            Kernel::Map { args, .. } => args.iter().collect(),
            Kernel::Gemm { a, b, .. } => vec![a, b],
            Kernel::PoolGrad { input, grad, .. } => vec![input, grad],
            Kernel::Conv { input, other, .. } => vec![input, other],
            Kernel::Softmax { input, .. }
            | Kernel::Reduce { input, .. }
            | Kernel::Copy { input, .. }
            | Kernel::Pool { input, .. } => vec![input],
        };
        reads.extend(self.epilogue().iter().flat_map(Kernel::reads));
        let then = self.sums().into_iter().flat_map(|s| &s.then);
        reads.extend(then.flat_map(Kernel::reads));
        reads
    }
}

/// The compiled program's plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kernels: Vec<Kernel>,
    /// Each buffer's offset in the arena, in floats.
    pub buffers: Vec<usize>,
    /// Floats in the arena for the largest batch.
    pub arena: usize,
    /// Where each graph node can be read.
    pub views: Vec<Option<View>>,
}

impl Plan {
    /// Where a buffer starts in the arena, in floats.
    pub fn offset(&self, buffer: BufferId) -> usize {
        self.buffers[buffer.index()]
    }
}

/// Why a graph was not compiled.
#[derive(Clone, Debug, PartialEq)]
pub enum CompileError {
    /// The step's buffers for the largest batch need more memory than the process may use
    /// (`None`: more than 2^64 bytes).
    TooLarge { bytes: Option<u64> },
    /// Cranelift has no code generator for this machine.
    NoTarget(String),
    /// A bug in netc: the planner or Cranelift rejected what netc generated.
    Internal(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            CompileError::TooLarge { bytes } => write!(
                f,
                "its buffers need {}, more than this process may use ({})",
                bytes.map_or("more than 2^64 bytes".into(), crate::memory::gib),
                crate::memory::gib(crate::memory::limit())
            ),
            CompileError::NoTarget(why) => write!(f, "no code generator for this machine: {why}"),
            CompileError::Internal(why) => write!(f, "internal compiler error: {why}"),
        }
    }
}

/// The most elements one example of a tensor may hold, as the checker allows (E0310).
const MAX_EXAMPLE_ELEMENTS: i64 = 1 << 34;

/// Plans `graph` for batches of at most `max_batch` examples, so that `wanted` nodes end up in
/// contiguous buffers.
pub fn plan(graph: &Graph, max_batch: usize, wanted: &[NodeId]) -> Result<Plan, CompileError> {
    // Batched sizes are coefficient × batch: with these two bounds every size, offset and
    // byte count below stays far from overflowing 64 bits (2^34 · 2^24 · 4 = 2^60).
    let too_large = CompileError::TooLarge { bytes: None };
    if max_batch == 0 || max_batch as u64 > crate::check::model::MAX_BATCH {
        return Err(too_large);
    }
    for node in &graph.nodes {
        let elements = node
            .shape
            .0
            .iter()
            .map(|d| match d {
                crate::shape::Dim::Batch => 1,
                crate::shape::Dim::Fixed(n) => *n,
            })
            .try_fold(1i64, |n, d| n.checked_mul(i64::try_from(d).ok()?));
        match elements {
            Some(n) if n <= MAX_EXAMPLE_ELEMENTS => {}
            _ => return Err(too_large),
        }
    }
    let mut p = Planner {
        graph,
        views: vec![None; graph.nodes.len()],
        pending: vec![None; graph.nodes.len()],
        kernels: Vec::new(),
        sizes: Vec::new(),
        by_output_channel: HashMap::new(),
    };
    let fusible = fusible(graph, wanted);
    let externals = [graph.inputs.len(), graph.params.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        let view = match &node.op {
            Op::Input(k) => p.external(*k, &node.shape),
            Op::Param(k) => p.external(externals[0] + k, &node.shape),
            Op::State(k) => p.external(externals[0] + externals[1] + k, &node.shape),
            Op::Const(c) => View {
                base: Base::Const(c.0 as f32),
                strides: vec![],
            },
            Op::Hyper(k) => View {
                base: Base::Hyper(*k),
                strides: vec![],
            },
            Op::BatchSize => View {
                base: Base::BatchSize,
                strides: vec![],
            },
            Op::Reshape(_) => {
                let source = p.contiguous_view(node.args[0]);
                View {
                    base: source.base,
                    strides: contiguous(&node.shape),
                }
            }
            Op::Broadcast(target) => p.broadcast(node.args[0], target),
            Op::Transpose(perm) => {
                let source = p.view(node.args[0]).clone();
                let strides = perm.iter().map(|&a| source.strides[a]).collect();
                View {
                    base: source.base,
                    strides,
                }
            }
            Op::Unary(_) | Op::Binary(_) => {
                // Fuse: an argument that is itself elementwise and used only here is inlined.
                let mut args = Vec::new();
                let mut children = Vec::new();
                for &a in &node.args {
                    // A pending map is used once, so it moves into its consumer; a one-hot
                    // encoding is inlined into each of its consumers, so it is copied.
                    let pending = match graph.node(a).op {
                        Op::OneHot { .. } => p.pending[a.index()].clone(),
                        _ => p.pending[a.index()].take(),
                    };
                    match pending {
                        Some((expr, leaves)) => {
                            children.push(expr.shifted(args.len()));
                            args.extend(leaves);
                        }
                        None => {
                            children.push(Expr::Read(args.len()));
                            args.push(p.view(a).clone());
                        }
                    }
                }
                let expr = Expr::Apply(id, children);
                if fusible[i] && expr.depth() < MAX_FUSED_DEPTH {
                    p.pending[i] = Some((expr, args));
                    continue;
                }
                p.kernel(id, |out| Kernel::Map {
                    node: id,
                    out,
                    args,
                    expr,
                })
            }
            Op::DropoutMask { .. } => p.kernel(id, |out| Kernel::Map {
                node: id,
                out,
                args: vec![],
                expr: Expr::Apply(id, vec![]),
            }),
            Op::OneHot { .. } => {
                // The labels, read along the batch axis only.
                let labels = p.contiguous_view(node.args[0]);
                let args = vec![View {
                    base: labels.base,
                    strides: vec![labels.strides[0], Sym::ZERO],
                }];
                let expr = Expr::Apply(id, vec![Expr::Read(0)]);
                if fusible[i] {
                    p.pending[i] = Some((expr, args));
                    continue;
                }
                p.kernel(id, |out| Kernel::Map {
                    node: id,
                    out,
                    args,
                    expr,
                })
            }
            Op::MatMul => {
                let (a, b) = (p.gemm_view(node.args[0]), p.gemm_view(node.args[1]));
                let [m, k] = [
                    dims(graph.shape(node.args[0]))[0],
                    dims(graph.shape(node.args[0]))[1],
                ];
                let n = dims(graph.shape(node.args[1]))[1];
                p.kernel(id, |out| Kernel::Gemm {
                    node: id,
                    out,
                    a,
                    b,
                    m,
                    n,
                    k,
                    epilogue: Vec::new(),
                    sums: None,
                })
            }
            Op::Reduce(op, axes) => {
                let input = p.view(node.args[0]).clone();
                let input_dims = dims(graph.shape(node.args[0]));
                let (op, axes) = (*op, axes.clone());
                p.kernel(id, |out| Kernel::Reduce {
                    node: id,
                    out,
                    op,
                    input,
                    input_dims,
                    axes,
                })
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                if p.views[i].is_some() {
                    // Computed with its partner.
                    continue;
                }
                let sizes = dims(graph.shape(node.args[0]));
                let input = p.contiguous_view(node.args[0]);
                let log = matches!(node.op, Op::LogSoftmax { .. });
                let partner = graph.nodes[i + 1..].iter().position(|other| {
                    other.args == node.args
                        && match other.op {
                            Op::Softmax { axis: a } => log && a == *axis,
                            Op::LogSoftmax { axis: a } => !log && a == *axis,
                            _ => false,
                        }
                });
                let partner = partner.map(|offset| {
                    let other = NodeId((i + 1 + offset) as u32);
                    let buffer = p.buffer(product(&dims(graph.shape(other))));
                    p.views[other.index()] = Some(p.out_view(other, buffer));
                    (other, buffer)
                });
                p.kernel(id, |out| Kernel::Softmax {
                    node: id,
                    out,
                    input,
                    outer: product(&sizes[..*axis]),
                    len: sizes[*axis],
                    inner: product(&sizes[*axis + 1..]),
                    log,
                    partner,
                    epilogue: Vec::new(),
                    sums: None,
                })
            }
            Op::Conv2d(window) => {
                let (x, w) = (node.args[0], node.args[1]);
                let conv = Conv::new(graph.shape(x), &node.shape, *window);
                let (input, other) = (p.contiguous_view(x), p.contiguous_view(w));
                let out = p.buffer(conv.by_channel());
                p.conv(id, out, ConvPass::Forward, input, other, conv);
                View {
                    base: Base::Buffer(out),
                    strides: vec![
                        Sym::fixed(conv.positions()),
                        conv.columns(),
                        Sym::fixed(conv.out_width),
                        Sym::fixed(1),
                    ],
                }
            }
            Op::Conv2dGradWeight(window) => {
                let (x, dy) = (node.args[0], node.args[1]);
                let conv = Conv::new(graph.shape(x), graph.shape(dy), *window);
                let input = p.contiguous_view(x);
                let dy = p.by_output_channel(dy, conv);
                let out = p.buffer(product(&dims(&node.shape)));
                p.conv(id, out, ConvPass::GradWeight, input, dy, conv);
                p.out_view(id, out)
            }
            Op::Conv2dGradInput(window, input) => {
                let (dy, w) = (node.args[0], node.args[1]);
                let conv = Conv::new(input, graph.shape(dy), *window);
                let dy = p.by_output_channel(dy, conv);
                let other = p.contiguous_view(w);
                let out = p.buffer(product(&dims(&node.shape)));
                p.conv(id, out, ConvPass::GradInput, dy, other, conv);
                p.out_view(id, out)
            }
            Op::Pool(op, window) => {
                let x = node.args[0];
                let conv = Conv::new(graph.shape(x), &node.shape, *window);
                let input = p.contiguous_view(x);
                let op = *op;
                p.kernel(id, |out| Kernel::Pool {
                    node: id,
                    out,
                    input,
                    op,
                    conv,
                })
            }
            Op::PoolGrad(op, window) => {
                let (x, dy) = (node.args[0], node.args[1]);
                let conv = Conv::new(graph.shape(x), graph.shape(dy), *window);
                let (input, grad) = (p.contiguous_view(x), p.contiguous_view(dy));
                let op = *op;
                p.kernel(id, |out| Kernel::PoolGrad {
                    node: id,
                    out,
                    input,
                    grad,
                    op,
                    conv,
                    epilogue: Vec::new(),
                    sums: None,
                })
            }
        };
        p.views[i] = Some(view);
    }
    // Results must be readable as contiguous buffers of their own.
    for &id in wanted {
        let shape = graph.shape(id).clone();
        let view = p.view(id).clone();
        if !matches!(view.base, Base::Buffer(_)) || !view.is_contiguous(&shape) {
            p.materialize(id, view);
        }
    }
    let kernels = with_epilogues(graph, p.kernels, &mut p.sizes);
    let (buffers, arena) =
        allocate(&kernels, &p.sizes, &p.views, wanted, max_batch).ok_or(too_large)?;
    Ok(Plan {
        kernels,
        buffers,
        arena,
        views: p.views,
    })
}

struct Planner<'a> {
    graph: &'a Graph,
    views: Vec<Option<View>>,
    /// Elementwise nodes waiting to be inlined into their one consumer: expression and leaves.
    pending: Vec<Option<(Expr, Vec<View>)>>,
    kernels: Vec<Kernel>,
    sizes: Vec<Sym>,
    /// Output gradients copied into `[O, N, P]` order, shared by both convolution gradients.
    by_output_channel: HashMap<NodeId, BufferId>,
}

/// A view with the given strides.
fn strided<const R: usize>(base: Base, strides: [Sym; R]) -> View {
    View {
        base,
        strides: strides.to_vec(),
    }
}

impl Planner<'_> {
    fn view(&self, id: NodeId) -> &View {
        self.views[id.index()]
            .as_ref()
            .unwrap_or_else(|| panic!("{id} = {} is not planned", self.graph.node(id).op))
    }

    fn external(&self, slot: usize, shape: &Shape) -> View {
        View {
            base: Base::External(slot),
            strides: contiguous(shape),
        }
    }

    /// A new buffer of `floats`.
    fn buffer(&mut self, floats: Sym) -> BufferId {
        new_buffer(&mut self.sizes, floats)
    }

    /// A convolution pass writing `out`, with its own im2col buffer for a chunk of images.
    fn conv(
        &mut self,
        node: NodeId,
        out: BufferId,
        pass: ConvPass,
        input: View,
        other: View,
        conv: Conv,
    ) {
        let chunk = (SCRATCH / conv.im2col_floats(1)).max(1);
        // An im2col buffer per worker, then the second worker's weight-gradient sum.
        let partial = if pass == ConvPass::GradWeight {
            conv.outputs * conv.patch()
        } else {
            0
        };
        let scratch = self.buffer(Sym::fixed(WORKERS * conv.im2col_floats(chunk) + partial));
        self.kernels.push(Kernel::Conv {
            node,
            out,
            scratch,
            pass,
            input,
            other,
            conv,
            chunk,
            epilogue: Vec::new(),
        });
    }

    /// The contiguous view of `id`'s value in buffer `out`.
    fn out_view(&self, id: NodeId, out: BufferId) -> View {
        View {
            base: Base::Buffer(out),
            strides: contiguous(self.graph.shape(id)),
        }
    }

    /// An `[N, O, OH, OW]` output gradient as a contiguous `[O, N, OH·OW]` matrix, made once:
    /// the layout both convolution gradients multiply by.
    fn by_output_channel(&mut self, dy: NodeId, conv: Conv) -> View {
        let matrix = |copy| strided(Base::Buffer(copy), [conv.columns(), Sym::fixed(1)]);
        if let Some(&copy) = self.by_output_channel.get(&dy) {
            return matrix(copy);
        }
        let view = self.view(dy).clone();
        let strides = &view.strides;
        let out = self.buffer(conv.by_channel());
        self.kernels.push(Kernel::Copy {
            node: dy,
            out,
            input: strided(view.base, [strides[1], strides[0], strides[2], strides[3]]),
            dims: vec![
                Sym::fixed(conv.outputs),
                conv.batch,
                Sym::fixed(conv.out_height),
                Sym::fixed(conv.out_width),
            ],
        });
        self.by_output_channel.insert(dy, out);
        matrix(out)
    }

    /// A new buffer for `id`'s value and the kernel that fills it.
    fn kernel(&mut self, id: NodeId, make: impl FnOnce(BufferId) -> Kernel) -> View {
        let out = self.buffer(product(&dims(self.graph.shape(id))));
        self.kernels.push(make(out));
        self.out_view(id, out)
    }

    /// A view that is contiguous in `id`'s shape, copying when it is not.
    fn contiguous_view(&mut self, id: NodeId) -> View {
        let shape = self.graph.shape(id).clone();
        let view = self.view(id).clone();
        if view.is_contiguous(&shape) || (view.is_scalar() && shape.rank() == 0) {
            return view;
        }
        self.materialize(id, view)
    }

    /// Copies a view into a contiguous buffer of its own, which later readers of `id` then use.
    fn materialize(&mut self, id: NodeId, view: View) -> View {
        let copy = self.kernel(id, |out| Kernel::Map {
            node: id,
            out,
            args: vec![view],
            expr: Expr::Read(0),
        });
        self.views[id.index()] = Some(copy.clone());
        copy
    }

    /// A view GEMM can read: strided, but never broadcast (stride 0) or scalar.
    fn gemm_view(&mut self, id: NodeId) -> View {
        let view = self.view(id).clone();
        if view.is_scalar() || view.strides.contains(&Sym::ZERO) {
            return self.materialize(id, view);
        }
        view
    }

    /// Numpy broadcast as strides: stretched and new axes read with stride 0.
    fn broadcast(&self, source: NodeId, target: &Shape) -> View {
        let from = self.graph.shape(source);
        let view = self.view(source).clone();
        let lead = target.rank() - from.rank();
        let strides = (0..target.rank())
            .map(|axis| match axis.checked_sub(lead) {
                Some(src) if from.0[src] == target.0[axis] && !view.strides.is_empty() => {
                    view.strides[src]
                }
                _ => Sym::ZERO,
            })
            .collect();
        View {
            base: view.base,
            strides,
        }
    }
}

/// Moves each map into the kernel that produces its operands, at the end of that kernel's
/// epilogue, when it reads what the kernel writes and can run on the same pieces: after a
/// matrix product, maps that read the product and each other element for element (run on
/// each worker's rows); after a forward convolution, maps looping over the batch outermost
/// (run on each chunk of images); after a pooling gradient, maps over the same elements in one
/// flat loop (run on each plane). A map may move up past kernels it does not depend on: it
/// then runs while the product's output is still in cache, however late the graph needs it.
/// A sum over the rows of a product's output joins the product too (see `Sums`).
///
/// Scalars computed from hyperparameters alone (Adam's bias corrections) come first, so that
/// nothing they feed waits for them.
fn with_epilogues(graph: &Graph, kernels: Vec<Kernel>, sizes: &mut Vec<Sym>) -> Vec<Kernel> {
    let (mut result, rest): (Vec<Kernel>, Vec<Kernel>) = kernels.into_iter().partition(|k| {
        matches!(k, Kernel::Map { args, .. }
            if graph.shape(k.node()).0.is_empty()
                && args.iter().all(|a| !matches!(a.base, Base::Buffer(_) | Base::External(_))))
    });
    for kernel in rest {
        if let Some((producer, input)) = summing(graph, &kernel, &mut result) {
            let (node, out) = (kernel.node(), kernel.out());
            let mut sums = |sums: &mut Option<Sums>, floats: Sym| {
                let partial = new_buffer(sizes, floats);
                *sums = Some(Sums {
                    node,
                    out,
                    input,
                    partial,
                    then: Vec::new(),
                });
            };
            match producer {
                Kernel::Gemm { sums: s, n, .. } => sums(s, *n),
                Kernel::PoolGrad { sums: s, conv, .. } => sums(s, Sym::fixed(conv.channels)),
                Kernel::Softmax { sums, .. } => *sums = Some(RowSums { node, out, input }),
                _ => unreachable!("only products, softmax and pooling gradients sum"),
            }
            continue;
        }
        if let Kernel::Map { args, .. } = &kernel {
            // The last kernel writing anything the map reads: every operand is ready after it.
            // A map that reads no buffer (a dropout mask) may join the kernel before it.
            let reads: Vec<Base> = args.iter().map(|a| a.base).collect();
            let independent = !reads.iter().any(|b| matches!(b, Base::Buffer(_)));
            let producer = result.iter_mut().rev().find(|k| {
                independent || k.writes().iter().any(|&w| reads.contains(&Base::Buffer(w)))
            });
            if let Some(producer) = producer {
                if fits(graph, producer, &kernel) {
                    if let Kernel::Gemm { epilogue, .. }
                    | Kernel::Conv { epilogue, .. }
                    | Kernel::PoolGrad { epilogue, .. }
                    | Kernel::Softmax { epilogue, .. } = producer
                    {
                        epilogue.push(kernel);
                        continue;
                    }
                }
                if let Some(then) = finished(graph, producer, &kernel) {
                    then.push(kernel);
                    continue;
                }
            }
        }
        result.push(kernel);
    }
    result
}

/// The kernel in `kernels` that can compute `reduce` as part of its work, and the buffer it
/// sums, contiguous, that nothing after that kernel writes: over the rows of a matrix
/// product's output or its epilogue's (`Sums`), along each row of a softmax's (`RowSums`), or
/// over the images and planes of a pooling gradient's epilogue output (`Sums`).
fn summing<'k>(
    graph: &Graph,
    reduce: &Kernel,
    kernels: &'k mut [Kernel],
) -> Option<(&'k mut Kernel, BufferId)> {
    let Kernel::Reduce {
        op: ReduceOp::Sum,
        input,
        input_dims,
        axes,
        ..
    } = reduce
    else {
        return None;
    };
    let Base::Buffer(summed) = input.base else {
        return None;
    };
    if input.strides != row_major(input_dims) {
        return None;
    }
    let producer = kernels
        .iter_mut()
        .rev()
        .find(|k| k.writes().contains(&summed))?;
    let fits = match producer {
        Kernel::PoolGrad {
            node, sums: None, ..
        } => axes == &[0, 2, 3] && input_dims == &dims(graph.shape(*node)),
        Kernel::Gemm { sums: None, .. } | Kernel::Softmax { sums: None, .. } => {
            let axis = usize::from(matches!(producer, Kernel::Softmax { .. }));
            producer
                .rows()
                .is_some_and(|(rows, len)| axes == &[axis] && input_dims == &[rows, len])
        }
        _ => false,
    };
    fits.then_some((producer, summed))
}

/// Where `map` can run once `producer`'s work is complete, when what it reads of that work is
/// the final result or the maps already after it, element for element: after a product's
/// column sums (a bias's update), or after a convolution's summed weight gradient (the
/// weight's update).
fn finished<'k>(
    graph: &Graph,
    producer: &'k mut Kernel,
    map: &Kernel,
) -> Option<&'k mut Vec<Kernel>> {
    let Kernel::Map { args, .. } = map else {
        return None;
    };
    let written = producer.writes();
    let (result, then) = match producer {
        Kernel::Gemm {
            sums: Some(sums), ..
        }
        | Kernel::PoolGrad {
            sums: Some(sums), ..
        } => ((sums.node, sums.out), &mut sums.then),
        Kernel::Conv {
            node,
            out,
            pass: ConvPass::GradWeight,
            epilogue,
            ..
        } => ((*node, *out), epilogue),
        _ => return None,
    };
    let shape = graph.shape(result.0);
    let mut complete: Vec<BufferId> = then.iter().map(Kernel::out).collect();
    complete.push(result.1);
    let pointwise = args.iter().all(|a| match a.base {
        Base::Buffer(b) if written.contains(&b) => {
            complete.contains(&b) && a.strides == contiguous(shape)
        }
        _ => true,
    });
    (graph.shape(map.node()) == shape && pointwise).then_some(then)
}

/// Whether `map` can run at the end of `producer`'s epilogue, piece by piece (see
/// `with_epilogues`): it reads something the producer writes, and what it reads of the
/// epilogue's outputs, it reads element for element.
fn fits(graph: &Graph, producer: &Kernel, map: &Kernel) -> bool {
    let Kernel::Map { args, .. } = map else {
        return false;
    };
    let shape = graph.shape(map.node());
    let outputs: Vec<Base> = producer.outputs().into_iter().map(Base::Buffer).collect();
    let chained: Vec<Base> = producer
        .epilogue()
        .iter()
        .map(|e| Base::Buffer(e.out()))
        .collect();
    let sums: Vec<Base> = producer
        .writes()
        .into_iter()
        .map(Base::Buffer)
        .filter(|w| !outputs.contains(w) && !chained.contains(w))
        .collect();
    let reads = |set: &[Base]| args.iter().any(|a| set.contains(&a.base));
    let pointwise = args
        .iter()
        .all(|a| !chained.contains(&a.base) || a.strides == contiguous(shape));
    // Sums come after the whole epilogue, so nothing in it can read them.
    let independent = !args.iter().any(|a| matches!(a.base, Base::Buffer(_)));
    if !pointwise || reads(&sums) || !(independent || reads(&outputs) || reads(&chained)) {
        return false;
    }
    let outer = map.map_layout(graph).0;
    match producer {
        Kernel::Gemm { .. } | Kernel::Softmax { .. } => {
            iterations_per_row(graph, producer, map).is_some()
        }
        Kernel::Conv {
            pass: ConvPass::Forward,
            conv,
            ..
        } => outer.first() == Some(&conv.batch),
        Kernel::PoolGrad { node: pooled, .. } => {
            shape == graph.shape(*pooled) && outer == [product(&dims(shape))]
        }
        _ => false,
    }
}

/// How many iterations of `map`'s outermost loop cover one row of `producer` (see
/// `Kernel::rows`), when the map reads the producer's results only element for element, so
/// that a piece of rows of the results is all a piece of the map needs: 1 when the map loops
/// over rows, the row's length when it is one flat loop.
pub fn iterations_per_row(graph: &Graph, producer: &Kernel, map: &Kernel) -> Option<i64> {
    let ((rows, len), Kernel::Map { args, .. }) = (producer.rows()?, map) else {
        return None;
    };
    let shape = graph.shape(producer.node());
    let outputs = producer.outputs();
    let pointwise = graph.shape(map.node()) == shape
        && args.iter().all(|a| {
            !matches!(a.base, Base::Buffer(b) if outputs.contains(&b))
                || a.strides == contiguous(shape)
        });
    if !pointwise || len.batch {
        return None;
    }
    let outer = map.map_layout(graph).0;
    if outer.first() == Some(&rows) {
        Some(1)
    } else if outer
        == [Sym {
            coef: rows.coef * len.coef,
            batch: rows.batch,
        }]
    {
        Some(len.coef)
    } else {
        None
    }
}

/// Elementwise nodes to inline into their consumer: used exactly once, by an elementwise
/// node (of the same shape, as elementwise operands always are), and not a result. A one-hot
/// encoding is inlined into every elementwise consumer however many there are: comparing a
/// label costs less than reading a stored value.
fn fusible(graph: &Graph, wanted: &[NodeId]) -> Vec<bool> {
    let elementwise = |op: &Op| matches!(op, Op::Unary(_) | Op::Binary(_));
    let mut uses = vec![0usize; graph.nodes.len()];
    let mut consumer_elementwise = vec![true; graph.nodes.len()];
    for node in &graph.nodes {
        for a in &node.args {
            uses[a.index()] += 1;
            consumer_elementwise[a.index()] &= elementwise(&node.op);
        }
    }
    let mut result = vec![false; graph.nodes.len()];
    for id in wanted {
        result[id.index()] = true;
    }
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let inlined = match n.op {
                Op::OneHot { .. } => uses[i] >= 1,
                _ => elementwise(&n.op) && uses[i] == 1,
            };
            inlined && consumer_elementwise[i] && !result[i]
        })
        .collect()
}

/// Places buffers in one arena: a buffer's space is reused after its last reader, first fit;
/// wanted results live to the end. `None` when the arena would not fit in the address space.
fn allocate(
    kernels: &[Kernel],
    sizes: &[Sym],
    views: &[Option<View>],
    wanted: &[NodeId],
    max_batch: usize,
) -> Option<(Vec<usize>, usize)> {
    let mut last_read = vec![0usize; sizes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        for view in kernel.reads() {
            if let Base::Buffer(b) = view.base {
                last_read[b.index()] = k;
            }
        }
    }
    for id in wanted {
        if let Some(View {
            base: Base::Buffer(b),
            ..
        }) = &views[id.index()]
        {
            last_read[b.index()] = usize::MAX;
        }
    }
    // Every buffer starts on a cache line, as the arena does: vector loads never straddle two.
    let floats = |s: Sym| (s.at(max_batch as i64).max(1) as usize).next_multiple_of(ALIGN);
    let mut buffers = vec![0usize; sizes.len()];
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, length)
    let mut end = 0;
    let mut live: Vec<BufferId> = Vec::new();
    for (k, kernel) in kernels.iter().enumerate() {
        let out = &kernel.out();
        for buffer in kernel.writes().into_iter().chain(kernel.scratch()) {
            let need = floats(sizes[buffer.index()]);
            let slot = free.iter().position(|&(_, len)| len >= need);
            buffers[buffer.index()] = match slot {
                Some(i) => {
                    let (offset, len) = free.remove(i);
                    if len > need {
                        free.push((offset + need, len - need));
                    }
                    offset
                }
                None => {
                    end =
                        usize::checked_add(end, need).filter(|&e| e <= isize::MAX as usize / 4)?;
                    end - need
                }
            };
            live.push(buffer);
        }
        if let Some(scratch) = kernel.scratch() {
            last_read[scratch.index()] = k;
        }
        // Buffers whose last reader is this kernel are free for the kernels after it.
        live.retain(|&b| {
            let done = last_read[b.index()] <= k && b != *out;
            if done {
                free.push((buffers[b.index()], floats(sizes[b.index()])));
            }
            !done
        });
    }
    Some((buffers, end))
}

//! Planning: which nodes are views of others (reshape, broadcast, transpose), which need a
//! kernel and of which kind, and which buffer each kernel writes. Elementwise chains are
//! inlined into one map as they are met; `fuse` then moves maps and sums into the kernels
//! whose pieces they can run on, and `alloc` places the buffers in one arena sized for the
//! largest batch.

use super::alloc::{allocate, new_buffer, BufferId};
use super::fuse::{fusible, with_epilogues, MAX_FUSED_DEPTH};
use super::kernels::{
    Conv, ConvPass, Copy, Expr, Gemm, Geometry, Kernel, Map, Part, Pool, PoolGrad, Reduce, Softmax,
};
use super::layout::{contiguous, dims, product, row_major, Base, Sym, View};
use crate::ir::{Elementwise, Graph, NodeId, Op};
use crate::shape::Shape;
use std::collections::HashMap;

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
    /// The largest batch it runs, which fixes how kernels are cut into pieces.
    pub max_batch: usize,
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

/// Plans `graph` for batches of at most `max_batch` examples, run on a pool of `workers`, so
/// that `wanted` nodes end up in contiguous buffers. Only scratch memory depends on `workers`,
/// never what any kernel computes.
pub fn plan(
    graph: &Graph,
    max_batch: usize,
    wanted: &[NodeId],
    workers: usize,
) -> Result<Plan, CompileError> {
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
        max_batch,
        workers,
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
                    let pending = match graph.node(a).op.elementwise() {
                        Some(Elementwise::OneHot) => p.pending[a.index()].clone(),
                        Some(
                            Elementwise::Unary(_)
                            | Elementwise::Binary(_)
                            | Elementwise::DropoutMask { .. },
                        )
                        | None => p.pending[a.index()].take(),
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
                p.map(id, args, expr)
            }
            Op::DropoutMask { .. } => p.map(id, vec![], Expr::Apply(id, vec![])),
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
                p.map(id, args, expr)
            }
            Op::MatMul => {
                let (a, b) = (p.gemm_view(node.args[0]), p.gemm_view(node.args[1]));
                let [m, k] = [
                    dims(graph.shape(node.args[0]))[0],
                    dims(graph.shape(node.args[0]))[1],
                ];
                let n = dims(graph.shape(node.args[1]))[1];
                p.kernel(id, |out| {
                    Kernel::Gemm(Gemm {
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
                })
            }
            Op::Reduce(op, axes) => {
                let a = node.args[0];
                let input_dims = dims(graph.shape(a));
                // An elementwise operand used only here is computed as it is read, unless it
                // needs its element's index (a one-hot encoding, a dropout mask) or the sum
                // is a whole tensor's, which keeps the interpreter's order on a stored one.
                let (args, expr) = match p.pending[a.index()].take() {
                    Some((expr, leaves)) => {
                        let indexed = expr.nodes().iter().any(|n| {
                            matches!(
                                graph.node(*n).op.elementwise(),
                                Some(Elementwise::OneHot | Elementwise::DropoutMask { .. })
                            )
                        });
                        if indexed || axes.len() == input_dims.len() {
                            (vec![p.map(a, leaves, expr)], Expr::Read(0))
                        } else {
                            (leaves, expr)
                        }
                    }
                    None => (vec![p.view(a).clone()], Expr::Read(0)),
                };
                let (op, axes) = (*op, axes.clone());
                p.kernel(id, |out| {
                    Kernel::Reduce(Reduce {
                        node: id,
                        out,
                        op,
                        args,
                        expr,
                        input_dims,
                        axes,
                        partial: None,
                    })
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
                p.kernel(id, |out| {
                    Kernel::Softmax(Softmax {
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
                })
            }
            Op::Conv2d(window) => {
                let (x, w) = (node.args[0], node.args[1]);
                let conv = Geometry::new(graph.shape(x), &node.shape, *window);
                let (input, other) = (p.contiguous_view(x), p.contiguous_view(w));
                let out = p.buffer(conv.by_channel());
                p.conv(id, out, ConvPass::Forward, [input, other], conv);
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
                let conv = Geometry::new(graph.shape(x), graph.shape(dy), *window);
                let input = p.contiguous_view(x);
                let dy = p.output_gradient(dy, conv, ConvPass::GradWeight);
                let out = p.buffer(product(&dims(&node.shape)));
                p.conv(id, out, ConvPass::GradWeight, [input, dy], conv);
                p.out_view(id, out)
            }
            Op::Conv2dGradInput(window, input) => {
                let (dy, w) = (node.args[0], node.args[1]);
                let conv = Geometry::new(input, graph.shape(dy), *window);
                let dy = p.output_gradient(dy, conv, ConvPass::GradInput);
                let other = p.contiguous_view(w);
                let out = p.buffer(product(&dims(&node.shape)));
                p.conv(id, out, ConvPass::GradInput, [dy, other], conv);
                p.out_view(id, out)
            }
            Op::Concat(axis) => {
                let out_strides = contiguous(&node.shape);
                let step = out_strides[*axis];
                let mut start = 0;
                let mut parts = Vec::new();
                for &part in &node.args {
                    let part_dims = dims(graph.shape(part));
                    parts.push(Part {
                        input: p.contiguous_view(part),
                        input_offset: 0,
                        out_strides: out_strides.clone(),
                        out_offset: start * step.coef,
                        dims: part_dims.clone(),
                    });
                    start += part_dims[*axis].coef;
                }
                let detail = format!("{} parts joined along axis {axis}", parts.len());
                p.kernel(id, |out| {
                    Kernel::Copy(Copy {
                        node: id,
                        out,
                        parts,
                        detail,
                    })
                })
            }
            Op::Slice { axis, start, len } => {
                let input = p.contiguous_view(node.args[0]);
                let step = input.strides[*axis];
                let part = Part {
                    input_offset: *start as i64 * step.coef,
                    input,
                    dims: dims(&node.shape),
                    out_strides: contiguous(&node.shape),
                    out_offset: 0,
                };
                let detail = format!("entries {start}..{} of axis {axis}", start + len);
                p.kernel(id, |out| {
                    Kernel::Copy(Copy {
                        node: id,
                        out,
                        parts: vec![part],
                        detail,
                    })
                })
            }
            Op::Pool(op, window) => {
                let x = node.args[0];
                let conv = Geometry::new(graph.shape(x), &node.shape, *window);
                let input = p.contiguous_view(x);
                let op = *op;
                p.kernel(id, |out| {
                    Kernel::Pool(Pool {
                        node: id,
                        out,
                        input,
                        op,
                        geometry: conv,
                    })
                })
            }
            Op::PoolGrad(op, window) => {
                let (x, dy) = (node.args[0], node.args[1]);
                let conv = Geometry::new(graph.shape(x), graph.shape(dy), *window);
                let (input, grad) = (p.contiguous_view(x), p.contiguous_view(dy));
                let op = *op;
                p.kernel(id, |out| {
                    Kernel::PoolGrad(PoolGrad {
                        node: id,
                        out,
                        input,
                        grad,
                        op,
                        geometry: conv,
                        epilogue: Vec::new(),
                        sums: None,
                    })
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
    let kernels = with_epilogues(graph, p.kernels, &mut p.sizes, max_batch);
    let (buffers, arena) =
        allocate(&kernels, &p.sizes, &p.views, wanted, max_batch).ok_or(too_large)?;
    Ok(Plan {
        kernels,
        buffers,
        arena,
        views: p.views,
        max_batch,
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
    max_batch: usize,
    workers: usize,
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
    fn conv(&mut self, node: NodeId, out: BufferId, pass: ConvPass, views: [View; 2], g: Geometry) {
        let floats = Conv::scratch_floats(pass, &g, self.workers, self.max_batch);
        let scratch = self.buffer(Sym::fixed(floats));
        let conv = Conv::new(node, (out, scratch), pass, views, (g, self.workers));
        self.kernels.push(Kernel::Conv(conv));
    }

    /// The contiguous view of `id`'s value in buffer `out`.
    fn out_view(&self, id: NodeId, out: BufferId) -> View {
        View {
            base: Base::Buffer(out),
            strides: contiguous(self.graph.shape(id)),
        }
    }

    /// The output gradient as a gradient pass reads it: as it is for the direct convolution,
    /// else as the product needs it (`by_output_channel`).
    fn output_gradient(&mut self, dy: NodeId, conv: Geometry, pass: ConvPass) -> View {
        match conv.direct(pass) {
            Some(_) => self.contiguous_view(dy),
            None => self.by_output_channel(dy, conv),
        }
    }

    /// An `[N, O, OH, OW]` output gradient as a contiguous `[O, N, OH·OW]` matrix, made once:
    /// the layout both convolution gradients multiply by.
    fn by_output_channel(&mut self, dy: NodeId, conv: Geometry) -> View {
        let matrix = |copy| strided(Base::Buffer(copy), [conv.columns(), Sym::fixed(1)]);
        if let Some(&copy) = self.by_output_channel.get(&dy) {
            return matrix(copy);
        }
        let view = self.view(dy).clone();
        let strides = &view.strides;
        let out = self.buffer(conv.by_channel());
        let dims = vec![
            Sym::fixed(conv.outputs),
            conv.batch,
            Sym::fixed(conv.out_height),
            Sym::fixed(conv.out_width),
        ];
        self.kernels.push(Kernel::Copy(Copy {
            node: dy,
            out,
            parts: vec![Part {
                input: strided(view.base, [strides[1], strides[0], strides[2], strides[3]]),
                input_offset: 0,
                out_strides: row_major(&dims),
                dims,
                out_offset: 0,
            }],
            detail: "copied into [O, N, OH·OW] order".into(),
        }));
        self.by_output_channel.insert(dy, out);
        matrix(out)
    }

    /// A new buffer for `id`'s value and the kernel that fills it.
    fn kernel(&mut self, id: NodeId, make: impl FnOnce(BufferId) -> Kernel) -> View {
        let out = self.buffer(product(&dims(self.graph.shape(id))));
        self.kernels.push(make(out));
        self.out_view(id, out)
    }

    /// A new buffer for `id`'s value and the map that fills it.
    fn map(&mut self, id: NodeId, args: Vec<View>, expr: Expr) -> View {
        self.kernel(id, |out| {
            Kernel::Map(Map {
                node: id,
                out,
                args,
                expr,
            })
        })
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
        let copy = self.map(id, vec![view], Expr::Read(0));
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

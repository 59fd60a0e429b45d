//! Planning: which nodes are views of others (reshape, broadcast, transpose), which need a
//! kernel and a buffer, and where each buffer lives in one arena sized for the largest batch.
//! Buffers are reused once their last reader has run (liveness, first fit).

use crate::ir::{Graph, NodeId, Op, ReduceOp};
use crate::shape::{Dim, Shape};

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

    fn fixed(n: i64) -> Sym {
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

    fn times(self, dim: Dim) -> Option<Sym> {
        match dim {
            Dim::Fixed(n) => Some(Sym {
                coef: self.coef * n as i64,
                batch: self.batch,
            }),
            Dim::Batch if !self.batch => Some(Sym {
                coef: self.coef,
                batch: true,
            }),
            Dim::Batch => None,
        }
    }
}

/// The dimensions of a shape as `Sym`s.
pub fn dims(shape: &Shape) -> Vec<Sym> {
    shape
        .0
        .iter()
        .map(|&d| Sym::fixed(1).times(d).expect("one batch dimension at most"))
        .collect()
}

/// The product of sizes (at most one of which involves the batch).
pub fn product(sizes: &[Sym]) -> Sym {
    sizes.iter().fold(Sym::fixed(1), |acc, d| Sym {
        coef: acc.coef * d.coef,
        batch: acc.batch || d.batch,
    })
}

/// Row-major strides of a shape.
pub fn contiguous(shape: &Shape) -> Vec<Sym> {
    let mut strides = vec![Sym::fixed(1); shape.rank()];
    for i in (0..shape.rank().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1]
            .times(shape.0[i + 1])
            .expect("one batch dimension at most");
    }
    strides
}

/// Where a value's elements come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Base {
    /// Slot `i` of the pointer table: inputs, then parameters, then states.
    External(usize),
    /// A buffer of the arena.
    Buffer(usize),
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
        out: usize,
        args: Vec<View>,
        expr: Expr,
    },
    /// `out = a @ b`: `a` is `[m, k]` and `b` `[k, n]`, both strided.
    Gemm {
        node: NodeId,
        out: usize,
        a: View,
        b: View,
        m: Sym,
        n: Sym,
        k: Sym,
    },
    /// A reduction of `input` (in its own axes) over `axes`.
    Reduce {
        node: NodeId,
        out: usize,
        op: ReduceOp,
        input: View,
        input_dims: Vec<Sym>,
        axes: Vec<usize>,
    },
    /// Softmax or log-softmax over the last axis of a contiguous input.
    Softmax {
        node: NodeId,
        out: usize,
        input: View,
        rows: Sym,
        len: i64,
        log: bool,
    },
}

impl Kernel {
    /// The node this kernel computes.
    pub fn node(&self) -> NodeId {
        match self {
            Kernel::Map { node, .. }
            | Kernel::Gemm { node, .. }
            | Kernel::Reduce { node, .. }
            | Kernel::Softmax { node, .. } => *node,
        }
    }

    /// A one-word name of the kernel's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Kernel::Map { .. } => "map",
            Kernel::Gemm { .. } => "gemm",
            Kernel::Reduce { .. } => "reduce",
            Kernel::Softmax { .. } => "softmax",
        }
    }

    fn reads(&self) -> Vec<&View> {
        match self {
            Kernel::Map { args, .. } => args.iter().collect(),
            Kernel::Gemm { a, b, .. } => vec![a, b],
            Kernel::Reduce { input, .. } | Kernel::Softmax { input, .. } => vec![input],
        }
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

/// Why a graph cannot be compiled yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Unsupported(pub String);

/// Plans `graph` for batches of at most `max_batch` examples, so that `wanted` nodes end up in
/// contiguous buffers.
pub fn plan(graph: &Graph, max_batch: usize, wanted: &[NodeId]) -> Result<Plan, Unsupported> {
    let mut p = Planner {
        graph,
        views: vec![None; graph.nodes.len()],
        pending: vec![None; graph.nodes.len()],
        kernels: Vec::new(),
        sizes: Vec::new(),
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
                    match p.pending[a.index()].take() {
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
                p.kernel(id, |out| Kernel::Map {
                    node: id,
                    out,
                    args,
                    expr: Expr::Apply(id, vec![Expr::Read(0)]),
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
                let shape = graph.shape(node.args[0]);
                if *axis + 1 != shape.rank() {
                    return Err(Unsupported(format!("a softmax over axis {axis} of {shape} is not compiled yet (only the last axis is)")));
                }
                let input = p.contiguous_view(node.args[0]);
                let len = shape.fixed_dim(*axis).ok_or_else(|| {
                    Unsupported("a softmax over the batch axis is not compiled yet".into())
                })? as i64;
                let rows = product(&dims(&Shape(shape.0[..*axis].to_vec())));
                let log = matches!(node.op, Op::LogSoftmax { .. });
                p.kernel(id, |out| Kernel::Softmax {
                    node: id,
                    out,
                    input,
                    rows,
                    len,
                    log,
                })
            }
            Op::Conv2d(_)
            | Op::Conv2dGradInput(..)
            | Op::Conv2dGradWeight(_)
            | Op::Pool(..)
            | Op::PoolGrad(..) => {
                return Err(Unsupported(format!("`{}` is not compiled yet", node.op)));
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
    let (buffers, arena) = allocate(&p.kernels, &p.sizes, &p.views, wanted, max_batch);
    Ok(Plan {
        kernels: p.kernels,
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

    /// A new buffer for `id`'s value and the kernel that fills it.
    fn kernel(&mut self, id: NodeId, make: impl FnOnce(usize) -> Kernel) -> View {
        let shape = self.graph.shape(id).clone();
        let size = product(&dims(&shape));
        self.sizes.push(size);
        let out = self.sizes.len() - 1;
        self.kernels.push(make(out));
        View {
            base: Base::Buffer(out),
            strides: contiguous(&shape),
        }
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

/// Elementwise nodes to inline into their consumer: used exactly once, by an elementwise
/// node (of the same shape, as elementwise operands always are), and not a result.
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
        .map(|(i, n)| elementwise(&n.op) && uses[i] == 1 && consumer_elementwise[i] && !result[i])
        .collect()
}

/// Places buffers in one arena: a buffer's space is reused after its last reader, first fit;
/// wanted results live to the end.
fn allocate(
    kernels: &[Kernel],
    sizes: &[Sym],
    views: &[Option<View>],
    wanted: &[NodeId],
    max_batch: usize,
) -> (Vec<usize>, usize) {
    let mut last_read = vec![0usize; sizes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        for view in kernel.reads() {
            if let Base::Buffer(b) = view.base {
                last_read[b] = k;
            }
        }
    }
    for id in wanted {
        if let Some(View {
            base: Base::Buffer(b),
            ..
        }) = &views[id.index()]
        {
            last_read[*b] = usize::MAX;
        }
    }
    let floats = |s: Sym| s.at(max_batch as i64).max(1) as usize;
    let mut buffers = vec![0usize; sizes.len()];
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, length)
    let mut end = 0;
    let mut live: Vec<usize> = Vec::new();
    for (k, kernel) in kernels.iter().enumerate() {
        let (Kernel::Map { out, .. }
        | Kernel::Gemm { out, .. }
        | Kernel::Reduce { out, .. }
        | Kernel::Softmax { out, .. }) = kernel;
        let need = floats(sizes[*out]);
        let slot = free.iter().position(|&(_, len)| len >= need);
        buffers[*out] = match slot {
            Some(i) => {
                let (offset, len) = free.remove(i);
                if len > need {
                    free.push((offset + need, len - need));
                }
                offset
            }
            None => {
                end += need;
                end - need
            }
        };
        live.push(*out);
        // Buffers whose last reader is this kernel are free for the kernels after it.
        live.retain(|&b| {
            let done = last_read[b] <= k && b != *out;
            if done {
                free.push((buffers[b], floats(sizes[b])));
            }
            !done
        });
    }
    (buffers, end)
}

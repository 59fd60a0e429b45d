//! The tensor graph: an append-only arena of nodes addressed by `NodeId`. A node only refers to
//! earlier nodes, so the arena order is a topological order. `Graph::add` infers each node's
//! shape and dtype from its operation and arguments and refuses (panics: a compiler bug) any
//! node whose arguments do not fit, so every graph that exists is well shaped.

use crate::shape::{self, Dim, Shape, Window};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The index of a node in its graph; printed `%7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Class indices.
    I32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

/// A float constant usable as a hash key (compared by bit pattern).
#[derive(Clone, Copy, Debug)]
pub struct Scalar(pub f64);

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Scalar {}
impl Hash for Scalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

pub use crate::ops::{BinaryOp, PoolOp, ReduceOp, UnaryOp};

/// An operation computed element by element, as a fused map computes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elementwise {
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// The label's one-hot row, element by element.
    OneHot,
    /// Dropout's mask: 0 with probability `p`, else 1/(1 − p).
    DropoutMask {
        p: f64,
    },
}

/// The primitive operations. Layer sugar, losses and softmax-style functions all lower to these.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A model input or the label, by index into `Graph::inputs`.
    Input(usize),
    /// A trained parameter, by index into `Graph::params`.
    Param(usize),
    /// A carried, untrained tensor (running statistics), by index into `Graph::states`.
    State(usize),
    /// A scalar constant.
    Const(Scalar),
    /// A scalar set by the runtime each step (learning rate, step number), by index into
    /// `Graph::hypers`.
    Hyper(usize),
    /// The number of examples in the current batch, as a scalar.
    BatchSize,
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// Numpy-style broadcast of the argument to this shape.
    Broadcast(Shape),
    Reduce(ReduceOp, Vec<usize>),
    /// `[m, k] @ [k, n]`.
    MatMul,
    Reshape(Shape),
    Transpose(Vec<usize>),
    Softmax {
        axis: usize,
    },
    LogSoftmax {
        axis: usize,
    },
    /// Class indices `[N]` to one-hot rows `[N, classes]`.
    OneHot {
        classes: u64,
    },
    /// `[N, C, H, W]` conv `[O, C, kh, kw]` → `[N, O, H', W']` (cross-correlation, as in PyTorch).
    Conv2d(Window),
    Pool(PoolOp, Window),
    /// The gradient of a convolution with respect to its input `[N, C, H, W]`, from the
    /// output gradient and the weight.
    Conv2dGradInput(Window, Shape),
    /// The gradient of a convolution with respect to its weight, from the input and the output
    /// gradient.
    Conv2dGradWeight(Window),
    /// The gradient of pooling with respect to its input, from the input and the output gradient.
    PoolGrad(PoolOp, Window),
    /// A fresh random mask shaped like its argument: 0 with probability `p`, else 1/(1−p).
    DropoutMask {
        p: Scalar,
    },
    /// Its arguments (two or more) joined along this axis, never the batch's.
    Concat(usize),
    /// `len` entries along `axis` from `start`: concatenation's gradient.
    Slice {
        axis: usize,
        start: u64,
        len: u64,
    },
}

impl Op {
    /// The operation as an elementwise one, when it is one. Every operation is named here,
    /// so a new one must say which it is.
    pub fn elementwise(&self) -> Option<Elementwise> {
        match self {
            Op::Unary(op) => Some(Elementwise::Unary(*op)),
            Op::Binary(op) => Some(Elementwise::Binary(*op)),
            Op::OneHot { .. } => Some(Elementwise::OneHot),
            Op::DropoutMask { p } => Some(Elementwise::DropoutMask { p: p.0 }),
            Op::Input(_)
            | Op::Param(_)
            | Op::State(_)
            | Op::Const(_)
            | Op::Hyper(_)
            | Op::BatchSize
            | Op::Broadcast(_)
            | Op::Reduce(..)
            | Op::MatMul
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Conv2d(_)
            | Op::Pool(..)
            | Op::Conv2dGradInput(..)
            | Op::Conv2dGradWeight(_)
            | Op::PoolGrad(..)
            | Op::Concat(_)
            | Op::Slice { .. } => None,
        }
    }

    /// Operations that must not be merged with an identical twin.
    fn is_random(&self) -> bool {
        matches!(self, Op::DropoutMask { .. })
    }
}

/// Where a node came from: the `.net` source line (0 when none did) and the block use it is
/// part of (0 at the model's top level, else 1 + an index into `Graph::blocks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub line: u32,
    pub block: u32,
}

/// One operation with its arguments and inferred type.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub args: Vec<NodeId>,
    pub shape: Shape,
    pub dtype: DType,
    pub origin: Origin,
}

/// A named tensor the graph reads: an input, a parameter or a state.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub name: String,
    pub shape: Shape,
    pub dtype: DType,
}

/// A tensor program: declarations, nodes in topological order, and named results.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<Decl>,
    pub params: Vec<Decl>,
    pub states: Vec<Decl>,
    pub nodes: Vec<Node>,
    /// Named results (`output`, `loss`), in order.
    pub outputs: Vec<(String, NodeId)>,
    /// New values of the states, computed by a training step.
    pub state_updates: Vec<(usize, NodeId)>,
    /// The loss's gradient with respect to each parameter (after `autodiff`).
    pub gradients: Vec<(usize, NodeId)>,
    /// New values of the parameters (after the optimizer step is added).
    pub param_updates: Vec<(usize, NodeId)>,
    /// Names of the scalars the runtime supplies each step.
    pub hypers: Vec<String>,
    /// The paths of the block uses nodes come from (`stage1.residual2`), in order of first use.
    pub blocks: Vec<String>,
    /// Hash-consing table: an identical (op, args) pair is built once.
    interned: HashMap<(Op, Vec<NodeId>), NodeId>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// The node behind an id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// A graph with the same name, declarations and step scalars, and no nodes or results.
    pub fn empty_like(&self) -> Graph {
        Graph {
            name: self.name.clone(),
            inputs: self.inputs.clone(),
            params: self.params.clone(),
            states: self.states.clone(),
            hypers: self.hypers.clone(),
            blocks: self.blocks.clone(),
            ..Graph::default()
        }
    }

    /// The `Origin::block` of a block use's path (0 for the top level, `""`).
    pub fn block_index(&mut self, path: &str) -> u32 {
        if path.is_empty() {
            return 0;
        }
        let index = match self.blocks.iter().position(|b| b == path) {
            Some(index) => index,
            None => {
                self.blocks.push(path.to_string());
                self.blocks.len() - 1
            }
        };
        index as u32 + 1
    }

    /// Where a node came from, as its comment says it: `line 9 in stage1.residual2`.
    pub fn origin_text(&self, origin: Origin) -> Option<String> {
        if origin.line == 0 {
            return None;
        }
        Some(match origin.block.checked_sub(1) {
            Some(block) => format!("line {} in {}", origin.line, self.blocks[block as usize]),
            None => format!("line {}", origin.line),
        })
    }

    /// Every result node: outputs, gradients, parameter and state updates.
    pub fn results(&self) -> impl Iterator<Item = NodeId> + '_ {
        let outputs = self.outputs.iter().map(|(_, id)| *id);
        let gradients = self.gradients.iter().map(|(_, id)| *id);
        let params = self.param_updates.iter().map(|(_, id)| *id);
        let states = self.state_updates.iter().map(|(_, id)| *id);
        outputs.chain(gradients).chain(params).chain(states)
    }

    /// Copies the results of `from` into this graph, through `map` from old to new nodes.
    pub fn map_results(&mut self, from: &Graph, map: impl Fn(NodeId) -> NodeId) {
        self.outputs = from
            .outputs
            .iter()
            .map(|(name, id)| (name.clone(), map(*id)))
            .collect();
        self.gradients = from.gradients.iter().map(|&(i, id)| (i, map(id))).collect();
        self.param_updates = from
            .param_updates
            .iter()
            .map(|&(i, id)| (i, map(id)))
            .collect();
        self.state_updates = from
            .state_updates
            .iter()
            .map(|&(i, id)| (i, map(id)))
            .collect();
    }

    /// The node of a named result (`loss`, `output`).
    pub fn result(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| id)
    }

    /// The shape of a node.
    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.node(id).shape
    }

    /// Appends a node (or returns its identical twin), inferring its shape and dtype.
    /// Panics when the arguments do not fit the operation: the builder and passes only make
    /// nodes the checker has proven well shaped.
    pub fn add(&mut self, op: Op, args: &[NodeId], origin: Origin) -> NodeId {
        let key = (op, args.to_vec());
        if !key.0.is_random() {
            if let Some(&id) = self.interned.get(&key) {
                return id;
            }
        }
        let (op, args) = key;
        let (shape, dtype) = self.infer(&op, &args).unwrap_or_else(|why| {
            panic!("internal compiler error: ill-formed node {op:?} {args:?}: {why}")
        });
        let id = NodeId(self.nodes.len() as u32);
        if !op.is_random() {
            self.interned.insert((op.clone(), args.clone()), id);
        }
        self.nodes.push(Node {
            op,
            args,
            shape,
            dtype,
            origin,
        });
        id
    }

    fn infer(&self, op: &Op, args: &[NodeId]) -> Result<(Shape, DType), String> {
        let arity = match op {
            Op::Input(_)
            | Op::Param(_)
            | Op::State(_)
            | Op::Const(_)
            | Op::Hyper(_)
            | Op::BatchSize => 0,
            Op::Binary(_)
            | Op::MatMul
            | Op::Conv2d(_)
            | Op::Conv2dGradInput(..)
            | Op::Conv2dGradWeight(_)
            | Op::PoolGrad(..) => 2,
            Op::Unary(_)
            | Op::Broadcast(_)
            | Op::Reduce(..)
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::OneHot { .. }
            | Op::Pool(..)
            | Op::Slice { .. }
            | Op::DropoutMask { .. } => 1,
            Op::Concat(_) => args.len().max(2),
        };
        if args.len() != arity {
            return Err(format!("takes {arity} arguments, got {}", args.len()));
        }
        if let Some(late) = args.iter().find(|a| a.index() >= self.nodes.len()) {
            return Err(format!("{late} does not exist yet"));
        }
        let arg = |i: usize| self.node(args[i]);
        let float = |i: usize| match arg(i).dtype {
            DType::F32 => Ok(arg(i).shape.clone()),
            DType::I32 => Err(format!("{} is not f32", args[i])),
        };
        let f32 = |shape: Shape| Ok((shape, DType::F32));
        let decl = |decls: &[Decl], i: usize| {
            decls
                .get(i)
                .map(|d| (d.shape.clone(), d.dtype))
                .ok_or("no such declaration".to_string())
        };
        match op {
            Op::Input(i) => decl(&self.inputs, *i),
            Op::Param(i) => decl(&self.params, *i),
            Op::State(i) => decl(&self.states, *i),
            Op::Const(_) | Op::BatchSize => f32(Shape::scalar()),
            Op::Hyper(i) if *i < self.hypers.len() => f32(Shape::scalar()),
            Op::Hyper(i) => Err(format!("no hyperparameter #{i}")),
            Op::Unary(_) | Op::DropoutMask { .. } => f32(float(0)?),
            Op::Binary(_) => {
                let (a, b) = (float(0)?, float(1)?);
                if a != b {
                    return Err(format!("operands differ: {a} and {b}"));
                }
                f32(a)
            }
            Op::Broadcast(target) => {
                let from = float(0)?;
                match shape::broadcast(&from, target) {
                    Ok(result) if &result == target => f32(target.clone()),
                    _ => Err(format!("{from} does not broadcast to {target}")),
                }
            }
            Op::Reduce(_, axes) => {
                let from = float(0)?;
                if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= from.rank()) {
                    return Err(format!("bad axes {axes:?} for {from}"));
                }
                f32(Shape(
                    from.0
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, d)| *d)
                        .collect(),
                ))
            }
            Op::MatMul => {
                let (a, b) = (float(0)?, float(1)?);
                if a.rank() != 2 || b.rank() != 2 {
                    return Err("matmul takes matrices".into());
                }
                shape::matmul(&a, &b)
                    .map_err(|e| format!("{e:?}"))
                    .and_then(f32)
            }
            Op::Reshape(target) => {
                let from = arg(0).shape.clone();
                let same_batch = from.has_batch() == target.has_batch()
                    && (!target.has_batch() || target.0[0] == Dim::Batch);
                if !same_batch || from.elements_per_example() != target.elements_per_example() {
                    return Err(format!("cannot reshape {from} to {target}"));
                }
                Ok((target.clone(), arg(0).dtype))
            }
            Op::Transpose(perm) => {
                let from = float(0)?;
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..from.rank()).collect::<Vec<_>>() {
                    return Err(format!("{perm:?} is not a permutation"));
                }
                f32(Shape(perm.iter().map(|&a| from.0[a]).collect()))
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let from = float(0)?;
                if *axis >= from.rank() {
                    return Err("axis out of range".into());
                }
                f32(from)
            }
            Op::OneHot { classes } => {
                let from = &arg(0).shape;
                if arg(0).dtype != DType::I32 || from.rank() != 1 {
                    return Err("one-hot takes a vector of class indices".into());
                }
                f32(Shape(vec![from.0[0], Dim::Fixed(*classes)]))
            }
            Op::Conv2d(window) => {
                let (x, w) = (float(0)?, float(1)?);
                let kernel = [w.fixed_dim(2), w.fixed_dim(3)];
                if x.rank() != 4
                    || w.rank() != 4
                    || x.0[1] != w.0[1]
                    || kernel != window.kernel.map(Some)
                {
                    return Err(format!("conv2d of {x} with {w}"));
                }
                window
                    .apply(&x, w.0[0])
                    .map_err(|_| "window does not fit".to_string())
                    .and_then(f32)
            }
            Op::Conv2dGradInput(window, input) => {
                let (dy, w) = (float(0)?, float(1)?);
                match window.apply(input, w.0[0]) {
                    Ok(out) if out == dy && w.rank() == 4 && input.0.get(1) == w.0.get(1) => {
                        f32(input.clone())
                    }
                    _ => Err(format!(
                        "conv2d input gradient of {dy} with {w} for {input}"
                    )),
                }
            }
            Op::Conv2dGradWeight(window) => {
                let (x, dy) = (float(0)?, float(1)?);
                let expected = window.apply(&x, dy.0.get(1).copied().unwrap_or(Dim::Fixed(0)));
                if expected.as_ref() != Ok(&dy) {
                    return Err(format!("conv2d weight gradient of {x} with {dy}"));
                }
                let k = window.kernel;
                f32(Shape(vec![
                    dy.0[1],
                    x.0[1],
                    Dim::Fixed(k[0]),
                    Dim::Fixed(k[1]),
                ]))
            }
            Op::PoolGrad(_, window) => {
                let (x, dy) = (float(0)?, float(1)?);
                if window
                    .apply(&x, x.0.get(1).copied().unwrap_or(Dim::Fixed(0)))
                    .as_ref()
                    != Ok(&dy)
                {
                    return Err(format!("pooling gradient of {x} with {dy}"));
                }
                f32(x)
            }
            Op::Pool(_, window) => {
                let x = float(0)?;
                window
                    .apply(&x, x.0.get(1).copied().unwrap_or(Dim::Fixed(0)))
                    .map_err(|_| "window does not fit".to_string())
                    .and_then(f32)
            }
            Op::Concat(axis) => {
                let mut joined = float(0)?;
                if *axis == 0 || *axis >= joined.rank() {
                    return Err(format!("cannot join {joined} along axis {axis}"));
                }
                let mut total = 0u64;
                for i in 0..args.len() {
                    let part = float(i)?;
                    let fits = part.rank() == joined.rank()
                        && (0..part.rank()).all(|k| k == *axis || part.0[k] == joined.0[k]);
                    match (fits, part.0[*axis]) {
                        (true, Dim::Fixed(n)) => total += n,
                        _ => return Err(format!("cannot join {part} to {joined}")),
                    }
                }
                joined.0[*axis] = Dim::Fixed(total);
                f32(joined)
            }
            Op::Slice { axis, start, len } => {
                let mut from = float(0)?;
                match from.0.get(*axis) {
                    Some(Dim::Fixed(n)) if *axis > 0 && *len > 0 && start + len <= *n => {
                        from.0[*axis] = Dim::Fixed(*len);
                        f32(from)
                    }
                    _ => Err(format!(
                        "cannot slice {from} at {start}..+{len} on axis {axis}"
                    )),
                }
            }
        }
    }
}

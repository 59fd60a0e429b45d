//! Maps: an elementwise computation over a node's shape, fusing a chain of elementwise
//! operations into one loop nest that reads each operand once and writes one buffer. Axes
//! every operand walks as one are merged, and the innermost runs four lanes wide when every
//! operation can.

use super::{KernelKind, Pieces, Share, PIECE_FLOATS};
use crate::codegen::abi::Import;
use crate::codegen::alloc::BufferId;
use crate::codegen::arith::{exp, tanh, Width};
use crate::codegen::layout::{coalesce, contiguous, dims, product, Sym, View};
use crate::codegen::loops::flags;
use crate::codegen::lower::{Lowerer, Reader};
use crate::ir::{BinaryOp, Elementwise, Graph, NodeId, Op, UnaryOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// An elementwise computation over `node`'s shape, written to `out` (contiguous): `expr`
/// combines the `args` (views in the output's axes), fusing a chain of operations.
#[derive(Clone, Debug)]
pub struct Map {
    pub node: NodeId,
    pub out: BufferId,
    pub args: Vec<View>,
    pub expr: Expr,
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

    /// Operations on the longest path from the result to an argument.
    pub fn depth(&self) -> usize {
        match self {
            Expr::Read(_) => 0,
            Expr::Apply(_, children) => 1 + children.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }

    pub fn shifted(self, by: usize) -> Expr {
        match self {
            Expr::Read(i) => Expr::Read(i + by),
            Expr::Apply(node, children) => {
                Expr::Apply(node, children.into_iter().map(|c| c.shifted(by)).collect())
            }
        }
    }
}

impl Map {
    /// A map's loop nest: its output's dimensions, merged where every operand allows, and the
    /// strides over them of the output and then of each argument. One-hot needs the class
    /// index, so a map that applies it keeps its axes.
    pub fn map_layout(&self, graph: &Graph) -> (Vec<Sym>, Vec<Vec<Sym>>) {
        let shape = graph.shape(self.node);
        let mut views = vec![contiguous(shape)];
        views.extend(self.args.iter().map(|a| a.strides.clone()));
        let one_hot = self
            .expr
            .nodes()
            .iter()
            .any(|n| matches!(graph.node(*n).op, Op::OneHot { .. }));
        if one_hot {
            (dims(shape), views)
        } else {
            coalesce(&dims(shape), &views)
        }
    }
}

impl KernelKind for Map {
    fn name(&self) -> &'static str {
        "map"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn outputs(&self) -> Vec<BufferId> {
        vec![self.out]
    }

    fn inputs(&self) -> Vec<&View> {
        self.args.iter().collect()
    }

    fn detail(&self, graph: &Graph) -> String {
        let inner: Vec<String> = (self.expr.nodes().iter().skip(1))
            .map(|n| format!("{n} {}", graph.node(*n).op))
            .collect();
        if inner.is_empty() {
            String::new()
        } else {
            format!(", fusing {}", inner.join(", "))
        }
    }

    /// The outermost axis of the loop nest, in pieces of at least `PIECE_FLOATS` floats (whole
    /// vectors of 16 when the loop is the only one).
    fn pieces(&self, graph: &Graph, max_batch: usize) -> Option<Pieces> {
        let (dims, _) = self.map_layout(graph);
        let (&outer, inner) = dims.split_first()?;
        let floats = product(inner).at(max_batch as i64);
        let granule = if inner.is_empty() { 16 } else { 1 };
        Pieces::cut(Share::Loop(outer), floats, PIECE_FLOATS, granule, max_batch)
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        // Axes that every operand walks as one are merged, so a map over operands laid
        // out like the output is one flat loop, and a bias added to a convolution's
        // `[O, N, P]` output loops over rows of P.
        let applied = self.expr.nodes();
        let op_of = |n: &NodeId| &l.graph.node(*n).op;
        let (dims, views) = self.map_layout(l.graph);
        let out_base = l.buffer_address(b, self.out);
        // Scalars are read once, before the loops; every other operand is walked.
        let readers: Vec<Reader> = (self.args)
            .iter()
            .zip(&views[1..])
            .map(|(a, strides)| {
                l.reader(
                    b,
                    &View {
                        base: a.base,
                        strides: strides.clone(),
                    },
                )
            })
            .collect();
        let mut walked = vec![(out_base, views[0].clone())];
        for (reader, strides) in readers.iter().zip(&views[1..]) {
            if let Reader::Memory { base, .. } = reader {
                walked.push((*base, strides.clone()));
            }
        }
        // Four lanes along the innermost axis when every operand steps by one element
        // there, or stays put (a value broadcast along it).
        let vector = applied.iter().all(|n| vectorizable(op_of(n)))
            && walked[1..].iter().all(|(_, v)| {
                matches!(v.last(), None | Some(&Sym::ZERO)) || v.last() == Some(&Sym::ONE)
            });
        let dim_values: Vec<Value> = dims.iter().map(|&d| l.sym(b, d)).collect();
        let out_strides = l.contiguous(b, &dim_values);
        l.walk(b, &dims, &walked, vector, &mut |b, index, ty, addresses| {
            let mut walked_addresses = addresses[1..].iter().zip(&walked[1..]);
            let values: Vec<Value> = readers
                .iter()
                .map(|r| match r {
                    Reader::Scalar(v) if ty == types::F32X4 => b.ins().splat(types::F32X4, *v),
                    Reader::Scalar(v) => *v,
                    Reader::Memory { .. } => {
                        let (&address, (_, strides)) =
                            walked_addresses.next().expect("one address per operand");
                        if ty == types::F32 || strides.last() == Some(&Sym::ONE) {
                            b.ins().load(ty, flags(), address, 0)
                        } else {
                            let v = b.ins().load(types::F32, flags(), address, 0);
                            b.ins().splat(types::F32X4, v)
                        }
                    }
                })
                .collect();
            let at = Element {
                index,
                out_strides: &out_strides,
                vector: ty == types::F32X4,
            };
            let value = evaluate(l, b, &self.expr, &values, &at);
            b.ins().store(flags(), value, addresses[0], 0);
        });
    }
}

/// Where an elementwise value is computed: its loop indices, the output's strides, and whether
/// it is four lanes wide.
#[derive(Clone, Copy)]
struct Element<'a> {
    index: &'a [Value],
    out_strides: &'a [Value],
    vector: bool,
}

/// One element of a fused expression: its reads combined by the nodes it applies.
fn evaluate(
    l: &Lowerer,
    b: &mut FunctionBuilder,
    expr: &Expr,
    values: &[Value],
    at: &Element,
) -> Value {
    match expr {
        Expr::Read(i) => values[*i],
        Expr::Apply(node, children) => {
            let args: Vec<Value> = children
                .iter()
                .map(|c| evaluate(l, b, c, values, at))
                .collect();
            apply(l, b, *node, &args, at)
        }
    }
}

/// One element of a node's elementwise operation.
fn apply(
    l: &Lowerer,
    b: &mut FunctionBuilder,
    node: NodeId,
    args: &[Value],
    at: &Element,
) -> Value {
    let Element {
        index,
        out_strides,
        vector,
    } = *at;
    let op = (l.graph.node(node).op.elementwise())
        .expect("only elementwise operations are fused into maps");
    let w = Width { vector };
    let (zero, one) = (w.constant(b, 0.0), w.constant(b, 1.0));
    match op {
        Elementwise::Unary(u) => {
            let x = args[0];
            match u {
                UnaryOp::Neg => b.ins().fneg(x),
                UnaryOp::Relu => w.select(b, (x, FloatCC::GreaterThan, zero), x, zero),
                UnaryOp::Sigmoid => {
                    let minus = b.ins().fneg(x);
                    let e = exp(b, minus, vector);
                    let denominator = b.ins().fadd(one, e);
                    b.ins().fdiv(one, denominator)
                }
                UnaryOp::Tanh => tanh(b, x, vector),
                UnaryOp::Exp => exp(b, x, vector),
                UnaryOp::Log => l.call(b, Import::Logf, &[x]).expect("logf returns"),
                UnaryOp::Abs => b.ins().fabs(x),
                UnaryOp::Sqrt => b.ins().sqrt(x),
                UnaryOp::Square => b.ins().fmul(x, x),
                UnaryOp::Sin => l.call(b, Import::Sinf, &[x]).expect("sinf returns"),
                UnaryOp::Cos => l.call(b, Import::Cosf, &[x]).expect("cosf returns"),
                UnaryOp::Floor => b.ins().floor(x),
                UnaryOp::Step => w.select(b, (x, FloatCC::GreaterThan, zero), one, zero),
                UnaryOp::Sign => {
                    let minus_one = w.constant(b, -1.0);
                    let negative = w.select(b, (x, FloatCC::LessThan, zero), minus_one, zero);
                    w.select(b, (x, FloatCC::GreaterThan, zero), one, negative)
                }
            }
        }
        Elementwise::Binary(op) => {
            let (x, y) = (args[0], args[1]);
            match op {
                BinaryOp::Add => b.ins().fadd(x, y),
                BinaryOp::Sub => b.ins().fsub(x, y),
                BinaryOp::Mul => b.ins().fmul(x, y),
                BinaryOp::Div => b.ins().fdiv(x, y),
                BinaryOp::Equal => w.select(b, (x, FloatCC::Equal, y), one, zero),
            }
        }
        Elementwise::OneHot => {
            let class = b.ins().fcvt_to_sint_sat(types::I64, args[0]);
            let hit = b.ins().icmp(IntCC::Equal, class, index[1]);
            b.ins().select(hit, one, zero)
        }
        Elementwise::DropoutMask { p } => {
            let flat = index.iter().zip(out_strides).fold(
                b.ins().iconst(types::I64, 0),
                |acc, (&i, &s)| {
                    let term = b.ins().imul(i, s);
                    b.ins().iadd(acc, term)
                },
            );
            let stream = b.ins().iconst(types::I64, node.0 as i64);
            let u = uniform(l, b, stream, flat);
            let p_v = b.ins().f64const(p);
            let keep = w.constant(b, (1.0 / (1.0 - p)) as f32);
            let dropped = b.ins().fcmp(FloatCC::LessThan, u, p_v);
            b.ins().select(dropped, zero, keep)
        }
    }
}

/// The interpreter's counter-based uniform number for (step seed, stream, index).
fn uniform(l: &Lowerer, b: &mut FunctionBuilder, stream: Value, index: Value) -> Value {
    let mul = |b: &mut FunctionBuilder, x: Value, c: u64| {
        let c = b.ins().iconst(types::I64, c as i64);
        b.ins().imul(x, c)
    };
    let mix = |b: &mut FunctionBuilder, z: Value, shift: i64| {
        let shifted = b.ins().ushr_imm_u(z, shift);
        b.ins().bxor(z, shifted)
    };
    let s = mul(b, stream, 0x9e37_79b9_7f4a_7c15);
    let i = mul(b, index, 0xd1b5_4a32_d192_ed03);
    let z = b.ins().bxor(l.params.seed, s);
    let z = b.ins().bxor(z, i);
    let z = mix(b, z, 30);
    let z = mul(b, z, 0xbf58_476d_1ce4_e5b9);
    let z = mix(b, z, 27);
    let z = mul(b, z, 0x94d0_49bb_1331_11eb);
    let z = mix(b, z, 31);
    let top = b.ins().ushr_imm_u(z, 11);
    let as_float = b.ins().fcvt_from_uint(types::F64, top);
    let scale = b.ins().f64const(1.0 / (1u64 << 53) as f64);
    b.ins().fmul(as_float, scale)
}

/// Elementwise operations that run on four lanes (no calls, no per-element random numbers).
fn vectorizable(op: &Op) -> bool {
    match op.elementwise() {
        Some(Elementwise::Unary(u)) => match u {
            UnaryOp::Log | UnaryOp::Sin | UnaryOp::Cos => false,
            UnaryOp::Neg
            | UnaryOp::Relu
            | UnaryOp::Sigmoid
            | UnaryOp::Tanh
            | UnaryOp::Exp
            | UnaryOp::Abs
            | UnaryOp::Sqrt
            | UnaryOp::Square
            | UnaryOp::Floor
            | UnaryOp::Step
            | UnaryOp::Sign => true,
        },
        Some(Elementwise::Binary(_)) => true,
        Some(Elementwise::DropoutMask { .. } | Elementwise::OneHot) => false,
        None => unreachable!("only elementwise operations are fused into maps"),
    }
}

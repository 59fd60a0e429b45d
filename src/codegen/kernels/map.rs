//! Maps: an elementwise computation over a node's shape, fusing a chain of elementwise
//! operations into one loop nest that reads each operand once and writes one buffer. Axes
//! every operand walks as one are merged, and the innermost runs four lanes wide when every
//! operation can. A sigmoid or tanh of a row, alone or plus a bias, calls `codegen::rows` on
//! each row instead, which has eight lanes.

use super::{KernelKind, Pieces, Share, PIECE_FLOATS};
use crate::codegen::abi::Import;
use crate::codegen::alloc::BufferId;
use crate::codegen::arith::{exp, tanh, Width};
use crate::codegen::layout::{coalesce, contiguous, dims, product, Sym, View};
use crate::codegen::loops::flags;
use crate::codegen::lower::{Lowerer, Reader};
use crate::codegen::rows::{self, Activation, Add, Rows};
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

/// What a listing says of the operations a kernel computes as it reads its operands:
/// `, fusing %3 mul, %2 step`, or nothing.
pub(super) fn fusing(graph: &Graph, nodes: &[NodeId]) -> String {
    let fused: Vec<String> = (nodes.iter())
        .map(|n| format!("{n} {}", graph.node(*n).op))
        .collect();
    match fused.is_empty() {
        true => String::new(),
        false => format!(", fusing {}", fused.join(", ")),
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
        // The first is the map's own node; a copy (`Expr::Read`) applies none.
        let nodes = self.expr.nodes();
        fusing(graph, nodes.get(1..).unwrap_or_default())
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
        if let Some(form) = self.rows_form(l.graph, &views, &readers) {
            return emit_rows(l, b, form, &dims, &views, out_base);
        }
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

impl Map {
    /// The map as `netc_rows` computes it, row by row along the innermost axis (see
    /// `codegen::rows`): sigmoid or tanh of an argument that runs along the rows as the output
    /// does, or of its sum with an argument that runs along them too or stays put (a bias).
    /// Only where `rows` has wider vectors than the four lanes of the loops emitted here.
    fn rows_form(&self, graph: &Graph, views: &[Vec<Sym>], readers: &[Reader]) -> Option<RowsForm> {
        if !rows::vectorized() {
            return None;
        }
        let op = |node: &NodeId| graph.node(*node).op.elementwise();
        let Expr::Apply(node, inner) = &self.expr else {
            return None;
        };
        let activation = match op(node)? {
            Elementwise::Unary(UnaryOp::Sigmoid) => Activation::Sigmoid,
            Elementwise::Unary(UnaryOp::Tanh) => Activation::Tanh,
            _ => return None,
        };
        // An argument read in memory along the rows, or one that stays put along them.
        let along = |i: usize| views[1 + i].last() == Some(&Sym::ONE);
        let put = |i: usize| views[1 + i].last() == Some(&Sym::ZERO);
        let memory = |i: usize| match readers[i] {
            Reader::Memory { base, .. } => Some(base),
            Reader::Scalar(_) => None,
        };
        let (x, c) = match inner.as_slice() {
            [Expr::Read(x)] => (*x, None),
            [Expr::Apply(add, operands)]
                if matches!(op(add), Some(Elementwise::Binary(BinaryOp::Add))) =>
            {
                match operands.as_slice() {
                    [Expr::Read(x), Expr::Read(c)] if along(*x) && (along(*c) || put(*c)) => {
                        (*x, Some((*c, false)))
                    }
                    [Expr::Read(c), Expr::Read(x)] if along(*x) && put(*c) => {
                        (*x, Some((*c, true)))
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
        if views[0].last() != Some(&Sym::ONE) || !along(x) {
            return None;
        }
        let c = match c {
            None => None,
            Some((c, c_first)) => {
                let row = along(c);
                let source = match (&readers[c], row) {
                    (Reader::Scalar(v), false) => Operand::Value(*v),
                    (Reader::Memory { base, .. }, _) => Operand::Walked(*base, c),
                    (Reader::Scalar(_), true) => return None,
                };
                Some((Add { c_first, row }, source))
            }
        };
        Some(RowsForm {
            rows: Rows {
                activation,
                add: c.map(|(add, _)| add),
            },
            x: (memory(x)?, x),
            c: c.map(|(_, source)| source),
        })
    }
}

/// A map that `netc_rows` computes: what it computes, and where `x` and `c` come from (the
/// base address and argument index of those read in memory).
struct RowsForm {
    rows: Rows,
    x: (Value, usize),
    c: Option<Operand>,
}

/// Where `c` comes from.
#[derive(Clone, Copy)]
enum Operand {
    Value(Value),
    Walked(Value, usize),
}

/// Calls `netc_rows` on each row: in a loop over every axis but the innermost, or on the
/// piece's part of the only axis.
fn emit_rows(
    l: &Lowerer,
    b: &mut FunctionBuilder,
    form: RowsForm,
    dims: &[Sym],
    views: &[Vec<Sym>],
    out: Value,
) {
    let (&inner, outer) = dims.split_last().expect("a map has an axis");
    let mut walked = vec![(out, 0), (form.x.0, 1 + form.x.1)];
    let zero = b.ins().f32const(0.0);
    let c = match form.c {
        None => zero,
        Some(Operand::Value(v)) => v,
        Some(Operand::Walked(base, i)) => {
            walked.push((base, 1 + i));
            zero
        }
    };
    let c_in_memory = walked.len() == 3;
    let row = form.rows.add.is_some_and(|add| add.row);
    let code = b.ins().iconst(types::I64, form.rows.code());
    // At each row's addresses (output, x, then c's if in memory), the call.
    let call = |b: &mut FunctionBuilder, addresses: &[Value], len: Value| {
        let (c, c_row) = match (c_in_memory, row) {
            (true, true) => (c, addresses[2]),
            (true, false) => (
                b.ins().load(types::F32, flags(), addresses[2], 0),
                addresses[1],
            ),
            (false, _) => (c, addresses[1]),
        };
        let args = [code, addresses[1], c, c_row, addresses[0], len];
        l.call(b, Import::Rows, &args);
    };
    if outer.is_empty() {
        let len = l.sym(b, inner);
        let [first, end] = l
            .params
            .range
            .unwrap_or([b.ins().iconst(types::I64, 0), len]);
        let addresses: Vec<Value> = walked
            .iter()
            .map(|&(base, i)| {
                let strides = [l.sym(b, views[i][0])];
                l.address(b, base, &strides, &[first])
            })
            .collect();
        let len = b.ins().isub(end, first);
        call(b, &addresses, len);
        return;
    }
    let len = l.sym(b, inner);
    let walked: Vec<(Value, Vec<Sym>)> = (walked.iter())
        .map(|&(base, i)| (base, views[i][..outer.len()].to_vec()))
        .collect();
    l.walk(b, outer, &walked, false, &mut |b, _, _, addresses| {
        call(b, addresses, len)
    });
}

/// Where an elementwise value is computed: its loop indices, the output's strides, and whether
/// it is four lanes wide.
#[derive(Clone, Copy)]
pub(super) struct Element<'a> {
    pub(super) index: &'a [Value],
    pub(super) out_strides: &'a [Value],
    pub(super) vector: bool,
}

/// One element of a fused expression: its reads combined by the nodes it applies.
pub(super) fn evaluate(
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
pub(super) fn vectorizable(op: &Op) -> bool {
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

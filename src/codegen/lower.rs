//! Lowering a plan to one Cranelift function: every kernel becomes a loop nest over its output
//! (or input, for reductions); matrix products call the imported `netc_gemm`; `exp` and `tanh`
//! are emitted inline, operation for operation as the interpreter's `math` computes them (so
//! they run four lanes wide), while `log` calls the same Rust function the interpreter uses.
//! Results match the interpreter exactly everywhere except inside matrix products and
//! reductions split between workers, whose summation order differs.

use super::arith::{exp, f32_const, tanh, Width};
use super::loops::{
    add_into, branch, displaced, element, flags, fold, fold_lanes, lanes, loops, loops_within,
    range, unrolled, zero_range, zeros,
};
use super::plan::{
    Base, BufferId, Conv, ConvPass, Expr, Kernel, Plan, Share, Sums, Sym, View, WORKERS,
};
use crate::ir::{BinaryOp, Elementwise, Graph, NodeId, Op, PoolOp, ReduceOp, UnaryOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Block, FuncRef, Function, InstBuilder, Signature, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// Whole-tensor sums of fewer elements than this (per example, for a tensor with a batch
/// axis) add them one after another, in the interpreter's order.
const EXACT_SUM_MAX: i64 = 1 << 14;

/// The imported helpers, in the order `lower` expects their references.
pub const IMPORTS: [&str; 4] = ["netc_gemm", "netc_logf", "netc_tick", "netc_parallel"];

/// An imported helper, by its position in `IMPORTS`.
#[derive(Clone, Copy)]
enum Import {
    Gemm,
    Logf,
    Tick,
    Parallel,
}

/// Signatures of the imported helpers, in `IMPORTS` order.
pub fn import_signatures(make: impl Fn() -> Signature, pointer: types::Type) -> Vec<Signature> {
    let gemm = {
        let mut s = make();
        for ty in [
            types::I64,
            types::I64,
            types::I64,
            pointer,
            types::I64,
            pointer,
            types::I64,
            types::I64,
            pointer,
            types::I64,
            types::I64,
            types::I64,
        ] {
            s.params.push(AbiParam::new(ty));
        }
        s
    };
    let unary = {
        let mut s = make();
        s.params.push(AbiParam::new(types::F32));
        s.returns.push(AbiParam::new(types::F32));
        s
    };
    let tick = {
        let mut s = make();
        s.params.push(AbiParam::new(types::I64));
        s
    };
    let parallel = {
        let mut s = make();
        for ty in [
            pointer,
            pointer,
            pointer,
            types::I64,
            pointer,
            types::I64,
            types::I64,
        ] {
            s.params.push(AbiParam::new(ty));
        }
        s
    };
    vec![gemm, unary, tick, parallel]
}

/// The signature of a kernel's share function: the entry point's arguments
/// `(pointers, arena, batch, hypers, seed)`, then `first, end, worker`.
pub fn share_signature(make: impl Fn() -> Signature, pointer: types::Type) -> Signature {
    let mut s = entry_signature(make, pointer);
    for _ in ["first", "end", "worker"] {
        s.params.push(AbiParam::new(types::I64));
    }
    s
}

/// The entry point's signature: `(pointers, arena, batch, hypers, seed)`.
pub fn entry_signature(make: impl Fn() -> Signature, pointer: types::Type) -> Signature {
    let mut s = make();
    for ty in [pointer, pointer, types::I64, pointer, types::I64] {
        s.params.push(AbiParam::new(ty));
    }
    s
}

/// Fills `func` (whose signature is the entry signature) with the plan's kernels and returns
/// the block each kernel's code starts in, for the printed listing. `shares[k]` is the share
/// function of kernel `k` when its work is split between workers (see `lower_share`).
pub fn lower(
    graph: &Graph,
    plan: &Plan,
    func: &mut Function,
    imports: &[FuncRef],
    shares: &[Option<FuncRef>],
    config: TargetFrontendConfig,
    profile: bool,
) -> Vec<Block> {
    let mut starts = Vec::new();
    define(func, config, |b, params| {
        let l = Lowerer::new(graph, plan, imports, shares, config, params);
        for (k, kernel) in plan.kernels.iter().enumerate() {
            // Each kernel starts a block of its own, so the listing can say where it begins.
            let start = b.create_block();
            b.ins().jump(start, &[]);
            b.switch_to_block(start);
            starts.push(start);
            if profile {
                let index = b.ins().iconst(types::I64, k as i64);
                l.call(b, Import::Tick, &[index]);
            }
            l.kernel(b, Some(k), kernel);
        }
        if profile {
            let end = b.ins().iconst(types::I64, plan.kernels.len() as i64);
            l.call(b, Import::Tick, &[end]);
        }
    });
    starts
}

/// Fills `func` (whose signature is the share signature) with one worker's share of kernel `k`:
/// iterations `first..end` of the loop its work is split along (`Kernel::split`).
pub fn lower_share(
    graph: &Graph,
    plan: &Plan,
    k: usize,
    func: &mut Function,
    imports: &[FuncRef],
    config: TargetFrontendConfig,
) {
    define(func, config, |b, params| {
        let l = Lowerer {
            share: Some([params[5], params[6], params[7]]),
            ..Lowerer::new(graph, plan, imports, &[], config, params)
        };
        l.kernel(b, Some(k), &plan.kernels[k]);
    });
}

/// Builds `func`: `body` emits its code from the entry block's parameters; a return ends it.
fn define(
    func: &mut Function,
    config: TargetFrontendConfig,
    body: impl FnOnce(&mut FunctionBuilder, &[Value]),
) {
    let mut context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    body(&mut b, &params);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(config);
}

#[derive(Clone, Copy)]
struct Lowerer<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    imports: &'a [FuncRef],
    /// Each kernel's share function, in the entry point (whose kernels dispatch to them).
    shares: &'a [Option<FuncRef>],
    /// In a share function: the range `first..end` of the split loop, and the worker.
    share: Option<[Value; 3]>,
    pointer: types::Type,
    pointers: Value,
    arena: Value,
    batch: Value,
    hypers: Value,
    seed: Value,
}

impl<'a> Lowerer<'a> {
    /// A lowerer for a function whose first parameters are the entry point's
    /// `(pointers, arena, batch, hypers, seed)`.
    fn new(
        graph: &'a Graph,
        plan: &'a Plan,
        imports: &'a [FuncRef],
        shares: &'a [Option<FuncRef>],
        config: TargetFrontendConfig,
        params: &[Value],
    ) -> Lowerer<'a> {
        Lowerer {
            graph,
            plan,
            imports,
            shares,
            share: None,
            pointer: config.pointer_type(),
            pointers: params[0],
            arena: params[1],
            batch: params[2],
            hypers: params[3],
            seed: params[4],
        }
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

/// One position a pooling window reads: element `source + offset` of the input.
struct Patch {
    /// Whether the position is inside the input (not padding); `None` when it always is.
    inside: Option<Value>,
    /// An element index (0 when the position is outside), shared by the window's positions
    /// when the window has no padding...
    source: Value,
    /// ...which then differ by this constant.
    offset: i64,
}

impl Patch {
    /// The input's value here.
    fn load(&self, b: &mut FunctionBuilder, base: Value) -> Value {
        let address = element(b, base, self.source);
        let (address, offset) = displaced(b, address, 4 * self.offset);
        b.ins().load(types::F32, flags(), address, offset)
    }

    /// Adds `v` to the value here in `base`.
    fn add(&self, b: &mut FunctionBuilder, base: Value, v: Value) {
        let address = element(b, base, self.source);
        let (address, offset) = displaced(b, address, 4 * self.offset);
        let current = b.ins().load(types::F32, flags(), address, offset);
        let sum = b.ins().fadd(current, v);
        b.ins().store(flags(), sum, address, offset);
    }

    /// The element index.
    fn index(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().iadd_imm_s(self.source, self.offset)
    }

    /// `v` inside the input, `otherwise` in padding.
    fn keep(&self, b: &mut FunctionBuilder, v: Value, otherwise: Value) -> Value {
        match self.inside {
            Some(inside) => b.ins().select(inside, v, otherwise),
            None => v,
        }
    }
}

/// Which way `patches` moves data between an image tensor and its im2col matrix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From the image into the matrix (im2col).
    Gather,
    /// From the matrix back into the image, adding (col2im).
    Scatter,
}

/// One pooling window: its output element and the positions it covers, in order.
struct Window {
    output: Value,
    cover: Vec<Patch>,
}

impl Window {
    fn output_address(&self, b: &mut FunctionBuilder, base: Value) -> Value {
        element(b, base, self.output)
    }
}

/// Where a softmax kernel reads and writes element `j` of its row: one (outer, inner) row
/// through `strides`, or with `four` (the row length, for a softmax over the innermost axis)
/// rows `row..row + 4`, one per lane.
#[derive(Clone, Copy)]
struct SoftmaxRows {
    strides: [Value; 3],
    row: Value,
    inner: Value,
    four: Option<i64>,
}

impl SoftmaxRows {
    /// The address of element `j` of the (first) row in `base`.
    fn at(&self, l: &Lowerer, b: &mut FunctionBuilder, base: Value, j: Value) -> Value {
        l.address(b, base, &self.strides, &[self.row, j, self.inner])
    }

    fn load(&self, l: &Lowerer, b: &mut FunctionBuilder, base: Value, j: Value) -> Value {
        let address = self.at(l, b, base, j);
        let Some(len) = self.four else {
            return b.ins().load(types::F32, flags(), address, 0);
        };
        let first = b.ins().load(types::F32, flags(), address, 0);
        let vector = b.ins().splat(types::F32X4, first);
        (1..4u8).fold(vector, |v, lane| {
            let (address, offset) = displaced(b, address, 4 * len * lane as i64);
            let x = b.ins().load(types::F32, flags(), address, offset);
            b.ins().insertlane(v, x, lane)
        })
    }

    fn store(&self, l: &Lowerer, b: &mut FunctionBuilder, base: Value, j: Value, v: Value) {
        let address = self.at(l, b, base, j);
        let Some(len) = self.four else {
            b.ins().store(flags(), v, address, 0);
            return;
        };
        for lane in 0..4u8 {
            let x = b.ins().extractlane(v, lane);
            let (address, offset) = displaced(b, address, 4 * len * lane as i64);
            b.ins().store(flags(), x, address, offset);
        }
    }
}

/// A view ready to read inside a loop: a base address and strides as values, or a scalar.
enum Reader {
    Memory { base: Value, strides: Vec<Value> },
    Scalar(Value),
}

impl Lowerer<'_> {
    fn sym(&self, b: &mut FunctionBuilder, s: Sym) -> Value {
        let coef = b.ins().iconst(types::I64, s.coef);
        if s.batch {
            b.ins().imul(coef, self.batch)
        } else {
            coef
        }
    }

    fn buffer_address(&self, b: &mut FunctionBuilder, buffer: BufferId) -> Value {
        let offset = (self.plan.offset(buffer) * 4) as i64;
        b.ins().iadd_imm_s(self.arena, offset)
    }

    fn reader(&self, b: &mut FunctionBuilder, view: &View) -> Reader {
        let base = match view.base {
            Base::External(slot) => {
                b.ins()
                    .load(self.pointer, flags(), self.pointers, (slot * 8) as i32)
            }
            Base::Buffer(buffer) => self.buffer_address(b, buffer),
            Base::Const(c) => return Reader::Scalar(b.ins().f32const(c)),
            Base::Hyper(k) => {
                return Reader::Scalar(b.ins().load(
                    types::F32,
                    flags(),
                    self.hypers,
                    (k * 4) as i32,
                ))
            }
            Base::BatchSize => {
                return Reader::Scalar(b.ins().fcvt_from_sint(types::F32, self.batch))
            }
        };
        // One element broadcast everywhere (zero strides): read it once, before the loop.
        if view.strides.iter().all(|&s| s == Sym::ZERO) {
            return Reader::Scalar(b.ins().load(types::F32, flags(), base, 0));
        }
        let strides = view.strides.iter().map(|&s| self.sym(b, s)).collect();
        Reader::Memory { base, strides }
    }

    fn read(&self, b: &mut FunctionBuilder, reader: &Reader, index: &[Value]) -> Value {
        match reader {
            Reader::Scalar(v) => *v,
            Reader::Memory { base, strides } => {
                let address = self.address(b, *base, strides, index);
                b.ins().load(types::F32, flags(), address, 0)
            }
        }
    }

    /// `base + 4·Σ index·stride`.
    fn address(
        &self,
        b: &mut FunctionBuilder,
        base: Value,
        strides: &[Value],
        index: &[Value],
    ) -> Value {
        let mut offset = b.ins().iconst(types::I64, 0);
        for (&i, &s) in index.iter().zip(strides) {
            let term = b.ins().imul(i, s);
            offset = b.ins().iadd(offset, term);
        }
        let bytes = b.ins().ishl_imm_u(offset, 2);
        b.ins().iadd(base, bytes)
    }

    fn contiguous(&self, b: &mut FunctionBuilder, dims: &[Value]) -> Vec<Value> {
        let mut strides = vec![b.ins().iconst(types::I64, 1); dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = b.ins().imul(strides[i + 1], dims[i + 1]);
        }
        strides
    }

    fn call(&self, b: &mut FunctionBuilder, import: Import, args: &[Value]) -> Option<Value> {
        let call = b.ins().call(self.imports[import as usize], args);
        b.inst_results(call).first().copied()
    }

    /// Emits a kernel: the plan's kernel `k` (which may be handed to its share function), or,
    /// with `None`, a kernel inside another (an epilogue's map).
    fn kernel(&self, b: &mut FunctionBuilder, k: Option<usize>, kernel: &Kernel) {
        if let Some(function) = k.and_then(|k| self.shares.get(k).copied().flatten()) {
            return self.dispatch(b, kernel, function);
        }
        match kernel {
            Kernel::Map {
                out, args, expr, ..
            } => {
                // Axes that every operand walks as one are merged, so a map over operands laid
                // out like the output is one flat loop, and a bias added to a convolution's
                // `[O, N, P]` output loops over rows of P.
                let applied = expr.nodes();
                let op_of = |n: &NodeId| &self.graph.node(*n).op;
                let (dims, views) = kernel.map_layout(self.graph);
                let out_base = self.buffer_address(b, *out);
                // Scalars are read once, before the loops; every other operand is walked.
                let readers: Vec<Reader> = args
                    .iter()
                    .zip(&views[1..])
                    .map(|(a, strides)| {
                        self.reader(
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
                let unit = Sym {
                    coef: 1,
                    batch: false,
                };
                let vector = applied.iter().all(|n| vectorizable(op_of(n)))
                    && walked[1..].iter().all(|(_, v)| {
                        matches!(v.last(), None | Some(&Sym::ZERO)) || v.last() == Some(&unit)
                    });
                let dim_values: Vec<Value> = dims.iter().map(|&d| self.sym(b, d)).collect();
                let out_strides = self.contiguous(b, &dim_values);
                self.walk(b, &dims, &walked, vector, &mut |b, index, ty, addresses| {
                    let mut walked_addresses = addresses[1..].iter().zip(&walked[1..]);
                    let values: Vec<Value> = readers
                        .iter()
                        .map(|r| match r {
                            Reader::Scalar(v) if ty == types::F32X4 => {
                                b.ins().splat(types::F32X4, *v)
                            }
                            Reader::Scalar(v) => *v,
                            Reader::Memory { .. } => {
                                let (&address, (_, strides)) =
                                    walked_addresses.next().expect("one address per operand");
                                if ty == types::F32 || strides.last() == Some(&unit) {
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
                    let value = self.evaluate(b, expr, &values, &at);
                    b.ins().store(flags(), value, addresses[0], 0);
                });
            }
            Kernel::Gemm {
                out,
                a,
                b: rhs,
                m,
                n,
                k,
                sums,
                ..
            } => {
                let (
                    Reader::Memory {
                        base: lhs,
                        strides: ls,
                    },
                    Reader::Memory {
                        base: rhs_base,
                        strides: rs,
                    },
                ) = (self.reader(b, a), self.reader(b, rhs))
                else {
                    unreachable!("the planner gives GEMM memory operands")
                };
                let (n_value, k) = (self.sym(b, *n), self.sym(b, *k));
                let dst = self.buffer_address(b, *out);
                // A worker's share is rows `first..end` of the output and of the left operand.
                let (first, end) = match self.share {
                    Some([first, end, _]) => (first, end),
                    None => (b.ins().iconst(types::I64, 0), self.sym(b, *m)),
                };
                let rows = b.ins().isub(end, first);
                let dst_first = b.ins().imul(first, n_value);
                let dst = element(b, dst, dst_first);
                let lhs_first = b.ins().imul(first, ls[0]);
                let lhs = element(b, lhs, lhs_first);
                let overwrite = b.ins().iconst(types::I64, 0);
                self.gemm(
                    b,
                    [rows, n_value, k],
                    (dst, n_value),
                    (lhs, ls[1], ls[0]),
                    (rhs_base, rs[1], rs[0]),
                    overwrite,
                );
                let worker = self.share.map_or(first, |[_, _, w]| w);
                self.epilogue_rows(b, kernel, [first, end, worker]);
                if let Some(sums) = sums {
                    let into = self.sums_into(b, sums, n_value);
                    let source = self.buffer_address(b, sums.input);
                    range(b, first, end, 1, &mut |b, row| {
                        let start = b.ins().imul(row, n_value);
                        let row = element(b, source, start);
                        add_into(b, into, row, n_value);
                    });
                    self.sums_done(b, sums);
                }
            }
            Kernel::Reduce {
                out,
                op,
                input,
                input_dims,
                axes,
                ..
            } => {
                let in_dims: Vec<Value> = input_dims.iter().map(|&d| self.sym(b, d)).collect();
                let out_dims: Vec<Value> = in_dims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, &d)| d)
                    .collect();
                let out_base = self.buffer_address(b, *out);
                let out_contiguous = self.contiguous(b, &out_dims);
                let zero = b.ins().iconst(types::I64, 0);
                let mut kept = out_contiguous.iter();
                let out_strides: Vec<Value> = (0..in_dims.len())
                    .map(|i| {
                        if axes.contains(&i) {
                            zero
                        } else {
                            *kept.next().expect("one stride per kept axis")
                        }
                    })
                    .collect();
                let init = b.ins().f32const(if *op == ReduceOp::Max {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
                loops(b, &out_dims, &mut |b, index| {
                    let address = self.address(b, out_base, &out_contiguous, index);
                    b.ins().store(flags(), init, address, 0);
                });
                // `current` and `v` are both scalars or both four lanes.
                let combine = |b: &mut FunctionBuilder, current: Value, v: Value| match op {
                    ReduceOp::Max => {
                        let w = Width {
                            vector: b.func.dfg.value_type(v) == types::F32X4,
                        };
                        w.select(b, (v, FloatCC::GreaterThan, current), v, current)
                    }
                    ReduceOp::Sum | ReduceOp::Mean => b.ins().fadd(current, v),
                };
                let row_major = super::plan::row_major(input_dims);
                let reader = self.reader(b, input);
                let total = super::plan::product(input_dims);
                match &reader {
                    // A reduction of a whole contiguous tensor (a loss) keeps its sum in a
                    // register, in the same order as the interpreter, unless the tensor is
                    // large (an L2 penalty over a layer's weights): there one addition waiting
                    // for the last costs more than the rest of the step's elementwise work, so
                    // it takes four lanes, as below.
                    Reader::Memory { base, .. }
                        if out_dims.is_empty()
                            && input.strides == row_major
                            && total.coef < EXACT_SUM_MAX =>
                    {
                        let total = self.sym(b, total);
                        let one = b.ins().iconst(types::I64, 1);
                        let sum = fold(b, total, init, &mut |b, j, acc| {
                            let address = self.address(b, *base, &[one], &[j]);
                            let v = b.ins().load(types::F32, flags(), address, 0);
                            combine(b, acc, v)
                        });
                        b.ins().store(flags(), sum, out_base, 0);
                    }
                    // Otherwise, over the merged axes: an innermost reduced axis is folded in
                    // registers (four partial results, then the remainder), an innermost kept
                    // axis updates four outputs at a time.
                    Reader::Memory { base, .. } => {
                        let kept_dims: Vec<Sym> = input_dims
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, &d)| d)
                            .collect();
                        let mut kept = super::plan::row_major(&kept_dims).into_iter();
                        let out_sym: Vec<Sym> = (0..input_dims.len())
                            .map(|i| {
                                if axes.contains(&i) {
                                    Sym::ZERO
                                } else {
                                    kept.next().expect("one stride per kept axis")
                                }
                            })
                            .collect();
                        let (dims, views) =
                            super::plan::coalesce(input_dims, &[input.strides.clone(), out_sym]);
                        let unit = Sym {
                            coef: 1,
                            batch: false,
                        };
                        let reduced_inner = views[1].last() == Some(&Sym::ZERO);
                        let vector = views[0].last() == Some(&unit)
                            && (reduced_inner || views[1].last() == Some(&unit));
                        let dims: Vec<Value> = dims.iter().map(|&d| self.sym(b, d)).collect();
                        let [in_strides, out_strides] = [&views[0], &views[1]]
                            .map(|v| v.iter().map(|&s| self.sym(b, s)).collect::<Vec<_>>());
                        let (&inner, outer) = dims.split_last().expect("a reduced axis");
                        loops(b, outer, &mut |b, outer_index| {
                            let at = |b: &mut FunctionBuilder,
                                      base: Value,
                                      strides: &[Value],
                                      z: Value| {
                                let mut index = outer_index.to_vec();
                                index.push(z);
                                self.address(b, base, strides, &index)
                            };
                            let zero = b.ins().iconst(types::I64, 0);
                            if reduced_inner {
                                let acc = fold_lanes(
                                    b,
                                    inner,
                                    init,
                                    vector,
                                    &mut |b, z, ty| {
                                        let address = at(b, *base, &in_strides, z);
                                        b.ins().load(ty, flags(), address, 0)
                                    },
                                    &combine,
                                );
                                let address = at(b, out_base, &out_strides, zero);
                                let current = b.ins().load(types::F32, flags(), address, 0);
                                let next = combine(b, current, acc);
                                b.ins().store(flags(), next, address, 0);
                            } else {
                                let starts = [
                                    at(b, *base, &in_strides, zero),
                                    at(b, out_base, &out_strides, zero),
                                ];
                                let steps = [&in_strides, &out_strides]
                                    .map(|s| *s.last().expect("an inner axis"));
                                lanes(
                                    b,
                                    zero,
                                    inner,
                                    vector,
                                    &starts,
                                    &steps,
                                    &mut |b, _, ty, a| {
                                        let v = b.ins().load(ty, flags(), a[0], 0);
                                        let current = b.ins().load(ty, flags(), a[1], 0);
                                        let next = combine(b, current, v);
                                        b.ins().store(flags(), next, a[1], 0);
                                    },
                                );
                            }
                        });
                    }
                    Reader::Scalar(_) => loops(b, &in_dims, &mut |b, index| {
                        let v = self.read(b, &reader, index);
                        let address = self.address(b, out_base, &out_strides, index);
                        let current = b.ins().load(types::F32, flags(), address, 0);
                        let next = combine(b, current, v);
                        b.ins().store(flags(), next, address, 0);
                    }),
                }
                if *op == ReduceOp::Mean {
                    let count = axes.iter().fold(b.ins().iconst(types::I64, 1), |acc, &a| {
                        b.ins().imul(acc, in_dims[a])
                    });
                    let count = b.ins().fcvt_from_sint(types::F32, count);
                    loops(b, &out_dims, &mut |b, index| {
                        let address = self.address(b, out_base, &out_contiguous, index);
                        let v = b.ins().load(types::F32, flags(), address, 0);
                        let mean = b.ins().fdiv(v, count);
                        b.ins().store(flags(), mean, address, 0);
                    });
                }
            }
            Kernel::Copy {
                out, input, dims, ..
            } => {
                let out_base = self.buffer_address(b, *out);
                let input_base = self.memory(b, input);
                let (dims, views) = super::plan::coalesce(
                    dims,
                    &[super::plan::row_major(dims), input.strides.clone()],
                );
                let unit = Sym {
                    coef: 1,
                    batch: false,
                };
                let vector = views[1].last() == Some(&unit);
                let walked = [(out_base, views[0].clone()), (input_base, views[1].clone())];
                self.walk(b, &dims, &walked, vector, &mut |b, _, ty, addresses| {
                    let v = b.ins().load(ty, flags(), addresses[1], 0);
                    b.ins().store(flags(), v, addresses[0], 0);
                });
            }
            Kernel::Conv { .. } => {
                let share = self.share.expect("convolutions run as shares");
                self.conv_chunks(b, kernel, share);
            }
            Kernel::Pool {
                out,
                input,
                op,
                conv,
                ..
            } => {
                let x = self.memory(b, input);
                let y = self.buffer_address(b, *out);
                let area = (conv.window.kernel[0] * conv.window.kernel[1]) as f32;
                self.windows(b, conv, &mut |b, window| {
                    // The interpreter's fold over the window, in its order; a position in
                    // padding contributes what cannot change the result (-inf or +0).
                    let (init, skip) = match op {
                        PoolOp::Max => (f32::NEG_INFINITY, f32::NEG_INFINITY),
                        PoolOp::Avg => (0.0, 0.0),
                    };
                    let mut acc = f32_const(b, init);
                    for at in &window.cover {
                        let v = at.load(b, x);
                        let skip = f32_const(b, skip);
                        let v = at.keep(b, v, skip);
                        acc = match op {
                            PoolOp::Max => {
                                let greater = b.ins().fcmp(FloatCC::GreaterThan, v, acc);
                                b.ins().select(greater, v, acc)
                            }
                            PoolOp::Avg => b.ins().fadd(acc, v),
                        };
                    }
                    if *op == PoolOp::Avg {
                        let area = f32_const(b, area);
                        acc = b.ins().fdiv(acc, area);
                    }
                    let address = window.output_address(b, y);
                    b.ins().store(flags(), acc, address, 0);
                });
            }
            Kernel::PoolGrad {
                out,
                input,
                grad,
                op,
                conv,
                epilogue,
                sums,
                ..
            } => {
                let (x, dy) = (self.memory(b, input), self.memory(b, grad));
                let dx = self.buffer_address(b, *out);
                let channels = b.ins().iconst(types::I64, conv.channels);
                let into = sums.as_ref().map(|sums| self.sums_into(b, sums, channels));
                // The windows of a plane add only into that plane: a share zeroes its own.
                match self.share {
                    Some([first, end, _]) => {
                        let plane = conv.height * conv.width;
                        let lo = b.ins().imul_imm_s(first, plane);
                        let hi = b.ins().imul_imm_s(end, plane);
                        zero_range(b, dx, lo, hi);
                    }
                    None => self.zero(b, dx, conv.batch, conv.channels * conv.height * conv.width),
                }
                let area = (conv.window.kernel[0] * conv.window.kernel[1]) as f32;
                // The maps that follow (the activation's gradient), on each plane once its
                // windows are done, while the plane is in cache.
                let plane_size = conv.height * conv.width;
                let mut after = |b: &mut FunctionBuilder, plane: Value| {
                    let start = b.ins().imul_imm_s(plane, plane_size);
                    let end = b.ins().iadd_imm_s(start, plane_size);
                    let worker = self.share.map_or(start, |[_, _, w]| w);
                    for map in epilogue {
                        self.piece_of(b, map, [start, end, worker]);
                    }
                    // The plane's sum goes to its channel.
                    if let (Some(sums), Some(into)) = (sums, into) {
                        let source = self.buffer_address(b, sums.input);
                        let source = element(b, source, start);
                        let len = b.ins().iconst(types::I64, plane_size);
                        let zero = f32_const(b, 0.0);
                        let total = fold_lanes(
                            b,
                            len,
                            zero,
                            true,
                            &mut |b, z, ty| {
                                let address = element(b, source, z);
                                b.ins().load(ty, flags(), address, 0)
                            },
                            &|b, acc, v| b.ins().fadd(acc, v),
                        );
                        let channel = b.ins().urem(plane, channels);
                        let address = element(b, into, channel);
                        let current = b.ins().load(types::F32, flags(), address, 0);
                        let next = b.ins().fadd(current, total);
                        b.ins().store(flags(), next, address, 0);
                    }
                };
                self.windows_by_plane(
                    b,
                    conv,
                    &mut |b, window| {
                        let address = window.output_address(b, dy);
                        let g = b.ins().load(types::F32, flags(), address, 0);
                        let zero = f32_const(b, 0.0);
                        match op {
                            // The first maximum of the window takes the whole gradient.
                            PoolOp::Max => {
                                let mut best = b.ins().iconst(types::I64, -1);
                                let mut best_value = zero;
                                for at in &window.cover {
                                    let v = at.load(b, x);
                                    let none = b.ins().icmp_imm_s(IntCC::SignedLessThan, best, 0);
                                    let greater = b.ins().fcmp(FloatCC::GreaterThan, v, best_value);
                                    let better = b.ins().bor(none, greater);
                                    let take = match at.inside {
                                        Some(inside) => b.ins().band(inside, better),
                                        None => better,
                                    };
                                    let index = at.index(b);
                                    best = b.ins().select(take, index, best);
                                    best_value = b.ins().select(take, v, best_value);
                                }
                                let found =
                                    b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, best, 0);
                                let first = b.ins().iconst(types::I64, 0);
                                let index = b.ins().select(found, best, first);
                                let v = b.ins().select(found, g, zero);
                                let target = Patch {
                                    inside: None,
                                    source: index,
                                    offset: 0,
                                };
                                target.add(b, dx, v);
                            }
                            PoolOp::Avg => {
                                let area = f32_const(b, area);
                                let share = b.ins().fdiv(g, area);
                                for at in &window.cover {
                                    let v = at.keep(b, share, zero);
                                    at.add(b, dx, v);
                                }
                            }
                        }
                    },
                    &mut after,
                );
                if let Some(sums) = sums {
                    self.sums_done(b, sums);
                }
            }
            Kernel::Softmax {
                out,
                input,
                outer,
                len,
                inner,
                log,
                partner,
                sums,
                ..
            } => {
                let input_base = self.memory(b, input);
                // Where each of the two results goes, when it is computed.
                let this = Some(self.buffer_address(b, *out));
                let other = partner.map(|(_, buffer)| self.buffer_address(b, buffer));
                let (plain, logs) = if *log { (other, this) } else { (this, other) };
                let [outer_v, len_v, inner_v] = [*outer, *len, *inner].map(|d| self.sym(b, d));
                let one = b.ins().iconst(types::I64, 1);
                let stride = b.ins().imul(len_v, inner_v);
                let strides = [stride, inner_v, one];
                let buffers = [
                    input_base,
                    plain.unwrap_or(input_base),
                    logs.unwrap_or(input_base),
                ];
                let (plain, logs) = (plain.is_some(), logs.is_some());
                // Over the innermost axis of a fixed length, four rows at a time, one per lane,
                // then the rows left over one at a time.
                // A worker's share is rows `first..end`.
                let four = (*inner == Sym::fixed(1) && !len.batch).then_some(len.coef);
                let zero = b.ins().iconst(types::I64, 0);
                let (first, end) = match self.share {
                    Some([first, end, _]) => (first, end),
                    None => (zero, outer_v),
                };
                let grouped = match four {
                    Some(_) => {
                        let count = b.ins().isub(end, first);
                        let whole = b.ins().band_imm_s(count, !3);
                        b.ins().iadd(first, whole)
                    }
                    None => first,
                };
                // The epilogue and the row sums follow each group of rows (there are none unless
                // the axis is the innermost).
                let after = |b: &mut FunctionBuilder, row: Value, count: i64| {
                    let end = b.ins().iadd_imm_s(row, count);
                    self.epilogue_rows(b, kernel, [row, end, row]);
                    if let Some(sums) = sums {
                        let [input, out] =
                            [sums.input, sums.out].map(|s| self.buffer_address(b, s));
                        range(b, row, end, 1, &mut |b, r| {
                            let start = b.ins().imul(r, len_v);
                            let source = element(b, input, start);
                            let zero_f = f32_const(b, 0.0);
                            let total = fold(b, len_v, zero_f, &mut |b, j, t| {
                                let address = element(b, source, j);
                                let v = b.ins().load(types::F32, flags(), address, 0);
                                b.ins().fadd(t, v)
                            });
                            let address = element(b, out, r);
                            b.ins().store(flags(), total, address, 0);
                        });
                    }
                };
                range(b, first, grouped, 4, &mut |b, row| {
                    let rows = SoftmaxRows {
                        strides,
                        row,
                        inner: zero,
                        four,
                    };
                    self.softmax_rows(b, rows, len_v, buffers, plain, logs);
                    after(b, row, 4);
                });
                range(b, grouped, end, 1, &mut |b, row| {
                    range(b, zero, inner_v, 1, &mut |b, inner| {
                        let rows = SoftmaxRows {
                            strides,
                            row,
                            inner,
                            four: None,
                        };
                        self.softmax_rows(b, rows, len_v, buffers, plain, logs);
                    });
                    after(b, row, 1);
                });
            }
        }
    }

    /// One softmax along a row (or four, lane by lane): the maximum, then the sum of
    /// exponentials (each kept in the softmax's buffer when there is one), then the results,
    /// in the interpreter's order. `buffers` are the input, the softmax and the log-softmax.
    fn softmax_rows(
        &self,
        b: &mut FunctionBuilder,
        rows: SoftmaxRows,
        len: Value,
        [input, plain, logs]: [Value; 3],
        write_plain: bool,
        write_logs: bool,
    ) {
        let vector = rows.four.is_some();
        let w = Width { vector };
        let lowest = w.constant(b, f32::NEG_INFINITY);
        let max = fold(b, len, lowest, &mut |b, j, m| {
            let x = rows.load(self, b, input, j);
            w.select(b, (x, FloatCC::GreaterThan, m), x, m)
        });
        let zero = w.constant(b, 0.0);
        let total = fold(b, len, zero, &mut |b, j, t| {
            let x = rows.load(self, b, input, j);
            let shifted = b.ins().fsub(x, max);
            let e = exp(b, shifted, vector);
            if write_plain {
                rows.store(self, b, plain, j, e);
            }
            b.ins().fadd(t, e)
        });
        let log_total = write_logs.then(|| {
            let log = |b: &mut FunctionBuilder, t: Value| {
                self.call(b, Import::Logf, &[t]).expect("logf returns")
            };
            if vector {
                (0..4u8).fold(total, |v, lane| {
                    let t = b.ins().extractlane(total, lane);
                    let l = log(b, t);
                    b.ins().insertlane(v, l, lane)
                })
            } else {
                log(b, total)
            }
        });
        let start = b.ins().iconst(types::I64, 0);
        range(b, start, len, 1, &mut |b, j| {
            if let Some(log_total) = log_total {
                let x = rows.load(self, b, input, j);
                let shifted = b.ins().fsub(x, max);
                let value = b.ins().fsub(shifted, log_total);
                rows.store(self, b, logs, j, value);
            }
            if write_plain {
                let e = rows.load(self, b, plain, j);
                let value = b.ins().fdiv(e, total);
                rows.store(self, b, plain, j, value);
            }
        });
    }

    /// Where this worker adds its sums, zeroed: the result for the first worker (or for the
    /// kernel unsplit), the partial sums for the second, which `dispatch` then adds.
    fn sums_into(&self, b: &mut FunctionBuilder, sums: &Sums, floats: Value) -> Value {
        let total = self.buffer_address(b, sums.out);
        let into = match self.share {
            Some([_, _, worker]) => {
                let partial = self.buffer_address(b, sums.partial);
                let is_first = b.ins().icmp_imm_s(IntCC::Equal, worker, 0);
                b.ins().select(is_first, total, partial)
            }
            None => total,
        };
        let zero = b.ins().iconst(types::I64, 0);
        zero_range(b, into, zero, floats);
        into
    }

    /// The maps after complete sums, when the kernel is not split (`dispatch` runs them after
    /// adding the workers' sums otherwise).
    fn sums_done(&self, b: &mut FunctionBuilder, sums: &Sums) {
        if self.share.is_none() {
            for map in &sums.then {
                self.kernel(b, None, map);
            }
        }
    }

    /// The epilogue of a kernel that runs it by rows (`Kernel::rows`), on rows `first..end`.
    fn epilogue_rows(
        &self,
        b: &mut FunctionBuilder,
        producer: &Kernel,
        [first, end, worker]: [Value; 3],
    ) {
        for map in producer.epilogue() {
            let per_row = super::plan::iterations_per_row(self.graph, producer, map)
                .expect("the planner fuses only maps that run by rows");
            let [first, end] = [first, end].map(|row| b.ins().imul_imm_s(row, per_row));
            self.piece_of(b, map, [first, end, worker]);
        }
    }

    /// Iterations `first..end` of `map`'s outermost loop, as `worker`: a piece of an epilogue.
    fn piece_of(&self, b: &mut FunctionBuilder, map: &Kernel, range: [Value; 3]) {
        let piece = Lowerer {
            shares: &[],
            share: Some(range),
            ..*self
        };
        piece.kernel(b, None, map);
    }

    /// Runs a shared kernel's share function for both workers through `netc_parallel`, with
    /// what must happen once around it: zeroing a gradient the shares add into, and adding the
    /// second worker's partial sums (a convolution's weight gradient, a product's column sums)
    /// to the first's.
    fn dispatch(&self, b: &mut FunctionBuilder, kernel: &Kernel, function: FuncRef) {
        let share = kernel
            .split(self.graph)
            .expect("a shared kernel has a split");
        let count = match share {
            Share::Chunks { images, chunk } => {
                let images = self.sym(b, images);
                let rounded = b.ins().iadd_imm_s(images, chunk - 1);
                let size = b.ins().iconst(types::I64, chunk);
                b.ins().udiv(rounded, size)
            }
            Share::Loop(extent) => self.sym(b, extent),
        };
        if let Kernel::Conv {
            out,
            pass: ConvPass::GradInput,
            conv,
            ..
        } = kernel
        {
            // Each chunk adds into its own images' rows.
            let out = self.buffer_address(b, *out);
            self.zero(b, out, conv.batch, conv.channels * conv.height * conv.width);
        }
        let address = b.ins().func_addr(self.pointer, function);
        self.call(
            b,
            Import::Parallel,
            &[
                address,
                self.pointers,
                self.arena,
                self.batch,
                self.hypers,
                self.seed,
                count,
            ],
        );
        match kernel {
            Kernel::Conv {
                out,
                scratch,
                pass: ConvPass::GradWeight,
                conv,
                chunk,
                ..
            } => {
                // The weight gradient is the first worker's sum plus the second's.
                let out = self.buffer_address(b, *out);
                let scratch = self.buffer_address(b, *scratch);
                let partial = b
                    .ins()
                    .iadd_imm_s(scratch, 4 * WORKERS * conv.im2col_floats(*chunk));
                let floats = b.ins().iconst(types::I64, conv.outputs * conv.patch());
                add_into(b, out, partial, floats);
                // The weight's update, now that its gradient is complete.
                for map in kernel.epilogue() {
                    self.kernel(b, None, map);
                }
            }
            Kernel::Gemm {
                sums: Some(sums), ..
            }
            | Kernel::PoolGrad {
                sums: Some(sums), ..
            } => {
                let out = self.buffer_address(b, sums.out);
                let partial = self.buffer_address(b, sums.partial);
                let floats = match kernel {
                    Kernel::PoolGrad { conv, .. } => b.ins().iconst(types::I64, conv.channels),
                    Kernel::Gemm { n, .. } => self.sym(b, *n),
                    _ => unreachable!("matched above"),
                };
                add_into(b, out, partial, floats);
                for map in &sums.then {
                    self.kernel(b, None, map);
                }
            }
            _ => {}
        }
    }

    /// One worker's share of a convolution pass: chunks `first..end` of `chunk` images, through
    /// the worker's own part of the im2col buffer (and, for the weight gradient, its own sum).
    fn conv_chunks(
        &self,
        b: &mut FunctionBuilder,
        kernel: &Kernel,
        [first, end, worker]: [Value; 3],
    ) {
        let Kernel::Conv {
            out,
            scratch,
            pass,
            input,
            other,
            conv,
            chunk,
            epilogue,
            ..
        } = kernel
        else {
            unreachable!("conv_chunks is called for convolutions")
        };
        let (input, other) = (self.memory(b, input), self.memory(b, other));
        let out = self.buffer_address(b, *out);
        let per_worker = conv.im2col_floats(*chunk);
        let scratch_base = self.buffer_address(b, *scratch);
        let own = b.ins().imul_imm_s(worker, per_worker);
        let scratch = element(b, scratch_base, own);
        // The second worker sums the weight gradient after both workers' im2col buffers.
        let partial = b.ins().iadd_imm_s(scratch_base, 4 * WORKERS * per_worker);
        let is_first = b.ins().icmp_imm_s(IntCC::Equal, worker, 0);
        let sum = b.ins().select(is_first, out, partial);
        // The row stride of `[O, N, OH·OW]` matrices.
        let row = self.sym(b, conv.columns());
        let [outputs, patch, unit, zero] =
            [conv.outputs, conv.patch(), 1, 0].map(|v| b.ins().iconst(types::I64, v));
        if *pass == ConvPass::GradWeight {
            let floats = b.ins().iconst(types::I64, conv.outputs * conv.patch());
            let zero_f = f32_const(b, 0.0);
            lanes(
                b,
                zero,
                floats,
                false,
                &[sum],
                &[unit],
                &mut |b, _, _, a| {
                    b.ins().store(flags(), zero_f, a[0], 0);
                },
            );
        }
        let start = b.ins().imul_imm_s(first, *chunk);
        let stop = b.ins().imul_imm_s(end, *chunk);
        let stop = b.ins().smin(stop, self.batch);
        range(b, start, stop, *chunk, &mut |b, first| {
            let left = b.ins().isub(self.batch, first);
            let most = b.ins().iconst(types::I64, *chunk);
            let images = b.ins().smin(left, most);
            let n = b.ins().imul_imm_s(images, conv.positions());
            // The chunk's first column in `[O, N, OH·OW]` matrices.
            let offset = b.ins().imul_imm_s(first, conv.positions());
            // Both products with the input need its patches; the input gradient makes them.
            if *pass != ConvPass::GradInput {
                let places = [input, scratch];
                self.patches(b, conv, Direction::Gather, places, first, images, n);
            }
            match pass {
                ConvPass::Forward => {
                    let dst = element(b, out, offset);
                    self.gemm(
                        b,
                        [outputs, n, patch],
                        (dst, row),
                        (other, unit, patch),
                        (scratch, unit, n),
                        zero,
                    );
                    // The maps over this chunk's images only.
                    let end = b.ins().iadd(first, images);
                    for map in epilogue {
                        self.piece_of(b, map, [first, end, worker]);
                    }
                }
                ConvPass::GradWeight => {
                    let dy = element(b, other, offset);
                    self.gemm(
                        b,
                        [outputs, patch, n],
                        (sum, patch),
                        (dy, unit, row),
                        (scratch, n, unit),
                        unit,
                    );
                }
                ConvPass::GradInput => {
                    let dy = element(b, input, offset);
                    self.gemm(
                        b,
                        [patch, n, outputs],
                        (scratch, n),
                        (other, patch, unit),
                        (dy, unit, row),
                        zero,
                    );
                    self.patches(
                        b,
                        conv,
                        Direction::Scatter,
                        [out, scratch],
                        first,
                        images,
                        n,
                    );
                }
            }
        });
    }

    /// A loop nest over `dims` that walks each of `views` (a base address and a stride per
    /// axis, in elements): `body(index, type, addresses)` gets each view's address of the
    /// current element. The innermost axis runs four lanes at a time (type `f32x4`) when
    /// `vector`, then one at a time; each view's row address is computed once per row.
    #[allow(clippy::type_complexity)]
    fn walk(
        &self,
        b: &mut FunctionBuilder,
        dims: &[Sym],
        views: &[(Value, Vec<Sym>)],
        vector: bool,
        body: &mut dyn FnMut(&mut FunctionBuilder, &[Value], types::Type, &[Value]),
    ) {
        let dims: Vec<Value> = dims.iter().map(|&d| self.sym(b, d)).collect();
        let Some((&inner, outer)) = dims.split_last() else {
            let addresses: Vec<Value> = views.iter().map(|(base, _)| *base).collect();
            body(b, &[], types::F32, &addresses);
            return;
        };
        let strides: Vec<Vec<Value>> = views
            .iter()
            .map(|(_, s)| s.iter().map(|&s| self.sym(b, s)).collect())
            .collect();
        // In a share function, only iterations `first..end` of the outermost axis.
        let range = self.share.map(|[first, end, _]| (first, end));
        if outer.is_empty() {
            let (lo, hi) = range.unwrap_or((b.ins().iconst(types::I64, 0), inner));
            let starts: Vec<Value> = views
                .iter()
                .zip(&strides)
                .map(|((base, _), strides)| self.address(b, *base, strides, &[lo]))
                .collect();
            lanes(
                b,
                lo,
                hi,
                vector,
                &starts,
                &strides.iter().map(|s| s[0]).collect::<Vec<_>>(),
                &mut |b, z, ty, addresses| body(b, &[z], ty, addresses),
            );
            return;
        }
        loops_within(b, outer, range, &mut |b, outer_index| {
            let rows: Vec<Value> = views
                .iter()
                .zip(&strides)
                .map(|((base, _), strides)| self.address(b, *base, strides, outer_index))
                .collect();
            let zero = b.ins().iconst(types::I64, 0);
            let steps: Vec<Value> = strides
                .iter()
                .map(|s| *s.last().expect("an inner axis"))
                .collect();
            lanes(
                b,
                zero,
                inner,
                vector,
                &rows,
                &steps,
                &mut |b, z, ty, addresses| {
                    let mut index = outer_index.to_vec();
                    index.push(z);
                    body(b, &index, ty, addresses);
                },
            );
        });
    }

    /// The base address of a view that lives in memory.
    fn memory(&self, b: &mut FunctionBuilder, view: &View) -> Value {
        match self.reader(b, view) {
            Reader::Memory { base, .. } => base,
            Reader::Scalar(_) => unreachable!("the planner gives this kernel a buffer"),
        }
    }

    /// Stores 0 in `floats` (times the batch size) elements from `base`.
    fn zero(&self, b: &mut FunctionBuilder, base: Value, batch: Sym, floats: i64) {
        let count = self.sym(
            b,
            Sym {
                coef: batch.coef * floats,
                batch: batch.batch,
            },
        );
        let zero = b.ins().iconst(types::I64, 0);
        zero_range(b, base, zero, count);
    }

    /// `dst = lhs @ rhs` (or `dst += ...` when `accumulate` is 1) through `netc_gemm`: `[m, n, k]`,
    /// then each matrix's base and strides (`dst` by rows; `lhs` and `rhs` column, then row).
    fn gemm(
        &self,
        b: &mut FunctionBuilder,
        [m, n, k]: [Value; 3],
        (dst, dst_row): (Value, Value),
        (lhs, lhs_column, lhs_row): (Value, Value, Value),
        (rhs, rhs_column, rhs_row): (Value, Value, Value),
        accumulate: Value,
    ) {
        self.call(
            b,
            Import::Gemm,
            &[
                m, n, k, dst, dst_row, lhs, lhs_column, lhs_row, rhs, rhs_column, rhs_row,
                accumulate,
            ],
        );
    }

    /// Moves the im2col matrix (`columns`, rows `row_len` long) of `images` images from `first`
    /// of the `[N, C, H, W]` tensor `image`: `Gather` writes it from the image (zeros where the
    /// window is in padding), `Scatter` adds each entry back to the image position it came from.
    ///
    /// The matrix's rows are (channel, kernel row, kernel column), its columns (image, output
    /// row, output column). The kernel columns and the output columns of a row are written out
    /// in full (the rows of one channel and kernel row read the same image row, shifted), so
    /// every offset inside an output row is a constant.
    #[allow(clippy::too_many_arguments)]
    fn patches(
        &self,
        b: &mut FunctionBuilder,
        conv: &Conv,
        direction: Direction,
        [image, columns]: [Value; 2],
        first: Value,
        images: Value,
        row_len: Value,
    ) {
        let constant = |b: &mut FunctionBuilder, v: i64| b.ins().iconst(types::I64, v);
        let w = conv.window;
        let [kh, kw] = w.kernel.map(|k| k as i64);
        let [stride_y, stride_z] = w.stride.map(|s| s as i64);
        let [pad_y, pad_z] = w.padding.map(|p| p as i64);
        // Per kernel column j, the output columns whose tap z·stride − padding + j lies in
        // 0..width: ceil((padding − j) / stride) up to ceil((width + padding − j) / stride).
        let ceil = |a: i64| {
            if a > 0 {
                (a + stride_z - 1) / stride_z
            } else {
                0
            }
        };
        let bounds: Vec<(i64, i64)> = (0..kw)
            .map(|j| {
                let lo = ceil(pad_z - j).min(conv.out_width);
                let hi = ceil(conv.width + pad_z - j).min(conv.out_width);
                (lo, hi.max(lo))
            })
            .collect();
        let row_offsets: Vec<Value> = (0..kw).map(|j| b.ins().imul_imm_s(row_len, j)).collect();
        let rows = [conv.channels, kh].map(|d| constant(b, d));
        let out_dims = [images, constant(b, conv.out_height)];
        let vector = stride_z == 1;
        loops(b, &rows, &mut |b, r| {
            let (c, i) = (r[0], r[1]);
            let row = {
                let t = b.ins().imul_imm_s(c, kh);
                let t = b.ins().iadd(t, i);
                b.ins().imul_imm_s(t, kw)
            };
            let row_start = b.ins().imul(row, row_len);
            loops(b, &out_dims, &mut |b, o| {
                let (local, y) = (o[0], o[1]);
                let this_image = b.ins().iadd(first, local);
                let column = {
                    let t = b.ins().imul_imm_s(local, conv.out_height);
                    let t = b.ins().iadd(t, y);
                    let t = b.ins().imul_imm_s(t, conv.out_width);
                    let t = b.ins().iadd(row_start, t);
                    element(b, columns, t)
                };
                let sy = {
                    let t = b.ins().imul_imm_s(y, stride_y);
                    let t = b.ins().iadd(t, i);
                    b.ins().iadd_imm_s(t, -pad_y)
                };
                // The image address tap z = 0 would read (outside the image unless lo is 0).
                let source = {
                    let t = b.ins().imul_imm_s(this_image, conv.channels);
                    let t = b.ins().iadd(t, c);
                    let t = b.ins().imul_imm_s(t, conv.height);
                    let t = b.ins().iadd(t, sy);
                    let t = b.ins().imul_imm_s(t, conv.width);
                    let t = b.ins().iadd_imm_s(t, -pad_z);
                    element(b, image, t)
                };
                let columns_of =
                    |b: &mut FunctionBuilder, j: usize| element(b, column, row_offsets[j]);
                let mut inside_row = |b: &mut FunctionBuilder| {
                    for (j, &(lo, hi)) in bounds.iter().enumerate() {
                        let at = columns_of(b, j);
                        let source_offset = |b: &mut FunctionBuilder, z: i64| {
                            displaced(b, source, 4 * (j as i64 + z * stride_z))
                        };
                        match direction {
                            Direction::Gather => {
                                zeros(b, at, (0..lo).chain(hi..conv.out_width));
                                unrolled(b, lo..hi, vector, &mut |b, z, ty| {
                                    let (from, offset) = source_offset(b, z);
                                    let v = b.ins().load(ty, flags(), from, offset);
                                    b.ins().store(flags(), v, at, (4 * z) as i32);
                                });
                            }
                            Direction::Scatter => {
                                unrolled(b, lo..hi, vector, &mut |b, z, ty| {
                                    let v = b.ins().load(ty, flags(), at, (4 * z) as i32);
                                    let (to, offset) = source_offset(b, z);
                                    let current = b.ins().load(ty, flags(), to, offset);
                                    let sum = b.ins().fadd(current, v);
                                    b.ins().store(flags(), sum, to, offset);
                                });
                            }
                        }
                    }
                };
                if pad_y == 0 {
                    return inside_row(b);
                }
                // A row in vertical padding reads nothing: its entries are zeros.
                let inside = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, sy, conv.height);
                branch(b, inside, &mut inside_row, &mut |b| {
                    if direction == Direction::Gather {
                        for j in 0..bounds.len() {
                            let at = columns_of(b, j);
                            zeros(b, at, 0..conv.out_width);
                        }
                    }
                });
            });
        });
    }

    /// Visits every pooling window: output (plane, row, column) and the positions it covers,
    /// unrolled since the window's size is known.
    fn windows(
        &self,
        b: &mut FunctionBuilder,
        conv: &Conv,
        body: &mut dyn FnMut(&mut FunctionBuilder, &Window),
    ) {
        self.windows_by_plane(b, conv, body, &mut |_, _| {});
    }

    /// `windows`, calling `after(plane)` once the windows of each plane are done.
    fn windows_by_plane(
        &self,
        b: &mut FunctionBuilder,
        conv: &Conv,
        body: &mut dyn FnMut(&mut FunctionBuilder, &Window),
        after: &mut dyn FnMut(&mut FunctionBuilder, Value),
    ) {
        let planes = self.sym(
            b,
            Sym {
                coef: conv.batch.coef * conv.channels,
                batch: conv.batch.batch,
            },
        );
        let (first, end) = match self.share {
            Some([first, end, _]) => (first, end),
            None => (b.ins().iconst(types::I64, 0), planes),
        };
        let out_dims = [
            b.ins().iconst(types::I64, conv.out_height),
            b.ins().iconst(types::I64, conv.out_width),
        ];
        range(b, first, end, 1, &mut |b, plane| {
            self.plane_windows(b, conv, plane, &out_dims, body);
            after(b, plane);
        });
    }

    fn plane_windows(
        &self,
        b: &mut FunctionBuilder,
        conv: &Conv,
        plane: Value,
        out_dims: &[Value],
        body: &mut dyn FnMut(&mut FunctionBuilder, &Window),
    ) {
        loops(b, out_dims, &mut |b, o| {
            let (y, z) = (o[0], o[1]);
            let output = {
                let t = b.ins().imul_imm_s(plane, conv.out_height);
                let t = b.ins().iadd(t, y);
                let t = b.ins().imul_imm_s(t, conv.out_width);
                b.ins().iadd(t, z)
            };
            let mut cover = Vec::new();
            let [kh, kw] = conv.window.kernel.map(|k| k as i64);
            if conv.window.padding == [0, 0] {
                // Every position is inside: one index for the window, constant offsets.
                let zero = b.ins().iconst(types::I64, 0);
                let origin = self.tap(b, conv, plane, [y, z], [zero, zero]).source;
                for i in 0..kh {
                    for j in 0..kw {
                        cover.push(Patch {
                            inside: None,
                            source: origin,
                            offset: i * conv.width + j,
                        });
                    }
                }
            } else {
                for i in 0..kh {
                    for j in 0..kw {
                        let offsets = [i, j].map(|k| b.ins().iconst(types::I64, k));
                        cover.push(self.tap(b, conv, plane, [y, z], offsets));
                    }
                }
            }
            body(b, &Window { output, cover });
        });
    }

    /// Where output position (y, z) of a window reads at kernel offset (i, j) in a plane of
    /// the input: `y·stride − padding + i`, and whether that is inside the input.
    fn tap(
        &self,
        b: &mut FunctionBuilder,
        conv: &Conv,
        plane: Value,
        [y, z]: [Value; 2],
        [i, j]: [Value; 2],
    ) -> Patch {
        let w = conv.window;
        let coordinate = |b: &mut FunctionBuilder, o: Value, k: Value, axis: usize| {
            let t = b.ins().imul_imm_s(o, w.stride[axis] as i64);
            let t = b.ins().iadd(t, k);
            b.ins().iadd_imm_s(t, -(w.padding[axis] as i64))
        };
        let (sy, sz) = (coordinate(b, y, i, 0), coordinate(b, z, j, 1));
        // Negative coordinates are huge unsigned ones: one comparison per axis.
        let inside_y = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, sy, conv.height);
        let inside_z = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, sz, conv.width);
        let inside = b.ins().band(inside_y, inside_z);
        let source = {
            let t = b.ins().imul_imm_s(plane, conv.height);
            let t = b.ins().iadd(t, sy);
            let t = b.ins().imul_imm_s(t, conv.width);
            b.ins().iadd(t, sz)
        };
        // Outside the input, the first element stands in: always a valid address.
        let first = b.ins().iconst(types::I64, 0);
        let source = b.ins().select(inside, source, first);
        Patch {
            inside: Some(inside),
            source,
            offset: 0,
        }
    }

    /// One element of a fused expression: its reads combined by the nodes it applies.
    fn evaluate(
        &self,
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
                    .map(|c| self.evaluate(b, c, values, at))
                    .collect();
                self.map(b, *node, &args, at)
            }
        }
    }

    /// One element of a node's elementwise operation.
    fn map(&self, b: &mut FunctionBuilder, node: NodeId, args: &[Value], at: &Element) -> Value {
        let Element {
            index,
            out_strides,
            vector,
        } = *at;
        let op = (self.graph.node(node).op.elementwise())
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
                    UnaryOp::Log => self.call(b, Import::Logf, &[x]).expect("logf returns"),
                    UnaryOp::Abs => b.ins().fabs(x),
                    UnaryOp::Sqrt => b.ins().sqrt(x),
                    UnaryOp::Square => b.ins().fmul(x, x),
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
                let u = self.uniform(b, stream, flat);
                let p_v = b.ins().f64const(p);
                let keep = w.constant(b, (1.0 / (1.0 - p)) as f32);
                let dropped = b.ins().fcmp(FloatCC::LessThan, u, p_v);
                b.ins().select(dropped, zero, keep)
            }
        }
    }

    /// The interpreter's counter-based uniform number for (step seed, stream, index).
    fn uniform(&self, b: &mut FunctionBuilder, stream: Value, index: Value) -> Value {
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
        let z = b.ins().bxor(self.seed, s);
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
}

/// Elementwise operations that run on four lanes (no calls, no per-element random numbers).
fn vectorizable(op: &Op) -> bool {
    match op.elementwise() {
        Some(Elementwise::Unary(u)) => match u {
            UnaryOp::Log => false,
            UnaryOp::Neg
            | UnaryOp::Relu
            | UnaryOp::Sigmoid
            | UnaryOp::Tanh
            | UnaryOp::Exp
            | UnaryOp::Abs
            | UnaryOp::Sqrt
            | UnaryOp::Square
            | UnaryOp::Step
            | UnaryOp::Sign => true,
        },
        Some(Elementwise::Binary(_)) => true,
        Some(Elementwise::DropoutMask { .. } | Elementwise::OneHot) => false,
        None => unreachable!("only elementwise operations are fused into maps"),
    }
}

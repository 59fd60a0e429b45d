//! Lowering a plan to Cranelift functions: the entry point runs every kernel in order, each
//! emitted by its kind (see `kernels`); a kernel split between workers becomes a share function
//! of its own, which the entry point hands to `netc_parallel` with what must happen once
//! around it. `Lowerer` is what kinds emit with: addresses of views and buffers, loops that
//! walk several views at once, the share being emitted, and running an epilogue on a piece.
//! Results match the interpreter exactly everywhere except inside matrix products and
//! reductions split between workers, whose summation order differs.

use super::abi::{Import, Params};
use super::alloc::BufferId;
use super::fuse::iterations_per_row;
use super::kernels::{Kernel, KernelId, KernelKind, Map, Share, Sums};
use super::layout::{Base, Sym, View};
use super::loops::{add_into, flags, lanes, loops_within, zero_range};
use super::plan::Plan;
use crate::ir::Graph;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Block, FuncRef, Function, InstBuilder, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

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
        let l = Lowerer::new(graph, plan, imports, shares, config, (params, false));
        for (k, kernel) in plan.kernels.iter().enumerate() {
            let k = KernelId::new(k);
            // Each kernel starts a block of its own, so the listing can say where it begins.
            let start = b.create_block();
            b.ins().jump(start, &[]);
            b.switch_to_block(start);
            starts.push(start);
            if profile {
                let index = b.ins().iconst(types::I64, k.index() as i64);
                l.call(b, Import::Tick, &[index]);
            }
            l.kernel(b, k, kernel);
        }
        if profile {
            let end = b.ins().iconst(types::I64, plan.kernels.len() as i64);
            l.call(b, Import::Tick, &[end]);
        }
    });
    starts
}

/// Fills `func` (whose signature is the share signature) with one worker's share of kernel `k`:
/// iterations `first..end` of the loop its work is split along (`KernelKind::split`).
pub fn lower_share(
    graph: &Graph,
    plan: &Plan,
    k: KernelId,
    func: &mut Function,
    imports: &[FuncRef],
    config: TargetFrontendConfig,
) {
    define(func, config, |b, params| {
        let l = Lowerer::new(graph, plan, imports, &[], config, (params, true));
        l.kernel(b, k, &plan.kernels[k.index()]);
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

/// What kinds emit their code with: the graph and plan, the function's parameters, and the
/// share being emitted.
#[derive(Clone, Copy)]
pub struct Lowerer<'a> {
    pub graph: &'a Graph,
    plan: &'a Plan,
    imports: &'a [FuncRef],
    /// Each kernel's share function, in the entry point (whose kernels dispatch to them).
    shares: &'a [Option<FuncRef>],
    pointer: types::Type,
    pub params: Params,
}

impl<'a> Lowerer<'a> {
    /// A lowerer for a function whose parameters are `params` (the entry point's, or a share
    /// function's when `shared`).
    fn new(
        graph: &'a Graph,
        plan: &'a Plan,
        imports: &'a [FuncRef],
        shares: &'a [Option<FuncRef>],
        config: TargetFrontendConfig,
        (params, shared): (&[Value], bool),
    ) -> Lowerer<'a> {
        Lowerer {
            graph,
            plan,
            imports,
            shares,
            pointer: config.pointer_type(),
            params: Params::of(params, shared),
        }
    }
}

/// A view ready to read inside a loop: a base address and strides as values, or a scalar.
pub enum Reader {
    Memory { base: Value, strides: Vec<Value> },
    Scalar(Value),
}

impl Lowerer<'_> {
    pub fn sym(&self, b: &mut FunctionBuilder, s: Sym) -> Value {
        let coef = b.ins().iconst(types::I64, s.coef);
        if s.batch {
            b.ins().imul(coef, self.params.batch)
        } else {
            coef
        }
    }

    pub fn buffer_address(&self, b: &mut FunctionBuilder, buffer: BufferId) -> Value {
        let offset = (self.plan.offset(buffer) * 4) as i64;
        b.ins().iadd_imm_s(self.params.arena, offset)
    }

    pub fn reader(&self, b: &mut FunctionBuilder, view: &View) -> Reader {
        let base = match view.base {
            Base::External(slot) => b.ins().load(
                self.pointer,
                flags(),
                self.params.pointers,
                (slot * 8) as i32,
            ),
            Base::Buffer(buffer) => self.buffer_address(b, buffer),
            Base::Const(c) => return Reader::Scalar(b.ins().f32const(c)),
            Base::Hyper(k) => {
                return Reader::Scalar(b.ins().load(
                    types::F32,
                    flags(),
                    self.params.hypers,
                    (k * 4) as i32,
                ))
            }
            Base::BatchSize => {
                return Reader::Scalar(b.ins().fcvt_from_sint(types::F32, self.params.batch))
            }
        };
        // One element broadcast everywhere (zero strides): read it once, before the loop.
        if view.strides.iter().all(|&s| s == Sym::ZERO) {
            return Reader::Scalar(b.ins().load(types::F32, flags(), base, 0));
        }
        let strides = view.strides.iter().map(|&s| self.sym(b, s)).collect();
        Reader::Memory { base, strides }
    }

    pub fn read(&self, b: &mut FunctionBuilder, reader: &Reader, index: &[Value]) -> Value {
        match reader {
            Reader::Scalar(v) => *v,
            Reader::Memory { base, strides } => {
                let address = self.address(b, *base, strides, index);
                b.ins().load(types::F32, flags(), address, 0)
            }
        }
    }

    /// `base + 4·Σ index·stride`.
    pub fn address(
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

    pub fn contiguous(&self, b: &mut FunctionBuilder, dims: &[Value]) -> Vec<Value> {
        let mut strides = vec![b.ins().iconst(types::I64, 1); dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = b.ins().imul(strides[i + 1], dims[i + 1]);
        }
        strides
    }

    pub fn call(&self, b: &mut FunctionBuilder, import: Import, args: &[Value]) -> Option<Value> {
        let call = b.ins().call(self.imports[import as usize], args);
        b.inst_results(call).first().copied()
    }

    /// Emits the plan's kernel `k`, or hands it to its share function.
    fn kernel(&self, b: &mut FunctionBuilder, k: KernelId, kernel: &Kernel) {
        match self.shares.get(k.index()).copied().flatten() {
            Some(function) => self.dispatch(b, kernel.kind(), function),
            None => kernel.kind().emit(self, b),
        }
    }

    /// Where this worker adds its sums, zeroed: the result for the first worker (or for the
    /// kernel unsplit), the partial sums for the second, which `dispatch` then adds. `floats`
    /// is the sums' length.
    pub fn sums_into(&self, b: &mut FunctionBuilder, sums: &Sums, floats: Value) -> Value {
        let total = self.buffer_address(b, sums.out);
        let into = match (self.params.share, sums.partial) {
            (Some([_, _, worker]), Some(partial)) => {
                let partial = self.buffer_address(b, partial);
                let is_first = b.ins().icmp_imm_s(IntCC::Equal, worker, 0);
                b.ins().select(is_first, total, partial)
            }
            _ => total,
        };
        let zero = b.ins().iconst(types::I64, 0);
        zero_range(b, into, zero, floats);
        into
    }

    /// The maps after complete sums, when the kernel is not split (`dispatch` runs them after
    /// adding the workers' sums otherwise).
    pub fn sums_done(&self, b: &mut FunctionBuilder, sums: &Sums) {
        if self.params.share.is_none() {
            for map in &sums.then {
                map.emit(self, b);
            }
        }
    }

    /// The epilogue of a kernel that runs it by rows (`KernelKind::rows`), on rows
    /// `first..end`.
    pub fn epilogue_rows(
        &self,
        b: &mut FunctionBuilder,
        producer: &dyn KernelKind,
        [first, end, worker]: [Value; 3],
    ) {
        for map in producer.epilogue() {
            let per_row = iterations_per_row(self.graph, producer, map)
                .expect("the planner fuses only maps that run by rows");
            let [first, end] = [first, end].map(|row| b.ins().imul_imm_s(row, per_row));
            self.piece_of(b, map, [first, end, worker]);
        }
    }

    /// Iterations `first..end` of `map`'s outermost loop, as `worker`: a piece of an epilogue.
    pub fn piece_of(&self, b: &mut FunctionBuilder, map: &Map, range: [Value; 3]) {
        let piece = Lowerer {
            shares: &[],
            params: Params {
                share: Some(range),
                ..self.params
            },
            ..*self
        };
        map.emit(&piece, b);
    }

    /// Runs a shared kernel's share function for both workers through `netc_parallel`, with
    /// what the kind does once around it, and then adds the second worker's partial sums to
    /// the first's and runs the maps after them.
    fn dispatch(&self, b: &mut FunctionBuilder, kernel: &dyn KernelKind, function: FuncRef) {
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
        kernel.before_shares(self, b);
        let address = b.ins().func_addr(self.pointer, function);
        let p = self.params;
        let args = [
            address, p.pointers, p.arena, p.batch, p.hypers, p.seed, count,
        ];
        self.call(b, Import::Parallel, &args);
        kernel.after_shares(self, b);
        if let Some(sums) = kernel.sums() {
            if let Some(partial) = sums.partial {
                let out = self.buffer_address(b, sums.out);
                let partial = self.buffer_address(b, partial);
                let floats = self.sym(b, sums.len);
                add_into(b, out, partial, floats);
            }
            for map in &sums.then {
                map.emit(self, b);
            }
        }
    }

    /// A loop nest over `dims` that walks each of `views` (a base address and a stride per
    /// axis, in elements): `body(index, type, addresses)` gets each view's address of the
    /// current element. The innermost axis runs four lanes at a time (type `f32x4`) when
    /// `vector`, then one at a time; each view's row address is computed once per row.
    #[allow(clippy::type_complexity)]
    pub fn walk(
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
        let range = self.params.share.map(|[first, end, _]| (first, end));
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
    pub fn memory(&self, b: &mut FunctionBuilder, view: &View) -> Value {
        match self.reader(b, view) {
            Reader::Memory { base, .. } => base,
            Reader::Scalar(_) => unreachable!("the planner gives this kernel a buffer"),
        }
    }

    /// Stores 0 in `floats` elements from `base`.
    pub fn zero(&self, b: &mut FunctionBuilder, base: Value, floats: Sym) {
        let count = self.sym(b, floats);
        let zero = b.ins().iconst(types::I64, 0);
        zero_range(b, base, zero, count);
    }

    /// `dst = lhs @ rhs` (or `dst += ...` when `accumulate` is 1) through `netc_gemm`: `[m, n, k]`,
    /// then each matrix's base and strides (`dst` by rows; `lhs` and `rhs` column, then row).
    pub fn gemm(
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
}

//! Lowering a plan to Cranelift functions: the entry point runs every kernel in order, each
//! emitted by its kind (see `kernels`); a kernel cut into pieces gets a piece function of its
//! own, which the pool runs, and the entry point is cut there into links of a chain
//! (`pool::Chain`), so that whichever worker finishes a kernel's last piece runs what comes
//! next. `Lowerer` is what kinds emit with: addresses of views and buffers, loops
//! that walk several views at once, the piece being emitted, and running an epilogue on a
//! piece. Results match the interpreter exactly everywhere except inside matrix products and
//! sums over pieces, whose summation order differs.

use super::abi::{Import, Params};
use super::alloc::BufferId;
use super::direct::Direct;
use super::fuse::iterations_per_row;
use super::kernels::{Kernel, KernelId, KernelKind, Map, Share, Sums};
use super::layout::{Base, Sym, View};
use super::loops::{add_into, element, flags, lanes, loops_within, range, zero_range};
use super::plan::Plan;
use crate::ir::Graph;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Block, FuncRef, Function, InstBuilder, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Switch};

/// Fills `func` (whose signature is the entry signature) with the plan's kernels as the serial
/// parts of a chain (`pool::Chain`): called with link `j` and the number of pieces job `j - 1`
/// ran in, it runs what comes after the `j`-th kernel cut into pieces (counting from 1) up to
/// what comes before the next, and returns that kernel's iterations, or -1 after the last
/// kernel. Returns, for the printed listing, the block each kernel's code starts in, and the
/// block where each link after the first resumes with the kernel whose pieces it follows.
pub fn lower(
    graph: &Graph,
    plan: &Plan,
    func: &mut Function,
    imports: &[FuncRef],
    config: TargetFrontendConfig,
    profile: bool,
) -> (Vec<Block>, Vec<(Block, KernelId)>) {
    let mut starts = Vec::new();
    let mut resumed = Vec::new();
    define(func, config, |b, params| {
        let l = Lowerer::new(graph, plan, imports, config, (params, false));
        let [link, done] = [params[6], params[7]];
        let split = |kernel: &Kernel| kernel.kind().pieces(graph, plan.max_batch);
        let jobs = plan.kernels.iter().filter(|k| split(k).is_some()).count();
        let resumes: Vec<Block> = (0..=jobs).map(|_| b.create_block()).collect();
        let mut switch = Switch::new();
        for (j, &resume) in resumes.iter().enumerate() {
            switch.set_entry(j as u128, resume);
        }
        let past_the_end = b.create_block();
        switch.emit(b, link, past_the_end);
        b.switch_to_block(past_the_end);
        let over = b.ins().iconst(types::I64, -1);
        b.ins().return_(&[over]);
        let mut resumes = resumes.into_iter();
        b.switch_to_block(resumes.next().expect("link 0"));
        for (k, kernel) in plan.kernels.iter().enumerate() {
            let k = KernelId::new(k);
            // Each kernel starts a block of its own, so the listing can say where it begins.
            let start = b.create_block();
            b.ins().jump(start, &[]);
            b.switch_to_block(start);
            starts.push(start);
            if profile {
                let index = b.ins().iconst(types::I64, k.index() as i64);
                l.call(b, Import::Tick, &[l.params.context, index]);
            }
            let kind = kernel.kind();
            kind.before_pieces(&l, b);
            let pieces = match split(kernel) {
                // The pool runs the pieces, then calls the next link.
                Some(pieces) => {
                    let iterations = l.iterations(b, pieces.along);
                    b.ins().return_(&[iterations]);
                    let resume = resumes.next().expect("a link per job");
                    b.switch_to_block(resume);
                    resumed.push((resume, k));
                    done
                }
                None => {
                    kind.emit(&l, b);
                    b.ins().iconst(types::I64, 1)
                }
            };
            l.after_pieces(b, kind, pieces);
        }
        if profile {
            let end = b.ins().iconst(types::I64, plan.kernels.len() as i64);
            l.call(b, Import::Tick, &[l.params.context, end]);
        }
        vec![b.ins().iconst(types::I64, -1)]
    });
    (starts, resumed)
}

/// Fills `func` (whose signature is the piece signature) with a piece of kernel `k`: iterations
/// `first..end` of the loop its work is split along (`KernelKind::pieces`).
pub fn lower_piece(
    graph: &Graph,
    plan: &Plan,
    k: KernelId,
    func: &mut Function,
    imports: &[FuncRef],
    config: TargetFrontendConfig,
) {
    define(func, config, |b, params| {
        let l = Lowerer::new(graph, plan, imports, config, (params, true));
        plan.kernels[k.index()].kind().emit(&l, b);
        Vec::new()
    });
}

/// Builds `func`: `body` emits its code from the entry block's parameters and gives the values
/// the function returns at its end.
fn define(
    func: &mut Function,
    config: TargetFrontendConfig,
    body: impl FnOnce(&mut FunctionBuilder, &[Value]) -> Vec<Value>,
) {
    let mut context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let returns = body(&mut b, &params);
    b.ins().return_(&returns);
    b.seal_all_blocks();
    b.finalize(config);
}

/// What kinds emit their code with: the graph and plan, the function's parameters, and the
/// piece being emitted.
#[derive(Clone, Copy)]
pub struct Lowerer<'a> {
    pub graph: &'a Graph,
    plan: &'a Plan,
    imports: &'a [FuncRef],
    pointer: types::Type,
    pub params: Params,
}

impl<'a> Lowerer<'a> {
    /// A lowerer for a function whose parameters are `params` (the entry point's, or a piece
    /// function's when `piece`).
    fn new(
        graph: &'a Graph,
        plan: &'a Plan,
        imports: &'a [FuncRef],
        config: TargetFrontendConfig,
        (params, piece): (&[Value], bool),
    ) -> Lowerer<'a> {
        Lowerer {
            graph,
            plan,
            imports,
            pointer: config.pointer_type(),
            params: Params::of(params, piece),
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

    /// What a kernel does once after its pieces (or all of its work, unsplit), given their
    /// number: its kind's own part, then its sums' partial results added in piece order and
    /// the maps that follow them.
    fn after_pieces(&self, b: &mut FunctionBuilder, kind: &dyn KernelKind, pieces: Value) {
        kind.after_pieces(self, b, pieces);
        if let Some(sums) = kind.sums() {
            if let Some(partial) = sums.partial {
                let out = self.buffer_address(b, sums.out);
                let partial = self.buffer_address(b, partial);
                let len = sums.len.at(0);
                self.add_pieces(b, out, partial, len, pieces);
            }
            for map in &sums.then {
                map.emit(self, b);
            }
        }
    }

    /// Where this piece's sums of `len` floats go: `out` for the first piece (or the kernel
    /// unsplit), part `piece - 1` of `partial` for the others (see `Sums`).
    pub fn piece_sums(
        &self,
        b: &mut FunctionBuilder,
        out: Value,
        partial: Value,
        len: i64,
    ) -> Value {
        let Some([piece, _]) = self.params.piece else {
            return out;
        };
        let part = b.ins().iadd_imm_s(piece, -1);
        let part = b.ins().imul_imm_s(part, 4 * len);
        let part = b.ins().iadd(partial, part);
        let is_first = b.ins().icmp_imm_s(IntCC::Equal, piece, 0);
        b.ins().select(is_first, out, part)
    }

    /// Adds the sums of pieces `1..pieces` (`len` floats each, one after another from
    /// `partial`) to `out`, in piece order.
    pub fn add_pieces(
        &self,
        b: &mut FunctionBuilder,
        out: Value,
        partial: Value,
        len: i64,
        pieces: Value,
    ) {
        let one = b.ins().iconst(types::I64, 1);
        let floats = b.ins().iconst(types::I64, len);
        range(b, one, pieces, 1, &mut |b, piece| {
            let part = b.ins().iadd_imm_s(piece, -1);
            let part = b.ins().imul_imm_s(part, len);
            let part = element(b, partial, part);
            add_into(b, out, part, floats);
        });
    }

    /// Where this piece adds its sums, zeroed (see `piece_sums`).
    pub fn sums_into(&self, b: &mut FunctionBuilder, sums: &Sums, floats: Value) -> Value {
        let out = self.buffer_address(b, sums.out);
        let into = match sums.partial {
            Some(partial) => {
                let partial = self.buffer_address(b, partial);
                self.piece_sums(b, out, partial, sums.len.at(0))
            }
            None => out,
        };
        let zero = b.ins().iconst(types::I64, 0);
        zero_range(b, into, zero, floats);
        into
    }

    /// The epilogue of a kernel that runs it by rows (`KernelKind::rows`), on rows
    /// `first..end`.
    pub fn epilogue_rows(
        &self,
        b: &mut FunctionBuilder,
        producer: &dyn KernelKind,
        [first, end]: [Value; 2],
    ) {
        for map in producer.epilogue() {
            let per_row = iterations_per_row(self.graph, producer, map)
                .expect("the planner fuses only maps that run by rows");
            let [first, end] = [first, end].map(|row| b.ins().imul_imm_s(row, per_row));
            self.piece_of(b, map, [first, end]);
        }
    }

    /// Iterations `first..end` of `map`'s outermost loop: a piece of an epilogue.
    pub fn piece_of(&self, b: &mut FunctionBuilder, map: &Map, range: [Value; 2]) {
        let piece = Lowerer {
            params: Params {
                range: Some(range),
                ..self.params
            },
            ..*self
        };
        map.emit(&piece, b);
    }

    /// The iterations of a split loop at the current batch: chunks of images, rounded up, for
    /// `Share::Chunks` (as `Share::iterations` counts them at compile time).
    pub fn iterations(&self, b: &mut FunctionBuilder, along: Share) -> Value {
        match along {
            Share::Chunks { images, chunk } => {
                let images = self.sym(b, images);
                let rounded = b.ins().iadd_imm_s(images, chunk - 1);
                let size = b.ins().iconst(types::I64, chunk);
                b.ins().udiv(rounded, size)
            }
            Share::Loop(extent) => self.sym(b, extent),
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
        // In a piece, only iterations `first..end` of the outermost axis.
        let range = self.params.range.map(|[first, end]| (first, end));
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

    /// A direct convolution of `images` images through `netc_conv` (`Import::Conv`): the
    /// input's base and its (channel, image) strides, the weight, the output's base and strides,
    /// the worker's scratch; or a weight gradient through `netc_conv_weight`: the input, the sum,
    /// the output gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn direct_conv(
        &self,
        b: &mut FunctionBuilder,
        (import, direct): (Import, &Direct),
        (input, [in_channel, in_image]): (Value, [Value; 2]),
        weight: Value,
        (out, [out_channel, out_image]): (Value, [Value; 2]),
        scratch: Value,
        images: Value,
    ) {
        let [planes, size, kernel, padding] =
            crate::codegen::direct::packed(direct).map(|v| b.ins().iconst(types::I64, v));
        let args = [
            input,
            in_channel,
            in_image,
            weight,
            out,
            out_channel,
            out_image,
            scratch,
            images,
            planes,
            size,
            kernel,
            padding,
        ];
        self.call(b, import, &args);
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

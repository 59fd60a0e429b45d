//! Softmax and log-softmax along one axis, in the interpreter's order: the maximum, the sum
//! of exponentials, then the results. Over the innermost axis of a fixed length, four rows run
//! at a time, one per lane. Softmax and log-softmax of the same input (cross-entropy's loss
//! and, once simplified, its gradient) are one kernel sharing the exponentials, and the maps
//! and row sums after them (cross-entropy's terms, its gradient, the loss per example) run on
//! each group of rows as soon as it is done.

use super::{KernelKind, Map, Pieces, Share, Sums};
use crate::codegen::abi::Import;
use crate::codegen::alloc::BufferId;
use crate::codegen::arith::{exp, f32_const, Width};
use crate::codegen::fuse::iterations_per_row;
use crate::codegen::layout::{Sym, View};
use crate::codegen::loops::{displaced, element, flags, fold, range};
use crate::codegen::lower::Lowerer;
use crate::ir::{Graph, NodeId};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Elements a piece of a softmax computes at least (as `PIECE_FLOATS`): about twenty
/// operations each, and more in its epilogue, so two pieces beat one thread from 320 to 640
/// elements of rows of 10.
const PIECE_ELEMENTS: i64 = 1 << 8;

/// Softmax or log-softmax of a contiguous input over one axis, seen as `[outer, len, inner]`;
/// with a `partner`, the other of the two as well, into its own buffer, from the same
/// exponentials.
#[derive(Clone, Debug)]
pub struct Softmax {
    pub node: NodeId,
    pub out: BufferId,
    pub input: View,
    pub outer: Sym,
    pub len: Sym,
    pub inner: Sym,
    pub log: bool,
    pub partner: Option<(NodeId, BufferId)>,
    /// Maps over the results (cross-entropy's terms and its gradient), run in order on each
    /// group of rows as soon as the group is done, when the axis is the innermost.
    pub epilogue: Vec<Map>,
    /// The sums along each row of an epilogue's output (cross-entropy's loss per example),
    /// each by the piece that computed the row.
    pub sums: Option<Sums>,
}

impl KernelKind for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn outputs(&self) -> Vec<BufferId> {
        std::iter::once(self.out)
            .chain(self.partner.map(|(_, buffer)| buffer))
            .collect()
    }

    fn inputs(&self) -> Vec<&View> {
        vec![&self.input]
    }

    fn detail(&self, graph: &Graph) -> String {
        match self.partner {
            Some((other, _)) => format!(
                ", and {other} {} from the same exponentials",
                graph.node(other).op
            ),
            None => String::new(),
        }
    }

    /// Rows, in pieces of at least `PIECE_ELEMENTS` elements and whole groups of four rows.
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        let batch = max_batch as i64;
        let row = self.len.at(batch).saturating_mul(self.inner.at(batch));
        Pieces::cut(Share::Loop(self.outer), row, PIECE_ELEMENTS, 4, max_batch)
    }

    fn epilogue(&self) -> &[Map] {
        &self.epilogue
    }

    fn epilogue_for(&mut self, graph: &Graph, map: &Map) -> Option<&mut Vec<Map>> {
        iterations_per_row(graph, &*self, map)?;
        Some(&mut self.epilogue)
    }

    fn piece(&self) -> &'static str {
        "on each group of rows"
    }

    /// Over the innermost axis only.
    fn rows(&self) -> Option<(Sym, Sym)> {
        (self.inner == Sym::fixed(1)).then_some((self.outer, self.len))
    }

    fn sums(&self) -> Option<&Sums> {
        self.sums.as_ref()
    }

    fn summed(&self) -> &'static str {
        "along each row"
    }

    /// Sums along each row: a row is one piece's.
    fn summing(
        &mut self,
        _graph: &Graph,
        axes: &[usize],
        input_dims: &[Sym],
    ) -> Option<(&mut Option<Sums>, Sym, bool)> {
        let (rows, len) = self.rows()?;
        let fits = self.sums.is_none() && axes == [1] && input_dims == [rows, len];
        fits.then_some((&mut self.sums, rows, false))
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let (outer, len, inner) = (self.outer, self.len, self.inner);
        let input_base = l.memory(b, &self.input);
        // Where each of the two results goes, when it is computed.
        let this = Some(l.buffer_address(b, self.out));
        let other = self.partner.map(|(_, buffer)| l.buffer_address(b, buffer));
        let (plain, logs) = if self.log {
            (other, this)
        } else {
            (this, other)
        };
        let [outer_v, len_v, inner_v] = [outer, len, inner].map(|d| l.sym(b, d));
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
        // A piece is rows `first..end`.
        let four = (inner == Sym::fixed(1) && !len.batch).then_some(len.coef);
        let zero = b.ins().iconst(types::I64, 0);
        let (first, end) = match l.params.range {
            Some([first, end]) => (first, end),
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
            l.epilogue_rows(b, self, [row, end]);
            if let Some(sums) = &self.sums {
                let [input, out] = [sums.input, sums.out].map(|s| l.buffer_address(b, s));
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
            softmax_rows(l, b, rows, len_v, buffers, plain, logs);
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
                softmax_rows(l, b, rows, len_v, buffers, plain, logs);
            });
            after(b, row, 1);
        });
    }
}

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

/// One softmax along a row (or four, lane by lane): the maximum, then the sum of
/// exponentials (each kept in the softmax's buffer when there is one), then the results,
/// in the interpreter's order. `buffers` are the input, the softmax and the log-softmax.
fn softmax_rows(
    l: &Lowerer,
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
        let x = rows.load(l, b, input, j);
        w.select(b, (x, FloatCC::GreaterThan, m), x, m)
    });
    let zero = w.constant(b, 0.0);
    let total = fold(b, len, zero, &mut |b, j, t| {
        let x = rows.load(l, b, input, j);
        let shifted = b.ins().fsub(x, max);
        let e = exp(b, shifted, vector);
        if write_plain {
            rows.store(l, b, plain, j, e);
        }
        b.ins().fadd(t, e)
    });
    let log_total = write_logs.then(|| {
        let log = |b: &mut FunctionBuilder, t: Value| {
            l.call(b, Import::Logf, &[t]).expect("logf returns")
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
            let x = rows.load(l, b, input, j);
            let shifted = b.ins().fsub(x, max);
            let value = b.ins().fsub(shifted, log_total);
            rows.store(l, b, logs, j, value);
        }
        if write_plain {
            let e = rows.load(l, b, plain, j);
            let value = b.ins().fdiv(e, total);
            rows.store(l, b, plain, j, value);
        }
    });
}

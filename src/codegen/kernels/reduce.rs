//! Reductions (sum, mean, max) of a view over some of its axes. A loss (a whole small tensor)
//! is summed in one register in the interpreter's order; otherwise the axes are merged and the
//! innermost runs four lanes wide, folding a reduced axis in registers or updating four kept
//! outputs at a time. A sum over the outermost merged axis (batch norm's gradients, per channel
//! over the images) is cut into pieces along that axis, each summing into its own part, added
//! in piece order afterwards.

use super::map::{evaluate, fusing, vectorizable, Element};
use super::{Expr, KernelKind, Pieces, Share, PIECE_FLOATS};
use crate::codegen::alloc::BufferId;
use crate::codegen::arith::Width;
use crate::codegen::layout::{coalesce, product, row_major, Base, Sym, View};
use crate::codegen::loops::{flags, fold, fold_lanes, lanes, loops, loops_within};
use crate::codegen::lower::{Lowerer, Reader};
use crate::ir::{Graph, NodeId, ReduceOp};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Whole-tensor sums of fewer elements than this (per example, for a tensor with a batch
/// axis) add them one after another, in the interpreter's order.
const EXACT_SUM_MAX: i64 = 1 << 14;

/// Floats of input per output float that a piece of a sum reads at least (see `Reduce::cut`).
const PARTS_DEPTH: i64 = 16;

/// A reduction over `axes` of `expr` of the `args` (views in the reduced input's axes): a
/// stored input (`Expr::Read(0)` of one view), or an elementwise operation computed as it is
/// read, whose result nothing else needs (batch norm's `(x - mean)^2` and `dy * x_hat`).
#[derive(Clone, Debug)]
pub struct Reduce {
    pub node: NodeId,
    pub out: BufferId,
    pub op: ReduceOp,
    pub args: Vec<View>,
    pub expr: Expr,
    pub input_dims: Vec<Sym>,
    pub axes: Vec<usize>,
    /// The sums of pieces after the first, when the reduction is cut into pieces (see
    /// `Reduce::cut`).
    pub partial: Option<BufferId>,
}

impl Reduce {
    /// The input, when it is stored rather than computed as it is read.
    pub fn plain(&self) -> Option<&View> {
        (self.expr == Expr::Read(0)).then(|| &self.args[0])
    }

    /// The output's dimensions: the input's that are kept.
    fn out_dims(&self) -> Vec<Sym> {
        (self.input_dims.iter().enumerate())
            .filter(|(i, _)| !self.axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    }

    /// Floats of the output.
    pub fn out_floats(&self) -> Sym {
        product(&self.out_dims())
    }

    /// The input's axes merged where every argument and the output walk them as one: the
    /// dimensions, then each argument's strides and last the output's (zero along reduced
    /// axes).
    fn merged(&self) -> (Vec<Sym>, Vec<Vec<Sym>>) {
        let mut kept = row_major(&self.out_dims()).into_iter();
        let out: Vec<Sym> = (0..self.input_dims.len())
            .map(|i| match self.axes.contains(&i) {
                true => Sym::ZERO,
                false => kept.next().expect("one stride per kept axis"),
            })
            .collect();
        let mut views: Vec<Vec<Sym>> = self.args.iter().map(|a| a.strides.clone()).collect();
        views.push(out);
        coalesce(&self.input_dims, &views)
    }

    /// How a sum over the outermost merged axis is cut into pieces along it, each of at least
    /// `PIECE_FLOATS` floats: a sum of a view in memory, into a batch-independent output (each
    /// piece after the first needs room for its part), and not a whole tensor, which is summed
    /// in its own order. A maximum is left whole, and so is a mean: batch norm's mean is
    /// subtracted from values nearly equal to it in a channel that barely varies, where the
    /// difference is mostly the mean's rounding, and summing in pieces rounded ResNet's
    /// gradients there further from the exact ones than the interpreter's (`tests/it/jit.rs`).
    pub fn cut(&self, max_batch: usize) -> Option<Pieces> {
        let (dims, views) = self.merged();
        let read = self.args.iter().any(|a| {
            matches!(a.base, Base::Buffer(_) | Base::External(_))
                && a.strides.iter().any(|&s| s != Sym::ZERO)
        });
        let out = self.out_floats();
        let (&outer, inner) = dims.split_first()?;
        let out_strides = views.last().expect("the output's strides");
        let summed_outermost = out_strides.first() == Some(&Sym::ZERO) && !inner.is_empty();
        if self.op != ReduceOp::Sum || !read || out.batch || !summed_outermost {
            return None;
        }
        // Each piece reads at least `PARTS_DEPTH` floats per output, so that zeroing and adding
        // its part stays small beside its reading (a sum into a large output is cut into few
        // pieces, or none, rather than given a part per piece).
        let least = PIECE_FLOATS.max(out.coef.saturating_mul(PARTS_DEPTH));
        let floats = product(inner).at(max_batch as i64);
        Pieces::cut(Share::Loop(outer), floats, least, 1, max_batch)
    }
}

impl KernelKind for Reduce {
    fn name(&self) -> &'static str {
        "reduce"
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
        fusing(graph, &self.expr.nodes())
    }

    /// Cut only when there is room for the parts (see `Reduce::cut`).
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        self.partial.and_then(|_| self.cut(max_batch))
    }

    fn scratch(&self) -> Option<BufferId> {
        self.partial
    }

    /// The parts of pieces after the first added in order, then a mean's division, once every
    /// piece has summed.
    fn after_pieces(&self, l: &Lowerer, b: &mut FunctionBuilder, pieces: Value) {
        let out = l.buffer_address(b, self.out);
        let len = self.out_floats();
        if let Some(partial) = self.partial {
            let partial = l.buffer_address(b, partial);
            l.add_pieces(b, out, partial, len.at(0), pieces);
        }
        if self.op == ReduceOp::Mean {
            let in_dims: Vec<Value> = self.input_dims.iter().map(|&d| l.sym(b, d)).collect();
            let count = (self.axes.iter()).fold(b.ins().iconst(types::I64, 1), |acc, &a| {
                b.ins().imul(acc, in_dims[a])
            });
            let count = b.ins().fcvt_from_sint(types::F32, count);
            let floats = l.sym(b, len);
            let [zero, one] = [0, 1].map(|v| b.ins().iconst(types::I64, v));
            lanes(b, zero, floats, false, &[out], &[one], &mut |b, _, _, a| {
                let v = b.ins().load(types::F32, flags(), a[0], 0);
                let mean = b.ins().fdiv(v, count);
                b.ins().store(flags(), mean, a[0], 0);
            });
        }
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let (op, input_dims, axes) = (self.op, &self.input_dims, &self.axes);
        let in_dims: Vec<Value> = input_dims.iter().map(|&d| l.sym(b, d)).collect();
        let out_dims: Vec<Value> = in_dims
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect();
        // A piece sums into its own part (see `Lowerer::piece_sums`).
        let out_base = match self.partial {
            Some(partial) => {
                let out = l.buffer_address(b, self.out);
                let partial = l.buffer_address(b, partial);
                l.piece_sums(b, out, partial, self.out_floats().at(0))
            }
            None => l.buffer_address(b, self.out),
        };
        let out_contiguous = l.contiguous(b, &out_dims);
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
        let init = b.ins().f32const(if op == ReduceOp::Max {
            f32::NEG_INFINITY
        } else {
            0.0
        });
        loops(b, &out_dims, &mut |b, index| {
            let address = l.address(b, out_base, &out_contiguous, index);
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
        let total = product(input_dims);
        let readers: Vec<Reader> = self.args.iter().map(|a| l.reader(b, a)).collect();
        match (self.plain(), &readers[0]) {
            // A reduction of a whole contiguous tensor (a loss) keeps its sum in a
            // register, in the same order as the interpreter, unless the tensor is
            // large (an L2 penalty over a layer's weights): there one addition waiting
            // for the last costs more than the rest of the step's elementwise work, so
            // it takes four lanes, as below.
            (Some(input), Reader::Memory { base, .. })
                if out_dims.is_empty()
                    && input.strides == row_major(input_dims)
                    && total.coef < EXACT_SUM_MAX =>
            {
                let total = l.sym(b, total);
                let one = b.ins().iconst(types::I64, 1);
                let sum = fold(b, total, init, &mut |b, j, acc| {
                    let address = l.address(b, *base, &[one], &[j]);
                    let v = b.ins().load(types::F32, flags(), address, 0);
                    combine(b, acc, v)
                });
                b.ins().store(flags(), sum, out_base, 0);
            }
            (Some(_), reader @ Reader::Scalar(_)) => loops(b, &in_dims, &mut |b, index| {
                let v = l.read(b, reader, index);
                let address = l.address(b, out_base, &out_strides, index);
                let current = b.ins().load(types::F32, flags(), address, 0);
                let next = combine(b, current, v);
                b.ins().store(flags(), next, address, 0);
            }),
            // Otherwise, over the merged axes: an innermost reduced axis is folded in
            // registers (four partial results, then the remainder), an innermost kept
            // axis updates four outputs at a time.
            _ => self.emit_merged(l, b, &readers, (out_base, init), &combine),
        }
    }
}

impl Reduce {
    /// The reduction over the merged axes (see `merged`), of the arguments read by `readers`:
    /// an innermost reduced axis folded in registers, four lanes wide where every operation
    /// and argument allows, or an innermost kept axis updating four outputs at a time, walked
    /// as a map walks its operands (`Lowerer::walk`).
    fn emit_merged(
        &self,
        l: &Lowerer,
        b: &mut FunctionBuilder,
        readers: &[Reader],
        (out_base, init): (Value, Value),
        combine: &dyn Fn(&mut FunctionBuilder, Value, Value) -> Value,
    ) {
        let (dims, views) = self.merged();
        let (out_view, arg_views) = views.split_last().expect("the output's strides");
        let reduced_inner = out_view.last() == Some(&Sym::ZERO);
        // Arguments read from memory, with their merged strides.
        let walked: Vec<(Value, &Vec<Sym>)> = (readers.iter().zip(arg_views))
            .filter_map(|(r, v)| match r {
                Reader::Memory { base, .. } => Some((*base, v)),
                Reader::Scalar(_) => None,
            })
            .collect();
        let steps_by_one = |v: &Vec<Sym>| v.last() == Some(&Sym::ONE);
        let vector = (self.expr.nodes().iter()).all(|n| vectorizable(&l.graph.node(*n).op))
            && walked
                .iter()
                .all(|(_, v)| steps_by_one(v) || v.last() == Some(&Sym::ZERO))
            && walked.iter().any(|(_, v)| steps_by_one(v))
            && (reduced_inner || steps_by_one(out_view));
        // The element's value from the arguments' addresses: loaded (splat when an argument
        // stays put along the lanes), scalars as they are, then the fused operations.
        let value = |b: &mut FunctionBuilder, addresses: &[Value], ty: types::Type| {
            let mut addresses = addresses.iter().zip(&walked);
            let values: Vec<Value> = (readers.iter())
                .map(|r| match r {
                    Reader::Scalar(v) if ty == types::F32X4 => b.ins().splat(types::F32X4, *v),
                    Reader::Scalar(v) => *v,
                    Reader::Memory { .. } => {
                        let (&address, (_, v)) = addresses.next().expect("an address per read");
                        if ty == types::F32 || steps_by_one(v) {
                            b.ins().load(ty, flags(), address, 0)
                        } else {
                            let x = b.ins().load(types::F32, flags(), address, 0);
                            b.ins().splat(types::F32X4, x)
                        }
                    }
                })
                .collect();
            let at = Element {
                index: &[],
                out_strides: &[],
                vector: ty == types::F32X4,
            };
            evaluate(l, b, &self.expr, &values, &at)
        };
        if !reduced_inner {
            // Each element updates its output, as a map walks its operands.
            let mut views: Vec<(Value, Vec<Sym>)> = (walked.iter())
                .map(|(base, v)| (*base, (*v).clone()))
                .collect();
            views.push((out_base, out_view.clone()));
            l.walk(b, &dims, &views, vector, &mut |b, _, ty, a| {
                let (out, reads) = a.split_last().expect("the output's address");
                let v = value(b, reads, ty);
                let current = b.ins().load(ty, flags(), *out, 0);
                let next = combine(b, current, v);
                b.ins().store(flags(), next, *out, 0);
            });
            return;
        }
        let dims: Vec<Value> = dims.iter().map(|&d| l.sym(b, d)).collect();
        let strides = |b: &mut FunctionBuilder, v: &[Sym]| -> Vec<Value> {
            v.iter().map(|&s| l.sym(b, s)).collect()
        };
        let walked_strides: Vec<Vec<Value>> = walked.iter().map(|(_, v)| strides(b, v)).collect();
        let out_strides = strides(b, out_view);
        let (&inner, outer) = dims.split_last().expect("a reduced axis");
        // In a piece, only its iterations of the outermost axis.
        let range = l.params.range.map(|[first, end]| (first, end));
        loops_within(b, outer, range, &mut |b, outer_index| {
            let at = |b: &mut FunctionBuilder, base: Value, strides: &[Value], z: Value| {
                let mut index = outer_index.to_vec();
                index.push(z);
                l.address(b, base, strides, &index)
            };
            let acc = fold_lanes(
                b,
                inner,
                init,
                vector,
                &mut |b, z, ty| {
                    let addresses: Vec<Value> = (walked.iter().zip(&walked_strides))
                        .map(|((base, _), s)| at(b, *base, s, z))
                        .collect();
                    value(b, &addresses, ty)
                },
                combine,
            );
            let zero = b.ins().iconst(types::I64, 0);
            let address = at(b, out_base, &out_strides, zero);
            let current = b.ins().load(types::F32, flags(), address, 0);
            let next = combine(b, current, acc);
            b.ins().store(flags(), next, address, 0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::alloc::new_buffer;

    /// A sum of `[N, C, P]` over the images and `axes`.
    fn sum_over_images(channels: i64, positions: i64, axes: &[usize]) -> Reduce {
        let mut sizes = Vec::new();
        let n = Sym {
            coef: 1,
            batch: true,
        };
        let dims = vec![n, Sym::fixed(channels), Sym::fixed(positions)];
        let input = new_buffer(&mut sizes, product(&dims));
        Reduce {
            node: NodeId(0),
            out: new_buffer(&mut sizes, Sym::fixed(channels * positions)),
            op: ReduceOp::Sum,
            args: vec![View {
                base: Base::Buffer(input),
                strides: row_major(&dims),
            }],
            expr: Expr::Read(0),
            input_dims: dims,
            axes: axes.to_vec(),
            partial: None,
        }
    }

    /// Batch norm's sums (16 channels of 28×28 images) get as many pieces as their reading is
    /// worth; a sum into a large output only pieces that read 16 of its floats per float of
    /// their part; a sum over one image, or a mean, is not cut.
    #[test]
    fn pieces_read_sixteen_floats_per_float_of_their_part() {
        let batch_norm = sum_over_images(16, 784, &[0, 2]).cut(256).expect("cut");
        assert_eq!((batch_norm.per_piece, batch_norm.most), (4, 64));
        for (channels, positions) in [(64, 4096), (1, 1 << 20)] {
            let pieces = sum_over_images(channels, positions, &[0])
                .cut(256)
                .expect("cut");
            assert_eq!(
                (pieces.per_piece, pieces.most),
                (PARTS_DEPTH, 256 / PARTS_DEPTH)
            );
        }
        assert!(sum_over_images(16, 784, &[0, 2]).cut(1).is_none());
        let mut mean = sum_over_images(16, 784, &[0, 2]);
        mean.op = ReduceOp::Mean;
        assert!(mean.cut(256).is_none());
    }
}

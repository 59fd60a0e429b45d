//! Matrix products through the `gemm` crate (imported as `netc_gemm`). A large product is split
//! between the workers by rows of its output, rather than letting the crate split it its own
//! way: each worker then runs the maps that consume the product (the epilogue) on its own rows
//! right after its half of the product, while they are in its cache, and with one worker pool
//! there is no second set of threads to wake. Alone, the crate's own split is a few percent
//! faster on the MLP's shapes; within the step, this one is: 1.13 ms per MLP step against 1.58
//! with the crate splitting on its own threads.

use super::{KernelKind, Map, Pieces, Share, Sums, PIECE_MACS};
use crate::codegen::alloc::BufferId;
use crate::codegen::fuse::iterations_per_row;
use crate::codegen::layout::{Sym, View};
use crate::codegen::loops::{add_into, element, range};
use crate::codegen::lower::{Lowerer, Reader};
use crate::ir::{Graph, NodeId};
use cranelift_codegen::ir::{types, InstBuilder};
use cranelift_frontend::FunctionBuilder;

/// Rows of a piece of a product come in multiples of this, and are at least this many. Each
/// piece is one call of the `gemm` crate, which packs the right operand again for every call:
/// `examples/split_cutoff.rs` measured the MLP's `[256, 784] @ [784, 256]` in pieces of 4 to
/// 256 rows taken by two workers at 0.84, 0.78, 0.68, 0.63, 0.59 and 0.78 times one call's
/// time for 4, 8, 16, 32, 64 and 128 rows. 32 rows is within 7% of the best unloaded and
/// makes twice as many pieces as 64 for a worker that is descheduled to hold up.
const ROWS: i64 = 32;

/// `out = a @ b`: `a` is `[m, k]` and `b` `[k, n]`, both strided.
#[derive(Clone, Debug)]
pub struct Gemm {
    pub node: NodeId,
    pub out: BufferId,
    pub a: View,
    pub b: View,
    pub m: Sym,
    pub n: Sym,
    pub k: Sym,
    /// Maps over the output (a bias and activation, an optimizer update), run in order by
    /// each worker on its rows right after its product, while they are in cache.
    pub epilogue: Vec<Map>,
    /// The column sums of the epilogue's output (or of the product's): a bias gradient.
    pub sums: Option<Sums>,
}

impl KernelKind for Gemm {
    fn name(&self) -> &'static str {
        "gemm"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn outputs(&self) -> Vec<BufferId> {
        vec![self.out]
    }

    fn inputs(&self) -> Vec<&View> {
        vec![&self.a, &self.b]
    }

    fn detail(&self, _graph: &Graph) -> String {
        String::new()
    }

    /// Rows of the output, in pieces of at least `PIECE_MACS` multiply-adds and `ROWS` rows.
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        let b = max_batch as i64;
        let row = self.n.at(b).saturating_mul(self.k.at(b));
        Pieces::cut(Share::Loop(self.m), row, PIECE_MACS, ROWS, max_batch)
    }

    fn epilogue(&self) -> &[Map] {
        &self.epilogue
    }

    fn epilogue_for(&mut self, graph: &Graph, map: &Map) -> Option<&mut Vec<Map>> {
        iterations_per_row(graph, &*self, map)?;
        Some(&mut self.epilogue)
    }

    fn piece(&self) -> &'static str {
        "on each piece's rows"
    }

    fn rows(&self) -> Option<(Sym, Sym)> {
        Some((self.m, self.n))
    }

    fn sums(&self) -> Option<&Sums> {
        self.sums.as_ref()
    }

    fn summed(&self) -> &'static str {
        "over the rows"
    }

    /// Column sums: each piece sums its rows.
    fn summing(
        &mut self,
        _graph: &Graph,
        axes: &[usize],
        input_dims: &[Sym],
    ) -> Option<(&mut Option<Sums>, Sym, bool)> {
        let fits = self.sums.is_none() && axes == [0] && input_dims == [self.m, self.n];
        fits.then_some((&mut self.sums, self.n, true))
    }

    fn finished(&mut self) -> Option<(NodeId, BufferId, &mut Vec<Map>)> {
        let sums = self.sums.as_mut()?;
        Some((sums.node, sums.out, &mut sums.then))
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let (
            Reader::Memory {
                base: lhs,
                strides: ls,
            },
            Reader::Memory {
                base: rhs,
                strides: rs,
            },
        ) = (l.reader(b, &self.a), l.reader(b, &self.b))
        else {
            unreachable!("the planner gives GEMM memory operands")
        };
        let (n, k) = (l.sym(b, self.n), l.sym(b, self.k));
        let dst = l.buffer_address(b, self.out);
        // A piece is rows `first..end` of the output and of the left operand.
        let (first, end) = match l.params.range {
            Some([first, end]) => (first, end),
            None => (b.ins().iconst(types::I64, 0), l.sym(b, self.m)),
        };
        let rows = b.ins().isub(end, first);
        let dst_first = b.ins().imul(first, n);
        let dst = element(b, dst, dst_first);
        let lhs_first = b.ins().imul(first, ls[0]);
        let lhs = element(b, lhs, lhs_first);
        let overwrite = b.ins().iconst(types::I64, 0);
        l.gemm(
            b,
            [rows, n, k],
            (dst, n),
            (lhs, ls[1], ls[0]),
            (rhs, rs[1], rs[0]),
            overwrite,
        );
        l.epilogue_rows(b, self, [first, end]);
        if let Some(sums) = &self.sums {
            let into = l.sums_into(b, sums, n);
            let source = l.buffer_address(b, sums.input);
            range(b, first, end, 1, &mut |b, row| {
                let start = b.ins().imul(row, n);
                let row = element(b, source, start);
                add_into(b, into, row, n);
            });
        }
    }
}

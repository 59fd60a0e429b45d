//! Matrix products through the `gemm` crate (imported as `netc_gemm`). A large product is cut
//! into pieces by rows of its output, rather than letting the crate split it its own way: the
//! worker that runs a piece then runs the maps that consume the product (the epilogue) on the
//! piece's rows right after its product, while they are in its cache, and with one worker
//! pool there is no second set of threads to wake. (With two fixed halves, this measured 1.13
//! ms per MLP step against 1.58 with the crate splitting on its own threads.)

use super::{KernelKind, Map, Pieces, Share, Sums, PIECE_MACS};
use crate::codegen::alloc::BufferId;
use crate::codegen::fuse::iterations_per_row;
use crate::codegen::layout::{Sym, View};
use crate::codegen::loops::{add_into, element, range};
use crate::codegen::lower::{Lowerer, Reader};
use crate::ir::{Graph, NodeId};
use cranelift_codegen::ir::{types, InstBuilder};
use cranelift_frontend::FunctionBuilder;

/// Rows of a piece of a product come in multiples of this, and are at least this many. Every
/// piece is one call of the `gemm` crate and reads the whole right operand (packing it again
/// once a piece has more than 32 rows), so fewer rows per piece cost more: the MLP's
/// `[256, 784] @ [784, 256]` in pieces taken by two workers ran at 0.84, 0.78, 0.68, 0.63,
/// 0.59 and 0.52 times one call's time for pieces of 4, 8, 16, 32, 64 and 128 rows
/// (`examples/split_cutoff.rs`), and the MLP's best epoch of six runs was 0.447, 0.433 and
/// 0.421 s with 32, 64 and 128 rows against 0.407 s with two fixed halves, and the same 0.95 s
/// for all three with one of the two cores kept busy. 64 rows keeps most of 128's speed here
/// and twice its pieces for machines with more cores (see ARCHITECTURE.md).
const ROWS: i64 = 64;

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
    /// Maps over the output (a bias and activation, an optimizer update), run in order on each
    /// piece's rows right after its product, while they are in cache.
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

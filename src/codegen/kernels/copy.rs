//! Copies of strided views into parts of a contiguous buffer: an output gradient reordered to
//! `[O, N, OH·OW]` for both convolution gradients to multiply by, the parts of a
//! concatenation each into its place, and a slice (concatenation's gradient) out of its source.

use super::{KernelKind, Pieces, Share, PIECE_FLOATS};
use crate::codegen::alloc::BufferId;
use crate::codegen::layout::{coalesce, product, Sym, View};
use crate::codegen::loops::flags;
use crate::codegen::lower::Lowerer;
use crate::ir::{Graph, NodeId};
use cranelift_codegen::ir::InstBuilder;
use cranelift_frontend::FunctionBuilder;

/// Strided views copied into `out`; every part has the same outermost dimension, along which
/// the copy is cut into pieces.
#[derive(Clone, Debug)]
pub struct Copy {
    pub node: NodeId,
    pub out: BufferId,
    pub parts: Vec<Part>,
    /// What the copy is for, in the listing.
    pub detail: String,
}

/// One view copied: `dims` elements read from `input` (from `input_offset` floats past its
/// base) and written at `out_strides` from `out_offset` floats into the output buffer.
#[derive(Clone, Debug)]
pub struct Part {
    pub input: View,
    pub input_offset: i64,
    pub dims: Vec<Sym>,
    pub out_strides: Vec<Sym>,
    pub out_offset: i64,
}

impl Part {
    /// The loop nest the part walks: the outermost dimension, then the rest merged where both
    /// sides allow, with the strides of the output and the input.
    fn layout(&self) -> (Vec<Sym>, Vec<Vec<Sym>>) {
        let (inner, strides) = coalesce(
            &self.dims[1..],
            &[
                self.out_strides[1..].to_vec(),
                self.input.strides[1..].to_vec(),
            ],
        );
        let dims = [vec![self.dims[0]], inner].concat();
        let out = [vec![self.out_strides[0]], strides[0].clone()].concat();
        let input = [vec![self.input.strides[0]], strides[1].clone()].concat();
        (dims, vec![out, input])
    }
}

impl KernelKind for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn outputs(&self) -> Vec<BufferId> {
        vec![self.out]
    }

    fn inputs(&self) -> Vec<&View> {
        self.parts.iter().map(|part| &part.input).collect()
    }

    fn detail(&self, _graph: &Graph) -> String {
        format!(", {}", self.detail)
    }

    /// The outermost loop, in pieces of at least `PIECE_FLOATS` floats.
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        let outer = self.parts.first()?.dims[0];
        let floats = self
            .parts
            .iter()
            .map(|part| product(&part.dims[1..]).at(max_batch as i64))
            .sum();
        Pieces::cut(Share::Loop(outer), floats, PIECE_FLOATS, 1, max_batch)
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let offset = |b: &mut FunctionBuilder, base, floats: i64| match floats {
            0 => base,
            _ => b.ins().iadd_imm_s(base, floats * 4),
        };
        for part in &self.parts {
            let out_base = l.buffer_address(b, self.out);
            let out_base = offset(b, out_base, part.out_offset);
            let input_base = l.memory(b, &part.input);
            let input_base = offset(b, input_base, part.input_offset);
            let (dims, views) = part.layout();
            let vector = views[1].last() == Some(&Sym::ONE) && views[0].last() == Some(&Sym::ONE);
            let walked = [(out_base, views[0].clone()), (input_base, views[1].clone())];
            l.walk(b, &dims, &walked, vector, &mut |b, _, ty, addresses| {
                let v = b.ins().load(ty, flags(), addresses[1], 0);
                b.ins().store(flags(), v, addresses[0], 0);
            });
        }
    }
}

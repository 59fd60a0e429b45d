//! Copies of a strided view into a contiguous buffer: an output gradient reordered to
//! `[O, N, OH·OW]` for both convolution gradients to multiply by.

use super::{KernelKind, Pieces, Share, PIECE_FLOATS};
use crate::codegen::alloc::BufferId;
use crate::codegen::layout::{coalesce, product, row_major, Sym, View};
use crate::codegen::loops::flags;
use crate::codegen::lower::Lowerer;
use crate::ir::{Graph, NodeId};
use cranelift_codegen::ir::InstBuilder;
use cranelift_frontend::FunctionBuilder;

/// A strided view copied into a contiguous buffer of `dims`.
#[derive(Clone, Debug)]
pub struct Copy {
    pub node: NodeId,
    pub out: BufferId,
    pub input: View,
    pub dims: Vec<Sym>,
}

impl Copy {
    /// The loop nest the copy walks: its dimensions, merged where both sides allow, and the
    /// strides of the output and the input.
    fn layout(&self) -> (Vec<Sym>, Vec<Vec<Sym>>) {
        coalesce(
            &self.dims,
            &[row_major(&self.dims), self.input.strides.clone()],
        )
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
        vec![&self.input]
    }

    fn detail(&self, _graph: &Graph) -> String {
        ", copied into [O, N, OH·OW] order".to_string()
    }

    /// The outermost loop, in pieces of at least `PIECE_FLOATS` floats.
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        let (dims, _) = self.layout();
        let (&outer, inner) = dims.split_first()?;
        let floats = product(inner).at(max_batch as i64);
        Pieces::cut(Share::Loop(outer), floats, PIECE_FLOATS, 1, max_batch)
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let out_base = l.buffer_address(b, self.out);
        let input_base = l.memory(b, &self.input);
        let (dims, views) = self.layout();
        let vector = views[1].last() == Some(&Sym::ONE);
        let walked = [(out_base, views[0].clone()), (input_base, views[1].clone())];
        l.walk(b, &dims, &walked, vector, &mut |b, _, ty, addresses| {
            let v = b.ins().load(ty, flags(), addresses[1], 0);
            b.ins().store(flags(), v, addresses[0], 0);
        });
    }
}

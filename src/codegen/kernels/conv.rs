//! Convolutions: im2col and a matrix product through the same GEMM as dense layers, one pass
//! per product (the forward pass and the two gradients). A direct convolution in generated
//! code would be limited to Cranelift's 128-bit vectors and its GEMM speed (a third of the
//! `gemm` crate's here). im2col over the whole batch makes one large product, but its matrix
//! (25 MB for LeNet's first layer) streams from memory and the product runs at a third of the
//! core's speed; so each pass works through the batch a few images at a time, with an im2col
//! buffer of at most `SCRATCH` floats that stays in the core's cache (measured here: 100–110
//! GFLOP/s for the chunked forward products, 38–46 unchunked). The forward output is laid out
//! `[O, N, OH·OW]`, which downstream kernels read as an `[N, O, OH, OW]` view through strides,
//! so the bias and activation that follow are one pass that also writes the usual layout.
//! Stride-1 passes whose output rows fill 16-lane vectors, and those where im2col's matrix is
//! skinny (one input channel, or an input gradient of few channels), call the direct
//! convolution of `codegen::direct` on each chunk instead.

use super::{KernelKind, Map, Pieces, Share, PIECE_FLOATS, PIECE_MACS};
use crate::codegen::abi::Import;
use crate::codegen::alloc::BufferId;
use crate::codegen::arith::f32_const;
use crate::codegen::direct::Direct;
use crate::codegen::layout::{dims, Sym, View};
use crate::codegen::loops::{
    branch, displaced, element, flags, lanes, loops, range, unrolled, zeros,
};
use crate::codegen::lower::Lowerer;
use crate::ir::{Graph, NodeId};
use crate::shape::{Shape, Window};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Which passes run as a direct convolution (see `codegen::direct`), from what was measured: a
/// window of at least `DIRECT_TAPS` taps to at most `DIRECT_CHANNELS` channels, in the forward
/// pass and weight gradient of a layer over one channel (LeNet's 1 → 6, 5×5, on one core and
/// 256 images: 93 GFLOP/s forward, against 21 for im2col and a product written the same way in
/// Rust; with 3×3 windows, 1 → 16, 24 and 32 channels, the product won, 46–74 against 22–43
/// GFLOP/s), and in an input gradient of at most `DIRECT_CHANNELS` channels (LeNet's 16 → 6,
/// 5×5: the pass took 0.195 s per epoch against 0.26). And every stride-1 pass whose output
/// rows fill at least three quarters of 16-lane vectors (`Direct::fills_vectors`): four 3×3
/// layers of 16 channels at 28×28, per 6,400 images with AVX-512, forward 0.48–0.60 s with
/// im2col → 0.37 s, weight gradient 0.67–0.78 → 0.36 s, input gradient 0.52–0.60 → 0.27 s;
/// of 32 channels at 14×14, 0.38–0.42 → 0.29, 0.46–0.51 → 0.33, 0.39–0.43 → 0.26 s; of 64
/// channels at 14×14, 1.25 → 1.08, 1.45 → 1.32, 1.28 → 1.01 s; at 7×7 (7 of 16 lanes) the
/// product stays. The AVX2 kernels, for processors without AVX-512, ran these at the speed
/// of im2col with AVX-512's product here.
const DIRECT_TAPS: usize = 16;
const DIRECT_CHANNELS: usize = 8;

/// Multiply-adds per weight that a piece of a weight gradient computes at least: its partial
/// sum, as large as the weight, is zeroed, updated by each chunk's product and added to the
/// others, which costs more than the product itself where the weight is large and the images
/// small (ResNet's 128-channel 4×4 layers: 43 pieces of 3 images, 128 × 1152 partial sums).
const SUM_DEPTH: i64 = 256;

/// Floats in a convolution's im2col buffer: a chunk of images whose patches fit the core's
/// cache next to the chunk's output.
const SCRATCH: i64 = 1 << 16;

/// Output positions (images × OH·OW) a call of the direct convolution covers at least, where
/// `SCRATCH` holds their images: it packs the weight, and adds each weight gradient's lanes,
/// once per call. 14×14 outputs of 32 channels: weight gradient 0.45 s per 6,400 images with
/// a call per image, 0.31 with 7 images per call; 28×28: the same for 1 and 4.
const DIRECT_POSITIONS: i64 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// `input` is x `[N, C, H, W]`, `other` the weight `[O, C, KH, KW]`; the output is
    /// `[O, N, OH·OW]`: weight @ im2col(x).
    Forward,
    /// `input` is x, `other` the output gradient as `[O, N, OH·OW]` (as `[N, O, OH, OW]` for
    /// the direct convolution); the output is the weight's gradient, summed over the chunks in
    /// order: dy @ im2col(x)ᵀ.
    GradWeight,
    /// `input` is the output gradient as `[O, N, OH·OW]` (as `[N, O, OH, OW]` for the direct
    /// convolution), `other` the weight; the output is x's gradient `[N, C, H, W]`:
    /// col2im(weightᵀ @ dy).
    GradInput,
}

/// One pass of a convolution, a chunk of `chunk` images at a time through an im2col buffer
/// (`[C·KH·KW, chunk·OH·OW]`) or the direct convolution's padded copies, one worker's in each
/// part of `scratch`: see `ConvPass` for what `input` and `other` are. Its pieces are runs of
/// chunks (`Geometry::chunk_pieces`).
#[derive(Clone, Debug)]
pub struct Conv {
    pub node: NodeId,
    pub out: BufferId,
    pub scratch: BufferId,
    pub pass: ConvPass,
    pub input: View,
    pub other: View,
    pub geometry: Geometry,
    pub chunk: i64,
    /// The pool's workers, each with its own part of the scratch.
    pub workers: i64,
    /// The direct convolution this pass runs instead of im2col and a product, if it does (see
    /// `Geometry::direct`).
    pub direct: Option<Direct>,
    /// Maps over the output, run in order: in the forward pass the bias and activation that
    /// follow, on each chunk's images right after its product, while they are in cache; in
    /// the weight-gradient pass the weight's update, once the gradient is summed.
    pub epilogue: Vec<Map>,
}

impl Conv {
    /// A pass writing `out` for a pool of `workers`, with chunks of images that fit `SCRATCH`
    /// floats.
    pub fn new(
        node: NodeId,
        (out, scratch): (BufferId, BufferId),
        pass: ConvPass,
        [input, other]: [View; 2],
        (geometry, workers): (Geometry, usize),
    ) -> Conv {
        Conv {
            node,
            out,
            scratch,
            pass,
            input,
            other,
            chunk: geometry.chunk(pass),
            workers: workers as i64,
            direct: geometry.direct(pass),
            geometry,
            epilogue: Vec::new(),
        }
    }

    /// Floats of the scratch buffer of a pass over `geometry`: an im2col buffer for each of
    /// `workers`, then, for the weight gradient, the sums of every piece after the first at
    /// batches up to `max_batch`.
    pub fn scratch_floats(
        pass: ConvPass,
        geometry: &Geometry,
        workers: usize,
        max_batch: usize,
    ) -> i64 {
        let partial = match (pass, geometry.chunk_pieces(pass, max_batch)) {
            (ConvPass::GradWeight, Some(pieces)) => {
                (pieces.most - 1).saturating_mul(geometry.weight_floats())
            }
            _ => 0,
        };
        // Saturating: a size past any arena is refused by the allocator, not wrapped.
        (workers as i64)
            .saturating_mul(geometry.worker_floats(pass))
            .saturating_add(partial)
    }

    /// Where the weight-gradient sums of pieces after the first begin: after every worker's
    /// scratch.
    fn partial(&self, l: &Lowerer, b: &mut FunctionBuilder) -> Value {
        let scratch = l.buffer_address(b, self.scratch);
        let workers = self.workers * self.geometry.worker_floats(self.pass);
        b.ins().iadd_imm_s(scratch, 4 * workers)
    }
}

impl KernelKind for Conv {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn outputs(&self) -> Vec<BufferId> {
        vec![self.out]
    }

    fn inputs(&self) -> Vec<&View> {
        vec![&self.input, &self.other]
    }

    fn detail(&self, _graph: &Graph) -> String {
        let way = if self.direct.is_some() {
            "direct"
        } else {
            "im2col"
        };
        format!(
            ", {:?} pass, {} images per {way} chunk",
            self.pass, self.chunk
        )
    }

    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        self.geometry.chunk_pieces(self.pass, max_batch)
    }

    /// Each chunk of the input gradient adds into its own images' rows (col2im): zeroed first.
    fn before_pieces(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        if self.pass == ConvPass::GradInput && self.direct.is_none() {
            let out = l.buffer_address(b, self.out);
            l.zero(b, out, self.geometry.input_floats());
        }
    }

    /// The weight gradient is the first piece's sum plus each other piece's, in order; then
    /// the weight's update, now that its gradient is complete.
    fn after_pieces(&self, l: &Lowerer, b: &mut FunctionBuilder, pieces: Value) {
        if self.pass != ConvPass::GradWeight {
            return;
        }
        let out = l.buffer_address(b, self.out);
        let partial = self.partial(l, b);
        l.add_pieces(b, out, partial, self.geometry.weight_floats(), pieces);
        for map in &self.epilogue {
            map.emit(l, b);
        }
    }

    fn epilogue(&self) -> &[Map] {
        &self.epilogue
    }

    /// In the forward pass, maps looping over the batch outermost, on each chunk of images.
    fn epilogue_for(&mut self, graph: &Graph, map: &Map) -> Option<&mut Vec<Map>> {
        let outer = map.map_layout(graph).0;
        let fits = self.pass == ConvPass::Forward && outer.first() == Some(&self.geometry.batch);
        fits.then_some(&mut self.epilogue)
    }

    fn piece(&self) -> &'static str {
        match self.pass {
            ConvPass::GradWeight => "once the gradient is summed",
            ConvPass::Forward | ConvPass::GradInput => "on each chunk",
        }
    }

    /// The weight gradient, once summed.
    fn finished(&mut self) -> Option<(NodeId, BufferId, &mut Vec<Map>)> {
        (self.pass == ConvPass::GradWeight).then_some((self.node, self.out, &mut self.epilogue))
    }

    fn scratch(&self) -> Option<BufferId> {
        Some(self.scratch)
    }

    /// A piece: chunks `first..end` of `chunk` images (all of them, unsplit), through the
    /// worker's own im2col buffer (and, for the weight gradient, into the piece's own sum).
    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let (conv, chunk, pass) = (&self.geometry, self.chunk, self.pass);
        let [first, end] = l.params.range.unwrap_or_else(|| {
            let images = conv.batch;
            let chunks = l.iterations(b, Share::Chunks { images, chunk });
            [b.ins().iconst(types::I64, 0), chunks]
        });
        let (input, other) = (l.memory(b, &self.input), l.memory(b, &self.other));
        let out = l.buffer_address(b, self.out);
        let scratch_base = l.buffer_address(b, self.scratch);
        let scratch = match l.params.piece {
            Some([_, worker]) => {
                let own = b.ins().imul_imm_s(worker, conv.worker_floats(pass));
                element(b, scratch_base, own)
            }
            None => scratch_base,
        };
        let partial = self.partial(l, b);
        let sum = l.piece_sums(b, out, partial, conv.weight_floats());
        // The row stride of `[O, N, OH·OW]` matrices.
        let row = l.sym(b, conv.columns());
        let [outputs, patch, unit, zero] =
            [conv.outputs, conv.patch(), 1, 0].map(|v| b.ins().iconst(types::I64, v));
        if pass == ConvPass::GradWeight {
            let floats = b.ins().iconst(types::I64, conv.weight_floats());
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
        let start = b.ins().imul_imm_s(first, chunk);
        let stop = b.ins().imul_imm_s(end, chunk);
        let stop = b.ins().smin(stop, l.params.batch);
        range(b, start, stop, chunk, &mut |b, first| {
            let left = b.ins().isub(l.params.batch, first);
            let most = b.ins().iconst(types::I64, chunk);
            let images = b.ins().smin(left, most);
            let n = b.ins().imul_imm_s(images, conv.positions());
            // The chunk's first column in `[O, N, OH·OW]` matrices.
            let offset = b.ins().imul_imm_s(first, conv.positions());
            if let Some(direct) = &self.direct {
                // Direct passes read and write images and gradients in their `[N, C, H, W]`
                // and `[N, O, OH, OW]` layouts.
                let image = conv.channels * conv.height * conv.width;
                let grads = conv.outputs * conv.positions();
                let x_at = b.ins().imul_imm_s(first, image);
                let dy_at = b.ins().imul_imm_s(first, grads);
                let [plane, image, positions, grads] =
                    [conv.height * conv.width, image, conv.positions(), grads]
                        .map(|v| b.ins().iconst(types::I64, v));
                let (x_strides, dy_strides) = ([plane, image], [positions, grads]);
                let call = match pass {
                    ConvPass::Forward => (
                        Import::Conv,
                        (element(b, input, x_at), x_strides),
                        other,
                        (element(b, out, offset), [row, positions]),
                    ),
                    ConvPass::GradInput => (
                        Import::Conv,
                        (element(b, input, dy_at), dy_strides),
                        other,
                        (element(b, out, x_at), x_strides),
                    ),
                    ConvPass::GradWeight => (
                        Import::ConvWeight,
                        (element(b, input, x_at), x_strides),
                        sum,
                        (element(b, other, dy_at), dy_strides),
                    ),
                };
                let (import, from, weight, to) = call;
                l.direct_conv(b, (import, direct), from, weight, to, scratch, images);
                if pass == ConvPass::Forward {
                    let end = b.ins().iadd(first, images);
                    for map in &self.epilogue {
                        l.piece_of(b, map, [first, end]);
                    }
                }
                return;
            }
            // Both products with the input need its patches; the input gradient makes them.
            if pass != ConvPass::GradInput {
                let places = [input, scratch];
                patches(b, conv, Direction::Gather, places, first, images, n);
            }
            match pass {
                ConvPass::Forward => {
                    let dst = element(b, out, offset);
                    l.gemm(
                        b,
                        [outputs, n, patch],
                        (dst, row),
                        (other, unit, patch),
                        (scratch, unit, n),
                        zero,
                    );
                    // The maps over this chunk's images only.
                    let end = b.ins().iadd(first, images);
                    for map in &self.epilogue {
                        l.piece_of(b, map, [first, end]);
                    }
                }
                ConvPass::GradWeight => {
                    let dy = element(b, other, offset);
                    l.gemm(
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
                    l.gemm(
                        b,
                        [patch, n, outputs],
                        (scratch, n),
                        (other, patch, unit),
                        (dy, unit, row),
                        zero,
                    );
                    patches(
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
}

/// The geometry of a convolution or pooling window over `[N, C, H, W]`, with `O` output
/// channels (equal to `C` for pooling) and an output of `OH × OW` positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub batch: Sym,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub outputs: i64,
    pub out_height: i64,
    pub out_width: i64,
    pub window: Window,
}

impl Geometry {
    /// From the input shape, the output (or output gradient) shape and the window, whose
    /// kernel size is the weight's for a convolution.
    pub fn new(input: &Shape, output: &Shape, window: Window) -> Geometry {
        let fixed = |shape: &Shape, axis| shape.fixed_dim(axis).expect("a fixed dimension") as i64;
        Geometry {
            batch: dims(input)[0],
            channels: fixed(input, 1),
            height: fixed(input, 2),
            width: fixed(input, 3),
            outputs: fixed(output, 1),
            out_height: fixed(output, 2),
            out_width: fixed(output, 3),
            window,
        }
    }

    /// Whether the windows cover every input position exactly once: a stride of the window's
    /// size, no padding, and nothing left over.
    pub fn tiled(&self) -> bool {
        let w = self.window;
        w.stride == w.kernel
            && w.padding == [0, 0]
            && self.height == self.out_height * w.kernel[0] as i64
            && self.width == self.out_width * w.kernel[1] as i64
    }

    /// Whether the windows are 2×2 and tile the input: what pooling runs four windows at a
    /// time (`kernels::pool`).
    pub fn tiled_pairs(&self) -> bool {
        self.tiled() && self.window.kernel == [2, 2]
    }

    /// Rows of an im2col matrix: one per (channel, kernel row, kernel column).
    pub fn patch(&self) -> i64 {
        self.channels * (self.window.kernel[0] * self.window.kernel[1]) as i64
    }

    /// The direct convolution that runs `pass` where it is faster than im2col and a product
    /// (see `DIRECT_TAPS`): a stride-1 window whose sizes fit the call.
    pub fn direct(&self, pass: ConvPass) -> Option<Direct> {
        let w = self.window;
        let [kh, kw] = w.kernel.map(|k| k as usize);
        let kernel = [kh, kw];
        let count = |v: i64| usize::try_from(v).ok();
        let direct = match pass {
            ConvPass::Forward | ConvPass::GradWeight => Direct {
                channels: count(self.channels)?,
                height: count(self.height)?,
                width: count(self.width)?,
                outputs: count(self.outputs)?,
                kernel,
                padding: w.padding.map(|p| p as usize),
                transposed: false,
            },
            ConvPass::GradInput => Direct {
                channels: count(self.outputs)?,
                height: count(self.out_height)?,
                width: count(self.out_width)?,
                outputs: count(self.channels)?,
                kernel,
                padding: [0, 1].map(|a| kernel[a].saturating_sub(1 + w.padding[a] as usize)),
                transposed: true,
            },
        };
        let one_channel = pass == ConvPass::GradInput || direct.channels == 1;
        let skinny = one_channel && kh * kw >= DIRECT_TAPS && direct.outputs <= DIRECT_CHANNELS;
        let faster = skinny || direct.fills_vectors();
        if !direct.fits() {
            return None;
        }
        // Sizes past `i64` stay with im2col, whose sizes the allocator refuses.
        direct.scratch_floats(1)?;
        // A forward padding past the kernel would make the input gradient's negative.
        let inside = w.padding.iter().zip(&w.kernel).all(|(p, k)| p < k);
        (w.stride == [1, 1] && inside && faster).then_some(direct)
    }

    /// Images per chunk of a pass: for the direct convolution, enough for `DIRECT_POSITIONS`
    /// output positions, as many as `SCRATCH` floats hold of their padded copies or outputs;
    /// for im2col, as many as fit `SCRATCH` floats of patches. At least one.
    pub fn chunk(&self, pass: ConvPass) -> i64 {
        match self.direct(pass) {
            Some(direct) => {
                let per_image = direct
                    .image_floats()
                    .and_then(|f| i64::try_from(f).ok())
                    .unwrap_or(i64::MAX);
                let fit = (SCRATCH / per_image.max(1)).max(1);
                let [oh, ow] = direct.out_size();
                let positions = i64::try_from(oh.saturating_mul(ow))
                    .unwrap_or(i64::MAX)
                    .max(1);
                (DIRECT_POSITIONS / positions + 1).min(fit)
            }
            None => (SCRATCH / self.im2col_floats(1).max(1)).max(1),
        }
    }

    /// Floats of one worker's scratch for `pass`: an im2col buffer, or the direct
    /// convolution's (with a padded copy of each image of a chunk for a weight gradient).
    pub fn worker_floats(&self, pass: ConvPass) -> i64 {
        let chunk = self.chunk(pass);
        match self.direct(pass) {
            Some(direct) => {
                let tiles = if pass == ConvPass::GradWeight {
                    chunk
                } else {
                    1
                };
                // `scratch_floats` is within `i64`, or `None`: then past any arena.
                direct
                    .scratch_floats(tiles as usize)
                    .map_or(i64::MAX, |f| f as i64)
            }
            None => self.im2col_floats(chunk),
        }
    }

    /// Output positions per image.
    pub fn positions(&self) -> i64 {
        self.out_height * self.out_width
    }

    /// Floats of one worker's im2col buffer for chunks of `chunk` images.
    pub fn im2col_floats(&self, chunk: i64) -> i64 {
        chunk
            .saturating_mul(self.patch())
            .saturating_mul(self.positions())
    }

    /// Floats of a convolution's weight (and of its gradient).
    pub fn weight_floats(&self) -> i64 {
        self.outputs * self.patch()
    }

    /// A pass's pieces: runs of chunks of images, of at least `PIECE_MACS` multiply-adds
    /// each, and for the weight gradient at least `SUM_DEPTH` per weight, since each piece
    /// writes a partial sum as large as the weight that is then read back.
    pub fn chunk_pieces(&self, pass: ConvPass, max_batch: usize) -> Option<Pieces> {
        let chunk = self.chunk(pass);
        let work = self.outputs.saturating_mul(self.im2col_floats(chunk));
        let along = Share::Chunks {
            images: self.batch,
            chunk,
        };
        let least = match pass {
            ConvPass::GradWeight => PIECE_MACS.max(self.weight_floats().saturating_mul(SUM_DEPTH)),
            ConvPass::Forward | ConvPass::GradInput => PIECE_MACS,
        };
        Pieces::cut(along, work, least, 1, max_batch)
    }

    /// Output positions of the batch: every position of every image.
    pub fn columns(&self) -> Sym {
        self.batch.scaled(self.positions())
    }

    /// Floats of an output (or output gradient) laid out `[O, N, OH·OW]`.
    pub fn by_channel(&self) -> Sym {
        self.columns().scaled(self.outputs)
    }

    /// Planes of the input: one per image and channel.
    pub fn planes(&self) -> Sym {
        self.batch.scaled(self.channels)
    }

    /// Pooling's pieces: planes of the input, at least `PIECE_FLOATS` floats of them per piece.
    pub fn plane_pieces(&self, max_batch: usize) -> Option<Pieces> {
        let plane = self.height * self.width;
        Pieces::cut(
            Share::Loop(self.planes()),
            plane,
            PIECE_FLOATS,
            1,
            max_batch,
        )
    }

    /// Floats of the input.
    pub fn input_floats(&self) -> Sym {
        self.planes().scaled(self.height * self.width)
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

/// Moves the im2col matrix (`columns`, rows `row_len` long) of `images` images from `first`
/// of the `[N, C, H, W]` tensor `image`: `Gather` writes it from the image (zeros where the
/// window is in padding), `Scatter` adds each entry back to the image position it came from.
///
/// The matrix's rows are (channel, kernel row, kernel column), its columns (image, output
/// row, output column). The kernel columns and the output columns of a row are written out
/// in full (the rows of one channel and kernel row read the same image row, shifted), so
/// every offset inside an output row is a constant.
fn patches(
    b: &mut FunctionBuilder,
    conv: &Geometry,
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
            let columns_of = |b: &mut FunctionBuilder, j: usize| element(b, column, row_offsets[j]);
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

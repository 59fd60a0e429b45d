//! The direct convolution that generated code calls (`netc_conv`, and `netc_conv_weight` for
//! weight gradients) for stride-1 passes whose output rows fill 16-lane vectors (ResNet's and
//! VGG's 3×3 layers at 28×28 and 14×14), and where a convolution's im2col matrix would be
//! skinny: one input channel under a window of 16 taps or more (LeNet's first layer, 1 → 6
//! channels, 5×5), or an input gradient of a few channels (LeNet's second layer, 16 → 6).
//! im2col writes each pixel out once per tap and the product reads it back; a direct
//! convolution reads each pixel from a padded copy of the image in the core's cache and keeps a
//! block of outputs in registers (a few rows' columns × a few channels, or for the weight
//! gradient a few channels × a few taps). It computes a stride-1 correlation, image by image,
//! writing each output element once: the forward pass, or the input gradient as the
//! correlation of the zero-padded output gradient with the weight flipped and transposed; and
//! the weight gradient, each weight summed by lane over a call's images in order, then across
//! its lanes. Images and gradients are read in their own layouts, so no reordering copy is
//! needed. Kernels for AVX-512 (32 registers of 16 lanes), AVX2 with FMA, and plain loops; what
//! a call computes depends only on its images and the processor, whatever thread runs it.
#![allow(unsafe_code)]

/// A stride-1 correlation of `channels` planes of `height × width` with `outputs` filters of
/// `kernel` taps, over the planes padded with `padding` zeros on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Direct {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub outputs: usize,
    pub kernel: [usize; 2],
    pub padding: [usize; 2],
    /// The weight is the forward convolution's `[channels, outputs, KH, KW]`, read flipped
    /// (the input gradient); else it is `[outputs, channels, KH, KW]`.
    pub transposed: bool,
}

/// Floats in the widest vector any kernel here uses (AVX-512): tile rows hold whole vectors of
/// output columns of this width.
const WIDEST: usize = 16;

/// The kernels this processor runs: 512-bit vectors with 32 registers, 256-bit vectors with 16,
/// or plain loops. Each gives the same results on every call (a weight gradient's lanes are
/// added in a fixed order), whichever thread runs it, but not the same bits as the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// The widest this processor has (the standard library caches what it detects).
    fn detect() -> Isa {
        if avx512::available() {
            Isa::Avx512
        } else if avx2::available() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }
}

impl Direct {
    /// Output rows and columns: the padded plane less the kernel, plus one.
    pub fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            let size = [self.height, self.width][a];
            (size + 2 * self.padding[a] + 1).saturating_sub(self.kernel[a])
        })
    }

    /// Floats of one row of the padded copy of a plane: whole vectors of output columns, and
    /// the kernel's width past them (zeros beyond the plane), so every load is inside it.
    fn tile_row(&self) -> usize {
        self.out_size()[1].div_ceil(WIDEST) * WIDEST + self.kernel[1] - 1
    }

    /// Floats of the padded copy of one plane.
    fn tile_plane(&self) -> usize {
        (self.height + 2 * self.padding[0]) * self.tile_row()
    }

    /// The kernel rows that output row `y` reads inside the plane: the others read only the
    /// padding's zeros, which add nothing (the input gradient's padding is most of its window).
    fn rows(&self, y: usize) -> std::ops::Range<usize> {
        let [top, height] = [self.padding[0], self.height];
        top.saturating_sub(y)..self.kernel[0].min((top + height).saturating_sub(y))
    }

    /// The output rows that kernel row `ky` reads inside the plane, for the weight gradient.
    fn rows_of_tap(&self, ky: usize) -> std::ops::Range<usize> {
        let [top, height] = [self.padding[0], self.height];
        let first = top.saturating_sub(ky);
        first
            ..(top + height)
                .saturating_sub(ky)
                .min(self.out_size()[0])
                .max(first)
    }

    /// Floats of a call's scratch memory: `tiles` padded copies of an image's planes (one for a
    /// convolution, one per image for a weight gradient), then the weight laid out
    /// `[channels, KH, KW, outputs]`. `None` past `i64`.
    pub fn scratch_floats(&self, tiles: usize) -> Option<usize> {
        let total = self
            .tile_floats()?
            .checked_mul(tiles)?
            .checked_add(self.weight_floats()?)?;
        i64::try_from(total).ok().map(|_| total)
    }

    /// Floats a call works on per image: its padded copy, or its output where that is larger.
    pub fn image_floats(&self) -> Option<usize> {
        let [oh, ow] = self.out_size();
        let out = self.outputs.checked_mul(oh)?.checked_mul(ow)?;
        Some(self.tile_floats()?.max(out))
    }

    fn tile_floats(&self) -> Option<usize> {
        self.channels.checked_mul(self.tile_plane())
    }

    fn weight_floats(&self) -> Option<usize> {
        let [kh, kw] = self.kernel;
        self.channels
            .checked_mul(self.outputs)?
            .checked_mul(kh.checked_mul(kw)?)
    }

    /// Whether output rows fill at least three quarters of the lanes of the widest vectors
    /// (rows of 12 to 16 columns, 24 to 32, 36 to 48, …).
    pub fn fills_vectors(&self) -> bool {
        let width = self.out_size()[1];
        4 * width >= 3 * width.div_ceil(WIDEST) * WIDEST
    }

    /// Whether a stride-1 convolution of this shape can run directly: its numbers fit the call,
    /// its padding is inside the kernel and the output is not empty.
    pub fn fits(&self) -> bool {
        // Each number travels in 31 bits (see `packed`).
        let numbers = [self.channels, self.height, self.width, self.outputs];
        let small = numbers
            .iter()
            .chain(&self.kernel)
            .chain(&self.padding)
            .all(|&n| n < 1 << 31);
        if !small {
            return false;
        }
        let inside = (0..2).all(|a| self.padding[a] < self.kernel[a]);
        let [h, w] = [self.height, self.width];
        let covers = (0..2).all(|a| [h, w][a] + 2 * self.padding[a] >= self.kernel[a]);
        inside && covers && self.channels > 0 && self.outputs > 0
    }
}

/// Where a call's images and results are: a plane `c` of image `i` at `c·channel + i·image`
/// floats from the base (rows of a plane consecutive).
#[derive(Clone, Copy)]
struct Strides {
    channel: usize,
    image: usize,
}

/// Runs `direct` on `images` images: input plane `c` of image `i` at `input + c·in_channel +
/// i·in_image`, output plane `o` at `out + o·out_channel + i·out_image`, the weight at `weight`,
/// and `scratch` holding `Direct::scratch_floats(1)` floats that no other thread uses meanwhile.
/// Called by generated code; the geometry comes packed as its parameters.
#[allow(clippy::too_many_arguments)]
pub extern "C" fn netc_conv(
    input: *const f32,
    in_channel: i64,
    in_image: i64,
    weight: *const f32,
    out: *mut f32,
    out_channel: i64,
    out_image: i64,
    scratch: *mut f32,
    images: i64,
    planes: i64,
    size: i64,
    kernel: i64,
    padding: i64,
) {
    let (direct, images) = unpack(planes, size, kernel, padding, images);
    let (from, to) = (
        strides(in_channel, in_image),
        strides(out_channel, out_image),
    );
    let isa = Isa::detect();
    // SAFETY: the plan sized the scratch for `direct` and each worker its own; the input and
    // output of every image in the call lie in buffers checked before the step ran.
    unsafe {
        run(
            &direct,
            images,
            (input, from),
            weight,
            (out, to),
            scratch,
            isa,
        )
    }
}

/// Two numbers in one parameter: `a` in the high 32 bits, `b` in the low.
pub fn pair(a: usize, b: usize) -> i64 {
    ((a as i64) << 32) | b as i64
}

fn split(v: i64) -> [usize; 2] {
    [(v >> 32) as usize, (v & 0xffff_ffff) as usize]
}

/// The geometry as `netc_conv` receives it: (channels, outputs + transposed flag in the top
/// bit of outputs), (height, width), kernel, padding, each a `pair`.
pub fn packed(direct: &Direct) -> [i64; 4] {
    let outputs = direct.outputs | usize::from(direct.transposed) << 31;
    [
        pair(direct.channels, outputs),
        pair(direct.height, direct.width),
        pair(direct.kernel[0], direct.kernel[1]),
        pair(direct.padding[0], direct.padding[1]),
    ]
}

fn unpack(planes: i64, size: i64, kernel: i64, padding: i64, images: i64) -> (Direct, usize) {
    let [channels, outputs] = split(planes);
    let [height, width] = split(size);
    let direct = Direct {
        channels,
        height,
        width,
        outputs: outputs & 0x7fff_ffff,
        kernel: split(kernel),
        padding: split(padding),
        transposed: outputs >> 31 == 1,
    };
    (direct, usize::try_from(images).unwrap_or(0))
}

/// See `netc_conv`; `isa` says which kernels run.
///
/// # Safety
/// Every input and output plane of the `images` images, the weight and `scratch_floats(1)` of
/// scratch must be valid, and the output must not overlap the rest; `isa` one this processor
/// has.
unsafe fn run(
    d: &Direct,
    images: usize,
    (input, from): (*const f32, Strides),
    weight: *const f32,
    (out, to): (*mut f32, Strides),
    scratch: *mut f32,
    isa: Isa,
) {
    let weights = d.weight_floats().expect("sizes the plan checked");
    // SAFETY (all blocks below): the scratch holds the tile, then the packed weight.
    let (tile, packed) = unsafe { split_scratch(d, scratch, 1, weights) };
    pack_weight(
        d,
        unsafe { std::slice::from_raw_parts(weight, weights) },
        packed,
    );
    let [oh, ow] = d.out_size();
    for image in 0..images {
        unsafe { fill_tile(d, tile, (input, from), image) };
        let out = unsafe { out.add(position(&[(image, to.image)])) };
        let place = Place {
            tile: tile.as_ptr(),
            plane: d.tile_plane(),
            row: d.tile_row(),
            weight: packed.as_ptr(),
            out,
            out_channel: to.channel,
            out_width: ow,
        };
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::image(d, &place, oh) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::image(d, &place, oh) },
            _ => unsafe { portable(d, &place, oh) },
        }
    }
}

/// The scratch as `tiles` tiles and `floats` floats after them.
///
/// # Safety
/// `scratch` must hold `Direct::scratch_floats(tiles)` floats, and `floats` be at most one
/// per weight.
unsafe fn split_scratch<'a>(
    d: &Direct,
    scratch: *mut f32,
    tiles: usize,
    floats: usize,
) -> (&'a mut [f32], &'a mut [f32]) {
    let tiles = d.tile_floats().and_then(|f| f.checked_mul(tiles));
    let tiles = tiles.expect("sizes the plan checked");
    // SAFETY: as the caller promised.
    unsafe {
        let rest = std::slice::from_raw_parts_mut(scratch.add(tiles), floats);
        (std::slice::from_raw_parts_mut(scratch, tiles), rest)
    }
}

/// Writes image `image`'s planes into a padded tile: each plane, and zeros around it.
///
/// # Safety
/// Every plane of the image must be valid at `input` and `from`.
unsafe fn fill_tile(
    d: &Direct,
    tile: &mut [f32],
    (input, from): (*const f32, Strides),
    image: usize,
) {
    let row = d.tile_row();
    let [top, left] = d.padding;
    for (c, plane) in tile.chunks_exact_mut(d.tile_plane()).enumerate() {
        let (above, rest) = plane.split_at_mut(top * row);
        above.fill(0.0);
        let (inside, below) = rest.split_at_mut(d.height * row);
        below.fill(0.0);
        for (y, row) in inside.chunks_exact_mut(row).enumerate() {
            let offset = [(image, from.image), (c, from.channel), (y, d.width)];
            // SAFETY: as the caller promised.
            let source =
                unsafe { std::slice::from_raw_parts(input.add(position(&offset)), d.width) };
            row[..left].fill(0.0);
            row[left..left + d.width].copy_from_slice(source);
            row[left + d.width..].fill(0.0);
        }
    }
}

/// Adds the weight gradient of `images` images to `sum` (`[outputs, channels, KH, KW]`): for
/// each weight, the sum over images and positions of the output gradient times the input it
/// multiplied, input plane `c` of image `i` at `input + c·in_channel + i·in_image` and output
/// gradient plane `o` at `dy + o·dy_channel + i·dy_image`, with `scratch` holding
/// `Direct::scratch_floats(images)` floats. Each weight is summed by lane (the output column
/// modulo the vector's width) over the images in order, then its lanes are added in a fixed
/// order, so a call's result depends only on its images and the processor. Called by generated
/// code, as `netc_conv`.
#[allow(clippy::too_many_arguments)]
pub extern "C" fn netc_conv_weight(
    input: *const f32,
    in_channel: i64,
    in_image: i64,
    sum: *mut f32,
    dy: *const f32,
    dy_channel: i64,
    dy_image: i64,
    scratch: *mut f32,
    images: i64,
    planes: i64,
    size: i64,
    kernel: i64,
    padding: i64,
) {
    let (direct, images) = unpack(planes, size, kernel, padding, images);
    let (from, by) = (strides(in_channel, in_image), strides(dy_channel, dy_image));
    let isa = Isa::detect();
    // SAFETY: as for `netc_conv`; `sum` is the piece's own partial result.
    unsafe { run_weight(&direct, images, (input, from), (dy, by), sum, scratch, isa) }
}

fn strides(channel: i64, image: i64) -> Strides {
    let count = |v: i64| usize::try_from(v).expect("a stride the plan checked");
    Strides {
        channel: count(channel),
        image: count(image),
    }
}

/// See `netc_conv_weight`; `isa` says which kernels run.
///
/// # Safety
/// As `run`'s, with `sum` holding a float per weight and `scratch` `scratch_floats(images)`.
unsafe fn run_weight(
    d: &Direct,
    images: usize,
    (input, from): (*const f32, Strides),
    (dy, by): (*const f32, Strides),
    sum: *mut f32,
    scratch: *mut f32,
    isa: Isa,
) {
    // SAFETY (all blocks below): the scratch holds a tile per image.
    let (tiles, _) = unsafe { split_scratch(d, scratch, images, 0) };
    let tile_floats = d.tile_floats().expect("sizes the plan checked");
    for (image, tile) in tiles.chunks_exact_mut(tile_floats).enumerate() {
        unsafe { fill_tile(d, tile, (input, from), image) };
    }
    let [kh, kw] = d.kernel;
    // Each block of weights sums every image in registers, image after image; a block of
    // output channels goes through every input channel and kernel row while its gradient
    // planes are in the core's first cache.
    let block = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::output_block(d),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::output_block(d),
        _ => d.outputs,
    };
    for o in (0..d.outputs).step_by(block) {
        for c in 0..d.channels {
            for ky in 0..kh {
                let taps = Taps {
                    tile: unsafe { tiles.as_ptr().add(c * d.tile_plane() + ky * d.tile_row()) },
                    tile_image: tile_floats,
                    row: d.tile_row(),
                    images,
                    dy: unsafe { dy.add(o * by.channel) },
                    dy_image: by.image,
                    dy_channel: by.channel,
                    outputs: block.min(d.outputs - o),
                    sum: unsafe { sum.add(((o * d.channels + c) * kh + ky) * kw) },
                    sum_output: d.channels * kh * kw,
                    rows: d.rows_of_tap(ky),
                    width: d.out_size()[1],
                    taps: kw,
                };
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512::taps(&taps) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::taps(&taps) },
                    _ => unsafe { portable_taps(&taps) },
                }
            }
        }
    }
}

/// The output gradient's planes against one row of kernel taps of one input plane, over a
/// call's images, added to the weight gradient at `sum` (the first output channel's first tap
/// of this row, `sum_output` weights apart from one output channel to the next); `tile` is the
/// first image's padded plane from the taps' kernel row, the next image's `tile_image` floats
/// on; `dy` the first image's first output channel's gradient plane. Each weight is summed by
/// lane (the output column modulo the vector's width) over the images in order, then its lanes
/// are added in a fixed order, so a call's result depends only on its images.
struct Taps {
    tile: *const f32,
    tile_image: usize,
    row: usize,
    images: usize,
    dy: *const f32,
    dy_image: usize,
    dy_channel: usize,
    outputs: usize,
    sum: *mut f32,
    sum_output: usize,
    /// The output rows whose inputs at this kernel row are inside the plane.
    rows: std::ops::Range<usize>,
    width: usize,
    taps: usize,
}

/// `Taps` in plain loops, in eight lanes as AVX2's vectors add.
///
/// # Safety
/// As `run_weight`'s.
unsafe fn portable_taps(t: &Taps) {
    for o in 0..t.outputs {
        for tap in 0..t.taps {
            let mut lanes = [0.0f32; 8];
            for image in 0..t.images {
                let (tile, dy) = (image * t.tile_image, image * t.dy_image);
                for y in t.rows.clone() {
                    for x in 0..t.width {
                        // SAFETY: inside the planes and the tiles.
                        unsafe {
                            let g = *t.dy.add(dy + o * t.dy_channel + y * t.width + x);
                            lanes[x % 8] += g * *t.tile.add(tile + y * t.row + x + tap);
                        }
                    }
                }
            }
            // SAFETY: the weight (o, tap) of the taps' row.
            unsafe { *t.sum.add(o * t.sum_output + tap) += lanes.iter().sum::<f32>() };
        }
    }
}

/// A float's position from its indices and their strides, checked: the buffers it points into
/// were checked before the step ran, so overflow here is a bug.
fn position(terms: &[(usize, usize)]) -> usize {
    terms
        .iter()
        .try_fold(0usize, |sum, &(i, stride)| {
            sum.checked_add(i.checked_mul(stride)?)
        })
        .expect("a position inside a checked buffer")
}

/// The weight laid out `[channels, KH, KW, outputs]`, so that a tap's weights for a block of
/// outputs are consecutive.
fn pack_weight(d: &Direct, weight: &[f32], packed: &mut [f32]) {
    let [kh, kw] = d.kernel;
    for c in 0..d.channels {
        for ky in 0..kh {
            for kx in 0..kw {
                for o in 0..d.outputs {
                    let from = if d.transposed {
                        ((c * d.outputs + o) * kh + kh - 1 - ky) * kw + kw - 1 - kx
                    } else {
                        ((o * d.channels + c) * kh + ky) * kw + kx
                    };
                    packed[((c * kh + ky) * kw + kx) * d.outputs + o] = weight[from];
                }
            }
        }
    }
}

/// One image's padded planes, the packed weight, and where its outputs go.
struct Place {
    tile: *const f32,
    plane: usize,
    row: usize,
    weight: *const f32,
    out: *mut f32,
    out_channel: usize,
    out_width: usize,
}

/// The correlation in plain loops, for processors without AVX2 and FMA.
///
/// # Safety
/// As `run`'s.
unsafe fn portable(d: &Direct, p: &Place, out_height: usize) {
    let [kh, kw] = d.kernel;
    for o in 0..d.outputs {
        for y in 0..out_height {
            for x in 0..p.out_width {
                let mut sum = 0.0f32;
                for c in 0..d.channels {
                    for ky in d.rows(y) {
                        for kx in 0..kw {
                            let tap = ((c * kh + ky) * kw + kx) * d.outputs + o;
                            let at = c * p.plane + (y + ky) * p.row + x + kx;
                            sum += unsafe { *p.weight.add(tap) * *p.tile.add(at) };
                        }
                    }
                }
                unsafe { *p.out.add(o * p.out_channel + y * p.out_width + x) = sum };
            }
        }
    }
}

/// Calls `f::<A, B>(args)` for a block of `(A, B)` among those listed (`A: B B …;`), each
/// shape its own code with its accumulators in registers.
macro_rules! by_block {
    ($shape:expr, $f:ident $args:tt; $($a:literal: $($b:literal)*;)*) => {
        match $shape {
            $($(($a, $b) => unsafe { $f::<$a, $b> $args },)*)*
            (a, b) => unreachable!("a block of {a} × {b}"),
        }
    };
}

/// `n` items in blocks of at most `most`, as even as they can be: the size of the first blocks
/// (the last may be smaller). Seven channels in blocks of up to six are 4 + 3, not 6 + 1,
/// whose block of one would load as much as it computes.
fn even_blocks(n: usize, most: usize) -> usize {
    n.div_ceil(n.div_ceil(most).max(1))
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    /// Elsewhere than x86-64 the portable loops run.
    pub fn available() -> bool {
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    /// Elsewhere than x86-64 the portable loops run.
    pub fn available() -> bool {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels this processor can run: each is checked against the definition.
    fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        isas.extend(avx2::available().then_some(Isa::Avx2));
        isas.extend(avx512::available().then_some(Isa::Avx512));
        isas
    }

    /// `n` values in [−1.64, 1.64], spread differently for each `seed`.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        let value = |i: usize| (((seed * i + 1) * 7919 % 211) as f32 - 105.0) / 64.0;
        (0..n).map(value).collect()
    }

    /// The strides of `d`'s input and output in `[N, C, H, W]` and `[N, O, OH, OW]` layouts.
    fn layouts(d: &Direct) -> (Strides, Strides) {
        let [oh, ow] = d.out_size();
        let plane = d.height * d.width;
        let input = Strides {
            channel: plane,
            image: d.channels * plane,
        };
        let output = Strides {
            channel: oh * ow,
            image: d.outputs * oh * ow,
        };
        (input, output)
    }

    /// The correlation by its definition, on the unpadded planes, in f64.
    fn reference(d: &Direct, input: &[f32], weight: &[f32], images: usize) -> Vec<f64> {
        let [oh, ow] = d.out_size();
        let [kh, kw] = d.kernel;
        let (h, w) = (d.height as i64, d.width as i64);
        let mut out = vec![0.0; images * d.outputs * oh * ow];
        for i in 0..images {
            for o in 0..d.outputs {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut sum = 0.0;
                        for c in 0..d.channels {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let sy = (y + ky) as i64 - d.padding[0] as i64;
                                    let sx = (x + kx) as i64 - d.padding[1] as i64;
                                    if sy < 0 || sy >= h || sx < 0 || sx >= w {
                                        continue;
                                    }
                                    let tap = if d.transposed {
                                        ((c * d.outputs + o) * kh + kh - 1 - ky) * kw + kw - 1 - kx
                                    } else {
                                        ((o * d.channels + c) * kh + ky) * kw + kx
                                    };
                                    let at = ((i * d.channels + c) as i64 * h + sy) * w + sx;
                                    sum += weight[tap] as f64 * input[at as usize] as f64;
                                }
                            }
                        }
                        out[((i * d.outputs + o) * oh + y) * ow + x] = sum;
                    }
                }
            }
        }
        out
    }

    /// The weight gradient by its definition, in f64.
    fn weight_reference(d: &Direct, input: &[f32], dy: &[f32], images: usize) -> Vec<f64> {
        let [oh, ow] = d.out_size();
        let [kh, kw] = d.kernel;
        let (h, w) = (d.height as i64, d.width as i64);
        let mut sum = vec![0.0; d.outputs * d.channels * kh * kw];
        for i in 0..images {
            for o in 0..d.outputs {
                for c in 0..d.channels {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let at = ((o * d.channels + c) * kh + ky) * kw + kx;
                            for y in 0..oh {
                                for x in 0..ow {
                                    let sy = (y + ky) as i64 - d.padding[0] as i64;
                                    let sx = (x + kx) as i64 - d.padding[1] as i64;
                                    if sy < 0 || sy >= h || sx < 0 || sx >= w {
                                        continue;
                                    }
                                    let pixel = ((i * d.channels + c) as i64 * h + sy) * w + sx;
                                    let g = dy[((i * d.outputs + o) * oh + y) * ow + x];
                                    sum[at] += g as f64 * input[pixel as usize] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        sum
    }

    #[test]
    fn weight_gradients_match_the_definition() {
        let shapes = [
            (1, 28, 28, 6, [5, 5], [2, 2]),
            (1, 12, 13, 3, [3, 3], [1, 1]),
            (2, 9, 7, 2, [5, 4], [4, 0]),
            (1, 5, 21, 1, [1, 14], [0, 3]),
            (16, 28, 28, 16, [3, 3], [1, 1]),
            (5, 14, 14, 13, [3, 3], [1, 1]),
            (2, 9, 20, 9, [7, 7], [3, 3]),
        ];
        for (channels, height, width, outputs, kernel, padding) in shapes {
            let d = Direct {
                channels,
                height,
                width,
                outputs,
                kernel,
                padding,
                transposed: false,
            };
            assert!(d.fits());
            let images = 3;
            let input = values(images * channels * height * width, 1);
            let [oh, ow] = d.out_size();
            let dy = values(images * outputs * oh * ow, 5);
            let weights = d.weight_floats().unwrap();
            let want = weight_reference(&d, &input, &dy, images);
            for isa in available() {
                // Added to what is there.
                let mut sum = vec![1.0f32; weights];
                let mut scratch = vec![f32::NAN; d.scratch_floats(images).unwrap()];
                let (from, by) = layouts(&d);
                // SAFETY: every buffer is as large as the call reads and writes.
                unsafe {
                    run_weight(
                        &d,
                        images,
                        (input.as_ptr(), from),
                        (dy.as_ptr(), by),
                        sum.as_mut_ptr(),
                        scratch.as_mut_ptr(),
                        isa,
                    )
                };
                for (got, want) in sum.iter().zip(&want) {
                    assert!(
                        (*got as f64 - 1.0 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{d:?}, {isa:?}: {got} against 1 + {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_the_definition_for_every_block_shape() {
        let shapes = [
            (1, 28, 28, 6, [5, 5], [2, 2], false),
            (16, 10, 10, 6, [5, 5], [4, 4], true),
            (1, 28, 28, 16, [3, 3], [1, 1], false),
            (3, 7, 40, 13, [3, 2], [0, 1], false),
            (2, 5, 9, 25, [1, 1], [0, 0], true),
            (16, 28, 28, 16, [3, 3], [1, 1], false),
            (32, 14, 14, 32, [3, 3], [1, 1], true),
            (7, 9, 33, 19, [3, 3], [1, 1], false),
        ];
        for (channels, height, width, outputs, kernel, padding, transposed) in shapes {
            let d = Direct {
                channels,
                height,
                width,
                outputs,
                kernel,
                padding,
                transposed,
            };
            assert!(d.fits());
            let images = 2;
            let input = values(images * channels * height * width, 1);
            let weight = values(d.weight_floats().unwrap(), 3);
            let [oh, ow] = d.out_size();
            let want = reference(&d, &input, &weight, images);
            for isa in available() {
                let mut out = vec![f32::NAN; images * outputs * oh * ow];
                let mut scratch = vec![f32::NAN; d.scratch_floats(1).unwrap()];
                let [planes, size, kernel, padding] = packed(&d);
                assert_eq!(
                    unpack(planes, size, kernel, padding, images as i64),
                    (d, images)
                );
                let (from, to) = layouts(&d);
                // SAFETY: every buffer is as large as the call reads and writes.
                unsafe {
                    run(
                        &d,
                        images,
                        (input.as_ptr(), from),
                        weight.as_ptr(),
                        (out.as_mut_ptr(), to),
                        scratch.as_mut_ptr(),
                        isa,
                    )
                };
                for (got, want) in out.iter().zip(&want) {
                    assert!(
                        (*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{d:?}, {isa:?}: {got} against {want}"
                    );
                }
            }
        }
    }
}

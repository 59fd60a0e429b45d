//! The direct convolution that generated code calls (`netc_conv`, and `netc_conv_weight` for
//! weight gradients) where a convolution's im2col matrix would be skinny: one input channel
//! under a window of 16 taps or more (LeNet's first layer, 1 → 6 channels, 5×5), or an input
//! gradient of a few channels (LeNet's second layer, 16 → 6). There im2col writes each pixel
//! out 25 times and the product that follows has a dimension of 6 or 25, so the pass is bound
//! by memory; a direct convolution reads each pixel once from a padded copy of the image in
//! the core's cache and keeps a block of outputs in registers (a row's columns × a few
//! channels). It computes a stride-1 correlation, image by image, writing each output element
//! once: the forward pass, or the input gradient as the correlation of the zero-padded output
//! gradient with the weight flipped and transposed; and the weight gradient, each weight summed
//! by lane over the images in order. Images and gradients are read in their own layouts, so no
//! reordering copy is needed. What a call computes depends only on its images, whatever thread
//! runs it.
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

/// Columns of outputs computed at once: one AVX2 vector.
const LANES: usize = 8;

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
        self.out_size()[1].div_ceil(LANES) * LANES + self.kernel[1] - 1
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

    /// Floats of a call's scratch memory: the padded copy of an image's planes, then room for a
    /// vector per weight (the weight gradient's partial sums by lane; the convolutions use the
    /// first eighth for the weight laid out `[channels, KH, KW, outputs]`). `None` past `i64`.
    pub fn scratch_floats(&self) -> Option<usize> {
        let total = self
            .tile_floats()?
            .checked_add(self.weight_floats()?.checked_mul(LANES)?)?;
        i64::try_from(total).ok().map(|_| total)
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
/// and `scratch` holding `Direct::scratch_floats` floats that no other thread uses meanwhile.
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
    let fast = avx2::available();
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
            fast,
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

/// See `netc_conv`; `fast` runs the AVX2 kernel, else the portable one.
///
/// # Safety
/// Every input and output plane of the `images` images, the weight and `scratch_floats` of
/// scratch must be valid, and the output must not overlap the rest; `fast` only where AVX2
/// and FMA are available.
unsafe fn run(
    d: &Direct,
    images: usize,
    (input, from): (*const f32, Strides),
    weight: *const f32,
    (out, to): (*mut f32, Strides),
    scratch: *mut f32,
    fast: bool,
) {
    let weights = d.weight_floats().expect("sizes the plan checked");
    // SAFETY (all blocks below): the scratch holds the tile, then the packed weight.
    let (tile, packed) = unsafe { split_scratch(d, scratch, weights) };
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
        #[cfg(target_arch = "x86_64")]
        if fast {
            unsafe { avx2::image(d, &place, oh) };
            continue;
        }
        unsafe { portable(d, &place, oh) };
    }
}

/// The scratch as the tile (zeroed: its padding stays zero, as only the planes' insides are
/// written, image after image) and `floats` floats after it.
///
/// # Safety
/// `scratch` must hold `Direct::scratch_floats` floats, and `floats` be at most 8 per weight.
unsafe fn split_scratch<'a>(
    d: &Direct,
    scratch: *mut f32,
    floats: usize,
) -> (&'a mut [f32], &'a mut [f32]) {
    let tile_len = d.tile_floats().expect("sizes the plan checked");
    // SAFETY: as the caller promised.
    let (tile, rest) = unsafe {
        let tile = std::slice::from_raw_parts_mut(scratch, tile_len);
        let rest = std::slice::from_raw_parts_mut(scratch.add(tile_len), floats);
        (tile, rest)
    };
    tile.fill(0.0);
    (tile, rest)
}

/// Copies image `image`'s planes into the inside of the padded tile.
///
/// # Safety
/// Every plane of the image must be valid at `input` and `from`.
unsafe fn fill_tile(
    d: &Direct,
    tile: &mut [f32],
    (input, from): (*const f32, Strides),
    image: usize,
) {
    let (plane, row) = (d.tile_plane(), d.tile_row());
    for c in 0..d.channels {
        for y in 0..d.height {
            let at = c * plane + (y + d.padding[0]) * row + d.padding[1];
            let offset = [(image, from.image), (c, from.channel), (y, d.width)];
            // SAFETY: as the caller promised.
            let source =
                unsafe { std::slice::from_raw_parts(input.add(position(&offset)), d.width) };
            tile[at..at + d.width].copy_from_slice(source);
        }
    }
}

/// Adds the weight gradient of `images` images to `sum` (`[outputs, channels, KH, KW]`): for
/// each weight, the sum over images and positions of the output gradient times the input it
/// multiplied, input plane `c` of image `i` at `input + c·in_channel + i·in_image` and output
/// gradient plane `o` at `dy + o·dy_channel + i·dy_image`. Each weight is summed by lane (the
/// output column modulo 8) over the images in order, then the lanes are added in order, so a
/// call's result depends only on its images. Called by generated code, as `netc_conv`.
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
    let fast = avx2::available();
    // SAFETY: as for `netc_conv`; `sum` is the piece's own partial result.
    unsafe { run_weight(&direct, images, (input, from), (dy, by), sum, scratch, fast) }
}

fn strides(channel: i64, image: i64) -> Strides {
    let count = |v: i64| usize::try_from(v).expect("a stride the plan checked");
    Strides {
        channel: count(channel),
        image: count(image),
    }
}

/// See `netc_conv_weight`; `fast` runs the AVX2 kernel, else the portable one.
///
/// # Safety
/// As `run`'s, with `sum` holding a float per weight.
unsafe fn run_weight(
    d: &Direct,
    images: usize,
    (input, from): (*const f32, Strides),
    (dy, by): (*const f32, Strides),
    sum: *mut f32,
    scratch: *mut f32,
    fast: bool,
) {
    let weights = d.weight_floats().expect("sizes the plan checked");
    // SAFETY (all blocks below): the scratch holds the tile, then a vector per weight.
    let (tile, lanes) = unsafe { split_scratch(d, scratch, weights * LANES) };
    lanes.fill(0.0);
    let [kh, kw] = d.kernel;
    for image in 0..images {
        unsafe { fill_tile(d, tile, (input, from), image) };
        let dy = unsafe { dy.add(position(&[(image, by.image)])) };
        for c in 0..d.channels {
            for ky in 0..kh {
                let taps = Taps {
                    tile: unsafe { tile.as_ptr().add(c * d.tile_plane() + ky * d.tile_row()) },
                    row: d.tile_row(),
                    dy,
                    dy_channel: by.channel,
                    outputs: d.outputs,
                    lanes: unsafe { lanes.as_mut_ptr().add((c * kh + ky) * kw * LANES) },
                    lane_channel: d.channels * kh * kw,
                    rows: d.rows_of_tap(ky),
                    width: d.out_size()[1],
                    taps: kw,
                };
                #[cfg(target_arch = "x86_64")]
                if fast {
                    unsafe { avx2::taps(&taps) };
                    continue;
                }
                unsafe { portable_taps(&taps) };
            }
        }
    }
    for (w, lanes) in lanes.chunks_exact(LANES).enumerate() {
        let total = lanes.iter().fold(0.0f32, |total, &v| total + v);
        // SAFETY: `sum` holds a float per weight.
        unsafe { *sum.add(w) += total };
    }
}

/// The output gradient's planes against one row of kernel taps of one input plane: `lanes`
/// holds a vector of partial sums per weight, from the first output channel's first tap of this
/// row, `lane_channel` weights apart from one output channel to the next; `tile` is the padded
/// plane from the taps' kernel row; `dy` the first output channel's gradient plane.
struct Taps {
    tile: *const f32,
    row: usize,
    dy: *const f32,
    dy_channel: usize,
    outputs: usize,
    lanes: *mut f32,
    lane_channel: usize,
    /// The output rows whose inputs at this kernel row are inside the plane.
    rows: std::ops::Range<usize>,
    width: usize,
    taps: usize,
}

/// `Taps` in plain loops, lane by lane as the vectors add.
///
/// # Safety
/// As `run_weight`'s.
unsafe fn portable_taps(t: &Taps) {
    for o in 0..t.outputs {
        for tap in 0..t.taps {
            for y in t.rows.clone() {
                for x in 0..t.width {
                    // SAFETY: inside the planes, the tile and the taps' lanes.
                    unsafe {
                        let g = *t.dy.add(o * t.dy_channel + y * t.width + x);
                        let product = g * *t.tile.add(y * t.row + x + tap);
                        *t.lanes.add((o * t.lane_channel + tap) * LANES + x % LANES) += product;
                    }
                }
            }
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

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    /// Elsewhere than x86-64 the portable loops run.
    pub fn available() -> bool {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Direct, Place, Taps, LANES};
    use std::arch::x86_64::*;

    /// Calls `f::<A, B>(args)` for a block of `(A, B)`: one or two (vectors or channels) × up
    /// to `ACCUMULATORS / A` (channels or taps), each shape its own code.
    macro_rules! by_block {
        ($shape:expr, $f:ident $args:tt) => {
            by_block!(@arms $shape, $f $args; 1: 1 2 3 4 5 6 7 8 9 10 11 12; 2: 1 2 3 4 5 6;)
        };
        (@arms $shape:expr, $f:ident $args:tt; $($a:literal: $($b:literal)*;)*) => {
            match $shape {
                $($(($a, $b) => unsafe { $f::<$a, $b> $args },)*)*
                (a, b) => unreachable!("a block of {a} × {b}"),
            }
        };
    }

    /// Whether this processor has AVX2 and FMA (the standard library caches the answer).
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// Accumulators in a block: `VECTORS` vectors of columns × `OUTPUTS` channels ≤ 12 of the
    /// 16 registers, the rest for the block's inputs (one per vector) and a weight. Blocks of
    /// at most two vectors: LeNet's first layer (1 → 6 channels, rows of 28) ran at 121 GFLOP/s
    /// on one core with blocks of 2 × 6, and 55 with 4 × 3, whose inputs did not fit beside
    /// the accumulators.
    const ACCUMULATORS: usize = 12;
    const VECTORS: usize = 2;

    /// One image: each output row in runs of up to `VECTORS` vectors of columns, each run in
    /// blocks of channels.
    ///
    /// # Safety
    /// As `run`'s, on a processor with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn image(d: &Direct, p: &Place, out_height: usize) {
        for y in 0..out_height {
            let mut x = 0;
            while x < p.out_width {
                let vectors = (p.out_width - x).div_ceil(LANES).min(VECTORS);
                let most = ACCUMULATORS / vectors;
                let mut o = 0;
                while o < d.outputs {
                    let outputs = most.min(d.outputs - o);
                    by_block!((vectors, outputs), kernel(d, p, [y, x, o]));
                    o += outputs;
                }
                x += vectors * LANES;
            }
        }
    }

    /// `Taps`: blocks of up to two output channels × up to `ACCUMULATORS / channels` taps,
    /// each output row's vectors of the gradient against the tile row shifted by each tap (the
    /// row's last vector loaded masked, zeros past its end).
    ///
    /// # Safety
    /// As `run_weight`'s, on a processor with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn taps(t: &Taps) {
        let mut o = 0;
        while o < t.outputs {
            let outputs = 2.min(t.outputs - o);
            let mut first = 0;
            while first < t.taps {
                let taps = (ACCUMULATORS / outputs).min(t.taps - first);
                by_block!((outputs, taps), tap_block(t, o, first));
                first += taps;
            }
            o += outputs;
        }
    }

    /// Output channels `o..o + OUTPUTS` × taps `first..first + TAPS`: one accumulator each,
    /// beside a vector of each channel's gradient and the tile's.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tap_block<const OUTPUTS: usize, const TAPS: usize>(t: &Taps, o: usize, first: usize) {
        let lanes = |j: usize, tap: usize| (j * t.lane_channel + (first + tap)) * LANES;
        let mut acc = [[_mm256_setzero_ps(); TAPS]; OUTPUTS];
        // SAFETY (all blocks): the taps' lanes, rows inside the plane, columns inside the
        // tile row (whole vectors of output columns plus the kernel's width).
        for (j, acc) in acc.iter_mut().enumerate() {
            for (tap, acc) in acc.iter_mut().enumerate() {
                *acc = unsafe { _mm256_loadu_ps(t.lanes.add(lanes(o + j, tap))) };
            }
        }
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for y in t.rows.clone() {
            let line = unsafe { t.tile.add(y * t.row + first) };
            let mut x = 0;
            while x < t.width {
                let left = (t.width - x).min(LANES) as i32;
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), index);
                let mut g = [_mm256_setzero_ps(); OUTPUTS];
                for (j, g) in g.iter_mut().enumerate() {
                    let at = unsafe { t.dy.add((o + j) * t.dy_channel + y * t.width + x) };
                    *g = if left == LANES as i32 {
                        unsafe { _mm256_loadu_ps(at) }
                    } else {
                        unsafe { _mm256_maskload_ps(at, mask) }
                    };
                }
                for tap in 0..TAPS {
                    let v = unsafe { _mm256_loadu_ps(line.add(x + tap)) };
                    for (acc, g) in acc.iter_mut().zip(&g) {
                        acc[tap] = _mm256_fmadd_ps(*g, v, acc[tap]);
                    }
                }
                x += LANES;
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (tap, acc) in acc.iter().enumerate() {
                unsafe { _mm256_storeu_ps(t.lanes.add(lanes(o + j, tap)), *acc) };
            }
        }
    }

    /// Outputs `o..o + OUTPUTS` of row `y`, columns `x..x + 8·VECTORS` (those inside the row):
    /// the sum over channels, kernel rows and kernel columns, in that order.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const VECTORS: usize, const OUTPUTS: usize>(
        d: &Direct,
        p: &Place,
        [y, x, o]: [usize; 3],
    ) {
        let [kh, kw] = d.kernel;
        let mut acc = [[_mm256_setzero_ps(); VECTORS]; OUTPUTS];
        for c in 0..d.channels {
            for ky in d.rows(y) {
                // SAFETY: rows y + ky < the padded height, columns x + kx + 8·VECTORS ≤ the
                // tile row; taps and channels inside the packed weight.
                let line = unsafe { p.tile.add(c * p.plane + (y + ky) * p.row + x) };
                let taps = unsafe { p.weight.add((c * kh + ky) * kw * d.outputs + o) };
                for kx in 0..kw {
                    let mut v = [_mm256_setzero_ps(); VECTORS];
                    for (i, v) in v.iter_mut().enumerate() {
                        *v = unsafe { _mm256_loadu_ps(line.add(kx + i * LANES)) };
                    }
                    let w = unsafe { taps.add(kx * d.outputs) };
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let wj = unsafe { _mm256_broadcast_ss(&*w.add(j)) };
                        for (acc, v) in acc.iter_mut().zip(&v) {
                            *acc = _mm256_fmadd_ps(wj, *v, *acc);
                        }
                    }
                }
            }
        }
        let left = p.out_width - x;
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: channel o + j < outputs, columns inside the row (masked at its end).
            let to = unsafe { p.out.add((o + j) * p.out_channel + y * p.out_width + x) };
            for (i, acc) in acc.iter().enumerate() {
                let first = i * LANES;
                if first + LANES <= left {
                    unsafe { _mm256_storeu_ps(to.add(first), *acc) };
                } else if first < left {
                    let lanes = (left - first) as i32;
                    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), index);
                    unsafe { _mm256_maskstore_ps(to.add(first), mask, *acc) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            for fast in [false, avx2::available()] {
                // Added to what is there.
                let mut sum = vec![1.0f32; weights];
                let mut scratch = vec![f32::NAN; d.scratch_floats().unwrap()];
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
                        fast,
                    )
                };
                for (got, want) in sum.iter().zip(&want) {
                    assert!(
                        (*got as f64 - 1.0 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{d:?}, fast {fast}: {got} against 1 + {want}"
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
            for fast in [false, avx2::available()] {
                let mut out = vec![f32::NAN; images * outputs * oh * ow];
                let mut scratch = vec![f32::NAN; d.scratch_floats().unwrap()];
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
                        fast,
                    )
                };
                for (got, want) in out.iter().zip(&want) {
                    assert!(
                        (*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{d:?}, fast {fast}: {got} against {want}"
                    );
                }
            }
        }
    }
}

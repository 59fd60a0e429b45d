//! The direct convolution's kernels for AVX-512: 16 lanes, 32 registers.

use super::{even_blocks, Direct, Place, Taps};
use std::arch::x86_64::*;

const LANES: usize = 16;

/// Whether this processor has AVX-512 (the standard library caches the answer).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Accumulators in a block: 24 of the 32 registers, the rest for the block's inputs and
/// a weight. A block of 2 rows × 2 vectors of columns × 6 channels loads 4 vectors and 6
/// weights for 24 multiply-adds.
const ACCUMULATORS: usize = 24;
/// Output rows, and vectors of columns of a row, in a block.
const ROWS: usize = 2;
const COLUMNS: usize = 2;
/// Kernel columns of a weight-gradient block (wider kernels are cut into several).
const TAPS: usize = 6;

/// Output channels of a weight-gradient block of `taps` kernel columns: as many as fit
/// the accumulators, and at most 8 (one gradient vector each beside them).
fn outputs_most(taps: usize) -> usize {
    (ACCUMULATORS / taps).min(8)
}

/// Output channels of a weight-gradient block, evenly.
pub fn output_block(d: &Direct) -> usize {
    let taps = even_blocks(d.kernel[1], TAPS);
    even_blocks(d.outputs, outputs_most(taps))
}

/// The lanes of a vector from column `x` of a row of `width` that lie inside it.
fn inside(width: usize, x: usize) -> __mmask16 {
    let left = width - x;
    if left >= LANES {
        u16::MAX
    } else {
        (1u16 << left) - 1
    }
}

/// One image: blocks of up to `ROWS` output rows × `COLUMNS` vectors of their columns,
/// each in even blocks of channels.
///
/// # Safety
/// As `run`'s, on a processor with AVX-512.
#[target_feature(enable = "avx512f")]
pub unsafe fn image(d: &Direct, p: &Place, out_height: usize) {
    for y in (0..out_height).step_by(ROWS) {
        let rows = (out_height - y).min(ROWS);
        for x in (0..p.out_width).step_by(COLUMNS * LANES) {
            let columns = (p.out_width - x).div_ceil(LANES).min(COLUMNS);
            let vectors = rows * columns;
            let size = even_blocks(d.outputs, ACCUMULATORS / vectors);
            let mut o = 0;
            while o < d.outputs {
                let outputs = size.min(d.outputs - o);
                let block = Block { y, x, o, columns };
                by_block!((vectors, outputs), kernel(d, p, block);
                    1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24;
                    2: 1 2 3 4 5 6 7 8 9 10 11 12; 4: 1 2 3 4 5 6;);
                o += outputs;
            }
        }
    }
}

/// A block's first output (row `y`, column `x`, channel `o`), and how many vectors of
/// columns each of its rows has.
#[derive(Clone, Copy)]
struct Block {
    y: usize,
    x: usize,
    o: usize,
    columns: usize,
}

/// Outputs `o..o + OUTPUTS` at `VECTORS` vectors, `columns` to a row, from row `y` and
/// column `x` (their columns inside the row): the sum over channels, kernel rows and kernel
/// columns, in that order. The block reads the kernel rows any of its rows needs (the
/// tile's padding rows are zeros).
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const VECTORS: usize, const OUTPUTS: usize>(d: &Direct, p: &Place, block: Block) {
    let Block { y, x, o, columns } = block;
    let [kh, kw] = d.kernel;
    let (first, last) = (d.rows(y), d.rows(y + VECTORS / columns - 1));
    let kernel_rows = first.start.min(last.start)..first.end.max(last.end);
    // Each vector's row and first column, from the block's first.
    let at: [[usize; 2]; VECTORS] = std::array::from_fn(|i| [i / columns, i % columns * LANES]);
    let mut acc = [[_mm512_setzero_ps(); VECTORS]; OUTPUTS];
    for c in 0..d.channels {
        for ky in kernel_rows.clone() {
            // SAFETY: rows y + ky + the block's rows < the padded height, columns
            // x + kx + 16·columns ≤ the tile row; taps and channels inside the packed
            // weight.
            let line = unsafe { p.tile.add(c * p.plane + (y + ky) * p.row + x) };
            let taps = unsafe { p.weight.add((c * kh + ky) * kw * d.outputs + o) };
            for kx in 0..kw {
                let mut v = [_mm512_setzero_ps(); VECTORS];
                for (v, [row, column]) in v.iter_mut().zip(at) {
                    *v = unsafe { _mm512_loadu_ps(line.add(row * p.row + column + kx)) };
                }
                let w = unsafe { taps.add(kx * d.outputs) };
                for (j, acc) in acc.iter_mut().enumerate() {
                    let wj = _mm512_set1_ps(unsafe { *w.add(j) });
                    for (acc, v) in acc.iter_mut().zip(&v) {
                        *acc = _mm512_fmadd_ps(wj, *v, *acc);
                    }
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        // SAFETY: channel o + j < outputs, rows inside the plane, columns inside the row
        // (masked at its end).
        let to = unsafe { p.out.add((o + j) * p.out_channel + y * p.out_width + x) };
        for (acc, [row, column]) in acc.iter().zip(at) {
            let mask = inside(p.out_width, x + column);
            unsafe { _mm512_mask_storeu_ps(to.add(row * p.out_width + column), mask, *acc) };
        }
    }
}

/// `Taps`: even blocks of up to `TAPS` taps × up to `ACCUMULATORS / taps` output channels
/// (eight at most, as many gradient vectors as fit beside the accumulators).
///
/// # Safety
/// As `run_weight`'s, on a processor with AVX-512.
#[target_feature(enable = "avx512f")]
pub unsafe fn taps(t: &Taps) {
    let tap_size = even_blocks(t.taps, TAPS);
    let mut first = 0;
    while first < t.taps {
        let taps = tap_size.min(t.taps - first);
        let size = even_blocks(t.outputs, outputs_most(taps));
        let mut o = 0;
        while o < t.outputs {
            let outputs = size.min(t.outputs - o);
            by_block!((outputs, taps), tap_block(t, o, first);
                1: 1 2 3 4 5 6; 2: 1 2 3 4 5 6; 3: 1 2 3 4 5 6; 4: 1 2 3 4 5 6;
                5: 1 2 3 4; 6: 1 2 3 4; 7: 1 2 3; 8: 1 2 3;);
            o += outputs;
        }
        first += taps;
    }
}

/// Output channels `o..o + OUTPUTS` × taps `first..first + TAPS`: one accumulator each,
/// beside a vector of each channel's gradient and the tile's. Lanes past the end of a row
/// are left as they are (a masked multiply-add), so what lies past it never enters a sum.
#[target_feature(enable = "avx512f")]
unsafe fn tap_block<const OUTPUTS: usize, const TAPS: usize>(t: &Taps, o: usize, first: usize) {
    let mut acc = [[_mm512_setzero_ps(); TAPS]; OUTPUTS];
    // SAFETY (all blocks): the taps' weights, rows inside the plane, columns inside the
    // tile row (whole vectors of output columns plus the kernel's width), gradient
    // columns inside the row (masked at its end).
    // The loops over images and rows are written out here as in the AVX2 kernel: an
    // iterator over both, shared by the two, made the accumulators spill in the loop.
    for image in 0..t.images {
        let (tile, dy) = unsafe {
            (
                t.tile.add(image * t.tile_image),
                t.dy.add(image * t.dy_image),
            )
        };
        for y in t.rows.clone() {
            let line = unsafe { tile.add(y * t.row + first) };
            let mut x = 0;
            while x < t.width {
                let mask = inside(t.width, x);
                let mut v = [_mm512_setzero_ps(); TAPS];
                for (tap, v) in v.iter_mut().enumerate() {
                    *v = unsafe { _mm512_loadu_ps(line.add(x + tap)) };
                }
                // One channel's gradient at a time: TAPS + 1 registers beside the
                // accumulators, where all the block's gradients would spill them.
                for (j, acc) in acc.iter_mut().enumerate() {
                    let at = unsafe { dy.add((o + j) * t.dy_channel + y * t.width + x) };
                    let g = unsafe { _mm512_maskz_loadu_ps(mask, at) };
                    for (acc, v) in acc.iter_mut().zip(&v) {
                        *acc = _mm512_fmadd_ps(g, *v, *acc);
                    }
                }
                x += LANES;
            }
        }
    }
    unsafe { add_lanes(t, o, first, &acc) };
}

/// Adds each accumulator's lanes to its weight. Not inlined into `tap_block`: there the
/// reduction's shuffles made the register allocator spill the accumulators in the loop.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn add_lanes<const OUTPUTS: usize, const TAPS: usize>(
    t: &Taps,
    o: usize,
    first: usize,
    acc: &[[__m512; TAPS]; OUTPUTS],
) {
    for (j, acc) in acc.iter().enumerate() {
        for (tap, acc) in acc.iter().enumerate() {
            // SAFETY: the weight (o + j, first + tap) of the taps' row.
            let weight = unsafe { t.sum.add((o + j) * t.sum_output + first + tap) };
            unsafe { *weight += _mm512_reduce_add_ps(*acc) };
        }
    }
}

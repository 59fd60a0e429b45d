//! The direct convolution's kernels for AVX2 with FMA: 8 lanes, 16 registers.

use super::{Direct, Place, Taps};
use std::arch::x86_64::*;

const LANES: usize = 8;

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
                by_block!((vectors, outputs), kernel(d, p, [y, x, o]);
                    1: 1 2 3 4 5 6 7 8 9 10 11 12; 2: 1 2 3 4 5 6;);
                o += outputs;
            }
            x += vectors * LANES;
        }
    }
}

/// Output channels of a weight-gradient block.
pub fn output_block(d: &Direct) -> usize {
    d.outputs.min(2)
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
            by_block!((outputs, taps), tap_block(t, o, first);
                1: 1 2 3 4 5 6 7 8 9 10 11 12; 2: 1 2 3 4 5 6;);
            first += taps;
        }
        o += outputs;
    }
}

/// Output channels `o..o + OUTPUTS` × taps `first..first + TAPS`: one accumulator each,
/// beside a vector of each channel's gradient and the tile's.
#[target_feature(enable = "avx2,fma")]
unsafe fn tap_block<const OUTPUTS: usize, const TAPS: usize>(t: &Taps, o: usize, first: usize) {
    let mut acc = [[_mm256_setzero_ps(); TAPS]; OUTPUTS];
    // SAFETY (all blocks): the taps' weights, rows inside the plane, columns inside the
    // tile row (whole vectors of output columns plus the kernel's width).
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
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
                let left = (t.width - x).min(LANES) as i32;
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), index);
                let mut g = [_mm256_setzero_ps(); OUTPUTS];
                for (j, g) in g.iter_mut().enumerate() {
                    let at = unsafe { dy.add((o + j) * t.dy_channel + y * t.width + x) };
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
    }
    for (j, acc) in acc.iter().enumerate() {
        for (tap, acc) in acc.iter().enumerate() {
            let mut lanes = [0.0f32; LANES];
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
            let weight = unsafe { t.sum.add((o + j) * t.sum_output + first + tap) };
            unsafe { *weight += lanes.iter().sum::<f32>() };
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

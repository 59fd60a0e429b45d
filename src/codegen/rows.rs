//! Sigmoid and tanh over rows, which generated code calls (`netc_rows`) for a map of the form
//! `f(x)` or `f(x + c)`, with `c` one value for the row (a convolution's bias over a channel's
//! plane) or a row of its own (a dense layer's bias). Cranelift's vectors are four lanes wide
//! on x86-64; here the same operations run on eight with AVX2, where exp's polynomial made
//! LeNet's first layer cost more in its sigmoid than in its convolution. The operations are
//! `math::exp`'s and `math::tanh`'s, in the same order and without fused multiply-adds, so
//! results are the interpreter's bit for bit; without AVX2 the scalar functions of `math` run
//! (maps take this path only where AVX2 is present: see `vectorized`).
#![allow(unsafe_code)]

use crate::math;

/// A row's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Sigmoid,
    Tanh,
}

/// What `netc_rows` computes: the activation, and what it adds to `x` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    pub activation: Activation,
    pub add: Option<Add>,
}

/// `x + c` before the activation: `c` one value for the row (a convolution's bias on one
/// channel's plane) or a row of its own (a dense layer's bias), and the operands' order, so
/// that a NaN keeps its payload as in the map this replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Add {
    pub c_first: bool,
    pub row: bool,
}

impl Rows {
    /// The number generated code passes.
    pub fn code(self) -> i64 {
        let tanh = i64::from(self.activation == Activation::Tanh);
        let add = self.add.map_or(0, |add| {
            2 | (i64::from(add.c_first) << 2) | (i64::from(add.row) << 3)
        });
        tanh | add
    }

    fn of(code: i64) -> Rows {
        let activation = if code & 1 == 0 {
            Activation::Sigmoid
        } else {
            Activation::Tanh
        };
        let add = (code & 2 != 0).then_some(Add {
            c_first: code & 4 != 0,
            row: code & 8 != 0,
        });
        Rows { activation, add }
    }

    /// One element, as the interpreter computes it.
    fn scalar(self, x: f32, c: f32) -> f32 {
        let x = match self.add {
            None => x,
            Some(Add { c_first: false, .. }) => x + c,
            Some(Add { c_first: true, .. }) => c + x,
        };
        match self.activation {
            Activation::Sigmoid => 1.0 / (1.0 + math::exp(-x)),
            Activation::Tanh => math::tanh(x),
        }
    }
}

/// Whether rows run on vectors wider than generated code's (AVX2 on x86-64).
pub fn vectorized() -> bool {
    avx2::available()
}

/// `out[i] = f(x[i])`, or `f(x[i] + c)`, or `f(x[i] + c_row[i])`, for `i < len`, as `code`
/// says (see `Rows::code`); `c_row` is read only in the last case. `out` may be `x`. Called by
/// generated code with rows inside the step's checked buffers.
pub extern "C" fn netc_rows(
    code: i64,
    x: *const f32,
    c: f32,
    c_row: *const f32,
    out: *mut f32,
    len: i64,
) {
    let rows = Rows::of(code);
    let len = usize::try_from(len).unwrap_or(0);
    let along = rows.add.is_some_and(|add| add.row);
    let mut done = 0;
    if vectorized() {
        // SAFETY: the processor has AVX2; `x`, `out` and (when read) `c_row` hold `len`
        // floats (see above).
        done = unsafe { avx2::rows(rows, x, (c, c_row), out, len) };
    }
    for i in done..len {
        // SAFETY: `i < len`, within every row; reads and writes go through the pointers, so
        // `out` may be `x`.
        unsafe {
            let c = if along { *c_row.add(i) } else { c };
            *out.add(i) = rows.scalar(*x.add(i), c);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    pub fn available() -> bool {
        false
    }

    pub unsafe fn rows(
        _: super::Rows,
        _: *const f32,
        _: (f32, *const f32),
        _: *mut f32,
        _: usize,
    ) -> usize {
        0
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Activation, Add, Rows};
    use crate::math::{
        EXP_HI, EXP_LO, EXP_POLY, LN2_HI, LN2_LO, LOG2E, ROUND, TANH_POLY, TANH_SMALL,
    };
    use std::arch::x86_64::*;

    /// Whether this processor has AVX2 (the standard library caches the answer).
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
    }

    /// The row in vectors of eight, the last one through a copy on the stack when the row
    /// does not fill it, and how many elements that covered (all of them). (Masked stores
    /// would do the last one in place, but on AMD's processors they cost more than the whole
    /// activation.)
    ///
    /// # Safety
    /// The processor has AVX2; `x`, `out` and, when `rows` adds a row, `c.1` hold `len`
    /// floats.
    #[target_feature(enable = "avx2")]
    pub unsafe fn rows(
        rows: Rows,
        x: *const f32,
        (c, c_row): (f32, *const f32),
        out: *mut f32,
        len: usize,
    ) -> usize {
        let c = splat(c);
        // One vector of `x` and, when the row adds a row, of `c_row`.
        let vector = |v: __m256, row: __m256| {
            let v = match rows.add {
                None => v,
                Some(Add {
                    c_first,
                    row: along,
                }) => {
                    let c = if along { row } else { c };
                    if c_first {
                        _mm256_add_ps(c, v)
                    } else {
                        _mm256_add_ps(v, c)
                    }
                }
            };
            match rows.activation {
                Activation::Sigmoid => sigmoid(v),
                Activation::Tanh => tanh(v),
            }
        };
        let along = rows.add.is_some_and(|add| add.row);
        // SAFETY (both loads): `i + 8 <= len`, and `c_row` is read only when it is a row.
        let load_row = |i: usize| unsafe {
            if along {
                _mm256_loadu_ps(c_row.add(i))
            } else {
                c
            }
        };
        let whole = len - len % 8;
        for i in (0..whole).step_by(8) {
            // SAFETY: `i + 8 <= len`; the vector is read before it is written.
            unsafe { _mm256_storeu_ps(out.add(i), vector(_mm256_loadu_ps(x.add(i)), load_row(i))) };
        }
        if whole < len {
            let left = len - whole;
            let (mut last, mut last_row) = ([0.0f32; 8], [0.0f32; 8]);
            // SAFETY: elements `whole..len` are in every row, and `left < 8`.
            unsafe {
                std::ptr::copy(x.add(whole), last.as_mut_ptr(), left);
                if along {
                    std::ptr::copy(c_row.add(whole), last_row.as_mut_ptr(), left);
                }
                let row = _mm256_loadu_ps(last_row.as_ptr());
                let row = if along { row } else { c };
                let y = vector(_mm256_loadu_ps(last.as_ptr()), row);
                _mm256_storeu_ps(last.as_mut_ptr(), y);
                std::ptr::copy(last.as_ptr(), out.add(whole), left);
            }
        }
        len
    }

    #[target_feature(enable = "avx2")]
    fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }

    /// `1 / (1 + exp(-x))`.
    #[target_feature(enable = "avx2")]
    fn sigmoid(x: __m256) -> __m256 {
        let minus = _mm256_xor_ps(x, splat(-0.0));
        let one = splat(1.0);
        _mm256_div_ps(one, _mm256_add_ps(one, exp(minus)))
    }

    /// `math::exp`, operation for operation.
    #[target_feature(enable = "avx2")]
    fn exp(x: __m256) -> __m256 {
        // `if x < lo { lo } else { x }` is `max(lo, x)`, which gives its second operand unless
        // the first is greater: a NaN stays. Likewise `min(hi, x)`.
        let x = _mm256_max_ps(splat(EXP_LO), x);
        let x = _mm256_min_ps(splat(EXP_HI), x);
        let round = splat(ROUND);
        let sum = _mm256_add_ps(_mm256_mul_ps(x, splat(LOG2E)), round);
        let k = _mm256_sub_ps(sum, round);
        let r = _mm256_sub_ps(x, _mm256_mul_ps(k, splat(LN2_HI)));
        let r = _mm256_sub_ps(r, _mm256_mul_ps(k, splat(LN2_LO)));
        let p = (EXP_POLY[1..].iter()).fold(splat(EXP_POLY[0]), |p, &c| {
            _mm256_add_ps(_mm256_mul_ps(p, r), splat(c))
        });
        let y = _mm256_mul_ps(p, _mm256_mul_ps(r, r));
        let y = _mm256_add_ps(_mm256_add_ps(y, r), splat(1.0));
        let k = _mm256_sub_epi32(
            _mm256_castps_si256(sum),
            _mm256_set1_epi32(ROUND.to_bits() as i32),
        );
        let half = _mm256_srai_epi32::<1>(k);
        let rest = _mm256_sub_epi32(k, half);
        let pow2 = |k: __m256i| {
            let biased = _mm256_add_epi32(k, _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        };
        _mm256_mul_ps(_mm256_mul_ps(y, pow2(half)), pow2(rest))
    }

    /// `math::tanh`, operation for operation: both branches, then a select.
    #[target_feature(enable = "avx2")]
    fn tanh(x: __m256) -> __m256 {
        let sign = splat(-0.0);
        let a = _mm256_andnot_ps(sign, x);
        let e = exp(_mm256_add_ps(a, a));
        let (one, two) = (splat(1.0), splat(2.0));
        let magnitude = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
        let large = _mm256_or_ps(_mm256_andnot_ps(sign, magnitude), _mm256_and_ps(sign, x));
        let z = _mm256_mul_ps(x, x);
        let q = (TANH_POLY[1..].iter()).fold(splat(TANH_POLY[0]), |q, &c| {
            _mm256_add_ps(_mm256_mul_ps(q, z), splat(c))
        });
        let small = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(q, z), x), x);
        let is_large = _mm256_cmp_ps::<_CMP_GT_OQ>(a, splat(TANH_SMALL));
        _mm256_blendv_ps(small, large, is_large)
    }
}

#[cfg(test)]
mod tests {
    use super::{netc_rows, Activation, Add, Rows};

    /// Rows of every length up to three vectors and a tail, over values that reach both ends
    /// of exp's clamp, tanh's two branches, signed zeros, infinities and NaN, with every kind
    /// of `c`, against the scalar functions the interpreter calls, bit for bit.
    #[test]
    fn rows_are_the_interpreters_bits() {
        let specials = [
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            0.625,
            -0.625,
            0.624_999_9,
            88.9,
            89.5,
            -103.9,
            -104.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut values: Vec<f32> = specials.to_vec();
        values.extend((0..2000).map(|i| (i as f32 * 0.618_034).sin() * 12.0 * (i % 7) as f32));
        let c_row: Vec<f32> = values.iter().rev().map(|v| v * 0.5 - 1.0).collect();
        let adds = [false, true]
            .into_iter()
            .flat_map(|c_first| [false, true].map(|row| Some(Add { c_first, row })));
        for activation in [Activation::Sigmoid, Activation::Tanh] {
            for add in adds.clone().chain([None]) {
                let rows = Rows { activation, add };
                assert_eq!(Rows::of(rows.code()), rows);
                let along = add.is_some_and(|a| a.row);
                for c in [0.0, -0.0, 0.37, -2.5] {
                    for len in (0..27).chain([values.len()]) {
                        let x = &values[..len];
                        let mut out = vec![f32::NAN; len];
                        let (code, p) = (rows.code(), c_row.as_ptr());
                        netc_rows(code, x.as_ptr(), c, p, out.as_mut_ptr(), len as i64);
                        for (i, (&x, &y)) in x.iter().zip(&out).enumerate() {
                            let c = if along { c_row[i] } else { c };
                            let want = rows.scalar(x, c);
                            assert_eq!(
                                y.to_bits(),
                                want.to_bits(),
                                "{rows:?} c = {c}, x[{i}] = {x}: {y} against {want}"
                            );
                        }
                    }
                }
                // In place.
                let mut inout = values.clone();
                let p = inout.as_mut_ptr();
                netc_rows(rows.code(), p, 0.5, c_row.as_ptr(), p, inout.len() as i64);
                for (i, (x, y)) in values.iter().zip(&inout).enumerate() {
                    let c = if along { c_row[i] } else { 0.5 };
                    assert_eq!(y.to_bits(), rows.scalar(*x, c).to_bits());
                }
            }
        }
    }

    /// The scalar form is the interpreter's sigmoid and tanh (`1 / (1 + exp(-x))`, `tanh`).
    #[test]
    fn the_scalar_form_is_the_interpreters() {
        use crate::tensor::Real;
        for x in [-3.0f32, -0.1, 0.0, 0.7, 5.0] {
            let rows = |activation| Rows {
                activation,
                add: None,
            };
            let sigmoid = rows(Activation::Sigmoid).scalar(x, 0.0);
            assert_eq!(sigmoid, 1.0 / (1.0 + Real::exp(-x)));
            assert_eq!(rows(Activation::Tanh).scalar(x, 0.0), Real::tanh(x));
        }
    }
}

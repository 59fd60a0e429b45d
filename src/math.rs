//! netc's own f32 exponential and hyperbolic tangent, shared by both engines. The interpreter computes `exp` (and so
//! sigmoid and softmax) and `tanh` in f32 with these functions, and compiled code emits the
//! same operations in the same order, four lanes at a time, so the two agree bit for bit
//! without a call per element. `exp` is Cephes' `expf`: range reduction by ln 2 in two parts,
//! a degree-5 polynomial, then a power of two. `tanh` is Cephes' `tanhf`: an odd polynomial
//! near zero, `1 − 2/(e^{2|x|} + 1)` elsewhere.

/// Inputs are clamped to this range first: below it the result is 0, above it infinity.
pub const EXP_LO: f32 = -104.0;
pub const EXP_HI: f32 = 89.0;
pub const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 · 2^23: adding it to a float of magnitude below 2^22 rounds it to an integer (ties to
/// even), which then sits in the low bits of the sum's mantissa.
pub const ROUND: f32 = 12_582_912.0;
/// ln 2 split so that `k · LN2_HI` is exact for every `k` the clamp allows.
pub const LN2_HI: f32 = 0.693_359_4;
pub const LN2_LO: f32 = -2.121_944_4e-4;
/// Coefficients of exp(r) ≈ 1 + r + r²·p(r) on [-ln 2 / 2, ln 2 / 2], highest degree first.
pub const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// e^x in f32, within 2 ulp of the exact value for normal results (NaN stays NaN).
pub fn exp(x: f32) -> f32 {
    // Compare-and-select rather than min/max, so a NaN passes through as it does in the
    // compiled version.
    let x = if x < EXP_LO { EXP_LO } else { x };
    let x = if x > EXP_HI { EXP_HI } else { x };
    // k = round(x · log2 e), as a float and, from the sum's bits, as an integer.
    let sum = x * LOG2E + ROUND;
    let k = sum - ROUND;
    let r = x - k * LN2_HI;
    let r = r - k * LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, &c| p * r + c);
    let y = p * (r * r) + r + 1.0;
    // 2^k in two factors, so that each is a normal float even where 2^k is not. (For a NaN the
    // integer is meaningless and the product stays NaN.)
    let k = (sum.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = k >> 1;
    y * pow2(half) * pow2(k.wrapping_sub(half))
}

/// Below this magnitude `tanh` is the polynomial.
pub const TANH_SMALL: f32 = 0.625;
/// tanh(x) ≈ x + x·z·q(z) with z = x² on |x| < 0.625, highest degree first.
pub const TANH_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    0.133_314_42,
    -0.333_332_8,
];

/// tanh(x) in f32, within 3 ulp of the exact value (NaN stays NaN). Both branches are
/// computed and one is selected, as the compiled version does on four lanes.
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let e = exp(a + a);
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    let z = x * x;
    let q = TANH_POLY[1..].iter().fold(TANH_POLY[0], |q, &c| q * z + c);
    let small = q * z * x + x;
    if a > TANH_SMALL {
        large
    } else {
        small
    }
}

fn pow2(k: i32) -> f32 {
    f32::from_bits((k.wrapping_add(127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::{exp, tanh};

    /// Distance in units of the last place between two finite floats of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    /// The largest error of `f` against `exact` (rounded from f64) on `from..to` in steps of
    /// `step`, and where it is.
    fn worst(
        f: fn(f32) -> f32,
        exact: fn(f64) -> f64,
        from: f32,
        to: f32,
        step: f32,
    ) -> (u32, f32) {
        let mut worst = (0, from);
        let mut x = from;
        while x < to {
            let error = ulps(f(x), exact(x as f64) as f32);
            if error > worst.0 {
                worst = (error, x);
            }
            x += step;
        }
        worst
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_over_the_normal_range() {
        let (error, x) = worst(exp, f64::exp, -87.0, 88.7, 0.000_731);
        assert!(error <= 2, "{error} ulp at x = {x}");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // Subnormal results are approximate but present and ordered.
        let (a, b) = (exp(-100.0), exp(-95.0));
        assert!(a > 0.0 && a < b && b < f32::MIN_POSITIVE);
        assert!(ulps(exp(-1e-7), (-1e-7f64).exp() as f32) <= 1);
    }

    #[test]
    fn tanh_is_within_three_ulp_of_f64() {
        let (error, x) = worst(tanh, f64::tanh, -12.0, 12.0, 0.000_173);
        assert!(error <= 3, "{error} ulp at x = {x}");
    }

    #[test]
    fn tanh_edges() {
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(1e-30), 1e-30);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }
}

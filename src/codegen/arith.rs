//! Arithmetic emitted once for one lane or four (`Width`): constants, selections,
//! polynomials, and netc's own `exp` and `tanh`, operation for operation as `crate::math`
//! computes them, so compiled code and the interpreter agree bit for bit.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// Code emitted once for one lane or four: its types, constants and selections.
#[derive(Clone, Copy)]
pub(super) struct Width {
    pub(super) vector: bool,
}

impl Width {
    pub(super) fn float(self) -> types::Type {
        if self.vector {
            types::F32X4
        } else {
            types::F32
        }
    }

    pub(super) fn int(self) -> types::Type {
        if self.vector {
            types::I32X4
        } else {
            types::I32
        }
    }

    pub(super) fn constant(self, b: &mut FunctionBuilder, v: f32) -> Value {
        let scalar = b.ins().f32const(v);
        if self.vector {
            b.ins().splat(types::F32X4, scalar)
        } else {
            scalar
        }
    }

    pub(super) fn int_constant(self, b: &mut FunctionBuilder, v: i64) -> Value {
        let scalar = b.ins().iconst(types::I32, v);
        if self.vector {
            b.ins().splat(types::I32X4, scalar)
        } else {
            scalar
        }
    }

    /// `if x cc y { then } else { otherwise }`. A float `select` branches; on four lanes the
    /// compare's mask selects without branching.
    pub(super) fn select(
        self,
        b: &mut FunctionBuilder,
        (x, cc, y): (Value, FloatCC, Value),
        then: Value,
        otherwise: Value,
    ) -> Value {
        let c = b.ins().fcmp(cc, x, y);
        if self.vector {
            let mask = b.ins().bitcast(types::F32X4, MemFlagsData::new(), c);
            b.ins().bitselect(mask, then, otherwise)
        } else {
            b.ins().select(c, then, otherwise)
        }
    }

    /// Horner's rule over `coefficients`, highest degree first, as `math` evaluates them.
    pub(super) fn polynomial(
        self,
        b: &mut FunctionBuilder,
        coefficients: &[f32],
        z: Value,
    ) -> Value {
        let mut p = self.constant(b, coefficients[0]);
        for &c in &coefficients[1..] {
            let c = self.constant(b, c);
            let t = b.ins().fmul(p, z);
            p = b.ins().fadd(t, c);
        }
        p
    }
}

/// e^x on one lane or four: the interpreter's `math::exp`, operation for operation.
pub(super) fn exp(b: &mut FunctionBuilder, x: Value, vector: bool) -> Value {
    use crate::math::{EXP_HI, EXP_LO, EXP_POLY, LN2_HI, LN2_LO, LOG2E, ROUND};
    let w = Width { vector };
    // `if x < bound { bound } else { x }`, which keeps a NaN as it is.
    let clamp = |b: &mut FunctionBuilder, x: Value, cc: FloatCC, bound: f32| {
        let bound = w.constant(b, bound);
        w.select(b, (x, cc, bound), bound, x)
    };
    let x = clamp(b, x, FloatCC::LessThan, EXP_LO);
    let x = clamp(b, x, FloatCC::GreaterThan, EXP_HI);
    let log2e = w.constant(b, LOG2E);
    let scaled = b.ins().fmul(x, log2e);
    let round = w.constant(b, ROUND);
    let sum = b.ins().fadd(scaled, round);
    let k = b.ins().fsub(sum, round);
    let mut r = x;
    for part in [LN2_HI, LN2_LO] {
        let c = w.constant(b, part);
        let t = b.ins().fmul(k, c);
        r = b.ins().fsub(r, t);
    }
    let p = w.polynomial(b, &EXP_POLY, r);
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fmul(p, r2);
    let y = b.ins().fadd(y, r);
    let one = w.constant(b, 1.0);
    let mut y = b.ins().fadd(y, one);
    let bits = b.ins().bitcast(w.int(), MemFlagsData::new(), sum);
    let round_bits = w.int_constant(b, i64::from(ROUND.to_bits()));
    let k = b.ins().isub(bits, round_bits);
    let half = b.ins().sshr_imm_u(k, 1);
    let rest = b.ins().isub(k, half);
    let bias = w.int_constant(b, 127);
    for e in [half, rest] {
        let biased = b.ins().iadd(e, bias);
        let bits = b.ins().ishl_imm_u(biased, 23);
        let factor = b.ins().bitcast(w.float(), MemFlagsData::new(), bits);
        y = b.ins().fmul(y, factor);
    }
    y
}

/// tanh(x) on one lane or four: the interpreter's `math::tanh`, operation for operation.
pub(super) fn tanh(b: &mut FunctionBuilder, x: Value, vector: bool) -> Value {
    use crate::math::{TANH_POLY, TANH_SMALL};
    let w = Width { vector };
    let a = b.ins().fabs(x);
    let twice = b.ins().fadd(a, a);
    let e = exp(b, twice, vector);
    let [one, two] = [1.0, 2.0].map(|v| w.constant(b, v));
    let denominator = b.ins().fadd(e, one);
    let fraction = b.ins().fdiv(two, denominator);
    let magnitude = b.ins().fsub(one, fraction);
    // copysign: the magnitude's bits with x's sign bit.
    let sign_bit = w.int_constant(b, i64::from(0x8000_0000u32));
    let bits = |b: &mut FunctionBuilder, v: Value| b.ins().bitcast(w.int(), MemFlagsData::new(), v);
    let (x_bits, magnitude_bits) = (bits(b, x), bits(b, magnitude));
    let sign = b.ins().band(x_bits, sign_bit);
    let unsigned = b.ins().band_not(magnitude_bits, sign_bit);
    let large = b.ins().bor(unsigned, sign);
    let large = b.ins().bitcast(w.float(), MemFlagsData::new(), large);
    let z = b.ins().fmul(x, x);
    let q = w.polynomial(b, &TANH_POLY, z);
    let qz = b.ins().fmul(q, z);
    let qzx = b.ins().fmul(qz, x);
    let small = b.ins().fadd(qzx, x);
    let limit = w.constant(b, TANH_SMALL);
    w.select(b, (a, FloatCC::GreaterThan, limit), large, small)
}

/// A scalar f32 constant.
pub(super) fn f32_const(b: &mut FunctionBuilder, v: f32) -> Value {
    b.ins().f32const(v)
}

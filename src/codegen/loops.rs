//! Loop builders for generated code: ranges, nests, folds, loops that carry addresses, lane
//! loops of four with a scalar tail, and the small memory helpers every kernel uses.

use super::arith::f32_const;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// Memory flags for the arena and the bound tensors: aligned, never trapping (every address is
/// inside memory checked before the step runs).
pub(super) fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The address of f32 element `index` from `base`.
pub(super) fn element(b: &mut FunctionBuilder, base: Value, index: Value) -> Value {
    let bytes = b.ins().ishl_imm_u(index, 2);
    b.ins().iadd(base, bytes)
}

/// A loop `for i in (start..end).step_by(step)`.
pub(super) fn range(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value),
) {
    let header = b.create_block();
    b.append_block_param(header, types::I64);
    let inner = b.create_block();
    let done = b.create_block();
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, i, end);
    b.ins().brif(more, inner, &[], done, &[]);
    b.switch_to_block(inner);
    body(b, i);
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(header, &[next.into()]);
    b.switch_to_block(done);
}

/// `combine` folded over elements `0..len` from `init`, each read by `load(z, type)`: four
/// lanes at a time while four remain, when `vector`, the lanes then combined in order, then the
/// rest one by one.
pub(super) fn fold_lanes(
    b: &mut FunctionBuilder,
    len: Value,
    init: Value,
    vector: bool,
    load: &mut dyn FnMut(&mut FunctionBuilder, Value, types::Type) -> Value,
    combine: &dyn Fn(&mut FunctionBuilder, Value, Value) -> Value,
) -> Value {
    let mut start = b.ins().iconst(types::I64, 0);
    let mut acc = init;
    if vector {
        let lanes_init = b.ins().splat(types::F32X4, init);
        let whole = b.ins().band_imm_s(len, -4);
        let partial = fold_range(b, start, whole, 4, lanes_init, &mut |b, z, acc| {
            let v = load(b, z, types::F32X4);
            combine(b, acc, v)
        });
        for lane in 0..4 {
            let v = b.ins().extractlane(partial, lane);
            acc = combine(b, acc, v);
        }
        start = whole;
    }
    fold_range(b, start, len, 1, acc, &mut |b, z, acc| {
        let v = load(b, z, types::F32);
        combine(b, acc, v)
    })
}

/// `floats` elements of `partial` added into `out`, four lanes at a time.
pub(super) fn add_into(b: &mut FunctionBuilder, out: Value, partial: Value, floats: Value) {
    let [zero, one] = [0, 1].map(|v| b.ins().iconst(types::I64, v));
    lanes(
        b,
        zero,
        floats,
        true,
        &[out, partial],
        &[one, one],
        &mut |b, _, ty, a| {
            let x = b.ins().load(ty, flags(), a[0], 0);
            let y = b.ins().load(ty, flags(), a[1], 0);
            let sum = b.ins().fadd(x, y);
            b.ins().store(flags(), sum, a[0], 0);
        },
    );
}

/// A loop over `lo..hi` calling `body(z, type, addresses)`: four lanes at a time (type `f32x4`)
/// while four remain, when `vector`, then one at a time (type `f32`). Address `i` starts at
/// `starts[i]` (its value for `z = lo`) and moves `steps[i]` elements per step of `z`. The
/// addresses are carried from one iteration to the next, so nothing is recomputed per element.
#[allow(clippy::type_complexity)]
pub(super) fn lanes(
    b: &mut FunctionBuilder,
    lo: Value,
    hi: Value,
    vector: bool,
    starts: &[Value],
    steps: &[Value],
    body: &mut dyn FnMut(&mut FunctionBuilder, Value, types::Type, &[Value]),
) {
    let bytes = |b: &mut FunctionBuilder, shift: i64| -> Vec<Value> {
        steps
            .iter()
            .map(|&s| b.ins().ishl_imm_u(s, shift))
            .collect()
    };
    let mut start = lo;
    let mut addresses = starts.to_vec();
    if vector {
        let count = b.ins().isub(hi, lo);
        let whole = b.ins().band_imm_s(count, -4);
        let end = b.ins().iadd(lo, whole);
        let advance = bytes(b, 4);
        addresses = carry(b, lo, end, 4, &addresses, &advance, &mut |b, z, a| {
            body(b, z, types::F32X4, a)
        });
        start = end;
    }
    let advance = bytes(b, 2);
    carry(b, start, hi, 1, &addresses, &advance, &mut |b, z, a| {
        body(b, z, types::F32, a)
    });
}

/// A loop `for i in (start..end).step_by(step)` that carries values, each increased by its
/// `advance` per iteration, and returns them after the loop.
pub(super) fn carry(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    carried: &[Value],
    advance: &[Value],
    body: &mut dyn FnMut(&mut FunctionBuilder, Value, &[Value]),
) -> Vec<Value> {
    let header = b.create_block();
    b.append_block_param(header, types::I64);
    let inner = b.create_block();
    let done = b.create_block();
    for _ in carried {
        b.append_block_param(header, types::I64);
        b.append_block_param(done, types::I64);
    }
    let entry: Vec<_> = std::iter::once(start)
        .chain(carried.iter().copied())
        .map(|v| v.into())
        .collect();
    b.ins().jump(header, &entry);
    b.switch_to_block(header);
    let params = b.block_params(header).to_vec();
    let (i, values) = (params[0], &params[1..]);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, end);
    let exit: Vec<_> = values.iter().map(|&v| v.into()).collect();
    b.ins().brif(more, inner, &[], done, &exit);
    b.switch_to_block(inner);
    body(b, i, values);
    let next = b.ins().iadd_imm_s(i, step);
    let mut back = vec![next.into()];
    for (&v, &a) in values.iter().zip(advance) {
        back.push(b.ins().iadd(v, a).into());
    }
    b.ins().jump(header, &back);
    b.switch_to_block(done);
    b.block_params(done).to_vec()
}

/// A loop nest over `dims`, calling `body` with the indices.
pub(super) fn loops(
    b: &mut FunctionBuilder,
    dims: &[Value],
    body: &mut dyn FnMut(&mut FunctionBuilder, &[Value]),
) {
    pub(super) fn nest(
        b: &mut FunctionBuilder,
        dims: &[Value],
        index: &mut Vec<Value>,
        body: &mut dyn FnMut(&mut FunctionBuilder, &[Value]),
    ) {
        let Some((&dim, rest)) = dims.split_first() else {
            body(b, index);
            return;
        };
        let zero = b.ins().iconst(types::I64, 0);
        range(b, zero, dim, 1, &mut |b, i| {
            index.push(i);
            nest(b, rest, index, body);
            index.pop();
        });
    }
    nest(b, dims, &mut Vec::new(), body);
}

/// `body(z, type)` for each `z` of a range known when the code is generated: four lanes at a
/// time (type `f32x4`) while four remain, when `vector`, then one at a time.
pub(super) fn unrolled(
    b: &mut FunctionBuilder,
    range: std::ops::Range<i64>,
    vector: bool,
    body: &mut dyn FnMut(&mut FunctionBuilder, i64, types::Type),
) {
    let mut z = range.start;
    while vector && z + 4 <= range.end {
        body(b, z, types::F32X4);
        z += 4;
    }
    for z in z..range.end {
        body(b, z, types::F32);
    }
}

/// `address + bytes` as a base and a 32-bit displacement: the displacement alone when it fits,
/// else the sum computed in a register (offsets within one example can exceed 2 GiB).
pub(super) fn displaced(b: &mut FunctionBuilder, address: Value, bytes: i64) -> (Value, i32) {
    match i32::try_from(bytes) {
        Ok(offset) => (address, offset),
        Err(_) => (b.ins().iadd_imm_s(address, bytes), 0),
    }
}

/// Stores 0 at `at + 4·z` for each `z` (known when the code is generated).
pub(super) fn zeros(b: &mut FunctionBuilder, at: Value, z: impl Iterator<Item = i64>) {
    let zero = f32_const(b, 0.0);
    for z in z {
        b.ins().store(flags(), zero, at, (4 * z) as i32);
    }
}

/// `if cond { then } else { otherwise }`.
pub(super) fn branch(
    b: &mut FunctionBuilder,
    cond: Value,
    then: &mut dyn FnMut(&mut FunctionBuilder),
    otherwise: &mut dyn FnMut(&mut FunctionBuilder),
) {
    let [yes, no, done] = [b.create_block(), b.create_block(), b.create_block()];
    b.ins().brif(cond, yes, &[], no, &[]);
    b.switch_to_block(yes);
    then(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(no);
    otherwise(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
}

/// Stores 0 in elements `lo..hi` from `base`, four at a time.
pub(super) fn zero_range(b: &mut FunctionBuilder, base: Value, lo: Value, hi: Value) {
    let start = element(b, base, lo);
    let one = b.ins().iconst(types::I64, 1);
    lanes(b, lo, hi, true, &[start], &[one], &mut |b, _, ty, a| {
        let zero = f32_const(b, 0.0);
        let zero = if ty == types::F32X4 {
            b.ins().splat(types::F32X4, zero)
        } else {
            zero
        };
        b.ins().store(flags(), zero, a[0], 0);
    });
}

/// `loops`, with the outermost axis limited to `first..end` when a range is given.
pub(super) fn loops_within(
    b: &mut FunctionBuilder,
    dims: &[Value],
    range: Option<(Value, Value)>,
    body: &mut dyn FnMut(&mut FunctionBuilder, &[Value]),
) {
    let Some((first, end)) = range else {
        return loops(b, dims, body);
    };
    let (_, rest) = dims.split_first().expect("an axis to split");
    self::range(b, first, end, 1, &mut |b, i| {
        loops(b, rest, &mut |b, index| {
            let mut full = vec![i];
            full.extend_from_slice(index);
            body(b, &full);
        });
    });
}

/// A reduction loop `acc = f(j, acc)` for j in 0..len, returning the final value.
pub(super) fn fold(
    b: &mut FunctionBuilder,
    len: Value,
    init: Value,
    f: &mut dyn FnMut(&mut FunctionBuilder, Value, Value) -> Value,
) -> Value {
    let zero = b.ins().iconst(types::I64, 0);
    fold_range(b, zero, len, 1, init, f)
}

/// A reduction loop `acc = f(j, acc)` for j in `(start..end).step_by(step)`; the accumulator
/// has `init`'s type (a scalar or four lanes).
pub(super) fn fold_range(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    init: Value,
    f: &mut dyn FnMut(&mut FunctionBuilder, Value, Value) -> Value,
) -> Value {
    let ty = b.func.dfg.value_type(init);
    let header = b.create_block();
    b.append_block_param(header, types::I64);
    b.append_block_param(header, ty);
    let inner = b.create_block();
    let done = b.create_block();
    b.append_block_param(done, ty);
    b.ins().jump(header, &[start.into(), init.into()]);
    b.switch_to_block(header);
    let (j, acc) = (b.block_params(header)[0], b.block_params(header)[1]);
    let more = b.ins().icmp(IntCC::SignedLessThan, j, end);
    b.ins().brif(more, inner, &[], done, &[acc.into()]);
    b.switch_to_block(inner);
    let next_acc = f(b, j, acc);
    let next = b.ins().iadd_imm_s(j, step);
    b.ins().jump(header, &[next.into(), next_acc.into()]);
    b.switch_to_block(done);
    b.block_params(done)[0]
}

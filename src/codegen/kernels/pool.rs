//! Max and average pooling and their gradients, over contiguous `[N, C, H, W]` tensors. Each
//! window is unrolled (its size is known), in the interpreter's order; positions in padding
//! contribute what cannot change the result. Work is split by planes (image and channel): the
//! gradient of a plane adds only into that plane, and the maps after a pooling gradient (the
//! activation's gradient) run on each plane as soon as its windows are done.

use super::{Geometry, KernelKind, Map, Pieces, Sums};
use crate::codegen::alloc::BufferId;
use crate::codegen::arith::{f32_const, Width};
use crate::codegen::layout::{dims, product, Sym, View};
use crate::codegen::loops::{displaced, element, flags, fold_lanes, loops, range, zero_range};
use crate::codegen::lower::Lowerer;
use crate::ir::{Graph, NodeId, PoolOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, ConstantData, Endianness, Immediate, InstBuilder, MemFlagsData, Value,
};
use cranelift_frontend::FunctionBuilder;

/// Max or average pooling of a contiguous `[N, C, H, W]` input.
#[derive(Clone, Debug)]
pub struct Pool {
    pub node: NodeId,
    pub out: BufferId,
    pub input: View,
    pub op: PoolOp,
    pub geometry: Geometry,
}

/// Pooling's gradient with respect to its input: `input` is the pooled input and `grad` the
/// output's gradient, both contiguous.
#[derive(Clone, Debug)]
pub struct PoolGrad {
    pub node: NodeId,
    pub out: BufferId,
    pub input: View,
    pub grad: View,
    pub op: PoolOp,
    pub geometry: Geometry,
    /// Maps over the gradient (the activation's gradient before the pooling), run in order on
    /// each plane as soon as its windows are done.
    pub epilogue: Vec<Map>,
    /// The per-channel sums of the epilogue's output: a convolution's bias gradient.
    pub sums: Option<Sums>,
}

impl KernelKind for Pool {
    fn name(&self) -> &'static str {
        "pool"
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
        String::new()
    }

    /// Planes (see `Geometry::plane_pieces`).
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        self.geometry.plane_pieces(max_batch)
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let (op, conv) = (self.op, &self.geometry);
        let x = l.memory(b, &self.input);
        let y = l.buffer_address(b, self.out);
        let area = (conv.window.kernel[0] * conv.window.kernel[1]) as f32;
        if conv.tiled_pairs() {
            by_plane(l, b, conv, &mut |b, plane| {
                pool_pairs(b, conv, op, plane, x, y)
            });
            return;
        }
        windows(l, b, conv, &mut |b, window| {
            // The interpreter's fold over the window, in its order; a position in
            // padding contributes what cannot change the result (-inf or +0).
            let (init, skip) = match op {
                PoolOp::Max => (f32::NEG_INFINITY, f32::NEG_INFINITY),
                PoolOp::Avg => (0.0, 0.0),
            };
            let mut acc = f32_const(b, init);
            for at in &window.cover {
                let v = at.load(b, x);
                let skip = f32_const(b, skip);
                let v = at.keep(b, v, skip);
                acc = match op {
                    PoolOp::Max => {
                        let greater = b.ins().fcmp(FloatCC::GreaterThan, v, acc);
                        b.ins().select(greater, v, acc)
                    }
                    PoolOp::Avg => b.ins().fadd(acc, v),
                };
            }
            if op == PoolOp::Avg {
                let area = f32_const(b, area);
                acc = b.ins().fdiv(acc, area);
            }
            let address = window.output_address(b, y);
            b.ins().store(flags(), acc, address, 0);
        });
    }
}

impl KernelKind for PoolGrad {
    fn name(&self) -> &'static str {
        "pool_grad"
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn outputs(&self) -> Vec<BufferId> {
        vec![self.out]
    }

    fn inputs(&self) -> Vec<&View> {
        vec![&self.input, &self.grad]
    }

    fn detail(&self, _graph: &Graph) -> String {
        String::new()
    }

    /// Planes (see `Geometry::plane_pieces`).
    fn pieces(&self, _graph: &Graph, max_batch: usize) -> Option<Pieces> {
        self.geometry.plane_pieces(max_batch)
    }

    fn epilogue(&self) -> &[Map] {
        &self.epilogue
    }

    /// Maps over the same elements in one flat loop, on each plane.
    fn epilogue_for(&mut self, graph: &Graph, map: &Map) -> Option<&mut Vec<Map>> {
        let shape = graph.shape(self.node);
        let flat = map.map_layout(graph).0 == [product(&dims(shape))];
        (graph.shape(map.node) == shape && flat).then_some(&mut self.epilogue)
    }

    fn piece(&self) -> &'static str {
        "on each plane"
    }

    fn sums(&self) -> Option<&Sums> {
        self.sums.as_ref()
    }

    fn summed(&self) -> &'static str {
        "over each channel"
    }

    /// Per-channel sums over the images and each plane: each piece sums its planes.
    fn summing(
        &mut self,
        graph: &Graph,
        axes: &[usize],
        input_dims: &[Sym],
    ) -> Option<(&mut Option<Sums>, Sym, bool)> {
        let fits = self.sums.is_none()
            && axes == [0, 2, 3]
            && input_dims == dims(graph.shape(self.node)).as_slice();
        let channels = Sym::fixed(self.geometry.channels);
        fits.then_some((&mut self.sums, channels, true))
    }

    fn finished(&mut self) -> Option<(NodeId, BufferId, &mut Vec<Map>)> {
        let sums = self.sums.as_mut()?;
        Some((sums.node, sums.out, &mut sums.then))
    }

    fn emit(&self, l: &Lowerer, b: &mut FunctionBuilder) {
        let (op, conv) = (self.op, &self.geometry);
        let (x, dy) = (l.memory(b, &self.input), l.memory(b, &self.grad));
        let dx = l.buffer_address(b, self.out);
        let channels = b.ins().iconst(types::I64, conv.channels);
        let sums = &self.sums;
        let into = sums.as_ref().map(|sums| l.sums_into(b, sums, channels));
        // Average pooling whose windows tile the input (stride = window, no padding, no
        // remainder) writes each element once, `0 + share` as the interpreter's sum from zero
        // gives it: nothing to zero first or to read back.
        let tiles = op == PoolOp::Avg && conv.tiled();
        // So does the 2×2 maximum's gradient that `pick_pairs` computes: its window's first
        // maximum gets `0 + g`, the others zero.
        let once = tiles || conv.tiled_pairs();
        // The windows of a plane add only into that plane: a piece zeroes its own.
        match l.params.range {
            _ if once => {}
            Some([first, end]) => {
                let plane = conv.height * conv.width;
                let lo = b.ins().imul_imm_s(first, plane);
                let hi = b.ins().imul_imm_s(end, plane);
                zero_range(b, dx, lo, hi);
            }
            None => l.zero(b, dx, conv.input_floats()),
        }
        let area = (conv.window.kernel[0] * conv.window.kernel[1]) as f32;
        // The maps that follow (the activation's gradient), on each plane once its
        // windows are done, while the plane is in cache.
        let plane_size = conv.height * conv.width;
        let mut after = |b: &mut FunctionBuilder, plane: Value| {
            let start = b.ins().imul_imm_s(plane, plane_size);
            let end = b.ins().iadd_imm_s(start, plane_size);
            for map in &self.epilogue {
                l.piece_of(b, map, [start, end]);
            }
            // The plane's sum goes to its channel.
            if let (Some(sums), Some(into)) = (sums, into) {
                let source = l.buffer_address(b, sums.input);
                let source = element(b, source, start);
                let len = b.ins().iconst(types::I64, plane_size);
                let zero = f32_const(b, 0.0);
                let total = fold_lanes(
                    b,
                    len,
                    zero,
                    true,
                    &mut |b, z, ty| {
                        let address = element(b, source, z);
                        b.ins().load(ty, flags(), address, 0)
                    },
                    &|b, acc, v| b.ins().fadd(acc, v),
                );
                let channel = b.ins().urem(plane, channels);
                let address = element(b, into, channel);
                let current = b.ins().load(types::F32, flags(), address, 0);
                let next = b.ins().fadd(current, total);
                b.ins().store(flags(), next, address, 0);
            }
        };
        if conv.tiled_pairs() {
            by_plane(l, b, conv, &mut |b, plane| {
                match op {
                    PoolOp::Avg => spread_pairs(b, conv, plane, dy, dx),
                    PoolOp::Max => pick_pairs(b, conv, plane, [x, dy, dx]),
                }
                after(b, plane);
            });
            return;
        }
        windows_by_plane(
            l,
            b,
            conv,
            &mut |b, window| {
                let address = window.output_address(b, dy);
                let g = b.ins().load(types::F32, flags(), address, 0);
                let zero = f32_const(b, 0.0);
                match op {
                    // The first maximum of the window takes the whole gradient.
                    PoolOp::Max => {
                        let mut best = b.ins().iconst(types::I64, -1);
                        let mut best_value = zero;
                        for at in &window.cover {
                            let v = at.load(b, x);
                            let none = b.ins().icmp_imm_s(IntCC::SignedLessThan, best, 0);
                            let greater = b.ins().fcmp(FloatCC::GreaterThan, v, best_value);
                            let better = b.ins().bor(none, greater);
                            let take = match at.inside {
                                Some(inside) => b.ins().band(inside, better),
                                None => better,
                            };
                            let index = at.index(b);
                            best = b.ins().select(take, index, best);
                            best_value = b.ins().select(take, v, best_value);
                        }
                        let found = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, best, 0);
                        let first = b.ins().iconst(types::I64, 0);
                        let index = b.ins().select(found, best, first);
                        let v = b.ins().select(found, g, zero);
                        let target = Patch {
                            inside: None,
                            source: index,
                            offset: 0,
                        };
                        target.add(b, dx, v);
                    }
                    PoolOp::Avg => {
                        let area = f32_const(b, area);
                        let share = b.ins().fdiv(g, area);
                        if tiles {
                            let v = b.ins().fadd(zero, share);
                            for at in &window.cover {
                                at.store(b, dx, v);
                            }
                        } else {
                            for at in &window.cover {
                                let v = at.keep(b, share, zero);
                                at.add(b, dx, v);
                            }
                        }
                    }
                }
            },
            &mut after,
        );
    }
}

/// One position a pooling window reads: element `source + offset` of the input.
struct Patch {
    /// Whether the position is inside the input (not padding); `None` when it always is.
    inside: Option<Value>,
    /// An element index (0 when the position is outside), shared by the window's positions
    /// when the window has no padding...
    source: Value,
    /// ...which then differ by this constant.
    offset: i64,
}

impl Patch {
    /// The input's value here.
    fn load(&self, b: &mut FunctionBuilder, base: Value) -> Value {
        let address = element(b, base, self.source);
        let (address, offset) = displaced(b, address, 4 * self.offset);
        b.ins().load(types::F32, flags(), address, offset)
    }

    /// Adds `v` to the value here in `base`.
    fn add(&self, b: &mut FunctionBuilder, base: Value, v: Value) {
        let address = element(b, base, self.source);
        let (address, offset) = displaced(b, address, 4 * self.offset);
        let current = b.ins().load(types::F32, flags(), address, offset);
        let sum = b.ins().fadd(current, v);
        b.ins().store(flags(), sum, address, offset);
    }

    /// Writes `v` here in `base`.
    fn store(&self, b: &mut FunctionBuilder, base: Value, v: Value) {
        let address = element(b, base, self.source);
        let (address, offset) = displaced(b, address, 4 * self.offset);
        b.ins().store(flags(), v, address, offset);
    }

    /// The element index.
    fn index(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().iadd_imm_s(self.source, self.offset)
    }

    /// `v` inside the input, `otherwise` in padding.
    fn keep(&self, b: &mut FunctionBuilder, v: Value, otherwise: Value) -> Value {
        match self.inside {
            Some(inside) => b.ins().select(inside, v, otherwise),
            None => v,
        }
    }
}

/// One pooling window: its output element and the positions it covers, in order.
struct WindowAt {
    output: Value,
    cover: Vec<Patch>,
}

impl WindowAt {
    fn output_address(&self, b: &mut FunctionBuilder, base: Value) -> Value {
        element(b, base, self.output)
    }
}

/// Visits every pooling window: output (plane, row, column) and the positions it covers,
/// unrolled since the window's size is known.
fn windows(
    l: &Lowerer,
    b: &mut FunctionBuilder,
    conv: &Geometry,
    body: &mut dyn FnMut(&mut FunctionBuilder, &WindowAt),
) {
    windows_by_plane(l, b, conv, body, &mut |_, _| {});
}

/// `windows`, calling `after(plane)` once the windows of each plane are done.
fn windows_by_plane(
    l: &Lowerer,
    b: &mut FunctionBuilder,
    conv: &Geometry,
    body: &mut dyn FnMut(&mut FunctionBuilder, &WindowAt),
    after: &mut dyn FnMut(&mut FunctionBuilder, Value),
) {
    let out_dims = [
        b.ins().iconst(types::I64, conv.out_height),
        b.ins().iconst(types::I64, conv.out_width),
    ];
    by_plane(l, b, conv, &mut |b, plane| {
        plane_windows(b, conv, plane, &out_dims, body);
        after(b, plane);
    });
}

/// Calls `body(plane)` for each plane of the kernel, or of the piece.
fn by_plane(
    l: &Lowerer,
    b: &mut FunctionBuilder,
    conv: &Geometry,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value),
) {
    let planes = l.sym(b, conv.planes());
    let (first, end) = match l.params.range {
        Some([first, end]) => (first, end),
        None => (b.ins().iconst(types::I64, 0), planes),
    };
    range(b, first, end, 1, body);
}

/// 2×2 pooling whose windows tile the input, on one plane, as the windows' loop computes it
/// (from 0 or −∞, the window's four positions in order, then the average's division). Four
/// windows at a time: two vectors of each of the two rows, their even and odd lanes taken
/// apart; the windows left over one at a time.
fn pool_pairs(
    b: &mut FunctionBuilder,
    conv: &Geometry,
    op: PoolOp,
    plane: Value,
    x: Value,
    y: Value,
) {
    let [even, odd] = [[0, 2, 4, 6], [1, 3, 5, 7]].map(|lanes| lane_mask(b, lanes));
    let init = match op {
        PoolOp::Max => f32::NEG_INFINITY,
        PoolOp::Avg => 0.0,
    };
    let [init, area] = [init, 4.0].map(|v| f32_const(b, v));
    let [init4, area4] = [init, area].map(|v| b.ins().splat(types::F32X4, v));
    let combine = |b: &mut FunctionBuilder, acc: Value, v: Value| match op {
        PoolOp::Max => {
            let vector = b.func.dfg.value_type(acc) == types::F32X4;
            Width { vector }.select(b, (v, FloatCC::GreaterThan, acc), v, acc)
        }
        PoolOp::Avg => b.ins().fadd(acc, v),
    };
    pair_rows(b, conv, plane, [y, x], &mut |b, pairs| {
        let (mut acc, area) = match pairs.vector {
            true => (init4, area4),
            false => (init, area),
        };
        for v in window_positions(b, pairs, [even, odd]) {
            acc = combine(b, acc, v);
        }
        if op == PoolOp::Avg {
            acc = b.ins().fdiv(acc, area);
        }
        b.ins().store(flags(), acc, pairs.row, (4 * pairs.j) as i32);
    });
}

/// The positions of the 2×2 windows `j..j + 4` of an output row (or of window `j` alone) in the
/// windows' order, (0, 0), (0, 1), (1, 0), (1, 1): four windows' worth in a vector each, taken
/// apart from two vectors of each input row (its `even` and `odd` lanes, see `lane_mask`).
fn window_positions(
    b: &mut FunctionBuilder,
    pairs: Pairs,
    [even, odd]: [Immediate; 2],
) -> Vec<Value> {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let j = pairs.j;
    let mut positions = Vec::with_capacity(4);
    for row in pairs.rows {
        if pairs.vector {
            let halves = [0, 4].map(|k| {
                let v = b
                    .ins()
                    .load(types::F32X4, flags(), row, (4 * (2 * j + k)) as i32);
                b.ins().bitcast(types::I8X16, little, v)
            });
            for lanes in [even, odd] {
                let v = b.ins().shuffle(halves[0], halves[1], lanes);
                positions.push(b.ins().bitcast(types::F32X4, little, v));
            }
        } else {
            for k in [2 * j, 2 * j + 1] {
                positions.push(b.ins().load(types::F32, flags(), row, (4 * k) as i32));
            }
        }
    }
    positions
}

/// Windows of one output row of 2×2 windows that tile the input: `j..j + 4` when `vector`,
/// else `j` alone.
#[derive(Clone, Copy)]
struct Pairs {
    /// The output row's address.
    row: Value,
    /// The addresses of its two input rows.
    rows: [Value; 2],
    j: i64,
    vector: bool,
}

/// For each output row of a plane of 2×2 windows that tile the input (addresses in `out` and
/// `input`), `body` on its windows four at a time, then on each window left over.
fn pair_rows(
    b: &mut FunctionBuilder,
    conv: &Geometry,
    plane: Value,
    [out, input]: [Value; 2],
    body: &mut dyn FnMut(&mut FunctionBuilder, Pairs),
) {
    let ow = conv.out_width;
    let start = b.ins().iconst(types::I64, 0);
    let rows = b.ins().iconst(types::I64, conv.out_height);
    range(b, start, rows, 1, &mut |b, r| {
        let row = b.ins().imul_imm_s(plane, conv.out_height);
        let row = b.ins().iadd(row, r);
        let row = b.ins().imul_imm_s(row, ow);
        let top = b.ins().imul_imm_s(plane, conv.height);
        let twice = b.ins().imul_imm_s(r, 2);
        let top = b.ins().iadd(top, twice);
        let top = b.ins().imul_imm_s(top, conv.width);
        let [row, top] = [element(b, out, row), element(b, input, top)];
        let bottom = b.ins().iadd_imm_s(top, 4 * conv.width);
        let rows = [top, bottom];
        for j in (0..ow - ow % 4).step_by(4) {
            body(
                b,
                Pairs {
                    row,
                    rows,
                    j,
                    vector: true,
                },
            );
        }
        for j in ow - ow % 4..ow {
            body(
                b,
                Pairs {
                    row,
                    rows,
                    j,
                    vector: false,
                },
            );
        }
    });
}

/// The `shuffle` mask that picks these four lanes of two `f32x4` vectors (0–3 the first's,
/// 4–7 the second's), as bytes.
fn lane_mask(b: &mut FunctionBuilder, lanes: [u8; 4]) -> Immediate {
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| 4 * l + k))
        .collect();
    b.func.dfg.immediates.push(ConstantData::from(bytes))
}

/// The gradient of 2×2 average pooling whose windows tile the input, on one plane: each
/// output gradient's quarter, `0 + g / 4` as the interpreter sums it, written to the four
/// positions of its window. Four windows at a time: a vector of gradients, spread to two
/// vectors of pairs for each of the two rows; the windows left over one at a time.
fn spread_pairs(b: &mut FunctionBuilder, conv: &Geometry, plane: Value, dy: Value, dx: Value) {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let [low, high] = [[0, 0, 1, 1], [2, 2, 3, 3]].map(|lanes| lane_mask(b, lanes));
    let [zero, area] = [0.0, 4.0].map(|v| f32_const(b, v));
    let [zero4, area4] = [zero, area].map(|v| b.ins().splat(types::F32X4, v));
    pair_rows(b, conv, plane, [dy, dx], &mut |b, pairs| {
        let Pairs {
            row: g_row,
            rows,
            j,
            vector,
        } = pairs;
        if vector {
            let g = b.ins().load(types::F32X4, flags(), g_row, (4 * j) as i32);
            let share = b.ins().fdiv(g, area4);
            let v = b.ins().fadd(zero4, share);
            let bytes = b.ins().bitcast(types::I8X16, little, v);
            for (mask, at) in [(low, 2 * j), (high, 2 * j + 4)] {
                let spread = b.ins().shuffle(bytes, bytes, mask);
                let spread = b.ins().bitcast(types::F32X4, little, spread);
                for row in rows {
                    b.ins().store(flags(), spread, row, (4 * at) as i32);
                }
            }
        } else {
            let g = b.ins().load(types::F32, flags(), g_row, (4 * j) as i32);
            let share = b.ins().fdiv(g, area);
            let v = b.ins().fadd(zero, share);
            for row in rows {
                for k in [2 * j, 2 * j + 1] {
                    b.ins().store(flags(), v, row, (4 * k) as i32);
                }
            }
        }
    });
}

/// The gradient of 2×2 max pooling whose windows tile the input, on one plane, as the windows'
/// loop computes it: the window's first position holding its maximum (a later one replaces it
/// only when strictly greater) gets `0 + g`, as the interpreter adds it to zero, and the others
/// zero; every position is written once. Four windows at a time: their positions taken apart
/// from two vectors of each input row (as `pool_pairs` does), compared lane by lane, and the
/// gradients put back together in the rows' order; the windows left over one at a time.
fn pick_pairs(b: &mut FunctionBuilder, conv: &Geometry, plane: Value, [x, dy, dx]: [Value; 3]) {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let [even, odd] = [[0, 2, 4, 6], [1, 3, 5, 7]].map(|lanes| lane_mask(b, lanes));
    let [low, high] = [[0, 4, 1, 5], [2, 6, 3, 7]].map(|lanes| lane_mask(b, lanes));
    let zero = f32_const(b, 0.0);
    let zero4 = b.ins().splat(types::F32X4, zero);
    // Where a row of `x` is, the same row of `dx` is this many bytes on.
    let to_dx = b.ins().isub(dx, x);
    pair_rows(b, conv, plane, [dy, x], &mut |b, pairs| {
        let (g_row, rows, j, vector) = (pairs.row, pairs.rows, pairs.j, pairs.vector);
        let (ty, zero) = if vector {
            (types::F32X4, zero4)
        } else {
            (types::F32, zero)
        };
        let positions = window_positions(b, pairs, [even, odd]);
        // Whether each later position is strictly greater than the best before it.
        let mut best = positions[0];
        let mut beats = Vec::new();
        for &v in &positions[1..] {
            let c = b.ins().fcmp(FloatCC::GreaterThan, v, best);
            best = if vector {
                let mask = b.ins().bitcast(ty, MemFlagsData::new(), c);
                b.ins().bitselect(mask, v, best)
            } else {
                b.ins().select(c, v, best)
            };
            beats.push(c);
        }
        let g = b.ins().load(ty, flags(), g_row, (4 * j) as i32);
        let g = b.ins().fadd(zero, g);
        // Position k keeps the gradient when it beat the best before it and nothing after it
        // beat it; the first keeps it when nothing beat it.
        let mut grads = Vec::new();
        for k in 0..4usize {
            let mut won = k.checked_sub(1).map(|i| beats[i]);
            for &c in &beats[k..] {
                // Lanes are all ones or zeros; a scalar comparison is 1 or 0.
                let lost = match vector {
                    true => b.ins().bnot(c),
                    false => b.ins().icmp_imm_s(IntCC::Equal, c, 0),
                };
                won = Some(match won {
                    Some(w) => b.ins().band(w, lost),
                    None => lost,
                });
            }
            let won = won.expect("three comparisons");
            grads.push(if vector {
                let mask = b.ins().bitcast(ty, MemFlagsData::new(), won);
                b.ins().bitselect(mask, g, zero)
            } else {
                b.ins().select(won, g, zero)
            });
        }
        for (r, row) in rows.into_iter().enumerate() {
            let row = b.ins().iadd(row, to_dx);
            let [left, right] = [grads[2 * r], grads[2 * r + 1]];
            if vector {
                let [left, right] = [left, right].map(|v| b.ins().bitcast(types::I8X16, little, v));
                for (mask, at) in [(low, 2 * j), (high, 2 * j + 4)] {
                    let v = b.ins().shuffle(left, right, mask);
                    let v = b.ins().bitcast(ty, little, v);
                    b.ins().store(flags(), v, row, (4 * at) as i32);
                }
            } else {
                for (v, k) in [(left, 2 * j), (right, 2 * j + 1)] {
                    b.ins().store(flags(), v, row, (4 * k) as i32);
                }
            }
        }
    });
}

/// The windows of one plane, in order.
fn plane_windows(
    b: &mut FunctionBuilder,
    conv: &Geometry,
    plane: Value,
    out_dims: &[Value],
    body: &mut dyn FnMut(&mut FunctionBuilder, &WindowAt),
) {
    loops(b, out_dims, &mut |b, o| {
        let (y, z) = (o[0], o[1]);
        let output = {
            let t = b.ins().imul_imm_s(plane, conv.out_height);
            let t = b.ins().iadd(t, y);
            let t = b.ins().imul_imm_s(t, conv.out_width);
            b.ins().iadd(t, z)
        };
        let mut cover = Vec::new();
        let [kh, kw] = conv.window.kernel.map(|k| k as i64);
        if conv.window.padding == [0, 0] {
            // Every position is inside: one index for the window, constant offsets.
            let zero = b.ins().iconst(types::I64, 0);
            let origin = tap(b, conv, plane, [y, z], [zero, zero]).source;
            for i in 0..kh {
                for j in 0..kw {
                    cover.push(Patch {
                        inside: None,
                        source: origin,
                        offset: i * conv.width + j,
                    });
                }
            }
        } else {
            for i in 0..kh {
                for j in 0..kw {
                    let offsets = [i, j].map(|k| b.ins().iconst(types::I64, k));
                    cover.push(tap(b, conv, plane, [y, z], offsets));
                }
            }
        }
        body(b, &WindowAt { output, cover });
    });
}

/// Where output position (y, z) of a window reads at kernel offset (i, j) in a plane of
/// the input: `y·stride − padding + i`, and whether that is inside the input.
fn tap(
    b: &mut FunctionBuilder,
    conv: &Geometry,
    plane: Value,
    [y, z]: [Value; 2],
    [i, j]: [Value; 2],
) -> Patch {
    let w = conv.window;
    let coordinate = |b: &mut FunctionBuilder, o: Value, k: Value, axis: usize| {
        let t = b.ins().imul_imm_s(o, w.stride[axis] as i64);
        let t = b.ins().iadd(t, k);
        b.ins().iadd_imm_s(t, -(w.padding[axis] as i64))
    };
    let (sy, sz) = (coordinate(b, y, i, 0), coordinate(b, z, j, 1));
    // Negative coordinates are huge unsigned ones: one comparison per axis.
    let inside_y = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, sy, conv.height);
    let inside_z = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, sz, conv.width);
    let inside = b.ins().band(inside_y, inside_z);
    let source = {
        let t = b.ins().imul_imm_s(plane, conv.height);
        let t = b.ins().iadd(t, sy);
        let t = b.ins().imul_imm_s(t, conv.width);
        b.ins().iadd(t, sz)
    };
    // Outside the input, the first element stands in: always a valid address.
    let first = b.ins().iconst(types::I64, 0);
    let source = b.ins().select(inside, source, first);
    Patch {
        inside: Some(inside),
        source,
        offset: 0,
    }
}

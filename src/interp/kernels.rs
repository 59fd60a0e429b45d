//! The reference kernels: straightforward loops, written to be obviously right.

use crate::ir::PoolOp;
use crate::shape::Window;
use crate::tensor::{for_each_index, strides, Real, Tensor};

/// Numpy broadcast of `x` to `dims`.
pub fn broadcast<T: Real>(x: &Tensor<T>, dims: &[usize]) -> Tensor<T> {
    let lead = dims.len() - x.dims.len();
    let from = strides(&x.dims);
    let mut data = Vec::with_capacity(dims.iter().product());
    for_each_index(dims, |index| {
        let mut at = 0;
        for (axis, &i) in index.iter().enumerate().skip(lead) {
            let src = axis - lead;
            if x.dims[src] != 1 {
                at += i * from[src];
            }
        }
        data.push(x.data[at]);
    });
    Tensor::new(dims.to_vec(), data)
}

/// `parts` joined along `axis`: each output row (the axes before `axis`) is each part's row
/// in turn.
pub fn concat<T: Real>(parts: &[&Tensor<T>], axis: usize, dims: &[usize]) -> Tensor<T> {
    let rows: usize = dims[..axis].iter().product();
    let mut data = Vec::with_capacity(dims.iter().product());
    for row in 0..rows {
        for part in parts {
            let len: usize = part.dims[axis..].iter().product();
            data.extend_from_slice(&part.data[row * len..(row + 1) * len]);
        }
    }
    Tensor::new(dims.to_vec(), data)
}

/// The entries `start..` along `axis` of `x` that fit `dims`.
pub fn slice<T: Real>(x: &Tensor<T>, axis: usize, start: usize, dims: &[usize]) -> Tensor<T> {
    let rows: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let (len, from) = (dims[axis] * inner, x.dims[axis..].iter().product::<usize>());
    let mut data = Vec::with_capacity(rows * len);
    for row in 0..rows {
        let at = row * from + start * inner;
        data.extend_from_slice(&x.data[at..at + len]);
    }
    Tensor::new(dims.to_vec(), data)
}

/// Sums, averages or maximizes over `axes`, removing them.
pub fn reduce<T: Real>(x: &Tensor<T>, axes: &[usize], op: crate::ir::ReduceOp) -> Tensor<T> {
    use crate::ir::ReduceOp;
    let out_dims: Vec<usize> = x
        .dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    let out_strides = strides(&out_dims);
    let init = match op {
        ReduceOp::Max => T::of(f64::NEG_INFINITY),
        ReduceOp::Sum | ReduceOp::Mean => T::default(),
    };
    let mut out = Tensor::full(&out_dims, init);
    let mut flat = 0;
    for_each_index(&x.dims, |index| {
        let mut at = 0;
        let mut k = 0;
        for (axis, &i) in index.iter().enumerate() {
            if !axes.contains(&axis) {
                at += i * out_strides[k];
                k += 1;
            }
        }
        let v = x.data[flat];
        match op {
            ReduceOp::Max => {
                if v > out.data[at] {
                    out.data[at] = v;
                }
            }
            ReduceOp::Sum | ReduceOp::Mean => out.data[at] += v,
        }
        flat += 1;
    });
    if op == ReduceOp::Mean {
        let count: usize = axes.iter().map(|&a| x.dims[a]).product();
        for v in &mut out.data {
            *v = *v / T::of(count as f64);
        }
    }
    out
}

/// `[m, k] @ [k, n]`, in i-k-j order so the inner loop walks both rows contiguously.
pub fn matmul<T: Real>(a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    let (m, k, n) = (a.dims[0], a.dims[1], b.dims[1]);
    let mut out = vec![T::default(); m * n];
    for i in 0..m {
        for p in 0..k {
            let aip = a.data[i * k + p];
            let row = &b.data[p * n..(p + 1) * n];
            for (o, &bv) in out[i * n..(i + 1) * n].iter_mut().zip(row) {
                *o += aip * bv;
            }
        }
    }
    Tensor::new(vec![m, n], out)
}

/// Permutes axes: output axis `i` is input axis `perm[i]`.
pub fn transpose<T: Real>(x: &Tensor<T>, perm: &[usize]) -> Tensor<T> {
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    let from = strides(&x.dims);
    let mut data = Vec::with_capacity(x.data.len());
    for_each_index(&dims, |index| {
        let at: usize = index.iter().zip(perm).map(|(&i, &p)| i * from[p]).sum();
        data.push(x.data[at]);
    });
    Tensor::new(dims, data)
}

/// Softmax or log-softmax along `axis`, shifted by the maximum for stability.
pub fn softmax<T: Real>(x: &Tensor<T>, axis: usize, log: bool) -> Tensor<T> {
    let len = x.dims[axis];
    let inner: usize = x.dims[axis + 1..].iter().product();
    let outer: usize = x.dims[..axis].iter().product();
    let mut out = x.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |a: usize| o * len * inner + a * inner + i;
            let mut max = T::of(f64::NEG_INFINITY);
            for a in 0..len {
                if x.data[at(a)] > max {
                    max = x.data[at(a)];
                }
            }
            let mut total = T::default();
            for a in 0..len {
                total += (x.data[at(a)] - max).exp();
            }
            for a in 0..len {
                let shifted = x.data[at(a)] - max;
                out.data[at(a)] = if log {
                    shifted - total.ln()
                } else {
                    shifted.exp() / total
                };
            }
        }
    }
    out
}

/// The input position a window element reads, or `None` when it falls in the padding.
fn source(out: usize, k: usize, stride: u64, padding: u64, size: usize) -> Option<usize> {
    let at = (out * stride as usize + k).checked_sub(padding as usize)?;
    (at < size).then_some(at)
}

/// Cross-correlation of `x [N, C, H, W]` with `w [O, C, kh, kw]`.
pub fn conv2d<T: Real>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    window: &Window,
    out_dims: &[usize],
) -> Tensor<T> {
    let mut out = Tensor::full(out_dims, T::default());
    conv_triples(&x.dims, &w.dims, out_dims, window, |xi, wi, yi| {
        out.data[yi] += x.data[xi] * w.data[wi]
    });
    out
}

/// Visits every (input index, weight index, output index) triple of a convolution.
fn conv_triples(
    x_dims: &[usize],
    w_dims: &[usize],
    dy_dims: &[usize],
    window: &Window,
    mut f: impl FnMut(usize, usize, usize),
) {
    let [n, c, h, wd] = [x_dims[0], x_dims[1], x_dims[2], x_dims[3]];
    let [o, _, kh, kw] = [w_dims[0], w_dims[1], w_dims[2], w_dims[3]];
    let [oh, ow] = [dy_dims[2], dy_dims[3]];
    for b in 0..n {
        for fo in 0..o {
            for y in 0..oh {
                for z in 0..ow {
                    for ch in 0..c {
                        for i in 0..kh {
                            let Some(sy) = source(y, i, window.stride[0], window.padding[0], h)
                            else {
                                continue;
                            };
                            for j in 0..kw {
                                let Some(sz) =
                                    source(z, j, window.stride[1], window.padding[1], wd)
                                else {
                                    continue;
                                };
                                f(
                                    ((b * c + ch) * h + sy) * wd + sz,
                                    ((fo * c + ch) * kh + i) * kw + j,
                                    ((b * o + fo) * oh + y) * ow + z,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// d conv / d x: every output gradient flows back to the inputs its window read.
pub fn conv2d_grad_input<T: Real>(
    dy: &Tensor<T>,
    w: &Tensor<T>,
    window: &Window,
    x_dims: &[usize],
) -> Tensor<T> {
    let mut dx = Tensor::full(x_dims, T::default());
    conv_triples(x_dims, &w.dims, &dy.dims, window, |xi, wi, yi| {
        dx.data[xi] += dy.data[yi] * w.data[wi]
    });
    dx
}

/// d conv / d w: each weight accumulates input times output gradient over every position.
pub fn conv2d_grad_weight<T: Real>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    window: &Window,
    w_dims: &[usize],
) -> Tensor<T> {
    let mut dw = Tensor::full(w_dims, T::default());
    conv_triples(&x.dims, w_dims, &dy.dims, window, |xi, wi, yi| {
        dw.data[wi] += x.data[xi] * dy.data[yi]
    });
    dw
}

/// Visits each pooling window: output index and the input indices it covers (padding skipped).
fn windows(
    x_dims: &[usize],
    out_dims: &[usize],
    window: &Window,
    mut f: impl FnMut(usize, &[usize]),
) {
    let [n, c, h, wd] = [x_dims[0], x_dims[1], x_dims[2], x_dims[3]];
    let [oh, ow] = [out_dims[2], out_dims[3]];
    let mut cover = Vec::new();
    for plane in 0..n * c {
        for y in 0..oh {
            for z in 0..ow {
                cover.clear();
                for i in 0..window.kernel[0] as usize {
                    let Some(sy) = source(y, i, window.stride[0], window.padding[0], h) else {
                        continue;
                    };
                    for j in 0..window.kernel[1] as usize {
                        let Some(sz) = source(z, j, window.stride[1], window.padding[1], wd) else {
                            continue;
                        };
                        cover.push((plane * h + sy) * wd + sz);
                    }
                }
                f((plane * oh + y) * ow + z, &cover);
            }
        }
    }
}

/// Max pooling (padding never wins) or average pooling (padding counts as zeros).
pub fn pool<T: Real>(x: &Tensor<T>, op: PoolOp, window: &Window, out_dims: &[usize]) -> Tensor<T> {
    let mut out = Tensor::full(out_dims, T::default());
    let area = T::of((window.kernel[0] * window.kernel[1]) as f64);
    windows(&x.dims, out_dims, window, |o, cover| {
        out.data[o] = match op {
            PoolOp::Max => cover
                .iter()
                .map(|&i| x.data[i])
                .fold(T::of(f64::NEG_INFINITY), |m, v| if v > m { v } else { m }),
            PoolOp::Avg => cover.iter().fold(T::default(), |s, &i| s + x.data[i]) / area,
        };
    });
    out
}

/// The gradient of pooling: max routes each output gradient to the first maximum of its
/// window (as PyTorch does); average spreads it evenly over the window.
pub fn pool_grad<T: Real>(x: &Tensor<T>, dy: &Tensor<T>, op: PoolOp, window: &Window) -> Tensor<T> {
    let mut dx = Tensor::full(&x.dims, T::default());
    let area = T::of((window.kernel[0] * window.kernel[1]) as f64);
    windows(&x.dims, &dy.dims, window, |o, cover| match op {
        PoolOp::Max => {
            let mut best: Option<usize> = None;
            for &i in cover {
                if best.is_none_or(|b| x.data[i] > x.data[b]) {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                dx.data[b] += dy.data[o];
            }
        }
        PoolOp::Avg => {
            for &i in cover {
                dx.data[i] += dy.data[o] / area;
            }
        }
    });
    dx
}

/// A uniform number in [0, 1) for element `index` of dropout mask `stream` in step `seed`:
/// counter-based, so a mask depends only on (seed, node, element), never on evaluation order.
pub fn uniform(seed: u64, stream: u64, index: u64) -> f64 {
    let mut z = seed
        ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

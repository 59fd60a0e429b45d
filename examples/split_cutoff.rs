//! Measures where cutting a kernel into pieces for the worker pool starts to pay, the figures
//! behind `PIECE_FLOATS`, `PIECE_MACS` and a product's `ROWS` in `src/codegen/kernels`:
//!
//! 1. A memory-bound map of `n` floats (`y = max(x, 0)·2`, as a fused activation is) on one
//!    thread, against the same map cut into two pieces on a pool of two workers: the smallest
//!    `n` at which the pool is faster is the cut-off; a piece is half of it.
//! 2. A matrix product `[m, 784] @ [784, 256]` (the MLP's first layer) in one call, against
//!    the same product cut into two pieces of rows on the pool: the same cut-off in
//!    multiply-adds.
//! 3. The MLP's whole product (256 rows) cut into pieces of 4 to 128 rows, run one after
//!    another on one thread, against one call: what each piece's packing of the right operand
//!    costs, which sets the fewest rows a piece has.
//! 4. A softmax over rows of 10 (the MLP's logits), `n` elements, on one thread against two
//!    pieces of rows: the cut-off behind a softmax's `PIECE_ELEMENTS`.
//!
//! Each figure is the median of many runs, measured in one run of this program; a cut-off is
//! the smallest size from which splitting paid at every larger size measured.
//!
//! Usage: cargo run --release --example split_cutoff

use netc::codegen::Pool;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

/// The median time of `f` in microseconds, over enough runs to take about 100 ms.
fn median_us(mut f: impl FnMut()) -> f64 {
    f();
    let started = Instant::now();
    f();
    let once = started.elapsed().as_secs_f64().max(1e-7);
    let runs = ((0.1 / once) as usize).clamp(5, 100_000);
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn map(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x.max(0.0) * 2.0;
    }
}

/// Softmax along rows of 10.
fn softmax(x: &[f32], y: &mut [f32]) {
    for (x, y) in x.chunks_exact(10).zip(y.chunks_exact_mut(10)) {
        let top = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut total = 0.0;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - top).exp();
            total += *y;
        }
        y.iter_mut().for_each(|y| *y /= total);
    }
}

/// `dst[rows] = lhs[rows] @ rhs` for row-major `lhs` `[m, k]` and `rhs` `[k, n]`.
fn product(dst: &mut [f32], lhs: &[f32], rhs: &[f32], [m, k, n]: [usize; 3]) {
    // SAFETY: the slices hold m·n, m·k and k·n floats, row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The cut-off so far, given whether splitting paid at `size` (sizes come in increasing
/// order): the smallest size from which splitting paid at every size measured.
fn pays(cutoff: Option<usize>, size: usize, paid: bool) -> Option<usize> {
    match (cutoff, paid) {
        (_, false) => None,
        (None, true) => Some(size),
        (Some(c), true) => Some(c),
    }
}

/// Runs `piece(i, y_i)` for the two halves of `y` on `pool`.
fn halves(pool: &Pool, y: &mut [f32], unit: usize, piece: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let half = (y.len() / unit).div_ceil(2) * unit;
    let parts: Vec<Mutex<&mut [f32]>> = y.chunks_mut(half).map(Mutex::new).collect();
    pool.run(parts.len(), &|i, _| {
        piece(i * half, &mut parts[i].lock().expect("one piece each"));
    });
}

/// For each size `n` (a multiple of `unit`), `f` over `n` floats on one thread against two
/// pieces on `pool`, printed; gives the cut-off (see `pays`).
fn one_against_two(
    pool: &Pool,
    (what, unit): (&str, usize),
    sizes: impl Iterator<Item = usize>,
    f: &(dyn Fn(&[f32], &mut [f32]) + Sync),
) -> Option<usize> {
    println!(
        "{what:>9} {:>10} {:>10} {:>7}",
        "1 thread", "2 pieces", "ratio"
    );
    let mut cutoff = None;
    for n in sizes {
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
        let mut y = vec![0.0f32; n];
        let one = median_us(|| f(black_box(&x), &mut y));
        let two = median_us(|| {
            halves(pool, &mut y, unit, &|first, y| {
                f(&x[first..first + y.len()], y)
            })
        });
        println!("{n:>9} {one:>8.2}us {two:>8.2}us {:>7.2}", two / one);
        cutoff = pays(cutoff, n, two < one);
    }
    cutoff
}

fn main() {
    let pool = Pool::new(2);
    println!("1. a map of n floats: one thread against two pieces on 2 workers");
    let sizes = (10..=20).map(|shift| 1usize << shift);
    let map_cutoff = one_against_two(&pool, ("floats", 1), sizes, &map);
    println!("\n2. [m, 784] @ [784, 256]: one call against two pieces of rows on 2 workers");
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>7}",
        "rows", "mult-adds", "1 call", "2 pieces", "ratio"
    );
    let (k, n) = (784, 256);
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut gemm_cutoff = None;
    for m in [2, 4, 8, 16, 32, 64, 128, 256] {
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 * 0.01).collect();
        let mut dst = vec![0.0f32; m * n];
        let one = median_us(|| product(&mut dst, &lhs, &rhs, [m, k, n]));
        let two = median_us(|| {
            halves(&pool, &mut dst, n, &|first, dst| {
                let (row, rows) = (first / n, dst.len() / n);
                product(dst, &lhs[row * k..(row + rows) * k], &rhs, [rows, k, n])
            })
        });
        let macs = m * k * n;
        println!(
            "{m:>6} {macs:>12} {one:>8.1}us {two:>8.1}us {:>7.2}",
            two / one
        );
        gemm_cutoff = pays(gemm_cutoff, macs, two < one);
    }
    println!("\n3. [256, 784] @ [784, 256] in pieces of r rows: one after another on one thread,");
    println!("   and taken by 2 workers, against one call on one thread");
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10}",
        "rows", "1 thread", "vs 1 call", "2 workers", "vs 1 call"
    );
    let m = 256;
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 * 0.01).collect();
    let mut dst = vec![0.0f32; m * n];
    let whole = median_us(|| product(&mut dst, &lhs, &rhs, [m, k, n]));
    for rows in [4, 8, 16, 32, 64, 128, 256] {
        let piece = |i: usize, dst: &mut [f32]| {
            let lhs = &lhs[i * rows * k..(i + 1) * rows * k];
            product(dst, lhs, &rhs, [rows, k, n]);
        };
        let alone = median_us(|| {
            for (i, dst) in dst.chunks_mut(rows * n).enumerate() {
                piece(i, dst);
            }
        });
        let parts: Vec<Mutex<&mut [f32]>> = dst.chunks_mut(rows * n).map(Mutex::new).collect();
        let pooled = median_us(|| {
            pool.run(parts.len(), &|i, _| {
                piece(i, &mut parts[i].lock().expect("one each"))
            });
        });
        println!(
            "{rows:>6} {alone:>8.1}us {:>10.2} {pooled:>8.1}us {:>10.2}",
            alone / whole,
            pooled / whole
        );
    }
    println!("\n4. a softmax over rows of 10, n elements: one thread against two pieces");
    let sizes = (4..=14).map(|shift| 10usize << shift);
    let softmax_cutoff = one_against_two(&pool, ("elements", 10), sizes, &softmax);
    let say = |what: &str, cutoff: Option<usize>| match cutoff {
        Some(c) => println!("{what}: splitting pays from {c} (a piece: {})", c / 2),
        None => println!("{what}: splitting did not pay at the largest size"),
    };
    println!();
    say("map floats", map_cutoff);
    say("product multiply-adds", gemm_cutoff);
    say("softmax elements", softmax_cutoff);
}

//! Synthetic data sets drawn from a seed, as in d2l's chapters on linear models.

use super::{Dataset, Features, Split};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn table(name: &str, rows: Vec<(Vec<f32>, f32)>) -> Dataset {
    Dataset {
        origin: format!("the {name} data set"),
        lines: Vec::new(),
        len: rows.len(),
        feature_dims: vec![rows.first().map_or(0, |r| r.0.len())],
        features: Features::F32(rows.iter().flat_map(|r| r.0.iter().copied()).collect()),
        target_dims: vec![1],
        targets: rows.iter().map(|r| r.1).collect(),
    }
}

/// d2l's linear regression data: x ~ N(0, 1)², y = x·[2, −3.4] + 4.2 + N(0, 0.01²); 1000
/// training and 200 test examples.
pub fn linear(seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = Normal::new(0.0f64, 1.0).expect("valid normal");
    let noise = Normal::new(0.0f64, 0.01).expect("valid normal");
    let mut draw = |n: usize| {
        table(
            "linear",
            (0..n)
                .map(|_| {
                    let x = [unit.sample(&mut rng), unit.sample(&mut rng)];
                    let y = 2.0 * x[0] - 3.4 * x[1] + 4.2 + noise.sample(&mut rng);
                    (vec![x[0] as f32, x[1] as f32], y as f32)
                })
                .collect(),
        )
    };
    Split {
        train: draw(1000),
        test: draw(200),
        class_names: None,
    }
}

/// Bean size against toxicity: x ~ U(0, 2), y = 0.7·x + 0.5 + N(0, 0.05²); 200 training and
/// 50 test examples.
pub fn beans(seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f64, 0.05).expect("valid normal");
    let mut draw = |n: usize| {
        table(
            "beans",
            (0..n)
                .map(|_| {
                    let x: f64 = rng.random::<f64>() * 2.0;
                    (
                        vec![x as f32],
                        (0.7 * x + 0.5 + noise.sample(&mut rng)) as f32,
                    )
                })
                .collect(),
        )
    };
    Split {
        train: draw(200),
        test: draw(50),
        class_names: None,
    }
}

/// Two linearly separable classes with targets −1 and +1: x ~ N(0, 1)², labelled by the side
/// of the line 2·x₁ − 3·x₂ + 0.5 = 0, keeping only points at least 0.5 from it; 500 training and
/// 100 test examples.
pub fn separable(seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = Normal::new(0.0f64, 1.0).expect("valid normal");
    let mut draw = |n: usize| {
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n {
            let x = [unit.sample(&mut rng), unit.sample(&mut rng)];
            let score = 2.0 * x[0] - 3.0 * x[1] + 0.5;
            if score.abs() >= 0.5 {
                rows.push((vec![x[0] as f32, x[1] as f32], score.signum() as f32));
            }
        }
        table("separable", rows)
    };
    Split {
        train: draw(500),
        test: draw(100),
        class_names: None,
    }
}

/// The four XOR points, for training and testing alike.
pub fn xor() -> Split {
    let points = table(
        "xor",
        vec![
            (vec![0.0, 0.0], 0.0),
            (vec![0.0, 1.0], 1.0),
            (vec![1.0, 0.0], 1.0),
            (vec![1.0, 1.0], 0.0),
        ],
    );
    Split {
        train: points.clone(),
        test: points,
        class_names: None,
    }
}

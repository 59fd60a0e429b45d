//! Seeded parameter initialization: every draw comes from one ChaCha8 stream, in parameter order.

use crate::check::model::{Init, Model};
use crate::shape::Shape;
use crate::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// The first values of every parameter, and of every state (running statistics at their
/// declared values; optimizer state, which follows them in the training graph, at zero).
pub fn initial(
    model: &Model,
    state_shapes: &[Shape],
    seed: u64,
) -> (Vec<Tensor<f32>>, Vec<Tensor<f32>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = model
        .params
        .iter()
        .map(|p| draw(p.init, &p.shape, &mut rng))
        .collect();
    let states = state_shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let init = model.states.get(i).map_or(Init::Zeros, |s| s.init);
            draw(init, shape, &mut rng)
        })
        .collect();
    (params, states)
}

/// (fan_in, fan_out): `[in, out]` matrices and `[out, in, kh, kw]` kernels.
fn fans(dims: &[usize]) -> (f64, f64) {
    match *dims {
        [fan_in, fan_out] => (fan_in as f64, fan_out as f64),
        [out, input, kh, kw] => ((input * kh * kw) as f64, (out * kh * kw) as f64),
        _ => (1.0, 1.0),
    }
}

fn draw(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Tensor<f32> {
    let dims = crate::tensor::dims(shape, 1);
    let count: usize = dims.iter().product();
    let (fan_in, fan_out) = fans(&dims);
    let normal = |std: f64, rng: &mut ChaCha8Rng| -> Vec<f32> {
        let d = Normal::new(0.0, std.max(0.0)).expect("a non-negative spread");
        (0..count).map(|_| d.sample(rng) as f32).collect()
    };
    let uniform = |low: f64, high: f64, rng: &mut ChaCha8Rng| -> Vec<f32> {
        let d = Uniform::new(low, high).expect("low < high");
        (0..count).map(|_| d.sample(rng) as f32).collect()
    };
    let data = match init {
        Init::Zeros => vec![0.0; count],
        Init::Ones => vec![1.0; count],
        Init::Constant(c) => vec![c as f32; count],
        Init::Normal { mean, std } => normal(std, rng)
            .into_iter()
            .map(|x| x + mean as f32)
            .collect(),
        Init::Uniform { low, high } => uniform(low, high, rng),
        Init::XavierNormal => normal((2.0 / (fan_in + fan_out)).sqrt(), rng),
        Init::XavierUniform => {
            let a = (6.0 / (fan_in + fan_out)).sqrt();
            uniform(-a, a, rng)
        }
        Init::HeNormal => normal((2.0 / fan_in).sqrt(), rng),
        Init::HeUniform => {
            let a = (6.0 / fan_in).sqrt();
            uniform(-a, a, rng)
        }
    };
    Tensor::new(dims, data)
}

//! Gradient checking: the symbolic gradients of a graph, evaluated by the reference interpreter
//! in f64, against central finite differences of the loss. Coordinates are sampled when a
//! parameter is large; a coordinate where the loss has a kink nearby (relu at 0, a tie in a
//! max) shows as two step sizes disagreeing, and is replaced by another rather than excused
//! by a looser bound.

use crate::autodiff;
use crate::interp;
use crate::ir::Graph;
use crate::tensor::{Bindings, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Below this norm a gradient is compared absolutely rather than relatively: finite differences
/// carry about 1e-10 of rounding noise, which swamps a gradient that is truly zero (a bias
/// followed by batch normalization) or nearly so.
const FLOOR: f64 = 1e-4;

/// Central differences of size h and h/2 must agree this closely (relative, above 1e-6) or the
/// coordinate is taken to be near a kink.
const KINK: f64 = 1e-4;

/// The outcome for one parameter.
#[derive(Clone, Debug)]
pub struct ParamCheck {
    pub name: String,
    /// ‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, 1e-4) over the checked coordinates.
    pub error: f64,
    /// How many coordinates were compared.
    pub checked: usize,
}

/// A forward graph with everything it reads, in f64.
pub struct Problem<'a> {
    pub forward: &'a Graph,
    pub batch: usize,
    pub inputs: Vec<Tensor<f64>>,
    pub params: Vec<Tensor<f64>>,
    pub states: Vec<Tensor<f64>>,
    pub seed: u64,
}

impl Problem<'_> {
    fn loss(&self, params: &[Tensor<f64>]) -> f64 {
        let loss = self
            .forward
            .result("loss")
            .expect("forward graphs have a loss");
        let bind = Bindings {
            batch: self.batch,
            inputs: &self.inputs,
            params,
            states: &self.states,
            hypers: &[],
            seed: self.seed,
        };
        interp::run(self.forward, &bind, &[loss], false).expect("unchecked runs always finish")[0]
            .item()
    }
}

/// Checks every parameter's gradient at up to `samples` coordinates each.
pub fn check(problem: &Problem, samples: usize) -> Vec<ParamCheck> {
    let grads = autodiff::differentiate(problem.forward);
    let wanted: Vec<_> = grads.gradients.iter().map(|&(_, id)| id).collect();
    let bind = Bindings {
        batch: problem.batch,
        inputs: &problem.inputs,
        params: &problem.params,
        states: &problem.states,
        hypers: &[],
        seed: problem.seed,
    };
    let analytic =
        interp::run(&grads, &bind, &wanted, false).expect("unchecked runs always finish");
    let mut rng = ChaCha8Rng::seed_from_u64(problem.seed ^ 0x6772_6164);
    let mut results = Vec::new();
    for (param, gradient) in analytic.iter().enumerate() {
        let size = gradient.data.len();
        let mut coordinates: Vec<usize> = if size <= samples {
            (0..size).collect()
        } else {
            (0..samples).map(|_| rng.random_range(0..size)).collect()
        };
        let (mut a, mut n) = (Vec::new(), Vec::new());
        let mut attempts = 0;
        while let Some(j) = coordinates.pop() {
            attempts += 1;
            match numeric(problem, param, j) {
                Some(value) => {
                    a.push(gradient.data[j]);
                    n.push(value);
                }
                // A kink within reach: try another coordinate, a bounded number of times.
                None if attempts < 4 * samples => coordinates.push(rng.random_range(0..size)),
                None => {}
            }
        }
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff: Vec<f64> = a.iter().zip(&n).map(|(x, y)| x - y).collect();
        let error = norm(&diff) / norm(&a).max(norm(&n)).max(FLOOR);
        results.push(ParamCheck {
            name: problem.forward.params[param].name.clone(),
            error,
            checked: a.len(),
        });
    }
    results
}

/// The central difference of the loss along coordinate `j` of parameter `param`, or `None`
/// when steps of h and h/2 disagree, which means a kink lies within reach.
fn numeric(problem: &Problem, param: usize, j: usize) -> Option<f64> {
    let mut params = problem.params.clone();
    let original = params[param].data[j];
    let mut central = |h: f64| {
        params[param].data[j] = original + h;
        let up = problem.loss(&params);
        params[param].data[j] = original - h;
        let down = problem.loss(&params);
        params[param].data[j] = original;
        (up - down) / (2.0 * h)
    };
    let h = 1e-4 * original.abs().max(1.0);
    let (coarse, fine) = (central(h), central(h / 2.0));
    let scale = coarse.abs().max(fine.abs()).max(1e-6);
    ((coarse - fine).abs() <= KINK * scale).then_some(fine)
}

/// Random tensors for a graph's declarations: inputs and parameters uniform in [−1, 1] (class
/// labels uniform over the classes, given as `classes[i]` for input i), states at zero (a
/// training step's loss does not read them).
pub fn random_bindings(
    graph: &Graph,
    batch: usize,
    classes: &[Option<u64>],
    seed: u64,
) -> [Vec<Tensor<f64>>; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = |dims: Vec<usize>| {
        let count = dims.iter().product();
        Tensor::new(
            dims,
            (0..count)
                .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                .collect(),
        )
    };
    let mut inputs = Vec::new();
    for (i, decl) in graph.inputs.iter().enumerate() {
        let dims = crate::tensor::dims(&decl.shape, batch);
        inputs.push(match classes.get(i).copied().flatten() {
            Some(n) => {
                let t = uniform(dims);
                Tensor::new(
                    t.dims,
                    t.data
                        .iter()
                        .map(|u| ((u + 1.0) / 2.0 * n as f64).floor().min(n as f64 - 1.0))
                        .collect(),
                )
            }
            None => uniform(dims),
        });
    }
    let params = graph
        .params
        .iter()
        .map(|d| uniform(crate::tensor::dims(&d.shape, batch)))
        .collect();
    let states = graph
        .states
        .iter()
        .map(|d| Tensor::full(&crate::tensor::dims(&d.shape, batch), 0.0))
        .collect();
    [inputs, params, states]
}

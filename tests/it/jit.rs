//! The Cranelift backend against the reference interpreter: the same step, the same bindings,
//! every result within 1e-5 relative to the tensor's largest element (absolute below 1e-3),
//! at batch sizes 1, 7 (a partial batch) and 8. A sum that cancels to nearly nothing (a bias
//! before batchnorm has a gradient of exactly zero) is only rounding noise in f32, whose size
//! depends on the summation order: there the compiled value must be as close to the exact
//! (f64) one as the f32 interpreter's values of that tensor are, within a factor of 10.

use crate::load;
use netc::codegen::Compiled;
use netc::interp::{self, Bindings, Tensor};
use std::path::Path;

fn classes(model: &netc::check::Model) -> Vec<Option<u64>> {
    let mut classes = vec![None; model.inputs.len()];
    if let Some(label) = &model.label {
        classes.push(match label.kind {
            netc::check::model::LabelKind::Class(n) => Some(n),
            netc::check::model::LabelKind::Target(_) => None,
        });
    }
    classes
}

fn f32s(tensors: Vec<Tensor<f64>>) -> Vec<Tensor<f32>> {
    tensors.iter().map(Tensor::cast).collect()
}

#[test]
fn compiled_steps_match_the_interpreter() {
    let mut compiled_models = 0;
    // The models, and the per-operation cases with their odd shapes and broadcasts.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = ["models", "tests/gradcheck"]
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(root.join(dir))
                .expect("directory exists")
                .map(|e| e.expect("readable").path())
        })
        .collect();
    files.sort();
    let graphs = 2 * files.len();
    for path in files {
        let source = load(&path);
        let model = netc::front_end(&source).0.expect("models check").1;
        for graph in [
            netc::train_graph(&model, &source),
            netc::eval_graph(&model, &source),
        ] {
            let wanted: Vec<_> = graph.results().collect();
            let mut compiled = Compiled::new(&graph, 8, &wanted, false)
                .unwrap_or_else(|why| panic!("{}: {}", source.name, why));
            compiled_models += 1;
            for batch in [1, 7, 8] {
                // Inputs are random; weights and states come from the model's own initialization,
                // so values have the magnitudes training sees.
                let [inputs, _, _] =
                    netc::gradcheck::random_bindings(&graph, batch, &classes(&model), batch as u64);
                let inputs = f32s(inputs);
                let session =
                    netc::runtime::Session::new(&model, &source, 5).expect("fits in memory");
                let params = session.params.clone();
                let states = session.states[..graph.states.len()].to_vec();
                let lr = model.optimizer.lr();
                let hypers = [lr, 2.0];
                let bind = Bindings {
                    batch,
                    inputs: &inputs,
                    params: &params,
                    states: &states,
                    hypers: &hypers,
                    seed: 3,
                };
                let expected = interp::run(&graph, &bind, &wanted, false).expect("runs");
                let got = compiled.run(&bind, &wanted).expect("bindings fit");
                let wide = |t: &[Tensor<f32>]| t.iter().map(Tensor::cast).collect::<Vec<_>>();
                let (inputs64, params64, states64) = (wide(&inputs), wide(&params), wide(&states));
                let exact = interp::run(
                    &graph,
                    &Bindings {
                        batch,
                        inputs: &inputs64,
                        params: &params64,
                        states: &states64,
                        hypers: &hypers,
                        seed: 3,
                    },
                    &wanted,
                    false,
                )
                .expect("runs");
                let adam = matches!(model.optimizer, netc::check::model::Optimizer::Adam { .. });
                let first_update = graph.outputs.len() + graph.gradients.len();
                for (k, (((e, g), id), x)) in expected
                    .iter()
                    .zip(&got)
                    .zip(&wanted)
                    .zip(&exact)
                    .enumerate()
                {
                    assert_eq!(e.dims, g.dims);
                    // Where a gradient is of the order of Adam's ε, its step m̂/(√v̂ + ε) is
                    // ill-conditioned: such elements of Adam's parameter updates are skipped.
                    let gradient = (adam
                        && (first_update..first_update + graph.param_updates.len()).contains(&k))
                    .then(|| &expected[graph.outputs.len() + (k - first_update)]);
                    // Relative to the tensor's largest element (and absolute below 1e-3): a matrix
                    // product sums in another order, and an element that cancels to near zero
                    // carries the rounding of the terms it cancelled.
                    let scale = e.data.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                    let exact: &[f64] = &x.data;
                    let noise = 10.0
                        * e.data
                            .iter()
                            .zip(exact)
                            .map(|(&v, w)| (v as f64 - w).abs())
                            .fold(0.0, f64::max);
                    for (j, (x, y)) in e.data.iter().zip(&g.data).enumerate() {
                        if gradient.is_some_and(|grad| grad.data[j].abs() < 1e-6) {
                            continue;
                        }
                        let (x, y) = (*x, *y);
                        assert!(
                            (x - y).abs() <= 1e-5 * scale || (y as f64 - exact[j]).abs() <= noise,
                            "{} batch {batch} node {id}: interpreter {x}, compiled {y}, exact {}",
                            source.name,
                            exact[j]
                        );
                    }
                }
            }
        }
    }
    assert_eq!(compiled_models, graphs, "every graph compiles");
}

/// A binding that does not fit is rejected before any generated code runs.
#[test]
fn mismatched_bindings_are_rejected() {
    let source = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/xor.net"));
    let model = netc::front_end(&source).0.expect("checks").1;
    let graph = netc::train_graph(&model, &source);
    let wanted: Vec<_> = graph.results().collect();
    let mut compiled = Compiled::new(&graph, 4, &wanted, false).expect("compiles");
    let session = netc::runtime::Session::new(&model, &source, 0).expect("fits in memory");
    let run =
        |compiled: &mut Compiled, batch: usize, x: Tensor<f32>, wanted: &[netc::ir::NodeId]| {
            let inputs = [x, Tensor::full(&[batch, 1], 0.0)];
            let bind = Bindings {
                batch,
                inputs: &inputs,
                params: &session.params,
                states: &session.states,
                hypers: &[0.1, 1.0],
                seed: 0,
            };
            compiled.run(&bind, wanted)
        };
    assert!(run(&mut compiled, 4, Tensor::full(&[4, 2], 0.5), &wanted).is_ok());
    let too_big = run(&mut compiled, 5, Tensor::full(&[5, 2], 0.5), &wanted)
        .expect_err("batch above the compiled size");
    assert!(too_big.0.contains("1 to 4"), "{}", too_big.0);
    let wrong = run(&mut compiled, 4, Tensor::full(&[4, 3], 0.5), &wanted)
        .expect_err("three features for two");
    assert!(wrong.0.contains("`x`"), "{}", wrong.0);
    let other =
        run(&mut compiled, 4, Tensor::full(&[4, 2], 0.5), &wanted[..1]).expect_err("other results");
    assert!(other.0.contains("compiled to keep"), "{}", other.0);
}

/// Elementwise kernels (exp, sigmoid and tanh inline, four lanes and the scalar tail) and softmax
/// (split between the workers, four rows at a time and the rest one by one, with the
/// cross-entropy terms and their sums after it) give the interpreter's bits exactly, over
/// inputs that cover exp's range and its edges.
#[test]
fn exp_and_tanh_kernels_match_the_interpreter_bit_for_bit() {
    // Nine rows: softmax runs four rows at a time, one per lane, and the ninth alone.
    let (rows, width) = (9, 911);
    let mut values: Vec<f32> = (0..rows * width)
        .map(|i| (i as f32 - (rows * width / 2) as f32) * 0.03)
        .collect();
    values[..6].copy_from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 88.8, -88.0, 0.0]);
    let cases = [
        (
            "y = exp(x) + sigmoid(x) * 3 - exp(-x / 7)\n loss mse(y, t)",
            "target t: [911]",
        ),
        (
            "y = tanh(x) * 2 + tanh(x * 0.01) + tanh(-x / 40)\n loss mse(y, t)",
            "target t: [911]",
        ),
        (
            "y = softmax(x) + log_softmax(x * 0.5)\n loss mse(y, t)",
            "target t: [911]",
        ),
        // Both of the same input: one kernel computes them from the same exponentials.
        (
            "y = softmax(x) * 2 + log_softmax(x)\n loss mse(y, t)",
            "target t: [911]",
        ),
        // The loss terms and their sum along each row, in the softmax kernel's epilogue.
        ("loss cross_entropy(x * 0.5, t)", "label t: class(911)"),
    ];
    for (body, target) in cases {
        let source = netc::source::SourceFile::new(
            "exp.net",
            format!(
                "net e {{\n input x: [{width}]\n {target}\n {body}\n optimizer sgd(lr: 0.1)\n}}\n"
            ),
        );
        let model = netc::front_end(&source).0.expect("checks").1;
        let graph = netc::eval_graph(&model, &source);
        let wanted: Vec<_> = graph.results().collect();
        let mut compiled = Compiled::new(&graph, rows, &wanted, false).expect("compiles");
        // Cross-entropy's loss is a mean over all rows: its inputs stay finite, since one NaN
        // would make the loss NaN whatever the kernels computed.
        let (x, labels) = if target.starts_with("label") {
            let finite = values.iter().map(|&v| if v.is_finite() { v } else { 1.5 });
            let labels = (0..rows).map(|r| (r * 97 % width) as f32).collect();
            (finite.collect(), Tensor::new(vec![rows], labels))
        } else {
            (values.clone(), Tensor::full(&[rows, width], 0.0))
        };
        let inputs = [Tensor::new(vec![rows, width], x), labels];
        let bind = Bindings {
            batch: rows,
            inputs: &inputs,
            params: &[],
            states: &[],
            hypers: &[],
            seed: 0,
        };
        let expected = interp::run(&graph, &bind, &wanted, false).expect("runs");
        let got = compiled.run(&bind, &wanted).expect("bindings fit");
        for (e, g) in expected.iter().zip(&got) {
            for (i, (x, y)) in e.data.iter().zip(&g.data).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "{body}: element {i}: interpreter {x}, compiled {y}"
                );
            }
        }
    }
}

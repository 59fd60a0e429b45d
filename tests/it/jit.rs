//! The Cranelift backend against the reference interpreter: the same step, the same bindings,
//! every result within 1e-5 relative to the tensor's largest element (absolute below 1e-3),
//! at batch sizes 1, 7 (a partial batch) and 8. A sum that cancels to nearly nothing (a bias
//! before batchnorm has a gradient of exactly zero) is only rounding noise in f32, whose size
//! depends on the summation order: there the compiled value must be as close to the exact
//! (f64) one as the f32 interpreter's values of that tensor are, within a factor of 10.

use crate::load;
use netc::codegen::{Compiled, Pool, Schedule};
use netc::interp;
use netc::ir::{NodeId, Op};
use netc::step::Step;
use netc::tensor::{Bindings, Tensor};
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

/// Values for the states (optimizer moments, momentum, running statistics) that are not the
/// zeros a run starts from, so that a kernel misreading them cannot hide behind a product with
/// zero; positive, as a variance must be.
fn nonzero_states(states: &[Tensor<f32>]) -> Vec<Tensor<f32>> {
    let mut seed = 0x2545_f491u32;
    states
        .iter()
        .map(|t| {
            let data = (0..t.data.len())
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    0.05 + 0.45 * (seed >> 8) as f32 / (1u32 << 24) as f32
                })
                .collect();
            Tensor::new(t.dims.clone(), data)
        })
        .collect()
}

/// Every model's and every per-operation file's training and evaluation steps, exactly as
/// `netc run` compiles them, on one worker and on three taking their pieces in turn (the same
/// bits), for three consecutive steps from non-zero state, against the interpreter.
#[test]
fn compiled_steps_match_the_interpreter() {
    let mut compiled_steps = 0;
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
    let steps = 4 * files.len();
    for path in files {
        let source = load(&path);
        let model = netc::front_end(&source).0.expect("models check").1;
        // Weights from the model's own initialization, so values have training's magnitudes.
        let session = netc::runtime::Session::new(&model, &source, 5).expect("fits in memory");
        // The whole training step, the evaluation graph, and the two halves a data-parallel
        // run trains with.
        for (step, runs) in [
            (Step::train(&model, &source), 3),
            (Step::eval(&model, &source), 1),
            (Step::gradients(&model, &source), 1),
            (Step::update(&model, &source), 2),
        ] {
            let graph = &step.graph;
            let compile = |pool| {
                Compiled::new(&step, 8, false, &pool)
                    .unwrap_or_else(|why| panic!("{}: {}", source.name, why))
            };
            let mut compiled = compile(Pool::new(1));
            let mut three = compile(Pool::with_schedule(3, Schedule::Strided));
            compiled_steps += 1;
            for batch in [1, 7, 8] {
                let [inputs, _, _] =
                    netc::gradcheck::random_bindings(graph, batch, &classes(&model), batch as u64);
                let inputs = f32s(inputs);
                let mut params = session.params.clone();
                let mut states = nonzero_states(&session.states[..graph.states.len()]);
                for t in 1..=runs {
                    // Two steps per epoch of a three-epoch run, so schedules move.
                    let hypers = [model.optimizer.lr, t as f64, 2.0, 3.0];
                    let bind = Bindings {
                        batch,
                        inputs: &inputs,
                        params: &params,
                        states: &states,
                        hypers: &hypers,
                        seed: 3,
                    };
                    let expected = interp::run(graph, &bind, &step.results, false).expect("runs");
                    let one = compiled.run(&bind).expect("bindings fit");
                    let got = three.run(&bind).expect("bindings fit");
                    let bits = |t: &[Tensor<f32>]| -> Vec<u32> {
                        t.iter()
                            .flat_map(|t| t.data.iter().map(|v| v.to_bits()))
                            .collect()
                    };
                    assert!(
                        bits(&one) == bits(&got),
                        "{}: one worker and three give other bits",
                        source.name
                    );
                    let wide = |t: &[Tensor<f32>]| t.iter().map(Tensor::cast).collect::<Vec<_>>();
                    let (inputs64, params64, states64) =
                        (wide(&inputs), wide(&params), wide(&states));
                    let bind64 = Bindings {
                        batch,
                        inputs: &inputs64,
                        params: &params64,
                        states: &states64,
                        hypers: &hypers,
                        seed: 3,
                    };
                    let exact = interp::run(graph, &bind64, &step.results, false).expect("runs");
                    // Where a gradient is of the order of an adaptive optimizer's ε, its step
                    // (Adam's m̂/(√v̂ + ε)) is ill-conditioned: such elements of the parameter
                    // updates are skipped.
                    let adam = model.optimizer.is_adaptive();
                    let gradients: Vec<_> = graph.gradients.iter().map(|&(_, id)| id).collect();
                    let gradient_values = if adam {
                        interp::run(graph, &bind, &gradients, false).expect("runs")
                    } else {
                        Vec::new()
                    };
                    let first = step.first_update();
                    for (k, (((e, g), id), x)) in expected
                        .iter()
                        .zip(&got)
                        .zip(&step.results)
                        .zip(&exact)
                        .enumerate()
                    {
                        assert_eq!(e.dims, g.dims);
                        let gradient = graph
                            .param_updates
                            .get(k.wrapping_sub(first))
                            .and_then(|&(p, _)| graph.gradients.iter().position(|&(q, _)| q == p))
                            .and_then(|i| gradient_values.get(i));
                        // Relative to the tensor's largest element (and absolute below 1e-3): a
                        // matrix product sums in another order, and an element that cancels to
                        // near zero carries the rounding of the terms it cancelled.
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
                                (x - y).abs() <= 1e-5 * scale
                                    || (y as f64 - exact[j]).abs() <= noise,
                                "{} batch {batch} step {t} node {id}: interpreter {x}, compiled {y}, exact {}",
                                source.name,
                                exact[j]
                            );
                        }
                    }
                    // The next step starts from the interpreter's updates, as training would.
                    let mut updates = expected[first..].iter().cloned();
                    for &(p, _) in &graph.param_updates {
                        params[p] = updates.next().expect("an update per parameter");
                    }
                    for &(s, _) in &graph.state_updates {
                        states[s] = updates.next().expect("an update per state");
                    }
                }
            }
        }
    }
    assert_eq!(compiled_steps, steps, "every step compiles");
}

/// A binding that does not fit is rejected before any generated code runs.
#[test]
fn mismatched_bindings_are_rejected() {
    let source = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/xor.net"));
    let model = netc::front_end(&source).0.expect("checks").1;
    let step = Step::train(&model, &source);
    let mut compiled = Compiled::new(&step, 4, false, &Pool::new(2)).expect("compiles");
    let session = netc::runtime::Session::new(&model, &source, 0).expect("fits in memory");
    let run = |compiled: &mut Compiled, batch: usize, x: Tensor<f32>| {
        let inputs = [x, Tensor::full(&[batch, 1], 0.0)];
        let bind = Bindings {
            batch,
            inputs: &inputs,
            params: &session.params,
            states: &session.states,
            hypers: &[0.1, 1.0, 1.0, 1.0],
            seed: 0,
        };
        compiled.run(&bind)
    };
    assert!(run(&mut compiled, 4, Tensor::full(&[4, 2], 0.5)).is_ok());
    let too_big = run(&mut compiled, 5, Tensor::full(&[5, 2], 0.5))
        .expect_err("batch above the compiled size");
    assert!(too_big.0.contains("1 to 4"), "{}", too_big.0);
    let wrong =
        run(&mut compiled, 4, Tensor::full(&[4, 3], 0.5)).expect_err("three features for two");
    assert!(wrong.0.contains("`x`"), "{}", wrong.0);
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
        // Sigmoid and tanh of a row, alone or plus a constant, a bias along the row or one
        // value per row (see `codegen::rows`).
        ("y = sigmoid(x)\n loss mse(y, t)", "target t: [911]"),
        ("y = tanh(x + 0.25)\n loss mse(y, t)", "target t: [911]"),
        (
            "param b: [911]\n y = tanh(x + b)\n z = sigmoid(b + x)\n loss mse(y + z, t)",
            "target t: [911]",
        ),
        (
            "param c: [3, 1]\n y = sigmoid(v + c)\n z = tanh(c + v)\n loss mse(y * z, t)",
            "input v: [3, 911]\n target t: [3, 911]",
        ),
        // One flat row, in pieces.
        (
            "y = sigmoid(v)\n loss mse(y, t)",
            "input v: [6, 911]\n target t: [6, 911]",
        ),
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
        let step = Step::keeping(graph.clone(), wanted.clone());
        let mut compiled = Compiled::new(&step, rows, false, &Pool::new(2)).expect("compiles");
        // Cross-entropy's loss is a mean over all rows: its inputs stay finite, since one NaN
        // would make the loss NaN whatever the kernels computed.
        let (x, labels) = if target.starts_with("label") {
            let finite = values.iter().map(|&v| if v.is_finite() { v } else { 1.5 });
            let labels = (0..rows).map(|r| (r * 97 % width) as f32).collect();
            (finite.collect(), Tensor::new(vec![rows], labels))
        } else {
            (values.clone(), Tensor::full(&[rows, width], 0.0))
        };
        // `x` and `t` as above; any other input of values from all over the range.
        let inputs: Vec<Tensor<f32>> = (graph.inputs.iter())
            .map(|decl| {
                let dims = netc::tensor::dims(&decl.shape, rows);
                match decl.name.as_str() {
                    "x" => Tensor::new(dims, x.clone()),
                    "t" if dims == labels.dims => labels.clone(),
                    _ => {
                        let n = dims.iter().product::<usize>();
                        let cycle = values.iter().cycle().skip(7);
                        Tensor::new(dims, cycle.take(n).copied().collect())
                    }
                }
            })
            .collect();
        // Parameters of values from all over the range, NaN and infinities included.
        let params: Vec<Tensor<f32>> = (graph.params.iter())
            .map(|decl| {
                let dims = netc::tensor::dims(&decl.shape, rows);
                let n = dims.iter().product::<usize>();
                Tensor::new(dims, values.iter().step_by(3).take(n).copied().collect())
            })
            .collect();
        let bind = Bindings {
            batch: rows,
            inputs: &inputs,
            params: &params,
            states: &[],
            hypers: &[],
            seed: 0,
        };
        let expected = interp::run(&graph, &bind, &wanted, false).expect("runs");
        let got = compiled.run(&bind).expect("bindings fit");
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

/// 2×2 pooling whose windows tile the input runs four windows at a time (`kernels::pool`):
/// its forward pass and both gradients (the maximum's to the window's first maximum), bit for
/// bit the interpreter's, on rows of 5 windows (a vector and one left over) and of 8 (two
/// vectors), over ties, signed zeros, NaN and infinities; and tiling 3×3 windows' average
/// gradient, written once per element. A 1×1 convolution of one channel (one product per element, so the same bits
/// on both engines) gives the pooling a parameter to send its gradient to, and the loss's
/// gradient is elementwise (no product, whose sums would be added in another order).
#[test]
fn tiled_pooling_matches_the_interpreter_bit_for_bit() {
    // (pooling, window, input rows and columns); a 3×3 average's gradient writes each element
    // once too, one window at a time.
    for (pool, k, [height, width]) in [
        ("maxpool", 2, [12, 10]),
        ("avgpool", 2, [12, 10]),
        ("maxpool", 2, [6, 16]),
        ("avgpool", 2, [6, 16]),
        ("avgpool", 3, [12, 9]),
    ] {
        let source = netc::source::SourceFile::new(
            "pool.net",
            format!(
                "net p {{\n input x: [1, {height}, {width}]\n target t: [2, {}, {}]\n \
                 layers {{ conv2d(2, kernel: 1)  {pool}({k}) }}\n loss mse\n \
                 optimizer sgd(lr: 0.1)\n}}\n",
                height / k,
                width / k
            ),
        );
        let model = netc::front_end(&source).0.expect("checks").1;
        let step = Step::train(&model, &source);
        let graph = step.graph.clone();
        let pooling: Vec<NodeId> = (0..graph.nodes.len() as u32)
            .map(NodeId)
            .filter(|&id| matches!(graph.node(id).op, Op::Pool(..) | Op::PoolGrad(..)))
            .collect();
        assert_eq!(pooling.len(), 2);
        let step = Step::keeping(graph.clone(), pooling.clone());
        let batch = 5;
        let mut compiled = Compiled::new(&step, batch, false, &Pool::new(2)).expect("compiles");
        let session = netc::runtime::Session::new(&model, &source, 5).expect("fits in memory");
        let pixels = batch * height * width;
        // Ties, signed zeros and (in the forward pass only: they make the loss NaN, and every
        // gradient with it) NaN and infinities.
        let specials = [
            -0.0,
            0.0,
            3.0,
            3.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for finite in [4, specials.len()] {
            let x: Vec<f32> = (0..pixels)
                .map(|i| match i % 23 {
                    k if k < finite && i % 3 == 0 => specials[k],
                    k => ((k as f32) * 0.71).sin() * 5.0,
                })
                .collect();
            let pooled = batch * 2 * (height / k) * (width / k);
            let inputs = [
                Tensor::new(vec![batch, 1, height, width], x),
                Tensor::new(
                    vec![batch, 2, height / k, width / k],
                    (0..pooled).map(|i| (i as f32 * 0.37).cos()).collect(),
                ),
            ];
            let hypers = [0.1, 1.0, 2.0, 3.0];
            let bind = Bindings {
                batch,
                inputs: &inputs,
                params: &session.params,
                states: &[],
                hypers: &hypers,
                seed: 0,
            };
            let expected = interp::run(&graph, &bind, &pooling, false).expect("runs");
            let got = compiled.run(&bind).expect("bindings fit");
            for ((e, g), id) in expected.iter().zip(&got).zip(&pooling) {
                assert!(finite > 4 || e.data.iter().all(|v| v.is_finite()));
                for (i, (x, y)) in e.data.iter().zip(&g.data).enumerate() {
                    assert!(
                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                        "{pool} {height}×{width}, node {id}, element {i}: interpreter {x}, \
                         compiled {y}"
                    );
                }
            }
        }
    }
}

/// Convolution and pooling forward, on both engines, against values computed by hand: an
/// asymmetric kernel (a flipped one gives other numbers), stride 2 and padding 1, and pooling
/// over negative inputs (padding taken for zeros would win the maximum).
#[test]
fn forward_convolution_and_pooling_match_hand_computed_values() {
    // x[r][c] = 4r + c + 1 (+ `shift`), one 4×4 image.
    let image = |shift: f32| {
        Tensor::new(
            vec![1, 1, 4, 4],
            (1..=16).map(|v| v as f32 + shift).collect(),
        )
    };
    // (layer, target shape, added to every pixel, parameters, expected output)
    type Case<'a> = (&'a str, &'a str, f32, Vec<Tensor<f32>>, &'a [f32]);
    let cases: [Case; 3] = [
        (
            "conv2d(1, 3, stride: 2, padding: 1, bias: false)",
            "[1, 2, 2]",
            0.0,
            // The kernel [[1, 2, 0], [0, -1, 0], [0, 0, 3]], for cross-correlation:
            // out[i][j] = Σ w[a][b] · x[2i − 1 + a][2j − 1 + b], zero outside the image.
            vec![Tensor::new(
                vec![1, 1, 3, 3],
                vec![1.0, 2.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 3.0],
            )],
            &[17.0, 21.0, 43.0, 57.0],
        ),
        (
            "maxpool(2, padding: 1)",
            "[1, 3, 3]",
            -20.0,
            vec![],
            &[-19.0, -17.0, -16.0, -11.0, -9.0, -8.0, -7.0, -5.0, -4.0],
        ),
        (
            // Padding counts as zeros: every window divides by 4.
            "avgpool(2, padding: 1)",
            "[1, 3, 3]",
            0.0,
            vec![],
            &[0.25, 1.25, 1.0, 3.5, 8.5, 5.0, 3.25, 7.25, 4.0],
        ),
    ];
    for (layer, target, shift, params, expected) in cases {
        let source = netc::source::SourceFile::new(
            "hand.net",
            format!(
                "net hand {{\n input x: [1, 4, 4]\n target y: {target}\n layers {{ {layer} }}\n loss mse\n optimizer sgd(lr: 0.1)\n}}\n"
            ),
        );
        let model = netc::front_end(&source).0.expect("checks").1;
        let step = Step::eval(&model, &source);
        let output = step.output().expect("an output");
        let dims = netc::tensor::dims(&step.graph.inputs[1].shape, 1);
        let inputs = [image(shift), Tensor::full(&dims, 0.0)];
        let bind = Bindings {
            batch: 1,
            inputs: &inputs,
            params: &params,
            states: &[],
            hypers: &[],
            seed: 0,
        };
        let interpreted = interp::run(&step.graph, &bind, &step.results, false).expect("runs");
        let compiled = Compiled::new(&step, 1, false, &Pool::new(1))
            .expect("compiles")
            .run(&bind)
            .expect("bindings fit");
        for (engine, results) in [("interpreter", interpreted), ("compiled", compiled)] {
            assert_eq!(results[output].data, expected, "{layer} on the {engine}");
        }
    }
}

/// A run that reports finished results reports each once, with its final values, in the order
/// `finishing_order` gives; with ticks between kernels, gradients are reported while later
/// kernels are still to run (what data-parallel runs overlap their sums with).
#[test]
fn results_are_reported_as_their_kernels_finish() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["mlp", "lenet_bn", "resnet"] {
        let source = load(&root.join(format!("models/{name}.net")));
        let model = netc::front_end(&source).0.expect("models check").1;
        let session = netc::runtime::Session::new(&model, &source, 5).expect("fits in memory");
        let step = Step::gradients(&model, &source);
        let batch = 3;
        let [inputs, _, _] =
            netc::gradcheck::random_bindings(&step.graph, batch, &classes(&model), 1);
        let inputs = f32s(inputs);
        let bind = Bindings {
            batch,
            inputs: &inputs,
            params: &session.params,
            states: &session.states[..step.graph.states.len()],
            hypers: &[model.optimizer.lr, 1.0],
            seed: 3,
        };
        for ticks in [true, false] {
            let mut compiled = Compiled::new(&step, batch, ticks, &Pool::new(2)).expect("compiles");
            let mut reported = Vec::new();
            let mut results = Vec::new();
            compiled
                .run_reporting(&bind, &mut results, &mut |i, values| {
                    reported.push((i, values.to_vec()))
                })
                .expect("bindings fit");
            let order: Vec<usize> = reported.iter().map(|(i, _)| *i).collect();
            assert_eq!(order, compiled.finishing_order(), "{name}");
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                (0..step.results.len()).collect::<Vec<_>>(),
                "{name}"
            );
            for (i, values) in &reported {
                assert_eq!(values, &results[*i].data, "{name}: result {i}");
            }
            // The first parameter's gradient is the last the backward pass finishes; with
            // ticks, some other result comes before it.
            let first_gradient = step.first_update();
            let at = order
                .iter()
                .position(|&i| i == first_gradient)
                .expect("reported");
            if ticks {
                assert!(
                    at > 0 && at + 1 >= order.len() - step.graph.state_updates.len(),
                    "{name}: {order:?}"
                );
            }
        }
    }
}

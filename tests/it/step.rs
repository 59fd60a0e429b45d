//! The training step: simplification keeps every value, and small cases match closed forms
//! worked out by hand.

use crate::load;
use netc::check::model::LabelKind;
use netc::interp;
use netc::tensor::{Bindings, Tensor};
use netc::{autodiff, gradcheck, ir, opt};
use std::path::Path;

fn model(file: &str) -> (netc::check::Model, netc::source::SourceFile) {
    let source = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(file));
    let (checked, _) = netc::front_end(&source);
    (checked.expect("model checks").1, source)
}

fn classes(model: &netc::check::Model) -> Vec<Option<u64>> {
    let mut classes = vec![None; model.inputs.len()];
    if let Some(label) = &model.label {
        classes.push(match label.kind {
            LabelKind::Class(n) => Some(n),
            LabelKind::Target(_) => None,
        });
    }
    classes
}

/// Every result of a step graph, in a fixed order.
fn results(graph: &ir::Graph, bind: &Bindings<f64>) -> Vec<Tensor<f64>> {
    let wanted: Vec<_> = graph.results().collect();
    interp::run(graph, bind, &wanted, false).expect("unchecked runs finish")
}

#[test]
fn simplification_keeps_every_value() {
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("models/")
    {
        let path = entry.expect("readable").path();
        let file = format!(
            "models/{}",
            path.file_name().expect("a file").to_string_lossy()
        );
        let (model, source) = model(&file);
        let forward = ir::build(&model, &source, ir::Mode::Train);
        let raw = autodiff::step::train_step(
            &autodiff::differentiate(&forward),
            &model.optimizer,
            &model.schedule,
        );
        let optimized = opt::optimize(&raw);
        assert!(
            optimized.nodes.len() < raw.nodes.len(),
            "{file}: nothing was simplified"
        );
        let [inputs, params, _] = gradcheck::random_bindings(&raw, 5, &classes(&model), 3);
        let states: Vec<Tensor<f64>> = raw
            .states
            .iter()
            .map(|d| Tensor::full(&netc::tensor::dims(&d.shape, 5), 0.5))
            .collect();
        let bind = Bindings {
            batch: 5,
            inputs: &inputs,
            params: &params,
            states: &states,
            hypers: &[0.1, 3.0, 2.0, 4.0],
            seed: 9,
        };
        let (a, b) = (results(&raw, &bind), results(&optimized, &bind));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            for (u, v) in x.data.iter().zip(&y.data) {
                assert!(
                    (u - v).abs() <= 1e-9 * u.abs().max(1.0),
                    "{file}: {u} became {v}"
                );
            }
        }
    }
}

/// With `loss mse(x @ w + b, y)`, d/dw = 2·Xᵀ(Xw + b − y)/n and d/db = 2·Σ(Xw + b − y)/n
/// (netc's mse is the plain mean of squares, without d2l's factor ½).
#[test]
fn linear_regression_gradient_is_the_closed_form() {
    let (model, source) = model("models/linreg.net");
    let graph = autodiff::differentiate(&ir::build(&model, &source, ir::Mode::Train));
    let n = 4;
    let x = Tensor::new(vec![n, 2], vec![1.0, 2.0, -1.0, 0.5, 3.0, -2.0, 0.0, 1.5]);
    let y = Tensor::new(vec![n, 1], vec![1.0, -2.0, 0.5, 3.0]);
    let w = Tensor::new(vec![2, 1], vec![0.3, -0.7]);
    let b = Tensor::new(vec![1], vec![0.2]);
    let bind = Bindings {
        batch: n,
        inputs: &[x.clone(), y.clone()],
        params: &[w.clone(), b.clone()],
        states: &[],
        hypers: &[],
        seed: 0,
    };
    let wanted: Vec<_> = graph.gradients.iter().map(|&(_, id)| id).collect();
    let got = interp::run(&graph, &bind, &wanted, false).expect("runs");
    let residual: Vec<f64> = (0..n)
        .map(|i| x.data[2 * i] * w.data[0] + x.data[2 * i + 1] * w.data[1] + b.data[0] - y.data[i])
        .collect();
    for j in 0..2 {
        let expected: f64 =
            2.0 * (0..n).map(|i| x.data[2 * i + j] * residual[i]).sum::<f64>() / n as f64;
        assert!(
            (got[0].data[j] - expected).abs() < 1e-12,
            "dw[{j}] = {} but Xᵀ(Xw−y)·2/n = {expected}",
            got[0].data[j]
        );
    }
    let expected_b = 2.0 * residual.iter().sum::<f64>() / n as f64;
    assert!((got[1].data[0] - expected_b).abs() < 1e-12);
}

/// One SGD step of softmax regression by hand: W ← W − lr·Xᵀ(softmax(XW + b) − onehot(y))/n.
#[test]
fn one_sgd_step_of_softmax_regression_matches_a_hand_computation() {
    let (model, source) = model("models/softmax.net");
    let graph = netc::train_graph(&model, &source);
    let (n, d, k) = (2, 784, 10);
    let x: Vec<f64> = (0..n * d)
        .map(|i| ((i * 37 % 101) as f64) / 101.0)
        .collect();
    let labels = [3.0, 7.0];
    let w: Vec<f64> = (0..d * k)
        .map(|i| ((i * 13 % 17) as f64 - 8.0) / 400.0)
        .collect();
    let b: Vec<f64> = (0..k).map(|i| i as f64 / 100.0).collect();
    let lr = 0.1;
    let inputs = [
        Tensor::new(vec![n, 1, 28, 28], x.clone()),
        Tensor::new(vec![n], labels.to_vec()),
    ];
    let params = [
        Tensor::new(vec![d, k], w.clone()),
        Tensor::new(vec![k], b.clone()),
    ];
    let bind = Bindings {
        batch: n,
        inputs: &inputs,
        params: &params,
        states: &[],
        hypers: &[lr, 1.0],
        seed: 0,
    };
    let wanted: Vec<_> = graph.param_updates.iter().map(|&(_, id)| id).collect();
    let got = interp::run(&graph, &bind, &wanted, false).expect("runs");
    // The hand computation.
    let mut delta = vec![0.0; n * k];
    for i in 0..n {
        let logits: Vec<f64> = (0..k)
            .map(|c| b[c] + (0..d).map(|j| x[i * d + j] * w[j * k + c]).sum::<f64>())
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        for c in 0..k {
            let p = (logits[c] - max).exp() / total;
            delta[i * k + c] = (p - f64::from(labels[i] as usize == c)) / n as f64;
        }
    }
    for j in 0..d {
        for c in 0..k {
            let grad: f64 = (0..n).map(|i| x[i * d + j] * delta[i * k + c]).sum();
            let expected = w[j * k + c] - lr * grad;
            assert!((got[0].data[j * k + c] - expected).abs() < 1e-12);
        }
    }
    for c in 0..k {
        let expected = b[c] - lr * (0..n).map(|i| delta[i * k + c]).sum::<f64>();
        assert!((got[1].data[c] - expected).abs() < 1e-12);
    }
}

fn inline(text: &str) -> (netc::check::Model, netc::source::SourceFile) {
    let source = netc::source::SourceFile::new("inline.net", text);
    let (checked, diagnostics) = netc::front_end(&source);
    let model = checked
        .unwrap_or_else(|| panic!("{}", netc::diagnostics::render(&source, &diagnostics)))
        .1;
    (model, source)
}

/// Batch normalization: a training step moves the running statistics 10% of the way to the
/// batch's mean and (biased) variance; evaluation normalizes with the running statistics.
#[test]
fn batchnorm_keeps_running_statistics_and_evaluates_with_them() {
    let (model, source) = inline(
        "net bn { input x: [2] target y: [2] layers { batchnorm(momentum: 0.1) } loss mse optimizer sgd(lr: 0.1) }",
    );
    let train = netc::train_graph(&model, &source);
    let x: Tensor<f64> = Tensor::new(vec![4, 2], vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 6.0, 40.0]);
    let y = Tensor::full(&[4, 2], 0.0);
    let params = [Tensor::full(&[2], 1.0), Tensor::full(&[2], 0.0)];
    let states = [
        Tensor::new(vec![2], vec![0.5, 0.5]),
        Tensor::new(vec![2], vec![2.0, 2.0]),
    ];
    let bind = Bindings {
        batch: 4,
        inputs: &[x.clone(), y.clone()],
        params: &params,
        states: &states,
        hypers: &[0.1, 1.0, 1.0, 1.0],
        seed: 0,
    };
    let wanted: Vec<_> = train.state_updates.iter().map(|&(_, id)| id).collect();
    let updated = interp::run(&train, &bind, &wanted, false).expect("runs");
    // Feature 0: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5. Feature 1: mean 25, variance 125.
    let expected = [
        [0.9 * 0.5 + 0.1 * 3.0, 0.9 * 0.5 + 0.1 * 25.0],
        [0.9 * 2.0 + 0.1 * 3.5, 0.9 * 2.0 + 0.1 * 125.0],
    ];
    for (got, want) in updated.iter().zip(expected) {
        for (g, w) in got.data.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "running statistic {g}, expected {w}");
        }
    }
    let eval = netc::eval_graph(&model, &source);
    let output = eval.result("output").expect("an output");
    let bind = Bindings {
        batch: 4,
        inputs: &[x.clone(), y],
        params: &params,
        states: &states,
        hypers: &[],
        seed: 0,
    };
    let out = &interp::run(&eval, &bind, &[output], false).expect("runs")[0];
    for (i, (&o, &v)) in out.data.iter().zip(&x.data).enumerate() {
        let expected = (v - 0.5) / (2.0f64 + 1e-5).sqrt();
        assert!(
            (o - expected).abs() < 1e-12,
            "element {i}: {o}, expected {expected}"
        );
    }
}

/// Dropout: in training each element is zeroed with probability p and the rest scaled by
/// 1/(1 − p), the mask fixed by the step's seed; in evaluation it is the identity.
#[test]
fn dropout_drops_p_scales_the_rest_and_is_off_in_evaluation() {
    let (model, source) =
        inline("net d { input x: [100] target y: [100] layers { dropout(0.3) } loss mse optimizer sgd(lr: 0.1) }");
    let forward = ir::build(&model, &source, ir::Mode::Train);
    let x: Tensor<f64> = Tensor::full(&[100, 100], 1.0);
    let y: Tensor<f64> = Tensor::full(&[100, 100], 0.0);
    let run = |graph: &ir::Graph, seed: u64| {
        let output = graph.result("output").expect("an output");
        let inputs = [x.clone(), y.clone()];
        let bind = Bindings {
            batch: 100,
            inputs: &inputs,
            params: &[],
            states: &[],
            hypers: &[],
            seed,
        };
        interp::run(graph, &bind, &[output], false)
            .expect("runs")
            .remove(0)
    };
    let mask = run(&forward, 1);
    let dropped = mask.data.iter().filter(|&&v| v == 0.0).count() as f64 / 10_000.0;
    assert!(
        (dropped - 0.3).abs() < 0.02,
        "dropped {dropped} of the elements"
    );
    assert!(mask
        .data
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
    assert_eq!(run(&forward, 1), mask, "the same seed gives the same mask");
    assert_ne!(run(&forward, 2), mask, "another step gives another mask");
    let eval = ir::build(&model, &source, ir::Mode::Eval);
    assert_eq!(run(&eval, 1), x, "evaluation passes its input through");
}

/// One step of `optimizer` on the loss `sum(w * 3)`, whose gradient is exactly 3 (or `3·w` for
/// `sum(w * w * 1.5)`): the new weight and the optimizer's new states, in the f64 interpreter.
fn one_step(optimizer: &str, loss: &str, w: f64, states: &[f64], step: f64) -> Vec<f64> {
    let (model, source) = inline(&format!(
        "net o {{ input x: [1] param w: [1] loss {loss} optimizer {optimizer} }}"
    ));
    let graph = netc::train_graph(&model, &source);
    assert_eq!(graph.states.len(), states.len(), "{optimizer}: its states");
    let states: Vec<Tensor<f64>> = states
        .iter()
        .map(|&s| Tensor::new(vec![1], vec![s]))
        .collect();
    let bind = Bindings {
        batch: 1,
        inputs: &[Tensor::full(&[1, 1], 0.0)],
        params: &[Tensor::new(vec![1], vec![w])],
        states: &states,
        hypers: &[0.01, step, 10.0, 5.0],
        seed: 0,
    };
    let wanted: Vec<_> = graph
        .results()
        .skip(graph.outputs.len() + graph.gradients.len())
        .collect();
    interp::run(&graph, &bind, &wanted, false)
        .expect("runs")
        .iter()
        .map(|t| t.data[0])
        .collect()
}

fn close(got: &[f64], wanted: &[f64]) {
    assert_eq!(got.len(), wanted.len(), "{got:?} against {wanted:?}");
    for (g, w) in got.iter().zip(wanted) {
        assert!(
            (g - w).abs() < 1e-12 * w.abs().max(1.0),
            "{got:?} against {wanted:?}"
        );
    }
}

/// The update rules by hand, as PyTorch's `torch.optim` documents them, at lr 0.01 and step 3.
#[test]
fn optimizer_updates_match_the_textbook_rules() {
    let lr = 0.01;
    let linear = "sum(w * 3)";
    // SGD: g' = g + λw; v ← μv + g'; w ← w − lr·(g' + μv)
    let g = 3.0 + 0.1 * 2.0;
    let v = 0.9 * 0.5 + g;
    close(
        &one_step(
            "sgd(lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 0.1)",
            linear,
            2.0,
            &[0.5],
            3.0,
        ),
        &[2.0 - lr * (g + 0.9 * v), v],
    );
    // Adam: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; w ← w − lr·m̂/(√v̂ + ε)
    let adam = |w: f64, decay: f64| {
        let m = 0.9 * 0.2 + 0.1 * 3.0;
        let v = 0.999 * 0.05 + 0.001 * 9.0;
        let (m_hat, v_hat) = (m / (1.0 - 0.9f64.powi(3)), v / (1.0 - 0.999f64.powi(3)));
        vec![
            w * (1.0 - lr * decay) - lr * m_hat / (v_hat.sqrt() + 1e-8),
            m,
            v,
        ]
    };
    close(
        &one_step("adam(lr: 0.01)", linear, 2.0, &[0.2, 0.05], 3.0),
        &adam(2.0, 0.0),
    );
    // AdamW decays the weight itself, w·(1 − lr·λ), and not the gradient.
    close(
        &one_step(
            "adamw(lr: 0.01, weight_decay: 0.1)",
            linear,
            2.0,
            &[0.2, 0.05],
            3.0,
        ),
        &adam(2.0, 0.1),
    );
    // Adagrad: s ← s + g²; w ← w − lr·g/(√s + ε)
    let s: f64 = 0.7 + 9.0;
    close(
        &one_step("adagrad(lr: 0.01)", linear, 2.0, &[0.7], 3.0),
        &[2.0 - lr * 3.0 / (s.sqrt() + 1e-10), s],
    );
    // RMSprop: v ← αv + (1−α)g²; b ← μb + g/(√v + ε); w ← w − lr·b
    let v: f64 = 0.99 * 0.4 + 0.01 * 9.0;
    let b = 0.5 * 0.3 + 3.0 / (v.sqrt() + 1e-8);
    close(
        &one_step(
            "rmsprop(lr: 0.01, momentum: 0.5)",
            linear,
            2.0,
            &[0.4, 0.3],
            3.0,
        ),
        &[2.0 - lr * b, v, b],
    );
    // Adadelta: v ← ρv + (1−ρ)g²; Δ = √(u + ε)/√(v + ε)·g; u ← ρu + (1−ρ)Δ²; w ← w − lr·Δ
    let v: f64 = 0.9 * 0.4 + 0.1 * 9.0;
    let delta = (0.2f64 + 1e-6).sqrt() / (v + 1e-6).sqrt() * 3.0;
    let u = 0.9 * 0.2 + 0.1 * delta * delta;
    close(
        &one_step("adadelta(lr: 0.01)", linear, 2.0, &[0.4, 0.2], 3.0),
        &[2.0 - lr * delta, v, u],
    );
    // Clipping by global norm: the gradient 3·w = 6 has norm 6, scaled to 1.5 / (6 + 1e-6).
    let g = 6.0 * 1.5 / (6.0 + 1e-6);
    close(
        &one_step(
            "sgd(lr: 0.01, clip: 1.5)",
            "sum(w * w * 1.5)",
            2.0,
            &[],
            3.0,
        ),
        &[2.0 - lr * g],
    );
    // A norm already below the limit is left as it is.
    close(
        &one_step(
            "sgd(lr: 0.01, clip: 100)",
            "sum(w * w * 1.5)",
            2.0,
            &[],
            3.0,
        ),
        &[2.0 - lr * 6.0],
    );
}

/// Each schedule's rate at chosen steps against its closed form, at lr 0.1, 10 steps an epoch
/// and a 5-epoch run; the graph is the one the training step holds.
#[test]
fn schedules_match_their_closed_forms() {
    let rate = |text: &str, step: u64| {
        let (expr, diagnostics) =
            netc::syntax::parse_expr(&netc::source::SourceFile::new("schedule", text));
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let (schedule, diagnostics) = netc::check::schedule(&expr.expect("parses"));
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let (graph, node) = autodiff::step::learning_rate(&schedule.expect("checks"));
        let bind: Bindings<f64> = Bindings {
            batch: 1,
            inputs: &[],
            params: &[],
            states: &[],
            hypers: &[0.1, step as f64, 10.0, 5.0],
            seed: 0,
        };
        interp::run(&graph, &bind, &[node], false).expect("runs")[0].data[0]
    };
    let check = |text: &str, expected: &dyn Fn(f64) -> f64| {
        for step in [1u64, 2, 10, 11, 25, 31, 40, 41, 50, 60] {
            let t = (step - 1) as f64 / 10.0;
            let (got, wanted) = (rate(text, step), expected(t));
            assert!(
                (got - wanted).abs() < 1e-12,
                "{text} at step {step}: {got}, not {wanted}"
            );
        }
    };
    let pi = std::f64::consts::PI;
    check("constant", &|_| 0.1);
    check("step(every: 2, factor: 0.5)", &|t| {
        0.1 * 0.5f64.powi((t / 2.0).floor() as i32)
    });
    check("multifactor(at: [1, 4], factor: 0.1)", &|t| {
        0.1 * 0.1f64.powi((t >= 1.0) as i32 + (t >= 4.0) as i32)
    });
    check("cosine", &|t| {
        0.1 * (1.0 + (pi * (t / 5.0).min(1.0)).cos()) / 2.0
    });
    check("cosine(final_lr: 0.01, epochs: 3)", &|t| {
        0.01 + 0.09 * (1.0 + (pi * (t / 3.0).min(1.0)).cos()) / 2.0
    });
    check("poly(power: 2)", &|t| {
        0.1 * (1.0 - (t / 5.0).min(1.0)).powi(2)
    });
    check("poly", &|t| 0.1 * (1.0 - (t / 5.0).min(1.0)));
    // Warm-up: linear in the step up to the full rate at the warm-up's last step (step 15 of
    // 1.5 epochs), then the cosine over the remaining 3.5 epochs.
    check("cosine(warmup: 1.5)", &|t| {
        let step = t * 10.0 + 1.0;
        let ramp = (step / 15.0).min(1.0);
        let p = ((t - 1.5) / 3.5).clamp(0.0, 1.0);
        ramp * 0.1 * (1.0 + (pi * p).cos()) / 2.0
    });
}

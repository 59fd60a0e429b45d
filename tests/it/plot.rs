//! Pictures: training curves from `netc run --plot` and `netc plot`, their errors, and a
//! snapshot of the SVG (drawn the same way on every machine: the font is fixed).

use crate::hostile::{refused, run, succeeds, Dir};
use netc::diagnostics::Code;

/// Two epochs of a classifier's log, as `netc run --log` writes them.
const CLASSIFIER: &str = r#"{"epoch":1,"seconds":0.5,"test_acc":0.79,"test_loss":0.63,"train_acc":0.75,"train_loss":0.79}
{"epoch":2,"seconds":0.5,"test_acc":0.80,"test_loss":0.58,"train_acc":0.81,"train_loss":0.57}
{"epoch":3,"seconds":0.5,"test_acc":0.82,"test_loss":0.52,"train_acc":0.83,"train_loss":0.50}
"#;

/// A regression's log: no accuracies, a loss falling by orders of magnitude.
const REGRESSION: &str = r#"{"epoch":1,"seconds":0.1,"test_acc":null,"test_loss":0.002,"train_acc":null,"train_loss":0.09}
{"epoch":2,"seconds":0.1,"test_acc":null,"test_loss":0.0021,"train_acc":null,"train_loss":0.0023}
"#;

fn is_png(path: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000)
}

#[test]
fn plot_draws_the_curves_of_several_logs_as_svg_and_png() {
    let dir = Dir::new("plot-logs");
    let a = dir.write("lr01.jsonl", CLASSIFIER);
    let b = dir.write("lr03.jsonl", &CLASSIFIER.replace("0.5", "0.4"));
    let svg = dir.path("curves.svg");
    succeeds(&["plot", &a, &b, "-o", &svg]);
    let text = std::fs::read_to_string(&svg).expect("an SVG is written");
    assert!(text.contains("lr01: train loss") && text.contains("lr03: test acc"));
    insta::assert_snapshot!("curves_svg", text);
    let png = dir.path("curves.png");
    succeeds(&["plot", &a, "-o", &png, "--title", "one run"]);
    assert!(is_png(&png));
    let regression = dir.write("beans.jsonl", REGRESSION);
    succeeds(&["plot", &regression, "-o", &png]);
    assert!(is_png(&png));
    assert!(dir.partial_files().is_empty());
}

#[test]
fn run_redraws_its_curves_after_every_epoch() {
    let dir = Dir::new("plot-run");
    let png = dir.path("beans.png");
    let line = [
        "run",
        "models/beans.net",
        "--data",
        "beans",
        "--epochs",
        "3",
    ];
    succeeds(&[&line[..], &["--plot", &png]].concat());
    assert!(is_png(&png));
    let svg = dir.path("beans.svg");
    succeeds(&[&line[..], &["--plot", &svg]].concat());
    let text = std::fs::read_to_string(&svg).expect("an SVG is written");
    assert!(
        text.contains("beans.net: sgd, lr 0.1"),
        "the title names the run"
    );
    assert!(text.contains("loss (log scale)") || text.contains(">loss<"));
    assert!(dir.partial_files().is_empty());
}

#[test]
fn bad_pictures_and_logs_are_refused_with_their_codes() {
    let dir = Dir::new("plot-bad");
    let run_line = [
        "run",
        "models/beans.net",
        "--data",
        "beans",
        "--epochs",
        "1",
    ];
    let jpg = dir.path("curves.jpg");
    let out = run(&[&run_line[..], &["--plot", &jpg]].concat());
    refused(&out, Code::E0512, &["--plot", ".svg or .png"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("epoch"),
        "nothing trained"
    );
    let nowhere = dir.path("no/such/dir/curves.png");
    let out = run(&[&run_line[..], &["--plot", &nowhere]].concat());
    refused(&out, Code::E0512, &["the picture"]);

    let log = dir.write("bad.jsonl", "{\"epoch\": 1, \"loss\": 0.5}\n");
    let out = run(&["plot", &log, "-o", &dir.path("x.png")]);
    refused(&out, Code::E0513, &["bad.jsonl:1", "`train_loss`"]);
    let log = dir.write(
        "backwards.jsonl",
        &CLASSIFIER.replace("\"epoch\":3", "\"epoch\":1"),
    );
    let out = run(&["plot", &log, "-o", &dir.path("x.png")]);
    refused(&out, Code::E0513, &["backwards.jsonl:3", "must increase"]);
    let log = dir.write("empty.jsonl", "\n");
    let out = run(&["plot", &log, "-o", &dir.path("x.png")]);
    refused(&out, Code::E0513, &["no epochs"]);
    assert!(!std::path::Path::new(&dir.path("x.png")).exists());
}

/// TensorBoard's own loader, printing every scalar of an event directory as JSON.
const READ_EVENTS: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
events = EventAccumulator(sys.argv[1])
events.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in events.Scalars(tag)]
                  for tag in events.Tags()["scalars"]}))
"#;

/// The Python with TensorBoard that scripts/install-data sets up; `None` (with the skip
/// printed) only when `NETC_SKIP_TENSORBOARD=1` allows it.
fn tensorboard_python() -> Option<std::path::PathBuf> {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tensorboard-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("NETC_SKIP_TENSORBOARD").is_some_and(|v| v == "1"),
        "TensorBoard is not installed: run scripts/install-data, or set NETC_SKIP_TENSORBOARD=1 to skip"
    );
    eprintln!("SKIPPED (NETC_SKIP_TENSORBOARD=1): TensorBoard is not installed");
    None
}

#[test]
fn tensorboard_reads_the_scalars_netc_writes() {
    let Some(python) = tensorboard_python() else {
        return;
    };
    let dir = Dir::new("tensorboard");
    for (model, data) in [("models/beans.net", "beans"), ("models/xor.net", "xor")] {
        let (log, events) = (dir.path("run.jsonl"), dir.path(data));
        let line = ["run", model, "--data", data, "--epochs", "3"];
        succeeds(&[&line[..], &["--log", &log, "--tensorboard", &events]].concat());
        let out = std::process::Command::new(&python)
            .args(["-c", READ_EVENTS, &events])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let scalars: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let logged = netc::plot::log::read(std::path::Path::new(&log)).expect("the log reads");
        let tags = [
            (
                "loss/train",
                logged
                    .iter()
                    .map(|e| Some(e.train_loss))
                    .collect::<Vec<_>>(),
            ),
            (
                "loss/test",
                logged.iter().map(|e| Some(e.test_loss)).collect(),
            ),
            (
                "accuracy/train",
                logged.iter().map(|e| e.train_accuracy()).collect(),
            ),
            (
                "accuracy/test",
                logged.iter().map(|e| e.test_accuracy()).collect(),
            ),
        ];
        for (tag, expected) in tags {
            let read = &scalars[tag];
            if expected.iter().all(Option::is_none) {
                assert!(read.is_null(), "{model}: {tag} should be absent: {scalars}");
                continue;
            }
            let read = read
                .as_array()
                .unwrap_or_else(|| panic!("{model}: no {tag}: {scalars}"));
            assert_eq!(read.len(), 3, "{model}: {tag}");
            for (e, (point, want)) in read.iter().zip(&expected).enumerate() {
                assert_eq!(point[0].as_u64(), Some(e as u64 + 1), "{model}: {tag} step");
                let want = want.expect("logged") as f32;
                assert_eq!(
                    point[1].as_f64().map(|v| v as f32),
                    Some(want),
                    "{model}: {tag}"
                );
            }
        }
    }
}

fn is_gif(path: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"GIF89a") && b.len() > 1000)
}

#[test]
fn animate_draws_the_fit_of_a_one_input_model_epoch_by_epoch() {
    let dir = Dir::new("animate");
    let gif = dir.path("fit.gif");
    let line = [
        "run",
        "models/beans.net",
        "--data",
        "beans",
        "--epochs",
        "4",
    ];
    succeeds(&[&line[..], &["--animate", &gif]].concat());
    assert!(is_gif(&gif));
    let file = std::fs::File::open(&gif).expect("readable");
    let mut decoder = gif::DecodeOptions::new().read_info(file).expect("a GIF");
    let mut delays = Vec::new();
    while let Some(frame) = decoder.read_next_frame().expect("a frame") {
        delays.push(frame.delay);
    }
    assert_eq!(
        delays,
        [20, 20, 20, 200],
        "one frame per epoch, the last held longest"
    );
    let svg = dir.path("fit.svg");
    let line = [
        "run",
        "models/linreg.net",
        "--data",
        "linear",
        "--epochs",
        "2",
    ];
    succeeds(&[&line[..], &["--animate", &svg]].concat());
    let text = std::fs::read_to_string(&svg).expect("an SVG is written");
    assert!(
        text.contains("epoch 2: train loss"),
        "the latest frame is the last epoch's"
    );
    assert!(text.contains("x[0] (the rest at their means)"));
    // A classifier has no line to draw, and it is said before training.
    if !crate::fmnist_missing() {
        let out = run(&[
            "run",
            "models/softmax.net",
            "--data",
            "fmnist",
            "--animate",
            &gif,
        ]);
        refused(&out, Code::E0512, &["one real output", "a class"]);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("epoch"));
    }
    assert!(dir.partial_files().is_empty());
}

#[test]
fn surface_draws_the_loss_and_the_path_a_trace_recorded() {
    let dir = Dir::new("surface");
    let (trace, weights) = (dir.path("beans.trace"), dir.path("beans.safetensors"));
    let line = [
        "run",
        "models/beans.net",
        "--data",
        "beans",
        "--epochs",
        "3",
    ];
    succeeds(&[&line[..], &["--trace", &trace, "--save", &weights]].concat());
    let steps = std::fs::read_to_string(&trace)
        .expect("a trace")
        .lines()
        .count();
    assert_eq!(
        steps,
        1 + 3 * 25,
        "the initial weights and one line per step"
    );
    let png = dir.path("surface.png");
    let beans = ["surface", "models/beans.net", "--data", "beans"];
    succeeds(
        &[
            &beans[..],
            &["--weights", &weights, "--trace", &trace, "-o", &png],
        ]
        .concat(),
    );
    assert!(is_png(&png));
    let svg = dir.path("surface.svg");
    succeeds(
        &[
            &beans[..],
            &["--params", "dense1.bias,dense1.weight[0]", "-o", &svg],
        ]
        .concat(),
    );
    let text = std::fs::read_to_string(&svg).expect("an SVG is written");
    assert!(text.contains("the loss over dense1.bias and dense1.weight"));

    let out = run(&[&beans[..], &["--params", "w", "-o", &png]].concat());
    refused(&out, Code::E0512, &["two coordinates"]);
    let out = run(&[&beans[..], &["--params", "w,b", "-o", &png]].concat());
    refused(&out, Code::E0512, &["no parameter `w`", "dense1.weight"]);
    let mlp = ["surface", "models/mlp.net", "--data", "fmnist", "-o", &png];
    refused(&run(&mlp), Code::E0512, &["name two coordinates"]);
    let out = run(&[
        &mlp[..4],
        &[
            "--params",
            "dense1.weight[9999999],dense1.bias[0]",
            "-o",
            &png,
        ],
    ]
    .concat());
    refused(&out, Code::E0512, &["elements"]);
    let bad = dir.write("bad.trace", "{\"step\": 0, \"params\": {}}\n");
    let out = run(&[&beans[..], &["--trace", &bad, "-o", &png]].concat());
    refused(
        &out,
        Code::E0513,
        &["bad.trace:1", "no value for dense1.weight"],
    );
}

#[test]
fn predict_draws_its_images_with_their_labels() {
    if crate::fmnist_missing() {
        return;
    }
    let dir = Dir::new("grid");
    let weights = dir.path("softmax.safetensors");
    let line = [
        "run",
        "models/softmax.net",
        "--data",
        "fmnist",
        "--epochs",
        "1",
    ];
    succeeds(&[&line[..], &["--save", &weights]].concat());
    let png = dir.path("grid.png");
    let predict = [
        "predict",
        "models/softmax.net",
        "--data",
        "fmnist",
        "--weights",
        &weights,
    ];
    succeeds(&[&predict[..], &["--limit", "16", "--grid", &png]].concat());
    assert!(is_png(&png));
    let svg = dir.path("grid.svg");
    succeeds(&[&predict[..], &["--limit", "3", "--grid", &svg]].concat());
    let text = std::fs::read_to_string(&svg).expect("an SVG is written");
    assert!(text.contains("test images predicted wrongly"));
    assert!(
        text.matches("<rect").count() >= 3 * 28 * 28,
        "every pixel is drawn"
    );
    // A table has no images to draw.
    let beans = dir.path("beans.safetensors");
    succeeds(&[
        "run",
        "models/beans.net",
        "--data",
        "beans",
        "--epochs",
        "1",
        "--save",
        &beans,
    ]);
    let out = run(&[
        "predict",
        "models/beans.net",
        "--data",
        "beans",
        "--weights",
        &beans,
        "--grid",
        &png,
    ]);
    refused(&out, Code::E0512, &["draws images"]);
}

#[test]
fn an_objective_trains_without_data_along_gradient_descents_closed_form_path() {
    let dir = Dir::new("objective");
    let trace = dir.path("gd.trace");
    let line = [
        "run",
        "models/gd_2d.net",
        "--data",
        "none",
        "--trace",
        &trace,
    ];
    succeeds(&line);
    // f = x1² + 2·x2² with lr 0.1: each step multiplies x1 by 1 − 0.2 and x2 by 1 − 0.4.
    let text = std::fs::read_to_string(&trace).expect("a trace");
    let steps: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(steps.len(), 21, "the start and one step per epoch");
    for (k, step) in steps.iter().enumerate() {
        let at = |name: &str| step["params"][name][0].as_f64().expect("a value");
        let (x1, x2) = (-5.0 * 0.8f64.powi(k as i32), -2.0 * 0.6f64.powi(k as i32));
        assert!(
            (at("x1") - x1).abs() <= 1e-5 * (1.0 + x1.abs()),
            "step {k}: x1 {} ≠ {x1}",
            at("x1")
        );
        assert!(
            (at("x2") - x2).abs() <= 1e-5 * (1.0 + x2.abs()),
            "step {k}: x2 {} ≠ {x2}",
            at("x2")
        );
    }
    let png = dir.path("gd.png");
    succeeds(&[
        "surface",
        "models/gd_2d.net",
        "--data",
        "none",
        "--trace",
        &trace,
        "-o",
        &png,
    ]);
    assert!(is_png(&png));
    // Data where there is no input, and none where there is one, are refused before training.
    let out = run(&["run", "models/gd_2d.net", "--data", "beans"]);
    refused(&out, Code::E0507, &["no input", "--data none"]);
    let out = run(&["run", "models/beans.net", "--data", "none"]);
    refused(&out, Code::E0507, &["no examples for `size`"]);
}

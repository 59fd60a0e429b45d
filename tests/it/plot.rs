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

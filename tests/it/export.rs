//! `netc export`: every model in `models/`, trained for a short run, exported to ONNX, checked
//! by ONNX's own checker and run by ONNX Runtime (`tests/onnx/check.py`, in the virtual
//! environment `scripts/install-onnx` makes) on 1,000 test examples, against `netc predict`'s
//! outputs for the same examples. Refusals are checked without Python.

use crate::cli::netc;
use netc::diagnostics::Code;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a run failed with `code`.
fn failed_with(out: &Output, code: Code) -> bool {
    out.status.code() == Some(1)
        && String::from_utf8_lossy(&out.stderr).contains(&format!("error[{}]", code.as_str()))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-export-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The Python of `scripts/install-onnx`'s environment, if onnx and onnxruntime import there.
fn onnx_python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/onnx-venv/bin/python");
    let works = Command::new(&python)
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    assert!(
        std::env::var_os("NETC_REQUIRE_ONNX").is_none_or(|v| v != "1"),
        "onnx and onnxruntime are not installed in target/onnx-venv: run scripts/install-onnx"
    );
    eprintln!(
        "SKIPPED: onnx and onnxruntime are not installed in target/onnx-venv (scripts/install-onnx could not install them)"
    );
    None
}

/// The data each model trains on.
fn data_of(model: &str) -> &'static str {
    match model {
        "linreg" => "linear",
        "beans" => "beans",
        "xor" => "xor",
        "perceptron" => "separable",
        "gd_2d" => "none",
        _ => "fmnist",
    }
}

#[test]
fn every_model_exports_to_onnx_and_runs_in_onnx_runtime_as_in_netc() {
    if crate::fmnist_missing() {
        return;
    }
    let Some(python) = onnx_python() else {
        return;
    };
    let dir = scratch("models");
    let fmnist = dir.join("fmnist");
    std::fs::create_dir_all(&fmnist).expect("a directory");
    crate::fmnist_subset(&fmnist, 2048, 1000);
    let mut models: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
            .expect("models/")
            .map(|e| e.expect("readable").path())
            .filter(|p| p.extension().is_some_and(|e| e == "net"))
            .collect();
    models.sort();
    let mut exported = 0;
    for path in &models {
        let name = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let file = format!("models/{name}.net");
        let data = data_of(&name);
        let weights = dir.join(format!("{name}.safetensors"));
        let onnx = dir.join(format!("{name}.onnx"));
        let outputs = dir.join(format!("{name}.outputs"));
        let (weights_s, onnx_s, outputs_s) = (
            weights.to_str().expect("utf-8"),
            onnx.to_str().expect("utf-8"),
            outputs.to_str().expect("utf-8"),
        );
        let data_args = [
            "--data",
            data,
            "--data-dir",
            fmnist.to_str().expect("utf-8"),
        ];
        // One epoch, or two for a warm-up of one epoch, which needs a longer run.
        let epochs = if name == "mlp_cosine" { "2" } else { "1" };
        let mut run = vec!["run", &file, "--epochs", epochs, "--save", weights_s];
        run.extend(data_args);
        ok(&netc(&run), &format!("{name}: training"));
        // A fixed batch and the newest opset (reduction axes as inputs) on two of them.
        let (batch, opset) = match name.as_str() {
            "mlp" => ("1000", "17"),
            "nin" | "resnet" => ("dynamic", "21"),
            _ => ("dynamic", "17"),
        };
        let export = netc(&[
            "export",
            &file,
            "--weights",
            weights_s,
            "-o",
            onnx_s,
            "--batch",
            batch,
            "--opset",
            opset,
        ]);
        if data == "none" {
            let predicted = netc(&[
                "predict",
                &file,
                "--weights",
                weights_s,
                "--data",
                "none",
                "--outputs",
                outputs_s,
            ]);
            assert!(
                failed_with(&predicted, Code::E0512),
                "{name}: no outputs to write"
            );
            assert!(!outputs.exists(), "{name}: no outputs file");
            assert!(
                failed_with(&export, Code::E0514),
                "{name}: nothing to export"
            );
            assert!(!onnx.exists(), "{name}: no file is written");
            continue;
        }
        ok(&export, &format!("{name}: export"));
        let mut predict = vec![
            "predict",
            &file,
            "--weights",
            weights_s,
            "--limit",
            "1000",
            "--outputs",
            outputs_s,
        ];
        predict.extend(data_args);
        ok(&netc(&predict), &format!("{name}: predict"));
        let check = Command::new(&python)
            .args(["tests/onnx/check.py", onnx_s, outputs_s])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("python runs");
        ok(&check, &format!("{name}: ONNX's checker and ONNX Runtime"));
        let report: serde_json::Value =
            serde_json::from_slice(&check.stdout).expect("check.py prints JSON");
        let diff = report["max_abs_diff"].as_f64().expect("a number");
        eprintln!("{name}: {report}");
        assert!(
            diff <= 1e-4,
            "{name}: ONNX Runtime differs from netc by {diff}"
        );
        assert_eq!(report["classes_differ"], 0, "{name}: {report}");
        let examples = if data == "fmnist" {
            1000
        } else {
            report["examples"].as_u64().unwrap_or(0)
        };
        assert_eq!(report["examples"], examples, "{name}: {report}");
        exported += 1;
    }
    assert!(exported >= 15, "only {exported} models were exported");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn export_refuses_other_weights_and_leaves_no_partial_file() {
    let dir = scratch("refusals");
    let xor_weights = dir.join("xor.safetensors");
    let xor_weights = xor_weights.to_str().expect("utf-8");
    ok(
        &netc(&[
            "run",
            "models/xor.net",
            "--data",
            "xor",
            "--epochs",
            "1",
            "--save",
            xor_weights,
        ]),
        "training xor",
    );
    let onnx = dir.join("beans.onnx");
    let other = netc(&[
        "export",
        "models/beans.net",
        "--weights",
        xor_weights,
        "-o",
        onnx.to_str().expect("utf-8"),
    ]);
    assert!(failed_with(&other, Code::E0508), "another model's weights");
    assert!(
        !onnx.exists(),
        "nothing is written for another model's weights"
    );

    for unwritable in [
        dir.join("no/such/directory/xor.onnx"),
        dir.clone(), // a directory
    ] {
        let out = netc(&[
            "export",
            "models/xor.net",
            "--weights",
            xor_weights,
            "-o",
            unwritable.to_str().expect("utf-8"),
        ]);
        assert!(failed_with(&out, Code::E0512), "{}", unwritable.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("readable")
        .map(|e| e.expect("readable").file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let bad_opset = netc(&[
        "export",
        "models/xor.net",
        "--weights",
        xor_weights,
        "-o",
        "x.onnx",
        "--opset",
        "9",
    ]);
    assert_eq!(bad_opset.status.code(), Some(2), "a usage error");
    std::fs::remove_dir_all(dir).ok();
}

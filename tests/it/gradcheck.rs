//! Symbolic gradients against central finite differences, in f64: every model in `models/`,
//! and every file in `tests/gradcheck/` (one per operation, on small odd shapes), at batch
//! sizes 1, 3 and 7.

use crate::load;
use netc::check::model::LabelKind;
use netc::gradcheck::{self, Problem};
use netc::ir;
use std::path::{Path, PathBuf};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("directory exists")
        .map(|e| e.expect("readable").path())
        .collect();
    files.sort();
    files
}

fn check_file(path: &Path, batches: &[usize], samples: usize) {
    let source = load(path);
    let (checked, diagnostics) = netc::front_end(&source);
    let (_, model) = checked.unwrap_or_else(|| {
        panic!(
            "{}:\n{}",
            source.name,
            netc::diagnostics::render(&source, &diagnostics)
        )
    });
    let forward = ir::build(&model, &source, ir::Mode::Train);
    let mut classes = vec![None; model.inputs.len()];
    if let Some(label) = &model.label {
        classes.push(match label.kind {
            LabelKind::Class(n) => Some(n),
            LabelKind::Target(_) => None,
        });
    }
    for &batch in batches {
        let [inputs, params, states] =
            gradcheck::random_bindings(&forward, batch, &classes, 7 + batch as u64);
        let problem = Problem {
            forward: &forward,
            batch,
            inputs,
            params,
            states,
            seed: 11,
        };
        for result in gradcheck::check(&problem, samples) {
            assert!(
                result.checked > 0,
                "{} batch {batch}: no coordinate of {} could be checked",
                source.name,
                result.name
            );
            assert!(
                result.error < 1e-5,
                "{} batch {batch}: gradient of {} is off by {:.2e} (relative, {} coordinates)",
                source.name,
                result.name,
                result.error,
                result.checked
            );
        }
    }
}

#[test]
fn every_operation_matches_finite_differences() {
    for path in files("tests/gradcheck") {
        check_file(&path, &[1, 3, 7], 40);
    }
}

/// Models of tens of millions of FLOPs per example, whose check would take minutes in the f64
/// interpreter: their blocks and operations are checked at small sizes in `tests/gradcheck/`
/// (`residual_blocks.net`, `concatenation.net`, `cnn_blocks.net`), and their compiled steps against the
/// interpreter in `jit`.
const CHECKED_SMALL: &[&str] = &[
    "alexnet.net",
    "densenet.net",
    "googlenet.net",
    "nin.net",
    "resnet.net",
    "vgg.net",
];

#[test]
fn every_model_matches_finite_differences() {
    for path in files("models") {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !CHECKED_SMALL.contains(&name) {
            check_file(&path, &[3], 12);
        }
    }
}

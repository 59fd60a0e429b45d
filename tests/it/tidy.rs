//! Project rules checked mechanically: every diagnostic code is documented and tested, and no
//! pipeline stage imports a later one.

use netc::diagnostics::Code;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_code_is_explained_with_an_example() {
    for code in Code::ALL {
        let text = code.explanation();
        assert!(
            text.starts_with(&format!("# {}: ", code.as_str())),
            "docs/errors/{}.md must start with `# CODE: title`",
            code.as_str()
        );
        assert!(
            text.contains("```"),
            "docs/errors/{}.md needs an example",
            code.as_str()
        );
        assert!(
            text.lines().count() >= 8,
            "docs/errors/{}.md is too thin to explain anything",
            code.as_str()
        );
    }
}

#[test]
fn every_code_has_a_bad_input() {
    let mut covered = std::collections::BTreeSet::new();
    for topic in std::fs::read_dir(root().join("tests/ui")).expect("tests/ui exists") {
        for file in std::fs::read_dir(topic.expect("readable").path()).expect("readable topic") {
            let text =
                std::fs::read_to_string(file.expect("readable").path()).expect("readable case");
            if let Some(code) = crate::ui::header_code(&text) {
                covered.insert(code);
            }
        }
    }
    // Data, training and backend errors are not about a model file: their cases build broken
    // data sets and runs in tests/it/data.rs, train.rs and cli.rs.
    let runtime_cases = [
        "tests/it/data.rs",
        "tests/it/train.rs",
        "tests/it/cli.rs",
        "tests/it/hostile.rs",
        "tests/it/plot.rs",
        "tests/it/export.rs",
        "tests/it/parallel.rs",
        "tests/it/mpi.rs",
    ]
    .map(|f| std::fs::read_to_string(root().join(f)).expect("readable test file"))
    .join("\n");
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| {
            !covered.contains(c) && !runtime_cases.contains(&format!("Code::{}", c.as_str()))
        })
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a case in tests/ui: {missing:?}"
    );
    let cases = walk(&root().join("tests/ui")).len();
    assert!(cases >= 50, "the bad-input corpus has only {cases} cases");
}

/// Data flows one way: syntax → check → ir → autodiff → opt → interp → codegen → data →
/// runtime → plot. A stage may use earlier stages, never later ones.
#[test]
fn stages_only_import_earlier_stages() {
    let order = [
        "syntax", "check", "ir", "autodiff", "opt", "interp", "codegen", "data", "runtime", "plot",
    ];
    for (i, stage) in order.iter().enumerate() {
        for file in walk(&root().join("src").join(stage)) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for later in &order[i + 1..] {
                for pattern in [
                    format!("crate::{later}::"),
                    format!("crate::{later};"),
                    format!("crate::{{{later}"),
                ] {
                    assert!(
                        !text.contains(&pattern),
                        "{} uses the later stage `{later}`",
                        file.display()
                    );
                }
            }
            assert!(
                !text.contains("crate::cli"),
                "{} uses the CLI",
                file.display()
            );
        }
    }
    // Compiled code is checked against the interpreter, so it must not be built from it: the
    // tensors, bindings and netc's own `exp` and `tanh` live in `tensor.rs` and `math.rs`.
    for file in walk(&root().join("src/codegen")) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        assert!(
            !text.contains("crate::interp"),
            "{} uses the interpreter it is tested against",
            file.display()
        );
    }
    // Only the syntax stage knows pest; only diagnostics.rs knows codespan-reporting.
    for file in walk(&root().join("src")) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let path = file.to_string_lossy();
        if !path.contains("src/syntax") {
            assert!(!text.contains("pest::"), "{path} uses pest outside syntax/");
        }
        if !path.contains("src/codegen") {
            assert!(
                !text.contains("cranelift"),
                "{path} uses Cranelift outside codegen/"
            );
        }
        if !path.contains("src/plot") {
            assert!(
                !text.contains("plotters"),
                "{path} uses plotters outside plot/"
            );
        }
        if !path.ends_with("distributed.rs") {
            assert!(
                !text.contains("mpi::"),
                "{path} uses MPI outside distributed.rs"
            );
        }
        if !path.ends_with("diagnostics.rs") {
            assert!(
                !text.contains("codespan_reporting"),
                "{path} uses codespan-reporting"
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The operations' names come from `ops` and the checker's tables derived from it: every
/// function and layer is documented in the language reference and listed in the explanation
/// of its unknown-name error.
#[test]
fn every_operation_is_documented() {
    let language = std::fs::read_to_string(root().join("docs/language.md")).expect("reference");
    for info in netc::ops::named() {
        assert!(
            language.contains(&format!("`{}", info.name)),
            "docs/language.md does not document `{}` ({})",
            info.name,
            info.doc
        );
    }
    for (code, names) in [
        ("E0203", netc::check::functions()),
        ("E0204", netc::check::layers()),
    ] {
        let doc = std::fs::read_to_string(root().join(format!("docs/errors/{code}.md")))
            .expect("explanation");
        // The list is the paragraph that starts "Use one of the".
        let list = doc
            .split("\n\n")
            .find(|p| p.starts_with("Use one of the"))
            .expect("a list of names");
        let listed: Vec<&str> = list
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| names.iter().any(|s| s.name == *w))
            .collect();
        for signature in names {
            assert!(
                listed.contains(&signature.name),
                "docs/errors/{code}.md does not list `{}`",
                signature.name
            );
        }
    }
}

//! The bad-input corpus: each `tests/ui/<topic>/<case>.net` starts with `# CODE: what it shows`.
//! The harness snapshots the source with its rendered and JSON diagnostics, and asserts that the
//! code in the header is among them, so a wrong diagnostic can never be blessed.

use crate::load;
use netc::diagnostics::{self, Code};

#[test]
fn bad_inputs_give_their_diagnostics() {
    insta::glob!("../ui", "*/*.net", |path| {
        let source = load(path);
        let expected = header_code(&source.text)
            .unwrap_or_else(|| panic!("{} lacks a `# CODE: ...` header", source.name));
        let (checked, found) = netc::front_end(&source);
        assert!(
            found.iter().any(|d| d.code == expected),
            "{}: expected {} but got:\n{}",
            source.name,
            expected.as_str(),
            diagnostics::render(&source, &found)
        );
        if expected.severity() == diagnostics::Severity::Error {
            assert!(
                checked.is_none(),
                "{}: errors must stop compilation",
                source.name
            );
        }
        let json: Vec<String> = found
            .iter()
            .map(|d| diagnostics::to_json(&source, d))
            .collect();
        for line in &json {
            let value: serde_json::Value =
                serde_json::from_str(line).expect("diagnostic JSON parses");
            for key in [
                "code",
                "severity",
                "message",
                "file",
                "line",
                "column",
                "end_line",
                "end_column",
                "labels",
                "help",
            ] {
                assert!(
                    value.get(key).is_some(),
                    "{}: JSON lacks `{key}`: {line}",
                    source.name
                );
            }
        }
        let document = format!(
            "----- SOURCE\n{}\n----- DIAGNOSTICS\n{}\n----- JSON\n{}\n",
            source.text.trim_end(),
            diagnostics::render(&source, &found).trim_end(),
            json.join("\n")
        );
        insta::assert_snapshot!(document);
    });
}

/// The code named in a file's first line, `# E0301: ...`.
pub fn header_code(text: &str) -> Option<Code> {
    let first = text.lines().next()?.strip_prefix('#')?;
    Code::parse(first.split(':').next()?)
}

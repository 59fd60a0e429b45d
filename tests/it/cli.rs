//! The `netc` binary: exit codes, output streams, `explain`, and JSON diagnostics.

use netc::diagnostics::Code;
use std::process::{Command, Output};

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_exits_zero_on_a_good_model_and_one_on_a_bad_one() {
    let good = netc(&["check", "models/mlp.net"]);
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    assert!(good.stderr.is_empty());

    let bad = netc(&["check", "tests/ui/shapes/matmul_inner.net"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = text(&bad.stderr);
    assert!(stderr.contains("error[E0301]"), "{stderr}");
    assert!(
        stderr.contains("tests/ui/shapes/matmul_inner.net:7:14"),
        "{stderr}"
    );
}

#[test]
fn warnings_do_not_fail_check() {
    let out = netc(&["check", "tests/ui/names/unused_param.net"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("warning[W0201]"));
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(netc(&["check"]).status.code(), Some(2));
    assert_eq!(netc(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        netc(&["emit-ir", "models/mlp.net", "--stage", "nonsense"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(netc(&["explain", "E9999"]).status.code(), Some(2));
}

#[test]
fn unreadable_files_are_errors_not_panics() {
    let out = netc(&["check", "models/no_such_model.net"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read models/no_such_model.net"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("netc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let binary = dir.join("binary.net");
    std::fs::write(&binary, [0x6e, 0x65, 0x74, 0xff, 0xfe]).expect("write");
    let out = netc(&["check", binary.to_str().expect("utf-8 temp path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not UTF-8"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn explain_prints_every_code() {
    for code in Code::ALL {
        let out = netc(&["explain", code.as_str()]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(text(&out.stdout), code.explanation());
    }
    // Codes are accepted in any case.
    assert_eq!(netc(&["explain", "e0301"]).status.code(), Some(0));
}

#[test]
fn json_diagnostics_are_one_object_per_line() {
    let out = netc(&[
        "check",
        "tests/ui/names/several_errors.net",
        "--message-format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 4, "several errors, one line each: {stdout}");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(value["file"], "tests/ui/names/several_errors.net");
        assert!(value["code"].as_str().is_some_and(|c| c.starts_with('E')));
        assert!(value["line"].as_u64().is_some_and(|l| l >= 1));
    }
}

#[test]
fn emit_ir_prints_each_stage() {
    let ast = netc(&["emit-ir", "models/mlp.net", "--stage", "ast"]);
    assert_eq!(ast.status.code(), Some(0));
    assert!(text(&ast.stdout).starts_with("net mlp {"));
    let ir = netc(&["emit-ir", "models/mlp.net"]);
    assert!(text(&ir.stdout).contains("matmul"));
    let eval = netc(&["emit-ir", "models/mlp_dropout.net", "--mode", "eval"]);
    assert!(!text(&eval.stdout).contains("dropout_mask"));
    let train = netc(&["emit-ir", "models/mlp_dropout.net", "--mode", "train"]);
    assert!(text(&train.stdout).contains("dropout_mask"));
}

#[test]
fn summary_is_printed_on_request() {
    let out = netc(&["check", "models/mlp.net", "--summary"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("dense1"), "{stdout}");
    assert!(
        stdout.contains("203,530"),
        "784·256 + 256 + 256·10 + 10 parameters: {stdout}"
    );
}

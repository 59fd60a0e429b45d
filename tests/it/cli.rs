//! The `netc` binary: exit codes, output streams, `explain`, and JSON diagnostics.

use netc::diagnostics::Code;
use std::process::{Command, Output};

/// Runs the `netc` binary in the project directory.
pub(crate) fn netc(args: &[&str]) -> Output {
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
    let cases: [&[&str]; 7] = [
        &["check"],
        &["frobnicate"],
        &["emit-ir", "models/mlp.net", "--stage", "nonsense"],
        &["explain", "E9999"],
        &[
            "run",
            "models/linreg.net",
            "--data",
            "linear",
            "--lr",
            "nan",
        ],
        &[
            "run",
            "models/linreg.net",
            "--data",
            "linear",
            "--lr",
            "-0.1",
        ],
        &[
            "bench",
            "models/linreg.net",
            "--data",
            "linear",
            "--steps",
            "0",
        ],
    ];
    for args in cases {
        assert_eq!(netc(args).status.code(), Some(2), "netc {}", args.join(" "));
    }
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
    let clif = netc(&["emit-ir", "models/mlp.net", "--stage", "clif"]);
    assert_eq!(clif.status.code(), Some(0), "{}", text(&clif.stderr));
    let listing = text(&clif.stdout);
    // The first layer's bias and ReLU run on each piece's rows of its product.
    assert!(
        listing.contains(
            "gemm %7 = matmul : f32[N, 256] (line 8) in up to 4 pieces of 64 iterations -> \
             arena[16..]; then on each piece's rows, map %10 = relu : f32[N, 256], fusing %9 add"
        ) && listing.contains("function")
            && listing.contains("f32x4"),
        "{listing}"
    );
    // A convolution's kernel is named where its code starts, with its pass, its chunk (run by the
    // direct convolution: one input channel) and the bias and activation it applies to each chunk.
    let lenet = netc(&["emit-ir", "models/lenet.net", "--stage", "clif"]);
    let listing = text(&lenet.stdout);
    let start = "; kernel 1: conv %12 = conv2d(kernel [5, 5], stride [1, 1], padding [2, 2])";
    let chunk = "Forward pass, 2 images per direct chunk (line 7) in up to 64 pieces of 2 chunks \
                 -> arena[16..]";
    let epilogue = "then on each chunk, map %16 = sigmoid : f32[N, 6, 28, 28], fusing %15 add";
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines.windows(2).any(|w| w[0]
            .starts_with(&format!("{start} : f32[N, 6, 28, 28], {chunk}; {epilogue}"))
            && w[1].starts_with("block")),
        "{listing}"
    );
    // Average pooling's gradient runs the activation's gradient on each plane.
    assert!(
        listing
            .lines()
            .any(|l| l.contains("pool_grad %81 = avgpool_grad")
                && l.contains("; then on each plane, map %85 = mul")),
        "{listing}"
    );
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

#[test]
fn summary_counts_the_expression_a_layers_block_reads() {
    let path = temp("layers_of_an_expression.net");
    std::fs::write(
        &path,
        "net d { input x: [784] label y: class(10) param w1: [784, 256] param b1: [256]\n\
         h = layers(relu(x @ w1 + b1)) { dropout(0.2) dense(10) }\n\
         loss cross_entropy(h, y) optimizer sgd(lr: 0.1) }",
    )
    .expect("writable");
    let out = netc(&["check", path.to_str().expect("utf-8"), "--summary"]);
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    // 784·256 multiply-adds (2 FLOPs each), then the bias and relu: 256 each.
    let row = stdout
        .lines()
        .find(|line| line.starts_with("relu(x @ w1 + b1)"))
        .unwrap_or_else(|| panic!("a row for the expression: {stdout}"));
    assert!(row.contains("401,920"), "{row}");
}

#[test]
fn summary_folds_blocks_below_a_depth() {
    let rows = |depth: Option<&str>| {
        let mut args = vec!["check", "models/resnet.net", "--summary"];
        args.extend(depth.map(|d| ["--depth", d]).into_iter().flatten());
        let out = netc(&args);
        assert_eq!(out.status.code(), Some(0));
        text(&out.stdout)
    };
    let total = |summary: &str| {
        summary
            .lines()
            .find(|line| line.starts_with("total"))
            .map(str::to_string)
    };
    let (all, stages, residuals) = (rows(None), rows(Some("0")), rows(Some("1")));
    // Every depth shows the same totals, and each block's row sums its contents.
    assert_eq!(total(&all), total(&stages));
    assert_eq!(total(&all), total(&residuals));
    assert!(
        stages.contains("stage4") && !stages.contains("residual1"),
        "{stages}"
    );
    assert!(residuals.contains("  residual1") && !residuals.contains("y.conv2d1"));
    assert!(all.contains("    y.conv2d1"), "{all}");
    let stage1 = stages
        .lines()
        .find(|line| line.starts_with("stage1"))
        .expect("a row for stage1");
    assert!(
        stage1.contains("9,408"),
        "two residual blocks of 4,704 parameters each: {stage1}"
    );
    assert_eq!(
        netc(&["check", "models/mlp.net", "--depth", "1"])
            .status
            .code(),
        Some(2)
    );
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("netc-cli-{}-{name}", std::process::id()))
}

#[test]
fn run_trains_logs_saves_and_the_same_seed_gives_the_same_bytes() {
    let (log, first, second) = (
        temp("run.jsonl"),
        temp("a.safetensors"),
        temp("b.safetensors"),
    );
    let args = |save: &std::path::Path| {
        vec![
            "run",
            "models/linreg.net",
            "--data",
            "linear",
            "--log",
            log.to_str().expect("utf-8"),
            "--save",
            save.to_str().expect("utf-8"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let out = crate::hostile::netc()
        .args(args(&first))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("epoch")).count(),
        3,
        "{stdout}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("log written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    for key in ["epoch", "train_loss", "test_loss", "lr", "seconds"] {
        assert!(lines[2].get(key).is_some(), "log lacks {key}");
    }
    // A regression reports no accuracy, only what it measures.
    assert!(
        lines[2].get("train_acc").is_none()
            && lines[2]["test_loss"].as_f64().is_some_and(|l| l < 0.001)
    );

    let again = Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args(&second))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&first).expect("saved"),
        std::fs::read(&second).expect("saved"),
        "same seed, different weights"
    );

    let eval = netc(&[
        "eval",
        "models/linreg.net",
        "--weights",
        first.to_str().expect("utf-8"),
        "--data",
        "linear",
    ]);
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval.stderr));
    let expected = format!(
        "test_loss {:.6}",
        lines[2]["test_loss"].as_f64().expect("a number")
    );
    assert!(
        text(&eval.stdout).contains(&expected),
        "{} vs {expected}",
        text(&eval.stdout)
    );

    let resumed = netc(&[
        "run",
        "models/linreg.net",
        "--data",
        "linear",
        "--resume",
        first.to_str().expect("utf-8"),
        "--epochs",
        "4",
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stdout).starts_with("epoch   4"),
        "{}",
        text(&resumed.stdout)
    );
    for f in [log, first, second] {
        std::fs::remove_file(f).ok();
    }
}

#[test]
fn predict_and_gradcheck_report_per_example_and_per_parameter() {
    let weights = temp("xor.safetensors");
    let run = netc(&[
        "run",
        "models/xor.net",
        "--data",
        "xor",
        "--save",
        weights.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let predict = netc(&[
        "predict",
        "models/xor.net",
        "--weights",
        weights.to_str().expect("utf-8"),
        "--data",
        "xor",
        "--limit",
        "4",
    ]);
    assert_eq!(predict.status.code(), Some(0), "{}", text(&predict.stderr));
    assert_eq!(
        text(&predict.stdout).lines().count(),
        5,
        "a header and four rows: {}",
        text(&predict.stdout)
    );
    std::fs::remove_file(weights).ok();

    let check = netc(&["gradcheck", "models/xor.net"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let stdout = text(&check.stdout);
    assert!(
        stdout.contains("dense1.weight") && stdout.contains("worst"),
        "{stdout}"
    );
}

#[test]
fn data_errors_exit_one_with_their_code() {
    let missing = netc(&[
        "run",
        "models/mlp.net",
        "--data",
        "fmnist",
        "--data-dir",
        "/nonexistent/netc",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = text(&missing.stderr);
    assert!(
        stderr.contains("error[E0504]") && stderr.contains("dataset-fashion-mnist"),
        "{stderr}"
    );

    let misfit = netc(&["run", "models/mlp.net", "--data", "linear"]);
    assert_eq!(misfit.status.code(), Some(1));
    let stderr = text(&misfit.stderr);
    assert!(
        stderr.contains("error[E0507]") && stderr.contains("models/mlp.net:3:11"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn the_jit_trains_what_it_compiles_and_refuses_the_rest_with_e0510() {
    let jit = netc(&[
        "run",
        "models/xor.net",
        "--data",
        "xor",
        "--backend",
        "jit",
        "--epochs",
        "3",
    ]);
    assert_eq!(jit.status.code(), Some(0), "{}", text(&jit.stderr));
    assert!(text(&jit.stderr).contains("compiled the training and evaluation steps"));
    let interp = netc(&[
        "run",
        "models/xor.net",
        "--data",
        "xor",
        "--backend",
        "interp",
        "--epochs",
        "3",
    ]);
    // Epoch, loss and accuracy columns; the timings differ.
    let figures = |out: &Output| {
        text(&out.stdout)
            .lines()
            .map(|l| l.split("  ").take(4).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        figures(&jit),
        figures(&interp),
        "the JIT and the interpreter report the same epochs"
    );

    // A layer of 2^16 units at a batch of 1000 needs buffers of gigabytes: with the memory
    // this process may use set to 64 MiB, the JIT refuses before allocating them, and so does
    // the interpreter that `auto` falls back to.
    let dir = std::env::temp_dir().join(format!("netc-jit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let model = dir.join("wide.net");
    std::fs::write(
        &model,
        "net wide {\n  input x: [2]\n  target y: [1]\n  h = layers(x) { dense(65536) relu dense(1) }\n  loss mse(h, y)\n  optimizer sgd(lr: 0.1)\n}\n",
    )
    .expect("write model");
    let model = model.to_str().expect("utf-8");
    let limited = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netc"))
            .args(args)
            .env("NETC_MEMORY_LIMIT", (64u64 << 20).to_string())
            .output()
            .expect("netc runs")
    };
    let run = ["run", model, "--data", "linear", "--batch", "1000"];
    let refused = limited(&[&run[..], &["--backend", "jit"]].concat());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    let jit = netc::diagnostics::Code::E0510.as_str();
    assert!(
        stderr.contains(&format!("error[{jit}]"))
            && stderr.contains("more than this process may use"),
        "{stderr}"
    );
    let auto = limited(&run);
    let stderr = text(&auto.stderr);
    assert_eq!(auto.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("running on the interpreter"), "{stderr}");
    let code = netc::diagnostics::Code::E0511.as_str();
    assert!(
        stderr.contains(&format!("error[{code}]")) && stderr.contains("interpreter's values"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_prints_its_figures() {
    let out = netc(&[
        "bench",
        "models/linreg.net",
        "--data",
        "linear",
        "--steps",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for figure in ["compile", "step", "epoch", "GFLOP/s", "peak memory"] {
        assert!(stdout.contains(figure), "no {figure} in:\n{stdout}");
    }
}

/// `netc bench` runs on up to 16 workers on any machine, checks that its steps give the same
/// bits as on one worker, and shows that every worker it was asked for exists.
#[test]
fn bench_runs_on_many_workers_with_the_same_bits() {
    if crate::fmnist_missing() {
        return;
    }
    for threads in ["3", "16"] {
        let out = netc(&[
            "bench",
            "models/lenet.net",
            "--data",
            "fmnist",
            "--steps",
            "3",
            "--threads",
            threads,
        ]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
        assert!(stdout.contains(&format!("{threads} threads")), "{stdout}");
        assert!(
            stdout.contains("bits         the same after 3 steps"),
            "{stdout}"
        );
        let workers = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "workers      {threads}, pieces run by each over the epoch: "
                ))
            })
            .unwrap_or_else(|| panic!("no workers line in:\n{stdout}"));
        assert_eq!(
            workers.split(' ').count(),
            threads.parse::<usize>().expect("a number"),
            "{stdout}"
        );
    }
}

/// An epoch during which other programs keep the cores busy says so, on its line and in the
/// log: here twice as many spinning threads as there are cores, in the test's own process.
#[test]
fn an_epoch_on_busy_cores_says_so() {
    use std::sync::atomic::{AtomicBool, Ordering};
    if crate::fmnist_missing() {
        return;
    }
    let log = temp("busy.jsonl");
    let spinners = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        for _ in 0..spinners {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let log = log.to_str().expect("a UTF-8 path");
        // Two workers, so that the pool waits between jobs even on a single core.
        let args = [
            "run",
            "models/mlp.net",
            "--data",
            "fmnist",
            "--epochs",
            "1",
            "--threads",
            "2",
        ];
        let out = netc(&[&args[..], &["--log", log]].concat());
        stop.store(true, Ordering::Relaxed);
        out
    });
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("cores shared"), "{stdout}");
    let line = std::fs::read_to_string(&log).expect("the log");
    let json: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let share = json["contended"].as_f64().expect("a share");
    assert!(share > 0.0 && share <= 1.0, "{line}");
    let _ = std::fs::remove_file(&log);
}

/// A number of threads outside 1 to 256, from the flag or the environment, is E0502.
#[test]
fn bad_thread_counts_are_refused() {
    let code = netc::diagnostics::Code::E0502.as_str();
    for (flag, env) in [(Some("0"), None), (Some("257"), None), (None, Some("many"))] {
        let mut command = crate::hostile::netc();
        command.args(["run", "models/linreg.net", "--data", "linear"]);
        if let Some(flag) = flag {
            command.args(["--threads", flag]);
        }
        if let Some(env) = env {
            command.env("NETC_THREADS", env);
        }
        let out = command.output().expect("netc runs");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("error[{code}]")) && stderr.contains("number of threads"),
            "{stderr}"
        );
    }
    // A good value in the environment is used.
    let out = crate::hostile::netc()
        .args([
            "bench",
            "models/linreg.net",
            "--data",
            "linear",
            "--steps",
            "2",
        ])
        .env("NETC_THREADS", "5")
        .output()
        .expect("netc runs");
    assert!(
        text(&out.stdout).contains("5 threads"),
        "{}",
        text(&out.stdout)
    );
}

/// `--schedule` is read as a model file's `schedule` would be: its mistakes are diagnostics
/// against the option's text, and a warm-up the run is too short for is E0502 before training.
#[test]
fn the_schedule_option_is_checked_like_the_model_file() {
    let run = |schedule: &str, epochs: &str| {
        netc(&[
            "run",
            "models/xor.net",
            "--data",
            "xor",
            "--epochs",
            epochs,
            "--schedule",
            schedule,
        ])
    };
    let typo = run("cosin(warmup: 1)", "2");
    assert_eq!(typo.status.code(), Some(1));
    let stderr = text(&typo.stderr);
    assert!(
        stderr.contains("error[E0215]") && stderr.contains("--schedule:1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `cosine`?"), "{stderr}");

    let syntax = run("step(every: 2", "2");
    assert_eq!(syntax.status.code(), Some(1));
    assert!(text(&syntax.stderr).contains("error[E0101]"));

    let too_short = run("cosine(warmup: 3)", "3");
    assert_eq!(too_short.status.code(), Some(1));
    let stderr = text(&too_short.stderr);
    assert!(stderr.contains("error[E0502]"), "{stderr}");
    assert!(text(&too_short.stdout).is_empty(), "nothing trains");

    let good = run("step(every: 1, factor: 0.5)", "3");
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    let stdout = text(&good.stdout);
    let rates: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("  lr ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .collect();
    // models/xor.net's rate of 2, halved after each epoch.
    assert_eq!(rates, ["2.0000", "1.0000", "0.5000"], "{stdout}");

    // Weights trained under a schedule resume under another and export as the file declares.
    let dir = std::env::temp_dir().join(format!("netc-schedule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let saved = dir.join("xor.safetensors");
    let saved = saved.to_str().expect("utf-8");
    let run = ["run", "models/xor.net", "--data", "xor", "--save", saved];
    let first = netc(&[&run[..], &["--epochs", "2", "--schedule", "cosine"]].concat());
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let more = [
        "--epochs",
        "3",
        "--resume",
        saved,
        "--schedule",
        "step(every: 1)",
    ];
    let resumed = netc(&[&run[..], &more].concat());
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let onnx = dir.join("xor.onnx");
    let export = netc(&[
        "export",
        "models/xor.net",
        "--weights",
        saved,
        "-o",
        onnx.to_str().expect("utf-8"),
    ]);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    std::fs::remove_dir_all(dir).ok();
}

/// A netc built without MPI that `mpirun` starts as one of several processes refuses to run,
/// rather than train as many separate copies, each writing the same files.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_be_one_of_several_processes() {
    let out = Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(["run", "models/linreg.net", "--data", "linear"])
        .env("OMPI_COMM_WORLD_RANK", "1")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error[{}]", Code::E0516.as_str())),
        "{stderr}"
    );
    assert!(stderr.contains("--features mpi"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
}

//! The command line under hostile but realistic use: sizes that would overflow or exhaust
//! memory, inputs deep enough to exhaust the stack, closed pipes, interrupts, kills, output
//! paths that cannot be written or would overwrite an input, and exact resumption. Each case
//! runs the real binary and checks the exit code, the diagnostic and what is left on disk.

use netc::diagnostics::Code;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub(crate) fn netc() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_netc"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

pub(crate) fn run(args: &[&str]) -> Output {
    netc().args(args).output().expect("netc runs")
}

/// Runs a command line (words separated by spaces).
fn run_line(line: &str) -> Output {
    run(&line.split_whitespace().collect::<Vec<_>>())
}

/// Runs a command line and asserts it succeeded.
fn succeeds_line(line: &str) -> Output {
    succeeds(&line.split_whitespace().collect::<Vec<_>>())
}

/// Runs netc and asserts it succeeded.
pub(crate) fn succeeds(args: &[&str]) -> Output {
    let out = run(args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    out
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a run failed with exit 1 and the diagnostic `code`, mentioning each of `words`.
pub(crate) fn refused(out: &Output, code: Code, words: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error[{}]", code.as_str())),
        "{stderr}"
    );
    for word in words {
        assert!(stderr.contains(word), "`{word}` is not in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A temporary directory of this test's own, removed afterwards.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub(crate) fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("netc-hostile-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.0.join(name), text).expect("write fixture");
        self.path(name)
    }

    /// Files left in the directory whose name ends in `.partial`.
    pub(crate) fn partial_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.0)
            .expect("listable")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A small model with dropout and momentum, so that shuffling, masks and optimizer state all
/// have to be resumed exactly.
const STATEFUL: &str = "net stateful {
    input size: [1]
    target toxicity: [1]
    layers { dense(16) tanh dropout(0.2) dense(1) }
    loss mse
    optimizer sgd(lr: 0.05, momentum: 0.9)
    train { batch: 8, epochs: 4 }
}
";

#[test]
fn sizes_from_flags_and_files_meet_one_limit() {
    for batch in [
        "9223372036854775808",
        "18446744073709551615",
        "16777217",
        "0",
    ] {
        refused(
            &run(&[
                "run",
                "models/linreg.net",
                "--data",
                "linear",
                "--batch",
                batch,
            ]),
            Code::E0502,
            &["`batch` must be between 1 and 16777216"],
        );
    }
    refused(
        &run_line("run models/linreg.net --data linear --lr 1e39"),
        Code::E0405,
        &["largest f32"],
    );
    refused(
        &run(&["gradcheck", "models/linreg.net", "--batch", "1000000000"]),
        Code::E0502,
        &["16777216"],
    );
    // A batch larger than the data set is the data set: nothing larger is allocated.
    succeeds_line("run models/linreg.net --data linear --batch 16777216 --epochs 1");
}

#[test]
fn e0511_a_run_that_cannot_fit_in_memory_is_refused_before_allocating() {
    let dir = Dir::new("memory");
    let big = dir.write(
        "big.net",
        "net big {\n  input x: [2]\n  target y: [1]\n  param big: [131072, 131072]\n  param w: [2, 1]\n  loss mse(x @ w, y) + sum(big)\n  optimizer sgd(lr: 0.1)\n}\n",
    );
    assert_eq!(run(&["check", &big]).status.code(), Some(0));
    refused(
        &run(&["run", &big, "--data", "linear"]),
        Code::E0511,
        &["192.0 GiB", "weights"],
    );
    // The gradient check's batch is checked against memory too.
    let out = netc()
        .args(["gradcheck", "models/mlp.net", "--batch", "16777216"])
        .env("NETC_MEMORY_LIMIT", (1u64 << 30).to_string())
        .output()
        .expect("netc runs");
    refused(&out, Code::E0511, &["gradient check"]);
}

#[test]
fn large_arenas_compile_with_addresses_beyond_32_bits() {
    // LeNet at a batch of 30000: both steps compile at once, each with an arena of gigabytes
    // (untouched memory until used), and the generated functions call each other by absolute
    // address however far apart the JIT places them.
    if crate::fmnist_missing() {
        return;
    }
    let out = succeeds_line("run models/lenet.net --data fmnist --batch 30000 --epochs 0");
    assert!(text(&out.stderr).contains("compiled the training and evaluation steps"));
}

#[test]
fn deep_and_long_inputs_are_checked_without_exhausting_the_stack() {
    let dir = Dir::new("deep");
    let head = "net deep {\n  input x: [2]\n  target y: [1]\n  param w: [2, 1]\n  param b: [1]\n";
    let tail = "  loss mse(y_hat, y)\n  optimizer sgd(lr: 0.01)\n}\n";
    let plus = dir.write(
        "plus.net",
        &format!("{head}  y_hat = x @ w{}\n{tail}", " + b".repeat(10_000)),
    );
    refused(
        &run(&["check", &plus]),
        Code::E0103,
        &["nested too deeply", "…"],
    );
    let minus = dir.write(
        "minus.net",
        &format!("{head}  y_hat = x @ w + {}b\n{tail}", "-".repeat(10_000)),
    );
    refused(&run(&["check", &minus]), Code::E0103, &["256"]);
    // 100,000 equations, each reading the one before.
    let mut chain = format!("{head}  h0 = x @ w + b\n");
    for i in 1..100_000 {
        chain += &format!("  h{i} = h{} + b\n", i - 1);
    }
    let chain = dir.write("chain.net", &format!("{chain}  y_hat = h99999\n{tail}"));
    succeeds(&["check", &chain]);
    // A chain of 3,000 elementwise equations compiles (in memory linear in the chain).
    let mut chain = format!("{head}  h0 = x @ w + b\n");
    for i in 1..3_000 {
        chain += &format!("  h{i} = h{} + 0.0001 * b\n", i - 1);
    }
    let chain = dir.write("compiled.net", &format!("{chain}  y_hat = h2999\n{tail}"));
    succeeds_line(&format!(
        "run {chain} --data linear --epochs 1 --backend jit"
    ));
}

#[test]
fn a_closed_pipe_stops_no_training_and_loses_no_checkpoint() {
    let dir = Dir::new("pipe");
    let save = dir.path("linreg.safetensors");
    let mut child = netc()
        .args([
            "run",
            "models/linreg.net",
            "--data",
            "linear",
            "--epochs",
            "30",
        ])
        .args(["--save", &save])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netc runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("one line");
    // The reading end is closed now, as `| head -1` does.
    let out = child.wait_with_output().expect("finishes");
    assert!(first.starts_with("epoch   1"), "{first}");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    assert!(
        text(&out.stderr).contains("epoch 30"),
        "{}",
        text(&out.stderr)
    );
    assert!(Path::new(&save).exists());
}

#[test]
fn e0512_outputs_are_checked_before_training_and_never_overwrite_inputs() {
    let dir = Dir::new("outputs");
    let missing = dir.path("no/such/dir/x.safetensors");
    let out = run_line(&format!(
        "run models/linreg.net --data linear --save {missing}"
    ));
    refused(&out, Code::E0512, &["no/such/dir", "checkpoint"]);
    assert!(
        !text(&out.stdout).contains("epoch"),
        "refused before training"
    );
    refused(
        &run_line("run models/linreg.net --data linear --save models/linreg.net"),
        Code::E0512,
        &["would overwrite the model file"],
    );
    let csv = dir.write("table.csv", "a,y\n1,2\n2,4\n3,6\n4,8\n5,10\n");
    let model = dir.write(
        "table.net",
        "net table {\n  input a: [1]\n  target y: [1]\n  layers { dense(1) }\n  loss mse\n  optimizer sgd(lr: 0.01)\n}\n",
    );
    refused(
        &run(&[
            "run", &model, "--data", &csv, "--target", "y", "--log", &csv,
        ]),
        Code::E0512,
        &["would overwrite a data file"],
    );
    assert!(std::fs::read_to_string(&csv)
        .expect("kept")
        .starts_with("a,y"));
    refused(
        &run_line(&format!(
            "run {model} --data {csv} --target y --save-every 1"
        )),
        Code::E0512,
        &["--save"],
    );
    // A log that stops accepting lines is an error once training ends; the checkpoint is saved.
    let save = dir.path("full.safetensors");
    let out = run_line(&format!(
        "run {model} --data {csv} --target y --log /dev/full --save {save}"
    ));
    refused(&out, Code::E0512, &["/dev/full"]);
    assert!(Path::new(&save).exists());
    // A run that fails before it trains leaves an earlier log as it was.
    let log = dir.write("old.jsonl", "an earlier run's log\n");
    let missing_data = dir.path("missing.csv");
    refused(
        &run(&[
            "run",
            &model,
            "--data",
            &missing_data,
            "--target",
            "y",
            "--log",
            &log,
        ]),
        Code::E0504,
        &["missing.csv"],
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("kept"),
        "an earlier run's log\n"
    );
    // A checkpoint may be replaced by its own continuation.
    succeeds(&[
        "run", &model, "--data", &csv, "--target", "y", "--resume", &save, "--save", &save,
        "--epochs", "2",
    ]);
}

#[test]
fn a_diverged_run_saves_weights_that_evaluate_to_a_finite_loss() {
    let dir = Dir::new("diverge");
    let save = dir.path("linreg.safetensors");
    let out = run_line(&format!(
        "run models/linreg.net --data linear --lr 5 --save {save}"
    ));
    refused(&out, Code::E0509, &["put back", "models/linreg.net line"]);
    let eval = run_line(&format!(
        "eval models/linreg.net --data linear --weights {save}"
    ));
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval.stderr));
    let loss: f64 = text(&eval.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a test loss");
    assert!(loss.is_finite(), "{}", text(&eval.stdout));
}

/// Starts a run and returns it once it has printed its first epoch.
fn started(args: &[&str]) -> Child {
    let mut child = netc()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netc runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert!(lines.next().is_some(), "an epoch ran");
    // Keep draining stdout so the run never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn an_interrupt_saves_after_a_whole_step_and_the_run_resumes_exactly() {
    let dir = Dir::new("interrupt");
    let model = dir.write("stateful.net", STATEFUL);
    let training = [
        "run",
        &model,
        "--data",
        "beans",
        "--epochs",
        "400",
        "--backend",
        "jit",
    ];
    let (whole, part) = (dir.path("whole.safetensors"), dir.path("part.safetensors"));
    succeeds(&[&training[..], &["--seed", "3", "--save", &whole]].concat());

    let child = started(&[&training[..], &["--seed", "3", "--save", &part]].concat());
    signal(&child, "-INT");
    let out = child.wait_with_output().expect("stops");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after step"), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    // Resumed without --seed: the seed (and the data it draws) comes from the checkpoint.
    succeeds(&[&training[..], &["--resume", &part, "--save", &part]].concat());
    assert!(
        std::fs::read(&whole).expect("saved") == std::fs::read(&part).expect("saved"),
        "interrupted and resumed, the run saves the same bytes as one that was not"
    );
}

#[test]
fn periodic_saves_survive_a_kill_and_leave_no_partial_files() {
    let dir = Dir::new("kill");
    let model = dir.write("stateful.net", STATEFUL);
    let save = dir.path("run.safetensors");
    let child = started(&[
        "run",
        &model,
        "--data",
        "beans",
        "--epochs",
        "100000",
        "--save",
        &save,
        "--save-every",
        "7steps",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    signal(&child, "-KILL");
    child.wait_with_output().expect("killed");
    let eval = run(&["eval", &model, "--data", "beans", "--weights", &save]);
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval.stderr));
    // Whatever the kill interrupted, the next save leaves no temporary file behind.
    succeeds(&[
        "run", &model, "--data", "beans", "--resume", &save, "--save", &save, "--epochs", "1",
    ]);
    assert!(dir.partial_files().is_empty(), "{:?}", dir.partial_files());
}

#[test]
fn seeds_learning_rates_and_model_hashes_are_obeyed() {
    let dir = Dir::new("obeyed");
    let model = dir.write("stateful.net", STATEFUL);
    let save = |name: &str, extra: &[&str]| {
        let path = dir.path(name);
        let out = run(&[
            &["run", &model, "--data", "beans", "--save", &path][..],
            extra,
        ]
        .concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        std::fs::read(path).expect("saved")
    };
    assert_ne!(
        save("seed1", &["--epochs", "1", "--seed", "1"]),
        save("seed2", &["--epochs", "1", "--seed", "2"]),
        "seeds 1 and 2 give different weights"
    );
    // One step over the whole set: the change in every weight is proportional to `--lr`.
    let weight = |bytes: &[u8]| -> Vec<f32> {
        let tensors = safetensors::SafeTensors::deserialize(bytes).expect("checkpoint");
        let view = tensors.tensor("dense2.weight").expect("a weight");
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let one = ["--batch", "1000", "--seed", "4"];
    let start = weight(&save("start", &[&one[..], &["--epochs", "0"]].concat()));
    let small = weight(&save(
        "small",
        &[&one[..], &["--epochs", "1", "--lr", "0.001"]].concat(),
    ));
    let large = weight(&save(
        "large",
        &[&one[..], &["--epochs", "1", "--lr", "0.002"]].concat(),
    ));
    for ((w0, a), b) in start.iter().zip(&small).zip(&large) {
        let (da, db) = (a - w0, b - w0);
        assert!(da != 0.0, "the step moves every weight");
        assert!((db - 2.0 * da).abs() <= 1e-3 * da.abs() + 1e-7, "{da} {db}");
    }
    // Same parameters, another activation: only the model hash tells them apart.
    let other = dir.write("other.net", &STATEFUL.replace("tanh", "sigmoid"));
    let out = run(&[
        "eval",
        &other,
        "--data",
        "beans",
        "--weights",
        &dir.path("start"),
    ]);
    refused(&out, Code::E0508, &["different model", "model hash"]);
}

#[test]
fn small_mistakes_get_clear_answers() {
    let dir = Dir::new("minor");
    let text_of = |p: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).expect("model")
    };
    let bom = dir.write(
        "bom.net",
        &format!("\u{feff}{}", text_of("models/linreg.net")),
    );
    succeeds(&["check", &bom]);
    let out = run_line("run models/linreg.net --data linear --epochs 0");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("nothing to train"),
        "{}",
        text(&out.stderr)
    );
    let out = run_line("run models/linreg.net --data linear --save-every 0");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("not a count above 0"));
}

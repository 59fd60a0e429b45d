//! Data-parallel training over MPI (built with `--features mpi`): `mpirun` with 2 and 3
//! processes on this machine trains as one process does, resumes across process counts, and
//! stops every process, never hanging, when they disagree or one fails.

use netc::diagnostics::Code;
use netc::runtime::Session;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory of its own for a test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-mpi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The first `train` and `test` examples of Fashion-MNIST in a scratch directory of their own,
/// or `None` (the test skips, saying so) where Fashion-MNIST is missing and may be.
fn subset(name: &str, train: u32, test: u32) -> Option<PathBuf> {
    if crate::fmnist_missing() {
        return None;
    }
    let dir = scratch(name);
    crate::fmnist_subset(&dir, train, test);
    Some(dir)
}

/// `netc ARGS` run alone, in the project directory.
fn alone(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

/// `mpirun` with `apps`, each `(processes, arguments after netc)`, as MPI's multiple-program
/// form joins them; a first `(processes, ["--", program, ...])` runs another program.
fn mpirun(apps: &[(usize, Vec<String>)], timeout: &str) -> Output {
    mpirun_with(apps, timeout, &[])
}

/// `mpirun` with more environment variables.
fn mpirun_with(apps: &[(usize, Vec<String>)], timeout: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("mpirun");
    for (i, (processes, args)) in apps.iter().enumerate() {
        if i > 0 {
            command.arg(":");
        }
        command.args(["--oversubscribe", "-np", &processes.to_string()]);
        match args.first().map(String::as_str) {
            Some("--") => command.args(&args[1..]),
            _ => command.arg(env!("CARGO_BIN_EXE_netc")).args(args),
        };
    }
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Test machines run as root; Open MPI asks for both to allow it.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("NETC_MPI_TIMEOUT", timeout)
        .envs(env.iter().copied())
        .output()
        .expect("mpirun runs: install Open MPI with scripts/install-mpi")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The parameters a checkpoint of `model` holds.
fn weights(model: &str, checkpoint: &Path) -> Vec<Vec<f32>> {
    let source = crate::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(model));
    let (checked, diagnostics) = netc::front_end(&source);
    let (_, model) = checked.unwrap_or_else(|| panic!("{diagnostics:?}"));
    let mut session = Session::new(&model, &source, 0).expect("a session");
    session
        .restore(checkpoint)
        .unwrap_or_else(|e| panic!("{}: {e:?}", checkpoint.display()));
    session.params.into_iter().map(|t| t.data).collect()
}

/// The largest difference between two sets of weights, over the largest weight.
fn drift(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let largest = a.iter().flatten().fold(0f32, |m, w| m.max(w.abs())) as f64;
    let worst = (a.iter().flatten())
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
    worst / largest
}

fn run_args(model: &str, data: &Path, epochs: &str, save: &Path) -> Vec<String> {
    strings(&[
        "run",
        model,
        "--data",
        "fmnist",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--epochs",
        epochs,
        "--save",
        save.to_str().expect("utf-8"),
    ])
}

/// The weights after one epoch on 2 and 3 processes against one process's, by how many steps
/// the epoch has: 1 and 32 steps (the first 256 and 8,192 examples) and the whole data set (235
/// steps). Each step's sums are added in another order (two or three partial sums of a product
/// instead of one), which changes the weights by float rounding, about 1e-7 of the largest
/// weight per step. That stays within 1e-5 until an example's input to a ReLU, near zero, falls
/// on the other side of it in one run than in the other: from then on that one unit's weights
/// differ by more (measured over the whole epoch: 1.1e-4 for the MLP, 2.1e-6 for LeNet, the
/// largest differences in one hidden unit). The whole epoch is held to 1e-3 for that reason,
/// and its drift is printed.
#[test]
fn two_and_three_processes_train_as_one_does() {
    if crate::fmnist_missing() {
        return;
    }
    let subsets = scratch("subsets");
    for (examples, bound) in [(256, 1e-6), (8192, 1e-5), (60000, 1e-3)] {
        let dir = match examples {
            60000 => PathBuf::from(netc::data::FMNIST_DIR),
            n => {
                let dir = subsets.join(n.to_string());
                std::fs::create_dir_all(&dir).expect("a directory");
                crate::fmnist_subset(&dir, n, 500);
                dir
            }
        };
        let whole = examples == 60000;
        for model in ["models/mlp.net", "models/lenet.net"] {
            let out_dir = scratch("equivalence");
            let single = out_dir.join("single.safetensors");
            let args = run_args(model, &dir, "1", &single);
            let out = alone(&args);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let one = weights(model, &single);
            for processes in [2, 3] {
                let save = out_dir.join(format!("p{processes}.safetensors"));
                let out = mpirun(&[(processes, run_args(model, &dir, "1", &save))], "60");
                let stderr = text(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{model} on {processes}: {stderr}"
                );
                // Only the first process prints.
                let stdout = text(&out.stdout);
                assert_eq!(stdout.matches("epoch   1").count(), 1, "{stdout}");
                assert!(
                    stderr.contains(&format!("data-parallel over {processes} processes")),
                    "{stderr}"
                );
                let drift = drift(&one, &weights(model, &save));
                eprintln!(
                    "{model}, {examples} examples, {processes} processes: weights differ by {drift:.2e} of the largest"
                );
                assert!(
                    drift <= bound,
                    "{model} on {processes} processes, {examples} examples: {drift:.2e}"
                );
                if !whole {
                    continue;
                }
                // The same bits every time for the same number of processes, however the
                // gradients are cut into buckets (small ones, summed during the backward pass,
                // or one, summed after it) and however they travel (shared memory, or TCP
                // over the loopback interface, as between hosts).
                let ways: [(&str, &[(&str, &str)]); 3] = [
                    ("buckets of 16 KiB", &[("NETC_BUCKET_KIB", "16")]),
                    ("one bucket", &[("NETC_BUCKET_KIB", "0")]),
                    (
                        "TCP over loopback",
                        &[
                            ("OMPI_MCA_btl", "tcp,self"),
                            ("OMPI_MCA_btl_tcp_if_include", "lo"),
                        ],
                    ),
                ];
                for (way, env) in ways {
                    let again = out_dir.join("again.safetensors");
                    let args = run_args(model, &dir, "1", &again);
                    let out = mpirun_with(&[(processes, args)], "60", env);
                    let stderr = text(&out.stderr);
                    assert_eq!(out.status.code(), Some(0), "{way}: {stderr}");
                    if way == "buckets of 16 KiB" {
                        assert!(!stderr.contains("in 1 bucket "), "{stderr}");
                    }
                    assert_eq!(
                        std::fs::read(&save).expect("saved"),
                        std::fs::read(&again).expect("saved"),
                        "{model} on {processes} processes, {way}, differs"
                    );
                }
            }
        }
    }
}

/// Batch normalization normalizes each share by its own statistics while training, and the
/// running statistics are averaged over the processes (documented): a model with it, and with
/// optimizer state, trains on two processes and keeps improving.
#[test]
fn a_model_with_batch_normalization_trains_on_two_processes() {
    let Some(dir) = subset("batchnorm", 4096, 500) else {
        return;
    };
    let save = dir.join("bn.safetensors");
    let out = mpirun(
        &[(2, run_args("models/lenet_bn.net", &dir, "2", &save))],
        "60",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let losses: Vec<f64> = (stdout.lines())
        .filter_map(|l| {
            l.split("train_loss ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(losses.len() == 2 && losses[1] < losses[0], "{stdout}");
    let saved = weights("models/lenet_bn.net", &save);
    assert!(saved.iter().flatten().all(|w| w.is_finite()), "{stderr}");
}

#[test]
fn a_run_resumes_across_process_counts() {
    let Some(dir) = subset("resume", 4096, 500) else {
        return;
    };
    let model = "models/mlp.net";
    let path = |name: &str| dir.join(name);
    let straight = path("straight.safetensors");
    let args = run_args(model, &dir, "3", &straight);
    let out = alone(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // One process, then two, then one again: epochs 1, 2 and 3.
    let hops = path("hops.safetensors");
    let hop = |epochs: &str, processes: usize| {
        let mut args = run_args(model, &dir, epochs, &hops);
        if epochs != "1" {
            args.extend(strings(&["--resume", hops.to_str().expect("utf-8")]));
        }
        let out = match processes {
            1 => alone(&args),
            p => mpirun(&[(p, args)], "60"),
        };
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    hop("1", 1);
    hop("2", 2);
    hop("3", 1);
    let drift = drift(&weights(model, &straight), &weights(model, &hops));
    assert!(
        drift <= 1e-5,
        "resumed across process counts, drifts {drift:.2e}"
    );
}

#[test]
fn processes_that_disagree_or_fail_stop_every_process() {
    let Some(dir) = subset("faults", 4096, 500) else {
        return;
    };
    let save = dir.join("w.safetensors");
    let args = run_args("models/mlp.net", &dir, "2", &save);

    // Another model file on one process.
    let mut other = args.clone();
    other[1] = "models/softmax.net".into();
    let out = mpirun(&[(1, args.clone()), (1, other)], "30");
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains(&format!("error[{}]", Code::E0515.as_str())),
        "{stderr}"
    );
    assert!(stderr.contains("process 1 of 2"), "{stderr}");
    assert_eq!(
        stderr.matches("error[").count(),
        1,
        "printed once: {stderr}"
    );
    assert!(!save.exists(), "nothing was trained, so nothing is saved");

    // Another data set on one process, found after loading.
    let elsewhere = subset("faults-other-data", 4000, 500).expect("Fashion-MNIST is here");
    let mut other = args.clone();
    other[5] = elsewhere.to_str().expect("utf-8").into();
    let out = mpirun(&[(1, args.clone()), (1, other)], "30");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error[E0515]"), "{stderr}");

    // A process that stops answering mid-run (stopped by a signal) is waited for as long as
    // NETC_MPI_TIMEOUT says, then every process stops.
    let mut long = args.clone();
    long[7] = "1000".into();
    let signalled = |signal: &str| {
        let mut program = strings(&["--", "sh", "-c"]);
        program.push(format!(
            "(sleep 1; kill -{signal} $$) & exec {} {}",
            env!("CARGO_BIN_EXE_netc"),
            long.join(" ")
        ));
        program
    };
    let started = std::time::Instant::now();
    let out = mpirun(&[(1, long.clone()), (1, signalled("STOP"))], "3");
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains(&format!("error[{}]", Code::E0516.as_str())),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 60, "stopped, not hung");

    // An interrupt (SIGINT) to one process stops every process after the same step, and the
    // first saves.
    let interrupted = dir.join("interrupted.safetensors");
    let mut saving = long.clone();
    saving[9] = interrupted.to_str().expect("utf-8").into();
    let mut program = strings(&["--", "sh", "-c"]);
    program.push(format!(
        "(sleep 2; kill -INT $$) & exec {} {}",
        env!("CARGO_BIN_EXE_netc"),
        saving.join(" ")
    ));
    let out = mpirun(&[(1, saving.clone()), (1, program)], "60");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("interrupted after step"), "{stderr}");
    assert!(interrupted.exists(), "{stderr}");

    // A process that dies mid-run: mpirun stops the others.
    let started = std::time::Instant::now();
    let out = mpirun(&[(1, long.clone()), (1, signalled("KILL"))], "600");
    assert_ne!(out.status.code(), Some(0));
    assert!(started.elapsed().as_secs() < 60, "stopped, not hung");
}

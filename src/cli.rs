//! The command line: `netc check`, `emit-ir`, `run`, `eval`, `predict`, `gradcheck`, `explain`.
//! Exit codes: 0 success (warnings allowed), 1 when the model or data has errors, 2 for usage
//! errors.

use crate::check::model::{LabelKind, Model, Optimizer};
use crate::data::{Source, Split};
use crate::diagnostics::{self, Code, Diagnostic};
use crate::interp::Tensor;
use crate::ir;
use crate::runtime::{self, Reporter, RunSettings, Session};
use crate::source::SourceFile;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "netc",
    version,
    about = "Check, inspect and train neural networks declared in .net files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check a model; print diagnostics.
    Check {
        file: PathBuf,
        /// Print a per-layer table of shapes, parameters, FLOPs and activation memory.
        #[arg(long)]
        summary: bool,
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Print the program at one stage of the pipeline.
    EmitIr {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Stage::Ir)]
        stage: Stage,
        /// Lower for training (dropout on, batch statistics) or evaluation.
        #[arg(long, value_enum, default_value_t = ModeArg::Train)]
        mode: ModeArg,
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Train a model on a data set.
    Run {
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Epochs to train (default: the model's `train` block).
        #[arg(long)]
        epochs: Option<u64>,
        /// Examples per step (default: the model's `train` block).
        #[arg(long)]
        batch: Option<u64>,
        /// Learning rate (default: the model's optimizer).
        #[arg(long)]
        lr: Option<f64>,
        /// Seed for initialization, shuffling and dropout (default: the model's `train` block).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Threads for the compiled step's matrix products (default: all cores); results do not
        /// depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Print the compiled training step's time per kernel after training.
        #[arg(long)]
        profile: bool,
        /// Also write each epoch's figures to this file as JSON lines.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Save a checkpoint here when training ends (or stops).
        #[arg(long)]
        save: Option<PathBuf>,
        /// Continue from a checkpoint saved by `--save`.
        #[arg(long)]
        resume: Option<PathBuf>,
    },
    /// Report loss and accuracy of saved weights on the test split.
    Eval {
        file: PathBuf,
        #[arg(long)]
        weights: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Print predicted against true labels for test examples.
    Predict {
        file: PathBuf,
        #[arg(long)]
        weights: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// How many examples to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Measure training speed: compile time, step and epoch times, GFLOP/s, peak memory.
    Bench {
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Steps timed one by one for the median.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Check the model's symbolic gradients against finite differences (f64).
    Gradcheck {
        file: PathBuf,
        /// Take the batch from this data source instead of random numbers.
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        target: Option<String>,
        /// Examples in the checked batch.
        #[arg(long, default_value_t = 4)]
        batch: usize,
    },
    /// Explain an error code, e.g. `netc explain E0301`.
    Explain { code: String },
}

#[derive(clap::Args)]
struct DataArgs {
    /// fmnist, linear, beans, xor, separable, or a path to a .csv file.
    #[arg(long)]
    data: String,
    /// Where the Fashion-MNIST IDX files are (default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The target column of a CSV file.
    #[arg(long)]
    target: Option<String>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Backend {
    /// Native code when the model compiles, else the interpreter.
    Auto,
    /// Native code generated with Cranelift.
    Jit,
    /// The reference interpreter.
    Interp,
}

#[derive(Clone, Copy, ValueEnum)]
enum MessageFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    /// The parsed syntax tree, re-printed canonically.
    Ast,
    /// The forward tensor graph.
    Ir,
    /// The forward graph with the loss's gradient for every parameter.
    Grad,
    /// The whole training step: forward, gradients and the optimizer update.
    Step,
    /// The training step (or, with `--mode eval`, the evaluation graph) after simplification.
    Opt,
    /// The generated Cranelift IR of the optimized step, with the kernel each node became.
    Clif,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Train,
    Eval,
}

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Check {
            file,
            summary,
            message_format,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let (checked, diagnostics) = crate::front_end(&source);
            report(&source, &diagnostics, message_format);
            match checked {
                Some((_, model)) => {
                    if summary {
                        print!("{}", crate::check::summary::summary(&model, &source));
                    }
                    0
                }
                None => 1,
            }
        }
        Command::EmitIr {
            file,
            stage,
            mode,
            message_format,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let (checked, diagnostics) = crate::front_end(&source);
            report(&source, &diagnostics, message_format);
            let Some((ast, model)) = checked else {
                return 1;
            };
            match stage {
                Stage::Ast => print!("{ast}"),
                Stage::Ir => {
                    let mode = match mode {
                        ModeArg::Train => ir::Mode::Train,
                        ModeArg::Eval => ir::Mode::Eval,
                    };
                    print!("{}", ir::build(&model, &source, mode));
                }
                Stage::Grad => {
                    let forward = ir::build(&model, &source, ir::Mode::Train);
                    print!("{}", crate::autodiff::differentiate(&forward));
                }
                Stage::Step => {
                    let forward = ir::build(&model, &source, ir::Mode::Train);
                    let grads = crate::autodiff::differentiate(&forward);
                    print!(
                        "{}",
                        crate::autodiff::step::train_step(&grads, &model.optimizer)
                    );
                }
                Stage::Clif => {
                    let graph = match mode {
                        ModeArg::Train => crate::train_graph(&model, &source),
                        ModeArg::Eval => crate::eval_graph(&model, &source),
                    };
                    let wanted: Vec<_> = graph.results().collect();
                    match crate::codegen::Compiled::new(
                        &graph,
                        model.train.batch as usize,
                        &wanted,
                        false,
                    ) {
                        Ok(compiled) => print!("{}", compiled.listing()),
                        Err(why) => {
                            let diagnostic = crate::data::error(
                                Code::E0510,
                                format!("the JIT cannot compile this model: {}", why.0),
                            );
                            report(&source, &[diagnostic], message_format);
                            return 1;
                        }
                    }
                }
                Stage::Opt => match mode {
                    ModeArg::Train => print!("{}", crate::train_graph(&model, &source)),
                    ModeArg::Eval => print!("{}", crate::eval_graph(&model, &source)),
                },
            }
            0
        }
        Command::Run {
            file,
            data,
            epochs,
            batch,
            lr,
            seed,
            backend,
            threads,
            profile,
            log,
            save,
            resume,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let Some(model) = front_end(&source) else {
                return 1;
            };
            let defaults = model.train;
            let model_lr = match model.optimizer {
                Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => lr,
            };
            let settings = RunSettings {
                epochs: epochs.unwrap_or(defaults.epochs),
                batch: batch.unwrap_or(defaults.batch).max(1) as usize,
                lr: lr.unwrap_or(model_lr),
                seed: seed.unwrap_or(defaults.seed),
                shuffle: defaults.shuffle,
            };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            crate::codegen::set_threads(threads.unwrap_or(cores));
            let options = RunOptions {
                seed_given: seed.is_some(),
                backend,
                profile,
                log,
                save,
                resume,
            };
            let outcome = train(&source, &model, &data, settings, options);
            finish(&source, outcome)
        }
        Command::Eval {
            file,
            weights,
            data,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let Some(model) = front_end(&source) else {
                return 1;
            };
            let outcome = restored(&source, &model, &weights, &data).map(|(mut session, split)| {
                let score = session.evaluate(&split.test, model.train.batch as usize);
                match score.accuracy {
                    Some(acc) => println!(
                        "test_loss {:.6}  test_acc {acc:.4}  ({} examples)",
                        score.loss, split.test.len
                    ),
                    None => println!("test_loss {:.6}  ({} examples)", score.loss, split.test.len),
                }
            });
            finish(&source, outcome)
        }
        Command::Predict {
            file,
            weights,
            data,
            limit,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let Some(model) = front_end(&source) else {
                return 1;
            };
            let outcome = restored(&source, &model, &weights, &data)
                .map(|(mut session, split)| print_predictions(&mut session, &split, limit));
            finish(&source, outcome)
        }
        Command::Bench {
            file,
            data,
            steps,
            threads,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let Some(model) = front_end(&source) else {
                return 1;
            };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            crate::codegen::set_threads(threads.unwrap_or(cores));
            finish(
                &source,
                bench(&source, &model, &data, steps, threads.unwrap_or(cores)),
            )
        }
        Command::Gradcheck {
            file,
            data,
            data_dir,
            target,
            batch,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let Some(model) = front_end(&source) else {
                return 1;
            };
            match gradcheck(
                &source,
                &model,
                data.as_deref(),
                data_dir,
                target,
                batch.max(1),
            ) {
                Ok(true) => 0,
                // The verdict is printed; a failed check is a finding, not an error in the input.
                Ok(false) => 1,
                Err(diagnostic) => finish(&source, Err(diagnostic)),
            }
        }
        Command::Explain { code } => match Code::parse(&code) {
            Some(code) => {
                print!("{}", code.explanation());
                0
            }
            None => {
                eprintln!("error: `{code}` is not a netc error code (they look like E0301; `netc explain E0101` is the first)");
                2
            }
        },
    }
}

/// Parses and checks, printing diagnostics; the model when it has no errors.
fn front_end(source: &SourceFile) -> Option<Model> {
    let (checked, diagnostics) = crate::front_end(source);
    report(source, &diagnostics, MessageFormat::Human);
    checked.map(|(_, model)| model)
}

/// Prints a run's error, if any, and gives the exit code.
fn finish(source: &SourceFile, outcome: Result<(), Diagnostic>) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(diagnostic) => {
            report(source, &[diagnostic], MessageFormat::Human);
            1
        }
    }
}

/// A session holding saved weights, and the data to use them on (checked to fit).
fn restored<'a>(
    source: &'a SourceFile,
    model: &'a Model,
    weights: &Path,
    data: &DataArgs,
) -> Result<(Session<'a>, Split), Diagnostic> {
    let split = load(data, model.train.seed)?;
    let mut session = Session::new(model, source, 0);
    session.restore(weights)?;
    runtime::fits(model, &split.test)?;
    Ok((session, split))
}

fn load(args: &DataArgs, seed: u64) -> Result<Split, Diagnostic> {
    Source::parse(&args.data, args.data_dir.as_deref(), args.target.as_deref())?.load(seed)
}

/// How `netc run` runs, beyond the training settings.
struct RunOptions {
    seed_given: bool,
    backend: Backend,
    profile: bool,
    log: Option<PathBuf>,
    save: Option<PathBuf>,
    resume: Option<PathBuf>,
}

fn train(
    source: &SourceFile,
    model: &Model,
    data: &DataArgs,
    mut settings: RunSettings,
    options: RunOptions,
) -> Result<(), Diagnostic> {
    let RunOptions {
        seed_given,
        backend,
        profile,
        log,
        save,
        resume,
    } = options;
    let split = load(data, settings.seed)?;
    let mut session = Session::new(model, source, settings.seed);
    if let Some(path) = &resume {
        let checkpoint = session.restore(path)?;
        if !seed_given {
            settings.seed = checkpoint.seed;
        }
        eprintln!(
            "resuming {} after epoch {} (step {})",
            path.display(),
            checkpoint.epoch,
            checkpoint.step
        );
    }
    let log = match log {
        Some(path) => Some(std::fs::File::create(&path).map_err(|e| {
            crate::data::error(
                Code::E0504,
                format!("cannot create the log {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    if backend != Backend::Interp {
        match session.compile(settings.batch, profile) {
            Ok(took) => eprintln!(
                "compiled the training and evaluation steps in {:.1} ms",
                took.as_secs_f64() * 1e3
            ),
            Err(why) if backend == Backend::Auto => {
                eprintln!("note: running on the interpreter: {}", why.0)
            }
            Err(why) => {
                return Err(crate::data::error(
                    Code::E0510,
                    format!("the JIT cannot compile this model: {}", why.0),
                )
                .with_help("run it with `--backend interp`"))
            }
        }
    }
    let mut reporter = Reporter::new(log, false);
    let outcome = session.fit(&split, &settings, &mut reporter);
    reporter.finish();
    if profile {
        match session.profile() {
            Some(profile) => print_profile(&profile),
            None => eprintln!("note: --profile times compiled code; this run used the interpreter"),
        }
    }
    // The last good weights are saved even when training stopped early.
    if let Some(path) = &save {
        session.save(path, settings.seed)?;
        eprintln!(
            "saved {} (epoch {}, step {})",
            path.display(),
            session.epoch,
            session.step
        );
    }
    outcome
}

/// Times the compiled training step: compile time, the median of `steps` single steps, one
/// whole epoch, the matrix products' GFLOP/s over that epoch, and the process's peak memory.
fn bench(
    source: &SourceFile,
    model: &Model,
    data: &DataArgs,
    steps: usize,
    threads: usize,
) -> Result<(), Diagnostic> {
    let split = load(data, model.train.seed)?;
    runtime::fits(model, &split.train)?;
    let batch = model.train.batch as usize;
    let mut session = Session::new(model, source, model.train.seed);
    let compile = session.compile(batch, false).map_err(|why| {
        crate::data::error(
            Code::E0510,
            format!("the JIT cannot compile this model: {}", why.0),
        )
    })?;
    let lr = match model.optimizer {
        Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => lr,
    };
    let settings = |epochs| RunSettings {
        epochs,
        batch,
        lr,
        seed: model.train.seed,
        shuffle: true,
    };
    // Single steps: train on one batch at a time and keep each step's time.
    let one_batch = crate::data::Split {
        train: split.train.head(batch),
        test: split.test.head(1),
        class_names: None,
    };
    let mut times = Vec::with_capacity(steps);
    for epoch in 1..=steps as u64 {
        let started = std::time::Instant::now();
        session.fit(&one_batch, &settings(epoch), &mut Reporter::new(None, true))?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // One whole epoch, as `netc run` trains it (test evaluation excluded).
    let train_len = split.train.len;
    let epoch_data = crate::data::Split {
        train: split.train,
        test: split.test.head(1),
        class_names: None,
    };
    let mut fresh = Session::new(model, source, model.train.seed);
    fresh
        .compile(batch, false)
        .map_err(|why| crate::data::error(Code::E0510, why.0))?;
    let started = std::time::Instant::now();
    fresh.fit(&epoch_data, &settings(1), &mut Reporter::new(None, true))?;
    let epoch = started.elapsed().as_secs_f64();
    let full = train_len / batch;
    let rest = train_len % batch;
    let flops = fresh.step_flops(batch).unwrap_or(0.0) * full as f64
        + if rest > 0 {
            fresh.step_flops(rest).unwrap_or(0.0)
        } else {
            0.0
        };
    println!(
        "model        {} ({train_len} examples, batch {batch}, {threads} threads)",
        model.name
    );
    println!(
        "compile      {:.1} ms (training and evaluation steps)",
        compile.as_secs_f64() * 1e3
    );
    println!("step         {:.3} ms median of {steps}", median * 1e3);
    println!("epoch        {epoch:.3} s");
    println!(
        "matmul       {:.1} GFLOP per epoch, {:.1} GFLOP/s",
        flops / 1e9,
        flops / epoch / 1e9
    );
    match peak_memory_kib() {
        Some(kib) => println!("peak memory  {:.0} MB", kib as f64 / 1024.0),
        None => println!("peak memory  unknown (no /proc/self/status)"),
    }
    Ok(())
}

/// The process's peak resident memory, from Linux's /proc.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernels that took longest, with their share of the training step.
fn print_profile(profile: &crate::codegen::Profile) {
    let total: f64 = profile.kernels.iter().map(|(_, t)| t).sum();
    let mut kernels: Vec<(usize, &(String, f64))> = profile.kernels.iter().enumerate().collect();
    kernels.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    println!(
        "profile: {:.3} s in {} kernels of the training step",
        total,
        profile.kernels.len()
    );
    println!("{:>6} {:>9} {:>6}  kernel", "#", "seconds", "share");
    for (k, (what, seconds)) in kernels.iter().take(15) {
        println!(
            "{k:>6} {seconds:>9.4} {:>5.1}%  {what}",
            100.0 * seconds / total.max(1e-12)
        );
    }
}

fn print_predictions(session: &mut Session, split: &Split, limit: usize) {
    let test = &split.test;
    let shown = limit.min(test.len);
    let subset = crate::data::Dataset {
        len: shown,
        feature_dims: test.feature_dims.clone(),
        features: test.features[..shown * test.feature_size()].to_vec(),
        target_dims: test.target_dims.clone(),
        targets: test.targets[..shown * test.target_size()].to_vec(),
    };
    let name = |class: usize| match &split.class_names {
        Some(names) => names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string()),
        None => class.to_string(),
    };
    println!("{:>5}  {:<14} true", "index", "predicted");
    let mut row = 0;
    for (_, output) in session.predict(&subset, 256) {
        let Some(output) = output else { break };
        let per = output.data.len() / output.dims[0].max(1);
        for values in output.data.chunks(per) {
            let truth = subset.targets[row * subset.target_size()];
            let (predicted, actual) = match session.model.label.as_ref().map(|l| &l.kind) {
                Some(LabelKind::Class(_)) => {
                    let best = values
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, &v)| if v > values[b] { i } else { b });
                    (name(best), name(truth as usize))
                }
                _ => (format!("{:.4}", values[0]), format!("{truth:.4}")),
            };
            let classes = matches!(
                session.model.label.as_ref().map(|l| &l.kind),
                Some(LabelKind::Class(_))
            );
            let mark = if classes && predicted != actual {
                "  ✗"
            } else {
                ""
            };
            println!(
                "{}",
                format!("{row:>5}  {predicted:<14} {actual:<14}{mark}").trim_end()
            );
            row += 1;
        }
    }
}

fn gradcheck(
    source: &SourceFile,
    model: &Model,
    data: Option<&str>,
    data_dir: Option<PathBuf>,
    target: Option<String>,
    batch: usize,
) -> Result<bool, Diagnostic> {
    let forward = ir::build(model, source, ir::Mode::Train);
    let mut classes = vec![None; model.inputs.len()];
    if let Some(label) = &model.label {
        classes.push(match label.kind {
            LabelKind::Class(n) => Some(n),
            LabelKind::Target(_) => None,
        });
    }
    let [mut inputs, params, states] =
        crate::gradcheck::random_bindings(&forward, batch, &classes, model.train.seed);
    let session = Session::new(model, source, model.train.seed);
    // Start from the model's own initialization, nudged off zero so no unit sits on a kink.
    let params: Vec<_> = session
        .params
        .iter()
        .zip(params)
        .map(|(init, noise)| {
            Tensor::new(
                init.dims.clone(),
                init.data
                    .iter()
                    .zip(&noise.data)
                    .map(|(&w, n)| w as f64 + 0.01 * n)
                    .collect(),
            )
        })
        .collect();
    let mut batch = batch;
    if let Some(name) = data {
        let split =
            Source::parse(name, data_dir.as_deref(), target.as_deref())?.load(model.train.seed)?;
        runtime::fits(model, &split.train)?;
        batch = batch.min(split.train.len);
        let rows: Vec<usize> = (0..batch).collect();
        inputs = runtime::batch_tensors(&forward, &split.train, &rows)
            .iter()
            .map(Tensor::cast)
            .collect();
    }
    let problem = crate::gradcheck::Problem {
        forward: &forward,
        batch,
        inputs,
        params,
        states,
        seed: model.train.seed,
    };
    let results = crate::gradcheck::check(&problem, 20);
    println!("{:<28} {:>10} {:>12}", "parameter", "checked", "rel. error");
    for r in &results {
        println!("{:<28} {:>10} {:>12.2e}", r.name, r.checked, r.error);
    }
    let worst = results.iter().max_by(|a, b| a.error.total_cmp(&b.error));
    match worst {
        Some(w) if w.error >= 1e-5 => {
            println!(
                "FAILED: the gradient of {} is off by {:.2e} (the bound is 1e-5)",
                w.name, w.error
            );
            Ok(false)
        }
        Some(w) => {
            println!("worst: {} at {:.2e} (below 1e-5)", w.name, w.error);
            Ok(true)
        }
        None => {
            println!("the model has no parameters");
            Ok(true)
        }
    }
}

fn read(path: &Path) -> Option<SourceFile> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(SourceFile::new(path.display().to_string(), text)),
            Err(error) => {
                eprintln!(
                    "error: {} is not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    error.utf8_error().valid_up_to()
                );
                None
            }
        },
        Err(error) => {
            eprintln!("error: cannot read {}: {error}", path.display());
            None
        }
    }
}

fn report(source: &SourceFile, diagnostics: &[Diagnostic], format: MessageFormat) {
    match format {
        MessageFormat::Human => diagnostics::emit_to_stderr(source, diagnostics),
        MessageFormat::Json => {
            for diagnostic in diagnostics {
                println!("{}", diagnostics::to_json(source, diagnostic));
            }
        }
    }
}

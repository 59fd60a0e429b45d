//! The command line: `netc check`, `emit-ir`, `run`, `eval`, `predict`, `bench`, `gradcheck`,
//! `explain`. Exit codes: 0 success (warnings allowed), 1 when the model or data has errors, 2
//! for usage errors.

use crate::check::model::{Model, Schedule, ScheduleKind, TrainSettings};
use crate::diagnostics::{self, Code, Diagnostic};
use crate::ir;
use crate::runtime::{Every, Parallel, RunSettings, Stop, INTERRUPTED};
use crate::source::SourceFile;
use crate::step::Step;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use train::{
    bench, gradcheck, print_predictions, restored, surface, train, RunOptions, SurfaceRequest,
};

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

/// `netc run`'s arguments (boxed in `Command`: they outweigh every other command's).
#[derive(clap::Args)]
struct RunArgs {
    file: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs to train (default: the model's `train` block).
    #[arg(long)]
    epochs: Option<u64>,
    /// Examples per step, 1 to 2^24 (default: the model's `train` block).
    #[arg(long)]
    batch: Option<u64>,
    /// Learning rate (default: the model's optimizer).
    #[arg(long, value_parser = positive)]
    lr: Option<f64>,
    /// Learning-rate schedule, written as in a model file: "cosine(warmup: 1)",
    /// "step(every: 5, factor: 0.5)", "constant" (default: the model's `schedule`).
    #[arg(long, value_name = "SCHEDULE")]
    schedule: Option<String>,
    /// Seed for initialization, shuffling and dropout (default: the model's `train` block).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Workers for the compiled step's pieces and for gathering batches, 1 to 256
    /// (default: NETC_THREADS, else the cores this process may use); results are the same
    /// bits for any number.
    #[arg(long)]
    threads: Option<u64>,
    /// Print the compiled training step's time per kernel after training.
    #[arg(long)]
    profile: bool,
    /// Also write each epoch's figures to this file as JSON lines.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Redraw the training curves in this picture (.svg or .png) after every epoch.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also write each epoch's figures as TensorBoard scalars, in an event file in DIR.
    #[arg(long, value_name = "DIR")]
    tensorboard: Option<PathBuf>,
    /// Draw the model's prediction against its first input over the training data after
    /// every epoch: every frame in a .gif, or the latest in a .png or .svg.
    #[arg(long)]
    animate: Option<PathBuf>,
    /// With --animate, a frame every N steps instead of one per epoch.
    #[arg(long, value_name = "N", requires = "animate", value_parser = clap::value_parser!(u64).range(1..))]
    animate_every: Option<u64>,
    /// Write the small parameters' values after every step as JSON lines, for
    /// `netc surface --trace` to draw the optimizer's path.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Save a checkpoint here when training ends, stops on an error, or is interrupted
    /// (Ctrl-C finishes the current step first; a second Ctrl-C stops at once).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Also save the checkpoint every N epochs (`--save-every 2`) or steps
    /// (`--save-every 500steps`), so a crash loses at most that much.
    #[arg(long, value_parser = every)]
    save_every: Option<Every>,
    /// Continue from a checkpoint saved by `--save`.
    #[arg(long)]
    resume: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check a model; print diagnostics.
    Check {
        file: PathBuf,
        /// Print a per-layer table of shapes, parameters, FLOPs and activation memory.
        #[arg(long)]
        summary: bool,
        /// In the summary, fold blocks nested deeper than this into one row each (0: every
        /// top-level block use is one row).
        #[arg(long, requires = "summary")]
        depth: Option<usize>,
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
    Run(Box<RunArgs>),
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
        /// Also draw the examples (image inputs) with their labels in this picture.
        #[arg(long)]
        grid: Option<PathBuf>,
        /// Also write the examples' inputs and the model's outputs (logits, for a classifier)
        /// to this safetensors file, as tensors `input` and `output`.
        #[arg(long, value_name = "PATH")]
        outputs: Option<PathBuf>,
    },
    /// Write a trained model's evaluation graph as ONNX, for ONNX Runtime and other frameworks.
    Export {
        file: PathBuf,
        /// The trained weights: a checkpoint written by `netc run --save`.
        #[arg(long)]
        weights: PathBuf,
        /// The .onnx file to write.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: PathBuf,
        /// The ONNX opset, 15 to 21.
        #[arg(long, default_value_t = crate::export::DEFAULT_OPSET,
              value_parser = clap::value_parser!(u32).range(15..=21))]
        opset: u32,
        /// The batch dimension: `dynamic` (symbolic, `N`) or a fixed size.
        #[arg(long, default_value = "dynamic", value_parser = batch_dimension)]
        batch: crate::export::Batch,
    },
    /// Measure training speed: compile time, step and epoch times, GFLOP/s, peak memory.
    Bench {
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Steps timed one by one for the median (1 to 100000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        steps: u32,
        /// Workers (as for `run`); `bench` also checks that a step on them gives the same bits
        /// as on one.
        #[arg(long)]
        threads: Option<u64>,
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
        batch: u64,
    },
    /// Draw the loss over two coordinates of the parameters as a surface and a contour map.
    Surface {
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// The two coordinates: `w,b`, or elements such as `dense1.weight[0],dense1.bias[0]`
        /// (default: the model's two parameters, when it has two of one element each).
        #[arg(long)]
        params: Option<String>,
        /// Centre the grid on these weights (default: the initial weights).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Draw the optimizer's path from a `netc run --trace` file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// The picture to write (.svg or .png).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Draw the training curves of one or more `--log` files on the same axes.
    Plot {
        /// The logs, one run each.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// The picture to write (.svg or .png).
        #[arg(short, long)]
        output: PathBuf,
        /// The title above the curves (default: the logs' names).
        #[arg(long)]
        title: Option<String>,
    },
    /// Explain an error code, e.g. `netc explain E0301`.
    Explain { code: String },
}

#[derive(clap::Args)]
struct DataArgs {
    /// fmnist, linear, beans, xor, separable, a path to a .csv file, or none (for a model
    /// without inputs).
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

mod train;

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
            depth,
            message_format,
        } => {
            let Some(source) = read(&file) else { return 1 };
            let (checked, diagnostics) = crate::front_end(&source);
            report(&source, &diagnostics, message_format);
            match checked {
                Some((_, model)) => {
                    if summary {
                        say_raw!("{}", crate::check::summary::summary(&model, &source, depth));
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
                Stage::Ast => say_raw!("{ast}"),
                Stage::Ir => {
                    let mode = match mode {
                        ModeArg::Train => ir::Mode::Train,
                        ModeArg::Eval => ir::Mode::Eval,
                    };
                    say_raw!("{}", ir::build(&model, &source, mode));
                }
                Stage::Grad => {
                    let forward = ir::build(&model, &source, ir::Mode::Train);
                    say_raw!("{}", crate::autodiff::differentiate(&forward));
                }
                Stage::Step => {
                    let forward = ir::build(&model, &source, ir::Mode::Train);
                    let grads = crate::autodiff::differentiate(&forward);
                    say_raw!(
                        "{}",
                        crate::autodiff::step::train_step(
                            &grads,
                            &model.optimizer,
                            &model.schedule
                        )
                    );
                }
                Stage::Clif => {
                    // The very step `netc run` compiles.
                    let step = match mode {
                        ModeArg::Train => Step::train(&model, &source),
                        ModeArg::Eval => Step::eval(&model, &source),
                    };
                    match crate::codegen::Compiled::listing_of(&step, model.train.batch as usize) {
                        Ok(listing) => say_raw!("{listing}"),
                        Err(why) => {
                            let diagnostic =
                                train::compile_diagnostic(why, model.train.batch as usize);
                            report(&source, &[diagnostic], message_format);
                            return 1;
                        }
                    }
                }
                Stage::Opt => match mode {
                    ModeArg::Train => say_raw!("{}", crate::train_graph(&model, &source)),
                    ModeArg::Eval => say_raw!("{}", crate::eval_graph(&model, &source)),
                },
            }
            0
        }
        Command::Run(args) => {
            let RunArgs {
                file,
                data,
                epochs,
                batch,
                lr,
                schedule,
                seed,
                backend,
                threads,
                profile,
                log,
                plot,
                tensorboard,
                animate,
                animate_every,
                trace,
                save,
                save_every,
                resume,
            } = *args;
            // The processes of a data-parallel run join first, and compare what they were
            // given; then their checks agree, and only the first prints them.
            let processes = match crate::distributed::Processes::join() {
                Ok(processes) => processes,
                Err(diagnostic) => return finish(&SourceFile::new("", ""), Err(diagnostic)),
            };
            let mut group = processes.as_ref().map(|p| p.group());
            let leads = processes.as_ref().is_none_or(|p| p.rank == 0);
            if let Some(group) = &mut group {
                let text = std::fs::read(&file).unwrap_or_default();
                let argv: Vec<String> = std::env::args_os()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                let version = env!("CARGO_PKG_VERSION").as_bytes();
                let given =
                    crate::runtime::fingerprint([version, argv.join("\0").as_bytes(), &text]);
                let what = "netc version, model file or command line";
                if let Err(diagnostic) = Parallel::agree(&mut **group, given, what) {
                    return failed(&SourceFile::new("", ""), diagnostic, processes.as_ref());
                }
            }
            let Some((source, mut model)) = checked_model_printed(&file, leads) else {
                return 1;
            };
            if let Some(text) = schedule {
                let Some(schedule) = schedule_option(&text) else {
                    return 1;
                };
                model.schedule = schedule;
            }
            let settings = match run_settings(&model, epochs, batch, lr, seed) {
                Ok(settings) => settings,
                Err(diagnostic) => return finish(&source, Err(diagnostic)),
            };
            if let Err(diagnostic) = set_threads(threads) {
                return finish(&source, Err(diagnostic));
            }
            on_interrupt();
            let options = RunOptions {
                model_path: file,
                seed_given: seed.is_some(),
                backend,
                profile,
                log,
                plot,
                tensorboard,
                animate: animate.map(|path| (path, animate_every)),
                trace,
                save,
                save_every,
                resume,
                group,
            };
            match train(&source, &model, &data, settings, options) {
                Ok(Stop::Finished) => 0,
                // As a shell reports a program stopped by SIGINT.
                Ok(Stop::Interrupted) => 130,
                Err(diagnostic) => failed(&source, diagnostic, processes.as_ref()),
            }
        }
        Command::Eval {
            file,
            weights,
            data,
        } => {
            let Some((source, model)) = checked_model(&file) else {
                return 1;
            };
            let outcome = restored(&source, &model, &weights, &data).map(|(mut session, split)| {
                let score = session.evaluate(&split.test, model.train.batch as usize);
                let mut line = format!("test_loss {:.6}", score.loss);
                for (metric, value) in model.metrics.iter().zip(&score.metrics) {
                    line += &format!("  test_{} {value:.4}", metric.short());
                }
                say!("{line}  ({} examples)", split.test.len);
            });
            finish(&source, outcome)
        }
        Command::Predict {
            file,
            weights,
            data,
            limit,
            grid,
            outputs,
        } => {
            let Some((source, model)) = checked_model(&file) else {
                return 1;
            };
            let outcome =
                restored(&source, &model, &weights, &data).and_then(|(mut session, split)| {
                    print_predictions(
                        &mut session,
                        &split,
                        limit,
                        grid.as_deref(),
                        outputs.as_deref(),
                    )
                });
            finish(&source, outcome)
        }
        Command::Export {
            file,
            weights,
            output,
            opset,
            batch,
        } => {
            let Some((source, model)) = checked_model(&file) else {
                return 1;
            };
            let outcome = train::export_onnx(&source, &model, &weights, &output, opset, batch);
            finish(&source, outcome)
        }
        Command::Bench {
            file,
            data,
            steps,
            threads,
        } => {
            let Some((source, model)) = checked_model(&file) else {
                return 1;
            };
            let outcome =
                set_threads(threads).and_then(|()| bench(&source, &model, &data, steps as usize));
            finish(&source, outcome)
        }
        Command::Gradcheck {
            file,
            data,
            data_dir,
            target,
            batch,
        } => {
            let Some((source, model)) = checked_model(&file) else {
                return 1;
            };
            let batch = match TrainSettings::check_batch(batch) {
                Ok(batch) => batch as usize,
                Err(why) => {
                    let diagnostic =
                        Diagnostic::plain(Code::E0502, "`--batch` is out of range").with_note(why);
                    return finish(&source, Err(diagnostic));
                }
            };
            match gradcheck(&source, &model, data.as_deref(), data_dir, target, batch) {
                Ok(true) => 0,
                // The verdict is printed; a failed check is a finding, not an error in the input.
                Ok(false) => 1,
                Err(diagnostic) => finish(&source, Err(diagnostic)),
            }
        }
        Command::Surface {
            file,
            data,
            params,
            weights,
            trace,
            output,
        } => {
            let Some((source, model)) = checked_model(&file) else {
                return 1;
            };
            let request = SurfaceRequest {
                params: params.as_deref(),
                weights: weights.as_deref(),
                trace: trace.as_deref(),
                output: &output,
            };
            finish(&source, surface(&source, &model, &data, request))
        }
        Command::Plot {
            logs,
            output,
            title,
        } => {
            let runs: Result<Vec<crate::plot::Run>, Diagnostic> = (logs.iter())
                .map(|path| {
                    let label = path.file_stem().map_or_else(
                        || path.display().to_string(),
                        |s| s.to_string_lossy().into_owned(),
                    );
                    let epochs = crate::plot::log::read(path)?;
                    Ok(crate::plot::Run { label, epochs })
                })
                .collect();
            let outcome = runs.and_then(|runs| {
                let names: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
                let title = title.unwrap_or_else(|| names.join(" vs "));
                crate::plot::curves(&output, &runs, &title, crate::plot::Effort::Small)
            });
            finish(&SourceFile::new("netc plot", ""), outcome)
        }
        Command::Explain { code } => match Code::parse(&code) {
            Some(code) => {
                say_raw!("{}", code.explanation());
                0
            }
            None => {
                eprintln!("error: `{code}` is not a netc error code (they look like E0301; `netc explain E0101` is the first)");
                2
            }
        },
    }
}

/// The run's settings: the model's `train` block overridden by the command line, each value
/// checked against the same limits as in the model file (E0502, E0405).
fn run_settings(
    model: &Model,
    epochs: Option<u64>,
    batch: Option<u64>,
    lr: Option<f64>,
    seed: Option<u64>,
) -> Result<RunSettings, Diagnostic> {
    let defaults = model.train;
    let batch = TrainSettings::check_batch(batch.unwrap_or(defaults.batch)).map_err(|why| {
        Diagnostic::plain(Code::E0502, "training setting `batch` is out of range").with_note(why)
    })?;
    let lr = TrainSettings::check_lr(lr.unwrap_or(model.optimizer.lr)).map_err(|why| {
        Diagnostic::plain(Code::E0405, "the learning rate is out of range").with_note(why)
    })?;
    let epochs = epochs.unwrap_or(defaults.epochs);
    let schedule = &model.schedule;
    let runs_with_training = matches!(
        schedule.kind,
        ScheduleKind::Cosine { epochs: None, .. } | ScheduleKind::Poly { epochs: None, .. }
    );
    if runs_with_training && schedule.warmup > 0.0 && schedule.warmup >= epochs as f64 {
        return Err(Diagnostic::plain(
            Code::E0502,
            format!(
                "the {} schedule's warm-up of {} epochs is as long as the run ({epochs} epochs)",
                schedule.name(),
                schedule.warmup
            ),
        )
        .with_help("train for more epochs (`--epochs`), or shorten the warm-up"));
    }
    Ok(RunSettings {
        epochs,
        batch: batch as usize,
        lr,
        seed: seed.unwrap_or(defaults.seed),
        shuffle: defaults.shuffle,
        checkpoints: None,
    })
}

/// `--batch` of `export`: `dynamic`, or a size from 1 to 2^24.
fn batch_dimension(text: &str) -> Result<crate::export::Batch, String> {
    if text == "dynamic" {
        return Ok(crate::export::Batch::Dynamic);
    }
    let n: u64 = text
        .parse()
        .map_err(|_| format!("`{text}` is neither `dynamic` nor a whole number"))?;
    TrainSettings::check_batch(n).map(crate::export::Batch::Fixed)
}

/// Sets the workers of every pool the command makes: `--threads`, else `NETC_THREADS`, else
/// the cores this process may use; E0502 for a count outside 1 to `MAX_THREADS`.
fn set_threads(flag: Option<u64>) -> Result<(), Diagnostic> {
    let (given, from) = match (flag, std::env::var("NETC_THREADS")) {
        (Some(n), _) => (Some(n.to_string()), "--threads"),
        (None, Ok(text)) => (Some(text), "NETC_THREADS"),
        (None, Err(_)) => (None, ""),
    };
    let Some(text) = given else {
        return Ok(());
    };
    let most = crate::codegen::MAX_THREADS;
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=most).contains(&n) => {
            crate::codegen::set_default_threads(n);
            Ok(())
        }
        _ => Err(Diagnostic::plain(
            Code::E0502,
            format!("{from} is `{text}`, not a number of threads from 1 to {most}"),
        )
        .with_note(format!(
            "this process may use {} cores; results are the same bits for any number of threads",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ))),
    }
}

/// The first Ctrl-C stops training after the current step (and saves); a second stops at once.
fn on_interrupt() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: stopping now, without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after this step (Ctrl-C again stops at once)");
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will stop training at once, without saving: {e}");
    }
}

/// `N` epochs or `Nsteps` steps, for `--save-every`.
fn every(text: &str) -> Result<Every, String> {
    let (number, unit) = match text.strip_suffix("steps") {
        Some(n) => (n, Every::Steps as fn(u64) -> Every),
        None => (
            text.strip_suffix("epochs").unwrap_or(text),
            Every::Epochs as fn(u64) -> Every,
        ),
    };
    match number.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(unit(n)),
        _ => Err(format!(
            "`{text}` is not a count above 0 of epochs (`2`) or steps (`500steps`)"
        )),
    }
}

/// A finite number above 0, for `--lr`.
fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("`{text}` is not a number above 0")),
    }
}

/// Reads, parses and checks a model file, printing diagnostics; the model when it has no errors.
fn checked_model(path: &Path) -> Option<(SourceFile, Model)> {
    checked_model_printed(path, true)
}

/// `checked_model`, printing its diagnostics only if `print`: the processes of a data-parallel
/// run check the same text, and only the first prints.
fn checked_model_printed(path: &Path, print: bool) -> Option<(SourceFile, Model)> {
    let source = read(path)?;
    let (checked, diagnostics) = crate::front_end(&source);
    if print {
        report(&source, &diagnostics, MessageFormat::Human);
    }
    checked.map(|(_, model)| (source, model))
}

/// Prints a run's error and gives the exit code. In a data-parallel run, an error that every
/// process meets at the same point (a disagreement, a setting, divergence) is printed once, by
/// the first process; an error of this process alone is printed with its rank and stops every
/// process at once, which would otherwise wait for it.
fn failed(
    source: &SourceFile,
    diagnostic: Diagnostic,
    processes: Option<&crate::distributed::Processes>,
) -> i32 {
    let Some(processes) = processes else {
        return finish(source, Err(diagnostic));
    };
    if matches!(diagnostic.code, Code::E0515 | Code::E0502 | Code::E0509) {
        return match processes.rank {
            0 => finish(source, Err(diagnostic)),
            _ => 1,
        };
    }
    let note = format!("in process {} of {}", processes.rank, processes.size);
    finish(source, Err(diagnostic.with_note(note)));
    processes.abort()
}

/// The schedule given by `--schedule`, parsed and checked as a model file's would be; its
/// diagnostics are printed against the option's text.
fn schedule_option(text: &str) -> Option<Schedule> {
    let source = SourceFile::new("--schedule", text);
    let (expr, mut diagnostics) = crate::syntax::parse_expr(&source);
    let schedule = expr.and_then(|expr| {
        let (schedule, more) = crate::check::schedule(&expr);
        diagnostics.extend(more);
        schedule
    });
    report(&source, &diagnostics, MessageFormat::Human);
    schedule.filter(|_| !diagnostics::has_errors(&diagnostics))
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

/// The largest model file read: spans are 32-bit, and no model is near this size.
const MAX_SOURCE_BYTES: u64 = 1 << 26;

fn read(path: &Path) -> Option<SourceFile> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    if size > MAX_SOURCE_BYTES {
        eprintln!(
            "error: {} has {size} bytes; model files may have at most {MAX_SOURCE_BYTES} (64 MiB)",
            path.display()
        );
        return None;
    }
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            // Editors on some systems start UTF-8 files with a byte-order mark.
            Ok(text) => Some(SourceFile::new(
                path.display().to_string(),
                match text.strip_prefix('\u{feff}') {
                    Some(rest) => rest.to_string(),
                    None => text,
                },
            )),
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
                say!("{}", diagnostics::to_json(source, diagnostic));
            }
        }
    }
}

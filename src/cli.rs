//! The command line: `netc check`, `netc emit-ir`, `netc explain`. Exit codes: 0 clean
//! (warnings allowed), 1 when the model has errors, 2 for usage errors.

use crate::diagnostics::{self, Code, Diagnostic};
use crate::ir;
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
    /// Explain an error code, e.g. `netc explain E0301`.
    Explain { code: String },
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
                Stage::Opt => match mode {
                    ModeArg::Train => print!("{}", crate::train_graph(&model, &source)),
                    ModeArg::Eval => print!("{}", crate::eval_graph(&model, &source)),
                },
            }
            0
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

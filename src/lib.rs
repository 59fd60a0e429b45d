//! netc compiles a declarative neural-network model file through a one-way pipeline:
//! `syntax` (text → AST) → `check` (AST → checked model) → `ir` (checked model → tensor graph)
//! → `autodiff` (+ gradients and the optimizer step) → `opt` (simplified) → `interp` or
//! `codegen` (executed) → `runtime` (training on `data`) → `export` (ONNX). `diagnostics`, `source`, `shape`,
//! `ops`, `tensor`, `math` and `memory` are shared by every stage; only `cli`, `data` and `runtime` do IO.
#![deny(unsafe_code)]

/// `println!` that never panics: output to a closed pipe (`netc run ... | head -1`) is dropped
/// and the work goes on (training, then saving).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that never panics, as `say!`.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod diagnostics;
pub mod math;
pub mod memory;
pub mod ops;
pub mod shape;
pub mod source;
pub mod tensor;

pub mod syntax;
pub mod check;
pub mod ir;
pub mod autodiff;
pub mod opt;
pub mod step;
pub mod interp;
pub mod gradcheck;
pub mod codegen;
pub mod data;
pub mod runtime;
pub mod distributed;
pub mod plot;
pub mod export;

pub mod cli;

use diagnostics::Diagnostic;
use source::SourceFile;

/// The optimized training step of a checked model: forward, gradients, optimizer update.
pub fn train_graph(model: &check::Model, source: &SourceFile) -> ir::Graph {
    let forward = ir::build(model, source, ir::Mode::Train);
    let step = autodiff::step::train_step(
        &autodiff::differentiate(&forward),
        &model.optimizer,
        &model.schedule,
    );
    opt::optimize(&step)
}

/// The gradient half of a data-parallel training step: forward and gradients, and the model's
/// own state updates (running statistics), without the optimizer.
pub fn gradient_graph(model: &check::Model, source: &SourceFile) -> ir::Graph {
    let forward = ir::build(model, source, ir::Mode::Train);
    opt::optimize(&autodiff::differentiate(&forward))
}

/// The update half of a data-parallel training step: the optimizer's update from gradients
/// bound as inputs. With `gradient_graph` it computes what `train_graph` does.
pub fn update_graph(model: &check::Model, source: &SourceFile) -> ir::Graph {
    let forward = ir::build(model, source, ir::Mode::Train);
    opt::optimize(&autodiff::step::update_step(
        &forward,
        &model.optimizer,
        &model.schedule,
    ))
}

/// The optimized evaluation graph of a checked model: output and loss, no dropout, running
/// statistics.
pub fn eval_graph(model: &check::Model, source: &SourceFile) -> ir::Graph {
    opt::optimize(&ir::build(model, source, ir::Mode::Eval))
}

/// The front end: parses and checks a file. Returns the AST and checked model when there are
/// no errors, and every diagnostic (warnings too) either way.
pub fn front_end(
    source: &SourceFile,
) -> (Option<(syntax::ast::Model, check::Model)>, Vec<Diagnostic>) {
    let (ast, mut diagnostics) = syntax::parse(source);
    let Some(ast) = ast else {
        return (None, diagnostics);
    };
    if diagnostics::has_errors(&diagnostics) {
        return (None, diagnostics);
    }
    let (model, checked) = check::check(&ast);
    diagnostics.extend(checked);
    (model.map(|model| (ast, model)), diagnostics)
}

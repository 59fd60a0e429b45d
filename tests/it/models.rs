//! Every model in `models/` checks cleanly, and its printed stages are snapshotted.

use crate::load;
use netc::codegen::Compiled;
use netc::step::Step;
use netc::{check, ir};

#[test]
fn models_check_and_lower() {
    insta::glob!("../../models", "*.net", |path| {
        let source = load(path);
        let (checked, diagnostics) = netc::front_end(&source);
        assert!(
            diagnostics.is_empty(),
            "{} has diagnostics:\n{}",
            source.name,
            netc::diagnostics::render(&source, &diagnostics)
        );
        let (ast, model) = checked.expect("no diagnostics means a checked model");
        let train = ir::build(&model, &source, ir::Mode::Train);
        let eval = ir::build(&model, &source, ir::Mode::Eval);
        insta::assert_snapshot!("ast", ast.to_string());
        insta::assert_snapshot!("summary", check::summary::summary(&model, &source, None));
        insta::assert_snapshot!("ir", train.to_string());
        let grad = netc::autodiff::differentiate(&train);
        insta::assert_snapshot!("grad", grad.to_string());
        insta::assert_snapshot!(
            "step",
            netc::autodiff::step::train_step(&grad, &model.optimizer, &model.schedule).to_string()
        );
        insta::assert_snapshot!("opt", netc::train_graph(&model, &source).to_string());
        insta::assert_snapshot!("opt_eval", netc::eval_graph(&model, &source).to_string());
        if eval.to_string() != train.to_string() {
            insta::assert_snapshot!("ir_eval", eval.to_string());
        }
        // The compiled steps' kernels, as `netc run` plans them for the model's batch: every
        // change to fusion is a reviewable diff.
        let batch = model.train.batch as usize;
        for (name, step) in [
            ("kernels", Step::train(&model, &source)),
            ("kernels_eval", Step::eval(&model, &source)),
        ] {
            let kernels = Compiled::kernels_of(&step, batch).expect("every model compiles");
            insta::assert_snapshot!(name, kernels);
        }
    });
}

/// The printed AST is itself a valid model that parses back to the same printed form.
#[test]
fn printed_ast_round_trips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for entry in std::fs::read_dir(dir).expect("models/ exists") {
        let source = load(&entry.expect("readable").path());
        let (ast, _) = netc::syntax::parse(&source);
        let printed = ast.expect("models parse").to_string();
        let reparsed =
            netc::syntax::parse(&netc::source::SourceFile::new("printed", printed.clone()));
        assert_eq!(
            reparsed.0.expect("printed AST parses").to_string(),
            printed,
            "{}",
            source.name
        );
    }
}

/// `mlp.net` (layers) and `mlp_scratch.net` (equations) lower to the same operations on the
/// same shapes; only parameter names and source lines differ.
#[test]
fn both_mlp_styles_lower_to_the_same_graph() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let structure = |file: &str| {
        let source = load(&root.join("models").join(file));
        let (checked, _) = netc::front_end(&source);
        let (_, model) = checked.expect("model checks");
        let graph = ir::build(&model, &source, ir::Mode::Train);
        let nodes: Vec<String> = graph
            .nodes
            .iter()
            .map(|n| format!("{} {:?} {}", n.op, n.args, n.shape))
            .collect();
        let params: Vec<String> = graph.params.iter().map(|p| p.shape.to_string()).collect();
        (nodes, params, graph.outputs.clone())
    };
    assert_eq!(structure("mlp.net"), structure("mlp_scratch.net"));
}

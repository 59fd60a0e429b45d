//! The step contract: an optimized graph (the training step, or the evaluation graph) and the
//! results a run of it returns, in one fixed order. A `Step` is built once from the model and
//! is what the interpreter, the compiled engine, the kernel listing and the tests all run, so
//! the tests check the very plan that trains.

use crate::check::Model;
use crate::ir::{Graph, NodeId};
use crate::source::SourceFile;

/// A graph and what a run of it returns.
#[derive(Clone, Debug)]
pub struct Step {
    pub graph: Graph,
    /// In order: the loss, the output when the model has one, then (for training) each
    /// parameter's update and each state's update, in declaration order. The gradient half of
    /// a data-parallel step has each parameter's gradient in its update's place; the update
    /// half has no loss or output.
    pub results: Vec<NodeId>,
    has_output: bool,
    first_update: usize,
}

impl Step {
    /// The training step: forward, gradients and the optimizer update, simplified.
    pub fn train(model: &Model, source: &SourceFile) -> Step {
        Step::of(crate::train_graph(model, source))
    }

    /// The evaluation graph: output and loss, no dropout, running statistics.
    pub fn eval(model: &Model, source: &SourceFile) -> Step {
        Step::of(crate::eval_graph(model, source))
    }

    /// The gradient half of a data-parallel training step (see `crate::gradient_graph`).
    pub fn gradients(model: &Model, source: &SourceFile) -> Step {
        let mut graph = crate::gradient_graph(model, source);
        graph.param_updates = std::mem::take(&mut graph.gradients);
        Step::of(graph)
    }

    /// The update half of a data-parallel training step (see `crate::update_graph`).
    pub fn update(model: &Model, source: &SourceFile) -> Step {
        let graph = crate::update_graph(model, source);
        let results = (graph.param_updates.iter())
            .chain(&graph.state_updates)
            .map(|&(_, id)| id)
            .collect();
        Step {
            graph,
            results,
            has_output: false,
            first_update: 0,
        }
    }

    /// The contract of any graph with a loss.
    pub fn of(graph: Graph) -> Step {
        let loss = graph.result("loss").expect("graphs have a loss");
        let output = graph.result("output");
        let mut results = vec![loss];
        results.extend(output);
        results.extend(graph.param_updates.iter().map(|&(_, id)| id));
        results.extend(graph.state_updates.iter().map(|&(_, id)| id));
        Step {
            graph,
            results,
            has_output: output.is_some(),
            first_update: 1 + usize::from(output.is_some()),
        }
    }

    /// A step that returns chosen nodes: for tests of single kernels, not for training.
    pub fn keeping(graph: Graph, results: Vec<NodeId>) -> Step {
        Step {
            graph,
            results,
            has_output: false,
            first_update: 1,
        }
    }

    /// Where the output is among the results, when there is one (the loss is at 0).
    pub fn output(&self) -> Option<usize> {
        self.has_output.then_some(1)
    }

    /// Where the parameters' updates start among the results; the states' follow them.
    pub fn first_update(&self) -> usize {
        self.first_update
    }
}

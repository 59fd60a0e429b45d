//! Stage 3, ir: checked model in, typed and shaped tensor graph out. The graph is an arena of
//! primitive operations (`graph.rs`) built by `build.rs` and printed by `print.rs`; every node's
//! shape is inferred and verified as it is added.

mod build;
mod graph;
mod print;

pub use build::{build, Mode};
pub use graph::{
    BinaryOp, DType, Decl, Elementwise, Graph, Node, NodeId, Op, Origin, PoolOp, ReduceOp, Scalar,
    UnaryOp,
};

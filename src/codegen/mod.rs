//! Stage 7, codegen: an optimized graph in, native code out. `plan` decides which nodes are
//! views (reshape, broadcast, transpose) and which need a kernel and a buffer in one arena;
//! `lower` turns the kernels into a single Cranelift function (matrix products call the `gemm`
//! crate through an imported symbol); `jit` compiles it and runs it; `workers` runs the kernels
//! split between two threads.

mod jit;
mod lower;
mod plan;
mod workers;

pub use jit::{Compiled, Flops, Profile, Rejected};
pub use plan::CompileError;
pub use workers::{join, set_threads};

//! Stage 7, codegen: an optimized graph in, native code out. `plan` decides which nodes are
//! views (reshape, broadcast, transpose) and which need a kernel and a buffer in one arena;
//! `lower` turns the kernels into a single Cranelift function (matrix products call the `gemm`
//! crate through an imported symbol); `jit` compiles it and runs it.
//!
//! This first version compiles one loop nest per operation; fusing elementwise chains,
//! convolutions and pooling, and the worker pool, are still to come.

mod jit;
mod lower;
mod plan;

pub use jit::{set_threads, Compiled, Flops, Profile, Rejected};
pub use plan::Unsupported;

//! Stage 7, codegen: a `Step` in, native code out. `plan` decides which nodes are views
//! (reshape, broadcast, transpose) and which need a kernel and a buffer in one arena; `lower`
//! turns the kernels into a single Cranelift function (matrix products call the `gemm` crate
//! through an imported symbol), with the loop builders of `loops` and the one-or-four-lane
//! arithmetic of `arith`; `jit` compiles it and runs it; `workers` runs the kernels split
//! between two threads. It guarantees the interpreter's results (bit for bit outside products
//! and split sums) and touches only memory checked before the step runs.

mod arith;
mod jit;
mod loops;
mod lower;
mod plan;
mod workers;

pub use jit::{Compiled, Flops, Profile, Rejected};
pub use plan::CompileError;
pub use workers::{join, set_threads};

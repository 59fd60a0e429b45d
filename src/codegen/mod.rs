//! Stage 7, codegen: a `Step` in, native code out, in the order the modules run:
//! `plan` decides which nodes are views (`layout`) and which need a kernel of which kind
//! (`kernels`, one file per kind); `fuse` moves maps and sums into the kernels whose pieces
//! they can run on; `alloc` places every buffer in one arena; `lower` emits one Cranelift
//! function for the step and one per kernel cut into pieces, following the calling
//! convention of `abi`, with the loop builders of `loops` and the one-or-four-lane arithmetic
//! of `arith`; `jit` compiles and runs it; `pool` runs the pieces on any number of workers;
//! `direct` is the direct convolution that generated code calls where im2col would be skinny,
//! and `rows` the eight-lane sigmoid and tanh it calls for maps over rows.
//! It guarantees the interpreter's results (bit for bit outside products and sums over
//! pieces), the same bits for any number of workers, and touches only memory checked before
//! the step runs.

mod abi;
mod alloc;
mod arith;
mod direct;
mod fuse;
mod jit;
mod kernels;
mod layout;
mod loops;
mod lower;
mod plan;
mod pool;
mod rows;

pub use jit::{Compiled, Flops, Profile, Rejected};
pub use plan::CompileError;
pub use pool::{default_threads, set_default_threads, Pool, Schedule, MAX_THREADS};

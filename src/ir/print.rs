//! The graph's printed form (`netc emit-ir --stage ir`): deterministic, one node per line with
//! its type and the source line it came from, so snapshots are stable and diffs readable.

use super::graph::*;
use std::fmt::{self, Write};

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Input(i) => write!(f, "input #{i}"),
            Op::Param(i) => write!(f, "param #{i}"),
            Op::State(i) => write!(f, "state #{i}"),
            Op::Const(c) => write!(f, "const {:?}", c.0),
            Op::Unary(op) => f.write_str(op.name()),
            Op::Binary(op) => f.write_str(op.name()),
            Op::Broadcast(shape) => write!(f, "broadcast{shape}"),
            Op::Reduce(op, axes) => write!(f, "{}{axes:?}", op.name()),
            Op::MatMul => f.write_str("matmul"),
            Op::Reshape(shape) => write!(f, "reshape{shape}"),
            Op::Transpose(perm) => write!(f, "transpose{perm:?}"),
            Op::Softmax { axis } => write!(f, "softmax[{axis}]"),
            Op::LogSoftmax { axis } => write!(f, "log_softmax[{axis}]"),
            Op::OneHot { classes } => write!(f, "onehot({classes})"),
            Op::Hyper(i) => write!(f, "hyper #{i}"),
            Op::BatchSize => f.write_str("batch_size"),
            Op::Conv2d(window) => write!(f, "conv2d({window})"),
            Op::Conv2dGradInput(window, _) => write!(f, "conv2d_grad_input({window})"),
            Op::Conv2dGradWeight(window) => write!(f, "conv2d_grad_weight({window})"),
            Op::Pool(op, window) => write!(f, "{}({window})", op.name()),
            Op::PoolGrad(op, window) => write!(f, "{}_grad({window})", op.name()),
            Op::DropoutMask { p } => write!(f, "dropout_mask(p {:?})", p.0),
            Op::Concat(axis) => write!(f, "concat[{axis}]"),
            Op::Slice { axis, start, len } => write!(f, "slice[{axis}: {start}..{}]", start + len),
        }
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        for (i, name) in self.hypers.iter().enumerate() {
            writeln!(f, "  hyper #{i} {name}: f32[]")?;
        }
        for (kind, decls) in [
            ("input", &self.inputs),
            ("param", &self.params),
            ("state", &self.states),
        ] {
            for (i, decl) in decls.iter().enumerate() {
                writeln!(
                    f,
                    "  {kind} #{i} {}: {}{}",
                    decl.name, decl.dtype, decl.shape
                )?;
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let mut text = format!("  %{i} = {}", node.op);
            for (j, arg) in node.args.iter().enumerate() {
                let _ = write!(text, "{}{arg}", if j == 0 { " " } else { ", " });
            }
            if let Some(name) = self.decl_name(&node.op) {
                let _ = write!(text, " ({name})");
            }
            let typed = format!("{text:<44} : {}{}", node.dtype, node.shape);
            if let Some(origin) = self.origin_text(node.origin) {
                writeln!(f, "{typed:<66} # {origin}")?;
            } else {
                writeln!(f, "{typed}")?;
            }
        }
        for (param, id) in &self.gradients {
            writeln!(f, "  grad {} = {id}", self.params[*param].name)?;
        }
        for (param, id) in &self.param_updates {
            writeln!(f, "  update {} = {id}", self.params[*param].name)?;
        }
        for (state, id) in &self.state_updates {
            writeln!(f, "  update {} = {id}", self.states[*state].name)?;
        }
        let results: Vec<String> = self
            .outputs
            .iter()
            .map(|(name, id)| format!("{name}={id}"))
            .collect();
        writeln!(f, "  return {}", results.join(", "))?;
        writeln!(f, "}}")
    }
}

impl Graph {
    fn decl_name(&self, op: &Op) -> Option<&str> {
        match op {
            Op::Input(i) => Some(&self.inputs[*i].name),
            Op::Param(i) => Some(&self.params[*i].name),
            Op::State(i) => Some(&self.states[*i].name),
            Op::Hyper(i) => Some(&self.hypers[*i]),
            _ => None,
        }
    }
}

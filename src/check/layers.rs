//! Checking `layers` blocks: each layer's arguments, its input rank, its output shape, and the
//! parameters and running statistics it creates (named `dense1.weight`, `h.conv2.bias`, ...).

use super::args::{self, Context};
use super::blocks::Chain;
use super::expr::flattened;
use super::model::*;
use super::suggest::{did_you_mean, suggest};
use super::Checker;
use crate::diagnostics::{Code, Diagnostic};
use crate::shape::{Dim, Shape, Window};
use crate::source::Span;
use crate::syntax::ast::{Call, Expr, ExprKind, LayersBlock};
use std::collections::BTreeMap;

impl Checker {
    /// Checks a layers block whose parameters get names starting with `prefix`: its input and
    /// the layers after the last block use in it (each block use ends the layers before it in
    /// a value of their own).
    pub fn layers(&mut self, block: &LayersBlock, prefix: &str) -> Option<(TExpr, Vec<Layer>)> {
        let input = match &block.input {
            Some(expr) => self.expr(expr)?,
            None => self.implicit_input(block.keyword)?,
        };
        let mut chain = Chain {
            input,
            layers: Vec::new(),
        };
        self.sequence(&block.layers, &mut chain, &mut BTreeMap::new(), prefix)?;
        Some((chain.input, chain.layers))
    }

    /// The model's only input, which an unnamed `layers` block reads.
    fn implicit_input(&mut self, keyword: Span) -> Option<TExpr> {
        if self.inputs.len() != self.input_decls {
            return None; // an input failed to check and was reported
        }
        match self.inputs.as_slice() {
            [input] => Some(TExpr {
                kind: TExprKind::Input(0),
                shape: Shape::batched(&input.shape),
                span: keyword,
            }),
            [] => {
                self.report(
                    Diagnostic::new(
                        Code::E0212,
                        "this layers block has no input",
                        keyword,
                        "reads no input",
                    )
                    .with_help("declare one with `input x: [...]`"),
                );
                None
            }
            _ => {
                self.report(
                    Diagnostic::new(
                        Code::E0212,
                        "which input does this layers block read?",
                        keyword,
                        "the model has several inputs",
                    )
                    .with_help("name it: `layers(x) { ... }`"),
                );
                None
            }
        }
    }

    pub(super) fn unknown_layer(&mut self, call: &Call) {
        let name = &call.callee.name;
        let mut diagnostic = Diagnostic::new(
            Code::E0204,
            format!("unknown layer `{name}`"),
            call.callee.span,
            "not a layer",
        );
        if args::lookup(args::functions(), name).is_some()
            && did_you_mean(name, args::names(args::layers())).is_none()
        {
            diagnostic = diagnostic.with_help(format!(
                "`{name}` is a function: use it in an equation, `h = {name}(...)`"
            ));
        } else {
            let blocks = self.blocks.keys().map(String::as_str);
            let names: Vec<&str> = args::names(args::layers())
                .map(|n| n as &str)
                .chain(blocks)
                .collect();
            diagnostic = suggest(diagnostic, name, "layers and blocks", names);
        }
        self.report(diagnostic);
    }

    pub(super) fn layer(
        &mut self,
        signature: &'static args::Signature<'static>,
        call: &Call,
        input: &Shape,
        name: String,
    ) -> Option<Layer> {
        if let Some(diagnostic) = pytorch_order(signature.name, call, input) {
            self.report(diagnostic);
            return None;
        }
        let bound = self.bind(signature, &call.args, call.span, Context::Call);
        let rank_error = |this: &mut Checker, expected: &str, help: &str| {
            let message = format!("`{}` expects {expected}, found {input}", signature.name);
            let diagnostic = Diagnostic::new(
                Code::E0305,
                message,
                call.callee.span,
                format!("input has shape {input}"),
            );
            this.report(if help.is_empty() {
                diagnostic
            } else {
                diagnostic.with_help(help)
            });
            None
        };
        let (kind, shape) = match signature.name {
            "flatten" => (LayerKind::Flatten, flattened(input)),
            name if UnaryOp::layer(name).is_some() => {
                (LayerKind::Activation(UnaryOp::layer(name)?), input.clone())
            }
            "softmax" | "log_softmax" => {
                if input.rank() == 0 {
                    return rank_error(self, "a tensor with an axis to normalize", "");
                }
                (
                    LayerKind::Softmax {
                        log: signature.name == "log_softmax",
                    },
                    input.clone(),
                )
            }
            "dropout" => (
                LayerKind::Dropout {
                    p: self.number_arg(&bound, "p", Context::Call)?,
                },
                input.clone(),
            ),
            "dense" => {
                let units = self.count_arg(&bound, "units", Context::Call);
                let bias = self.bool_arg(&bound, "bias").unwrap_or(true);
                let init = self.init_arg(&bound);
                if input.rank() != 2 {
                    let help = if input.rank() > 2 {
                        "add `flatten` before it"
                    } else {
                        ""
                    };
                    return rank_error(self, "[N, features]", help);
                }
                let (units, init) = (units?, init?);
                let features = input.fixed_dim(1)?;
                let weight = self.layer_param(
                    &name,
                    "weight",
                    Shape::fixed(&[features, units]),
                    init,
                    call.span,
                )?;
                let bias = match bias {
                    true => Some(self.layer_param(
                        &name,
                        "bias",
                        Shape::fixed(&[units]),
                        Init::Zeros,
                        call.span,
                    )?),
                    false => None,
                };
                (
                    LayerKind::Dense { weight, bias },
                    Shape(vec![input.0[0], Dim::Fixed(units)]),
                )
            }
            "conv2d" => {
                let channels = self.count_arg(&bound, "channels", Context::Call);
                let kernel = self.pair_arg(&bound, "kernel");
                let stride = self.pair_or(&bound, "stride", [1, 1]);
                let padding = self.pair_or(&bound, "padding", [0, 0]);
                let bias = self.bool_arg(&bound, "bias").unwrap_or(true);
                let init = self.init_arg(&bound);
                if input.rank() != 4 {
                    return rank_error(
                        self,
                        "[N, channels, height, width]",
                        "declare the input with a channel axis, e.g. `[1, 28, 28]`",
                    );
                }
                let (channels, kernel, stride, padding, init) =
                    (channels?, kernel?, stride?, padding?, init?);
                let window = Window {
                    kernel,
                    stride,
                    padding,
                };
                let shape = self.window(input, window, Dim::Fixed(channels), call)?;
                let in_channels = input.fixed_dim(1)?;
                let weight_shape = Shape::fixed(&[channels, in_channels, kernel[0], kernel[1]]);
                let weight = self.layer_param(&name, "weight", weight_shape, init, call.span)?;
                let bias = match bias {
                    true => Some(self.layer_param(
                        &name,
                        "bias",
                        Shape::fixed(&[channels]),
                        Init::Zeros,
                        call.span,
                    )?),
                    false => None,
                };
                (
                    LayerKind::Conv2d {
                        weight,
                        bias,
                        window,
                    },
                    shape,
                )
            }
            name if PoolOp::layer(name).is_some() => {
                let kernel = self.pair_arg(&bound, "kernel");
                let stride = kernel.and_then(|kernel| self.pair_or(&bound, "stride", kernel));
                let padding = self.pair_or(&bound, "padding", [0, 0]);
                if input.rank() != 4 {
                    return rank_error(self, "[N, channels, height, width]", "");
                }
                let (kernel, stride, padding) = (kernel?, stride?, padding?);
                if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
                    let span = bound.expr("padding").map_or(call.span, |e| e.span);
                    self.report(
                        Diagnostic::new(Code::E0405, "pooling padding is larger than half the window", span, "too much padding")
                            .with_note("a window of only padding would pool nothing; padding must be at most kernel / 2"),
                    );
                    return None;
                }
                let op = PoolOp::layer(signature.name)?;
                let window = Window {
                    kernel,
                    stride,
                    padding,
                };
                let shape = self.window(input, window, input.0[1], call)?;
                (LayerKind::Pool { op, window }, shape)
            }
            "global_avgpool" | "global_maxpool" => {
                if input.rank() != 4 {
                    return rank_error(self, "[N, channels, height, width]", "");
                }
                let op = match signature.name {
                    "global_avgpool" => ReduceOp::Mean,
                    _ => ReduceOp::Max,
                };
                let mut shape = input.clone();
                shape.0[2] = Dim::Fixed(1);
                shape.0[3] = Dim::Fixed(1);
                (LayerKind::GlobalPool(op), shape)
            }
            "batchnorm" if self.sharing => {
                self.report(
                    Diagnostic::new(
                        Code::E0313,
                        "a shared block cannot use batch normalization twice",
                        call.span,
                        "running statistics",
                    )
                    .with_note("its running mean and variance would be updated twice in each step; use two instances instead"),
                );
                return None;
            }
            "batchnorm" => {
                let eps = self.number_or(&bound, "eps", 1e-5, Context::Call);
                let momentum = self.number_or(&bound, "momentum", 0.1, Context::Call);
                if input.rank() != 2 && input.rank() != 4 {
                    return rank_error(self, "[N, features] or [N, channels, height, width]", "");
                }
                let (eps, momentum) = (eps?, momentum?);
                let channels = Shape::fixed(&[input.fixed_dim(1)?]);
                let gamma =
                    self.layer_param(&name, "gamma", channels.clone(), Init::Ones, call.span)?;
                let beta =
                    self.layer_param(&name, "beta", channels.clone(), Init::Zeros, call.span)?;
                let running_mean = self.state(&name, "running_mean", channels.clone(), Init::Zeros);
                let running_var = self.state(&name, "running_var", channels, Init::Ones);
                (
                    LayerKind::BatchNorm {
                        gamma,
                        beta,
                        running_mean,
                        running_var,
                        eps,
                        momentum,
                    },
                    input.clone(),
                )
            }
            other => unreachable!("layer `{other}` is in the table but not checked"),
        };
        let name = match kind {
            LayerKind::Dense { .. } | LayerKind::Conv2d { .. } | LayerKind::BatchNorm { .. } => {
                name
            }
            _ => signature.name.to_string(),
        };
        Some(Layer {
            kind,
            name,
            input_shape: input.clone(),
            shape,
            span: call.span,
        })
    }

    /// The output of a sliding window, or E0304 when the window does not fit.
    fn window(
        &mut self,
        input: &Shape,
        window: Window,
        channels: Dim,
        call: &Call,
    ) -> Option<Shape> {
        let axis = match window.apply(input, channels) {
            Ok(shape) => return Some(shape),
            Err(axis) => axis,
        };
        let size = input.fixed_dim(2 + axis)?;
        let which = ["height", "width"][axis];
        self.report(
            Diagnostic::new(
                Code::E0304,
                format!("the {} window does not fit the input", call.callee.name),
                call.span,
                format!(
                    "a {which} of {size} with padding {} is smaller than the kernel {}",
                    window.padding[axis], window.kernel[axis]
                ),
            )
            .with_note(format!(
                "output size = (size + 2·padding − kernel) / stride + 1 must be at least 1; the input here is {input}"
            ))
            .with_help("add padding, use a smaller kernel, or remove a pooling layer"),
        );
        None
    }

    /// The `init` argument, defaulting to Glorot (Xavier) uniform.
    fn init_arg(&mut self, bound: &args::Bound) -> Option<Init> {
        match bound.expr("init") {
            Some(expr) => self.init(expr),
            None => Some(Init::XavierUniform),
        }
    }

    fn layer_param(
        &mut self,
        layer: &str,
        part: &str,
        shape: Shape,
        init: Init,
        span: Span,
    ) -> Option<usize> {
        let name = format!("{layer}.{part}");
        self.declare_param(Param {
            name,
            shape,
            init,
            span,
        })
    }

    fn state(&mut self, layer: &str, part: &str, shape: Shape, init: Init) -> usize {
        self.states.push(State {
            name: format!("{layer}.{part}"),
            shape,
            init,
        });
        self.states.len() - 1
    }
}

/// `dense(784, 256)` and `conv2d(1, 6, 5)`: PyTorch's `Linear(in, out)` and
/// `Conv2d(in, out, kernel)` orders, which netc would otherwise read as other arguments (a
/// kernel of 6 and a stride of 5). Recognized when the first number is the input's size, which
/// netc infers.
fn pytorch_order(layer: &str, call: &Call, input: &Shape) -> Option<Diagnostic> {
    let positional: Vec<&Expr> = call
        .args
        .iter()
        .filter(|arg| arg.name.is_none())
        .map(|arg| &arg.value)
        .collect();
    let whole = |e: &Expr| {
        matches!(
            e.kind,
            ExprKind::Number {
                is_integer: true,
                ..
            }
        )
    };
    let is_input_size = |e: &Expr| match (&e.kind, input.0.get(1)) {
        (ExprKind::Number { value, .. }, Some(Dim::Fixed(size))) => *value == *size as f64,
        _ => false,
    };
    let text = |e: &Expr| crate::syntax::print::expr_text(e);
    let (netc, torch) = match (layer, positional.as_slice()) {
        ("dense", [size, output]) if is_input_size(size) && whole(output) => (
            format!("dense({})", text(output)),
            format!("Linear({}, {})", text(size), text(output)),
        ),
        ("conv2d", [size, output, kernel, ..])
            if is_input_size(size) && whole(output) && whole(kernel) =>
        {
            (
                format!("conv2d({}, kernel: {})", text(output), text(kernel)),
                format!("Conv2d({}, {}, {})", text(size), text(output), text(kernel)),
            )
        }
        _ => return None,
    };
    Some(
        Diagnostic::new(
            Code::E0404,
            format!("this reads like PyTorch's `{torch}`"),
            call.span,
            "input size given",
        )
        .with_note("netc infers a layer's input size from its input; only the output size is given, and the window by name")
        .with_help(format!("write `{netc}`")),
    )
}

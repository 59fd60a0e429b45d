//! The vocabulary of operations, shared by every stage as `shape.rs` is: each elementwise
//! function, binary operation, reduction and pooling kind, with its name (as the IR prints it
//! and, where it has one, as a `.net` file writes it), its arity, how a model file may use it,
//! and one line of documentation. The checker's tables of functions and layers, and the tidy
//! test over `docs/language.md`, derive from here; the stages match on these enums without a
//! catch-all arm, so adding an operation makes the compiler list every place to handle it.

/// How a model file may use an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Only the compiler makes it (a derivative, a comparison).
    Internal,
    /// An operator symbol in expressions: `-x`, `a + b`.
    Operator(&'static str),
    /// A function in equations, `relu(h)`.
    Function,
    /// A function in equations and a layer in `layers` blocks.
    FunctionAndLayer,
    /// A layer in `layers` blocks only.
    Layer,
}

impl Surface {
    /// Callable as a function in an equation.
    pub fn is_function(self) -> bool {
        matches!(self, Surface::Function | Surface::FunctionAndLayer)
    }

    /// Usable as a layer in a `layers` block.
    pub fn is_layer(self) -> bool {
        matches!(self, Surface::Layer | Surface::FunctionAndLayer)
    }
}

/// What is known of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// As the IR prints it, and as a model file writes it unless it is an operator.
    pub name: &'static str,
    /// Tensor arguments.
    pub arity: usize,
    pub surface: Surface,
    /// One line for the language reference.
    pub doc: &'static str,
}

const fn info(name: &'static str, arity: usize, surface: Surface, doc: &'static str) -> Info {
    Info {
        name,
        arity,
        surface,
        doc,
    }
}

/// Defines an operation enum with its variants' `Info`, `ALL`, and lookups by surface name.
macro_rules! operations {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $info:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant,)* }

        impl $name {
            /// Every operation of this kind, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Its name, arity, surface form and documentation line.
            pub fn info(self) -> Info {
                match self { $($name::$variant => $info,)* }
            }

            /// Its name, as the IR prints it.
            pub fn name(self) -> &'static str {
                self.info().name
            }

            /// The operation a model file calls `name` as a function.
            pub fn function(name: &str) -> Option<$name> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|op| op.info().surface.is_function() && op.name() == name)
            }

            /// The operation a `layers` block names `name`.
            pub fn layer(name: &str) -> Option<$name> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|op| op.info().surface.is_layer() && op.name() == name)
            }
        }
    };
}

use Surface::*;

operations! {
    /// Elementwise functions of one tensor.
    UnaryOp {
        Neg => info("neg", 1, Operator("-"), "`-x`: negation"),
        Relu => info("relu", 1, FunctionAndLayer, "max(x, 0)"),
        Sigmoid => info("sigmoid", 1, FunctionAndLayer, "1 / (1 + exp(-x))"),
        Tanh => info("tanh", 1, FunctionAndLayer, "the hyperbolic tangent"),
        Exp => info("exp", 1, Function, "e^x"),
        Log => info("log", 1, Function, "the natural logarithm"),
        Abs => info("abs", 1, Function, "|x|"),
        Sqrt => info("sqrt", 1, Function, "the square root"),
        Square => info("square", 1, Function, "x²"),
        Sin => info("sin", 1, Function, "the sine (radians)"),
        Cos => info("cos", 1, Function, "the cosine (radians)"),
        /// The largest integer not above x (learning-rate schedules count whole epochs).
        Floor => info("floor", 1, Internal, "the largest integer ≤ x: schedules' whole epochs"),
        /// 1 where the argument is positive, else 0 (the derivative of relu).
        Step => info("step", 1, Internal, "1 where x > 0, else 0: relu's derivative"),
        /// −1, 0 or 1 (the derivative of abs).
        Sign => info("sign", 1, Internal, "−1, 0 or 1: abs's derivative"),
    }
}

operations! {
    /// Elementwise functions of two tensors of the same shape.
    BinaryOp {
        Add => info("add", 2, Operator("+"), "`a + b`, broadcasting"),
        Sub => info("sub", 2, Operator("-"), "`a - b`, broadcasting"),
        Mul => info("mul", 2, Operator("*"), "`a * b`, broadcasting"),
        Div => info("div", 2, Operator("/"), "`a / b`, broadcasting"),
        /// 1 where the operands are equal, else 0 (routes a max's gradient to its arg-max).
        Equal => info("equal", 2, Internal, "1 where a = b, else 0: routes max's gradient"),
    }
}

operations! {
    /// Reductions over a set of axes (the axes are removed).
    ReduceOp {
        Sum => info("sum", 1, Function, "the sum over `axis`, or over every axis"),
        Mean => info("mean", 1, Function, "the mean over `axis`, or over every axis"),
        Max => info("max", 1, Function, "the maximum over `axis`, or over every axis"),
    }
}

operations! {
    /// Pooling kinds (average pooling counts padding as zeros, as PyTorch does by default).
    PoolOp {
        Max => info("maxpool", 1, Layer, "the maximum of each window"),
        Avg => info("avgpool", 1, Layer, "the mean of each window, padding counted as zeros"),
    }
}

/// Every operation a model file can name (functions and layers), with its documentation line.
pub fn named() -> Vec<Info> {
    let unary = UnaryOp::ALL.iter().map(|op| op.info());
    let binary = BinaryOp::ALL.iter().map(|op| op.info());
    let reduce = ReduceOp::ALL.iter().map(|op| op.info());
    let pool = PoolOp::ALL.iter().map(|op| op.info());
    unary
        .chain(binary)
        .chain(reduce)
        .chain(pool)
        .filter(|info| info.surface.is_function() || info.surface.is_layer())
        .collect()
}

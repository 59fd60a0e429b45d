//! Checking expressions: names, operators with their shape rules, and built-in functions.

use super::args::{self, Context};
use super::model::*;
use super::suggest::{did_you_mean, suggest};
use super::{Checker, Entry};
use crate::diagnostics::{Code, Diagnostic};
use crate::shape::{self, Dim, MatmulError, Shape};
use crate::source::Span;
use crate::syntax::ast::{BinOp, Call, Expr, ExprKind};

impl Checker {
    /// Checks a tensor expression; `None` when it is wrong (already reported).
    pub fn expr(&mut self, expr: &Expr) -> Option<TExpr> {
        let checked = self.expr_or_label(expr)?;
        if self.is_class_label(&checked) {
            let decl = self.label_span();
            self.report(
                Diagnostic::new(
                    Code::E0402,
                    "a class label is not a tensor",
                    expr.span,
                    "a class index",
                )
                .with_label(decl, "declared as a class label here")
                .with_note("class labels are only used by `cross_entropy` and the accuracy metric"),
            );
            return None;
        }
        Some(checked)
    }

    /// True for the class label itself.
    pub fn is_class_label(&self, expr: &TExpr) -> bool {
        matches!(expr.kind, TExprKind::Label)
            && matches!(
                self.label.as_ref().map(|l| &l.kind),
                Some(LabelKind::Class(_))
            )
    }

    /// Checks an expression that may be the class label (the target argument of a loss).
    pub fn expr_or_label(&mut self, expr: &Expr) -> Option<TExpr> {
        let span = expr.span;
        let (kind, shape) = match &expr.kind {
            ExprKind::Number { value, .. } => (TExprKind::Const(*value), Shape::scalar()),
            ExprKind::Bool(_) | ExprKind::List(_) => {
                self.wrong_type(expr, args::Ty::Tensor);
                return None;
            }
            ExprKind::Name(name) => return self.name(name, span),
            ExprKind::Neg(inner) => {
                let inner = self.expr(inner)?;
                let shape = inner.shape.clone();
                (TExprKind::Unary(UnaryOp::Neg, Box::new(inner)), shape)
            }
            ExprKind::Binary(op, left, right) => {
                let (left, right) = (self.expr(left), self.expr(right));
                return self.binary(*op, left?, right?, span);
            }
            ExprKind::Call(call) => return self.call(call),
        };
        Some(TExpr { kind, shape, span })
    }

    fn name(&mut self, name: &str, span: Span) -> Option<TExpr> {
        let (kind, shape) = match self.scope.get(name).map(|(entry, _)| *entry) {
            Some(Entry::Input(i)) => (TExprKind::Input(i), Shape::batched(&self.inputs[i].shape)),
            Some(Entry::Label) => {
                let shape = match &self
                    .label
                    .as_ref()
                    .expect("label entry implies a label")
                    .kind
                {
                    LabelKind::Class(_) => Shape(vec![Dim::Batch]),
                    LabelKind::Target(dims) => Shape::batched(dims),
                };
                (TExprKind::Label, shape)
            }
            Some(Entry::Param(i)) => (TExprKind::Param(i), self.params[i].shape.clone()),
            Some(Entry::Value(i)) => (TExprKind::Value(i), self.values[i].shape.clone()),
            Some(Entry::Poisoned) => return None,
            Some(Entry::Instance(_)) => {
                self.report(
                    Diagnostic::new(
                        Code::E0401,
                        format!("`{name}` is a shared block, not a tensor"),
                        span,
                        "a block",
                    )
                    .with_help(format!("apply it as a layer: `layers(x) {{ {name} }}`")),
                );
                return None;
            }
            None => {
                self.undefined(name, span);
                return None;
            }
        };
        Some(TExpr { kind, shape, span })
    }

    fn undefined(&mut self, name: &str, span: Span) {
        let mut diagnostic = Diagnostic::new(
            Code::E0201,
            format!("`{name}` is not defined"),
            span,
            "not defined",
        );
        if let Some(&later) = self.later.get(name) {
            diagnostic = diagnostic
                .with_label(later, "defined later here")
                .with_note("an equation can only use values defined above it");
        } else if let Some(guess) = did_you_mean(name, self.scope.keys().map(String::as_str)) {
            let guess = guess.to_string();
            diagnostic = diagnostic.with_help(format!("did you mean `{guess}`?"));
        } else if args::lookup(args::functions(), name).is_some() {
            diagnostic =
                diagnostic.with_help(format!("`{name}` is a function: call it as `{name}(...)`"));
        }
        self.report(diagnostic);
    }

    fn binary(&mut self, op: BinOp, left: TExpr, right: TExpr, span: Span) -> Option<TExpr> {
        let shape = if op == BinOp::MatMul {
            match shape::matmul(&left.shape, &right.shape) {
                Ok(shape) => shape,
                Err(error) => {
                    self.matmul_error(&left, &right, error, span);
                    return None;
                }
            }
        } else {
            match shape::broadcast(&left.shape, &right.shape) {
                Ok(shape) => shape,
                Err(error) => {
                    let diagnostic = Diagnostic::new(
                        Code::E0302,
                        format!("shapes {} and {} do not broadcast", left.shape, right.shape),
                        span,
                        format!(
                            "dimension {} cannot match dimension {}",
                            error.left, error.right
                        ),
                    );
                    let diagnostic = self.declared_here(diagnostic, &left);
                    let diagnostic = self.declared_here(diagnostic, &right).with_note(
                        "shapes broadcast when, aligned from the right, each pair of dimensions is equal or one of them is 1",
                    );
                    self.report(diagnostic);
                    return None;
                }
            }
        };
        // Broadcasting and matrix products are the only operations whose results outgrow their operands.
        if !self.fits(&shape, span) {
            return None;
        }
        let kind = match op {
            BinOp::MatMul => TExprKind::MatMul(Box::new(left), Box::new(right)),
            BinOp::Add => TExprKind::Binary(BinaryOp::Add, Box::new(left), Box::new(right)),
            BinOp::Sub => TExprKind::Binary(BinaryOp::Sub, Box::new(left), Box::new(right)),
            BinOp::Mul => TExprKind::Binary(BinaryOp::Mul, Box::new(left), Box::new(right)),
            BinOp::Div => TExprKind::Binary(BinaryOp::Div, Box::new(left), Box::new(right)),
        };
        Some(TExpr { kind, shape, span })
    }

    fn matmul_error(&mut self, left: &TExpr, right: &TExpr, error: MatmulError, span: Span) {
        let diagnostic = match error {
            MatmulError::Rank {
                left: is_left,
                rank,
            } => {
                let operand = if is_left { left } else { right };
                let diagnostic = Diagnostic::new(
                    Code::E0303,
                    format!("`@` needs vectors or matrices, found a tensor of rank {rank}"),
                    operand.span,
                    format!("this has shape {}", operand.shape),
                );
                let diagnostic = self.declared_here(diagnostic, operand);
                if rank > 2 {
                    diagnostic.with_help("flatten it first, e.g. `flatten(x) @ w`")
                } else {
                    diagnostic
                }
            }
            MatmulError::Inner {
                left: k_left,
                right: k_right,
            } => {
                let mut diagnostic = Diagnostic::new(
                    Code::E0301,
                    "shape mismatch in matrix product",
                    span,
                    format!(
                        "{} has {k_left} columns but {} has {k_right} rows",
                        self.describe(left),
                        self.describe(right)
                    ),
                );
                diagnostic = self.declared_here(diagnostic, left);
                diagnostic = self.declared_here(diagnostic, right);
                if k_right == Dim::Batch || k_left == Dim::Batch {
                    diagnostic = diagnostic.with_note("N is the batch dimension: a matrix product contracts features, never examples");
                }
                if let (TExprKind::Param(_), Dim::Fixed(_)) = (&right.kind, k_left) {
                    let mut fixed = right.shape.clone();
                    fixed.0[0] = k_left;
                    diagnostic = diagnostic.with_help(format!("did you mean {fixed}?"));
                }
                diagnostic.with_note(
                    "in `a @ b` the last dimension of `a` must equal the first dimension of `b`",
                )
            }
        };
        self.report(diagnostic);
    }

    /// A short description of an operand: its name when it has one, else "the left side".
    fn describe(&self, expr: &TExpr) -> String {
        match self.decl_of(expr) {
            Some((name, _)) => format!("`{name}`"),
            None => format!("the operand of shape {}", expr.shape),
        }
    }

    /// The name and declaration span of a named operand.
    fn decl_of(&self, expr: &TExpr) -> Option<(String, Span)> {
        let name = match expr.kind {
            TExprKind::Input(i) => self.inputs[i].name.clone(),
            TExprKind::Param(i) => self.params[i].name.clone(),
            // A block's input `x` is some value of the model, named `x` only in the block.
            TExprKind::Value(i) => self
                .scope
                .iter()
                .find(|(_, (entry, _))| *entry == Entry::Value(i))
                .map(|(name, _)| name.clone())?,
            TExprKind::Label => self.label.as_ref()?.name.clone(),
            _ => return None,
        };
        let span = self.scope.get(&name)?.1;
        Some((name, span))
    }

    /// Adds a secondary label at the declaration of a named operand.
    pub fn declared_here(&self, diagnostic: Diagnostic, expr: &TExpr) -> Diagnostic {
        let Some((name, span)) = self.decl_of(expr) else {
            return diagnostic;
        };
        if span == expr.span {
            return diagnostic;
        }
        match self.label.as_ref().map(|l| &l.kind) {
            Some(LabelKind::Class(n)) if self.is_class_label(expr) => {
                diagnostic.with_label(span, format!("`{name}` is a class label with {n} classes"))
            }
            _ => diagnostic.with_label(span, format!("`{name}` has shape {}", expr.shape)),
        }
    }

    fn call(&mut self, call: &Call) -> Option<TExpr> {
        let name = call.callee.name.as_str();
        let Some(signature) = args::lookup(args::functions(), name) else {
            let mut diagnostic = Diagnostic::new(
                Code::E0203,
                format!("unknown function `{name}`"),
                call.callee.span,
                "not a function",
            );
            if self.blocks.contains_key(name) {
                diagnostic = diagnostic.with_help(format!(
                    "`{name}` is a block: use it like a layer, `h = layers(x) {{ {name}(...) }}`"
                ));
            } else if args::lookup(args::layers(), name).is_some()
                && did_you_mean(name, args::names(args::functions())).is_none()
            {
                diagnostic = diagnostic.with_help(format!(
                    "`{name}` is a layer: use it inside `layers {{ ... }}`"
                ));
            } else {
                diagnostic = suggest(
                    diagnostic,
                    name,
                    "functions",
                    args::names(args::functions()),
                );
            }
            self.report(diagnostic);
            return None;
        };
        if name == "concat" {
            return self.concat(call);
        }
        let bound = self.bind(signature, &call.args, call.span, Context::Call);
        let span = call.span;
        if args::LOSSES.contains(&name) {
            let pred = bound.expr("pred").and_then(|e| self.expr(e));
            let target = bound.expr("target").and_then(|e| self.expr_or_label(e));
            return self.loss(name, pred?, target?, span);
        }
        let x = self.expr(bound.expr("x")?)?;
        let rank = x.shape.rank();
        let (kind, shape) = match name {
            _ if UnaryOp::function(name).is_some() => {
                let op = UnaryOp::function(name)?;
                let shape = x.shape.clone();
                Some((TExprKind::Unary(op, Box::new(x)), shape))
            }
            "softmax" | "log_softmax" => {
                let axis = self.axis(&bound, rank, -1)?;
                let shape = x.shape.clone();
                Some((
                    TExprKind::Softmax {
                        log: name == "log_softmax",
                        axis,
                        arg: Box::new(x),
                    },
                    shape,
                ))
            }
            _ if ReduceOp::function(name).is_some() => {
                let op = ReduceOp::function(name)?;
                let axes = match bound.expr("axis") {
                    Some(given) => Some(self.axes(given, &x)?),
                    None => None,
                };
                let shape = match &axes {
                    Some(axes) => axes.iter().rev().fold(x.shape.clone(), |shape, &axis| {
                        shape::remove_axis(&shape, axis)
                    }),
                    None => Shape::scalar(),
                };
                Some((
                    TExprKind::Reduce {
                        op,
                        axes,
                        arg: Box::new(x),
                    },
                    shape,
                ))
            }
            "flatten" => {
                let shape = flattened(&x.shape);
                Some((TExprKind::Reshape(Box::new(x)), shape))
            }
            "reshape" => {
                let target = self.int_list_arg(&bound, "shape")?;
                let shape =
                    self.reshape(&x, &target, bound.expr("shape").map_or(span, |e| e.span))?;
                Some((TExprKind::Reshape(Box::new(x)), shape))
            }
            "transpose" => self.transpose(&bound, x, span),
            "dropout" => {
                let p = self.number_arg(&bound, "p", Context::Call)?;
                let shape = x.shape.clone();
                Some((
                    TExprKind::Dropout {
                        p,
                        arg: Box::new(x),
                    },
                    shape,
                ))
            }
            other => unreachable!("function `{other}` is in the table but not checked"),
        }?;
        Some(TExpr { kind, shape, span })
    }

    /// `axis: k` or `axis: [j, k]` of a reduction: distinct axes of `x`, in ascending order.
    fn axes(&mut self, given: &Expr, x: &TExpr) -> Option<Vec<usize>> {
        let items: Vec<&Expr> = match &given.kind {
            ExprKind::List(items) if !items.is_empty() => items.iter().collect(),
            ExprKind::List(_) => {
                self.wrong_type(given, args::Ty::Axes);
                return None;
            }
            _ => vec![given],
        };
        let rank = x.shape.rank();
        let mut axes = Vec::new();
        for item in items {
            let axis = self.literal_number(item, true)? as i64;
            let Some(resolved) = shape::resolve_axis(axis, rank) else {
                self.out_of_range(axis, rank, item.span);
                return None;
            };
            if axes.contains(&resolved) {
                self.report(Diagnostic::new(
                    Code::E0307,
                    format!("axis {axis} is given twice"),
                    item.span,
                    "given again here",
                ));
                return None;
            }
            axes.push(resolved);
        }
        axes.sort_unstable();
        Some(axes)
    }

    /// `concat(a, b, ..., axis: k)`: tensors of one rank that agree on every axis but `k`.
    fn concat(&mut self, call: &Call) -> Option<TExpr> {
        let mut operands = Vec::new();
        let mut axis_arg = None;
        let mut ok = true;
        for arg in &call.args {
            match &arg.name {
                None => operands.push(self.expr(&arg.value)),
                Some(name) if name.name == "axis" && axis_arg.is_none() => axis_arg = Some(arg),
                Some(name) => {
                    ok = false;
                    let message = match name.name.as_str() {
                        "axis" => "`axis` given twice".to_string(),
                        other => format!("`concat` has no argument `{other}`"),
                    };
                    self.report(
                        Diagnostic::new(Code::E0207, message, name.span, "unknown name")
                            .with_note("`concat` takes tensors, then `axis: k`"),
                    );
                }
            }
        }
        if operands.len() < 2 {
            self.report(
                Diagnostic::new(
                    Code::E0403,
                    "`concat` needs at least two tensors",
                    call.span,
                    format!("{} given", operands.len()),
                )
                .with_help("e.g. `concat(a, b, axis: 1)`"),
            );
            return None;
        }
        let operands: Vec<TExpr> = operands.into_iter().collect::<Option<_>>()?;
        if !ok {
            return None;
        }
        let first = &operands[0];
        let rank = first.shape.rank();
        let axis = match axis_arg {
            Some(arg) => {
                let axis = self.literal_number(&arg.value, true)? as i64;
                match shape::resolve_axis(axis, rank) {
                    Some(axis) => axis,
                    None => {
                        self.out_of_range(axis, rank, arg.value.span);
                        return None;
                    }
                }
            }
            None => 1,
        };
        let batched = first.shape.has_batch();
        if rank == 0 || (batched && axis == 0) || axis >= rank {
            let span = axis_arg.map_or(call.span, |arg| arg.value.span);
            let label = if rank == 0 {
                "a scalar has no axis to join".to_string()
            } else if axis >= rank {
                format!("the tensors have rank {rank}")
            } else {
                "axis 0 is the batch".to_string()
            };
            self.report(
                Diagnostic::new(
                    Code::E0307,
                    "`concat` cannot join along this axis",
                    span,
                    label,
                )
                .with_note("concatenate features or channels (`axis: 1`), never examples"),
            );
            return None;
        }
        let mut joined = first.shape.clone();
        let mut total = 0u64;
        for operand in &operands {
            let fits = operand.shape.rank() == rank
                && (0..rank).all(|k| k == axis || operand.shape.0[k] == first.shape.0[k]);
            if !fits {
                let diagnostic = Diagnostic::new(
                    Code::E0312,
                    format!(
                        "`concat` along axis {axis} of shapes {} and {}",
                        first.shape, operand.shape
                    ),
                    operand.span,
                    format!("this has shape {}", operand.shape),
                )
                .with_label(first.span, format!("the first has shape {}", first.shape))
                .with_note(format!(
                    "every dimension but axis {axis} must be the same in all of them"
                ));
                self.report(self.declared_here(diagnostic, operand));
                return None;
            }
            total = total.saturating_add(operand.shape.fixed_dim(axis)?);
        }
        joined.0[axis] = Dim::Fixed(total);
        if !self.fits(&joined, call.span) {
            return None;
        }
        Some(TExpr {
            kind: TExprKind::Concat {
                axis,
                args: operands,
            },
            shape: joined,
            span: call.span,
        })
    }

    fn out_of_range(&mut self, axis: i64, rank: usize, span: Span) {
        self.report(
            Diagnostic::new(
                Code::E0307,
                format!("axis {axis} is out of range"),
                span,
                format!("the tensor has rank {rank}"),
            )
            .with_note(format!(
                "axes run from 0 to {} (or -1 for the last)",
                rank.saturating_sub(1)
            )),
        );
    }

    fn axis(&mut self, bound: &args::Bound, rank: usize, default: i64) -> Option<usize> {
        let given = self.int_arg(bound, "axis", Context::Call);
        let axis = match (given, bound.expr("axis")) {
            (Some(axis), _) => axis,
            (None, Some(_)) => return None,
            (None, None) => default,
        };
        let resolved = shape::resolve_axis(axis, rank);
        if resolved.is_none() {
            let span = bound.expr("axis").map_or(bound.span, |e| e.span);
            self.out_of_range(axis, rank, span);
        }
        resolved
    }

    fn reshape(&mut self, x: &TExpr, target: &[(i64, Span)], span: Span) -> Option<Shape> {
        let fail = |this: &mut Checker, label: String| {
            this.report(
                Diagnostic::new(Code::E0306, format!("cannot reshape {} into this shape", x.shape), span, label)
                    .with_note("a reshape keeps the number of elements; one dimension may be -1 and is then inferred, which is how the batch dimension is kept"),
            );
            None
        };
        let inferred: Vec<_> = target.iter().filter(|(d, _)| *d == -1).collect();
        if inferred.len() > 1 || target.iter().any(|(d, _)| *d == 0 || *d < -1) {
            return fail(
                self,
                "dimensions must be at least 1, with at most one -1".into(),
            );
        }
        let known: u64 = target
            .iter()
            .filter(|(d, _)| *d > 0)
            .fold(1u64, |a, (d, _)| a.saturating_mul(*d as u64));
        let total = x.shape.elements_per_example();
        // With a batch, the -1 must stand first and absorb exactly the batch dimension.
        let inferred_dim = if x.shape.has_batch() {
            if inferred.is_empty() {
                return fail(
                    self,
                    "the batch dimension must be kept: write -1 for it".into(),
                );
            }
            if target[0].0 != -1 || known != total {
                return fail(self, format!("-1 must stand first for the batch, and the rest multiply to {total}, not {known}"));
            }
            Dim::Batch
        } else if inferred.is_empty() && known == total {
            Dim::Fixed(1) // unused: no -1 to fill
        } else if !inferred.is_empty() && total.is_multiple_of(known) {
            Dim::Fixed(total / known)
        } else {
            return fail(self, format!("{total} elements cannot take this shape"));
        };
        let dims = target
            .iter()
            .map(|&(d, _)| {
                if d == -1 {
                    inferred_dim
                } else {
                    Dim::Fixed(d as u64)
                }
            })
            .collect();
        Some(Shape(dims))
    }

    fn transpose(
        &mut self,
        bound: &args::Bound,
        x: TExpr,
        span: Span,
    ) -> Option<(TExprKind, Shape)> {
        let rank = x.shape.rank();
        let perm: Vec<usize> = match bound.expr("perm") {
            Some(_) => {
                let given = self.int_list_arg(bound, "perm")?;
                given
                    .iter()
                    .map(|&(axis, _)| shape::resolve_axis(axis, rank).unwrap_or(usize::MAX))
                    .collect()
            }
            None if rank >= 2 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(rank - 2, rank - 1);
                perm
            }
            None => vec![],
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        let problem = if rank < 2 {
            Some(format!("a tensor of rank {rank} has nothing to transpose"))
        } else if sorted != (0..rank).collect::<Vec<_>>() {
            Some(format!("not a permutation of the axes 0..{rank}"))
        } else if x.shape.has_batch() && perm[0] != 0 {
            Some("the batch dimension must stay first".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.report(
                Diagnostic::new(Code::E0311, "invalid transpose", span, problem).with_note(
                    format!(
                        "the operand has shape {}; `perm` lists each axis once",
                        x.shape
                    ),
                ),
            );
            return None;
        }
        let shape = Shape(perm.iter().map(|&axis| x.shape.0[axis]).collect());
        Some((
            TExprKind::Transpose {
                perm,
                arg: Box::new(x),
            },
            shape,
        ))
    }

    /// Checks a built-in loss applied to a prediction and a target.
    pub fn loss(&mut self, name: &str, pred: TExpr, target: TExpr, span: Span) -> Option<TExpr> {
        let kind = match name {
            "mse" => LossKind::Mse,
            "l1" => LossKind::L1,
            "cross_entropy" => LossKind::CrossEntropy,
            "binary_cross_entropy" => LossKind::BinaryCrossEntropy,
            "hinge" => LossKind::Hinge,
            _ => LossKind::Perceptron,
        };
        let class_label = self.is_class_label(&target);
        let mismatch = |this: &Checker, message: String, label: String| {
            let diagnostic = Diagnostic::new(Code::E0308, message, pred.span, label);
            let diagnostic = this.declared_here(diagnostic, &target);
            this.declared_here(diagnostic, &pred)
        };
        if kind == LossKind::BinaryCrossEntropy {
            self.logits_to_binary_cross_entropy(&pred);
        }
        if kind == LossKind::CrossEntropy {
            self.double_softmax(&pred);
            let classes = match &self.label.as_ref().map(|l| &l.kind) {
                Some(LabelKind::Class(n)) if class_label => *n,
                _ => {
                    let d = mismatch(
                        self,
                        "`cross_entropy` needs a class label as its target".into(),
                        "logits".into(),
                    );
                    self.report(d.with_help("declare the label as `label y: class(N)`"));
                    return None;
                }
            };
            let ok = pred.shape.rank() == 2 && pred.shape.0[0] == Dim::Batch;
            if !ok || pred.shape.0[1] != Dim::Fixed(classes) {
                let label = format!("this has shape {}", pred.shape);
                let d = mismatch(
                    self,
                    format!("`cross_entropy` over {} for {classes} classes", pred.shape),
                    label,
                )
                .with_note(format!(
                    "the logits must have shape [N, {classes}]: one score per class"
                ));
                let d = if ok {
                    d.with_help(format!("make the last layer produce {classes} outputs"))
                } else {
                    d
                };
                self.report(d);
                return None;
            }
        } else {
            if class_label {
                let d = mismatch(
                    self,
                    format!("`{name}` needs a real-valued target, not a class label"),
                    "prediction".into(),
                );
                self.report(
                    d.with_help("declare `target y: [...]`, or use `cross_entropy` for classes"),
                );
                return None;
            }
            if pred.shape != target.shape {
                let d = mismatch(
                    self,
                    format!(
                        "`{name}` compares a prediction of shape {} with a target of shape {}",
                        pred.shape, target.shape
                    ),
                    format!("this has shape {}", pred.shape),
                )
                .with_note(
                    "a loss compares equal shapes; silently broadcasting them is a classic bug",
                );
                self.report(d);
                return None;
            }
        }
        Some(TExpr {
            kind: TExprKind::Loss {
                kind,
                pred: Box::new(pred),
                target: Box::new(target),
            },
            shape: Shape::scalar(),
            span,
        })
    }
}

/// What last computed a prediction, followed through named values.
enum Producer {
    Softmax(Span),
    /// A dense or convolution layer, or a matrix product plus maybe a bias: any real number.
    Affine(Span),
    Other,
}

impl Checker {
    /// The operation that produced `pred`, through equations and layers blocks.
    fn producer(&self, pred: &TExpr) -> Producer {
        let mut at = pred;
        loop {
            match &at.kind {
                TExprKind::Softmax { log: false, .. } => return Producer::Softmax(at.span),
                TExprKind::MatMul(..) => return Producer::Affine(at.span),
                TExprKind::Binary(BinaryOp::Add, a, b)
                    if [a, b]
                        .iter()
                        .any(|e| matches!(e.kind, TExprKind::MatMul(..))) =>
                {
                    return Producer::Affine(at.span)
                }
                TExprKind::Value(i) => match &self.values[*i].kind {
                    ValueKind::Layers { layers, input } => match layers.last() {
                        Some(layer) => {
                            return match layer.kind {
                                LayerKind::Softmax { log: false } => Producer::Softmax(layer.span),
                                LayerKind::Dense { .. } | LayerKind::Conv2d { .. } => {
                                    Producer::Affine(layer.span)
                                }
                                _ => Producer::Other,
                            }
                        }
                        None => at = input,
                    },
                    ValueKind::Expr(expr) => at = expr,
                },
                _ => return Producer::Other,
            }
        }
    }

    /// W0202 when the logits given to `cross_entropy` come out of a softmax: cross-entropy
    /// applies its own, so the network's output is squashed twice and learns slowly.
    fn double_softmax(&mut self, pred: &TExpr) {
        if let Producer::Softmax(span) = self.producer(pred) {
            self.report(
                Diagnostic::new(
                    Code::W0202,
                    "softmax before `cross_entropy`, which applies its own",
                    span,
                    "a softmax of the logits",
                )
                .with_note("the probabilities are normalized twice: the loss still falls, but slowly, and accuracy stalls")
                .with_help("remove this softmax: `cross_entropy` takes the raw scores (logits)"),
            );
        }
    }

    /// W0204 when `binary_cross_entropy`, which takes probabilities, is given the raw scores of
    /// a dense layer or a product: log(p) of a score below 0 is not a number, and the first
    /// step diverges.
    fn logits_to_binary_cross_entropy(&mut self, pred: &TExpr) {
        if let Producer::Affine(span) = self.producer(pred) {
            self.report(
                Diagnostic::new(
                    Code::W0204,
                    "`binary_cross_entropy` of raw scores",
                    span,
                    "any real number, not a probability",
                )
                .with_note("binary cross-entropy takes probabilities in (0, 1): it computes log(p) and log(1 − p)")
                .with_help("end the network with `sigmoid` (PyTorch's BCEWithLogitsLoss is `sigmoid` then `binary_cross_entropy`)"),
            );
        }
    }
}

/// Flatten keeps the first (batch) dimension and multiplies the rest; a batch-less tensor
/// becomes a vector.
pub fn flattened(shape: &Shape) -> Shape {
    if shape.has_batch() {
        Shape(vec![Dim::Batch, Dim::Fixed(shape.elements_per_example())])
    } else {
        Shape(vec![Dim::Fixed(shape.elements_per_example())])
    }
}

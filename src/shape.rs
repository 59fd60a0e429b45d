//! Tensor shapes with a symbolic batch dimension, and the shape rules that both the checker and
//! the IR builder apply, so the two can never disagree.

use std::fmt;

/// One dimension: the symbolic batch size `N`, or a fixed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Batch,
    Fixed(u64),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("N"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// A list of dimensions, outermost first. `[]` is a scalar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// The shape of a scalar.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// A shape of fixed dimensions.
    pub fn fixed(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// `[N, dims...]`: a per-example shape with the batch dimension put in front.
    pub fn batched(per_example: &[u64]) -> Shape {
        Shape(
            std::iter::once(Dim::Batch)
                .chain(per_example.iter().map(|&d| Dim::Fixed(d)))
                .collect(),
        )
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// True when the first dimension is the batch.
    pub fn has_batch(&self) -> bool {
        self.0.contains(&Dim::Batch)
    }

    /// Elements per example: the product of the fixed dimensions (saturating, so huge shapes
    /// from bad input cannot overflow).
    pub fn elements_per_example(&self) -> u64 {
        self.0.iter().fold(1u64, |acc, dim| match dim {
            Dim::Batch => acc,
            Dim::Fixed(n) => acc.saturating_mul(*n),
        })
    }

    /// The fixed size of dimension `axis`, if it is fixed.
    pub fn fixed_dim(&self, axis: usize) -> Option<u64> {
        match self.0.get(axis) {
            Some(Dim::Fixed(n)) => Some(*n),
            _ => None,
        }
    }

    /// The last dimension, if any.
    pub fn last(&self) -> Option<Dim> {
        self.0.last().copied()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, dim) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}

/// Why two shapes do not broadcast: the dimensions that clash, counted from the right (0 = last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastError {
    pub from_right: usize,
    pub left: Dim,
    pub right: Dim,
}

/// Numpy broadcasting: align the shapes on the right; each pair of dimensions must be equal or
/// one of them 1 (the 1 is stretched); a missing dimension counts as 1. The batch dimension only
/// pairs with itself or 1.
pub fn broadcast(left: &Shape, right: &Shape) -> Result<Shape, BroadcastError> {
    let rank = left.rank().max(right.rank());
    let mut dims = vec![Dim::Fixed(1); rank];
    for from_right in 0..rank {
        let pick = |shape: &Shape| {
            shape
                .rank()
                .checked_sub(from_right + 1)
                .map_or(Dim::Fixed(1), |i| shape.0[i])
        };
        let (l, r) = (pick(left), pick(right));
        dims[rank - 1 - from_right] = match (l, r) {
            _ if l == r => l,
            (Dim::Fixed(1), other) | (other, Dim::Fixed(1)) => other,
            _ => {
                return Err(BroadcastError {
                    from_right,
                    left: l,
                    right: r,
                })
            }
        };
    }
    Ok(Shape(dims))
}

/// Why a matrix product is not defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatmulError {
    /// An operand is neither a vector nor a matrix (`left` says which).
    Rank { left: bool, rank: usize },
    /// The contracted dimensions differ.
    Inner { left: Dim, right: Dim },
}

/// `a @ b` for vectors and matrices: `[m,k] @ [k,n] = [m,n]`; a vector on the left acts as
/// one row and on the right as one column, and that dimension is dropped from the result.
pub fn matmul(left: &Shape, right: &Shape) -> Result<Shape, MatmulError> {
    for (shape, is_left) in [(left, true), (right, false)] {
        if !(1..=2).contains(&shape.rank()) {
            return Err(MatmulError::Rank {
                left: is_left,
                rank: shape.rank(),
            });
        }
    }
    let inner_left = left.0[left.rank() - 1];
    let inner_right = right.0[0];
    if inner_left != inner_right {
        return Err(MatmulError::Inner {
            left: inner_left,
            right: inner_right,
        });
    }
    let mut dims = Vec::new();
    if left.rank() == 2 {
        dims.push(left.0[0]);
    }
    if right.rank() == 2 {
        dims.push(right.0[1]);
    }
    Ok(Shape(dims))
}

/// Output size of a sliding window (convolution or pooling) along one axis:
/// `(size + 2·padding − kernel) / stride + 1`, or `None` when the window does not fit.
pub fn window_output(size: u64, kernel: u64, stride: u64, padding: u64) -> Option<u64> {
    let padded = size.checked_add(padding.checked_mul(2)?)?;
    if stride == 0 || kernel == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// A 2-D sliding window, as convolution and pooling use over `[N, C, H, W]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub padding: [u64; 2],
}

impl Window {
    /// `[N, C, H, W]` → `[N, channels, H', W']`; on failure, the axis (0 height, 1 width) where the
    /// window does not fit.
    pub fn apply(&self, input: &Shape, channels: Dim) -> Result<Shape, usize> {
        if input.rank() != 4 {
            return Err(0);
        }
        let mut dims = vec![input.0[0], channels];
        for axis in 0..2 {
            let size = input.fixed_dim(2 + axis).ok_or(axis)?;
            let out = window_output(
                size,
                self.kernel[axis],
                self.stride[axis],
                self.padding[axis],
            )
            .ok_or(axis)?;
            dims.push(Dim::Fixed(out));
        }
        Ok(Shape(dims))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel {:?}, stride {:?}, padding {:?}",
            self.kernel, self.stride, self.padding
        )
    }
}

/// The shape left after removing `axis` (a reduction without kept dimensions).
pub fn remove_axis(shape: &Shape, axis: usize) -> Shape {
    let mut dims = shape.0.clone();
    dims.remove(axis);
    Shape(dims)
}

/// Resolves a possibly negative axis against a rank (`-1` is the last axis).
pub fn resolve_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let resolved = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&resolved).then_some(resolved as usize)
}

//! Symbolic sizes and strides (a coefficient, times the batch size or not) and views: where
//! a value's elements come from and the stride of each of its axes. Every kernel reads views;
//! reshape, broadcast and transpose are views of their argument, with no kernel of their own.

use super::alloc::BufferId;
use crate::shape::{Dim, Shape};

/// A size or stride: `coef`, times the batch size when `batch` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    pub coef: i64,
    pub batch: bool,
}

impl Sym {
    pub const ZERO: Sym = Sym {
        coef: 0,
        batch: false,
    };

    pub const ONE: Sym = Sym {
        coef: 1,
        batch: false,
    };

    pub fn fixed(n: i64) -> Sym {
        Sym {
            coef: n,
            batch: false,
        }
    }

    /// `n` times this size.
    pub fn scaled(self, n: i64) -> Sym {
        Sym {
            coef: self.coef * n,
            batch: self.batch,
        }
    }

    /// The value for a batch size.
    pub fn at(self, batch: i64) -> i64 {
        if self.batch {
            self.coef * batch
        } else {
            self.coef
        }
    }
}

/// The dimensions of a shape as `Sym`s.
pub fn dims(shape: &Shape) -> Vec<Sym> {
    shape
        .0
        .iter()
        .map(|&d| match d {
            Dim::Fixed(n) => Sym::fixed(n as i64),
            Dim::Batch => Sym {
                coef: 1,
                batch: true,
            },
        })
        .collect()
}

/// The product of sizes (at most one of which involves the batch).
pub fn product(sizes: &[Sym]) -> Sym {
    sizes.iter().fold(Sym::fixed(1), |acc, d| Sym {
        coef: acc.coef * d.coef,
        batch: acc.batch || d.batch,
    })
}

/// Merges adjacent axes that every view walks as one (the outer stride is the inner stride
/// times the inner size), so loops over them are fewer and the innermost one longer. `views`
/// holds one stride per axis for each view; the merged dims and strides are returned.
pub fn coalesce(dims: &[Sym], views: &[Vec<Sym>]) -> (Vec<Sym>, Vec<Vec<Sym>>) {
    let mut merged_dims: Vec<Sym> = Vec::new();
    let mut merged: Vec<Vec<Sym>> = vec![Vec::new(); views.len()];
    for axis in 0..dims.len() {
        let joins = merged_dims.last().is_some_and(|&last| {
            views.iter().zip(&merged).all(|(view, m)| {
                let (outer, inner) = (*m.last().expect("one stride per axis"), view[axis]);
                times(inner, dims[axis]) == Some(outer)
            }) && times(last, dims[axis]).is_some()
        });
        if joins {
            let last = merged_dims.last_mut().expect("checked above");
            *last = times(*last, dims[axis]).expect("checked above");
            for (view, m) in views.iter().zip(&mut merged) {
                *m.last_mut().expect("one stride per axis") = view[axis];
            }
        } else {
            merged_dims.push(dims[axis]);
            for (view, m) in views.iter().zip(&mut merged) {
                m.push(view[axis]);
            }
        }
    }
    (merged_dims, merged)
}

/// `a · b`, unless both involve the batch size.
fn times(a: Sym, b: Sym) -> Option<Sym> {
    (!(a.batch && b.batch)).then_some(Sym {
        coef: a.coef * b.coef,
        batch: a.batch || b.batch,
    })
}

/// Row-major strides of a shape.
pub fn contiguous(shape: &Shape) -> Vec<Sym> {
    row_major(&dims(shape))
}

/// Row-major strides for sizes (at most one of which involves the batch).
pub fn row_major(sizes: &[Sym]) -> Vec<Sym> {
    (0..sizes.len()).map(|i| product(&sizes[i + 1..])).collect()
}

/// Where a value's elements come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Base {
    /// Slot `i` of the pointer table: inputs, then parameters, then states.
    External(usize),
    /// A buffer of the arena.
    Buffer(BufferId),
    Const(f32),
    Hyper(usize),
    BatchSize,
}

/// A value as its base and a stride per axis of the value's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub base: Base,
    pub strides: Vec<Sym>,
}

impl View {
    pub fn is_contiguous(&self, shape: &Shape) -> bool {
        matches!(self.base, Base::External(_) | Base::Buffer(_))
            && self.strides == contiguous(shape)
    }

    pub fn is_scalar(&self) -> bool {
        matches!(self.base, Base::Const(_) | Base::Hyper(_) | Base::BatchSize)
    }
}

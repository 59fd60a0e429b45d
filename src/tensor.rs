//! Dense row-major tensors, generic over the float type, and what a step reads: shared by the
//! reference interpreter, compiled code and the runtime, so that neither engine depends on the
//! other.

use crate::shape::{Dim, Shape};
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// The float types the interpreter runs in: f32 (as training does) and f64 (for gradient checks).
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + Send
    + Sync
    + 'static
{
    /// Converts from f64, rounding as `as` does.
    fn of(x: f64) -> Self;
    /// Converts to f64 exactly.
    fn f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn floor(self) -> Self;
}

macro_rules! real {
    ($t:ty, $exp:path, $tanh:path) => {
        impl Real for $t {
            fn of(x: f64) -> Self {
                x as $t
            }
            fn f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                $exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                $tanh(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
        }
    };
}
// f32 uses netc's exponential and tanh, which compiled code reproduces exactly.
real!(f32, super::math::exp, super::math::tanh);
real!(f64, f64::exp, f64::tanh);

/// A tensor with concrete dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    pub dims: Vec<usize>,
    pub data: Vec<T>,
}

impl<T: Real> Tensor<T> {
    /// A tensor of `dims` filled with `value`.
    pub fn full(dims: &[usize], value: T) -> Tensor<T> {
        Tensor {
            dims: dims.to_vec(),
            data: vec![value; dims.iter().product()],
        }
    }

    /// A scalar.
    pub fn scalar(value: T) -> Tensor<T> {
        Tensor {
            dims: vec![],
            data: vec![value],
        }
    }

    /// Wraps data of the right length.
    pub fn new(dims: Vec<usize>, data: Vec<T>) -> Tensor<T> {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "tensor data does not fill {dims:?}"
        );
        Tensor { dims, data }
    }

    /// Converts to another float type.
    pub fn cast<U: Real>(&self) -> Tensor<U> {
        Tensor {
            dims: self.dims.clone(),
            data: self.data.iter().map(|&x| U::of(x.f64())).collect(),
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> T {
        self.data[0]
    }
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

/// Calls `f` with every multi-index of `dims`, in row-major order.
pub fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize])) {
    if dims.contains(&0) {
        return;
    }
    let mut index = vec![0; dims.len()];
    loop {
        f(&index);
        let mut axis = dims.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// What a graph reads: the batch size, the tensors it declares, the step's scalars, and the
/// seed of the step's random numbers.
pub struct Bindings<'a, T> {
    pub batch: usize,
    pub inputs: &'a [Tensor<T>],
    pub params: &'a [Tensor<T>],
    pub states: &'a [Tensor<T>],
    pub hypers: &'a [f64],
    pub seed: u64,
}

/// The concrete dimensions of a shape for a batch size.
pub fn dims(shape: &Shape, batch: usize) -> Vec<usize> {
    shape
        .0
        .iter()
        .map(|d| match d {
            Dim::Batch => batch,
            Dim::Fixed(n) => *n as usize,
        })
        .collect()
}

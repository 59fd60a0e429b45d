//! The calling convention between netc and its generated code: the entry point's and the
//! piece functions' parameters, and the Rust helpers the code imports, with their signatures.
//! `jit` binds the helpers and calls the entry point as `Entry`; `lower` reads the parameters
//! through `Params`.

use cranelift_codegen::ir::{types, AbiParam, Signature, Value};

/// The compiled step as Rust calls it, one link of its chain at a time (see `lower::lower`):
/// `(pointers, arena, batch, hypers, seed, context, link, pieces) -> iterations`. `pointers`
/// holds the bound inputs, then parameters, then states; `hypers` the step's scalars;
/// `context` what `netc_tick` records the run in.
pub type Entry = unsafe extern "C" fn(
    *const *const f32,
    *mut f32,
    i64,
    *const f32,
    i64,
    *mut std::ffi::c_void,
    i64,
    i64,
) -> i64;

/// A kernel's piece function: the entry point's first six arguments, then
/// `first, end, piece, worker`.
pub type PieceFn = unsafe extern "C" fn(
    *const *const f32,
    *mut f32,
    i64,
    *const f32,
    i64,
    *mut std::ffi::c_void,
    i64,
    i64,
    i64,
    i64,
);

/// The imported helpers, in the order `lower` expects their references.
pub const IMPORTS: [&str; 8] = [
    "netc_gemm",
    "netc_logf",
    "netc_tick",
    "netc_sinf",
    "netc_cosf",
    "netc_conv",
    "netc_conv_weight",
    "netc_rows",
];

/// An imported helper, by its position in `IMPORTS`.
#[derive(Clone, Copy)]
pub enum Import {
    Gemm,
    Logf,
    Tick,
    Sinf,
    Cosf,
    Conv,
    ConvWeight,
    Rows,
}

/// Signatures of the imported helpers, in `IMPORTS` order (one each: the array's length is
/// checked against it).
pub fn import_signatures(
    make: impl Fn() -> Signature,
    pointer: types::Type,
) -> [Signature; IMPORTS.len()] {
    let gemm = {
        let mut s = make();
        for ty in [
            types::I64,
            types::I64,
            types::I64,
            pointer,
            types::I64,
            pointer,
            types::I64,
            types::I64,
            pointer,
            types::I64,
            types::I64,
            types::I64,
        ] {
            s.params.push(AbiParam::new(ty));
        }
        s
    };
    let unary = {
        let mut s = make();
        s.params.push(AbiParam::new(types::F32));
        s.returns.push(AbiParam::new(types::F32));
        s
    };
    // (context, kernel)
    let tick = {
        let mut s = make();
        s.params.push(AbiParam::new(pointer));
        s.params.push(AbiParam::new(types::I64));
        s
    };
    // (input, its channel and image strides, weight, out, its strides, scratch, images, then
    // the geometry packed in four numbers: see `direct::packed`); the weight gradient's
    // (input, strides, sum, output gradient, strides, ...) alike.
    let conv = {
        let mut s = make();
        for ty in [
            pointer,
            types::I64,
            types::I64,
            pointer,
            pointer,
            types::I64,
            types::I64,
        ] {
            s.params.push(AbiParam::new(ty));
        }
        s.params.push(AbiParam::new(pointer));
        for _ in 0..5 {
            s.params.push(AbiParam::new(types::I64));
        }
        s
    };
    // (what, x, c, c's row, out, length): see `rows::netc_rows`.
    let rows = {
        let mut s = make();
        for ty in [
            types::I64,
            pointer,
            types::F32,
            pointer,
            pointer,
            types::I64,
        ] {
            s.params.push(AbiParam::new(ty));
        }
        s
    };
    [
        gemm,
        unary.clone(),
        tick,
        unary.clone(),
        unary,
        conv.clone(),
        conv,
        rows,
    ]
}

/// The signature of a kernel's piece function (`PieceFn`).
pub fn piece_signature(make: impl Fn() -> Signature, pointer: types::Type) -> Signature {
    let mut s = common_signature(make, pointer);
    for _ in ["first", "end", "piece", "worker"] {
        s.params.push(AbiParam::new(types::I64));
    }
    s
}

/// The entry point's signature (`Entry`).
pub fn entry_signature(make: impl Fn() -> Signature, pointer: types::Type) -> Signature {
    let mut s = common_signature(make, pointer);
    for _ in ["link", "pieces"] {
        s.params.push(AbiParam::new(types::I64));
    }
    s.returns.push(AbiParam::new(types::I64));
    s
}

/// The parameters every function of a step starts with:
/// `(pointers, arena, batch, hypers, seed, context)`.
fn common_signature(make: impl Fn() -> Signature, pointer: types::Type) -> Signature {
    let mut s = make();
    for ty in [pointer, pointer, types::I64, pointer, types::I64, pointer] {
        s.params.push(AbiParam::new(ty));
    }
    s
}

/// The entry point's parameters as values inside a function, and in a piece function the
/// piece's range of the split loop, the piece and the worker running it.
#[derive(Clone, Copy)]
pub struct Params {
    pub pointers: Value,
    pub arena: Value,
    pub batch: Value,
    pub hypers: Value,
    pub seed: Value,
    pub context: Value,
    /// Iterations `first..end` of the loop being emitted: a piece's, or an epilogue's on it.
    pub range: Option<[Value; 2]>,
    /// In a piece function: the piece (whose sums go to its own partial result) and the worker
    /// (whose scratch memory it uses).
    pub piece: Option<[Value; 2]>,
}

impl Params {
    /// The parameters of a function with the entry signature, or the piece signature when
    /// `piece`.
    pub fn of(values: &[Value], piece: bool) -> Params {
        Params {
            pointers: values[0],
            arena: values[1],
            batch: values[2],
            hypers: values[3],
            seed: values[4],
            context: values[5],
            range: piece.then(|| [values[6], values[7]]),
            piece: piece.then(|| [values[8], values[9]]),
        }
    }
}

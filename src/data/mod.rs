//! Data sets: Fashion-MNIST from its IDX files, CSV tables, and synthetic sets made from a seed.
//! Every problem with the data (a missing or malformed file, a bad record) is an E05xx
//! diagnostic naming the file and the record, never a panic.

mod csv;
mod idx;
mod synthetic;

use crate::diagnostics::{Code, Diagnostic};
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FMNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const FMNIST_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Examples: features and targets (class indices or real values), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub len: usize,
    /// One example's feature dimensions.
    pub feature_dims: Vec<usize>,
    pub features: Features,
    /// One example's target dimensions (`[]` for a class index).
    pub target_dims: Vec<usize>,
    pub targets: Vec<f32>,
    /// Where the examples came from (a file, or a synthetic set's name), for error messages.
    pub origin: String,
    /// The file line each example was read from, when it has lines (CSV); otherwise examples
    /// are named by their position in the file.
    pub lines: Vec<usize>,
}

impl Dataset {
    /// Names example `row` as its file does: "data.csv line 5", or "train-labels record 152".
    pub fn describe(&self, row: usize) -> String {
        match self.lines.get(row) {
            Some(line) => format!("{} line {line}", self.origin),
            None => format!("{} record {row}", self.origin),
        }
    }

    /// Elements per example of the features.
    pub fn feature_size(&self) -> usize {
        self.feature_dims.iter().product()
    }

    /// `--data none`'s one example, which holds no features (dimensions `[0]`) and no target.
    pub fn nothing() -> Dataset {
        Dataset {
            len: 1,
            feature_dims: vec![0],
            features: Features::F32(Vec::new()),
            target_dims: vec![0],
            targets: Vec::new(),
            origin: "no data (`--data none`)".into(),
            lines: Vec::new(),
        }
    }

    /// Whether this is `--data none`'s example.
    pub fn is_nothing(&self) -> bool {
        self.feature_dims == [0]
    }

    /// The first `n` examples (all of them when there are fewer).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len);
        Dataset {
            len: n,
            feature_dims: self.feature_dims.clone(),
            features: self.features.head(n * self.feature_size()),
            target_dims: self.target_dims.clone(),
            targets: self.targets[..n * self.target_size()].to_vec(),
            origin: self.origin.clone(),
            lines: self.lines.iter().take(n).copied().collect(),
        }
    }

    /// Elements per example of the targets.
    pub fn target_size(&self) -> usize {
        self.target_dims.iter().product()
    }
}

/// Feature values as stored. Images keep their pixels as bytes and are read as `byte / 255`,
/// the same f32 as dividing up front: an epoch's batches then read a quarter of the memory.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    F32(Vec<f32>),
    /// Bytes standing for `byte / 255`.
    Pixels(Vec<u8>),
}

impl Features {
    /// Values `start..start + out.len()` into `out`.
    pub fn copy_to(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Features::F32(values) => out.copy_from_slice(&values[start..end]),
            Features::Pixels(bytes) => {
                for (o, &b) in out.iter_mut().zip(&bytes[start..end]) {
                    *o = f32::from(b) / 255.0;
                }
            }
        }
    }

    /// Value `i`.
    pub fn get(&self, i: usize) -> f32 {
        let mut value = [0.0];
        self.copy_to(i, &mut value);
        value[0]
    }

    /// The first `n` values.
    fn head(&self, n: usize) -> Features {
        match self {
            Features::F32(values) => Features::F32(values[..n].to_vec()),
            Features::Pixels(bytes) => Features::Pixels(bytes[..n].to_vec()),
        }
    }
}

/// A training set and a held-out test set.
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
    /// Class names by index, when the source has them.
    pub class_names: Option<Vec<String>>,
}

/// A named data source, as given to `--data`.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Fmnist {
        dir: PathBuf,
    },
    Csv {
        path: PathBuf,
        target: String,
    },
    Linear,
    Beans,
    Xor,
    Separable,
    /// No data: for a model without inputs (an objective over its parameters), each epoch is
    /// one step on one example that holds nothing.
    Nothing,
}

impl Source {
    /// Reads `--data NAME` with the options that go with it.
    pub fn parse(
        name: &str,
        data_dir: Option<&Path>,
        target: Option<&str>,
    ) -> Result<Source, Diagnostic> {
        Ok(match name {
            "fmnist" | "fashion-mnist" => Source::Fmnist {
                dir: data_dir.map_or_else(|| PathBuf::from(FMNIST_DIR), Path::to_path_buf),
            },
            "linear" => Source::Linear,
            "beans" => Source::Beans,
            "xor" => Source::Xor,
            "separable" => Source::Separable,
            "none" => Source::Nothing,
            path if path.ends_with(".csv") => Source::Csv {
                path: PathBuf::from(path),
                target: target
                    .ok_or_else(|| {
                        Diagnostic::plain(
                            Code::E0506,
                            format!("{path}: which column is the target?"),
                        )
                        .with_help("name it with `--target COLUMN`")
                    })?
                    .to_string(),
            },
            other => return Err(Diagnostic::plain(
                Code::E0504,
                format!("unknown data source `{other}`"),
            )
            .with_note(
                "the sources are fmnist, linear, beans, xor, separable, none, or a path to a .csv file",
            )),
        })
    }

    /// The files the source reads (none for synthetic sets): a run must never write over them.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Source::Fmnist { dir } => idx::files(dir),
            Source::Csv { path, .. } => vec![path.clone()],
            Source::Linear | Source::Beans | Source::Xor | Source::Separable | Source::Nothing => {
                Vec::new()
            }
        }
    }

    /// Loads the source. Synthetic sets and the CSV split are drawn from `seed`.
    pub fn load(&self, seed: u64) -> Result<Split, Diagnostic> {
        match self {
            Source::Fmnist { dir } => idx::fashion_mnist(dir),
            Source::Csv { path, target } => csv::load(path, target, seed),
            Source::Linear => Ok(synthetic::linear(seed)),
            Source::Beans => Ok(synthetic::beans(seed)),
            Source::Xor => Ok(synthetic::xor()),
            Source::Separable => Ok(synthetic::separable(seed)),
            Source::Nothing => Ok(Split {
                train: Dataset::nothing(),
                test: Dataset::nothing(),
                class_names: None,
            }),
        }
    }
}

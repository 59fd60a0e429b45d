//! netc's one integration-test binary. Tests are data: a new `.net` file under `models/` or
//! `tests/ui/` is a new case.

mod cli;
mod data;
mod export;
mod gradcheck;
mod hostile;
mod jit;
mod models;
#[cfg(feature = "mpi")]
mod mpi;
mod mutate;
mod parallel;
mod plot;
mod step;
mod tidy;
mod train;
mod ui;

use netc::source::SourceFile;
use std::io::{Read, Write};
use std::path::Path;

/// True (with the skip printed) when Fashion-MNIST is missing and `NETC_SKIP_FMNIST=1` allows
/// skipping the tests that need it; a missing data set without that is a failure.
pub fn fmnist_missing() -> bool {
    let installed = Path::new(netc::data::FMNIST_DIR)
        .join("train-images-idx3-ubyte.gz")
        .exists();
    if installed {
        return false;
    }
    assert!(
        std::env::var_os("NETC_SKIP_FMNIST").is_some_and(|v| v == "1"),
        "Fashion-MNIST is not installed: run scripts/install-data, or set NETC_SKIP_FMNIST=1 to skip"
    );
    eprintln!("SKIPPED (NETC_SKIP_FMNIST=1): Fashion-MNIST is not installed");
    true
}

/// Reads a file as the CLI would, named by its path relative to the repository root so that
/// snapshots do not depend on where the checkout lives.
pub fn load(path: &Path) -> SourceFile {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    SourceFile::new(name, text)
}

/// The first `train` training and `test` test examples of Fashion-MNIST, as IDX files in `dir`.
pub fn fmnist_subset(dir: &Path, train: u32, test: u32) {
    for (split, count) in [("train", train), ("t10k", test)] {
        for (kind, header) in [("images-idx3", 16), ("labels-idx1", 8)] {
            let name = format!("{split}-{kind}-ubyte.gz");
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(
                std::fs::File::open(Path::new(netc::data::FMNIST_DIR).join(&name))
                    .expect("Fashion-MNIST is installed"),
            )
            .read_to_end(&mut bytes)
            .expect("a gzip file");
            let per_item: usize = if header == 16 { 28 * 28 } else { 1 };
            bytes[4..8].copy_from_slice(&count.to_be_bytes());
            bytes.truncate(header + per_item * count as usize);
            let mut out = flate2::write::GzEncoder::new(
                std::fs::File::create(dir.join(&name)).expect("writable"),
                flate2::Compression::fast(),
            );
            out.write_all(&bytes).expect("writes");
            out.finish().expect("writes");
        }
    }
}

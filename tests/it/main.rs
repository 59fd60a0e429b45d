//! netc's one integration-test binary. Tests are data: a new `.net` file under `models/` or
//! `tests/ui/` is a new case.

mod cli;
mod data;
mod export;
mod gradcheck;
mod hostile;
mod jit;
mod models;
mod mutate;
mod plot;
mod step;
mod tidy;
mod train;
mod ui;

use netc::source::SourceFile;
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

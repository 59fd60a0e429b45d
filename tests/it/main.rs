//! netc's one integration-test binary. Tests are data: a new `.net` file under `models/` or
//! `tests/ui/` is a new case.

mod cli;
mod data;
mod gradcheck;
mod jit;
mod models;
mod mutate;
mod step;
mod tidy;
mod train;
mod ui;

use netc::source::SourceFile;
use std::path::Path;

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

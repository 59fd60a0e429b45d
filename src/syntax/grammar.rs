//! The pest parser generated from `grammar/net.pest`. Its types never leave `syntax/`.

/// The generated parser.
#[derive(pest_derive::Parser)]
#[grammar = "../grammar/net.pest"]
pub struct NetParser;

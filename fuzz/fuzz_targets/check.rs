//! Fuzzes the front end: any text must parse and check without panicking, end with a checked
//! model or an error, and a checked model must lower to IR and print.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netc::source::SourceFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = SourceFile::new("fuzz.net", text);
    let (checked, diagnostics) = netc::front_end(&source);
    let _ = netc::diagnostics::render(&source, &diagnostics);
    match checked {
        Some((ast, model)) => {
            assert!(!netc::diagnostics::has_errors(&diagnostics));
            let _ = ast.to_string();
            let _ = netc::check::summary::summary(&model, &source);
            for mode in [netc::ir::Mode::Train, netc::ir::Mode::Eval] {
                let _ = netc::ir::build(&model, &source, mode).to_string();
            }
        }
        None => assert!(netc::diagnostics::has_errors(&diagnostics)),
    }
});

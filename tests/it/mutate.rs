//! Robustness: thousands of random mutations of the model files (characters deleted, inserted
//! and swapped, truncation, identifiers and numbers replaced with huge, negative, NaN-like and
//! non-ASCII ones). netc must never panic or hang, and must end either with a checked model —
//! which then lowers to IR and summarizes without trouble — or with at least one error.

use netc::diagnostics::{self, has_errors};
use netc::source::SourceFile;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// SplitMix64: a small, seedable generator so failures replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SNIPPETS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "=",
    "@",
    "*",
    "-",
    "+",
    "/",
    "#",
    "\n",
    " ",
    ".",
    "é",
    "名",
    "🙂",
    "\u{0}",
    "\t",
    "\r",
    "layers {",
    "dense(",
    "x",
    "0",
    "1e400",
    "relu",
    "loss mse",
    "param p: [3]",
    "input z: [2]",
    "y",
    "-1",
];
const IDENTS: &[&str] = &[
    "x",
    "y",
    "h",
    "o",
    "relu",
    "dense",
    "conv2d",
    "maxpool",
    "batchnorm",
    "dropout",
    "sgd",
    "adam",
    "mse",
    "cross_entropy",
    "loss",
    "net",
    "input",
    "flatten",
    "w1",
    "b1",
    "zzz",
    "名前",
    "_",
    "dense1.weight",
    "class",
    "true",
    "nan",
    "inf",
    "softmax",
    "sum",
    "reshape",
    "transpose",
    "xavier",
    "normal",
    "layers",
    "label",
    "target",
    "penalty",
    "l2",
    "accuracy",
    "units",
];
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e309",
    "99999999999999999999999",
    "nan",
    "inf",
    "-0",
    "0.5",
    "1e-300",
    "4294967296",
    "2147483648",
    "3",
    "7",
    "1",
    "2",
    "-5",
    "1.0",
    "100000",
    "9000000000000000",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(chars.len() + 1).min(chars.len());
        match rng.below(8) {
            0 => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                chars.drain(at..end);
            }
            1 => {
                let snippet: Vec<char> = rng.pick(SNIPPETS).chars().collect();
                chars.splice(at..at, snippet);
            }
            2 if !chars.is_empty() => {
                let (last, other) = (chars.len() - 1, rng.below(chars.len()));
                chars.swap(at.min(last), other);
            }
            3 => chars.truncate(at),
            4 | 5 => {
                // Replace the word (identifier or number) around a random position.
                let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
                let mut start = at.min(chars.len());
                while start > 0 && is_word(chars[start - 1]) {
                    start -= 1;
                }
                let mut end = start;
                while end < chars.len() && is_word(chars[end]) {
                    end += 1;
                }
                let table = if end > start && chars[start].is_ascii_digit() {
                    NUMBERS
                } else {
                    IDENTS
                };
                let word: Vec<char> = rng.pick(table).chars().collect();
                chars.splice(start..end, word);
            }
            6 => {
                // Duplicate a line.
                let text: String = chars.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                let line = lines.get(rng.below(lines.len())).copied().unwrap_or("");
                let copy: Vec<char> = format!("{line}\n").chars().collect();
                chars.splice(at..at, copy);
            }
            _ => {
                // Delete the line holding `at`.
                let start = chars[..at]
                    .iter()
                    .rposition(|&c| c == '\n')
                    .map_or(0, |i| i + 1);
                let end = chars[at..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |i| at + i + 1);
                chars.drain(start..end);
            }
        }
    }
    chars.into_iter().collect()
}

fn models() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("models/ exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    files.sort();
    files
}

/// Everything the CLI would do with the text, as one call.
fn compile_everything(text: &str) -> Result<(), String> {
    let source = SourceFile::new("mutant.net", text);
    let (checked, found) = netc::front_end(&source);
    let rendered = diagnostics::render(&source, &found);
    for diagnostic in &found {
        serde_json::from_str::<serde_json::Value>(&diagnostics::to_json(&source, diagnostic))
            .map_err(|e| e.to_string())?;
    }
    match checked {
        Some((ast, model)) => {
            if has_errors(&found) {
                return Err(format!("a checked model came with errors:\n{rendered}"));
            }
            let _ = ast.to_string();
            let _ = netc::check::summary::summary(&model, &source, None);
            for mode in [netc::ir::Mode::Train, netc::ir::Mode::Eval] {
                let _ = netc::ir::build(&model, &source, mode).to_string();
            }
        }
        None if !has_errors(&found) => return Err("rejected without an error".into()),
        None if !rendered.contains("error[E") => {
            return Err(format!("errors do not render:\n{rendered}"))
        }
        None => {}
    }
    Ok(())
}

#[test]
fn mutated_models_never_panic_or_hang() {
    const PER_MODEL: usize = 400;
    let mut rng = Rng(0x6e65_7463);
    let mut cases = 0;
    let mut accepted = 0;
    for path in models() {
        let original = std::fs::read_to_string(&path).expect("readable model");
        for case in 0..PER_MODEL {
            let text = mutate(&original, &mut rng);
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| compile_everything(&text)));
            let elapsed = started.elapsed();
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(why),
                Err(_) => Some("panicked".to_string()),
            };
            if let Some(why) = failure {
                panic!(
                    "mutation {case} of {}: {why}\n----- input\n{text}",
                    path.display()
                );
            }
            // A generous bound: any real hang would exceed it by orders of magnitude.
            assert!(
                elapsed < Duration::from_secs(5),
                "mutation {case} of {} took {elapsed:?}:\n{text}",
                path.display()
            );
            cases += 1;
            accepted += usize::from(
                netc::front_end(&SourceFile::new("m", text.as_str()))
                    .0
                    .is_some(),
            );
        }
    }
    assert!(cases >= 4000, "only {cases} mutations ran");
    // Both outcomes must be exercised, or the test proves little.
    assert!(
        accepted > cases / 50 && accepted < cases * 9 / 10,
        "{accepted} of {cases} mutants were accepted"
    );
}

/// A sample of mutants, some not even UTF-8, through the real binary: exit 0 or 1, never a
/// crash, and an error message whenever it is 1.
#[test]
fn the_binary_exits_zero_or_one_on_mutants() {
    let dir = std::env::temp_dir().join(format!("netc-mutants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng(42);
    let models = models();
    for case in 0..120 {
        let original =
            std::fs::read_to_string(&models[case % models.len()]).expect("readable model");
        let mut bytes = mutate(&original, &mut rng).into_bytes();
        if case % 10 == 0 && !bytes.is_empty() {
            let at = rng.below(bytes.len());
            bytes[at] = 0xff;
        }
        let file = dir.join(format!("case{case}.net"));
        std::fs::write(&file, &bytes).expect("write mutant");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_netc"))
            .args(["check", "--summary"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("netc starts");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                child.kill().ok();
                panic!("netc hung on {}", file.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
            .expect("stderr");
        match status.code() {
            Some(0) => {}
            Some(1) => assert!(
                stderr.contains("error"),
                "exit 1 without an error on {}:\n{stderr}",
                file.display()
            ),
            other => panic!("exit {other:?} on {}:\n{stderr}", file.display()),
        }
        assert!(!stderr.contains("panicked"), "{}: {stderr}", file.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

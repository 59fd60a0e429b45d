//! netc's fuzzer, on the stable toolchain: mutates model files, Fashion-MNIST IDX files, CSV
//! tables and checkpoints, and feeds each to the code that reads it (the front end and the
//! graph builders after it, the data loaders, the checkpoint reader). Any panic, abort or stack
//! overflow is a crash: its input is saved under `fuzz/crashes/` and the run fails.
//!
//! ```text
//! cargo run --release --example fuzz -- [--execs N] [--seed S] [--save-corpus]
//! ```
//!
//! The seeds are `models/`, `tests/ui/`, `tests/gradcheck/` and the data files in
//! `fuzz/seeds/`. Inputs that give an outcome not seen before (a new diagnostic, say) join the
//! corpus for later mutations, and `--save-corpus` keeps them in `fuzz/corpus/`. Mutations run
//! in a worker process, so that an abort cannot end the campaign: the supervisor reads the
//! input the worker was on from the file it wrote before running it (`/dev/shm/netc-fuzz/`)
//! and restarts it.

use netc::data::Source;
use netc::source::SourceFile;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

/// What is fuzzed, each with its own corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    Model,
    Idx,
    Csv,
    Checkpoint,
}

const TARGETS: [Target; 4] = [Target::Model, Target::Idx, Target::Csv, Target::Checkpoint];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Model => "model",
            Target::Idx => "idx",
            Target::Csv => "csv",
            Target::Checkpoint => "checkpoint",
        }
    }

    fn parse(name: &str) -> Option<Target> {
        TARGETS.into_iter().find(|t| t.name() == name)
    }

    /// Words mutations insert: tokens of the language, or interesting numbers and bytes.
    fn dictionary(self) -> &'static [&'static [u8]] {
        match self {
            Target::Model => &[
                b"net",
                b"input",
                b"label",
                b"target",
                b"param",
                b"layers",
                b"loss",
                b"optimizer",
                b"penalty",
                b"train",
                b"metric",
                b"{",
                b"}",
                b"(",
                b")",
                b"[",
                b"]",
                b",",
                b":",
                b"=",
                b"@",
                b"-",
                b"+",
                b"*",
                b"/",
                b"\n",
                b"#",
                b"0",
                b"1",
                b"-1",
                b"1e39",
                b"9007199254740993",
                b"18446744073709551616",
                b"0.5",
                b"1e-45",
                b"nan",
                b"N",
                b"dense(",
                b"conv2d(",
                b"maxpool(",
                b"batchnorm",
                b"dropout(",
                b"flatten",
                b"relu",
                b"softmax",
                b"sum(",
                b"mean(",
                b"reshape(",
                b"transpose(",
                b"exp(",
                b"cross_entropy",
                b"mse",
                b"sgd(lr: 0.1)",
                b"adam",
                b"class(10)",
                b"[784]",
                b"batch:",
                b"epochs:",
                b"axis:",
                b"init:",
                b"\xef\xbc\x9a",
                b"\xc3\xa9",
                b"\xef\xbb\xbf",
            ],
            Target::Csv => &[
                b",",
                b"\n",
                b"\r\n",
                b"\"",
                b"nan",
                b"inf",
                b"-0",
                b"1e40",
                b"",
                b" ",
                b"y",
                b"\xef\xbb\xbf",
                b"0",
                b"99999999999999999999",
            ],
            Target::Idx | Target::Checkpoint => &[
                &[0],
                &[0xff],
                &[0x80],
                &[0, 0, 0, 0],
                &[0xff, 0xff, 0xff, 0xff],
                &[0x7f, 0xff, 0xff, 0xff],
                &[0, 0, 8, 3],
                &[0, 0, 8, 1],
                &[0, 0, 0x10, 0],
                b"F16",
                b"F64",
                b"I64",
                b"NaN",
                b"\"step\":",
                b"18446744073709551615",
                b"netc-checkpoint-1",
                b"state.",
                b"}",
                b"{",
            ],
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let execs: u64 = flag("--execs").map_or(100_000, |v| v.parse().expect("--execs N"));
    let seed: u64 = flag("--seed").map_or(1, |v| v.parse().expect("--seed S"));
    let save_corpus = args.iter().any(|a| a == "--save-corpus");
    if args.iter().any(|a| a == "--write-seeds") {
        write_seeds();
        return;
    }
    if args.iter().any(|a| a == "--worker") {
        let dir = PathBuf::from(flag("--dir").expect("--dir DIR"));
        std::process::exit(worker(&dir, execs, seed, save_corpus));
    }
    std::process::exit(supervise(execs, seed, save_corpus));
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the fuzzer keeps its files: memory (`/dev/shm`) when there is one, since every
/// execution writes its input there first.
fn work_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.join("netc-fuzz")
    } else {
        root().join("target/fuzz")
    };
    std::fs::create_dir_all(&base).expect("the fuzzer's directory");
    base
}

/// Runs workers until `execs` inputs have been tried, restarting after each crash that
/// killed one. Returns the exit code: 1 when anything crashed.
fn supervise(execs: u64, seed: u64, save_corpus: bool) -> i32 {
    let started = std::time::Instant::now();
    let (mut done, mut crashes, mut round) = (0u64, 0u64, 0u64);
    // This campaign's files; its workers write theirs here too.
    let own = work_dir().join(std::process::id().to_string());
    std::fs::create_dir_all(&own).expect("the campaign's directory");
    let (progress, current) = (own.join("progress"), own.join("current"));
    while done < execs {
        std::fs::write(&progress, "0").expect("progress file");
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["--worker", "--execs", &(execs - done).to_string()])
            .arg("--dir")
            .arg(&own)
            .args(["--seed", &(seed + round * 7919).to_string()])
            .args(save_corpus.then_some("--save-corpus"))
            .status()
            .expect("worker starts");
        // "<executions> <panics>" of a worker that finished.
        let counts: Vec<u64> = std::fs::read_to_string(&progress)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let (finished, panics) = (
            counts.first().copied().unwrap_or(0),
            counts.get(1).copied().unwrap_or(0),
        );
        // The input a dead worker was on: "<exec> <target>\0<bytes>".
        let input = std::fs::read(&current).unwrap_or_default();
        let nul = input.iter().position(|&b| b == 0).unwrap_or(0);
        let head = String::from_utf8_lossy(&input[..nul]).into_owned();
        let (exec, target) = head.split_once(' ').unwrap_or(("0", "model"));
        let exec: u64 = exec.parse().unwrap_or(0);
        round += 1;
        match status.code() {
            // The worker saved and reported its panics.
            Some(0 | 1) => {
                done += finished;
                crashes += panics;
            }
            _ => {
                done += exec + 1;
                crashes += 1;
                let target = Target::parse(target).unwrap_or(Target::Model);
                let saved = save_crash(target, input.get(nul + 1..).unwrap_or_default());
                eprintln!(
                    "CRASH: the worker died ({status}); input saved as {}",
                    saved.display()
                );
            }
        }
    }
    std::fs::remove_dir_all(&own).ok();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {done} executions in {seconds:.0} s ({:.0}/s), {crashes} crashes",
        done as f64 / seconds
    );
    i32::from(crashes > 0)
}

/// One worker: mutates and runs inputs until `execs` are done. Returns 1 when an input
/// panicked (each is saved under `fuzz/crashes/`).
fn worker(own: &Path, execs: u64, seed: u64, save_corpus: bool) -> i32 {
    // Panics are reported by the loop below, once, with the input's name.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = own.join("files");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut corpora: Vec<(Target, Vec<Vec<u8>>)> = TARGETS.iter().map(|&t| (t, seeds(t))).collect();
    let mut outcomes: HashSet<(Target, String)> = HashSet::new();
    let checkpoint_model = checkpoint_model();
    let checkpoint = CheckpointTarget::new(&checkpoint_model);
    let idx_seeds = seeds(Target::Idx);
    let labels = idx_seeds
        .iter()
        .find(|s| s.get(3) == Some(&1))
        .expect("a labels seed");
    let pixels = idx_seeds
        .iter()
        .find(|s| s.get(3) == Some(&3))
        .expect("an images seed");
    let (current, progress) = (own.join("current"), own.join("progress"));
    let mut panicked = 0;
    for exec in 0..execs {
        let which = rng.random_range(0..corpora.len());
        let (target, corpus) = &corpora[which];
        let target = *target;
        let input = mutate(target, corpus, &mut rng);
        let mut record = format!("{exec} {}", target.name()).into_bytes();
        record.push(0);
        record.extend(&input);
        std::fs::write(&current, &record).expect("current input");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match target {
            Target::Model => run_model(&input),
            Target::Idx => run_idx(&dir, &input, labels, pixels),
            Target::Csv => run_csv(&dir, &input),
            Target::Checkpoint => checkpoint.run(&dir, &input),
        }));
        match outcome {
            Ok(outcome) => {
                if input.len() <= MAX_KEPT && outcomes.insert((target, outcome)) {
                    if save_corpus {
                        save_input(&root().join("fuzz/corpus").join(target.name()), &input);
                    }
                    corpora[which].1.push(input);
                }
            }
            Err(payload) => {
                panicked += 1;
                let saved = save_crash(target, &input);
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!(
                    "CRASH ({}): {message}; input saved as {}",
                    target.name(),
                    saved.display()
                );
            }
        }
        if exec % 1000 == 999 || exec + 1 == execs {
            std::fs::write(&progress, format!("{} {panicked}", exec + 1)).expect("progress");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    let sizes: Vec<String> = corpora
        .iter()
        .map(|(t, c)| format!("{} {}", t.name(), c.len()))
        .collect();
    eprintln!(
        "corpus: {}; {} distinct outcomes",
        sizes.join(", "),
        outcomes.len()
    );
    i32::from(panicked > 0)
}

/// The seed inputs of a target.
fn seeds(target: Target) -> Vec<Vec<u8>> {
    let files = |dir: &Path, ext: &str| -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    pending.push(path);
                } else if path.to_string_lossy().ends_with(ext) {
                    found.push(std::fs::read(path).expect("a seed"));
                }
            }
        }
        found
    };
    let r = root();
    let mut seeds = match target {
        Target::Model => [
            r.join("models"),
            r.join("tests/ui"),
            r.join("tests/gradcheck"),
        ]
        .iter()
        .flat_map(|d| files(d, ".net"))
        .collect(),
        Target::Idx => files(&r.join("fuzz/seeds"), ".idx"),
        Target::Csv => files(&r.join("fuzz/seeds"), ".csv"),
        Target::Checkpoint => files(&r.join("fuzz/seeds"), ".safetensors"),
    };
    seeds.extend(files(&r.join("fuzz/corpus").join(target.name()), ""));
    seeds.extend(files(&r.join("fuzz/crashes").join(target.name()), ""));
    assert!(!seeds.is_empty(), "no seeds for {}", target.name());
    seeds
}

/// The longest input tried: long enough for 10,000-deep expressions and lines of 50 KB.
const MAX_INPUT: usize = 1 << 16;

/// The longest input kept in the corpus, so mutations stay fast.
const MAX_KEPT: usize = 1 << 13;

/// A corpus entry with one to eight mutations stacked.
fn mutate(target: Target, corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut data = corpus.choose(rng).expect("a corpus").clone();
    for _ in 0..rng.random_range(1..=8) {
        let len = data.len();
        let at = |rng: &mut ChaCha8Rng| rng.random_range(0..=len);
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 => {
                let word = target.dictionary().choose(rng).expect("a word");
                let i = at(rng);
                data.splice(i..i, word.iter().copied());
            }
            3 if len > 0 => {
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..=16)).min(len);
                data.drain(start..end);
            }
            4 if len > 0 => {
                // Repeats a piece many times: long lines, deep nesting, large counts.
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..=8)).min(len);
                let piece = data[start..end].to_vec();
                let times = *[2, 16, 300, 5000].choose(rng).expect("a count");
                let repeated: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                data.splice(end..end, repeated);
            }
            5 => {
                // Splices in a piece of another corpus entry.
                let other = corpus.choose(rng).expect("a corpus");
                if !other.is_empty() {
                    let start = rng.random_range(0..other.len());
                    let end = (start + rng.random_range(1..=64)).min(other.len());
                    let i = at(rng);
                    data.splice(i..i, other[start..end].iter().copied());
                }
            }
            6 if len > 0 => data.truncate(rng.random_range(0..len)),
            _ if len >= 4 => {
                // Overwrites four bytes with an interesting big-endian number.
                let i = rng.random_range(0..=len - 4);
                let value: u32 = *[0, 1, 0x7fff_ffff, 0xffff_ffff, 60000, 1 << 24]
                    .choose(rng)
                    .expect("a value");
                data[i..i + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => data.push(rng.random()),
        }
    }
    data.truncate(MAX_INPUT);
    data
}

/// A short, stable name for what happened: `ok`, or the diagnostic's code and first words.
fn outcome(result: Result<(), netc::diagnostics::Diagnostic>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(d) => {
            // The message's plain words before the first quotation of the input (a name, a
            // field): what kind of problem it is, not which value caused it.
            let words: Vec<&str> = d
                .message
                .split_whitespace()
                .take_while(|w| !w.contains('`'))
                .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                .take(4)
                .collect();
            format!("{} {}", d.code.as_str(), words.join(" "))
        }
    }
}

/// The front end, then (for a model it accepts) every graph built from it.
fn run_model(input: &[u8]) -> String {
    let source = SourceFile::new("fuzz.net", String::from_utf8_lossy(input).into_owned());
    let (checked, diagnostics) = netc::front_end(&source);
    // Rendering must cope with any span and any line.
    let _ = netc::diagnostics::render(&source, &diagnostics);
    let mut codes: Vec<&str> = diagnostics.iter().map(|d| d.code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    match checked {
        Some((_, model)) => {
            // A model with an absurd (but checked) size is not worth building graphs for here.
            let small = model
                .params
                .iter()
                .all(|p| p.shape.elements_per_example() < 1 << 22);
            if small {
                let _ = netc::train_graph(&model, &source);
                let _ = netc::eval_graph(&model, &source);
            }
            format!("accepted {}", codes.join(" "))
        }
        None => format!("refused {}", codes.join(" ")),
    }
}

/// An IDX labels file (or, when it says so, an images file) among otherwise valid ones.
fn run_idx(dir: &Path, input: &[u8], labels: &[u8], pixels: &[u8]) -> String {
    let images = input.get(3) == Some(&3);
    let gzip = |bytes: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("compresses");
        encoder.finish().expect("compresses")
    };
    for prefix in ["train", "t10k"] {
        let (mutated, kept) = if images {
            (input, labels)
        } else {
            (input, pixels)
        };
        let (mutated_name, kept_name) = if images {
            ("images-idx3", "labels-idx1")
        } else {
            ("labels-idx1", "images-idx3")
        };
        // Half the time the gzip stream itself is what is broken.
        let bytes = if prefix == "t10k" && input.len() % 2 == 1 {
            mutated.to_vec()
        } else {
            gzip(mutated)
        };
        std::fs::write(dir.join(format!("{prefix}-{mutated_name}-ubyte.gz")), bytes)
            .expect("write");
        std::fs::write(
            dir.join(format!("{prefix}-{kept_name}-ubyte.gz")),
            gzip(kept),
        )
        .expect("write");
    }
    let loaded = Source::Fmnist {
        dir: dir.to_path_buf(),
    }
    .load(0)
    .map(|_| ());
    outcome(loaded)
}

fn run_csv(dir: &Path, input: &[u8]) -> String {
    let path = dir.join("table.csv");
    std::fs::write(&path, input).expect("write");
    outcome(
        Source::Csv {
            path,
            target: "y".into(),
        }
        .load(0)
        .map(|_| ()),
    )
}

/// The model whose checkpoints are fuzzed: dense layers, batchnorm state and Adam's moments.
fn checkpoint_model() -> (netc::check::Model, SourceFile) {
    let source = SourceFile::new(
        "fuzz.net",
        "net fuzz { input x: [2] target y: [1] layers { dense(3) batchnorm relu dense(1) } loss mse optimizer adam(lr: 0.01) }",
    );
    let model = netc::front_end(&source)
        .0
        .expect("the fuzzed model checks")
        .1;
    (model, source)
}

struct CheckpointTarget<'a> {
    session: std::cell::RefCell<netc::runtime::Session<'a>>,
}

impl<'a> CheckpointTarget<'a> {
    fn new(model: &'a (netc::check::Model, SourceFile)) -> Self {
        let session = netc::runtime::Session::new(&model.0, &model.1, 0).expect("a small model");
        CheckpointTarget {
            session: std::cell::RefCell::new(session),
        }
    }

    fn run(&self, dir: &Path, input: &[u8]) -> String {
        let path = dir.join("fuzz.safetensors");
        std::fs::write(&path, input).expect("write");
        outcome(self.session.borrow_mut().restore(&path).map(|_| ()))
    }
}

/// Writes the data seeds in `fuzz/seeds/`: ten 4×4 images with their labels (uncompressed;
/// the fuzzer compresses them), a CSV table, and a checkpoint of the fuzzed model.
fn write_seeds() {
    let dir = root().join("fuzz/seeds");
    std::fs::create_dir_all(&dir).expect("seeds dir");
    let idx = |magic: u32, dims: &[u32], data: &[u8]| {
        let mut bytes = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
        bytes.extend(data);
        bytes
    };
    let pixels: Vec<u8> = (0..160u32).map(|i| (i * 37 % 256) as u8).collect();
    std::fs::write(dir.join("images.idx"), idx(0x0803, &[10, 4, 4], &pixels)).expect("write");
    let labels: Vec<u8> = (0..10).collect();
    std::fs::write(dir.join("labels.idx"), idx(0x0801, &[10], &labels)).expect("write");
    std::fs::write(
        dir.join("table.csv"),
        "a,b,y\n1,2,3\n4.5,-6,7e-3\n\"8\",9,10\n0,0,0\n1,1,1\n",
    )
    .expect("write");
    let model = checkpoint_model();
    let session = netc::runtime::Session::new(&model.0, &model.1, 0).expect("a small model");
    session
        .save(&dir.join("checkpoint.safetensors"), 0)
        .expect("saves");
}

/// Saves an input under `dir`, named by its hash.
fn save_input(dir: &Path, input: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("corpus dir");
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let path = dir.join(format!("{hash:016x}"));
    std::fs::write(&path, input).expect("saved");
    path
}

fn save_crash(target: Target, input: &[u8]) -> PathBuf {
    save_input(&root().join("fuzz/crashes").join(target.name()), input)
}

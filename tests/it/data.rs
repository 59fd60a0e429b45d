//! Bad data gets an E05xx diagnostic naming the file and the record, never a panic. Each case
//! writes its broken file to a temporary directory.

use netc::data::Source;
use netc::diagnostics::{Code, Diagnostic};
use std::io::Write;
use std::path::{Path, PathBuf};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("netc-data-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write fixture");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

/// An IDX file: magic, dimensions, data.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

/// A tiny, valid Fashion-MNIST directory of `n` 2×2 images, into which cases then break things.
fn fmnist(name: &str, n: u32) -> Dir {
    let dir = Dir::new(name);
    for prefix in ["train", "t10k"] {
        dir.file(
            &format!("{prefix}-images-idx3-ubyte.gz"),
            &gzip(&idx(0x0803, &[n, 2, 2], &vec![128; 4 * n as usize])),
        );
        dir.file(
            &format!("{prefix}-labels-idx1-ubyte.gz"),
            &gzip(&idx(0x0801, &[n], &vec![3; n as usize])),
        );
    }
    dir
}

fn fmnist_error(dir: &Path) -> Diagnostic {
    Source::Fmnist {
        dir: dir.to_path_buf(),
    }
    .load(0)
    .expect_err("the data is broken")
}

fn expect(error: Diagnostic, code: Code, mentions: &[&str]) {
    assert_eq!(error.code, code, "{}", error.message);
    let text = format!("{} {:?} {:?}", error.message, error.notes, error.help);
    for m in mentions {
        assert!(text.contains(m), "`{m}` is not mentioned in: {text}");
    }
}

#[test]
fn a_valid_tiny_idx_set_loads() {
    let dir = fmnist("valid", 3);
    let split = Source::Fmnist { dir: dir.0.clone() }
        .load(0)
        .expect("valid data");
    assert_eq!(split.train.len, 3);
    assert_eq!(split.train.feature_dims, vec![1, 2, 2]);
    assert_eq!(split.train.features.get(0), 128.0 / 255.0);
}

#[test]
fn e0504_missing_files_hint_at_the_package() {
    let dir = Dir::new("missing");
    expect(
        fmnist_error(&dir.0),
        Code::E0504,
        &[
            "train-images-idx3-ubyte.gz",
            "dataset-fashion-mnist",
            "--data-dir",
        ],
    );
    expect(
        Source::parse("mnist2", None, None).expect_err("unknown"),
        Code::E0504,
        &["mnist2"],
    );
    let csv = Source::Csv {
        path: dir.0.join("none.csv"),
        target: "y".into(),
    };
    expect(
        csv.load(0).expect_err("missing"),
        Code::E0504,
        &["none.csv"],
    );
}

#[test]
fn e0505_broken_idx_files_are_named() {
    let dir = fmnist("magic", 3);
    dir.file(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx(0x0803, &[3], &[1, 2, 3])),
    );
    expect(
        fmnist_error(&dir.0),
        Code::E0505,
        &["train-labels-idx1-ubyte.gz", "magic"],
    );

    let dir = fmnist("truncated", 3);
    dir.file(
        "train-images-idx3-ubyte.gz",
        &gzip(&idx(0x0803, &[3, 2, 2], &[0; 9])),
    );
    expect(
        fmnist_error(&dir.0),
        Code::E0505,
        &["train-images-idx3-ubyte.gz", "record 2"],
    );

    let dir = fmnist("not-gzip", 3);
    dir.file("t10k-labels-idx1-ubyte.gz", b"plain text");
    expect(
        fmnist_error(&dir.0),
        Code::E0505,
        &["t10k-labels-idx1-ubyte.gz", "gzip"],
    );

    let dir = fmnist("lengths", 3);
    dir.file(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx(0x0801, &[2], &[1, 2])),
    );
    expect(fmnist_error(&dir.0), Code::E0505, &["do not match"]);

    let dir = fmnist("label", 3);
    dir.file(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx(0x0801, &[3], &[1, 12, 2])),
    );
    expect(fmnist_error(&dir.0), Code::E0505, &["record 1", "12"]);

    let dir = fmnist("empty", 3);
    dir.file("train-images-idx3-ubyte.gz", &gzip(&[]));
    expect(fmnist_error(&dir.0), Code::E0505, &["no IDX header"]);
}

#[test]
fn e0506_bad_csv_records_name_the_line_and_column() {
    let dir = Dir::new("csv");
    let load = |text: &str, target: &str| {
        let path = dir.file("table.csv", text.as_bytes());
        Source::Csv {
            path,
            target: target.into(),
        }
        .load(0)
        .expect_err("bad table")
    };
    expect(
        load("a,b,y\n1,2,3\n4,,6\n", "y"),
        Code::E0506,
        &["line 3", "`b`", "missing"],
    );
    expect(
        load("a,b,y\n1,2,3\n4,five,6\n", "y"),
        Code::E0506,
        &["line 3", "`b`", "five"],
    );
    expect(load("a,b,y\n1,2,3\n4,5\n", "y"), Code::E0506, &["line 3"]);
    expect(
        load("a,b,y\n1,2,3\n4,5,6\n", "price"),
        Code::E0506,
        &["price", "a, b, y"],
    );
    expect(load("a,b,y\n1,2,3\n", "y"), Code::E0506, &["at least 2"]);
    expect(
        load("a,b,y\n1,2,3\n4,5,inf\n", "y"),
        Code::E0506,
        &["line 3", "inf"],
    );
    expect(
        Source::parse("table.csv", None, None).expect_err("no target"),
        Code::E0506,
        &["--target"],
    );
}

#[test]
fn e0507_data_that_does_not_fit_the_model_points_at_the_declaration() {
    let (checked, _) = netc::front_end(&crate::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mlp.net"),
    ));
    let mlp = checked.expect("checks").1;
    let linear = Source::Linear.load(0).expect("synthetic");
    let error =
        netc::runtime::fits(&mlp, &linear.train).expect_err("2 features for an image model");
    expect(error.clone(), Code::E0507, &["[2]", "[1, 28, 28]"]);
    assert!(!error.labels.is_empty(), "points at the input declaration");

    let dir = Dir::new("classes");
    let source = netc::source::SourceFile::new(
        "classes.net",
        "net c { input x: [2] label y: class(3) layers { dense(3) } loss cross_entropy optimizer sgd(lr: 0.1) }",
    );
    let model = netc::front_end(&source).0.expect("checks").1;
    let path = dir.file("t.csv", b"a,b,y\n1,2,0\n3,4,7\n5,6,1\n7,8,2\n9,1,0\n");
    let split = Source::Csv {
        path,
        target: "y".into(),
    }
    .load(0)
    .expect("loads");
    let both = [
        netc::runtime::fits(&model, &split.train),
        netc::runtime::fits(&model, &split.test),
    ];
    let error = both
        .into_iter()
        .find_map(Result::err)
        .expect("label 7 is not a class of 3");
    // Named by the line of the file it stands on (3), not its place after shuffling.
    expect(error, Code::E0507, &["label 7", "0..3", "t.csv line 3"]);
}

#[test]
fn empty_sets_oversized_headers_and_trailing_data_are_refused() {
    let dir = fmnist("no-records", 3);
    dir.file("t10k-labels-idx1-ubyte.gz", &gzip(&idx(0x0801, &[0], &[])));
    expect(
        fmnist_error(&dir.0),
        Code::E0505,
        &["t10k-labels", "no records"],
    );

    // The header promises 2^32 · 2^32 · 2^32 bytes: refused from the header alone.
    let dir = fmnist("bomb", 3);
    let huge = u32::MAX;
    dir.file(
        "train-images-idx3-ubyte.gz",
        &gzip(&idx(0x0803, &[huge, huge, huge], &[0; 64])),
    );
    expect(
        fmnist_error(&dir.0),
        Code::E0505,
        &["train-images", "promises"],
    );

    let dir = fmnist("trailing", 3);
    dir.file(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx(0x0801, &[3], &[1, 2, 3, 4, 5])),
    );
    expect(fmnist_error(&dir.0), Code::E0505, &["more data than"]);

    let (checked, _) = netc::front_end(&crate::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/linreg.net"),
    ));
    let linreg = checked.expect("checks").1;
    let empty = Source::Linear.load(0).expect("synthetic").train.head(0);
    expect(
        netc::runtime::fits(&linreg, &empty).expect_err("empty"),
        Code::E0507,
        &["no examples"],
    );
}

#[test]
fn e0508_a_file_that_is_no_checkpoint_is_refused() {
    let dir = Dir::new("checkpoint");
    let source = netc::source::SourceFile::new(
        "tiny.net",
        "net tiny { input x: [2] target y: [1] layers { dense(1) } loss mse optimizer sgd(lr: 0.1) }",
    );
    let model = netc::front_end(&source).0.expect("checks").1;
    let mut session = netc::runtime::Session::new(&model, &source, 0).expect("fits in memory");
    let junk = dir.file("junk.safetensors", b"not a checkpoint at all");
    expect(
        session.restore(&junk).expect_err("junk"),
        Code::E0508,
        &["junk.safetensors", "not a netc checkpoint"],
    );
    expect(
        session
            .restore(&dir.0.join("absent.safetensors"))
            .expect_err("absent"),
        Code::E0508,
        &["absent.safetensors"],
    );
}

/// A real checkpoint of `tiny.net`, rewritten by `edit` (tensors by name, and the metadata).
fn edited_checkpoint(
    dir: &Dir,
    name: &str,
    edit: impl FnOnce(
        &mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
        &mut serde_json::Value,
    ),
) -> Result<netc::runtime::checkpoint::Checkpoint, Diagnostic> {
    let source = netc::source::SourceFile::new(
        "tiny.net",
        "net tiny { input x: [2] target y: [1] layers { dense(1) } loss mse optimizer adam(lr: 0.1) }",
    );
    let model = netc::front_end(&source).0.expect("checks").1;
    let mut session = netc::runtime::Session::new(&model, &source, 0).expect("fits in memory");
    let path = dir.0.join(name);
    session.save(&path, 0).expect("saves");
    let bytes = std::fs::read(&path).expect("saved");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("readable");
    let mut meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().expect("metadata")["netc"]).expect("json");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("readable");
    let mut named: Vec<_> = tensors
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut named, &mut meta);
    let views: Vec<_> = named
        .iter()
        .map(|(n, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .expect("consistent");
            (n.clone(), view)
        })
        .collect();
    let metadata = std::collections::HashMap::from([("netc".to_string(), meta.to_string())]);
    let encoded = safetensors::tensor::serialize(views, Some(metadata)).expect("encodes");
    std::fs::write(&path, encoded).expect("writes");
    session.restore(&path)
}

#[test]
fn e0508_every_field_of_a_checkpoint_is_validated() {
    let dir = Dir::new("fields");
    edited_checkpoint(&dir, "fine.safetensors", |_, _| {}).expect("an untouched checkpoint loads");
    let error = edited_checkpoint(&dir, "step.safetensors", |_, meta| {
        meta["step"] = serde_json::json!(u64::MAX);
    })
    .expect_err("a step past 2^53");
    expect(error, Code::E0508, &["damaged", "2^53"]);
    let error = edited_checkpoint(&dir, "epoch.safetensors", |_, meta| {
        meta["epoch"] = serde_json::json!(5);
    })
    .expect_err("5 epochs in 0 steps");
    expect(error, Code::E0508, &["damaged", "5 epochs"]);
    let error = edited_checkpoint(&dir, "f16.safetensors", |tensors, _| {
        let weight = tensors
            .iter_mut()
            .find(|t| t.0 == "dense1.weight")
            .expect("weight");
        weight.1 = safetensors::Dtype::F16;
        weight.3.truncate(weight.3.len() / 2);
    })
    .expect_err("half precision");
    expect(error, Code::E0508, &["dense1.weight", "F16", "F32"]);
    let error = edited_checkpoint(&dir, "nan.safetensors", |tensors, _| {
        let weight = tensors
            .iter_mut()
            .find(|t| t.0 == "dense1.weight")
            .expect("weight");
        weight.3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    })
    .expect_err("NaN weights");
    expect(error, Code::E0508, &["dense1.weight", "NaN", "index 1"]);
    let error = edited_checkpoint(&dir, "seed.safetensors", |_, meta| {
        meta["seed"] = serde_json::json!(-3);
    })
    .expect_err("a negative seed");
    expect(error, Code::E0508, &["`seed`"]);
    for batch in [
        serde_json::json!(0),
        serde_json::json!(1u64 << 40),
        serde_json::json!("8"),
    ] {
        let error = edited_checkpoint(&dir, "batch.safetensors", |_, meta| {
            meta["batch"] = batch.clone();
        })
        .expect_err("a batch size out of range");
        expect(error, Code::E0508, &["batch"]);
    }
}

//! The IDX format of (Fashion-)MNIST, gzipped: a big-endian magic number (0x0803 for images,
//! 0x0801 for labels), the dimensions, then bytes. Pixels are scaled to [0, 1].

use super::{error, Dataset, Features, Split, FMNIST_CLASSES};
use crate::diagnostics::{Code, Diagnostic};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Loads the 60000 training and 10000 test examples from `dir`.
pub fn fashion_mnist(dir: &Path) -> Result<Split, Diagnostic> {
    let train = pair(dir, "train")?;
    let test = pair(dir, "t10k")?;
    Ok(Split {
        train,
        test,
        class_names: Some(FMNIST_CLASSES.iter().map(|s| s.to_string()).collect()),
    })
}

fn pair(dir: &Path, prefix: &str) -> Result<Dataset, Diagnostic> {
    let images_path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let (image_dims, pixels) = read(&images_path, 0x0803)?;
    let (label_dims, labels) = read(&labels_path, 0x0801)?;
    if image_dims.len() != 3 || label_dims.len() != 1 || image_dims[0] != label_dims[0] {
        return Err(error(
            Code::E0505,
            format!(
                "{} and {} do not match",
                images_path.display(),
                labels_path.display()
            ),
        )
        .with_note(format!(
            "the images have dimensions {image_dims:?} and the labels {label_dims:?}"
        )));
    }
    if let Some(record) = labels.iter().position(|&l| l > 9) {
        return Err(error(
            Code::E0505,
            format!(
                "{}: label {} of record {record} is not a class 0..9",
                labels_path.display(),
                labels[record]
            ),
        ));
    }
    Ok(Dataset {
        len: label_dims[0],
        feature_dims: vec![1, image_dims[1], image_dims[2]],
        features: Features::Pixels(pixels),
        target_dims: vec![],
        targets: labels.iter().map(|&l| f32::from(l)).collect(),
    })
}

/// Reads one gzipped IDX file of unsigned bytes: its dimensions and data.
fn read(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>), Diagnostic> {
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        error(Code::E0504, format!("cannot open {name}: {e}"))
            .with_help("install the data set with `apt-get install dataset-fashion-mnist`, or point `--data-dir` at a directory holding the four IDX .gz files")
    })?;
    let mut bytes = Vec::new();
    GzDecoder::new(file).read_to_end(&mut bytes).map_err(|e| {
        error(
            Code::E0505,
            format!("{name} is not a readable gzip file: {e}"),
        )
    })?;
    let word = |i: usize| {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| {
        error(
            Code::E0505,
            format!("{name} is truncated: it has no IDX header"),
        )
    })?;
    if found != magic {
        return Err(error(
            Code::E0505,
            format!("{name} is not an IDX file of bytes: wrong magic number"),
        )
        .with_note(format!("expected 0x{magic:08x}, found 0x{found:08x}")));
    }
    let rank = (magic & 0xff) as usize;
    let dims: Vec<usize> = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            error(
                Code::E0505,
                format!("{name} is truncated inside its header"),
            )
        })?;
    let start = 4 * (rank + 1);
    let expected: usize = dims.iter().product();
    let data = &bytes[start.min(bytes.len())..];
    if data.len() != expected {
        let record = data.len() / expected.checked_div(dims[0].max(1)).unwrap_or(1).max(1);
        return Err(error(
            Code::E0505,
            format!(
                "{name} holds {} bytes of data but its header promises {expected}",
                data.len()
            ),
        )
        .with_note(format!(
            "the file ends inside record {record} of {}",
            dims[0]
        )));
    }
    Ok((dims, data.to_vec()))
}

//! The IDX format of (Fashion-)MNIST, gzipped: a big-endian magic number (0x0803 for images,
//! 0x0801 for labels), the dimensions, then bytes. Pixels are scaled to [0, 1].

use super::{Dataset, Features, Split, FMNIST_CLASSES};
use crate::diagnostics::{Code, Diagnostic};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    let [images_path, labels_path] = paths(dir, prefix);
    let (image_dims, pixels) = read(&images_path, 0x0803)?;
    let (label_dims, labels) = read(&labels_path, 0x0801)?;
    if image_dims.len() != 3 || label_dims.len() != 1 || image_dims[0] != label_dims[0] {
        return Err(Diagnostic::plain(
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
        return Err(Diagnostic::plain(
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
        origin: labels_path.display().to_string(),
        lines: Vec::new(),
    })
}

/// The images and labels files of one part (`train` or `t10k`), as Debian's package names them.
fn paths(dir: &Path, prefix: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
    ]
}

/// The four files of Fashion-MNIST in `dir`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    ["train", "t10k"]
        .iter()
        .flat_map(|prefix| paths(dir, prefix))
        .collect()
}

/// Reads one gzipped IDX file of unsigned bytes: its dimensions and data. The data is inflated
/// as it is read, no further than the header promises, after checking that promise against
/// the memory this process may use: a small file that inflates to gigabytes is refused early.
fn read(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>), Diagnostic> {
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        Diagnostic::plain(Code::E0504, format!("cannot open {name}: {e}"))
            .with_help("install the data set with `apt-get install dataset-fashion-mnist`, or point `--data-dir` at a directory holding the four IDX .gz files")
    })?;
    let mut stream = GzDecoder::new(std::io::BufReader::new(file));
    let unreadable = |e: std::io::Error| {
        Diagnostic::plain(
            Code::E0505,
            format!("{name} is not a readable gzip file: {e}"),
        )
    };
    // Fills `buffer`, or says how many bytes there were before the data ended.
    let mut fill = |buffer: &mut [u8]| -> Result<usize, Diagnostic> {
        let mut filled = 0;
        while filled < buffer.len() {
            match stream.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unreadable(e)),
            }
        }
        Ok(filled)
    };
    let mut word = [0u8; 4];
    if fill(&mut word)? < 4 {
        return Err(Diagnostic::plain(
            Code::E0505,
            format!("{name} is truncated: it has no IDX header"),
        ));
    }
    let found = u32::from_be_bytes(word);
    if found != magic {
        return Err(Diagnostic::plain(
            Code::E0505,
            format!("{name} is not an IDX file of bytes: wrong magic number"),
        )
        .with_note(format!("expected 0x{magic:08x}, found 0x{found:08x}")));
    }
    let rank = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        if fill(&mut word)? < 4 {
            return Err(Diagnostic::plain(
                Code::E0505,
                format!("{name} is truncated inside its header"),
            ));
        }
        dims.push(u32::from_be_bytes(word) as usize);
    }
    if dims[0] == 0 {
        return Err(Diagnostic::plain(
            Code::E0505,
            format!("{name} holds no records"),
        ));
    }
    let expected = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    crate::memory::ensure(expected, &format!("the {dims:?} bytes {name} promises")).map_err(
        |d| Diagnostic {
            code: Code::E0505,
            ..d
        },
    )?;
    let expected = expected.unwrap_or(0) as usize;
    let mut data = vec![0u8; expected];
    let got = fill(&mut data)?;
    if got < expected {
        let record = got / (expected / dims[0]).max(1);
        return Err(Diagnostic::plain(
            Code::E0505,
            format!("{name} holds {got} bytes of data but its header promises {expected}"),
        )
        .with_note(format!(
            "the file ends inside record {record} of {}",
            dims[0]
        )));
    }
    if fill(&mut word[..1])? > 0 {
        return Err(Diagnostic::plain(
            Code::E0505,
            format!("{name} holds more data than the {expected} bytes its header promises"),
        ));
    }
    Ok((dims, data))
}

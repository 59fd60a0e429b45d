//! Checkpoints: safetensors files holding the parameters under their `.net` names, the states
//! under `state.<name>`, and metadata (format, model name and hash, step, epoch, seed). Written
//! to a temporary name and renamed, so an interrupted save never leaves half a file.

use crate::check::model::MAX_BATCH;
use crate::diagnostics::{Code, Diagnostic};
use crate::ir::Graph;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// The `format` recorded in every checkpoint.
const FORMAT: &str = "netc-checkpoint-1";

/// Everything a run needs to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub model_hash: String,
    pub params: Vec<Tensor<f32>>,
    pub states: Vec<Tensor<f32>>,
    pub step: u64,
    pub epoch: u64,
    /// Steps done of the epoch after `epoch`, when the run stopped inside it.
    pub epoch_step: u64,
    /// The batch size of those steps (unknown in checkpoints from before it was recorded).
    pub batch: Option<u64>,
    pub seed: u64,
}

/// A stable hash of what a checkpoint must match: the training graph (architecture, parameter
/// names and shapes, optimizer), printed. FNV-1a, so it never changes between builds.
pub fn model_hash(train_graph: &Graph) -> String {
    let text = train_graph.to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Named f32 tensors in the safetensors format, with string metadata.
pub fn encode(
    tensors: &[(String, &Tensor<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), data)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, t.dims.clone(), data).expect("sizes agree"),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, metadata).map_err(|e| e.to_string())
}

/// Writes a checkpoint for `graph` atomically.
pub fn save(path: &Path, graph: &Graph, checkpoint: &Checkpoint) -> Result<(), Diagnostic> {
    let mut named: Vec<(String, &Tensor<f32>)> = Vec::new();
    for (decl, t) in graph.params.iter().zip(&checkpoint.params) {
        named.push((decl.name.clone(), t));
    }
    for (decl, t) in graph.states.iter().zip(&checkpoint.states) {
        named.push((format!("state.{}", decl.name), t));
    }
    // One metadata entry holding sorted JSON: a map of several entries would be written in
    // hash order, and the same run would not give the same bytes.
    let netc = serde_json::json!({
        "format": FORMAT,
        "model": graph.name,
        "model_hash": checkpoint.model_hash,
        "step": checkpoint.step,
        "epoch": checkpoint.epoch,
        "epoch_step": checkpoint.epoch_step,
        "batch": checkpoint.batch,
        "seed": checkpoint.seed,
    });
    let metadata = HashMap::from([("netc".to_string(), netc.to_string())]);
    let encoded = encode(&named, Some(metadata)).map_err(|e| {
        Diagnostic::plain(Code::E0508, format!("cannot encode the checkpoint: {e}"))
    })?;
    write_atomically(path, &encoded).map_err(|e| {
        Diagnostic::plain(Code::E0508, format!("cannot write {}: {e}", path.display()))
    })
}

/// Checks that a checkpoint can be written at `path` (its directory exists and takes files,
/// and it is not a directory), without touching any file already there.
pub fn probe(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        ));
    }
    let temporary = partial(path);
    std::fs::File::create(&temporary)?;
    std::fs::remove_file(&temporary)
}

/// The temporary name a checkpoint is written under before it is renamed.
fn partial(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    name.into()
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk, then renames it over
/// `path`: a reader sees the old file or the new one, never half of one. The temporary name is
/// the same every time, so a save that was killed leaves nothing behind once one succeeds.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = partial(path);
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Reads a checkpoint and checks it was saved from `graph`'s model.
pub fn load(path: &Path, graph: &Graph, expected_hash: &str) -> Result<Checkpoint, Diagnostic> {
    let name = path.display();
    let buffer = std::fs::read(path)
        .map_err(|e| Diagnostic::plain(Code::E0508, format!("cannot read {name}: {e}")))?;
    let not_ours = |why: String| {
        Diagnostic::plain(
            Code::E0508,
            format!("{name} is not a netc checkpoint: {why}"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(&buffer).map_err(|e| not_ours(e.to_string()))?;
    let meta: serde_json::Value = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("netc"))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    if meta["format"] != FORMAT {
        return Err(not_ours("it has no netc metadata".into()));
    }
    let tensors = SafeTensors::deserialize(&buffer).map_err(|e| not_ours(e.to_string()))?;
    let corrupt =
        |what: String| Diagnostic::plain(Code::E0508, format!("{name} is damaged")).with_note(what);
    let mismatch = |what: String| {
        Diagnostic::plain(
            Code::E0508,
            format!("{name} was saved from a different model"),
        )
        .with_note(what)
        .with_help("use the checkpoint saved from this model file")
    };
    let read =
        |tensor_name: &str, shape: &crate::shape::Shape| -> Result<Tensor<f32>, Diagnostic> {
            let dims = crate::tensor::dims(shape, 1);
            let view = tensors
                .tensor(tensor_name)
                .map_err(|_| mismatch(format!("the checkpoint has no tensor `{tensor_name}`")))?;
            if view.dtype() != Dtype::F32 {
                return Err(corrupt(format!(
                    "`{tensor_name}` holds {:?} values, but netc checkpoints hold F32",
                    view.dtype()
                )));
            }
            if view.shape() != dims.as_slice() {
                return Err(mismatch(format!(
                    "`{tensor_name}` has shape {:?} in the checkpoint but {dims:?} in the model",
                    view.shape()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(at) = data.iter().position(|v| !v.is_finite()) {
                return Err(corrupt(format!(
                    "`{tensor_name}` holds {} at index {at}: a checkpoint's values are finite",
                    data[at]
                )));
            }
            Ok(Tensor::new(dims, data))
        };
    let params = graph
        .params
        .iter()
        .map(|d| read(&d.name, &d.shape))
        .collect::<Result<Vec<_>, _>>()?;
    let states = graph
        .states
        .iter()
        .map(|d| read(&format!("state.{}", d.name), &d.shape))
        .collect::<Result<Vec<_>, _>>()?;
    let found_hash = meta["model_hash"].as_str().unwrap_or_default().to_string();
    if found_hash != expected_hash {
        return Err(mismatch(format!(
            "the parameters match, but the model's layers, functions or optimizer differ (model hash {found_hash} in the checkpoint, {expected_hash} now)"
        )));
    }
    let number = |key: &str| {
        meta[key]
            .as_u64()
            .ok_or_else(|| not_ours(format!("`{key}` is missing or not a whole number")))
    };
    let (step, epoch, seed) = (number("step")?, number("epoch")?, number("seed")?);
    // Checkpoints from before mid-epoch saves have no `epoch_step`.
    let epoch_step = match meta.get("epoch_step") {
        None => 0,
        Some(_) => number("epoch_step")?,
    };
    // Checkpoints from before batch sizes were recorded have no `batch`.
    let batch = match meta.get("batch") {
        None | Some(serde_json::Value::Null) => None,
        Some(_) => match number("batch")? {
            b @ 1..=MAX_BATCH => Some(b),
            b => {
                return Err(corrupt(format!(
                    "its batch size is {b}, not between 1 and {MAX_BATCH}"
                )))
            }
        },
    };
    if step > super::MAX_STEP {
        return Err(corrupt(format!(
            "its step is {step}, past the last step a run may reach (2^53)"
        )));
    }
    if epoch > step || epoch_step > step {
        return Err(corrupt(format!(
            "it claims {epoch} epochs and {epoch_step} steps into the next in only {step} steps"
        )));
    }
    Ok(Checkpoint {
        model_hash: found_hash,
        params,
        states,
        step,
        epoch,
        epoch_step,
        batch,
        seed,
    })
}

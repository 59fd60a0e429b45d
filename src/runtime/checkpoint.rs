//! Checkpoints: safetensors files holding the parameters under their `.net` names, the states
//! under `state.<name>`, and metadata (format, model name and hash, step, epoch, seed). Written
//! to a temporary name and renamed, so an interrupted save never leaves half a file.

use crate::data::error;
use crate::diagnostics::{Code, Diagnostic};
use crate::interp::Tensor;
use crate::ir::Graph;
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

fn bytes(t: &Tensor<f32>) -> Vec<u8> {
    t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a checkpoint for `graph` atomically.
pub fn save(path: &Path, graph: &Graph, checkpoint: &Checkpoint) -> Result<(), Diagnostic> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (decl, t) in graph.params.iter().zip(&checkpoint.params) {
        named.push((decl.name.clone(), t.dims.clone(), bytes(t)));
    }
    for (decl, t) in graph.states.iter().zip(&checkpoint.states) {
        named.push((format!("state.{}", decl.name), t.dims.clone(), bytes(t)));
    }
    let views: Vec<(String, TensorView)> = named
        .iter()
        .map(|(name, dims, data)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, dims.clone(), data).expect("sizes agree"),
            )
        })
        .collect();
    // One metadata entry holding sorted JSON: a map of several entries would be written in
    // hash order, and the same run would not give the same bytes.
    let netc = serde_json::json!({
        "format": FORMAT,
        "model": graph.name,
        "model_hash": checkpoint.model_hash,
        "step": checkpoint.step,
        "epoch": checkpoint.epoch,
        "seed": checkpoint.seed,
    });
    let metadata = HashMap::from([("netc".to_string(), netc.to_string())]);
    let encoded = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| error(Code::E0508, format!("cannot encode the checkpoint: {e}")))?;
    let temporary = path.with_extension("safetensors.partial");
    let write =
        std::fs::write(&temporary, encoded).and_then(|()| std::fs::rename(&temporary, path));
    write.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        error(Code::E0508, format!("cannot write {}: {e}", path.display()))
    })
}

/// Reads a checkpoint and checks it was saved from `graph`'s model.
pub fn load(path: &Path, graph: &Graph, expected_hash: &str) -> Result<Checkpoint, Diagnostic> {
    let name = path.display();
    let buffer =
        std::fs::read(path).map_err(|e| error(Code::E0508, format!("cannot read {name}: {e}")))?;
    let not_ours = |why: String| {
        error(
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
    let read = |tensor_name: &str, dims: Vec<usize>| -> Result<Tensor<f32>, String> {
        let view = tensors
            .tensor(tensor_name)
            .map_err(|_| format!("the checkpoint has no tensor `{tensor_name}`"))?;
        if view.shape() != dims.as_slice() || view.dtype() != Dtype::F32 {
            return Err(format!(
                "`{tensor_name}` has shape {:?} in the checkpoint but {dims:?} in the model",
                view.shape()
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Tensor::new(dims, data))
    };
    let mismatch = |what: String| {
        error(
            Code::E0508,
            format!("{name} was saved from a different model"),
        )
        .with_note(what)
        .with_help("use the checkpoint saved from this model file")
    };
    let params = graph
        .params
        .iter()
        .map(|d| read(&d.name, crate::interp::dims(&d.shape, 1)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(mismatch)?;
    let states = graph
        .states
        .iter()
        .map(|d| {
            read(
                &format!("state.{}", d.name),
                crate::interp::dims(&d.shape, 1),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(mismatch)?;
    let found_hash = meta["model_hash"].as_str().unwrap_or_default().to_string();
    if found_hash != expected_hash {
        return Err(mismatch(format!(
            "the parameters match, but the model's layers, functions or optimizer differ (model hash {found_hash} in the checkpoint, {expected_hash} now)"
        )));
    }
    let number = |key: &str| {
        meta[key]
            .as_u64()
            .ok_or_else(|| not_ours(format!("`{key}` is missing")))
    };
    Ok(Checkpoint {
        model_hash: found_hash,
        params,
        states,
        step: number("step")?,
        epoch: number("epoch")?,
        seed: number("seed")?,
    })
}

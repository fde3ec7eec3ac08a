//! The model file: a self-describing container, so that `--model FILE` needs
//! nothing else to run.
//!
//! ```text
//! "LEUKOMDL" | u32 LE format version (2) | u64 LE header length | header (JSON) | weights (burnpack)
//!            | u64 LE FNV-1a-64 of every byte before it
//! ```
//! The header holds the network shape, the classes in output order, the input
//! the network expects, and how it was trained; the weights are burn's own record. The
//! checksum catches a damaged file (a flipped bit changes the hash whatever its position);
//! version 1 files, written before it, have none and still load. Every header value is checked
//! against its range ([`validate_meta`]) before anything runs with it.

use super::{LeukoNet, NetConfig};
use crate::data::ClassLabel;
use crate::error::{LeukoError, Result};
use crate::isolate::IsolationConfig;
use crate::preprocess::InputConfig;
use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &[u8; 8] = b"LEUKOMDL";
const FORMAT_VERSION: u32 = 2;
/// Files of this version carry no checksum.
const UNCHECKED_VERSION: u32 = 1;

/// Headers are small JSON; anything larger is a corrupt length field.
const MAX_HEADER: u64 = 1 << 20;

/// The model a fine-tuned model started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentModel {
    /// "embedded default model" or the file's path.
    pub name: String,
    /// FNV-1a 64-bit hash of the parent's file bytes, in hex.
    pub fnv1a64: String,
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl ParentModel {
    pub fn of(name: &str, bytes: &[u8]) -> ParentModel {
        ParentModel {
            name: name.to_string(),
            fnv1a64: format!("{:016x}", fnv1a64(bytes)),
        }
    }
}

/// What a model file says about its network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub net: NetConfig,
    /// Output order of the network.
    pub classes: Vec<ClassLabel>,
    pub input: InputConfig,
    /// The isolation settings the training photos were cut with; prediction uses the same.
    /// Files written before this field existed were trained with the defaults.
    #[serde(default)]
    pub isolation: IsolationConfig,
    /// Name of the experiment that trained it.
    pub experiment: String,
    pub seed: u64,
    /// Epoch whose weights these are (1-based).
    pub epoch: usize,
    /// Confidence below which a prediction is flagged for review (chosen on validation data).
    #[serde(default)]
    pub review_threshold: Option<f32>,
    /// Class frequencies of the training part (in `classes` order) when the
    /// network was trained on an oversampled, balanced set; its outputs are
    /// re-weighted by them at prediction time (see [`crate::infer::Prior`]).
    /// `None`: the outputs already carry the training frequencies.
    #[serde(default)]
    pub class_prior: Option<Vec<f32>>,
    /// The model this one was fine-tuned from (`leuko train --init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentModel>,
    /// The data it was trained on (the BCCD folder, or the labels CSV / class folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<String>,
    /// What the training photos look like, to flag photos unlike them (`None` in files written
    /// before it was recorded: no photo is then called unfamiliar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub familiarity: Option<crate::familiar::Familiarity>,
}

/// Serialises a model and its description.
pub fn model_to_bytes(model: &LeukoNet, meta: &ModelMeta) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(meta).map_err(|e| LeukoError::Invalid(e.to_string()))?;
    let weights = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| LeukoError::Invalid(format!("cannot serialise the weights: {e}")))?;
    let mut out = Vec::with_capacity(28 + header.len() + weights.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&weights);
    let sum = fnv1a64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Writes a model file atomically.
pub fn save_model(path: &Path, model: &LeukoNet, meta: &ModelMeta) -> Result<()> {
    crate::fsutil::write_atomic(path, &model_to_bytes(model, meta)?)
}

/// Reads the header only.
pub fn read_meta(bytes: &[u8]) -> std::result::Result<(ModelMeta, &[u8]), String> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("not a leuko model file (no LEUKOMDL signature)".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| "truncated")?);
    let bytes = match version {
        FORMAT_VERSION => {
            if bytes.len() < 28 {
                return Err("truncated file (no checksum)".into());
            }
            let (body, tail) = bytes.split_at(bytes.len() - 8);
            let stored = u64::from_le_bytes(tail.try_into().map_err(|_| "truncated")?);
            if fnv1a64(body) != stored {
                return Err(
                    "checksum mismatch: the file is damaged (changed bytes or an \
                            incomplete copy); copy or train it again"
                        .into(),
                );
            }
            body
        }
        UNCHECKED_VERSION => bytes,
        _ => {
            return Err(format!(
                "model format version {version}, this leuko reads versions {UNCHECKED_VERSION} \
                 and {FORMAT_VERSION}"
            ))
        }
    };
    let len = u64::from_le_bytes(bytes[12..20].try_into().map_err(|_| "truncated")?);
    if len > MAX_HEADER || 20 + len as usize > bytes.len() {
        return Err("truncated or corrupt header".into());
    }
    let header = &bytes[20..20 + len as usize];
    let meta: ModelMeta =
        serde_json::from_slice(header).map_err(|e| format!("corrupt header: {e}"))?;
    validate_meta(&meta)?;
    Ok((meta, &bytes[20 + len as usize..]))
}

/// Checks every header value against its range; the message names the field. Every command
/// that loads a model goes through it ([`read_meta`]).
pub fn validate_meta(meta: &ModelMeta) -> std::result::Result<(), String> {
    meta.net
        .validate()
        .map_err(|e| format!("incompatible configuration: {e}"))?;
    if meta.classes.len() != meta.net.num_classes {
        return Err(format!(
            "incompatible configuration: {} classes listed for a network with {} outputs",
            meta.classes.len(),
            meta.net.num_classes
        ));
    }
    if let Some(prior) = &meta.class_prior {
        // Weights for other classes, or ones that are not frequencies, would
        // silently skew every prediction.
        if prior.len() != meta.classes.len()
            || prior.iter().any(|p| !p.is_finite() || *p < 0.0)
            || prior.iter().sum::<f32>() <= 0.0
        {
            return Err(format!(
                "corrupt header: class_prior {prior:?} is not one non-negative frequency per \
                 class ({} classes)",
                meta.classes.len()
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = meta.classes.iter().find(|c| !seen.insert(**c)) {
        return Err(format!("corrupt header: class {c} is listed twice"));
    }
    meta.input
        .validate()
        .map_err(|e| format!("corrupt header: {e}"))?;
    let (w, h) = meta.input.dims();
    let min = 1u32 << meta.net.blocks.len().min(31);
    if w < min || h < min {
        return Err(format!(
            "incompatible configuration: input {w}x{h} is too small for {} blocks",
            meta.net.blocks.len()
        ));
    }
    meta.isolation
        .validate()
        .map_err(|e| format!("corrupt header: isolation: {e}"))?;
    if let Some(t) = meta.review_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(format!(
                "corrupt header: review_threshold {t} is not a probability"
            ));
        }
    }
    if let Some(f) = &meta.familiarity {
        f.validate()
            .map_err(|e| format!("corrupt header: familiarity: {e}"))?;
    }
    Ok(())
}

/// Decodes a model from bytes; `origin` names the source in messages.
pub fn model_from_bytes(
    bytes: &[u8],
    origin: &str,
    device: &Device,
) -> Result<(LeukoNet, ModelMeta)> {
    let bad = |message: String| LeukoError::Invalid(format!("{origin}: {message}"));
    let (meta, weights) = read_meta(bytes).map_err(bad)?;
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(
        weights.to_vec(),
    ))
    .map_err(|e| bad(format!("corrupt or truncated weights: {e}")))?;
    let model = meta.net.init(device);
    let model = model.try_load_record(record).map_err(|e| {
        bad(format!(
            "weights do not fit the network described in the header (incompatible configuration): {e}"
        ))
    })?;
    Ok((model, meta))
}

/// Loads a model file.
pub fn load_model(path: &Path, device: &Device) -> Result<(LeukoNet, ModelMeta)> {
    let bytes = std::fs::read(path).map_err(|e| LeukoError::io(path, e))?;
    model_from_bytes(&bytes, &path.display().to_string(), device)
}

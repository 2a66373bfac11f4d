//! What every foreign weight format shares: reading a file with
//! burn-store's readers, the errors that name a key, memlab's own tensors
//! in PyTorch's layout, applying tensors to a model, and writing a
//! `.safetensors`. The formats ([`crate::lm_rmt`], [`crate::hf_gpt2`])
//! hold only their key tables and layouts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{Module, ParamId};
use burn::prelude::*;
use burn_store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore, TensorSnapshot,
};

/// A weight file's tensors by key, as burn-store reads them.
pub type Weights = BTreeMap<String, TensorSnapshot>;

/// A weight file that cannot be read or does not fit the model.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightError {
    /// The file is absent, truncated or not in the format its name says.
    Read(String),
    /// Keys the model needs that the file lacks.
    Missing(Vec<String>),
    /// Keys of the file that have no place in the model.
    Unknown(Vec<String>),
    /// A key whose shape is not the model's.
    Shape {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A key whose values contradict the model (a buffer, a tied weight).
    Value { key: String, why: String },
    /// The model or its config has no counterpart in the format.
    Unsupported(String),
}

impl std::fmt::Display for WeightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightError::Read(why) => write!(f, "{why}"),
            WeightError::Missing(keys) => write!(
                f,
                "the weights lack {} the model needs: {}",
                plural(keys.len(), "key"),
                keys.join(", ")
            ),
            WeightError::Unknown(keys) => write!(
                f,
                "the weights hold {} with no place in the model built from the config \
                 (another size or architecture?): {}",
                plural(keys.len(), "key"),
                keys.join(", ")
            ),
            WeightError::Shape {
                key,
                expected,
                found,
            } => write!(
                f,
                "`{key}` has shape {found:?} in the weights but {expected:?} in the model built \
                 from the config (a model of other sizes?)"
            ),
            WeightError::Value { key, why } => write!(f, "`{key}`: {why}"),
            WeightError::Unsupported(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for WeightError {}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Reads a weight file: a `torch.save` state_dict (`.pt`,
/// `.pth`, `.bin`) or a `.safetensors`, with burn-store's readers.
pub fn read_weights(path: &Path) -> Result<Weights, WeightError> {
    if !path.is_file() {
        return Err(WeightError::Read(format!(
            "weight file {} does not exist",
            path.display()
        )));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let fail = |e: &dyn std::fmt::Display| {
        WeightError::Read(format!(
            "{} is truncated or not a {ext} file: {e}",
            path.display()
        ))
    };
    match ext.as_str() {
        // Keys as the file has them: not renumbered (`CoreNet.3` stays 3).
        "pt" | "pth" | "bin" => PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_snapshots()
            .cloned()
            .map_err(|e| fail(&e)),
        "safetensors" => SafetensorsStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_snapshots()
            .cloned()
            .map_err(|e| fail(&e)),
        _ => Err(WeightError::Read(format!(
            "{}: unknown weight format (expected .pt, .pth, .bin or .safetensors)",
            path.display()
        ))),
    }
}

/// Host values of a tensor, f32, row-major.
pub(crate) struct Values {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

impl Values {
    pub(crate) fn of(key: &str, snapshot: &TensorSnapshot) -> Result<Self, WeightError> {
        let data = snapshot.to_data().map_err(|e| WeightError::Value {
            key: key.into(),
            why: format!("cannot be read: {e:?}"),
        })?;
        let shape = data.shape.to_vec();
        let data = data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| WeightError::Value {
                key: key.into(),
                why: format!("cannot be read as floats: {e:?}"),
            })?;
        Ok(Self { shape, data })
    }

    pub(crate) fn snapshot(self, path: &str) -> TensorSnapshot {
        TensorSnapshot::from_data(
            TensorData::new(self.data, self.shape),
            path.split('.').map(String::from).collect(),
            Vec::new(),
            ParamId::new(),
        )
    }
}

/// memlab's own parameters in PyTorch's layout, by path.
pub(crate) fn own_snapshots<B: Backend, M: Module<B>>(
    model: &M,
) -> BTreeMap<String, TensorSnapshot> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .map(|s| (s.full_path(), s))
        .collect()
}

/// A tensor under a foreign format's key, in that format's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct OfficialTensor {
    pub key: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Applies `snapshots` (PyTorch's layout, memlab's paths) to `model`; every
/// one must land, or the format's table does not cover the model (a memlab
/// bug, named as such).
pub(crate) fn apply_all<B: Backend, M: Module<B>>(
    model: M,
    snapshots: Vec<TensorSnapshot>,
    format: &str,
) -> Result<M, WeightError> {
    apply_all_but(model, snapshots, format, |_| false)
}

/// [`apply_all`], where the model's parameters that `new` names (memory a
/// pre-trained model does not have) keep their initial values.
pub(crate) fn apply_all_but<B: Backend, M: Module<B>>(
    mut model: M,
    snapshots: Vec<TensorSnapshot>,
    format: &str,
    new: impl Fn(&str) -> bool,
) -> Result<M, WeightError> {
    let count = snapshots.len();
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    let missing = result.missing.iter().any(|(path, _)| !new(path));
    // burn-store lists a LayerNorm `weight`/`bias` found under its Burn
    // name (`gamma`/`beta`) as unused though it applied it: count instead.
    if !result.errors.is_empty() || missing || result.applied.len() != count {
        return Err(WeightError::Unsupported(format!(
            "the {format} weights do not cover the memlab model: errors {:?}, not loaded {:?}, \
             unused {:?}",
            result
                .errors
                .iter()
                .map(|e| format!("{e}"))
                .collect::<Vec<_>>(),
            result.missing.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            result.unused
        )));
    }
    Ok(model)
}

/// `tensors` as the bytes of a `.safetensors` file (f32), with `metadata`.
pub(crate) fn encode_safetensors(
    tensors: Vec<OfficialTensor>,
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>, WeightError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|t| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.key, bytes, t.shape)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(key, data, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (key.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WeightError::Read(format!("cannot encode the weights: {e}")))?;
    let metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| WeightError::Read(format!("cannot encode the weights: {e}")))
}

/// Every key of `weights` must be in the format's `table`, and every key of
/// the table that `required` says a file holds must be in `weights`;
/// otherwise the error names the keys.
pub(crate) fn check_keys<P>(
    weights: &Weights,
    table: &[(String, P)],
    required: impl Fn(&P) -> bool,
) -> Result<(), WeightError> {
    let known: BTreeSet<&str> = table.iter().map(|(k, _)| k.as_str()).collect();
    let unknown: Vec<String> = weights
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(WeightError::Unknown(unknown));
    }
    let missing: Vec<String> = table
        .iter()
        .filter(|(k, place)| !weights.contains_key(k) && required(place))
        .map(|(k, _)| k.clone())
        .collect();
    if !missing.is_empty() {
        return Err(WeightError::Missing(missing));
    }
    Ok(())
}

/// The values of memlab's tensor `path` (PyTorch's layout), for the
/// format's `key`.
pub(crate) fn own_values(
    own: &BTreeMap<String, TensorSnapshot>,
    key: &str,
    path: &str,
) -> Result<Values, WeightError> {
    own.get(path)
        .ok_or_else(|| WeightError::Unsupported(format!("`{key}`: the model has no `{path}`")))
        .and_then(|s| Values::of(path, s))
}

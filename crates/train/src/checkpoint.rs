//! Checkpoints: one file holding the model record, the optimizer state, the
//! step, the run's config and, for a streaming task, the memory carried into
//! the next step, written atomically (temporary file, fsync, rename) so that
//! a killed run never leaves a partial checkpoint to be read, and checked by
//! a SHA-1 of its contents on every load, so that a damaged one is refused.
//!
//! Model and optimizer records use Burn's `NamedMpkBytesRecorder` at full
//! precision (bit-identical reloads); the envelope is MessagePack too.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use serde::{Deserialize, Serialize};

use memlab_core::model::{MemoryLayout, MemoryParts};
use memlab_core::seed::param_shapes;

/// File name of the checkpoint inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.mpk";
const MAGIC: &str = "memlab-checkpoint";
/// 3: the carried memory with its layout (`carried`); 2: the carried memory
/// without it (`memory`) and the checksum; 1: neither.
const FORMAT_VERSION: u32 = 3;

/// A checkpoint that cannot be written or read, with the reason.
#[derive(Debug)]
pub enum CheckpointError {
    Io(PathBuf, std::io::Error),
    Corrupt(PathBuf, String),
    WrongModel {
        path: PathBuf,
        found: String,
        expected: String,
    },
    Record(String),
    /// Written by an older memlab in a form this one cannot use.
    Outdated(String),
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::Io(p, e) => write!(f, "checkpoint {}: {e}", p.display()),
            CheckpointError::Corrupt(p, why) => write!(
                f,
                "checkpoint {} is truncated or not a memlab checkpoint: {why}",
                p.display()
            ),
            CheckpointError::WrongModel {
                path,
                found,
                expected,
            } => write!(
                f,
                "checkpoint {} holds a `{found}` model, but the config asks for `{expected}`",
                path.display()
            ),
            CheckpointError::Record(why) => {
                write!(f, "checkpoint record does not fit the model: {why}")
            }
            CheckpointError::Outdated(why) => write!(f, "the checkpoint is outdated: {why}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// What a checkpoint file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    magic: String,
    format_version: u32,
    /// Registry name of the architecture.
    pub arch: String,
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's config (TOML).
    pub config_toml: String,
    /// Shapes of the model's parameters, checked before loading.
    param_shapes: Vec<Vec<usize>>,
    #[serde(with = "serde_bytes")]
    model: Vec<u8>,
    #[serde(with = "serde_bytes")]
    optimizer: Vec<u8>,
    /// Version 2's carried memory: tensors without their layout. Read only
    /// to refuse it (see [`Checkpoint::memory`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory: Option<Vec<SavedTensor>>,
    /// A streaming task's memory carried into the next step (detached):
    /// the model's `MemoryState::to_parts`; `None` where none is carried.
    #[serde(default)]
    carried: Option<SavedMemory>,
    /// SHA-1 (hex) of everything above.
    #[serde(default)]
    checksum: String,
}

/// A `[batch, n, d]` f32 tensor, little-endian.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTensor {
    pub shape: [usize; 3],
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl SavedTensor {
    pub fn from_tensor<B: Backend>(t: &Tensor<B, 3>) -> Self {
        let values = t
            .to_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 values");
        Self {
            shape: t.dims(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3> {
        let values: Vec<f32> = self
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_data(TensorData::new(values, self.shape), device)
    }
}

/// A memory's parts: its layout and its filled slots' tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMemory {
    pub layout: MemoryLayout,
    pub tensors: Vec<SavedTensor>,
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
}

/// Serializes any Burn record to bytes at full precision.
pub fn record_to_bytes<B: Backend, R: Record<B>>(record: R) -> Result<Vec<u8>, CheckpointError> {
    Recorder::<B>::record(&recorder(), record, ())
        .map_err(|e| CheckpointError::Record(e.to_string()))
}

/// Deserializes a Burn record from bytes.
pub fn record_from_bytes<B: Backend, R: Record<B>>(
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<R, CheckpointError> {
    Recorder::<B>::load(&recorder(), bytes, device)
        .map_err(|e| CheckpointError::Record(e.to_string()))
}

/// MessagePack bytes with every map's entries in the order of their keys'
/// encodings. Burn's optimizer records are hash maps keyed by parameter, so
/// their order (and so the bytes) would otherwise change from process to
/// process; this way two runs with the same seed write the same file.
fn canonical(bytes: Vec<u8>) -> Result<Vec<u8>, CheckpointError> {
    fn sort(value: &mut rmpv::Value) {
        match value {
            rmpv::Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    sort(k);
                    sort(v);
                }
                entries.sort_by_cached_key(|(k, _)| {
                    let mut key = Vec::new();
                    rmpv::encode::write_value(&mut key, k).expect("encoding to memory");
                    key
                });
            }
            rmpv::Value::Array(items) => items.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut value = rmpv::decode::read_value(&mut bytes.as_slice())
        .map_err(|e| CheckpointError::Record(format!("re-encoding a record: {e}")))?;
    sort(&mut value);
    let mut out = Vec::with_capacity(bytes.len());
    rmpv::encode::write_value(&mut out, &value)
        .map_err(|e| CheckpointError::Record(format!("re-encoding a record: {e}")))?;
    Ok(out)
}

impl Checkpoint {
    /// Captures a model and an optimizer record.
    pub fn new<B: Backend, M: Module<B>, O: Record<B>>(
        arch: &str,
        step: usize,
        config_toml: String,
        model: &M,
        optimizer: O,
    ) -> Result<Self, CheckpointError> {
        Ok(Self {
            magic: MAGIC.into(),
            format_version: FORMAT_VERSION,
            arch: arch.into(),
            step,
            config_toml,
            param_shapes: param_shapes::<B, M>(model),
            model: record_to_bytes::<B, _>(model.clone().into_record())?,
            optimizer: canonical(record_to_bytes::<B, _>(optimizer)?)?,
            memory: None,
            carried: None,
            checksum: String::new(),
        })
    }

    /// With the memory a streaming task carries into the next step.
    pub fn with_memory<B: Backend>(mut self, memory: Option<MemoryParts<B>>) -> Self {
        self.carried = memory.map(|parts| SavedMemory {
            tensors: parts.tensors.iter().map(SavedTensor::from_tensor).collect(),
            layout: parts.layout,
        });
        self
    }

    /// The carried memory's parts, if the checkpoint holds any. A version-2
    /// checkpoint's memory has no layout, which the ∞-former and RMT
    /// without memory tokens cannot be rebuilt without: it is refused.
    pub fn memory<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Option<MemoryParts<B>>, CheckpointError> {
        if self.memory.is_some() {
            return Err(CheckpointError::Outdated(format!(
                "it was written in format {} and carries memory without its layout, which this \
                 memlab cannot rebuild; start the run afresh",
                self.format_version
            )));
        }
        Ok(self.carried.as_ref().map(|saved| MemoryParts {
            layout: saved.layout.clone(),
            tensors: saved.tensors.iter().map(|t| t.to_tensor(device)).collect(),
        }))
    }

    /// The config the checkpoint was trained with.
    pub fn saved_config(&self) -> Result<memlab_core::ExperimentConfig, CheckpointError> {
        toml::from_str(&self.config_toml).map_err(|e| {
            CheckpointError::Record(format!("the checkpoint's config does not parse: {e}"))
        })
    }

    /// Refuses a run config whose `[model]` or `[task]` is not the one the
    /// checkpoint was trained with (an edited `config.toml` can keep every
    /// weight's shape and still describe another model, e.g. `n_heads`).
    pub fn check_config(
        &self,
        config: &memlab_core::ExperimentConfig,
    ) -> Result<(), CheckpointError> {
        let saved = self.saved_config()?;
        for (section, same) in [
            ("[model]", saved.model == config.model),
            ("[task]", saved.task == config.task),
        ] {
            if !same {
                return Err(CheckpointError::Record(format!(
                    "the run's config.toml has another {section} than the checkpoint was \
                     trained with; restore it, or train a new run"
                )));
            }
        }
        Ok(())
    }

    /// SHA-1 of every field but the checksum.
    fn digest(&self) -> String {
        use sha1::{Digest, Sha1};
        let mut h = Sha1::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(self.magic.as_bytes());
        field(&self.format_version.to_le_bytes());
        field(self.arch.as_bytes());
        field(&(self.step as u64).to_le_bytes());
        field(self.config_toml.as_bytes());
        field(format!("{:?}", self.param_shapes).as_bytes());
        field(&self.model);
        field(&self.optimizer);
        // Version 2's fields as version 2 hashed them; the layout after.
        let tensors = match (&self.memory, &self.carried) {
            (Some(ts), _) => Some(ts),
            (None, Some(saved)) => Some(&saved.tensors),
            (None, None) => None,
        };
        match tensors {
            None => field(b"no memory"),
            Some(ts) => {
                for t in ts {
                    field(format!("{:?}", t.shape).as_bytes());
                    field(&t.data);
                }
            }
        }
        if let Some(saved) = &self.carried {
            field(format!("{:?}", saved.layout.0).as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Loads the model weights into `model`.
    pub fn load_model<B: Backend, M: Module<B>>(
        &self,
        model: M,
        device: &B::Device,
    ) -> Result<M, CheckpointError> {
        // Burn panics on a record of other sizes; compare the shapes first.
        let expected = param_shapes::<B, M>(&model);
        if expected.len() != self.param_shapes.len() {
            return Err(CheckpointError::Record(format!(
                "the checkpoint holds {} parameter tensors, the model built from the config {}",
                self.param_shapes.len(),
                expected.len()
            )));
        }
        if let Some((i, (saved, built))) = self
            .param_shapes
            .iter()
            .zip(&expected)
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            return Err(CheckpointError::Record(format!(
                "parameter tensor {i} has shape {saved:?} in the checkpoint but {built:?} in the \
                 model built from the config"
            )));
        }
        let record = record_from_bytes::<B, M::Record>(self.model.clone(), device)?;
        Ok(model.load_record(record))
    }

    /// The optimizer record.
    pub fn optimizer_record<B: Backend, O: Record<B>>(
        &self,
        device: &B::Device,
    ) -> Result<O, CheckpointError> {
        record_from_bytes::<B, O>(self.optimizer.clone(), device)
    }

    /// Seals the checkpoint with its checksum and writes it atomically:
    /// `path.tmp`, fsync, rename over `path`.
    pub fn save(mut self, path: &Path) -> Result<(), CheckpointError> {
        self.checksum = self.digest();
        let bytes = rmp_serde::to_vec_named(&self)
            .map_err(|e| CheckpointError::Corrupt(path.to_path_buf(), e.to_string()))?;
        write_atomically(path, &bytes).map_err(|e| CheckpointError::Io(path.to_path_buf(), e))
    }

    /// Reads a checkpoint and checks that it holds an `expected_arch` model.
    pub fn load(path: &Path, expected_arch: &str) -> Result<Self, CheckpointError> {
        let bytes = fs::read(path).map_err(|e| CheckpointError::Io(path.to_path_buf(), e))?;
        let checkpoint: Checkpoint = rmp_serde::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt(path.to_path_buf(), e.to_string()))?;
        if checkpoint.magic != MAGIC || !(1..=FORMAT_VERSION).contains(&checkpoint.format_version) {
            return Err(CheckpointError::Corrupt(
                path.to_path_buf(),
                format!(
                    "header {:?} v{} (expected {MAGIC:?} v{FORMAT_VERSION})",
                    checkpoint.magic, checkpoint.format_version
                ),
            ));
        }
        // Version 1 had no checksum; from version 2 every load checks it.
        if checkpoint.format_version >= 2 && checkpoint.checksum != checkpoint.digest() {
            return Err(CheckpointError::Corrupt(
                path.to_path_buf(),
                "its checksum does not match its contents (the file was changed or damaged)".into(),
            ));
        }
        if checkpoint.arch != expected_arch {
            return Err(CheckpointError::WrongModel {
                path: path.to_path_buf(),
                found: checkpoint.arch,
                expected: expected_arch.into(),
            });
        }
        Ok(checkpoint)
    }
}

/// Writes `bytes` to `path` so that readers see either the old file or the
/// whole new one: write a sibling temporary file, fsync it, rename it over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk must not leave the partial file behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Persist the rename itself; not every platform can open a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename cannot replace a non-empty directory.
        let target = dir.path().join("checkpoint.mpk");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        assert!(write_atomically(&target, b"new contents").is_err());
        assert!(!dir.path().join("checkpoint.mpk.tmp").exists());
    }

    fn bare(format_version: u32) -> Checkpoint {
        Checkpoint {
            magic: MAGIC.into(),
            format_version,
            arch: "baseline".into(),
            step: 3,
            config_toml: String::new(),
            param_shapes: Vec::new(),
            model: Vec::new(),
            optimizer: Vec::new(),
            memory: None,
            carried: None,
            checksum: String::new(),
        }
    }

    /// The carried memory comes back with its layout (an empty slot first,
    /// as RMT without memory tokens writes), and the layout is covered by
    /// the checksum.
    #[test]
    fn carried_memory_keeps_its_layout() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        let cache = Tensor::<B, 3>::from_data(
            TensorData::new((0..12).map(|i| i as f32).collect::<Vec<_>>(), [2, 3, 2]),
            &device,
        );
        let parts = MemoryParts::from_slots(vec![None, Some(cache.clone())]);
        bare(FORMAT_VERSION)
            .with_memory(Some(parts))
            .save(&path)
            .unwrap();
        let loaded = Checkpoint::load(&path, "baseline").unwrap();
        let parts = loaded.memory::<B>(&device).unwrap().unwrap();
        assert_eq!(parts.layout, MemoryLayout(vec![false, true]));
        let slots = parts.into_slots().unwrap();
        assert!(slots[0].is_none());
        slots[1]
            .clone()
            .unwrap()
            .into_data()
            .assert_eq(&cache.into_data(), true);

        let mut edited = loaded;
        edited.carried.as_mut().unwrap().layout = MemoryLayout(vec![true, false]);
        let bytes = rmp_serde::to_vec_named(&edited).unwrap();
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            Checkpoint::load(&path, "baseline"),
            Err(CheckpointError::Corrupt(..))
        ));
    }

    /// A format-2 checkpoint still loads (its checksum is checked as format
    /// 2 computed it), but memory it carries, which has no layout, is
    /// refused with the reason instead of being rebuilt by guess.
    #[test]
    fn format_two_memory_is_refused_with_the_reason() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        let mut old = bare(2);
        old.memory = Some(vec![SavedTensor {
            shape: [1, 1, 1],
            data: 1.0f32.to_le_bytes().to_vec(),
        }]);
        old.checksum = old.digest();
        fs::write(&path, rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        let loaded = Checkpoint::load(&path, "baseline").unwrap();
        let err = loaded.memory::<B>(&device).unwrap_err();
        assert!(matches!(err, CheckpointError::Outdated(_)), "{err}");
        assert!(err.to_string().contains("format 2"), "{err}");

        // Without carried memory a format-2 checkpoint is whole.
        let mut plain = bare(2);
        plain.checksum = plain.digest();
        fs::write(&path, rmp_serde::to_vec_named(&plain).unwrap()).unwrap();
        let loaded = Checkpoint::load(&path, "baseline").unwrap();
        assert!(loaded.memory::<B>(&device).unwrap().is_none());
    }

    #[test]
    fn records_are_re_encoded_in_key_order() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let entry = |k: &str, v: i64| (rmpv::Value::from(k), rmpv::Value::from(v));
        let one = rmpv::Value::Map(vec![entry("z", 1), entry("a", 2)]);
        let other = rmpv::Value::Map(vec![entry("a", 2), entry("z", 1)]);
        rmpv::encode::write_value(&mut a, &one).unwrap();
        rmpv::encode::write_value(&mut b, &other).unwrap();
        assert_ne!(a, b);
        assert_eq!(canonical(a).unwrap(), canonical(b).unwrap());
    }
}

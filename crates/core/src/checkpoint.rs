//! Checkpoints: one file holding the model record, the optimizer state, the
//! step and the run's config, written atomically (temporary file, fsync,
//! rename) so that a killed run never leaves a partial checkpoint to be read.
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

use crate::seed::param_shapes;

/// File name of the checkpoint inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.mpk";
const MAGIC: &str = "memlab-checkpoint";
const FORMAT_VERSION: u32 = 1;

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
            optimizer: record_to_bytes::<B, _>(optimizer)?,
        })
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

    /// Writes atomically: `path.tmp`, fsync, rename over `path`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = rmp_serde::to_vec_named(self)
            .map_err(|e| CheckpointError::Corrupt(path.to_path_buf(), e.to_string()))?;
        write_atomically(path, &bytes).map_err(|e| CheckpointError::Io(path.to_path_buf(), e))
    }

    /// Reads a checkpoint and checks that it holds an `expected_arch` model.
    pub fn load(path: &Path, expected_arch: &str) -> Result<Self, CheckpointError> {
        let bytes = fs::read(path).map_err(|e| CheckpointError::Io(path.to_path_buf(), e))?;
        let checkpoint: Checkpoint = rmp_serde::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt(path.to_path_buf(), e.to_string()))?;
        if checkpoint.magic != MAGIC || checkpoint.format_version != FORMAT_VERSION {
            return Err(CheckpointError::Corrupt(
                path.to_path_buf(),
                format!(
                    "header {:?} v{} (expected {MAGIC:?} v{FORMAT_VERSION})",
                    checkpoint.magic, checkpoint.format_version
                ),
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
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Persist the rename itself; not every platform can open a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

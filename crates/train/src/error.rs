//! Anything that stops a run, with a message that names the problem and
//! what to do about it.

use std::path::PathBuf;

use memlab_core::data::BatchError;

use crate::checkpoint::{CHECKPOINT_FILE, CheckpointError};

/// Anything that stops a run.
#[derive(Debug)]
pub enum TrainError {
    Batch(BatchError),
    Checkpoint(CheckpointError),
    Io(PathBuf, std::io::Error),
    Resume(String),
    /// The directory already holds a run and neither resuming nor
    /// overwriting it was asked for.
    RunExists(PathBuf),
    /// Resuming was asked for, and the directory holds no checkpoint.
    NoCheckpoint(PathBuf),
    /// Another process is training in the directory: the lock file it
    /// holds there.
    Locked(PathBuf),
    /// The loss or the gradient norm of a step is NaN or infinite.
    NonFinite {
        step: usize,
        what: &'static str,
    },
    /// The peers' layout does not fit the run (data parallelism).
    Parallel(String),
    /// A collective operation between peers failed (or another peer stopped).
    Collective(String),
    /// Training would need more memory than the machine has.
    TooLarge {
        parameters: usize,
        needed: u64,
        available: u64,
    },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Batch(e) => write!(f, "bad batch: {e}"),
            TrainError::Checkpoint(e) => write!(f, "{e}"),
            TrainError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            TrainError::Resume(why) => write!(f, "cannot resume: {why}"),
            TrainError::Parallel(why) => write!(f, "data-parallel training: {why}"),
            TrainError::Collective(why) => write!(
                f,
                "a collective operation between the peers failed ({why}); another peer \
                 stopped or cannot be reached"
            ),
            TrainError::RunExists(dir) => write!(
                f,
                "{} already holds a run; resume it, or replace it (overwrite)",
                dir.display()
            ),
            TrainError::NoCheckpoint(dir) => write!(
                f,
                "cannot resume: {} holds no checkpoint ({CHECKPOINT_FILE}); start the run \
                 without resuming",
                dir.display()
            ),
            TrainError::Locked(lock) => write!(
                f,
                "another memlab process is training in {} (it holds {}); wait for it or \
                 choose another run.name",
                lock.parent().unwrap_or(lock).display(),
                lock.display()
            ),
            TrainError::TooLarge {
                parameters,
                needed,
                available,
            } => write!(
                f,
                "the model has {parameters} parameters: training needs at least {:.1} GiB \
                 (f32 weights, gradients and AdamW's two moments, and a step's logits), more \
                 than the {:.1} GiB available; make the model or the batch smaller",
                *needed as f64 / GIB,
                *available as f64 / GIB
            ),
            TrainError::NonFinite { step, what } => write!(
                f,
                "the {what} of step {step} is not finite (NaN or infinite): training stopped; \
                 the last checkpoint (from before step {step}) is kept. Lower train.lr, \
                 model.init_std or raise train.warmup_steps"
            ),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<BatchError> for TrainError {
    fn from(e: BatchError) -> Self {
        TrainError::Batch(e)
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError::Checkpoint(e)
    }
}

const GIB: f64 = (1u64 << 30) as f64;

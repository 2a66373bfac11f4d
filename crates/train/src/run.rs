//! What a training run is told (where it is recorded, whether it resumes,
//! who hears how it goes) and what it reports when it ends.

use std::path::PathBuf;

use serde::Serialize;

use memlab_core::model::{ModelDescription, SegmentModel};
use memlab_core::registry::Architecture;

use crate::evaluate::EvalFigures;

/// How a run is shown and where it is recorded.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run directory (config.toml, metrics.jsonl, checkpoint.mpk).
    pub run_dir: PathBuf,
    /// Continue from the run directory's checkpoint (which must exist).
    pub resume: bool,
    /// Replace a run the directory already holds (else that is an error).
    pub overwrite: bool,
    /// Refuse to start when the estimate of what training holds in memory
    /// ([`crate::budget::memory_estimate`]) exceeds this many bytes (the CLI gives the
    /// host's available memory for the CPU backend).
    pub memory_limit: Option<u64>,
    /// Told how the run goes (rank 0 only): a progress bar, a log.
    pub progress: Option<Progress>,
}

/// What the training loop reports to [`TrainOptions::progress`] as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent<'a> {
    /// Before the first step: the architecture's name, the run's steps and
    /// the step it starts from (a resumed run's checkpoint).
    Started {
        name: &'a str,
        steps: usize,
        start_step: usize,
    },
    /// A step at which the training figures were read (`train.log_every`).
    Logged {
        step: usize,
        loss: f64,
        accuracy: f64,
        tokens_per_second: f64,
    },
    /// `done` steps are complete.
    Stepped { done: usize },
    /// The last step is done (evaluation follows).
    Finished,
}

/// A receiver of [`TrainEvent`]s, shared by the peers of a data-parallel run.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(TrainEvent<'_>) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(TrainEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: ModelDescription,
    /// The steps trained: `train.steps`, or fewer when the stopping rule
    /// (`train.flat_evals`) ended the run.
    pub steps: usize,
    /// Whether the validation curve was flat by the stopping rule's measure
    /// at the end (`None`: the config sets no rule). `Some(false)` with
    /// `steps == train.steps`: the run hit the cap unflattened.
    pub flat: Option<bool>,
    /// Step the run started from (0, or the resumed checkpoint's step).
    pub resumed_from: usize,
    pub final_train_loss: f64,
    pub eval: EvalFigures,
    /// Training throughput (input tokens per second, excluding evaluation).
    pub tokens_per_second: f64,
    pub run_dir: PathBuf,
}

/// What a peer trains, as one type: the model with its memory.
pub(crate) type Memory<A, B> = <<A as Architecture>::TrainModel<B> as SegmentModel<B>>::Memory;

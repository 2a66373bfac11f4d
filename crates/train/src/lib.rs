//! memlab-train: everything that runs a [`memlab_core::SegmentModel`] over
//! long sequences and trains it, for every architecture alike.
//!
//! - [`runner`]: the segment runner (segmenting, memory, BPTT depth, masked
//!   loss), streaming evaluation and greedy generation;
//! - [`mrbp`]: memory replay back-propagation;
//! - [`train`](mod@train): the training loop of one peer, from its first model (or a
//!   checkpoint) to its report; built of
//!   - [`run`]: what a run is told ([`TrainOptions`]) and reports
//!     ([`TrainReport`]),
//!   - [`step`]: one optimizer step and the learning-rate schedule,
//!   - `bookkeeping`: the figures, progress, evaluation and checkpoints
//!     around each step,
//!   - [`evaluate`](mod@evaluate): teacher-forced and generated-answer evaluation,
//!   - [`run_dir`]: the run directory, its lock and `metrics.jsonl`,
//!   - [`stopping`]: the stopping rule (`train.flat_evals`),
//!   - [`budget`]: whether a step fits the machine's memory,
//!   - [`error`]: [`TrainError`], anything that stops a run;
//! - [`checkpoint`]: checkpoints (model, optimizer, carried memory);
//! - [`peer`]: a data-parallel peer and its collective operations;
//! - [`distributed`]: data-parallel training on several devices and machines;
//! - [`compare`]: a `[compare]` matrix expanded into one config per run;
//! - [`agreement`]: how far two sets of values or gradients are apart.

pub mod agreement;
mod bookkeeping;
pub mod budget;
pub mod checkpoint;
pub mod compare;
pub mod distributed;
pub mod error;
pub mod evaluate;
pub mod mrbp;
pub mod peer;
pub mod run;
pub mod run_dir;
pub mod runner;
pub mod step;
pub mod stopping;
/// Checks every architecture must pass (feature `testing`; test builds only).
#[cfg(feature = "testing")]
pub mod testing;
pub mod train;

pub use error::TrainError;
pub use evaluate::{EvalFigures, evaluate};
pub use run::{Progress, TrainEvent, TrainOptions, TrainReport};
pub use train::train;

//! memlab-core: the contract between memlab's crates and what they share.
//!
//! - [`model`]: [`SegmentModel`] and [`MemoryState`], what every architecture implements;
//! - [`layers`]: attention, positions, feed-forward, blocks, embeddings;
//! - [`runner`]: the segment runner (segmenting, memory, BPTT depth, masked loss);
//! - [`train`]: the training loop, evaluation, checkpoints and resume;
//! - [`distributed`]: data-parallel training on several devices and machines;
//! - [`registry`]: how architecture crates make themselves known;
//! - [`config`]: strict TOML configs with field-named errors;
//! - [`data`]: the [`Task`] interface tasks implement;
//! - [`lm_rmt`]: weights shared with the official LM-RMT code (import, export).

pub mod agreement;
pub mod cache;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod data;
pub mod distributed;
pub mod flops;
pub mod layers;
pub mod lm_rmt;
pub mod model;
pub mod mrbp;
pub mod registry;
pub mod runner;
pub mod seed;
/// Checks every architecture must pass (feature `testing`; test builds only).
#[cfg(feature = "testing")]
pub mod testing;
pub mod train;

/// Burn, for the paths [`architecture!`] expands to.
#[doc(hidden)]
pub use burn as __burn;

pub use config::{
    BpttDepth, BpttWindow, ClipMode, ConfigError, ExperimentConfig, GradientMethod, Validate,
};
pub use data::{AnswerSpec, HostBatch, Metric, SequenceBatch, Split, Task, TextCodec};
pub use model::{
    MemoryError, MemoryLayout, MemoryParts, MemoryState, ModelContext, ModelDescription, NoMemory,
    SegmentModel, SegmentOutput, TensorMemory,
};
pub use registry::{Architecture, ArchitectureVisitor, ModelSpec};

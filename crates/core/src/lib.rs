//! memlab-core: the contract between memlab's crates and the layers they
//! share. What an architecture's author needs, and nothing else:
//!
//! - [`model`]: [`SegmentModel`] and [`MemoryState`], what every architecture implements;
//! - [`registry`]: [`Architecture`], how an architecture crate makes itself known;
//! - [`config`]: strict TOML configs with field-named errors (the shared types);
//! - [`data`]: the [`Task`] interface tasks implement;
//! - [`layers`]: attention, positions, feed-forward, blocks, embeddings;
//! - [`cache`]: Transformer-XL's per-layer cache and its masks;
//! - [`partial`]: the keys and values of a partly read segment (incremental generation);
//! - [`seed`]: seeded initialisation and dropout masks;
//! - [`flops`]: the model FLOPs a description reports;
//! - [`interop`]: what an architecture declares for external weight formats.
//!
//! Training (the segment runner, the loop, checkpoints, data parallelism,
//! the compare matrix) lives in memlab-train; external formats (LM-RMT's
//! keys) in memlab-interop.

pub mod cache;
pub mod config;
pub mod data;
pub mod flops;
pub mod interop;
pub mod layers;
pub mod model;
pub mod partial;
pub mod registry;
pub mod seed;

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
pub use partial::{KeyValues, PartialSegment};
pub use registry::{Architecture, ArchitectureVisitor, ModelSpec};

//! The contract every architecture implements: a [`SegmentModel`] reads one
//! segment of tokens with the [`MemoryState`] left by the previous segment and
//! returns logits and the next memory.

use burn::module::Module;
use burn::prelude::*;

/// Whatever a model carries from one segment to the next (Transformer-XL's
/// per-layer cache, RMT's memory tokens, Memformer's slots, ...).
pub trait MemoryState<B: Backend>: Clone + Send + Sized + 'static {
    /// The same memory with gradients stopped (stop-gradient on every tensor).
    fn detach(self) -> Self;

    /// Number of floats held, for the whole batch.
    fn num_floats(&self) -> usize;

    /// The memory as a list of rank-3 tensors `[batch, n, d]` (used by memory
    /// replay back-propagation and checkpoints of streaming state).
    fn to_tensors(&self) -> Vec<Tensor<B, 3>>;

    /// Rebuilds the memory from tensors produced by [`MemoryState::to_tensors`].
    fn from_tensors(tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError>;
}

/// A memory rebuilt from tensors that do not fit the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryError(pub String);

impl std::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid memory state: {}", self.0)
    }
}

impl std::error::Error for MemoryError {}

/// The memory of a model that has none (the baseline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoMemory;

impl<B: Backend> MemoryState<B> for NoMemory {
    fn detach(self) -> Self {
        self
    }

    fn num_floats(&self) -> usize {
        0
    }

    fn to_tensors(&self) -> Vec<Tensor<B, 3>> {
        Vec::new()
    }

    fn from_tensors(tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError> {
        if tensors.is_empty() {
            Ok(NoMemory)
        } else {
            Err(MemoryError(format!(
                "a model without memory takes no tensors, got {}",
                tensors.len()
            )))
        }
    }
}

/// A single memory tensor `[batch, n, d]`: the simplest memory, for a model
/// whose state is one tensor (the runner's tests use it). The registered
/// architectures carry their own types: `RmtMemory` (memory tokens and the
/// Tr-XL cache), `MemformerMemory` (slots and the previous encoding),
/// Transformer-XL's layer cache, the ∞-former's signal and cache.
#[derive(Debug, Clone)]
pub struct TensorMemory<B: Backend>(pub Tensor<B, 3>);

impl<B: Backend> MemoryState<B> for TensorMemory<B> {
    fn detach(self) -> Self {
        TensorMemory(self.0.detach())
    }

    fn num_floats(&self) -> usize {
        self.0.shape().num_elements()
    }

    fn to_tensors(&self) -> Vec<Tensor<B, 3>> {
        vec![self.0.clone()]
    }

    fn from_tensors(mut tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError> {
        if tensors.len() != 1 {
            return Err(MemoryError(format!(
                "expected exactly one memory tensor, got {}",
                tensors.len()
            )));
        }
        Ok(TensorMemory(tensors.remove(0)))
    }
}

/// What a model returns for one segment.
#[derive(Debug, Clone)]
pub struct SegmentOutput<B: Backend, M> {
    /// `[batch, segment, vocab]`.
    pub logits: Tensor<B, 3>,
    /// The memory to hand to the next segment.
    pub memory: M,
    /// An auxiliary loss of this segment, already weighted (e.g. the
    /// ∞-former's KL regulariser); the runner adds it to the task loss.
    pub aux_loss: Option<Tensor<B, 1>>,
}

impl<B: Backend, M> SegmentOutput<B, M> {
    pub fn new(logits: Tensor<B, 3>, memory: M) -> Self {
        Self {
            logits,
            memory,
            aux_loss: None,
        }
    }

    /// Attach this segment's (already weighted) auxiliary loss.
    pub fn with_aux_loss(mut self, aux_loss: Tensor<B, 1>) -> Self {
        self.aux_loss = Some(aux_loss);
        self
    }
}

/// What the CLI and benchmarks print about a model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelDescription {
    /// Registry name of the architecture.
    pub name: String,
    /// Number of trainable parameters.
    pub parameters: usize,
    /// Floats of memory carried per sequence between segments, in steady state.
    pub memory_floats_per_sequence: usize,
}

impl ModelDescription {
    /// `model`, an architecture registered as `name` (`Architecture::NAME`).
    pub fn of<B: Backend, M: SegmentModel<B>>(name: &str, model: &M) -> Self {
        Self {
            name: name.to_string(),
            parameters: model.num_params(),
            memory_floats_per_sequence: model.memory_floats_per_sequence(),
        }
    }
}

/// A model that reads a long sequence one segment at a time.
pub trait SegmentModel<B: Backend>: Module<B> {
    /// What the model carries between segments.
    type Memory: MemoryState<B>;

    /// The memory before the first segment, for `batch` sequences.
    fn init_memory(&self, batch: usize, device: &B::Device) -> Self::Memory;

    /// Reads `tokens` `[batch, segment]` with `memory`; returns logits
    /// `[batch, segment, vocab]` and the next memory.
    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: Self::Memory,
    ) -> SegmentOutput<B, Self::Memory>;

    /// Rebuilds this model's memory from [`MemoryState::to_tensors`]'s
    /// tensors (a checkpoint's carried memory, memory replay's leaves); a
    /// model whose memory layout depends on its config (RMT without memory
    /// tokens) overrides it.
    fn memory_from_tensors(&self, tensors: Vec<Tensor<B, 3>>) -> Result<Self::Memory, MemoryError> {
        Self::Memory::from_tensors(tensors)
    }

    /// Floats carried per sequence between segments, in steady state.
    fn memory_floats_per_sequence(&self) -> usize;

    /// Model FLOPs of one forward pass over a segment of `segment_len`
    /// tokens of one sequence, with the memory in steady state (full):
    /// matrix products only, counted as [`crate::flops`] says. The
    /// benchmarks divide it by the segment length for FLOPs per token.
    fn forward_flops(&self, segment_len: usize) -> u64;
}

/// What every architecture needs to know from the task when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelContext {
    /// Vocabulary size of the task (token ids are `0..vocab_size`).
    pub vocab_size: usize,
    /// The longest segment the model will be given.
    pub max_segment_len: usize,
}

impl ModelContext {
    /// What the model of `config` is built for: `task`'s vocabulary and
    /// the training segment length.
    pub fn of(config: &crate::ExperimentConfig, task: &dyn crate::Task) -> Self {
        Self {
            vocab_size: task.vocab_size(),
            max_segment_len: config.train.segment_len,
        }
    }
}

//! The contract every architecture implements: a [`SegmentModel`] reads one
//! segment of tokens with the [`MemoryState`] left by the previous segment and
//! returns logits and the next memory.

use burn::module::Module;
use burn::prelude::*;

use crate::partial::PartialSegment;

/// Whatever a model carries from one segment to the next (Transformer-XL's
/// per-layer cache, RMT's memory tokens, Memformer's slots, ...).
pub trait MemoryState<B: Backend>: Clone + Send + Sized + 'static {
    /// The same memory with gradients stopped (stop-gradient on every tensor).
    fn detach(self) -> Self;

    /// Number of floats held, for the whole batch.
    fn num_floats(&self) -> usize;

    /// The memory as a fixed list of slots in the memory's own order, each a
    /// rank-3 tensor `[batch, n, d]` or empty (`None`: RMT without memory
    /// tokens, a cache before the first segment). Which slots are filled is
    /// the memory's layout; [`MemoryState::to_parts`] keeps it on the host.
    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>>;

    /// Rebuilds the memory from slots produced by [`MemoryState::to_slots`].
    fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError>;

    /// The memory taken apart (memory replay's leaves, checkpoints of
    /// streaming state, a batch split between data-parallel peers): the
    /// filled slots' tensors, and the layout on the host.
    fn to_parts(&self) -> MemoryParts<B> {
        MemoryParts::from_slots(self.to_slots())
    }

    /// Rebuilds the memory from [`MemoryState::to_parts`]'s parts.
    fn from_parts(parts: MemoryParts<B>) -> Result<Self, MemoryError> {
        Self::from_slots(parts.into_slots()?)
    }
}

/// Which of a memory's slots hold a tensor, in the memory's slot order:
/// host data, the same on every row of the batch and on every peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryLayout(pub Vec<bool>);

/// A memory taken apart: the tensors of its filled slots, in slot order, and
/// its layout. The tensors can be mapped (to the inner backend, to a peer's
/// rows, to a file) and the memory rebuilt from them and the layout.
#[derive(Debug, Clone)]
pub struct MemoryParts<B: Backend> {
    pub layout: MemoryLayout,
    pub tensors: Vec<Tensor<B, 3>>,
}

impl<B: Backend> MemoryParts<B> {
    pub fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Self {
        let layout = MemoryLayout(slots.iter().map(Option::is_some).collect());
        Self {
            layout,
            tensors: slots.into_iter().flatten().collect(),
        }
    }

    /// The slots again; an error when the layout lists another number of
    /// tensors than there are.
    pub fn into_slots(self) -> Result<Vec<Option<Tensor<B, 3>>>, MemoryError> {
        let filled = self.layout.0.iter().filter(|&&f| f).count();
        if filled != self.tensors.len() {
            return Err(MemoryError(format!(
                "the layout lists {filled} tensors, {} are given",
                self.tensors.len()
            )));
        }
        let mut tensors = self.tensors.into_iter();
        Ok(self
            .layout
            .0
            .iter()
            .map(|&f| if f { tensors.next() } else { None })
            .collect())
    }

    /// The same layout with every tensor mapped (possibly to another backend).
    pub fn map<B2: Backend>(self, f: impl FnMut(Tensor<B, 3>) -> Tensor<B2, 3>) -> MemoryParts<B2> {
        MemoryParts {
            layout: self.layout,
            tensors: self.tensors.into_iter().map(f).collect(),
        }
    }

    /// [`Self::map`] with a mapping that can fail.
    pub fn try_map<B2: Backend, E>(
        self,
        f: impl FnMut(Tensor<B, 3>) -> Result<Tensor<B2, 3>, E>,
    ) -> Result<MemoryParts<B2>, E> {
        Ok(MemoryParts {
            layout: self.layout,
            tensors: self.tensors.into_iter().map(f).collect::<Result<_, _>>()?,
        })
    }
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

    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        Vec::new()
    }

    fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        if slots.is_empty() {
            Ok(NoMemory)
        } else {
            Err(MemoryError(format!(
                "a model without memory has no slots, got {}",
                slots.len()
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

    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        vec![Some(self.0.clone())]
    }

    fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        match <[_; 1]>::try_from(slots) {
            Ok([Some(t)]) => Ok(TensorMemory(t)),
            Ok([None]) => Err(MemoryError("the memory tensor is missing".into())),
            Err(slots) => Err(MemoryError(format!(
                "expected exactly one memory slot, got {}",
                slots.len()
            ))),
        }
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

    /// Reads `tokens` `[batch, n]` that continue the current segment
    /// incrementally: `memory` is the memory that entered the segment,
    /// `partial` what the model kept of the tokens read before
    /// ([`PartialSegment::start`] at the segment's first token), and
    /// `segment_len` the number of tokens the segment will hold once
    /// complete (where a model's attention depends on the segment's length,
    /// as RMT's memory tokens over Transformer-XL's relative positions do).
    /// Returns the logits `[batch, n, vocab]` of these tokens, which are
    /// [`Self::forward_segment`]'s at the same positions of the complete
    /// segment, and the grown `partial` (for inference: dropout is not
    /// applied the same way). `None` (the default): the model keeps no
    /// per-token state, and a reader re-reads the segment with
    /// [`Self::forward_segment`]. The memory for the next segment always
    /// comes from [`Self::forward_segment`] over the whole segment.
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &Self::Memory,
        partial: PartialSegment<B>,
        segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let _ = (tokens, memory, partial, segment_len);
        None
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

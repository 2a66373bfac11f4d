//! GPT-2 with RMT's memory tokens (Bulatov et al., 2022, §3; the wrapper of
//! pre-trained Hugging Face models in booydar/recurrent-memory-transformer):
//! `m` new embeddings are read at the start of each segment and written at
//! its end, the rest is the pre-trained GPT-2.
//!
//! ```text
//! H̃⁰ = [M ; wte[tokens] ; M] + wpe[0 … m + s + m − 1]
//! H̄ = ln_f(GPT-2 blocks(H̃⁰, RMT's mask))
//! logits = H̄[m … m + s − 1] wteᵀ;   next M = H̄[m + s …]   (the write block)
//! ```
//!
//! The mask and the memory state are memlab-rmt's ([`memlab_rmt::rmt_mask`],
//! [`RmtMemory`]): the read block sees itself, the segment sees the read
//! block and itself causally, the write block sees everything. There is no
//! MemTr variant (`mem_at_end = false`): under that mask, without a cache,
//! the read block's outputs never see the segment, so nothing would pass
//! from one segment to the next.

use burn::module::Param;
use burn::prelude::*;
use memlab_core::cache::LayerCache;
use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::layers::absolute_stack;
use memlab_core::{ModelContext, PartialSegment, SegmentModel, SegmentOutput};
use memlab_rmt::model::absolute_partial;
use memlab_rmt::{RmtMemory, rmt_mask};
use serde::{Deserialize, Serialize};

use crate::config::{Gpt2Config, gpt2_fields, take_count};
use crate::model::Gpt2;

/// `[model]` with `arch = "gpt2-rmt"`: GPT-2's fields (Hugging Face's
/// names) and, flat beside them, the memory's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpt2RmtConfig {
    #[serde(flatten)]
    pub gpt2: Gpt2Config,
    /// `m`, the memory tokens read before and written after each segment.
    pub num_mem_tokens: usize,
}

impl Default for Gpt2RmtConfig {
    fn default() -> Self {
        Self {
            gpt2: Gpt2Config::default(),
            num_mem_tokens: 10,
        }
    }
}

/// Written out because serde's `flatten` would let an unknown field pass:
/// the memory's field is taken from the table and the rest must be
/// GPT-2's (`Gpt2Config` denies any other).
impl<'de> Deserialize<'de> for Gpt2RmtConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let num_mem_tokens = take_count(
            &mut table,
            "num_mem_tokens",
            Self::default().num_mem_tokens,
            "a count",
        )?;
        Ok(Self {
            gpt2: gpt2_fields(table)?,
            num_mem_tokens,
        })
    }
}

impl Validate for Gpt2RmtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.gpt2.validate()?;
        check::positive("num_mem_tokens", self.num_mem_tokens)
    }
}

impl Gpt2RmtConfig {
    /// Tokens the blocks read per segment: the segment and its memory
    /// (`[read ; segment ; write]`).
    pub fn augmented_len(&self, segment_len: usize) -> usize {
        segment_len + 2 * self.num_mem_tokens
    }

    /// The augmented segment must fit GPT-2's learned positions.
    pub fn check_context(&self, ctx: &ModelContext) -> Result<(), ConfigError> {
        let q = self.augmented_len(ctx.max_segment_len);
        if q > self.gpt2.n_positions {
            return Err(ConfigError::new(
                "n_positions",
                format!(
                    "is {}, but a segment of {} tokens and its memory tokens take {q} positions",
                    self.gpt2.n_positions, ctx.max_segment_len
                ),
            ));
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Gpt2Rmt<B> {
        let (m, d) = (self.num_mem_tokens, self.gpt2.n_embd);
        Gpt2Rmt {
            gpt2: self.gpt2.init(ctx, device),
            // New embeddings, drawn as GPT-2 draws its own.
            memory_init: burn::module::Initializer::Normal {
                mean: 0.0,
                std: self.gpt2.initializer_range,
            }
            .init([m, d], device),
            num_mem_tokens: m,
        }
    }
}

/// GPT-2 with memory tokens.
#[derive(Module, Debug)]
pub struct Gpt2Rmt<B: Backend> {
    /// The pre-trained model (`memlab import --from hf` loads it).
    pub gpt2: Gpt2<B>,
    /// The learned initial memory `[m, n_embd]`.
    pub memory_init: Param<Tensor<B, 2>>,
    pub num_mem_tokens: usize,
}

impl<B: Backend> SegmentModel<B> for Gpt2Rmt<B> {
    type Memory = RmtMemory<B>;

    /// The learned initial memory, the same for every sequence of the batch.
    fn init_memory(&self, batch: usize, _device: &B::Device) -> RmtMemory<B> {
        RmtMemory::initial(Some(self.memory_init.val()), batch)
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: RmtMemory<B>,
    ) -> SegmentOutput<B, RmtMemory<B>> {
        let s = tokens.dims()[1];
        let m = self.num_mem_tokens;
        let device = tokens.device();
        let read = memory
            .tokens
            .expect("GPT-2 + RMT's memory holds its memory tokens");
        let x = self.gpt2.embedding.embed(tokens);
        let augmented = Tensor::cat(vec![read.clone(), x, read], 1);
        let h = self
            .gpt2
            .dropout
            .forward(self.gpt2.positions.forward(augmented));
        let mask = rmt_mask::<B>(m, s, 0, true, false, &device);
        let h = absolute_stack(&self.gpt2.blocks, Some(&self.gpt2.final_norm), h, mask);
        let next = RmtMemory {
            tokens: Some(h.clone().narrow(1, m + s, m)),
            cache: LayerCache::empty(),
        };
        let logits = self.gpt2.embedding.logits(h.narrow(1, m, s));
        SegmentOutput::new(logits, next)
    }

    /// RMT's incremental read over GPT-2's blocks
    /// ([`memlab_rmt::model::absolute_partial`]).
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &RmtMemory<B>,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let gpt2 = &self.gpt2;
        let (h, partial) = absolute_partial(
            &gpt2.blocks,
            Some(&gpt2.final_norm),
            &gpt2.positions,
            &gpt2.dropout,
            gpt2.embedding.embed(tokens),
            memory.tokens.clone(),
            partial,
        );
        Some((gpt2.embedding.logits(h), partial))
    }

    fn memory_floats_per_sequence(&self) -> usize {
        self.num_mem_tokens * self.memory_init.dims()[1]
    }

    /// The segment and its memory tokens through every block; the head on
    /// the segment.
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let q = segment_len + 2 * self.num_mem_tokens;
        self.gpt2.blocks.iter().map(|b| b.flops(q, q)).sum::<u64>()
            + self.gpt2.embedding.logits_flops(segment_len)
    }
}

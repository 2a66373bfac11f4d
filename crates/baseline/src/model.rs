//! The baseline's forward pass: embed, add positions, causal Transformer
//! blocks over the segment alone, (final LayerNorm,) output head.

use burn::nn::LayerNorm;
use burn::prelude::*;
use memlab_core::layers::Dropout;
use memlab_core::layers::{
    AbsolutePositions, TokenEmbedding, TransformerBlock, absolute_stack, causal_mask,
    causal_stack_partial,
};
use memlab_core::{ModelContext, NoMemory, PartialSegment, SegmentModel, SegmentOutput};

use crate::config::BaselineConfig;

/// A causal Transformer with no memory.
#[derive(Module, Debug)]
pub struct Baseline<B: Backend> {
    pub embedding: TokenEmbedding<B>,
    pub positions: AbsolutePositions<B>,
    pub blocks: Vec<TransformerBlock<B>>,
    /// Final LayerNorm of pre-LN stacks.
    pub final_norm: Option<LayerNorm<B>>,
    pub dropout: Dropout,
}

impl BaselineConfig {
    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Baseline<B> {
        let t = &self.transformer;
        let block = t.block();
        Baseline {
            embedding: t.embedding(ctx.vocab_size).init(device),
            positions: AbsolutePositions::new(
                self.positions,
                ctx.max_segment_len,
                t.d_model,
                t.init_std,
                device,
            ),
            blocks: (0..self.n_layers).map(|_| block.init(device)).collect(),
            final_norm: t.final_norm(device),
            dropout: Dropout::new(t.dropout),
        }
    }
}

impl<B: Backend> Baseline<B> {
    /// Hidden states `[batch, len, d_model]` of one segment (before the head).
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, len] = tokens.dims();
        let device = tokens.device();
        let x = self.embedding.embed(tokens);
        let x = self.dropout.forward(self.positions.forward(x));
        let mask = causal_mask::<B>(len, 0, &device);
        absolute_stack(&self.blocks, self.final_norm.as_ref(), x, mask)
    }
}

impl<B: Backend> SegmentModel<B> for Baseline<B> {
    type Memory = NoMemory;

    fn init_memory(&self, _batch: usize, _device: &B::Device) -> NoMemory {
        NoMemory
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: NoMemory,
    ) -> SegmentOutput<B, NoMemory> {
        SegmentOutput::new(self.embedding.logits(self.hidden(tokens)), memory)
    }

    /// Each block keeps the keys and values of the segment's tokens read so
    /// far; the new tokens take the positions after them.
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        _memory: &NoMemory,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let x = self.embedding.embed(tokens);
        let x = self
            .dropout
            .forward(self.positions.forward_at(x, partial.tokens));
        let (h, partial) = causal_stack_partial(&self.blocks, self.final_norm.as_ref(), x, partial);
        Some((self.embedding.logits(h), partial))
    }

    fn memory_floats_per_sequence(&self) -> usize {
        0
    }

    /// Causal self-attention over the segment in every block, then the head.
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let s = segment_len;
        self.blocks.iter().map(|b| b.flops(s, s)).sum::<u64>() + self.embedding.logits_flops(s)
    }
}

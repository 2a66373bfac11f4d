//! GPT-2's forward pass (Radford et al., 2019, §2.3; Hugging Face's
//! `GPT2LMHeadModel`): token plus learned position embeddings, pre-LN
//! blocks of causal self-attention and a GELU feed-forward network, a
//! final LayerNorm (`ln_f`), and the output head tied to the token
//! embedding, without a bias.

use burn::nn::LayerNorm;
use burn::prelude::*;
use memlab_core::layers::{
    AbsolutePositions, Dropout, PositionKind, TokenEmbedding, TokenEmbeddingConfig,
    TransformerBlock, absolute_stack, causal_mask, causal_stack_partial,
};
use memlab_core::{ModelContext, NoMemory, PartialSegment, SegmentModel, SegmentOutput};

use crate::config::Gpt2Config;

/// GPT-2 (`wte`, `wpe`, `h`, `ln_f`; the head is `wte`).
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend> {
    /// `wte`, and the tied head.
    pub embedding: TokenEmbedding<B>,
    /// `wpe`: `[n_positions, n_embd]`.
    pub positions: AbsolutePositions<B>,
    /// `h`.
    pub blocks: Vec<TransformerBlock<B>>,
    /// `ln_f`.
    pub final_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl Gpt2Config {
    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Gpt2<B> {
        let block = self.block();
        Gpt2 {
            embedding: TokenEmbeddingConfig::new(ctx.vocab_size, self.n_embd)
                .with_init_std(self.initializer_range)
                .with_head_bias(false)
                .init(device),
            positions: AbsolutePositions::new(
                PositionKind::Learned,
                self.n_positions,
                self.n_embd,
                self.initializer_range,
                device,
            ),
            blocks: (0..self.n_layer).map(|_| block.init(device)).collect(),
            final_norm: block.norm(device),
            dropout: Dropout::new(self.embd_pdrop),
        }
    }
}

impl<B: Backend> Gpt2<B> {
    /// The embeddings of a segment: `wte(tokens) + wpe(0..len)`, positions
    /// counted from the segment's start.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_at(tokens, 0)
    }

    /// [`Self::embed`] for tokens from position `start` of the segment on.
    pub fn embed_at(&self, tokens: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        self.dropout.forward(
            self.positions
                .forward_at(self.embedding.embed(tokens), start),
        )
    }

    /// The last hidden states `[batch, len, n_embd]` (after `ln_f`).
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, len] = tokens.dims();
        let mask = causal_mask::<B>(len, 0, &tokens.device());
        absolute_stack(
            &self.blocks,
            Some(&self.final_norm),
            self.embed(tokens),
            mask,
        )
    }

    /// Every hidden state as Hugging Face's `output_hidden_states` gives
    /// them: the embeddings, the output of each block but the last, and the
    /// last block's output after `ln_f` (`n_layer + 1` tensors).
    pub fn hidden_states(&self, tokens: Tensor<B, 2, Int>) -> Vec<Tensor<B, 3>> {
        let [_, len] = tokens.dims();
        let mask = causal_mask::<B>(len, 0, &tokens.device());
        let mut h = self.embed(tokens);
        let mut states = vec![h.clone()];
        for block in &self.blocks {
            h = block.forward(h, None, Some(mask.clone()), None);
            states.push(h.clone());
        }
        let last = states.pop().expect("a block's output");
        states.push(self.final_norm.forward(last));
        states
    }
}

impl<B: Backend> SegmentModel<B> for Gpt2<B> {
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
    /// far (Hugging Face's `past_key_values`); the new tokens take the
    /// positions after them.
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        _memory: &NoMemory,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let x = self.embed_at(tokens, partial.tokens);
        let (h, partial) = causal_stack_partial(&self.blocks, Some(&self.final_norm), x, partial);
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

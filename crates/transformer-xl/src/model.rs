//! The Transformer-XL forward pass (Dai et al., 2019, §3.3, "the complete
//! computational procedure"; the official `MemTransformerLM._forward`):
//!
//! ```text
//! h⁰ = dropout(√d · E[tokens])
//! for each layer n:  h̃ⁿ⁻¹ = [SG(memⁿ⁻¹) ∘ hⁿ⁻¹]
//!                    hⁿ = FF(LN(hⁿ⁻¹ + RelAttn(hⁿ⁻¹, h̃ⁿ⁻¹, R, u, v, mask)))
//! logits = dropout(hᴺ) Eᵀ;   memⁿ⁻¹ ← last mem_len of h̃ⁿ⁻¹ (stop-gradient)
//! ```

use burn::prelude::*;
use memlab_core::cache::xl_mask;
use memlab_core::layers::Dropout;
use memlab_core::layers::{RelativeBias, RelativeTransformerBlock, TokenEmbedding};
use memlab_core::layers::{relative_layers_cached, relative_stack};
use memlab_core::{ModelContext, PartialSegment, SegmentModel, SegmentOutput};

use crate::XlMemory;
use crate::config::XlConfig;

/// Transformer-XL.
#[derive(Module, Debug)]
pub struct TransformerXl<B: Backend> {
    pub embedding: TokenEmbedding<B>,
    pub layers: Vec<RelativeTransformerBlock<B>>,
    /// `u`, `v`: one pair shared by every layer, or one per layer (`untie_r`).
    pub biases: Vec<RelativeBias<B>>,
    pub dropout: Dropout,
    pub d_model: usize,
    pub mem_len: usize,
    pub eval_mem_len: usize,
    /// Distances beyond this use its sinusoid (`None`: no clamping).
    #[module(skip)]
    pub clamp_len: Option<usize>,
    pub same_length: bool,
}

impl XlConfig {
    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> TransformerXl<B> {
        let t = &self.transformer;
        let (layers, biases) = t
            .block()
            .init_relative_stack(self.n_layers, self.untie_r, device);
        TransformerXl {
            embedding: t.embedding(ctx.vocab_size).init(device),
            layers,
            biases,
            dropout: Dropout::new(t.dropout),
            d_model: t.d_model,
            mem_len: self.mem_len,
            eval_mem_len: self.eval_mem_len(),
            clamp_len: self.clamp_len,
            same_length: self.same_length,
        }
    }
}

impl<B: Backend> TransformerXl<B> {
    /// The cache length in force: `eval_mem_len` when no gradient is being
    /// recorded (evaluation runs on the inner, non-autodiff backend), else
    /// `mem_len` — the same test Burn's dropout uses to tell training.
    pub fn active_mem_len(&self, device: &B::Device) -> usize {
        if B::ad_enabled(device) {
            self.mem_len
        } else {
            self.eval_mem_len
        }
    }

    /// Final hidden states `[batch, q, d_model]` and the next memory.
    pub fn hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: XlMemory<B>,
    ) -> (Tensor<B, 3>, XlMemory<B>) {
        let [_, q] = tokens.dims();
        let device = tokens.device();
        let mem_len = self.active_mem_len(&device);
        let mask = xl_mask::<B>(
            q,
            memory.len(),
            self.same_length.then_some(mem_len),
            &device,
        );
        let h = self.dropout.forward(self.embedding.embed(tokens));
        let (h, next) = relative_stack(
            &self.layers,
            &self.biases,
            h,
            &memory,
            mask,
            mem_len,
            self.clamp_len,
            &self.dropout,
        );
        (self.dropout.forward(h), next)
    }
}

impl<B: Backend> SegmentModel<B> for TransformerXl<B> {
    type Memory = XlMemory<B>;

    fn init_memory(&self, _batch: usize, _device: &B::Device) -> XlMemory<B> {
        XlMemory::empty()
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: XlMemory<B>,
    ) -> SegmentOutput<B, XlMemory<B>> {
        let (h, next) = self.hidden(tokens, memory);
        SegmentOutput::new(self.embedding.logits(h), next)
    }

    /// Each layer keeps the keys and values of its cache and of the
    /// segment's tokens read so far, and `W_R R` for the distances so far;
    /// a new token attends over them under the mask of its row in
    /// [`xl_mask`] (the same keys, at the same distances).
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &XlMemory<B>,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let [_, n] = tokens.dims();
        let device = tokens.device();
        let mem_len = self.active_mem_len(&device);
        let before = if partial.is_start() {
            memory.len()
        } else {
            partial.keys()
        };
        let mask = (n > 1 || self.same_length)
            .then(|| xl_mask::<B>(n, before, self.same_length.then_some(mem_len), &device));
        let h = self.dropout.forward(self.embedding.embed(tokens));
        let (h, layers) = relative_layers_cached(
            &self.layers,
            &self.biases,
            h,
            memory,
            &partial.layers,
            mask,
            self.clamp_len,
            |_, _| None,
        );
        let partial = partial.advanced(n, layers);
        Some((self.embedding.logits(self.dropout.forward(h)), partial))
    }

    fn memory_floats_per_sequence(&self) -> usize {
        self.layers.len() * self.mem_len * self.d_model
    }

    /// Every layer attends from the segment to `[cache ; segment]` (§3.3:
    /// the cached states are re-projected to keys and values each segment).
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let (s, keys) = (segment_len, self.mem_len + segment_len);
        self.layers.iter().map(|b| b.flops(s, keys)).sum::<u64>() + self.embedding.logits_flops(s)
    }
}

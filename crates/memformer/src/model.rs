//! The Memformer forward pass for one segment (Wu et al., 2022, §3,
//! Fig. 2), as `forward_segment` runs it:
//!
//! ```text
//! x_t      = E[tokens_t] + P                       (shared embedding, positions)
//! logits_t = Decoder(x_t causal, cross-attend H_{t−1})   (M_0 at t = 0)
//! H_t      = Encoder(x_t, cross-attend M_t)
//! M̂        = SlotAttention(M_t, H_t)               (writer.rs)
//! M_{t+1}  = (M̂ + v_bias) / ‖M̂ + v_bias‖           (biased memory normalisation)
//! carried  = (M_{t+1}, H_t);   M_0 = v_bias / ‖v_bias‖
//! ```
//!
//! The decoder predicting segment t reads what the encoder made of segment
//! t − 1 with the memory before it, never segment t's own encoding (which
//! has seen the tokens it must predict).

use burn::module::Param;
use burn::nn::LayerNorm;
use burn::prelude::*;
use memlab_core::layers::Dropout;
use memlab_core::layers::{
    AbsolutePositions, CrossAttentionBlock, TokenEmbedding, causal_mask, normal_init,
};
use memlab_core::{ModelContext, PartialSegment, SegmentModel, SegmentOutput};

use crate::config::MemformerConfig;
use crate::memory::MemformerMemory;
use crate::writer::MemoryWriter;

#[derive(Module, Debug)]
pub struct Memformer<B: Backend> {
    pub embedding: TokenEmbedding<B>,
    pub positions: AbsolutePositions<B>,
    pub encoder: Vec<CrossAttentionBlock<B>>,
    pub decoder: Vec<CrossAttentionBlock<B>>,
    /// Final LayerNorms of a pre-LN stack.
    pub encoder_norm: Option<LayerNorm<B>>,
    pub decoder_norm: Option<LayerNorm<B>>,
    pub writer: MemoryWriter<B>,
    /// `v_bias` `[k, d]`: the forgetting bias, and the initial memory's direction.
    pub slot_bias: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
}

impl MemformerConfig {
    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Memformer<B> {
        let t = &self.transformer;
        let d = t.d_model;
        let block = t.block();
        Memformer {
            embedding: t.embedding(ctx.vocab_size).init(device),
            positions: AbsolutePositions::new(
                self.positions,
                ctx.max_segment_len,
                d,
                t.init_std,
                device,
            ),
            encoder: (0..self.n_encoder_layers)
                .map(|_| block.init_cross(device))
                .collect(),
            decoder: (0..self.n_decoder_layers)
                .map(|_| block.init_cross(device))
                .collect(),
            encoder_norm: t.final_norm(device),
            decoder_norm: t.final_norm(device),
            writer: MemoryWriter::new(
                d,
                t.n_heads,
                t.d_head(),
                self.temperature,
                t.init_std,
                device,
            ),
            slot_bias: normal_init(1.0).init([self.num_slots, d], device),
            dropout: Dropout::new(t.dropout),
        }
    }
}

/// Each slot scaled to unit L2 norm.
pub fn normalize<B: Backend>(m: Tensor<B, 3>) -> Tensor<B, 3> {
    let norm = m.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-12);
    m / norm
}

fn stack<B: Backend>(
    blocks: &[CrossAttentionBlock<B>],
    norm: Option<&LayerNorm<B>>,
    x: Tensor<B, 3>,
    mask: Option<Tensor<B, 4, Bool>>,
    context: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let h = blocks
        .iter()
        .fold(x, |h, b| b.forward(h, mask.clone(), context.clone()));
    match norm {
        Some(norm) => norm.forward(h),
        None => h,
    }
}

impl<B: Backend> Memformer<B> {
    /// The memory update: biased memory normalisation of the written slots.
    pub fn write(&self, slots: Tensor<B, 3>, encoded: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, k, d] = slots.dims();
        let written = self.writer.forward(slots, encoded);
        let bias = self.slot_bias.val().reshape([1, k, d]).repeat_dim(0, b);
        normalize(written + bias)
    }
}

impl<B: Backend> SegmentModel<B> for Memformer<B> {
    type Memory = MemformerMemory<B>;

    fn init_memory(&self, batch: usize, _device: &B::Device) -> MemformerMemory<B> {
        let [k, d] = self.slot_bias.dims();
        let slots = normalize(self.slot_bias.val().reshape([1, k, d])).repeat_dim(0, batch);
        MemformerMemory {
            slots,
            encoded: None,
        }
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: MemformerMemory<B>,
    ) -> SegmentOutput<B, MemformerMemory<B>> {
        let [_, s] = tokens.dims();
        let device = tokens.device();
        let x = self
            .dropout
            .forward(self.positions.forward(self.embedding.embed(tokens)));
        let context = memory.encoded.unwrap_or_else(|| memory.slots.clone());
        let decoded = stack(
            &self.decoder,
            self.decoder_norm.as_ref(),
            x.clone(),
            Some(causal_mask::<B>(s, 0, &device)),
            context,
        );
        let logits = self.embedding.logits(self.dropout.forward(decoded));
        let encoded = stack(
            &self.encoder,
            self.encoder_norm.as_ref(),
            x,
            None,
            memory.slots.clone(),
        );
        let slots = self.write(memory.slots, encoded.clone());
        SegmentOutput::new(
            logits,
            MemformerMemory {
                slots,
                encoded: Some(encoded),
            },
        )
    }

    /// Only the decoder makes logits: each decoder block keeps its
    /// self-attention's keys and values of the segment's tokens read so far,
    /// and its cross-attention's of the context (the previous segment's
    /// encoding, or the slots), projected at the segment's first token.
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &MemformerMemory<B>,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let [_, n] = tokens.dims();
        let device = tokens.device();
        let x = self.dropout.forward(
            self.positions
                .forward_at(self.embedding.embed(tokens), partial.tokens),
        );
        let context = memory
            .encoded
            .clone()
            .unwrap_or_else(|| memory.slots.clone());
        let mask = (n > 1).then(|| causal_mask::<B>(n, partial.tokens, &device));
        let mut h = x;
        let mut layers = Vec::with_capacity(2 * self.decoder.len());
        for (i, block) in self.decoder.iter().enumerate() {
            let cross = match partial.layer(2 * i + 1) {
                Some(cross) => cross,
                None => block.cross_attention.key_values(context.clone()),
            };
            let (out, kv) = block.forward_cached(h, partial.layer(2 * i), mask.clone(), &cross);
            h = out;
            layers.extend([kv, cross]);
        }
        let decoded = match &self.decoder_norm {
            Some(norm) => norm.forward(h),
            None => h,
        };
        let logits = self.embedding.logits(self.dropout.forward(decoded));
        Some((logits, partial.advanced(n, layers)))
    }

    /// The decoder (self-attention, cross-attention to the previous
    /// segment's encoding), the head, the encoder (self-attention,
    /// cross-attention to the k slots) and the slot-attention writer.
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let s = segment_len;
        let k = self.slot_bias.dims()[0];
        let decoder: u64 = self.decoder.iter().map(|b| b.flops(s, s)).sum();
        let encoder: u64 = self.encoder.iter().map(|b| b.flops(s, k)).sum();
        decoder + self.embedding.logits_flops(s) + encoder + self.writer.flops(k, s)
    }

    /// The k slots and one segment's encoding.
    fn memory_floats_per_sequence(&self) -> usize {
        let [k, d] = self.slot_bias.dims();
        (k + self.positions.max_len) * d
    }
}

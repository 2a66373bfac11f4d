//! The ∞-former forward pass (Martins et al., 2022, §3; the official
//! `MemTransformerLM._forward` with `long_term_attention`):
//!
//! ```text
//! for each layer n:
//!   B̃ⁿ = write(gate(x̃ⁿ), SG(Bⁿ))      x̃ⁿ: inputs that left the cache (§3.2)
//!   hⁿ = FF(LN(hⁿ⁻¹ + RelAttn(hⁿ⁻¹, [SG(memⁿ⁻¹) ∘ hⁿ⁻¹]) + LTM(qⁿ, B̃ⁿ)))
//! memⁿ⁻¹ ← last mem_len of [memⁿ⁻¹ ∘ hⁿ⁻¹];  x̃ⁿ ← what was pushed out
//! loss += kl_weight · Σₙ KL(N(μ, σ²) ‖ N(μ₀, σ₀²))
//! ```
//!
//! The short-term part is Transformer-XL's, from memlab-core (`LayerCache`,
//! `relative_layers`); the long-term part is [`crate::long_term`].

use burn::prelude::*;
use memlab_core::layers::Dropout;
use memlab_core::layers::{RelativeBias, RelativeTransformerBlock, TokenEmbedding, causal_mask};
use memlab_core::layers::{relative_layers, relative_layers_cached};
use memlab_core::{ModelContext, PartialSegment, SegmentModel, SegmentOutput};

use crate::config::InfinityFormerConfig;
use crate::long_term::{LongTermAttention, LongTermContext, LongTermReads, write_pending};
use crate::memory::InfinityMemory;

#[derive(Module, Debug)]
pub struct InfinityFormer<B: Backend> {
    pub embedding: TokenEmbedding<B>,
    pub layers: Vec<RelativeTransformerBlock<B>>,
    /// `u`, `v`: one pair shared by every layer, or one per layer (`untie_r`).
    pub biases: Vec<RelativeBias<B>>,
    /// One long-term attention per layer (empty when `long_term = false`).
    pub long_term: Vec<LongTermAttention<B>>,
    pub dropout: Dropout,
    pub d_model: usize,
    pub mem_len: usize,
    /// Distances beyond this use its sinusoid (`None`: no clamping).
    #[module(skip)]
    pub clamp_len: Option<usize>,
    pub kl_weight: f64,
    pub max_segment_len: usize,
    #[module(skip)]
    pub context: LongTermContext,
}

impl InfinityFormerConfig {
    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> InfinityFormer<B> {
        let t = &self.transformer;
        let (layers, biases) = t
            .block()
            .init_relative_stack(self.n_layers, self.untie_r, device);
        let long_term = &self.memory;
        InfinityFormer {
            embedding: t.embedding(ctx.vocab_size).init(device),
            layers,
            biases,
            long_term: if self.long_term {
                (0..self.n_layers)
                    .map(|_| {
                        long_term.init_attention(
                            t.d_model,
                            t.n_heads,
                            t.d_head(),
                            t.init_std,
                            device,
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            dropout: Dropout::new(t.dropout),
            d_model: t.d_model,
            mem_len: self.mem_len,
            clamp_len: self.clamp_len,
            kl_weight: self.memory.kl_weight,
            max_segment_len: ctx.max_segment_len,
            context: LongTermContext::new(long_term),
        }
    }
}

/// Hidden states, the next memory and the summed KL of one segment.
pub struct Hidden<B: Backend> {
    pub h: Tensor<B, 3>,
    pub memory: InfinityMemory<B>,
    /// Σ over layers of the mean KL (`None` before anything is in the
    /// long-term memory).
    pub kl: Option<Tensor<B, 1>>,
}

impl<B: Backend> InfinityFormer<B> {
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>, memory: InfinityMemory<B>) -> Hidden<B> {
        let [_, q] = tokens.dims();
        let device = tokens.device();
        let n = self.layers.len();
        let ctx = &self.context;

        // Write what left the short-term cache last segment into each
        // layer's signal (the gate's gradient is recorded here).
        let coefficients = write_pending(
            &self.long_term,
            ctx,
            &memory.pending,
            Some(&memory.coefficients),
            &memory.density,
        );

        let mask = causal_mask::<B>(q, memory.cache.len(), &device);
        let h = self.dropout.forward(self.embedding.embed(tokens));
        let mut reads = LongTermReads::new(n);
        let (h, inputs) = relative_layers(
            &self.layers,
            &self.biases,
            h,
            &memory.cache,
            mask,
            self.clamp_len,
            &self.dropout,
            |i, queries| {
                let ltm = self.long_term.get(i)?;
                reads.read(i, ltm, ctx, queries, coefficients[i].clone())
            },
        );
        let (cache, evicted) = memory.cache.update_evicting(inputs, self.mem_len);
        let long_term = !self.long_term.is_empty();
        let next = InfinityMemory {
            cache,
            pending: if long_term { evicted } else { Vec::new() },
            coefficients: coefficients
                .into_iter()
                .map(|c| c.map(|c| c.detach()))
                .collect(),
            density: if ctx.sticky && long_term {
                reads.density
            } else {
                Vec::new()
            },
        };
        Hidden {
            h: self.dropout.forward(h),
            memory: next,
            kl: reads.kl,
        }
    }
}

impl<B: Backend> SegmentModel<B> for InfinityFormer<B> {
    type Memory = InfinityMemory<B>;

    fn init_memory(&self, _batch: usize, _device: &B::Device) -> InfinityMemory<B> {
        InfinityMemory::empty()
    }

    /// Transformer-XL's layers (the segment attending to `[cache ;
    /// segment]`), each with its long-term memory read by the segment and
    /// written with the segment's worth of vectors that left the cache.
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let (s, keys) = (segment_len, self.mem_len + segment_len);
        let short: u64 = self.layers.iter().map(|b| b.flops(s, keys)).sum();
        let long: u64 = self
            .long_term
            .iter()
            .map(|l| l.flops(&self.context, s, s))
            .sum();
        short + long + self.embedding.logits_flops(s)
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: InfinityMemory<B>,
    ) -> SegmentOutput<B, InfinityMemory<B>> {
        let Hidden { h, memory, kl } = self.hidden(tokens, memory);
        let out = SegmentOutput::new(self.embedding.logits(h), memory);
        match kl {
            Some(kl) if self.kl_weight > 0.0 => out.with_aux_loss(kl * self.kl_weight),
            _ => out,
        }
    }

    /// Transformer-XL's incremental read of the short-term part
    /// (`relative_layers_cached`), each layer also reading its long-term
    /// signal: the signals after this segment's write are computed at the
    /// segment's first token and kept for the rest (in `extra`).
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &InfinityMemory<B>,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let [_, n] = tokens.dims();
        let device = tokens.device();
        let ctx = &self.context;
        let mut partial = partial;
        if partial.is_start() {
            partial.extra = write_pending(
                &self.long_term,
                ctx,
                &memory.pending,
                Some(&memory.coefficients),
                &memory.density,
            );
        }
        let before = if partial.is_start() {
            memory.cache.len()
        } else {
            partial.keys()
        };
        let mask = (n > 1).then(|| causal_mask::<B>(n, before, &device));
        let h = self.dropout.forward(self.embedding.embed(tokens));
        let mut reads = LongTermReads::new(self.layers.len());
        let coefficients = &partial.extra;
        let (h, layers) = relative_layers_cached(
            &self.layers,
            &self.biases,
            h,
            &memory.cache,
            &partial.layers,
            mask,
            self.clamp_len,
            |i, queries| {
                let ltm = self.long_term.get(i)?;
                reads.read(i, ltm, ctx, queries, coefficients[i].clone())
            },
        );
        let logits = self.embedding.logits(self.dropout.forward(h));
        Some((logits, partial.advanced(n, layers)))
    }

    /// Short-term cache, plus per layer the signal (N × d) and the inputs
    /// waiting to be written (at most a segment); the same after any number
    /// of segments.
    fn memory_floats_per_sequence(&self) -> usize {
        let short = self.mem_len * self.d_model;
        let long = if self.long_term.is_empty() {
            0
        } else {
            self.context
                .floats_per_layer(self.d_model, self.max_segment_len)
        };
        self.layers.len() * (short + long)
    }
}

//! The RMT forward pass (Bulatov et al., 2022, §3, Fig. 1c):
//!
//! ```text
//! H̃⁰ = [H_mem ; E[tokens] ; H_mem]          (read, segment, write)
//! H̄ᴺ = Transformer(H̃⁰, mask)                (absolute or Tr-XL backbone)
//! [H_read ; H_out ; H_write] = H̄ᴺ
//! logits = H_out Eᵀ;   next H_mem = H_write  (H_read without mem_at_end)
//! ```
//!
//! Gradients flow from segment to segment through `H_mem`; the segment
//! runner truncates them at the configured BPTT depth.

use burn::module::Param;
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::Distribution;
use memlab_core::cache::{LayerCache, xl_mask};
use memlab_core::layers::Dropout;
use memlab_core::layers::{
    AbsolutePositions, PositionKind, RelativeBias, RelativeTransformerBlock, TokenEmbedding,
    TransformerBlock, absolute_stack, absolute_stack_cached, causal_mask, relative_layers_cached,
    relative_stack,
};
use memlab_core::{ModelContext, PartialSegment, SegmentModel, SegmentOutput};

use crate::config::{Backbone, MemoryInit, RmtConfig};
use crate::mask::rmt_mask;
use crate::memory::RmtMemory;

/// The Recurrent Memory Transformer.
#[derive(Module, Debug)]
pub struct Rmt<B: Backend> {
    pub embedding: TokenEmbedding<B>,
    /// The learned initial memory `[m, d_model]` (`None` when `m = 0`).
    pub memory_init: Option<Param<Tensor<B, 2>>>,
    /// Transformer backbone: absolute positions over the augmented segment.
    pub positions: AbsolutePositions<B>,
    /// Which of `blocks` and `relative_blocks` the model runs (the other is empty).
    #[module(skip)]
    pub backbone: Backbone,
    /// Transformer backbone.
    pub blocks: Vec<TransformerBlock<B>>,
    /// Final LayerNorm of a pre-LN Transformer backbone.
    pub final_norm: Option<LayerNorm<B>>,
    /// Tr-XL backbone.
    pub relative_blocks: Vec<RelativeTransformerBlock<B>>,
    pub biases: Vec<RelativeBias<B>>,
    pub dropout: Dropout,
    pub num_mem_tokens: usize,
    pub mem_at_end: bool,
    pub read_mem_from_cache: bool,
    pub same_length: bool,
    pub mem_len: usize,
    /// Distances beyond this use its sinusoid (`None`: no clamping).
    #[module(skip)]
    pub clamp_len: Option<usize>,
    pub d_model: usize,
    /// The task's vocabulary; the head has one more row, the special memory
    /// target, when the auxiliary memory loss is on.
    pub vocab_size: usize,
    pub memory_loss_weight: f64,
}

impl RmtConfig {
    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Rmt<B> {
        let t = &self.transformer;
        let block = t.block();
        let (m, d) = (self.num_mem_tokens, t.d_model);
        let memory_init = (m > 0).then(|| {
            let unit = burn::module::Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            };
            match self.memory_init {
                MemoryInit::Distinct => unit.init([m, d], device),
                MemoryInit::Repeated => {
                    // The vector is drawn now (as it always was: the same
                    // values under a seed); its `m` copies are made when the
                    // parameter is first read, so that building a model
                    // allocates no parameter (the training loop's size check).
                    let one =
                        Tensor::<B, 2>::random([1, d], Distribution::Normal(0.0, 1.0), device);
                    Param::uninitialized(
                        burn::module::ParamId::new(),
                        move |_, require_grad| {
                            let copies = one.clone().repeat_dim(0, m);
                            if require_grad {
                                copies.require_grad()
                            } else {
                                copies
                            }
                        },
                        device.clone(),
                        true,
                        [m, d].into(),
                    )
                }
            }
        });
        let xl = self.backbone == Backbone::TransformerXl;
        let n = self.n_layers;
        let (relative_blocks, biases) = if xl {
            block.init_relative_stack(n, self.untie_r, device)
        } else {
            (Vec::new(), Vec::new())
        };
        Rmt {
            embedding: t
                .embedding(ctx.vocab_size + usize::from(self.memory_loss_weight > 0.0))
                .init(device),
            memory_init,
            backbone: self.backbone,
            positions: AbsolutePositions::new(
                if xl {
                    PositionKind::None
                } else {
                    self.positions
                },
                self.augmented_len(ctx.max_segment_len),
                d,
                t.init_std,
                device,
            ),
            blocks: if xl {
                Vec::new()
            } else {
                (0..n).map(|_| block.init(device)).collect()
            },
            final_norm: if xl { None } else { t.final_norm(device) },
            relative_blocks,
            biases,
            dropout: Dropout::new(t.dropout),
            num_mem_tokens: m,
            mem_at_end: self.mem_at_end,
            read_mem_from_cache: self.read_mem_from_cache,
            same_length: self.same_length,
            mem_len: self.mem_len,
            clamp_len: self.clamp_len,
            d_model: d,
            vocab_size: ctx.vocab_size,
            memory_loss_weight: self.memory_loss_weight,
        }
    }
}

impl<B: Backend> Rmt<B> {
    fn is_xl(&self) -> bool {
        self.backbone == Backbone::TransformerXl
    }

    /// Hidden states of the segment's tokens `[batch, s, d]` and the next memory.
    pub fn hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: RmtMemory<B>,
    ) -> (Tensor<B, 3>, RmtMemory<B>) {
        let s = tokens.dims()[1];
        let (h, next) = self.augmented_hidden(tokens, memory);
        (h.narrow(1, self.num_mem_tokens, s), next)
    }

    /// The last layer's output at every position of the augmented segment
    /// `[batch, m + s (+ m), d]` and the next memory.
    pub fn augmented_hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: RmtMemory<B>,
    ) -> (Tensor<B, 3>, RmtMemory<B>) {
        let s = tokens.dims()[1];
        let device = tokens.device();
        let m = self.num_mem_tokens;
        let x = self.embedding.embed(tokens);
        let read = memory.tokens.clone();
        let mut parts = Vec::with_capacity(3);
        parts.extend(read.clone());
        parts.push(x);
        if self.mem_at_end {
            parts.extend(read);
        }
        let augmented = Tensor::cat(parts, 1);
        let q = augmented.dims()[1];

        let (h, cache) = if self.is_xl() {
            let mask = if self.same_length {
                xl_mask::<B>(q, memory.cache.len(), Some(self.mem_len), &device)
            } else {
                rmt_mask::<B>(
                    m,
                    s,
                    memory.cache.len(),
                    self.mem_at_end,
                    self.read_mem_from_cache,
                    &device,
                )
            };
            let h = self.dropout.forward(augmented);
            let (h, cache) = relative_stack(
                &self.relative_blocks,
                &self.biases,
                h,
                &memory.cache,
                mask,
                self.mem_len,
                self.clamp_len,
                &self.dropout,
            );
            (self.dropout.forward(h), cache)
        } else {
            let mask = rmt_mask::<B>(m, s, 0, self.mem_at_end, false, &device);
            let h = self.dropout.forward(self.positions.forward(augmented));
            let h = absolute_stack(&self.blocks, self.final_norm.as_ref(), h, mask);
            (h, LayerCache::empty())
        };

        let next_tokens = (m > 0).then(|| {
            let start = if self.mem_at_end { q - m } else { 0 };
            h.clone().narrow(1, start, m)
        });
        (
            h,
            RmtMemory {
                tokens: next_tokens,
                cache,
            },
        )
    }
}

impl<B: Backend> Rmt<B> {
    /// [`Self::hidden`] read incrementally: the rows of `tokens` `[batch, n]`,
    /// the `n` tokens after `partial`'s of a segment that will hold
    /// `segment_len` tokens. A segment token sees the cache (Tr-XL
    /// backbone), the read block and the tokens before it, none of which the
    /// write block (appended only when the segment is complete) changes.
    ///
    /// The read block itself depends on the segment's length over
    /// Transformer-XL's relative positions: it attends to read tokens after
    /// it, beyond the causal part of the rel-shifted position scores, whose
    /// entries there are other distances' terms, set by the number of keys
    /// (Transformer-XL's and LM-RMT's `_rel_shift`). So the first tokens
    /// are read inside a segment of the complete length, the positions not
    /// yet read held by zero rows (no segment token sees them, the read
    /// block reads none), and only the keys read so far are kept.
    pub fn partial_hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &RmtMemory<B>,
        partial: PartialSegment<B>,
        segment_len: usize,
    ) -> (Tensor<B, 3>, PartialSegment<B>) {
        let x = self.embedding.embed(tokens);
        if !self.is_xl() {
            return absolute_partial(
                &self.blocks,
                self.final_norm.as_ref(),
                &self.positions,
                &self.dropout,
                x,
                memory.tokens.clone(),
                partial,
            );
        }
        let [batch, n, d] = x.dims();
        let device = x.device();
        let first = partial.is_start();
        let read = if first { memory.tokens.clone() } else { None };
        let m = read.as_ref().map_or(0, |r| r.dims()[1]);
        let cache = memory.cache.len();
        let same_length = self.same_length.then_some(self.mem_len);
        // The rows read now: at the segment's start with memory tokens, the
        // whole segment's geometry ([read ; tokens ; zeros (; write)]).
        let (augmented, mask, rows) = match read {
            Some(read) => {
                let s = segment_len.max(n);
                let write = if self.mem_at_end { m } else { 0 };
                let rest = Tensor::zeros([batch, s - n + write, d], &device);
                let q = m + s + write;
                let mask = if self.same_length {
                    xl_mask::<B>(q, cache, same_length, &device)
                } else {
                    rmt_mask::<B>(
                        m,
                        s,
                        cache,
                        self.mem_at_end,
                        self.read_mem_from_cache,
                        &device,
                    )
                };
                (Tensor::cat(vec![read, x, rest], 1), Some(mask), m + n)
            }
            None => {
                let before = if first { cache } else { partial.keys() };
                let mask = (n > 1 || self.same_length)
                    .then(|| xl_mask::<B>(n, before, same_length, &device));
                (x, mask, n)
            }
        };
        let h = self.dropout.forward(augmented);
        let (h, layers) = relative_layers_cached(
            &self.relative_blocks,
            &self.biases,
            h,
            &memory.cache,
            &partial.layers,
            mask,
            self.clamp_len,
            |_, _| None,
        );
        let held = if first {
            cache + rows
        } else {
            partial.keys() + rows
        };
        let layers = layers.into_iter().map(|kv| kv.truncated(held)).collect();
        let h = self.dropout.forward(h);
        (h.narrow(1, m, n), partial.advanced(n, layers))
    }

    /// The auxiliary memory loss of appendix A.5 ("we set a new fixed special
    /// token to be predicted from memory as target"), already weighted:
    ///
    /// ```text
    /// L_mem = w · mean over batch and the m slots of −log softmax(H_mem Eᵀ)[special]
    /// ```
    ///
    /// `H_mem` `[batch, m, d]` is the last layer's output at the memory
    /// positions that become the next memory (the write block, or the read
    /// block without `mem_at_end`); `special` is the extra head row, id
    /// `vocab_size`, never an input and never a sequence target.
    pub fn memory_loss(&self, memory_out: Tensor<B, 3>) -> Tensor<B, 1> {
        let logits = self.embedding.logits(memory_out);
        let log_probs = burn::tensor::activation::log_softmax(logits, 2);
        log_probs.narrow(2, self.vocab_size, 1).mean().neg() * self.memory_loss_weight
    }
}

impl<B: Backend> SegmentModel<B> for Rmt<B> {
    type Memory = RmtMemory<B>;

    /// The learned initial memory, the same for every sequence of the batch.
    fn init_memory(&self, batch: usize, _device: &B::Device) -> RmtMemory<B> {
        RmtMemory::initial(self.memory_init.as_ref().map(|p| p.val()), batch)
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: RmtMemory<B>,
    ) -> SegmentOutput<B, RmtMemory<B>> {
        let (h, next) = self.hidden(tokens, memory);
        let logits = self.embedding.logits(h);
        if self.memory_loss_weight > 0.0 {
            let memory_out = next.tokens.clone().expect("validated: memory tokens > 0");
            let aux = self.memory_loss(memory_out);
            // The special target is not part of the task's vocabulary.
            let logits = logits.narrow(2, 0, self.vocab_size);
            return SegmentOutput::new(logits, next).with_aux_loss(aux);
        }
        SegmentOutput::new(logits, next)
    }

    /// Every layer keeps the keys and values of the read memory, the cache
    /// (Tr-XL backbone) and the segment's tokens read so far
    /// ([`Rmt::partial_hidden`]).
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &RmtMemory<B>,
        partial: PartialSegment<B>,
        segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let (h, partial) = self.partial_hidden(tokens, memory, partial, segment_len);
        let logits = self.embedding.logits(h);
        let logits = if self.memory_loss_weight > 0.0 {
            logits.narrow(2, 0, self.vocab_size)
        } else {
            logits
        };
        Some((logits, partial))
    }

    fn memory_floats_per_sequence(&self) -> usize {
        let layers = if self.is_xl() {
            self.relative_blocks.len()
        } else {
            0
        };
        (self.num_mem_tokens + layers * self.mem_len) * self.d_model
    }

    /// The segment plus its read (and, at the end, write) memory tokens go
    /// through the backbone (§3: `[mem_read ; segment ; mem_write]`); with
    /// Transformer-XL they also attend to the cache. The head sees the
    /// segment, and the memory tokens too with the auxiliary loss.
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let m = self.num_mem_tokens;
        let q = segment_len + m * if self.mem_at_end { 2 } else { 1 };
        let blocks = if self.is_xl() {
            let keys = self.mem_len + q;
            self.relative_blocks
                .iter()
                .map(|b| b.flops(q, keys))
                .sum::<u64>()
        } else {
            self.blocks.iter().map(|b| b.flops(q, q)).sum()
        };
        let head_rows = segment_len + if self.memory_loss_weight > 0.0 { m } else { 0 };
        blocks + self.embedding.logits_flops(head_rows)
    }
}

/// RMT's incremental read over a Transformer with absolute positions (RMT's
/// Transformer backbone, GPT-2 + RMT): `x` `[batch, n, d]` are the embedded
/// tokens after `partial`'s. At the segment's first tokens the read memory
/// `read` `[batch, m, d]` goes first (positions `0..m`, under its rows of
/// [`rmt_mask`]); later tokens take the positions after everything read,
/// causally. Returns the tokens' rows of the last layer (after the final
/// LayerNorm when given) and the grown `partial`.
pub fn absolute_partial<B: Backend>(
    blocks: &[TransformerBlock<B>],
    final_norm: Option<&LayerNorm<B>>,
    positions: &AbsolutePositions<B>,
    dropout: &Dropout,
    x: Tensor<B, 3>,
    read: Option<Tensor<B, 3>>,
    partial: PartialSegment<B>,
) -> (Tensor<B, 3>, PartialSegment<B>) {
    let n = x.dims()[1];
    let device = x.device();
    let (h, m, mask) = if partial.is_start() {
        let m = read.as_ref().map_or(0, |r| r.dims()[1]);
        let augmented = match read {
            Some(read) => Tensor::cat(vec![read, x], 1),
            None => x,
        };
        let mask = rmt_mask::<B>(m, n, 0, false, false, &device);
        (positions.forward_at(augmented, 0), m, Some(mask))
    } else {
        let before = partial.keys();
        let mask = (n > 1).then(|| causal_mask::<B>(n, before, &device));
        (positions.forward_at(x, before), 0, mask)
    };
    let h = dropout.forward(h);
    let (h, layers) = absolute_stack_cached(blocks, final_norm, h, &partial.layers, mask);
    (h.narrow(1, m, n), partial.advanced(n, layers))
}

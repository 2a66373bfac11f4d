//! GPT-2 with the ∞-former's long-term memory (Martins et al., 2022, §4.2,
//! "pre-trained language models"; the official `finetune_gpt2/`
//! `modeling_gpt2.py` and `long_term_attention.py`): in every block, the
//! attention's queries also read a continuous signal of the block's past
//! inputs, and what they read is added to the attention's output.
//!
//! ```text
//! for each block l, segment t:
//!   Bˡ = write(gate(SG(xˡ_{t−1})), SG(Bˡ_{t−1}))     xˡ_{t−1}: block l's input last segment (§3.2)
//!   a  = c_proj(attn(ln_1(xˡ_t))) + LTM(qˡ_t, Bˡ)     qˡ_t = c_attn's queries, per head
//!   xˡ⁺¹_t = xˡ_t + dropout(a);  xˡ⁺¹_t ← xˡ⁺¹_t + mlp(ln_2(xˡ⁺¹_t))
//! loss += kl_weight · Σ_l KL(N(μ, σ²) ‖ N(μ₀, σ₀²))
//! ```
//!
//! The signal, its write and contraction, the continuous attention, sticky
//! memories and the KL are memlab-infinity-former's
//! ([`LongTermAttention`], [`write_pending`], [`LongTermReads`]); the
//! memory carried between segments is its [`InfinityMemory`] without the
//! short-term cache, plus how many tokens the signal holds: the official
//! code starts the signal again once it holds `mem_threshold` = 2048
//! tokens (`reset_after`).

use burn::prelude::*;
use memlab_core::cache::LayerCache;
use memlab_core::config::{ConfigError, Validate};
use memlab_core::layers::causal_mask;
use memlab_core::model::{MemoryError, MemoryState};
use memlab_core::{ModelContext, PartialSegment, SegmentModel, SegmentOutput};
use memlab_infinity_former::long_term::{LongTermReads, write_pending};
use memlab_infinity_former::{
    InfinityMemory, LongTermAttention, LongTermContext, LongTermSettings,
};
use serde::{Deserialize, Serialize};

use crate::config::{Gpt2Config, gpt2_fields, take_count};
use crate::model::Gpt2;

/// `[model]` with `arch = "gpt2-ltm"`: GPT-2's fields (Hugging Face's
/// names) flat, `reset_after` beside them, and the long-term memory in
/// `[model.long_term]` (memlab-infinity-former's [`LongTermSettings`]; a
/// field left out takes the official fine-tuning value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpt2LtmConfig {
    #[serde(flatten)]
    pub gpt2: Gpt2Config,
    /// The signal starts again from the last segment alone once it holds
    /// this many tokens (the official `mem_threshold`, 2048: "clean memory
    /// if going through different document"); 0: never.
    pub reset_after: usize,
    pub long_term: LongTermSettings,
}

impl Gpt2LtmConfig {
    /// The official fine-tuning run's long-term memory
    /// (`infinite_memory_transformer_sticky_mem/config.json`,
    /// `long_term_attention.py` and `--kl_regularizer --kl_m=.000001`):
    /// 512 basis functions of widths 0.005 and 0.01, ridge penalty 0.5,
    /// τ = 0.5, 512 samples, the CNN gate, sticky memories over 128 bins,
    /// σ₀ = 0.05, μ₀ = −1, σ² ≥ 1e-4.
    pub fn official_long_term() -> LongTermSettings {
        LongTermSettings {
            num_basis: 512,
            basis_sigmas: vec![0.005, 0.01],
            ridge_penalty: 0.5,
            tau: 0.5,
            num_samples: 512,
            gate: true,
            sticky: true,
            sticky_bins: 128,
            kl_weight: 1e-6,
            sigma_0: 0.05,
            mu_0: Some(-1.0),
            sigma_floor: 1e-4,
        }
    }
}

impl Default for Gpt2LtmConfig {
    fn default() -> Self {
        Self {
            gpt2: Gpt2Config::default(),
            reset_after: 2048,
            long_term: Self::official_long_term(),
        }
    }
}

/// Written out because serde's `flatten` would let an unknown field pass:
/// `reset_after` and `long_term` are taken from the table (the latter over
/// the official values), the rest must be GPT-2's.
impl<'de> Deserialize<'de> for Gpt2LtmConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let reset_after = take_count(
            &mut table,
            "reset_after",
            Self::default().reset_after,
            "a count of tokens (0: never)",
        )?;
        let mut long_term =
            toml::Table::try_from(Self::official_long_term()).map_err(D::Error::custom)?;
        match table.remove("long_term") {
            None => {}
            Some(toml::Value::Table(given)) => long_term.extend(given),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "long_term: expected a table, got {}",
                    other.type_str()
                )));
            }
        }
        let long_term = LongTermSettings::deserialize(toml::Value::Table(long_term))
            .map_err(|e| D::Error::custom(format!("long_term: {e}")))?;
        Ok(Self {
            gpt2: gpt2_fields(table)?,
            reset_after,
            long_term,
        })
    }
}

impl Validate for Gpt2LtmConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.gpt2.validate()?;
        self.long_term.validate().map_err(|e| e.within("long_term"))
    }
}

impl Gpt2LtmConfig {
    pub fn check_context(&self, ctx: &ModelContext) -> Result<(), ConfigError> {
        self.gpt2.check_context(ctx)
    }

    pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Gpt2Ltm<B> {
        let g = &self.gpt2;
        let d_head = g.n_embd / g.n_head;
        Gpt2Ltm {
            gpt2: g.init(ctx, device),
            // New parameters, drawn as GPT-2 draws its own (transformers'
            // `_init_weights` on the official code's new `nn.Linear`s).
            long_term: (0..g.n_layer)
                .map(|_| {
                    self.long_term.init_attention(
                        g.n_embd,
                        g.n_head,
                        d_head,
                        g.initializer_range,
                        device,
                    )
                })
                .collect(),
            kl_weight: self.long_term.kl_weight,
            reset_after: self.reset_after,
            d_model: g.n_embd,
            max_segment_len: ctx.max_segment_len,
            context: LongTermContext::new(&self.long_term),
        }
    }
}

/// GPT-2 with a long-term memory per block.
#[derive(Module, Debug)]
pub struct Gpt2Ltm<B: Backend> {
    /// The pre-trained model (`memlab import --from hf` loads it).
    pub gpt2: Gpt2<B>,
    /// One long-term attention per block (the official
    /// `attn.long_term_attention`): new parameters.
    pub long_term: Vec<LongTermAttention<B>>,
    pub kl_weight: f64,
    pub reset_after: usize,
    pub d_model: usize,
    pub max_segment_len: usize,
    #[module(skip)]
    pub context: LongTermContext,
}

/// What GPT-2 + LTM carries: per block the last segment's inputs (written
/// at the start of the next), the signal and, with sticky memories, the
/// attention density (memlab-infinity-former's [`InfinityMemory`], its
/// short-term cache empty); and how many tokens the signal holds.
#[derive(Debug, Clone)]
pub struct Gpt2LtmMemory<B: Backend> {
    pub long_term: InfinityMemory<B>,
    /// Tokens written into the signal since it last started.
    pub written: usize,
}

impl<B: Backend> MemoryState<B> for Gpt2LtmMemory<B> {
    fn detach(self) -> Self {
        Self {
            long_term: self.long_term.detach(),
            written: self.written,
        }
    }

    fn num_floats(&self) -> usize {
        self.long_term.num_floats()
    }

    /// The ∞-former's slots, then one `[batch, 1, 1]` slot holding the
    /// count (empty before the first segment).
    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        let mut slots = self.long_term.to_slots();
        let count = self.long_term.pending.iter().flatten().next().map(|x| {
            let [batch, _, _] = x.dims();
            Tensor::full([batch, 1, 1], self.written as f32, &x.device())
        });
        slots.push(count);
        slots
    }

    fn from_slots(mut slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        let count = slots.pop().ok_or_else(|| {
            MemoryError("GPT-2 + LTM's memory ends with its token count, got no slots".into())
        })?;
        let written = match count {
            None => 0,
            Some(t) => {
                let values: Vec<f32> = t.into_data().to_vec().map_err(|e| {
                    MemoryError(format!("GPT-2 + LTM's token count is not f32: {e:?}"))
                })?;
                match values.first() {
                    Some(&n) if n >= 0.0 && n.fract() == 0.0 => n as usize,
                    other => {
                        return Err(MemoryError(format!(
                            "GPT-2 + LTM's token count must be a whole number, got {other:?}"
                        )));
                    }
                }
            }
        };
        Ok(Self {
            long_term: InfinityMemory::from_slots(slots)?,
            written,
        })
    }
}

impl<B: Backend> Gpt2Ltm<B> {
    /// The last hidden states (after `ln_f`), the next memory and the summed
    /// KL of one segment.
    pub fn hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: Gpt2LtmMemory<B>,
    ) -> (Tensor<B, 3>, Gpt2LtmMemory<B>, Option<Tensor<B, 1>>) {
        let [_, len] = tokens.dims();
        let ctx = &self.context;
        let Gpt2LtmMemory {
            long_term: memory,
            written,
        } = memory;
        // What the last segment's blocks read, written into each signal;
        // a full signal starts again from it alone (`mem_threshold`).
        let pending = memory.pending.iter().flatten().next().map(|x| x.dims()[1]);
        let restart = self.reset_after > 0 && written >= self.reset_after;
        let coefficients = self.written_signals(&memory, written);
        let written = match pending {
            Some(l) if restart => l,
            Some(l) => written + l,
            None => written,
        };

        let mask = causal_mask::<B>(len, 0, &tokens.device());
        let mut h = self.gpt2.embed(tokens);
        let mut inputs = Vec::with_capacity(self.long_term.len());
        let mut reads = LongTermReads::new(self.long_term.len());
        for (i, block) in self.gpt2.blocks.iter().enumerate() {
            // The official `Block.mem = hidden_states.detach()`: the
            // block's input, before `ln_1`.
            inputs.push(Some(h.clone().detach()));
            h = block.forward_with(h, Some(mask.clone()), |queries| {
                reads.read(i, &self.long_term[i], ctx, queries, coefficients[i].clone())
            });
        }
        let next = Gpt2LtmMemory {
            long_term: InfinityMemory {
                cache: LayerCache::empty(),
                pending: inputs,
                coefficients: coefficients
                    .into_iter()
                    .map(|c| c.map(|c| c.detach()))
                    .collect(),
                density: if ctx.sticky {
                    reads.density
                } else {
                    Vec::new()
                },
            },
            written,
        };
        (self.gpt2.final_norm.forward(h), next, reads.kl)
    }
}

impl<B: Backend> Gpt2Ltm<B> {
    /// Each signal after the segment's write (or restart): what
    /// [`Self::hidden`] reads, computed once per segment.
    fn written_signals(
        &self,
        memory: &InfinityMemory<B>,
        written: usize,
    ) -> Vec<Option<Tensor<B, 3>>> {
        let restart = self.reset_after > 0 && written >= self.reset_after;
        write_pending(
            &self.long_term,
            &self.context,
            &memory.pending,
            (!restart).then_some(memory.coefficients.as_slice()),
            &memory.density,
        )
    }
}

impl<B: Backend> SegmentModel<B> for Gpt2Ltm<B> {
    type Memory = Gpt2LtmMemory<B>;

    fn init_memory(&self, _batch: usize, _device: &B::Device) -> Gpt2LtmMemory<B> {
        Gpt2LtmMemory {
            long_term: InfinityMemory::empty(),
            written: 0,
        }
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: Gpt2LtmMemory<B>,
    ) -> SegmentOutput<B, Gpt2LtmMemory<B>> {
        let (h, memory, kl) = self.hidden(tokens, memory);
        let out = SegmentOutput::new(self.gpt2.embedding.logits(h), memory);
        match kl {
            Some(kl) if self.kl_weight > 0.0 => out.with_aux_loss(kl * self.kl_weight),
            _ => out,
        }
    }

    /// GPT-2's incremental read (each block keeps its keys and values),
    /// each block also reading its long-term signal, written at the
    /// segment's first token and kept for the rest (in `extra`).
    fn forward_partial(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: &Gpt2LtmMemory<B>,
        partial: PartialSegment<B>,
        _segment_len: usize,
    ) -> Option<(Tensor<B, 3>, PartialSegment<B>)> {
        let [_, n] = tokens.dims();
        let ctx = &self.context;
        let mut partial = partial;
        if partial.is_start() {
            partial.extra = self.written_signals(&memory.long_term, memory.written);
        }
        let mask = (n > 1).then(|| causal_mask::<B>(n, partial.tokens, &tokens.device()));
        let mut h = self.gpt2.embed_at(tokens, partial.tokens);
        let mut reads = LongTermReads::new(self.long_term.len());
        let mut layers = Vec::with_capacity(self.gpt2.blocks.len());
        for (i, block) in self.gpt2.blocks.iter().enumerate() {
            let (out, kv) =
                block.forward_cached_with(h, partial.layer(i), mask.clone(), |queries| {
                    reads.read(
                        i,
                        &self.long_term[i],
                        ctx,
                        queries,
                        partial.extra[i].clone(),
                    )
                });
            h = out;
            layers.push(kv);
        }
        let logits = self.gpt2.embedding.logits(self.gpt2.final_norm.forward(h));
        Some((logits, partial.advanced(n, layers)))
    }

    /// Per block the signal (N × d), the last segment's inputs (a segment)
    /// and, with sticky memories, the density over the bins.
    fn memory_floats_per_sequence(&self) -> usize {
        self.long_term.len()
            * self
                .context
                .floats_per_layer(self.d_model, self.max_segment_len)
    }

    /// GPT-2's causal self-attention over the segment in every block, each
    /// with its long-term memory written with the last segment and read by
    /// this one; the head.
    fn forward_flops(&self, segment_len: usize) -> u64 {
        let s = segment_len;
        let short: u64 = self.gpt2.blocks.iter().map(|b| b.flops(s, s)).sum();
        let long: u64 = self
            .long_term
            .iter()
            .map(|l| l.flops(&self.context, s, s))
            .sum();
        short + long + self.gpt2.embedding.logits_flops(s)
    }
}

//! `[model]` with `arch = "rmt"`. Names follow booydar/LM-RMT's flags where
//! they exist (`num_mem_tokens`, `mem_at_end`, `read_mem_from_cache`,
//! `mem_len`).

use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
use memlab_core::layers::PositionKind;
use serde::{Deserialize, Serialize};

/// The Transformer that reads `[read memory ; segment ; write memory]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// Absolute positions, no cache (the paper's "RMT").
    #[default]
    Transformer,
    /// Relative positions and a cache of `mem_len` states of the augmented
    /// sequence (the paper's "Tr-XL + RMT").
    TransformerXl,
}

/// How the learned initial memory is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemoryInit {
    /// One N(0, 1) vector copied into every slot (LM-RMT's `init_mem_tokens`);
    /// the slots are separate parameters from then on.
    #[default]
    Repeated,
    /// An independent N(0, 1) vector per slot.
    Distinct,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmtConfig {
    pub backbone: Backbone,
    /// Memory tokens `m`.
    pub num_mem_tokens: usize,
    /// `[read ; segment ; write]` (true) or `[read ; segment]` (false: the
    /// paper's "MemTr", whose memory is the read block's output).
    pub mem_at_end: bool,
    pub memory_init: MemoryInit,
    /// Tr-XL backbone: memory tokens may attend to the cache.
    pub read_mem_from_cache: bool,
    /// Tr-XL backbone: cached states per layer (of the augmented sequence).
    pub mem_len: usize,
    pub clamp_len: Option<usize>,
    /// Tr-XL backbone: every query sees the same `mem_len` nearest keys
    /// (LM-RMT's `same_length`). As in LM-RMT, the mask is then
    /// Transformer-XL's causal one over the augmented segment: the
    /// memory-token rules of [`crate::mask`] do not apply.
    pub same_length: bool,
    pub untie_r: bool,
    /// Transformer backbone: `learned` or `sinusoidal` absolute positions.
    pub positions: PositionKind,
    /// `d_model`, `n_heads`, `d_head`, `d_ff`, dropouts, `pre_norm`,
    /// `activation`, `tied_embeddings`, `scale_embeddings` (token embeddings,
    /// not memory, times √d_model, as LM-RMT does), `init_std`.
    pub transformer: TransformerSizes,
    pub n_layers: usize,
    /// Weight of the auxiliary memory loss of appendix A.5 (the paper uses
    /// 0.01 for Tr-XL + RMT on WikiText-103; 0 turns it off). The memory
    /// tokens' outputs must predict a new fixed special token; see
    /// [`crate::model::Rmt::memory_loss`]. LM-RMT's code has no such loss.
    pub memory_loss_weight: f64,
}

impl Default for RmtConfig {
    fn default() -> Self {
        Self {
            backbone: Backbone::Transformer,
            num_mem_tokens: 10,
            mem_at_end: true,
            memory_init: MemoryInit::Repeated,
            read_mem_from_cache: false,
            mem_len: 0,
            clamp_len: None,
            same_length: false,
            untie_r: false,
            positions: PositionKind::Learned,
            transformer: TransformerSizes::default(),
            n_layers: 2,
            memory_loss_weight: 0.0,
        }
    }
}

/// `preset = "paper"`: RMT as the paper's runs train it. LM-RMT's run
/// scripts (`run_copy.sh`, `run_reverse.sh`, `run_sqeq.sh`,
/// `run_retrieval.sh`) call `train_synthetic.py` / `train_sqeq.py`, whose
/// model is `MemTransformerLM` with `attn_type 0`:
///
/// - relative positions (Transformer-XL's attention) and no cache
///   (`--mem_len 0`): memory tokens are the only path between segments;
/// - post-LayerNorm (no `--pre_lnorm`);
/// - token embeddings times √d_model (`AdaptiveEmbedding`'s `emb_scale`);
///   the memory tokens are not scaled (they bypass the embedding);
/// - `--dropout 0.1 --dropatt 0.0`;
/// - `--mem_at_end --read_mem_from_cache`;
/// - r_w/r_r biases shared by all layers (no `--untie_r`), tied output
///   weights, N(0, 0.02²) initialisation, one vector copied into every
///   memory slot (`init_mem_tokens`): memlab's defaults already.
///
/// Sizes (`d_model`, `n_layers`, `n_heads`, `d_head`, `d_ff`) and
/// `num_mem_tokens` differ per experiment and are set beside the preset.
pub const PAPER_PRESET: &str = r#"
backbone = "transformer-xl"
mem_len = 0
pre_norm = false
scale_embeddings = true
dropout = 0.1
attn_dropout = 0.0
mem_at_end = true
read_mem_from_cache = true
untie_r = false
tied_embeddings = true
memory_init = "repeated"
init_std = 0.02
"#;

impl RmtConfig {
    /// Length of the augmented segment for a segment of `len` tokens.
    pub fn augmented_len(&self, len: usize) -> usize {
        let write = if self.mem_at_end {
            self.num_mem_tokens
        } else {
            0
        };
        self.num_mem_tokens + len + write
    }
}

impl Validate for RmtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.transformer.check(
            self.backbone == Backbone::TransformerXl || self.positions == PositionKind::Sinusoidal,
        )?;
        check::positive("n_layers", self.n_layers)?;
        check::non_negative_f64("memory_loss_weight", self.memory_loss_weight)?;
        if self.memory_loss_weight > 0.0 && self.num_mem_tokens == 0 {
            return Err(ConfigError::new(
                "memory_loss_weight",
                "needs memory tokens (`num_mem_tokens` > 0)",
            ));
        }
        if self.backbone == Backbone::Transformer {
            for (field, set) in [
                ("mem_len", self.mem_len > 0),
                ("read_mem_from_cache", self.read_mem_from_cache),
                ("clamp_len", self.clamp_len.is_some()),
                ("same_length", self.same_length),
                ("untie_r", self.untie_r),
            ] {
                if set {
                    return Err(ConfigError::new(
                        field,
                        "applies to `backbone = \"transformer-xl\"` only",
                    ));
                }
            }
        }
        if self.same_length && self.mem_len == 0 {
            return Err(ConfigError::new("same_length", "needs `mem_len` > 0"));
        }
        Ok(())
    }
}

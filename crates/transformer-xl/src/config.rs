//! `[model]` with `arch = "transformer-xl"`. Names follow the official
//! code's flags where they exist (`mem_len`, `clamp_len`, `same_length`,
//! `untie_r`, `pre_lnorm` → `pre_norm`, `dropatt` → `attn_dropout`).

use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XlConfig {
    /// `d_model`, `n_heads`, `d_head`, `d_ff`, `dropout` (embeddings,
    /// positions, residual branches and the output), `attn_dropout`
    /// (`dropatt`), `pre_norm` (`pre_lnorm`; post-LayerNorm by default, as in
    /// the paper), `activation`, `tied_embeddings`, `scale_embeddings` (the
    /// official `emb_scale`, on by default), `init_std`.
    pub transformer: TransformerSizes,
    pub n_layers: usize,
    /// Cached positions per layer during training.
    pub mem_len: usize,
    /// Cached positions per layer at evaluation (the paper evaluates with a
    /// longer cache than it trains with); `mem_len` when absent.
    pub eval_mem_len: Option<usize>,
    /// Distances beyond this use the sinusoid of `clamp_len` (`-1` in the
    /// official code = absent).
    pub clamp_len: Option<usize>,
    /// Every query sees the same number of keys (the `mem_len` nearest, once
    /// there are more), as the official code's evaluation option.
    pub same_length: bool,
    /// Each layer learns its own `u`, `v` (else one pair shared by all).
    pub untie_r: bool,
}

impl Default for XlConfig {
    fn default() -> Self {
        Self {
            transformer: TransformerSizes {
                pre_norm: false,
                scale_embeddings: true,
                ..TransformerSizes::default()
            },
            n_layers: 2,
            mem_len: 16,
            eval_mem_len: None,
            clamp_len: None,
            same_length: false,
            untie_r: false,
        }
    }
}

impl XlConfig {
    pub fn eval_mem_len(&self) -> usize {
        self.eval_mem_len.unwrap_or(self.mem_len)
    }
}

impl Validate for XlConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.transformer.check(true)?;
        check::positive("n_layers", self.n_layers)?;
        if self.same_length && self.mem_len == 0 {
            return Err(ConfigError::new("same_length", "needs `mem_len` > 0"));
        }
        Ok(())
    }
}

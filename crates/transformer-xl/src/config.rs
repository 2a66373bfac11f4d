//! `[model]` with `arch = "transformer-xl"`. Names follow the official
//! code's flags where they exist (`mem_len`, `clamp_len`, `same_length`,
//! `untie_r`, `pre_lnorm` → `pre_norm`, `dropatt` → `attn_dropout`).

use memlab_core::config::{ConfigError, TransformerSizes, Validate};
use memlab_core::layers::Activation;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XlConfig {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Size of each head; `d_model / n_heads` when absent.
    pub d_head: Option<usize>,
    pub d_ff: usize,
    /// Dropout on embeddings, positions, residual branches and the output.
    pub dropout: f64,
    /// Dropout on attention probabilities (`dropatt`).
    pub attn_dropout: f64,
    /// Pre-LayerNorm (`pre_lnorm`); post-LayerNorm by default, as in the paper.
    pub pre_norm: bool,
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
    pub activation: Activation,
    pub tied_embeddings: bool,
    /// Multiply embeddings by √d_model (the official `emb_scale`).
    pub scale_embeddings: bool,
    /// Standard deviation of the N(0, std²) initialisation (`init_std`).
    pub init_std: f64,
}

impl Default for XlConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_head: None,
            d_ff: 256,
            dropout: 0.0,
            attn_dropout: 0.0,
            pre_norm: false,
            mem_len: 16,
            eval_mem_len: None,
            clamp_len: None,
            same_length: false,
            untie_r: false,
            activation: Activation::Relu,
            tied_embeddings: true,
            scale_embeddings: true,
            init_std: 0.02,
        }
    }
}

impl XlConfig {
    pub fn d_head(&self) -> usize {
        self.d_head.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    pub fn eval_mem_len(&self) -> usize {
        self.eval_mem_len.unwrap_or(self.mem_len)
    }
}

impl Validate for XlConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        TransformerSizes {
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            d_head: self.d_head,
            d_ff: self.d_ff,
            sinusoidal: true,
            dropout: self.dropout,
            attn_dropout: self.attn_dropout,
            init_std: self.init_std,
        }
        .validate()?;
        if self.same_length && self.mem_len == 0 {
            return Err(ConfigError::new("same_length", "needs `mem_len` > 0"));
        }
        Ok(())
    }
}

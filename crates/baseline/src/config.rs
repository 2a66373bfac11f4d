//! `[model]` with `arch = "baseline"`.

use memlab_core::config::{ConfigError, TransformerSizes, Validate};
use memlab_core::layers::{Activation, PositionKind};
use serde::{Deserialize, Serialize};

/// Sizes and options of the baseline Transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    /// Residual, embedding and feed-forward dropout.
    pub dropout: f64,
    /// Dropout on attention probabilities.
    pub attn_dropout: f64,
    /// Pre-LayerNorm (GPT-2) when true, post-LayerNorm (original) when false.
    pub pre_norm: bool,
    /// Absolute positions: `learned`, `sinusoidal` or `none`.
    pub positions: PositionKind,
    /// `relu` or `gelu`.
    pub activation: Activation,
    /// Output head tied to the token embedding.
    pub tied_embeddings: bool,
    /// Standard deviation of the N(0, std²) initialisation.
    pub init_std: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: 256,
            dropout: 0.0,
            attn_dropout: 0.0,
            pre_norm: true,
            positions: PositionKind::Learned,
            activation: Activation::Relu,
            tied_embeddings: true,
            init_std: 0.02,
        }
    }
}

impl Validate for BaselineConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        TransformerSizes {
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            d_head: None,
            d_ff: self.d_ff,
            sinusoidal: self.positions == PositionKind::Sinusoidal,
            dropout: self.dropout,
            attn_dropout: self.attn_dropout,
            init_std: self.init_std,
        }
        .validate()?;
        Ok(())
    }
}

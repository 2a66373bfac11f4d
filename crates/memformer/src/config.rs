//! `[model]` with `arch = "memformer"`.

use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
use memlab_core::layers::{Activation, PositionKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemformerConfig {
    pub d_model: usize,
    /// Encoder layers (each reads the memory slots by cross-attention).
    pub n_encoder_layers: usize,
    /// Decoder layers (each reads the previous segment's encoding).
    pub n_decoder_layers: usize,
    pub n_heads: usize,
    pub d_head: Option<usize>,
    pub d_ff: usize,
    pub dropout: f64,
    pub attn_dropout: f64,
    pub pre_norm: bool,
    pub activation: Activation,
    /// Absolute positions of the tokens within a segment (shared by encoder
    /// and decoder): `learned` or `sinusoidal`.
    pub positions: PositionKind,
    /// k, the memory slots per sequence.
    pub num_slots: usize,
    /// Temperature of the slot attention that writes memory (< 1 sharpens).
    pub temperature: f64,
    pub tied_embeddings: bool,
    /// Multiply token embeddings by √d_model (Vaswani et al., 2017, §3.4).
    pub scale_embeddings: bool,
    pub init_std: f64,
}

impl Default for MemformerConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            n_encoder_layers: 2,
            n_decoder_layers: 2,
            n_heads: 4,
            d_head: None,
            d_ff: 256,
            dropout: 0.0,
            attn_dropout: 0.0,
            pre_norm: true,
            activation: Activation::Relu,
            positions: PositionKind::Learned,
            num_slots: 8,
            temperature: 0.5,
            tied_embeddings: true,
            scale_embeddings: false,
            init_std: 0.02,
        }
    }
}

impl Validate for MemformerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        TransformerSizes {
            d_model: self.d_model,
            n_layers: self.n_encoder_layers,
            n_heads: self.n_heads,
            d_head: self.d_head,
            d_ff: self.d_ff,
            sinusoidal: self.positions == PositionKind::Sinusoidal,
            dropout: self.dropout,
            attn_dropout: self.attn_dropout,
            init_std: self.init_std,
        }
        .validate()
        .map_err(|e| {
            if e.field == "n_layers" {
                ConfigError::new("n_encoder_layers", e.message)
            } else {
                e
            }
        })?;
        check::positive("n_decoder_layers", self.n_decoder_layers)?;
        check::positive("num_slots", self.num_slots)?;
        if !(self.temperature > 0.0 && self.temperature <= 1.0) {
            return Err(ConfigError::new(
                "temperature",
                format!("must be in (0, 1], got {}", self.temperature),
            ));
        }
        Ok(())
    }
}

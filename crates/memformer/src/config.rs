//! `[model]` with `arch = "memformer"`.

use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
use memlab_core::layers::PositionKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemformerConfig {
    /// `d_model`, `n_heads`, `d_head`, `d_ff`, dropouts, `pre_norm` (pre-LN
    /// by default), `activation`, `tied_embeddings`, `scale_embeddings`
    /// (×√d_model, Vaswani et al., 2017, §3.4; off by default), `init_std`.
    pub transformer: TransformerSizes,
    /// Encoder layers (each reads the memory slots by cross-attention).
    pub n_encoder_layers: usize,
    /// Decoder layers (each reads the previous segment's encoding).
    pub n_decoder_layers: usize,
    /// Absolute positions of the tokens within a segment (shared by encoder
    /// and decoder): `learned` or `sinusoidal`.
    pub positions: PositionKind,
    /// k, the memory slots per sequence.
    pub num_slots: usize,
    /// Temperature of the slot attention that writes memory (< 1 sharpens).
    pub temperature: f64,
}

impl Default for MemformerConfig {
    fn default() -> Self {
        Self {
            transformer: TransformerSizes::default(),
            n_encoder_layers: 2,
            n_decoder_layers: 2,
            positions: PositionKind::Learned,
            num_slots: 8,
            temperature: 0.5,
        }
    }
}

impl Validate for MemformerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.transformer
            .check(self.positions == PositionKind::Sinusoidal)?;
        check::positive("n_encoder_layers", self.n_encoder_layers)?;
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

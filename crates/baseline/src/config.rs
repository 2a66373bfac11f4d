//! `[model]` with `arch = "baseline"`.

use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
use memlab_core::layers::PositionKind;
use serde::{Deserialize, Serialize};

/// Sizes and options of the baseline Transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// `d_model`, `n_heads`, `d_ff`, dropouts, `pre_norm` (default: pre-LN,
    /// GPT-2's), `activation`, `tied_embeddings`, `init_std`.
    pub transformer: TransformerSizes,
    pub n_layers: usize,
    /// Absolute positions: `learned`, `sinusoidal` or `none`.
    pub positions: PositionKind,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            transformer: TransformerSizes::default(),
            n_layers: 2,
            positions: PositionKind::Learned,
        }
    }
}

impl Validate for BaselineConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.transformer
            .check(self.positions == PositionKind::Sinusoidal)?;
        check::positive("n_layers", self.n_layers)
    }
}

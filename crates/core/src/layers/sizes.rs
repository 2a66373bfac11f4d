//! The sizes and options every Transformer of memlab shares (Vaswani et al.,
//! 2017, §3; Dai et al., 2019, for `d_head` and the embedding scale): one
//! type that each architecture's `[model]` config holds as its
//! `transformer` field, that validates them and that builds the blocks,
//! the token embedding and the final LayerNorm from them.
//!
//! In a config file these fields sit flat in `[model]` beside the
//! architecture's own (`d_model = 64`, not `[model.transformer]`):
//! [`crate::registry::parse_model_config`] moves them into `transformer`,
//! over the architecture's defaults for them.

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check};
use crate::layers::{Activation, TokenEmbeddingConfig, TransformerBlockConfig};

/// The shared sizes and options. Defaults: a small pre-LN Transformer
/// (`d_model` 64, 4 heads, `d_ff` 256, no dropout, ReLU, tied embeddings
/// not scaled, N(0, 0.02²)); architectures override what their paper sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSizes {
    pub d_model: usize,
    pub n_heads: usize,
    /// Size of each head; `d_model / n_heads` when absent.
    pub d_head: Option<usize>,
    pub d_ff: usize,
    /// Dropout on embeddings, residual branches and the feed-forward network.
    pub dropout: f64,
    /// Dropout on attention probabilities (`dropatt`).
    pub attn_dropout: f64,
    /// Pre-LayerNorm (GPT-2, `pre_lnorm`) when true, post-LayerNorm
    /// (the original Transformer's) when false.
    pub pre_norm: bool,
    /// `relu` or `gelu`.
    pub activation: Activation,
    /// Output head tied to the token embedding.
    pub tied_embeddings: bool,
    /// Multiply token embeddings by √d_model (§3.4; the official Tr-XL's `emb_scale`).
    pub scale_embeddings: bool,
    /// Standard deviation of the N(0, std²) initialisation (`init_std`).
    pub init_std: f64,
}

impl Default for TransformerSizes {
    fn default() -> Self {
        Self {
            d_model: 64,
            n_heads: 4,
            d_head: None,
            d_ff: 256,
            dropout: 0.0,
            attn_dropout: 0.0,
            pre_norm: true,
            activation: Activation::Relu,
            tied_embeddings: true,
            scale_embeddings: false,
            init_std: 0.02,
        }
    }
}

impl TransformerSizes {
    /// The field names, as a `[model]` table gives them.
    pub const FIELDS: &'static [&'static str] = &[
        "d_model",
        "n_heads",
        "d_head",
        "d_ff",
        "dropout",
        "attn_dropout",
        "pre_norm",
        "activation",
        "tied_embeddings",
        "scale_embeddings",
        "init_std",
    ];

    /// Checks every value (`sinusoidal`: the model uses sinusoids, absolute
    /// or relative, so `d_model` must be even).
    pub fn check(&self, sinusoidal: bool) -> Result<(), ConfigError> {
        check::positive("d_model", self.d_model)?;
        check::positive("n_heads", self.n_heads)?;
        check::positive("d_ff", self.d_ff)?;
        match self.d_head {
            Some(d) => check::positive("d_head", d)?,
            None => check::divides("d_model", self.d_model, "n_heads", self.n_heads)?,
        }
        if sinusoidal && !self.d_model.is_multiple_of(2) {
            return Err(ConfigError::new(
                "d_model",
                format!(
                    "must be even for sinusoidal positions, got {}",
                    self.d_model
                ),
            ));
        }
        check::probability("dropout", self.dropout)?;
        check::probability("attn_dropout", self.attn_dropout)?;
        check::positive_f64("init_std", self.init_std)?;
        Ok(())
    }

    /// Size of each head.
    pub fn d_head(&self) -> usize {
        self.d_head.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    /// One block of this Transformer (absolute, relative or cross-attending:
    /// [`TransformerBlockConfig::init`] and its siblings).
    pub fn block(&self) -> TransformerBlockConfig {
        TransformerBlockConfig::new(self.d_model, self.n_heads, self.d_ff)
            .with_d_head(self.d_head)
            .with_dropout(self.dropout)
            .with_attn_dropout(self.attn_dropout)
            .with_pre_norm(self.pre_norm)
            .with_activation(self.activation)
            .with_init_std(self.init_std)
    }

    /// The token embedding (and output head) over `vocab_size` tokens.
    pub fn embedding(&self, vocab_size: usize) -> TokenEmbeddingConfig {
        TokenEmbeddingConfig::new(vocab_size, self.d_model)
            .with_tied(self.tied_embeddings)
            .with_scale(self.scale_embeddings)
            .with_init_std(self.init_std)
    }

    /// The LayerNorm after the last block of a pre-LN stack (none post-LN,
    /// where every block ends normalised).
    pub fn final_norm<B: Backend>(&self, device: &B::Device) -> Option<LayerNorm<B>> {
        self.pre_norm
            .then(|| LayerNormConfig::new(self.d_model).init(device))
    }
}

//! `[model]` with `arch = "gpt2"`: the fields of Hugging Face's
//! `GPT2Config` (`config.json`) that decide what GPT-2 computes, under the
//! same names and with the same defaults, except the sizes, which default
//! to a small model (GPT-2 small is `n_layer = 12`, `n_embd = 768`,
//! `n_head = 12`).

use memlab_core::ModelContext;
use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::layers::{Activation, TransformerBlockConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gpt2Config {
    pub n_layer: usize,
    /// `d_model`.
    pub n_embd: usize,
    pub n_head: usize,
    /// The feed-forward width; `4 n_embd` when absent (`null` in
    /// `config.json`).
    pub n_inner: Option<usize>,
    /// The learned positions: the longest segment the model reads.
    pub n_positions: usize,
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (GPT-2's tanh approximation), `gelu` or `relu`.
    pub activation_function: Activation,
    /// Dropout on every residual branch and in the feed-forward network.
    pub resid_pdrop: f64,
    /// Dropout on the embeddings (tokens plus positions).
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities.
    pub attn_pdrop: f64,
    /// The N(0, σ²) initialisation of a model that is not loaded.
    pub initializer_range: f64,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_inner: None,
            n_positions: 1024,
            layer_norm_epsilon: 1e-5,
            activation_function: Activation::GeluNew,
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            initializer_range: 0.02,
        }
    }
}

impl Gpt2Config {
    /// The feed-forward width.
    pub fn d_ff(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// One of GPT-2's blocks (§2.3: LayerNorm at the input of each
    /// sub-block, GPT-2's pre-LN).
    pub fn block(&self) -> TransformerBlockConfig {
        TransformerBlockConfig::new(self.n_embd, self.n_head, self.d_ff())
            .with_dropout(self.resid_pdrop)
            .with_attn_dropout(self.attn_pdrop)
            .with_pre_norm(true)
            .with_activation(self.activation_function)
            .with_init_std(self.initializer_range)
            .with_norm_eps(self.layer_norm_epsilon)
    }

    /// The segments must fit the learned positions.
    pub fn check_context(&self, ctx: &ModelContext) -> Result<(), ConfigError> {
        if ctx.max_segment_len > self.n_positions {
            return Err(ConfigError::new(
                "n_positions",
                format!(
                    "is {}, but the segments hold {} tokens: GPT-2 has a learned position for \
                     each token of a segment",
                    self.n_positions, ctx.max_segment_len
                ),
            ));
        }
        Ok(())
    }
}

/// GPT-2's fields of a memory's `[model]` table, once the memory's own
/// have been taken out (the memory configs' deserializers: serde's
/// `flatten` would let an unknown field pass, `Gpt2Config` denies any).
pub(crate) fn gpt2_fields<E: serde::de::Error>(table: toml::Table) -> Result<Gpt2Config, E> {
    Gpt2Config::deserialize(toml::Value::Table(table)).map_err(E::custom)
}

/// Takes the whole number `key` out of a memory's `[model]` table,
/// `default` when absent; `what` says what it counts in the error.
pub(crate) fn take_count<E: serde::de::Error>(
    table: &mut toml::Table,
    key: &str,
    default: usize,
    what: &str,
) -> Result<usize, E> {
    match table.remove(key) {
        None => Ok(default),
        Some(toml::Value::Integer(n)) if n >= 0 => Ok(n as usize),
        Some(other) => Err(E::custom(format!("{key}: expected {what}, got {other}"))),
    }
}

impl Validate for Gpt2Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("n_layer", self.n_layer)?;
        check::positive("n_embd", self.n_embd)?;
        check::positive("n_head", self.n_head)?;
        check::divides("n_embd", self.n_embd, "n_head", self.n_head)?;
        if let Some(inner) = self.n_inner {
            check::positive("n_inner", inner)?;
        }
        check::positive("n_positions", self.n_positions)?;
        check::positive_f64("layer_norm_epsilon", self.layer_norm_epsilon)?;
        check::probability("resid_pdrop", self.resid_pdrop)?;
        check::probability("embd_pdrop", self.embd_pdrop)?;
        check::probability("attn_pdrop", self.attn_pdrop)?;
        check::positive_f64("initializer_range", self.initializer_range)
    }
}

//! `[model]` with `arch = "infinity-former"`: the Transformer-XL fields
//! (same names as `arch = "transformer-xl"`) and the long-term memory's.
//! Defaults of the long-term memory are the official sorting run's
//! (`run_sort_inftyformer.sh`: 512 basis functions, KL weight 1e-6,
//! σ₀ = 0.05, the CNN gate) and `long_term_attention.py`'s constants
//! (512 samples, τ = 0.75, ridge penalty 1, widths 0.01 and 0.05).

use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfinityFormerConfig {
    /// `d_model`, `n_heads`, `d_head`, `d_ff`, dropouts, `pre_norm`
    /// (post-LayerNorm by default), `activation`, `tied_embeddings`,
    /// `scale_embeddings` (on by default), `init_std`: as Transformer-XL's.
    pub transformer: TransformerSizes,
    pub n_layers: usize,
    /// Short-term memory: cached positions per layer (Transformer-XL's).
    pub mem_len: usize,
    pub clamp_len: Option<usize>,
    pub untie_r: bool,
    /// The long-term memory (false: exactly Transformer-XL).
    pub long_term: bool,
    /// The long-term memory's settings, given flat in `[model]`
    /// (`num_basis = 512`, ...: [`LongTermSettings::FIELDS`]).
    pub memory: LongTermSettings,
}

impl Default for InfinityFormerConfig {
    fn default() -> Self {
        Self {
            transformer: TransformerSizes {
                pre_norm: false,
                scale_embeddings: true,
                ..TransformerSizes::default()
            },
            n_layers: 2,
            mem_len: 16,
            clamp_len: None,
            untie_r: false,
            long_term: true,
            memory: LongTermSettings {
                num_basis: 512,
                basis_sigmas: vec![0.01, 0.05],
                ridge_penalty: 1.0,
                tau: 0.75,
                num_samples: 512,
                gate: true,
                sticky: false,
                sticky_bins: 100,
                kl_weight: 1e-6,
                sigma_0: 0.05,
                mu_0: None,
                sigma_floor: 1e-6,
            },
        }
    }
}

impl Validate for InfinityFormerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.transformer.check(true)?;
        check::positive("n_layers", self.n_layers)?;
        self.memory.validate()?;
        if let Some(mu) = self.memory.mu_0
            && !(0.0..=1.0).contains(&mu)
        {
            return Err(ConfigError::new(
                "mu_0",
                format!("must be in [0, 1], got {mu}"),
            ));
        }
        Ok(())
    }
}

/// The long-term memory of one layer, whatever model carries it (the
/// ∞-former here, GPT-2 in memlab-gpt2): the signal, its update and the
/// continuous attention's constants (Martins et al., 2022, §3.1–3.3). The
/// ∞-former's `[model]` gives them flat ([`Self::FIELDS`]); GPT-2 + LTM's
/// in a table of their own. Every field is given or filled in from the
/// model's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongTermSettings {
    /// N, the number of Gaussian basis functions.
    pub num_basis: usize,
    /// Widths σ of the basis functions: each centre gets every width, the
    /// centres `linspace(0, 1, N / widths)`.
    pub basis_sigmas: Vec<f64>,
    /// λ of the ridge regression.
    pub ridge_penalty: f64,
    /// The old signal is contracted into [0, τ].
    pub tau: f64,
    /// M, the points the old signal is sampled at when contracted.
    pub num_samples: usize,
    /// Gate the memory's input by sigmoid(Conv1d(kernel 3)) (`mask_type = 'cnn'`).
    pub gate: bool,
    /// Sticky memories: sample the old signal where the previous step's
    /// attention put its density (`sticky_bins` bins), not uniformly.
    pub sticky: bool,
    pub sticky_bins: usize,
    /// Weight of the KL regulariser toward N(μ₀, σ₀²) (0: off).
    pub kl_weight: f64,
    pub sigma_0: f64,
    /// μ₀; absent: the KL term has no mean part.
    pub mu_0: Option<f64>,
    /// σ² is clamped to at least this.
    pub sigma_floor: f64,
}

impl LongTermSettings {
    /// The field names, as a `[model]` table gives them.
    pub const FIELDS: &'static [&'static str] = &[
        "num_basis",
        "basis_sigmas",
        "ridge_penalty",
        "tau",
        "num_samples",
        "gate",
        "sticky",
        "sticky_bins",
        "kl_weight",
        "sigma_0",
        "mu_0",
        "sigma_floor",
    ];

    /// Errors name the field (as `model.<field>` from the caller's table).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::positive("num_basis", self.num_basis)?;
        check::positive("num_samples", self.num_samples)?;
        check::positive("sticky_bins", self.sticky_bins)?;
        if self.basis_sigmas.is_empty()
            || self
                .basis_sigmas
                .iter()
                .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(ConfigError::new(
                "basis_sigmas",
                format!("must be widths > 0, got {:?}", self.basis_sigmas),
            ));
        }
        let widths = self.basis_sigmas.len();
        if !self.num_basis.is_multiple_of(widths) || self.num_basis / widths < 2 {
            return Err(ConfigError::new(
                "num_basis",
                format!(
                    "must be a multiple of the {widths} basis widths with at least 2 centres, got {}",
                    self.num_basis
                ),
            ));
        }
        check::positive_f64("ridge_penalty", self.ridge_penalty)?;
        if !(self.tau > 0.0 && self.tau < 1.0) {
            return Err(ConfigError::new(
                "tau",
                format!("must be in (0, 1), got {}", self.tau),
            ));
        }
        check::non_negative_f64("kl_weight", self.kl_weight)?;
        check::positive_f64("sigma_0", self.sigma_0)?;
        check::positive_f64("sigma_floor", self.sigma_floor)?;
        if let Some(mu) = self.mu_0
            && !mu.is_finite()
        {
            return Err(ConfigError::new(
                "mu_0",
                format!("must be finite, got {mu}"),
            ));
        }
        Ok(())
    }
}

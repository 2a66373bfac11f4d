//! What an architecture declares so that the interop crate (memlab-interop)
//! can map its weights onto an external format. The formats themselves (key
//! tables, readers, writers) live there; here is only the architecture's
//! side of the bargain, which [`crate::Architecture::lm_rmt_layout`]
//! returns.

use crate::layers::Activation;

/// Where a memlab model keeps the parts of `MemTransformerLM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmRmtLayout {
    /// Module path of the list of relative blocks (`layers` in
    /// Transformer-XL, `relative_blocks` in RMT).
    pub blocks: &'static str,
    pub n_layers: usize,
    /// Module path of the learned memory tokens `[m, d_model]`, when the
    /// model has memory tokens (`num_mem_tokens` > 0).
    pub memory_tokens: Option<&'static str>,
    /// The output weight is the embedding (`tie_weight`).
    pub tied: bool,
    pub d_model: usize,
}

/// The settings every `MemTransformerLM` has and memlab leaves open: one
/// `r_w_bias`/`r_r_bias` pair shared by all layers, embeddings times
/// √d_model, ReLU; the reason when a config departs from them.
pub fn lm_rmt_compatible(
    untie_r: bool,
    scale_embeddings: bool,
    activation: Activation,
) -> Result<(), String> {
    if untie_r {
        return Err(
            "`untie_r = true`: LM-RMT's MemTransformerLM shares one r_w_bias/r_r_bias \
                    pair by all layers"
                .into(),
        );
    }
    if !scale_embeddings {
        return Err(
            "`scale_embeddings = false`: MemTransformerLM multiplies embeddings by \
                    √d_model"
                .into(),
        );
    }
    if activation != Activation::Relu {
        return Err("`activation`: MemTransformerLM's feed-forward network uses ReLU".into());
    }
    Ok(())
}

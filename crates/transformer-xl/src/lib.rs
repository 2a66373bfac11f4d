//! memlab-transformer-xl: Transformer-XL (Dai, Yang, Yang, Carbonell, Le,
//! Salakhutdinov, ACL 2019, arXiv 1901.02860), faithful to the paper and its
//! official PyTorch code (kimiyoung/transformer-xl, `MemTransformerLM` with
//! `attn_type = 0`):
//!
//! - segment-level recurrence with state reuse (§3.2): each layer caches its
//!   input for the last `mem_len` positions, without gradient
//!   (memlab-core's `LayerCache`);
//! - relative positional encodings (§3.3): memlab-core's
//!   `RelativeMultiHeadAttention` with global `u`, `v` biases ([`model`]).

pub mod config;
pub mod model;

pub use config::XlConfig;
/// Transformer-XL's memory: memlab-core's per-layer cache.
pub type XlMemory<B> = memlab_core::cache::LayerCache<B>;
pub use memlab_core::cache::xl_mask;
pub use model::TransformerXl;

use burn::prelude::*;
use memlab_core::SegmentOutput;
use memlab_core::interop::{LmRmtLayout, lm_rmt_compatible};

memlab_core::architecture! {
    /// The registry entry.
    pub struct TransformerXlArch {
        name: "transformer-xl",
        summary: "Transformer-XL: per-layer cache of mem_len states, relative positions (Dai et al. 2019)",
        config: XlConfig,
        model: TransformerXl,
    }

    /// LM-RMT's `MemTransformerLM` with `num_mem_tokens 0` (and
    /// kimiyoung/transformer-xl's with `untie_r` off): `layers.{i}` are
    /// memlab's `layers.{i}`.
    fn lm_rmt_layout(config: &XlConfig) -> Result<LmRmtLayout, String> {
        let t = &config.transformer;
        lm_rmt_compatible(config.untie_r, t.scale_embeddings, t.activation)?;
        Ok(LmRmtLayout {
            blocks: "layers",
            n_layers: config.n_layers,
            memory_tokens: None,
            tied: t.tied_embeddings,
            d_model: t.d_model,
        })
    }

    fn lm_rmt_forward<B: Backend>(
        model: &TransformerXl<B>,
        tokens: Tensor<B, 2, Int>,
        memory: XlMemory<B>,
    ) -> Option<(SegmentOutput<B, XlMemory<B>>, Tensor<B, 3>)> {
        let (h, next) = model.hidden(tokens, memory);
        Some((
            SegmentOutput::new(model.embedding.logits(h.clone()), next),
            h,
        ))
    }
}

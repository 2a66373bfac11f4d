//! memlab-rmt: the Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev,
//! NeurIPS 2022, arXiv 2207.06881), faithful to the paper and its language-
//! model code (booydar/LM-RMT):
//!
//! - `m` memory tokens read at the start of each segment and written at its
//!   end (`[read ; segment ; write]`, §3), or read only (MemTr);
//! - the write block's last-layer outputs become the next segment's memory;
//! - the attention mask of the official code ([`mask`]);
//! - two backbones: a plain Transformer with absolute positions, and
//!   Transformer-XL (relative positions and a cache of the augmented
//!   sequence): "Tr-XL + RMT".

pub mod config;
pub mod mask;
pub mod memory;
pub mod model;

pub use config::{Backbone, MemoryInit, RmtConfig};
pub use mask::{rmt_mask, rmt_masked};
pub use memory::RmtMemory;
pub use model::Rmt;

use burn::prelude::*;
use memlab_core::SegmentOutput;
use memlab_core::interop::{LmRmtLayout, lm_rmt_compatible};

memlab_core::architecture! {
    /// The registry entry.
    pub struct RmtArch {
        name: "rmt",
        summary: "Recurrent Memory Transformer: memory tokens read and written per segment (Bulatov et al. 2022)",
        config: RmtConfig,
        model: Rmt,
    }

    const PRESETS: &'static [(&'static str, &'static str)] = &[("paper", config::PAPER_PRESET)];

    /// LM-RMT's `MemTransformerLM` is RMT on the Tr-XL backbone:
    /// `layers.{i}` are memlab's `relative_blocks.{i}`, `mem_tokens` its
    /// learned initial memory.
    fn lm_rmt_layout(config: &RmtConfig) -> Result<LmRmtLayout, String> {
        if config.backbone != Backbone::TransformerXl {
            return Err(
                "LM-RMT's MemTransformerLM (attn_type 0) is RMT on the Tr-XL backbone: \
                        set `backbone = \"transformer-xl\"`"
                    .into(),
            );
        }
        if config.memory_loss_weight > 0.0 {
            return Err(
                "`memory_loss_weight`: LM-RMT's code has no auxiliary memory loss (nor \
                        its extra output row)"
                    .into(),
            );
        }
        let t = &config.transformer;
        lm_rmt_compatible(config.untie_r, t.scale_embeddings, t.activation)?;
        Ok(LmRmtLayout {
            blocks: "relative_blocks",
            n_layers: config.n_layers,
            memory_tokens: (config.num_mem_tokens > 0).then_some("memory_init"),
            tied: t.tied_embeddings,
            d_model: t.d_model,
        })
    }

    fn lm_rmt_forward<B: Backend>(
        model: &Rmt<B>,
        tokens: Tensor<B, 2, Int>,
        memory: RmtMemory<B>,
    ) -> Option<(SegmentOutput<B, RmtMemory<B>>, Tensor<B, 3>)> {
        let s = tokens.dims()[1];
        let (h, next) = model.augmented_hidden(tokens, memory);
        let logits = model
            .embedding
            .logits(h.clone().narrow(1, model.num_mem_tokens, s));
        Some((SegmentOutput::new(logits, next), h))
    }
}

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
pub use model::{TransformerXl, xl_mask};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{Architecture, ModelContext};

/// The registry entry.
pub struct TransformerXlArch;

impl Architecture for TransformerXlArch {
    const NAME: &'static str = "transformer-xl";
    const SUMMARY: &'static str =
        "Transformer-XL: per-layer cache of mem_len states, relative positions (Dai et al. 2019)";

    type Config = XlConfig;
    type Model<B: Backend> = TransformerXl<B>;
    type TrainModel<B: AutodiffBackend> = TransformerXl<B>;

    fn init<B: Backend>(
        config: &XlConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> TransformerXl<B> {
        config.init(ctx, device)
    }

    fn init_train<B: AutodiffBackend>(
        config: &XlConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> TransformerXl<B> {
        config.init(ctx, device)
    }
}

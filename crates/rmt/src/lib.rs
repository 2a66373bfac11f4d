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
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{Architecture, ModelContext};

/// The registry entry.
pub struct RmtArch;

impl Architecture for RmtArch {
    const NAME: &'static str = "rmt";
    const SUMMARY: &'static str = "Recurrent Memory Transformer: memory tokens read and written per segment (Bulatov et al. 2022)";

    type Config = RmtConfig;
    const PRESETS: &'static [(&'static str, &'static str)] = &[("paper", config::PAPER_PRESET)];
    type Model<B: Backend> = Rmt<B>;
    type TrainModel<B: AutodiffBackend> = Rmt<B>;

    fn init<B: Backend>(config: &RmtConfig, ctx: &ModelContext, device: &B::Device) -> Rmt<B> {
        config.init(ctx, device)
    }

    fn init_train<B: AutodiffBackend>(
        config: &RmtConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Rmt<B> {
        config.init(ctx, device)
    }
}

//! memlab-baseline: a decoder-only Transformer (Vaswani et al., 2017;
//! GPT-style causal self-attention) with no memory. It sees one segment at a
//! time, so nothing it read in segment `t` can reach segment `t + 1`: the
//! reference point every memory architecture is compared against.

pub mod config;
pub mod model;

pub use config::BaselineConfig;
pub use model::Baseline;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{Architecture, ModelContext};

/// The registry entry.
pub struct BaselineArch;

impl Architecture for BaselineArch {
    const NAME: &'static str = "baseline";
    const SUMMARY: &'static str = "Transformer decoder with no memory (one segment at a time)";

    type Config = BaselineConfig;
    type Model<B: Backend> = Baseline<B>;
    type TrainModel<B: AutodiffBackend> = Baseline<B>;

    fn init<B: Backend>(
        config: &BaselineConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Baseline<B> {
        config.init(ctx, device)
    }

    fn init_train<B: AutodiffBackend>(
        config: &BaselineConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Baseline<B> {
        config.init(ctx, device)
    }
}

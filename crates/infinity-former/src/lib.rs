//! memlab-infinity-former: the ∞-former (Martins, Marinho, Martins, ACL
//! 2022, arXiv 2109.00301), faithful to the paper and its official code
//! (deep-spin/infinite-former, `sorting/`): a Transformer-XL whose every
//! layer also attends to an unbounded continuous long-term memory.
//!
//! - [`basis`]: Gaussian radial basis functions, the ridge regression that
//!   fits a signal to vectors, the closed-form expectation (host, f64);
//! - [`long_term`]: a layer's long-term memory: gated write, contraction,
//!   continuous attention with a Gaussian per query, the KL regulariser,
//!   sticky memories;
//! - [`model`]: the forward pass; [`memory`]: what is carried.
//!
//! docs/architectures/infinity-former.md maps each equation to its code.

pub mod basis;
pub mod config;
pub mod long_term;
pub mod memory;
pub mod model;

pub use config::InfinityFormerConfig;
pub use long_term::{LongTermAttention, LongTermContext};
pub use memory::InfinityMemory;
pub use model::InfinityFormer;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{Architecture, ModelContext};

/// The registry entry.
pub struct InfinityFormerArch;

impl Architecture for InfinityFormerArch {
    const NAME: &'static str = "infinity-former";
    const SUMMARY: &'static str = "∞-former: Transformer-XL plus a continuous long-term memory of N basis functions per layer (Martins et al. 2022)";

    type Config = InfinityFormerConfig;
    type Model<B: Backend> = InfinityFormer<B>;
    type TrainModel<B: AutodiffBackend> = InfinityFormer<B>;

    fn init<B: Backend>(
        config: &InfinityFormerConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> InfinityFormer<B> {
        config.init(ctx, device)
    }

    fn init_train<B: AutodiffBackend>(
        config: &InfinityFormerConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> InfinityFormer<B> {
        config.init(ctx, device)
    }
}

//! memlab-memformer: Memformer (Wu, Lan, Qian, Gu, Geramifard, Yu,
//! "Memformer: A Memory-Augmented Transformer for Sequence Modeling",
//! Findings of AACL 2022, arXiv 2010.06891): an encoder-decoder whose
//! encoder reads and writes a fixed number of memory slots per sequence.
//!
//! - [`writer`]: slot attention with a temperature, each slot seeing itself
//!   and the encoder outputs only;
//! - [`model`]: the segment forward pass and biased memory normalisation;
//! - [`memory`]: what is carried (slots and the last encoding).
//!
//! Memory replay back-propagation is memlab-core's `mrbp`, which works for
//! every model. docs/architectures/memformer.md maps the paper to the code.

pub mod config;
pub mod memory;
pub mod model;
pub mod writer;

pub use config::MemformerConfig;
pub use memory::MemformerMemory;
pub use model::Memformer;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{Architecture, ModelContext};

/// The registry entry.
pub struct MemformerArch;

impl Architecture for MemformerArch {
    const NAME: &'static str = "memformer";
    const SUMMARY: &'static str = "Memformer: encoder-decoder with k memory slots, slot-attention writes, biased memory normalisation (Wu et al. 2022)";

    type Config = MemformerConfig;
    type Model<B: Backend> = Memformer<B>;
    type TrainModel<B: AutodiffBackend> = Memformer<B>;

    fn init<B: Backend>(
        config: &MemformerConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Memformer<B> {
        config.init(ctx, device)
    }

    fn init_train<B: AutodiffBackend>(
        config: &MemformerConfig,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Memformer<B> {
        config.init(ctx, device)
    }
}

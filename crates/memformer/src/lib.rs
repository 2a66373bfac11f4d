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

memlab_core::architecture! {
    /// The registry entry.
    pub struct MemformerArch {
        name: "memformer",
        summary: "Memformer: encoder-decoder with k memory slots, slot-attention writes, biased memory normalisation (Wu et al. 2022)",
        config: MemformerConfig,
        model: Memformer,
    }
}

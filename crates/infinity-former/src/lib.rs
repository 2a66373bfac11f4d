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

pub use config::{InfinityFormerConfig, LongTermSettings};
pub use long_term::{LongTermAttention, LongTermContext};
pub use memory::InfinityMemory;
pub use model::InfinityFormer;

memlab_core::architecture! {
    /// The registry entry.
    pub struct InfinityFormerArch {
        name: "infinity-former",
        summary: "∞-former: Transformer-XL plus a continuous long-term memory of N basis functions per layer (Martins et al. 2022)",
        config: InfinityFormerConfig,
        model: InfinityFormer,
    }

    const FLAT_TABLES: &'static [(&'static str, &'static [&'static str])] =
        &[("memory", LongTermSettings::FIELDS)];
}

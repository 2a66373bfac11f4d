//! memlab-baseline: a decoder-only Transformer (Vaswani et al., 2017;
//! GPT-style causal self-attention) with no memory. It sees one segment at a
//! time, so nothing it read in segment `t` can reach segment `t + 1`: the
//! reference point every memory architecture is compared against.

pub mod config;
pub mod model;

pub use config::BaselineConfig;
pub use model::Baseline;

memlab_core::architecture! {
    /// The registry entry.
    pub struct BaselineArch {
        name: "baseline",
        summary: "Transformer decoder with no memory (one segment at a time)",
        config: BaselineConfig,
        model: Baseline,
    }
}

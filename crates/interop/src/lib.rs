//! memlab-interop: memlab models in other code's weight formats, both ways,
//! through burn-store.
//!
//! - [`lm_rmt`]: booydar/LM-RMT's `MemTransformerLM` (the official code of
//!   the RMT paper and its Transformer-XL baseline): its state_dict keys and
//!   layouts, reading `.pt` / `.safetensors`, writing `.safetensors`.
//!
//! An architecture says where it keeps each external model's parts through
//! its [`memlab_core::Architecture`] hooks ([`memlab_core::interop`]);
//! `memlab import`, `export` and `parity` build on this crate.

pub mod lm_rmt;

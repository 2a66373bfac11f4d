//! memlab-interop: memlab models in other code's weight formats, both ways,
//! through burn-store.
//!
//! - [`lm_rmt`]: booydar/LM-RMT's `MemTransformerLM` (the official code of
//!   the RMT paper and its Transformer-XL baseline): its state_dict keys and
//!   layouts, reading `.pt` / `.safetensors`, writing `.safetensors`;
//! - [`hf_gpt2`]: Hugging Face's GPT-2 (`GPT2LMHeadModel`'s
//!   `model.safetensors` and `config.json`), both ways;
//! - [`weights`]: what both share (reading, errors naming a key, writing).
//!
//! An architecture says where it keeps each external model's parts through
//! its [`memlab_core::Architecture`] hooks ([`memlab_core::interop`]);
//! `memlab import`, `export` and `parity` build on this crate.

pub mod hf_gpt2;
pub mod lm_rmt;
pub mod weights;

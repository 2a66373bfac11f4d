//! memlab-gpt2: GPT-2 (Radford et al., 2019, "Language Models are
//! Unsupervised Multitask Learners", §2.3), sized and named as Hugging
//! Face's `GPT2Config` and `GPT2LMHeadModel` size and name it, so that the
//! weights of any GPT-2 (`model.safetensors` + `config.json`, through
//! memlab-interop's `hf_gpt2`) load into it, and a memory can be put on a
//! pre-trained model.
//!
//! Alone (`gpt2`) it is the ∞-former paper's pre-trained baseline: no
//! memory, its learned positions restarting at every segment, as the
//! official fine-tuning code (deep-spin/infinite-former, `finetune_gpt2/`)
//! feeds GPT-2 one block of text at a time. `gpt2-rmt` adds RMT's memory
//! tokens ([`rmt`]), `gpt2-ltm` the ∞-former's long-term memory
//! ([`long_term`]).

pub mod config;
pub mod long_term;
pub mod model;
pub mod rmt;

pub use config::Gpt2Config;
pub use long_term::{Gpt2Ltm, Gpt2LtmConfig, Gpt2LtmMemory};
pub use model::Gpt2;
pub use rmt::{Gpt2Rmt, Gpt2RmtConfig};

memlab_core::architecture! {
    /// The registry entry.
    pub struct Gpt2Arch {
        name: "gpt2",
        summary: "GPT-2 with Hugging Face's sizes and weights, no memory (positions restart per segment)",
        config: Gpt2Config,
        model: Gpt2,
    }

    fn check(
        config: &Gpt2Config,
        ctx: &memlab_core::ModelContext,
    ) -> Result<(), memlab_core::config::ConfigError> {
        config.check_context(ctx)
    }
}

memlab_core::architecture! {
    /// The registry entry of GPT-2 with RMT's memory tokens.
    pub struct Gpt2RmtArch {
        name: "gpt2-rmt",
        summary: "GPT-2 (Hugging Face weights) with RMT's memory tokens read and written around each segment",
        config: Gpt2RmtConfig,
        model: Gpt2Rmt,
    }

    fn check(
        config: &Gpt2RmtConfig,
        ctx: &memlab_core::ModelContext,
    ) -> Result<(), memlab_core::config::ConfigError> {
        config.check_context(ctx)
    }
}

memlab_core::architecture! {
    /// The registry entry of GPT-2 with the ∞-former's long-term memory.
    pub struct Gpt2LtmArch {
        name: "gpt2-ltm",
        summary: "GPT-2 (Hugging Face weights) with the ∞-former's continuous long-term memory in every block (Martins et al. 2022, §4.2)",
        config: Gpt2LtmConfig,
        model: Gpt2Ltm,
    }

    fn check(
        config: &Gpt2LtmConfig,
        ctx: &memlab_core::ModelContext,
    ) -> Result<(), memlab_core::config::ConfigError> {
        config.check_context(ctx)
    }
}

//! The model registry: one line per architecture crate.

memlab_core::architectures! {
    memlab_baseline::BaselineArch,
    memlab_transformer_xl::TransformerXlArch,
    memlab_rmt::RmtArch,
    memlab_infinity_former::InfinityFormerArch,
    memlab_memformer::MemformerArch,
    memlab_gpt2::Gpt2Arch,
    memlab_gpt2::Gpt2RmtArch,
    memlab_gpt2::Gpt2LtmArch,
}

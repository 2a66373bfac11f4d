//! Model FLOPs (`SegmentModel::forward_flops`) across architectures: known
//! relations between them, each side counted by a different crate.

use burn::backend::Flex;
use memlab_baseline::BaselineArch;
use memlab_core::config::parse_toml;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, ModelContext, SegmentModel};
use memlab_infinity_former::InfinityFormerArch;
use memlab_rmt::RmtArch;
use memlab_transformer_xl::TransformerXlArch;

const VOCAB: usize = 50;
const D: usize = 32;
const SIZES: &str = "d_model = 32\nn_layers = 2\nn_heads = 4\nd_ff = 64\n";

fn flops<A: Architecture>(fields: &str, segment: usize) -> u64 {
    let ctx = ModelContext {
        vocab_size: VOCAB,
        max_segment_len: 64,
    };
    let table = parse_toml(&format!("{SIZES}{fields}")).unwrap();
    let config = parse_model_config::<A>(table, &ctx).unwrap();
    A::init::<Flex>(&config, &ctx, &Default::default()).forward_flops(segment)
}

/// The output head over `rows` positions.
fn head(rows: usize) -> u64 {
    2 * (rows * D * VOCAB) as u64
}

#[test]
fn rmt_costs_its_backbone_over_the_segment_and_both_memory_blocks() {
    let (s, m) = (16, 3);
    // [read ; segment ; write] through the blocks; the head sees the segment.
    let rmt = flops::<RmtArch>(&format!("num_mem_tokens = {m}\n"), s);
    assert_eq!(rmt, flops::<BaselineArch>("", s + 2 * m) - head(2 * m));

    let rmt_xl = flops::<RmtArch>(
        &format!("num_mem_tokens = {m}\nbackbone = \"transformer-xl\"\nmem_len = 8\n"),
        s,
    );
    let xl = flops::<TransformerXlArch>("mem_len = 8\n", s + 2 * m);
    assert_eq!(rmt_xl, xl - head(2 * m));

    // Read memory only (`mem_at_end = false`): one block of m more.
    let read_only = flops::<RmtArch>(&format!("num_mem_tokens = {m}\nmem_at_end = false\n"), s);
    assert_eq!(read_only, flops::<BaselineArch>("", s + m) - head(m));
}

#[test]
fn the_infinity_former_without_long_term_memory_costs_what_transformer_xl_does() {
    let s = 16;
    let xl = flops::<TransformerXlArch>("mem_len = 8\n", s);
    let short = flops::<InfinityFormerArch>("mem_len = 8\nlong_term = false\n", s);
    assert_eq!(short, xl);
    let long = flops::<InfinityFormerArch>("mem_len = 8\nnum_basis = 16\nnum_samples = 16\n", s);
    assert!(long > xl, "{long} vs {xl}");
}

#[test]
fn attention_makes_cost_per_token_grow_with_context() {
    // Per token: constant weight work plus attention linear in the context.
    let per_token = |s: usize| flops::<BaselineArch>("", s) as f64 / s as f64;
    let (a, b, c) = (per_token(8), per_token(16), per_token(32));
    assert!(a < b && b < c);
    // Exactly linear: the attention term per token is proportional to s.
    assert!(((c - b) - 2.0 * (b - a)).abs() < 1e-6 * c, "{a} {b} {c}");
}

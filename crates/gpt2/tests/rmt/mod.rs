// (a module of tests/gpt2.rs: one test binary for the crate)
//! GPT-2 with RMT's memory tokens (`arch = "gpt2-rmt"`).

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use memlab_core::{BpttDepth, MemoryState, ModelContext, SegmentModel};
use memlab_gpt2::{Gpt2RmtArch, Gpt2RmtConfig};
use memlab_train::testing::{
    assert_config_errors, assert_seeded_and_round_trips, seeded_model, segment_logits_with_a_change,
};

type B = Flex;
type AB = Autodiff<Flex>;

const CTX: ModelContext = ModelContext {
    vocab_size: 12,
    max_segment_len: 6,
};

fn config() -> Gpt2RmtConfig {
    Gpt2RmtConfig {
        gpt2: super::small_memory_gpt2(),
        num_mem_tokens: 2,
    }
}

fn seq(len: usize, offset: usize) -> Vec<i64> {
    (0..len).map(|i| ((i * 5 + offset) % 12) as i64).collect()
}

#[test]
fn shapes_and_memory_size() {
    let model = seeded_model::<Gpt2RmtArch, B>(&config(), &CTX, 0);
    let device = Default::default();
    let t = Tensor::<B, 2, Int>::from_data(TensorData::new(seq(18, 0), [3, 6]), &device);
    let out = model.forward_segment(t, model.init_memory(3, &device));
    assert_eq!(out.logits.dims(), [3, 6, 12]);
    assert_eq!(out.memory.tokens.as_ref().unwrap().dims(), [3, 2, 16]);
    assert_eq!(out.memory.num_floats(), 3 * 2 * 16);
    assert_eq!(model.memory_floats_per_sequence(), 2 * 16);
}

#[test]
fn seeded_deterministic_and_checkpoint_round_trip() {
    assert_seeded_and_round_trips::<Gpt2RmtArch>(&config(), &CTX, &seq(18, 1), 6);
}

#[test]
fn what_segment_one_holds_changes_segment_three_through_memory() {
    let model = seeded_model::<Gpt2RmtArch, B>(&config(), &CTX, 1);
    let (a, b) = segment_logits_with_a_change(&model, &seq(18, 2), 6, 1, 12);
    assert_ne!(a[2], b[2], "segment 3 does not see segment 1");
    // Within segment 1 the change is causal: position 0 is unaffected.
    assert_eq!(a[0][..12], b[0][..12]);
}

/// |gradient| reaching the learned initial memory, read only by segment 1,
/// from the loss of segment 3.
fn gradient_into_segment_one(depth: BpttDepth) -> f32 {
    let model = seeded_model::<Gpt2RmtArch, AB>(&config(), &CTX, 2);
    let grads = super::last_segment_gradients(&model, seq(18, 3), seq(18, 4), 12, 6, depth);
    model
        .memory_init
        .grad(&grads)
        .map_or(0.0, |g| g.abs().sum().into_scalar())
}

#[test]
fn bptt_through_memory_reaches_segment_one_only_when_deep_enough() {
    assert_eq!(gradient_into_segment_one(BpttDepth::Segments(0)), 0.0);
    assert_eq!(gradient_into_segment_one(BpttDepth::Segments(1)), 0.0);
    assert!(gradient_into_segment_one(BpttDepth::Segments(2)) > 0.0);
    assert!(gradient_into_segment_one(BpttDepth::Full) > 0.0);
}

#[test]
fn every_bad_model_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("num_mem_tokens = 0", "model.num_mem_tokens"),
        ("n_head = 0", "model.n_head"),
        // A segment of 6 and 2 × 2 memory tokens need 10 positions.
        ("n_positions = 9", "model.n_positions"),
        ("num_mem_tokens = -1", "model"),
    ];
    assert_config_errors::<Gpt2RmtArch>(cases, &CTX);
    // An unknown field is an error that names it.
    let table = memlab_core::config::parse_toml("hedas = 2").unwrap();
    let err = memlab_core::registry::parse_model_config::<Gpt2RmtArch>(table, &CTX).unwrap_err();
    assert!(err.to_string().contains("hedas"), "{err}");
}

#[test]
fn gpt2_rmt_learns_copy_within_one_segment() {
    super::learns_copy_within_one_segment::<Gpt2RmtArch>(
        "arch = \"gpt2-rmt\"\nnum_mem_tokens = 2\nn_positions = 16",
    );
}

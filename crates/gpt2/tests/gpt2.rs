//! memlab's GPT-2 on its own. That it computes what Hugging Face's
//! `GPT2LMHeadModel` computes is checked against transformers' own outputs
//! (`crates/cli/tests/parity.rs`, `memlab parity --from hf`).

use burn::backend::Flex;
use burn::prelude::*;
use memlab_core::layers::Activation;
use memlab_core::{ModelContext, SegmentModel};
use memlab_gpt2::{Gpt2, Gpt2Arch, Gpt2Config};
use memlab_tasks::{CopyConfig, CopyTask};
use memlab_train::testing::{
    assert_config_errors, assert_seeded_and_round_trips, seeded_model, train_for_test,
};

mod ltm;
mod rmt;

type B = Flex;

const CTX: ModelContext = ModelContext {
    vocab_size: 10,
    max_segment_len: 12,
};

fn config() -> Gpt2Config {
    Gpt2Config {
        n_positions: 12,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        ..Gpt2Config::default()
    }
}

fn tokens(b: usize, s: usize, offset: i64) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = (0..b * s).map(|i| (i as i64 * 7 + offset) % 10).collect();
    Tensor::from_data(TensorData::new(data, [b, s]), &Default::default())
}

fn logits(m: &Gpt2<B>, t: Tensor<B, 2, Int>) -> Vec<f32> {
    let memory = m.init_memory(t.dims()[0], &t.device());
    m.forward_segment(t, memory)
        .logits
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn shapes_and_parameters_are_gpt2s() {
    let m = seeded_model::<Gpt2Arch, B>(&config(), &CTX, 0);
    let out = m.forward_segment(tokens(3, 7, 0), m.init_memory(3, &Default::default()));
    assert_eq!(out.logits.dims(), [3, 7, 10]);
    assert_eq!(m.memory_floats_per_sequence(), 0);
    // wte, wpe, per block ln_1, c_attn, c_proj, ln_2, c_fc, c_proj, ln_f;
    // the head is wte (no bias).
    let (v, p, d, ff, l) = (10, 12, 64, 256, 2);
    let block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d);
    assert_eq!(m.num_params(), v * d + p * d + l * block + 2 * d);
    // Every hidden state, as transformers' output_hidden_states.
    assert_eq!(m.hidden_states(tokens(1, 5, 0)).len(), l + 1);
}

#[test]
fn seeded_deterministic_and_checkpoint_round_trip() {
    let data: Vec<i64> = (0..24).map(|i| (i * 3 + 1) % 10).collect();
    assert_seeded_and_round_trips::<Gpt2Arch>(&config(), &CTX, &data, 12);
}

#[test]
fn causal_within_a_segment_and_nothing_crosses_segments() {
    let m = seeded_model::<Gpt2Arch, B>(&config(), &CTX, 1);
    let mut a: Vec<i64> = (0..8).map(|i| i % 10).collect();
    let one = |ids: Vec<i64>| {
        logits(
            &m,
            Tensor::from_data(TensorData::new(ids, [1, 8]), &Default::default()),
        )
    };
    let before = one(a.clone());
    a[4] = 9;
    let after = one(a);
    assert_eq!(before[..4 * 10], after[..4 * 10]);
    assert_ne!(before[4 * 10..], after[4 * 10..]);
    // No memory: what segment 1 held cannot change segment 3's output.
    let run = |first: Tensor<B, 2, Int>| {
        let mut memory = m.init_memory(2, &Default::default());
        let mut last = Vec::new();
        for seg in [first, tokens(2, 6, 3), tokens(2, 6, 4)] {
            let out = m.forward_segment(seg, memory);
            memory = out.memory;
            last = out.logits.into_data().to_vec::<f32>().unwrap();
        }
        last
    };
    assert_eq!(run(tokens(2, 6, 0)), run(tokens(2, 6, 5)));
}

#[test]
fn positions_restart_at_every_segment() {
    // The same tokens give the same logits wherever they stand in the text.
    let m = seeded_model::<Gpt2Arch, B>(&config(), &CTX, 2);
    let device = Default::default();
    let t = tokens(1, 6, 2);
    let first = m.forward_segment(tokens(1, 6, 0), m.init_memory(1, &device));
    let second = m.forward_segment(t.clone(), first.memory);
    let alone = m.forward_segment(t, m.init_memory(1, &device));
    assert_eq!(
        second.logits.into_data().to_vec::<f32>().unwrap(),
        alone.logits.into_data().to_vec::<f32>().unwrap()
    );
}

#[test]
fn gelu_new_is_the_tanh_approximation() {
    // GPT-2's feed-forward activation against its closed form, and
    // against exact GELU (which it is not).
    use burn::tensor::activation::{gelu, gelu_approximate};
    let xs = [-3.0f32, -1.5, -0.5, 0.0, 0.7, 2.0, 3.5];
    let t = Tensor::<B, 1>::from_floats(xs, &Default::default());
    let ours: Vec<f32> = gelu_approximate(t.clone()).into_data().to_vec().unwrap();
    let exact: Vec<f32> = gelu(t).into_data().to_vec().unwrap();
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    for ((x, y), e) in xs.iter().zip(&ours).zip(&exact) {
        let x = *x as f64;
        let want = 0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh());
        assert!((*y as f64 - want).abs() < 1e-6, "{x}: {y} vs {want}");
        if x.abs() > 1.0 {
            assert!((y - e).abs() > 1e-5, "{x}: tanh GELU equals exact GELU");
        }
    }
    assert_eq!(config().activation_function, Activation::GeluNew);
}

#[test]
fn every_bad_model_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("n_layer = 0", "model.n_layer"),
        ("n_embd = 30\nn_head = 4", "model.n_embd"),
        ("n_head = 0", "model.n_head"),
        ("n_inner = 0", "model.n_inner"),
        // Segments of 12 tokens need 12 learned positions.
        ("n_positions = 8", "model.n_positions"),
        ("layer_norm_epsilon = 0.0", "model.layer_norm_epsilon"),
        (
            "activation_function = \"swish\"",
            "model.activation_function",
        ),
        ("resid_pdrop = 1.5", "model.resid_pdrop"),
        ("d_model = 64", "model.d_model"),
        ("n_embd = \"big\"", "model.n_embd"),
    ];
    assert_config_errors::<Gpt2Arch>(cases, &CTX);
}

/// Trains architecture `A` (the `[model]` lines `model`) on copy, L = 4,
/// read whole in one segment of 12, and checks that it learns the task.
fn learns_copy_within_one_segment<A: memlab_core::Architecture>(model: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[run]
name = "copy"
out_dir = "{}"
seed = 11
[task]
kind = "copy"
length = 4
vocab_size = 10
[train]
steps = 300
batch_size = 32
segment_len = 12
lr = 0.003
min_lr = 0.0001
warmup_steps = 20
log_every = 50
eval_batches = 4
[model]
resid_pdrop = 0.0
embd_pdrop = 0.0
attn_pdrop = 0.0
{model}
"#,
        dir.path().display()
    );
    let task = CopyTask::new(
        CopyConfig {
            length: 4,
            vocab_size: 10,
        },
        11,
    );
    let report = train_for_test::<A>(&text, &task, dir.path().join("copy"));
    assert!(
        report.eval.accuracy > 0.95,
        "{}: accuracy {}",
        A::NAME,
        report.eval.accuracy
    );
}

#[test]
fn gpt2_learns_copy_within_one_segment() {
    learns_copy_within_one_segment::<Gpt2Arch>("arch = \"gpt2\"\nn_positions = 12");
}

/// The gradients of `model`'s loss on the last segment of one row
/// (`inputs`, `targets` below `vocab_size`, read in segments of
/// `segment_len`), with gradients through the memory truncated to `depth`.
fn last_segment_gradients<M: memlab_core::SegmentModel<burn::backend::Autodiff<B>>>(
    model: &M,
    inputs: Vec<i64>,
    targets: Vec<i64>,
    vocab_size: usize,
    segment_len: usize,
    depth: memlab_core::BpttDepth,
) -> <burn::backend::Autodiff<B> as burn::tensor::backend::AutodiffBackend>::Gradients {
    let device = Default::default();
    let len = inputs.len();
    let mask: Vec<f32> = (0..len)
        .map(|i| if i >= len - segment_len { 1.0 } else { 0.0 })
        .collect();
    let batch = memlab_core::HostBatch {
        batch: 1,
        len,
        inputs,
        targets,
        mask,
    }
    .to_device::<burn::backend::Autodiff<B>>(vocab_size, &device)
    .unwrap();
    let rollout = memlab_train::runner::run_segments(
        model,
        &batch,
        segment_len,
        depth,
        model.init_memory(1, &device),
    );
    rollout.loss.backward()
}

/// The GPT-2 under the memories' tests: d 16, 2 heads, no dropout, large
/// weights (attention far from uniform, so that differences show).
fn small_memory_gpt2() -> Gpt2Config {
    Gpt2Config {
        n_embd: 16,
        n_head: 2,
        n_inner: Some(32),
        n_positions: 16,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        initializer_range: 0.3,
        ..Gpt2Config::default()
    }
}

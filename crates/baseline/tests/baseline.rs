use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use memlab_baseline::{BaselineArch, BaselineConfig};
use memlab_core::config::TransformerSizes;
use memlab_core::config::parse_toml;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, ExperimentConfig, ModelContext, SegmentModel};
use memlab_tasks::{CopyConfig, CopyTask};
use memlab_train::checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointError};
use memlab_train::testing::assert_config_errors;
use memlab_train::testing::seeded_model;
use memlab_train::{TrainOptions, train};

type B = Flex;
type AB = Autodiff<Flex>;

const CTX: ModelContext = ModelContext {
    vocab_size: 10,
    max_segment_len: 12,
};

fn tokens(b: usize, s: usize, offset: i64) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = (0..b * s).map(|i| (i as i64 * 7 + offset) % 10).collect();
    Tensor::from_data(TensorData::new(data, [b, s]), &Default::default())
}

fn model(seed: u64) -> memlab_baseline::Baseline<B> {
    seeded_model::<BaselineArch, B>(&BaselineConfig::default(), &CTX, seed)
}

fn logits(m: &memlab_baseline::Baseline<B>, t: Tensor<B, 2, Int>) -> Vec<f32> {
    let memory = m.init_memory(t.dims()[0], &t.device());
    m.forward_segment(t, memory)
        .logits
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn logits_have_batch_segment_vocab_shape() {
    let m = model(0);
    let out = m.forward_segment(tokens(3, 7, 0), m.init_memory(3, &Default::default()));
    assert_eq!(out.logits.dims(), [3, 7, 10]);
    assert_eq!(m.memory_floats_per_sequence(), 0);
    assert!(m.num_params() > 0);
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    let t = tokens(2, 6, 1);
    assert_eq!(logits(&model(5), t.clone()), logits(&model(5), t.clone()));
    assert_ne!(logits(&model(5), t.clone()), logits(&model(6), t));
}

#[test]
fn positions_are_causal_within_a_segment() {
    // Changing the token at position 4 must not change logits before it.
    let m = model(1);
    let mut a: Vec<i64> = (0..8).map(|i| i % 10).collect();
    let before = logits(
        &m,
        Tensor::from_data(TensorData::new(a.clone(), [1, 8]), &Default::default()),
    );
    a[4] = 9;
    let after = logits(
        &m,
        Tensor::from_data(TensorData::new(a, [1, 8]), &Default::default()),
    );
    assert_eq!(before[..4 * 10], after[..4 * 10]);
    assert_ne!(before[4 * 10..], after[4 * 10..]);
}

#[test]
fn what_segment_one_held_cannot_reach_segment_three() {
    let m = model(2);
    let device = Default::default();
    let run = |first: Tensor<B, 2, Int>| {
        let mut memory = m.init_memory(2, &device);
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

/// Saves `m` as a step-`step` baseline checkpoint in a fresh directory.
fn saved(m: &memlab_baseline::Baseline<B>, step: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CHECKPOINT_FILE);
    Checkpoint::new::<B, _, _>("baseline", step, "x".into(), m, ())
        .unwrap()
        .save(&path)
        .unwrap();
    (dir, path)
}

#[test]
fn checkpoint_round_trip_gives_bit_identical_logits() {
    let device = Default::default();
    let trained = model(3);
    let (_dir, path) = saved(&trained, 7);
    let loaded = Checkpoint::load(&path, "baseline").unwrap();
    assert_eq!(loaded.step, 7);
    let fresh = loaded.load_model(model(99), &device).unwrap();
    let t = tokens(2, 12, 2);
    let a = logits(&trained, t.clone());
    let b = logits(&fresh, t);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_ne!(logits(&model(99), tokens(2, 12, 2)), a);
}

#[test]
fn a_checkpoint_of_another_model_or_a_truncated_one_is_a_clear_error() {
    let (dir, path) = saved(&model(0), 1);
    let err = Checkpoint::load(&path, "rmt").unwrap_err();
    assert!(matches!(err, CheckpointError::WrongModel { .. }), "{err}");
    assert!(err.to_string().contains("`baseline`") && err.to_string().contains("`rmt`"));

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Checkpoint::load(&path, "baseline").unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt(..)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(matches!(
        Checkpoint::load(&path, "baseline").unwrap_err(),
        CheckpointError::Corrupt(..)
    ));
    let missing = dir.path().join("nope.mpk");
    assert!(matches!(
        Checkpoint::load(&missing, "baseline").unwrap_err(),
        CheckpointError::Io(..)
    ));
}

#[test]
fn a_record_of_other_sizes_is_an_error_not_a_panic() {
    let (_dir, path) = saved(&model(0), 1);
    let device = Default::default();
    let other = BaselineConfig {
        n_layers: 3,
        ..BaselineConfig::default()
    };
    let wider = BaselineConfig {
        transformer: TransformerSizes {
            d_ff: 128,
            ..BaselineConfig::default().transformer
        },
        ..BaselineConfig::default()
    };
    for (config, says) in [(other, "parameter tensors"), (wider, "shape")] {
        let target = BaselineArch::init::<B>(&config, &CTX, &device);
        let err = Checkpoint::load(&path, "baseline")
            .unwrap()
            .load_model(target, &device)
            .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn every_bad_model_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("d_model = 0", "model.d_model"),
        ("n_layers = 0", "model.n_layers"),
        ("n_heads = 0", "model.n_heads"),
        ("d_ff = 0", "model.d_ff"),
        ("d_model = 30\nn_heads = 4", "model.d_model"),
        ("dropout = 1.0", "model.dropout"),
        ("attn_dropout = -0.1", "model.attn_dropout"),
        ("init_std = 0.0", "model.init_std"),
        ("positions = \"rotary\"", "model.positions"),
        ("activation = \"tanh\"", "model.activation"),
        (
            "d_model = 9\nn_heads = 3\npositions = \"sinusoidal\"\n",
            "model.d_model",
        ),
        ("hedas = 4", "model.hedas"),
        ("d_model = \"big\"", "model.d_model"),
    ];
    assert_config_errors::<BaselineArch>(cases, &CTX);
}

fn copy_config(
    dir: &std::path::Path,
    steps: usize,
    segment_len: usize,
    dropout: f64,
) -> ExperimentConfig {
    let text = format!(
        r#"
[run]
name = "r"
out_dir = "{}"
seed = 11
[task]
kind = "copy"
length = 8
vocab_size = 10
[train]
steps = {steps}
batch_size = 32
segment_len = {segment_len}
lr = 0.003
min_lr = 0.0001
warmup_steps = 20
log_every = 1
eval_batches = 4
[model]
arch = "baseline"
d_ff = 128
dropout = {dropout}
"#,
        dir.display()
    );
    ExperimentConfig::from_table(parse_toml(&text).unwrap()).unwrap()
}

fn train_copy(config: &ExperimentConfig, run_dir: std::path::PathBuf) -> memlab_train::TrainReport {
    let task = CopyTask::new(
        CopyConfig {
            length: 8,
            vocab_size: 10,
        },
        config.run.seed,
    );
    let model_config: BaselineConfig = parse_model_config::<BaselineArch>(
        {
            let mut t = config.model.clone().unwrap();
            t.remove("arch");
            t
        },
        &CTX,
    )
    .unwrap();
    let options = TrainOptions {
        run_dir,
        resume: false,
        overwrite: false,
        memory_limit: None,
        progress: None,
    };
    train::<BaselineArch, AB>(config, &model_config, &task, &options, &Default::default()).unwrap()
}

#[test]
fn baseline_learns_copy_within_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = copy_config(dir.path(), 300, 24, 0.0);
    let report = train_copy(&config, dir.path().join("one"));
    assert!(
        report.eval.accuracy > 0.95,
        "accuracy {}",
        report.eval.accuracy
    );
    assert!(dir.path().join("one/checkpoint.mpk").exists());
    assert!(dir.path().join("one/config.toml").exists());
}

fn train_losses(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"split\":\"train\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{}:{}", v["step"], v["loss"])
        })
        .collect()
}

#[test]
fn same_seed_gives_identical_loss_curves() {
    let dir = tempfile::tempdir().unwrap();
    let config = copy_config(dir.path(), 25, 12, 0.1);
    train_copy(&config, dir.path().join("a"));
    train_copy(&config, dir.path().join("b"));
    let a = train_losses(&dir.path().join("a/metrics.jsonl"));
    let b = train_losses(&dir.path().join("b/metrics.jsonl"));
    assert_eq!(a.len(), 25);
    assert_eq!(a, b);
    let mut other = config.clone();
    other.run.seed = 12;
    train_copy(&other, dir.path().join("c"));
    assert_ne!(a, train_losses(&dir.path().join("c/metrics.jsonl")));
}

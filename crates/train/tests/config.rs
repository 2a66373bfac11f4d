//! Configs: strict parsing, validation that names the field, overrides, and
//! the learning-rate schedule against its closed form.

use memlab_core::config::{apply_override, parse_toml};
use memlab_core::{BpttDepth, ExperimentConfig};
use memlab_train::step::lr_scheduler;

use burn::optim::lr_scheduler::LrScheduler;

const BASE: &str = r#"
[run]
name = "t"
out_dir = "runs"
seed = 3

[task]
kind = "copy"

[train]
steps = 100
batch_size = 8
segment_len = 12
warmup_steps = 10
lr = 0.001
min_lr = 0.0001

[model]
arch = "baseline"
"#;

fn load(overrides: &[&str]) -> Result<ExperimentConfig, memlab_core::ConfigError> {
    let mut table = parse_toml(BASE).unwrap();
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    ExperimentConfig::from_table(table)
}

#[test]
fn the_base_config_is_valid() {
    let config = load(&[]).unwrap();
    assert_eq!(config.train.steps, 100);
    assert_eq!(config.train.bptt_depth, BpttDepth::Full);
    assert_eq!(config.run.seed, 3);
}

#[test]
fn every_bad_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("train.steps=0", "train.steps"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.segment_len=0", "train.segment_len"),
        ("train.lr=0", "train.lr"),
        ("train.lr=2.0", "train.lr"),
        ("train.lr=\"fast\"", "train.lr"),
        ("train.min_lr=0.01", "train.min_lr"),
        ("train.min_lr=-1.0", "train.min_lr"),
        ("train.warmup_steps=100", "train.warmup_steps"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.grad_clip=-1.0", "train.grad_clip"),
        ("train.eval_batches=0", "train.eval_batches"),
        ("train.log_every=0", "train.log_every"),
        ("train.bptt_depth=-2", "train.bptt_depth"),
        ("train.bptt_depth=\"some\"", "train.bptt_depth"),
        ("train.stepz=10", "train.stepz"),
        ("run.name=\"a//b\"", "run.name"),
        ("run.name=\"../b\"", "run.name"),
        ("run.name=\"/abs\"", "run.name"),
        ("run.name=\"a/./b\"", "run.name"),
        ("run.name=\"a\\\\b\"", "run.name"),
        ("run.name=\"\"", "run.name"),
        ("run.seed=-1", "run.seed"),
        ("run.colour=\"red\"", "run.colour"),
        ("extra.key=1", "extra"),
    ];
    for (assignment, field) in cases {
        let err = load(&[assignment]).expect_err(assignment);
        assert_eq!(&err.field, field, "{assignment}: {err}");
        assert!(err.to_string().contains(field), "{assignment}: {err}");
    }
}

#[test]
fn bptt_depth_accepts_full_and_numbers() {
    assert_eq!(
        load(&["train.bptt_depth=\"full\""])
            .unwrap()
            .train
            .bptt_depth,
        BpttDepth::Full
    );
    assert_eq!(
        load(&["train.bptt_depth=2"]).unwrap().train.bptt_depth,
        BpttDepth::Segments(2)
    );
}

#[test]
fn bptt_depth_k_is_the_sliding_window_unless_blocks_are_asked_for() {
    use memlab_core::{BpttWindow, ClipMode, GradientMethod};
    let config = load(&["train.bptt_depth=2"]).unwrap();
    assert_eq!(config.train.bptt_window, BpttWindow::Sliding);
    assert_eq!(config.train.bptt(), BpttDepth::Sliding(2));
    let config = load(&["train.bptt_depth=2", "train.bptt_window=\"blocks\""]).unwrap();
    assert_eq!(config.train.bptt(), BpttDepth::Segments(2));
    assert_eq!(load(&[]).unwrap().train.bptt(), BpttDepth::Full);
    // Defaults: global-norm clipping and BPTT.
    let config = load(&[]).unwrap();
    assert_eq!(config.train.grad_clip_mode, ClipMode::Global);
    assert_eq!(config.train.gradients, GradientMethod::Bptt);
    let config = load(&[
        "train.gradients=\"replay\"",
        "train.grad_clip_mode=\"per-tensor\"",
    ])
    .unwrap();
    assert_eq!(config.train.gradients, GradientMethod::Replay);
    assert_eq!(config.train.grad_clip_mode, ClipMode::PerTensor);
    // Only per-tensor clipping is left to Burn's optimizer (the config's
    // Debug output is the only public view of its clipping field).
    let clipping =
        |c: &ExperimentConfig| format!("{:?}", memlab_train::step::optimizer_config(&c.train));
    assert!(
        clipping(&config).contains("grad_clipping: Some"),
        "{}",
        clipping(&config)
    );
    assert!(clipping(&load(&[]).unwrap()).contains("grad_clipping: None"));
    for (set, field) in [
        ("train.bptt_window=\"slide\"", "train.bptt_window"),
        ("train.gradients=\"mrbp\"", "train.gradients"),
        ("train.grad_clip_mode=\"norm\"", "train.grad_clip_mode"),
    ] {
        assert_eq!(load(&[set]).unwrap_err().field, field, "{set}");
    }
    // Replay computes full BPTT's gradients: a depth is a contradiction.
    let err = load(&["train.gradients=\"replay\"", "train.bptt_depth=1"]).unwrap_err();
    assert_eq!(err.field, "train.gradients", "{err}");
}

#[test]
fn overrides_set_nested_keys_and_reject_malformed_ones() {
    let config = load(&["train.lr=0.002", "task.length=7", "run.name=other"]).unwrap();
    assert_eq!(config.train.lr, 0.002);
    assert_eq!(config.run.name, "other");
    assert_eq!(config.task["length"].as_integer(), Some(7));
    assert!(load(&["train.lr"]).is_err());
    assert!(load(&["=3"]).is_err());
    let err = load(&["train.lr.x=3"]).unwrap_err();
    assert_eq!(err.field, "train.lr");
}

#[test]
fn the_config_round_trips_through_toml() {
    let config = load(&["train.bptt_depth=1"]).unwrap();
    let again = ExperimentConfig::from_table(parse_toml(&config.to_toml()).unwrap()).unwrap();
    assert_eq!(config, again);
}

#[test]
fn warmup_then_cosine_follows_the_closed_form() {
    let config = load(&[]).unwrap();
    let t = &config.train;
    let mut scheduler = lr_scheduler(t);
    for step in 0..t.steps {
        let lr = scheduler.step();
        let cosine = t.min_lr
            + 0.5
                * (t.lr - t.min_lr)
                * (1.0 + (std::f64::consts::PI * step as f64 / t.steps as f64).cos());
        let warm = 1.0 / t.warmup_steps as f64;
        let factor = if step < t.warmup_steps {
            warm + (1.0 - warm) * step as f64 / t.warmup_steps as f64
        } else {
            1.0
        };
        let expected = cosine * factor;
        assert!(
            (lr - expected).abs() < 1e-9,
            "step {step}: {lr} vs {expected}"
        );
    }
}

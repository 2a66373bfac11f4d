use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use memlab_core::config::TransformerSizes;
use memlab_core::config::parse_toml;
use memlab_core::registry::parse_model_config;
use memlab_core::seed::init_seeded;
use memlab_core::{Architecture, MemoryState, ModelContext, SegmentModel};
use memlab_infinity_former::basis::{
    GaussianBasis, contraction_padding, contraction_positions, uniform_positions,
};
use memlab_infinity_former::long_term::quantiles;
use memlab_infinity_former::{
    InfinityFormer, InfinityFormerArch, InfinityFormerConfig, InfinityMemory, LongTermSettings,
};
use memlab_train::testing::seeded_model;
use memlab_train::testing::{assert_config_errors, assert_seeded_and_round_trips};
use memlab_transformer_xl::{TransformerXlArch, XlConfig};

type B = Flex;
type AB = Autodiff<Flex>;

const CTX: ModelContext = ModelContext {
    vocab_size: 12,
    max_segment_len: 4,
};

fn small() -> InfinityFormerConfig {
    InfinityFormerConfig {
        transformer: TransformerSizes {
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            // Large weights: attention far from uniform, so differences show.
            init_std: 0.3,
            ..InfinityFormerConfig::default().transformer
        },
        mem_len: 4,
        memory: LongTermSettings {
            num_basis: 8,
            num_samples: 8,
            ..InfinityFormerConfig::default().memory
        },
        ..InfinityFormerConfig::default()
    }
}

/// [`small`] with its long-term memory's settings changed by `edit`.
fn with_memory(edit: impl FnOnce(&mut LongTermSettings)) -> InfinityFormerConfig {
    let mut config = small();
    edit(&mut config.memory);
    config
}

fn model<BB: Backend>(config: &InfinityFormerConfig, seed: u64) -> InfinityFormer<BB> {
    seeded_model::<InfinityFormerArch, BB>(config, &CTX, seed)
}

fn tokens<BB: Backend>(data: &[i64]) -> Tensor<BB, 2, Int> {
    memlab_train::testing::tokens(data, 1, &Default::default())
}

fn seq(len: usize, seed: i64) -> Vec<i64> {
    (0..len as i64)
        .map(|i| (i * 7 + seed * 5 + i * i) % 12)
        .collect()
}

/// Logits of each 4-token segment of `data`.
fn run<BB: Backend, M: SegmentModel<BB>>(model: &M, data: &[i64]) -> Vec<Vec<f32>> {
    memlab_train::testing::segment_logits(model, data, 4)
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.concat()
        .iter()
        .zip(b.concat())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// With the long-term memory off, the model is Transformer-XL: the same
/// logits for copied weights. With it on, it equals XL until something has
/// left the short-term cache, and differs after.
#[test]
fn without_long_term_memory_it_is_transformer_xl() {
    let xl_config = XlConfig {
        transformer: TransformerSizes {
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            init_std: 0.3,
            ..XlConfig::default().transformer
        },
        mem_len: 4,
        ..XlConfig::default()
    };
    let device = Default::default();
    let xl = init_seeded::<B, _>(&device, 1, || {
        TransformerXlArch::init::<B>(&xl_config, &CTX, &device)
    });
    let data = seq(16, 2);
    for long_term in [false, true] {
        let mut inf = model::<B>(
            &InfinityFormerConfig {
                long_term,
                ..small()
            },
            5,
        );
        inf.embedding = xl.embedding.clone();
        inf.layers = xl.layers.clone();
        inf.biases = xl.biases.clone();
        let (a, b) = (run(&inf, &data), run(&xl, &data));
        if long_term {
            // Segments 1 and 2: the cache of 4 has not overflowed yet.
            assert!(max_diff(&a[..2], &b[..2]) < 1e-5);
            assert!(
                max_diff(&a[2..], &b[2..]) > 1e-3,
                "the long-term memory is read"
            );
        } else {
            assert!(max_diff(&a, &b) < 1e-5, "{}", max_diff(&a, &b));
        }
    }
}

/// What segment 1 held reaches segment 4 through the long-term memory only
/// (the short-term cache holds segment 3 by then).
#[test]
fn segment_one_reaches_segment_four_through_the_long_term_memory() {
    for long_term in [true, false] {
        let m = model::<B>(
            &InfinityFormerConfig {
                long_term,
                ..small()
            },
            3,
        );
        let a = seq(16, 1);
        let mut b = a.clone();
        b[1] = (b[1] + 5) % 12;
        let diff = max_diff(&run(&m, &a)[3..], &run(&m, &b)[3..]);
        if long_term {
            assert!(diff > 1e-4, "{diff}");
        } else {
            assert_eq!(diff, 0.0);
        }
    }
}

#[test]
fn memory_is_bounded_after_10_and_1000_segments() {
    let m = model::<B>(
        &with_memory(|m| {
            m.sticky = true;
            m.sticky_bins = 5;
        }),
        4,
    );
    let device = Default::default();
    let batch = 2;
    let mut memory = m.init_memory(batch, &device);
    let mut sizes = Vec::new();
    for step in 1..=1000 {
        let data: Vec<i64> = (0..8).map(|i| ((step * 3 + i) % 12) as i64).collect();
        let t = Tensor::<B, 2, Int>::from_data(TensorData::new(data, [batch, 4]), &device);
        memory = m.forward_segment(t, memory).memory;
        if step == 10 || step == 1000 {
            sizes.push(memory.num_floats());
        }
    }
    assert_eq!(sizes[0], sizes[1]);
    assert_eq!(sizes[0], batch * m.memory_floats_per_sequence());
    let rebuilt = InfinityMemory::<B>::from_parts(memory.to_parts()).unwrap();
    assert_eq!(rebuilt.num_floats(), sizes[0]);
    assert_eq!(rebuilt.coefficients.len(), 2);
}

/// The write of §3.2 as tensors equals the host regression: B = Gᵀ X for
/// the first write, and the contraction with M uniform samples after.
#[test]
fn the_write_is_the_ridge_regression_and_contraction() {
    let config = with_memory(|m| m.gate = false);
    let m = model::<B>(&config, 6);
    let device = Default::default();
    let ltm = &m.long_term[0];
    let x: Vec<f32> = (0..4 * 16)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let x_t = Tensor::<B, 3>::from_data(TensorData::new(x.clone(), [1, 4, 16]), &device);
    let first: Vec<f32> = ltm
        .write(&m.context, x_t.clone(), None)
        .into_data()
        .to_vec()
        .unwrap();
    let basis = GaussianBasis::new(8, &[0.01, 0.05]);
    let g = basis.regression(&uniform_positions(4), 1.0);
    let host_fit = |g: &[f64], values: &[Vec<f64>]| -> Vec<f64> {
        (0..8)
            .flat_map(|j| {
                (0..16).map(move |c| {
                    values
                        .iter()
                        .enumerate()
                        .map(|(p, v)| g[p * 8 + j] * v[c])
                        .sum()
                })
            })
            .collect()
    };
    let rows: Vec<Vec<f64>> = x
        .chunks(16)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let expected = host_fit(&g, &rows);
    for (a, e) in first.iter().zip(&expected) {
        assert!((*a as f64 - e).abs() < 1e-3 * (1.0 + e.abs()), "{a} vs {e}");
    }
    // Contraction: samples of the first signal at i/M, then x again.
    let past = Tensor::<B, 3>::from_data(TensorData::new(first.clone(), [1, 8, 16]), &device);
    let second: Vec<f32> = ltm
        .write(&m.context, x_t, Some((past, None)))
        .into_data()
        .to_vec()
        .unwrap();
    let mut values: Vec<Vec<f64>> = (1..=8)
        .map(|i| {
            let psi = basis.eval(i as f64 / 8.0);
            (0..16)
                .map(|c| (0..8).map(|j| psi[j] * first[j * 16 + c] as f64).sum())
                .collect()
        })
        .collect();
    values.extend(rows);
    let (left, right) = contraction_padding(8, 4);
    let g_inf = basis.regression_padded(&left, &contraction_positions(8, 4, 0.75), &right, 1.0);
    let expected = host_fit(&g_inf, &values);
    for (a, e) in second.iter().zip(&expected) {
        assert!((*a as f64 - e).abs() < 1e-3 * (1.0 + e.abs()), "{a} vs {e}");
    }
}

/// Gradients from the loss reach w_μ, w_σ, W_K, W_V, W_O and the gate; the
/// past signal gets none (it is detached before the contraction).
#[test]
fn gradients_reach_the_long_term_parameters_but_not_the_past() {
    let m = model::<AB>(&small(), 7);
    let data = seq(12, 3);
    let mut memory = m.init_memory(1, &Default::default());
    for chunk in data.chunks(4).take(2) {
        memory = m.forward_segment(tokens::<AB>(chunk), memory).memory;
    }
    // After three segments every layer has a signal; make it a leaf that
    // asks for gradients, then run segment 4 (which contracts it).
    let memory = m.forward_segment(tokens::<AB>(&data[8..12]), memory).memory;
    let past: Vec<Tensor<AB, 3>> = memory
        .coefficients
        .iter()
        .map(|c| c.clone().unwrap().require_grad())
        .collect();
    let memory = InfinityMemory {
        coefficients: past.iter().cloned().map(Some).collect(),
        ..memory
    };
    let out = m.forward_segment(tokens::<AB>(&seq(4, 9)), memory);
    let loss = out.logits.powi_scalar(2).mean() + out.aux_loss.expect("KL is on");
    let grads = loss.backward();
    let ltm = &m.long_term[0];
    let norm = |g: Option<Tensor<burn::backend::Flex, 2>>| {
        g.map(|g| g.abs().sum().into_scalar()).unwrap_or(0.0)
    };
    for (name, g) in [
        ("w_mu", norm(ltm.mu.weight.grad(&grads))),
        ("w_sigma", norm(ltm.sigma.weight.grad(&grads))),
        ("W_K", norm(ltm.key.weight.grad(&grads))),
        ("W_V", norm(ltm.value.weight.grad(&grads))),
        ("W_O", norm(ltm.output.weight.grad(&grads))),
    ] {
        assert!(g > 0.0, "{name} gets no gradient");
    }
    let gate = ltm.gate.as_ref().unwrap().weight.grad(&grads).unwrap();
    assert!(
        gate.abs().sum().into_scalar() > 0.0,
        "gate gets no gradient"
    );
    for p in &past {
        let g = p
            .grad(&grads)
            .map(|g| g.abs().sum().into_scalar())
            .unwrap_or(0.0);
        assert_eq!(g, 0.0, "gradient reached the past signal");
    }
}

#[test]
fn kl_is_added_once_there_is_a_long_term_memory() {
    let m = model::<B>(&small(), 8);
    let mut memory = m.init_memory(1, &Default::default());
    let data = seq(16, 4);
    let mut aux = Vec::new();
    for chunk in data.chunks(4) {
        let out = m.forward_segment(tokens::<B>(chunk), memory);
        aux.push(out.aux_loss.map(|a| a.into_scalar()));
        memory = out.memory;
    }
    assert!(aux[0].is_none() && aux[1].is_none());
    assert!(aux[2].unwrap() > 0.0 && aux[3].unwrap() > 0.0);
    let off = model::<B>(&with_memory(|m| m.kl_weight = 0.0), 8);
    let memory = off.init_memory(1, &Default::default());
    assert!(
        off.forward_segment(tokens::<B>(&data[..4]), memory)
            .aux_loss
            .is_none()
    );
}

#[test]
fn sticky_quantiles_follow_the_density() {
    let uniform = quantiles(&[1.0; 4], 8);
    let expected: Vec<f32> = (1..=8).map(|i| i as f32 / 8.0).collect();
    for (a, e) in uniform.iter().zip(&expected) {
        assert!((a - e).abs() < 1e-6);
    }
    // All mass in the second of four bins: every sample lies in [0.25, 0.5].
    let peaked = quantiles(&[0.0, 2.0, 0.0, 0.0], 8);
    assert!(
        peaked.iter().all(|&t| (0.25..=0.5).contains(&t)),
        "{peaked:?}"
    );
    assert_eq!(quantiles(&[0.0; 3], 2), vec![0.5, 1.0]);
    // A sticky model runs and keeps a density per layer.
    let m = model::<B>(
        &with_memory(|m| {
            m.sticky = true;
            m.sticky_bins = 6;
        }),
        9,
    );
    let mut memory = m.init_memory(1, &Default::default());
    for chunk in seq(20, 5).chunks(4) {
        memory = m.forward_segment(tokens::<B>(chunk), memory).memory;
    }
    assert_eq!(memory.density.len(), 2);
    assert_eq!(memory.density[0].as_ref().unwrap().dims(), [1, 1, 6]);
}

#[test]
fn seeded_round_trip_and_config_errors() {
    assert_seeded_and_round_trips::<InfinityFormerArch>(&small(), &CTX, &seq(16, 6), 4);
    let cases: &[(&str, &str)] = &[
        ("num_basis = 7", "model.num_basis"),
        ("num_basis = 0", "model.num_basis"),
        ("basis_sigmas = []", "model.basis_sigmas"),
        ("tau = 1.0", "model.tau"),
        ("ridge_penalty = 0.0", "model.ridge_penalty"),
        ("kl_weight = -1.0", "model.kl_weight"),
        ("mu_0 = 2.0", "model.mu_0"),
        ("num_samples = 0", "model.num_samples"),
        ("n_heads = 3", "model.d_model"),
        ("long_term_memory = true", "model.long_term_memory"),
    ];
    assert_config_errors::<InfinityFormerArch>(cases, &CTX);
    assert!(
        parse_model_config::<InfinityFormerArch>(
            parse_toml("num_basis = 3\nbasis_sigmas = [0.1, 0.2, 0.3]").unwrap(),
            &CTX
        )
        .is_err()
    );
    assert!(
        parse_model_config::<InfinityFormerArch>(
            parse_toml("num_basis = 12\nbasis_sigmas = [0.1, 0.2, 0.3]").unwrap(),
            &CTX
        )
        .is_ok()
    );
}

/// A small task learns with the long-term memory in the loop: copy with
/// L = 8 over three 8-token segments and a short-term cache of 8, so from
/// segment 3 on every layer also reads its continuous memory (and the KL
/// regulariser is on). About 35 s on 2 CPU cores.
#[test]
fn learns_copy_with_the_long_term_memory_in_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[run]
name = "inf"
seed = 3
[task]
kind = "copy"
length = 8
vocab_size = 10
[train]
steps = 400
batch_size = 32
segment_len = 8
lr = 0.003
min_lr = 0.0001
warmup_steps = 20
eval_batches = 4
[model]
arch = "infinity-former"
d_model = 32
n_heads = 2
d_ff = 64
pre_norm = true
mem_len = 8
num_basis = 16
num_samples = 16
"#;
    let task = memlab_tasks::CopyTask::new(
        memlab_tasks::CopyConfig {
            length: 8,
            vocab_size: 10,
        },
        3,
    );
    let report = memlab_train::testing::train_for_test::<InfinityFormerArch>(
        text,
        &task,
        dir.path().join("inf"),
    );
    assert!(
        report.eval.accuracy > 0.9,
        "accuracy {}",
        report.eval.accuracy
    );
    let log = std::fs::read_to_string(dir.path().join("inf/metrics.jsonl")).unwrap();
    assert!(log.contains("\"aux_loss\":"), "the KL is logged");
}

#[test]
fn the_memory_settings_are_given_flat_and_fields_names_them_all() {
    // FIELDS is every field of LongTermSettings (mu_0 set, so that it is
    // serialized), and the flat table fills in the rest from the defaults.
    let mut settings = InfinityFormerConfig::default().memory;
    settings.mu_0 = Some(0.5);
    let table = toml::Table::try_from(&settings).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut fields = LongTermSettings::FIELDS.to_vec();
    keys.sort();
    fields.sort();
    assert_eq!(keys, fields);
    let parsed = parse_model_config::<InfinityFormerArch>(
        parse_toml(
            "num_basis = 16
mu_0 = 0.5
mem_len = 3",
        )
        .unwrap(),
        &CTX,
    )
    .unwrap();
    assert_eq!(parsed.memory.num_basis, 16);
    assert_eq!(parsed.memory.mu_0, Some(0.5));
    assert_eq!(
        parsed.memory.tau,
        InfinityFormerConfig::default().memory.tau
    );
    assert_eq!(parsed.mem_len, 3);
}

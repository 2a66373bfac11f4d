use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use memlab_baseline::{BaselineArch, BaselineConfig};
use memlab_core::config::TransformerSizes;
use memlab_core::config::parse_toml;
use memlab_core::registry::parse_model_config;
use memlab_core::seed::{init_seeded, materialize};
use memlab_core::{Architecture, BpttDepth, HostBatch, MemoryState, ModelContext, SegmentModel};
use memlab_rmt::{Backbone, MemoryInit, Rmt, RmtArch, RmtConfig, RmtMemory, rmt_masked};
use memlab_train::runner::run_segments;
use memlab_train::testing::seeded_model;
use memlab_train::testing::segment_logits_with_a_change;
use memlab_train::testing::{assert_config_errors, assert_seeded_and_round_trips};
use memlab_transformer_xl::{TransformerXlArch, XlConfig};

type B = Flex;
type AB = Autodiff<Flex>;

const CTX: ModelContext = ModelContext {
    vocab_size: 12,
    max_segment_len: 6,
};

fn rmt<BB: Backend>(config: &RmtConfig, seed: u64) -> Rmt<BB> {
    seeded_model::<RmtArch, BB>(config, &CTX, seed)
}

fn tokens<BB: Backend>(data: &[i64], b: usize) -> Tensor<BB, 2, Int> {
    memlab_train::testing::tokens(data, b, &Default::default())
}

fn seq(len: usize, seed: i64) -> Vec<i64> {
    (0..len as i64)
        .map(|i| (i * 7 + seed * 5 + i * i) % 12)
        .collect()
}

#[test]
fn the_mask_follows_the_rules_cell_by_cell() {
    let (m, s) = (2, 3);
    for mem_at_end in [true, false] {
        for (cache, from_cache) in [(0, false), (4, false), (4, true)] {
            let q = m + s + if mem_at_end { m } else { 0 };
            let k = cache + q;
            let mask: Vec<bool> =
                memlab_rmt::rmt_mask::<B>(m, s, cache, mem_at_end, from_cache, &Default::default())
                    .into_data()
                    .to_vec()
                    .unwrap();
            for i in 0..q {
                for j in 0..k {
                    let key = j as i64 - cache as i64; // position in [read ; seg ; write]
                    let (is_read, is_seg) = (i < m, i >= m && i < m + s);
                    let expected = if key < 0 {
                        // The cache: the segment always, memory only when allowed.
                        !is_seg && !from_cache
                    } else if key < m as i64 {
                        false // everyone reads the read block
                    } else if is_read {
                        true // read memory sees only the read block
                    } else if is_seg {
                        key as usize > i // causal; the write block (key ≥ m + s > i) never
                    } else {
                        false // write memory sees read, the whole segment and write
                    };
                    assert_eq!(
                        mask[i * k + j],
                        expected,
                        "mem_at_end {mem_at_end}, cache {cache}/{from_cache}: query {i}, key {j}"
                    );
                    assert_eq!(
                        mask[i * k + j],
                        rmt_masked(i, j, m, s, cache, mem_at_end, from_cache)
                    );
                }
            }
        }
    }
}

#[test]
fn shapes_memory_and_initial_memory() {
    let config = RmtConfig {
        num_mem_tokens: 3,
        ..RmtConfig::default()
    };
    let model = rmt::<B>(&config, 0);
    let memory = model.init_memory(2, &Default::default());
    assert_eq!(memory.tokens.as_ref().unwrap().dims(), [2, 3, 64]);
    // LM-RMT's initialisation: one vector repeated in every slot.
    let init: Vec<f32> = model
        .memory_init
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(init[..64], init[64..128]);
    let distinct = rmt::<B>(
        &RmtConfig {
            memory_init: MemoryInit::Distinct,
            ..config.clone()
        },
        0,
    );
    let init: Vec<f32> = distinct
        .memory_init
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    assert_ne!(init[..64], init[64..128]);

    let out = model.forward_segment(tokens::<B>(&seq(2 * 5, 1), 2), memory);
    assert_eq!(out.logits.dims(), [2, 5, 12]);
    assert_eq!(out.memory.tokens.as_ref().unwrap().dims(), [2, 3, 64]);
    assert_eq!(out.memory.num_floats(), 2 * 3 * 64);
    assert_eq!(model.memory_floats_per_sequence(), 3 * 64);
    let rebuilt = RmtMemory::<B>::from_parts(out.memory.to_parts()).unwrap();
    assert_eq!(rebuilt.tokens.unwrap().dims(), [2, 3, 64]);
}

#[test]
fn what_segment_one_holds_changes_segment_three_through_memory() {
    for backbone in [Backbone::Transformer, Backbone::TransformerXl] {
        let config = RmtConfig {
            transformer: TransformerSizes {
                d_model: 16,
                n_heads: 2,
                d_ff: 32,
                init_std: 0.3,
                ..RmtConfig::default().transformer
            },
            backbone,
            num_mem_tokens: 2,
            ..RmtConfig::default()
        };
        let model = rmt::<B>(&config, 1);
        let (a, b) = segment_logits_with_a_change(&model, &seq(18, 2), 6, 1, 12);
        assert_ne!(a[2], b[2], "{backbone:?}: segment 3 does not see segment 1");
        // Within segment 1 the change is causal: position 0 is unaffected.
        assert_eq!(a[0][..12], b[0][..12]);
    }
}

/// |gradient| reaching the embeddings of tokens read only in segment 1 from
/// the loss of segment 3 (untied embeddings).
fn gradient_into_segment_one(depth: BpttDepth) -> f32 {
    let config = RmtConfig {
        transformer: TransformerSizes {
            tied_embeddings: false,
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            ..RmtConfig::default().transformer
        },
        num_mem_tokens: 2,
        ..RmtConfig::default()
    };
    let model = rmt::<AB>(&config, 2);
    let device = Default::default();
    let inputs = vec![10, 11, 10, 11, 10, 11, 1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 7];
    let mask: Vec<f32> = (0..18).map(|i| if i >= 12 { 1.0 } else { 0.0 }).collect();
    let batch = HostBatch {
        batch: 1,
        len: 18,
        inputs,
        targets: seq(18, 4),
        mask,
    }
    .to_device::<AB>(12, &device)
    .unwrap();
    let rollout = run_segments(&model, &batch, 6, depth, model.init_memory(1, &device));
    let grads = rollout.loss.backward();
    let g: Vec<f32> = model
        .embedding
        .embedding
        .weight
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    g[10 * 16..12 * 16].iter().map(|x| x.abs()).sum()
}

#[test]
fn bptt_through_memory_reaches_segment_one_only_when_deep_enough() {
    assert_eq!(gradient_into_segment_one(BpttDepth::Segments(0)), 0.0);
    assert_eq!(gradient_into_segment_one(BpttDepth::Segments(1)), 0.0);
    assert!(gradient_into_segment_one(BpttDepth::Segments(2)) > 0.0);
    assert!(gradient_into_segment_one(BpttDepth::Full) > 0.0);
}

#[test]
fn with_no_memory_tokens_it_is_the_transformer_backbone() {
    let device = Default::default();
    let base_config = BaselineConfig {
        transformer: TransformerSizes {
            d_ff: 32,
            ..BaselineConfig::default().transformer
        },
        ..BaselineConfig::default()
    };
    let baseline = materialize(init_seeded::<B, _>(&device, 3, || {
        BaselineArch::init::<B>(&base_config, &CTX, &device)
    }));
    let config = RmtConfig {
        transformer: TransformerSizes {
            d_ff: 32,
            ..RmtConfig::default().transformer
        },
        num_mem_tokens: 0,
        ..RmtConfig::default()
    };
    let mut model = materialize(rmt::<B>(&config, 4));
    model.embedding = baseline.embedding.clone();
    model.positions = baseline.positions.clone();
    model.blocks = baseline.blocks.clone();
    model.final_norm = baseline.final_norm.clone();
    let data = seq(2 * 6, 1);
    let a: Vec<f32> = model
        .forward_segment(tokens::<B>(&data, 2), model.init_memory(2, &device))
        .logits
        .into_data()
        .to_vec()
        .unwrap();
    let b: Vec<f32> = baseline
        .forward_segment(tokens::<B>(&data, 2), memlab_core::NoMemory)
        .logits
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn with_no_memory_tokens_tr_xl_rmt_is_transformer_xl() {
    let device = Default::default();
    let xl_config = XlConfig {
        transformer: TransformerSizes {
            d_ff: 32,
            scale_embeddings: false,
            ..XlConfig::default().transformer
        },
        mem_len: 4,
        ..XlConfig::default()
    };
    let xl = materialize(init_seeded::<B, _>(&device, 5, || {
        TransformerXlArch::init::<B>(&xl_config, &CTX, &device)
    }));
    let config = RmtConfig {
        transformer: TransformerSizes {
            d_ff: 32,
            pre_norm: false,
            ..RmtConfig::default().transformer
        },
        backbone: Backbone::TransformerXl,
        num_mem_tokens: 0,
        mem_len: 4,
        ..RmtConfig::default()
    };
    let mut model = materialize(rmt::<B>(&config, 6));
    model.embedding = xl.embedding.clone();
    model.relative_blocks = xl.layers.clone();
    model.biases = xl.biases.clone();
    let data = seq(18, 2);
    let mut xl_memory = xl.init_memory(1, &device);
    let mut memory = model.init_memory(1, &device);
    for chunk in data.chunks(6) {
        let a = model.forward_segment(tokens::<B>(chunk, 1), memory);
        let b = xl.forward_segment(tokens::<B>(chunk, 1), xl_memory);
        memory = a.memory;
        xl_memory = b.memory;
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.logits.into_data().to_vec().unwrap(),
            b.logits.into_data().to_vec().unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(memory.cache.len(), xl_memory.len());
    }
}

#[test]
fn same_seed_same_model_and_checkpoints_round_trip() {
    for backbone in [Backbone::Transformer, Backbone::TransformerXl] {
        let config = RmtConfig {
            backbone,
            mem_len: if backbone == Backbone::TransformerXl {
                4
            } else {
                0
            },
            ..RmtConfig::default()
        };
        assert_seeded_and_round_trips::<RmtArch>(&config, &CTX, &seq(18, 3), 6);
    }
}

#[test]
fn every_bad_model_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("d_model = 0", "model.d_model"),
        ("n_heads = 3", "model.d_model"),
        ("backbone = \"lstm\"", "model.backbone"),
        ("memory_init = \"zeros\"", "model.memory_init"),
        ("num_mem_tokens = -1", "model.num_mem_tokens"),
        ("mem_len = 8", "model.mem_len"),
        ("read_mem_from_cache = true", "model.read_mem_from_cache"),
        ("same_length = true", "model.same_length"),
        (
            "backbone = \"transformer-xl\"\nsame_length = true",
            "model.same_length",
        ),
        ("dropout = 2.0", "model.dropout"),
        ("mem_tokens = 4", "model.mem_tokens"),
        ("memory_loss_weight = -0.01", "model.memory_loss_weight"),
        (
            "memory_loss_weight = 0.01\nnum_mem_tokens = 0",
            "model.memory_loss_weight",
        ),
    ];
    assert_config_errors::<RmtArch>(cases, &CTX);
    let ok = parse_model_config::<RmtArch>(
        parse_toml("backbone = \"transformer-xl\"\nmem_len = 8\nread_mem_from_cache = true")
            .unwrap(),
        &CTX,
    );
    assert!(ok.is_ok());
}

/// Appendix A.5: the memory outputs must predict a fixed special token. The
/// loss equals the weighted cross-entropy computed here on the host from the
/// model's own memory outputs and head, and its gradient trains the memory.
#[test]
fn auxiliary_memory_loss_is_the_weighted_special_token_cross_entropy() {
    let config = RmtConfig {
        transformer: TransformerSizes {
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            ..RmtConfig::default().transformer
        },
        backbone: Backbone::TransformerXl,
        num_mem_tokens: 2,
        mem_len: 4,
        memory_loss_weight: 0.01,
        ..RmtConfig::default()
    };
    let model = rmt::<AB>(&config, 5);
    let device = Default::default();
    // The head has one extra row (the special target); the task sees 12.
    assert_eq!(model.embedding.embedding.weight.dims(), [13, 16]);
    let data = seq(2 * 6, 3);
    let memory = model.init_memory(2, &device);
    let out = model.forward_segment(tokens::<AB>(&data, 2), memory.clone());
    assert_eq!(out.logits.dims(), [2, 6, 12]);
    let aux = out.aux_loss.clone().expect("memory loss is on");

    // Host reference: logits of the write block through the tied head.
    let (_, next) = model.hidden(tokens::<AB>(&data, 2), memory);
    let h: Vec<f32> = next.tokens.unwrap().into_data().to_vec().unwrap();
    let w: Vec<f32> = model
        .embedding
        .embedding
        .weight
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let bias: Vec<f32> = model
        .embedding
        .head_bias
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let mut nll = 0.0f64;
    for row in h.chunks(16) {
        let logits: Vec<f64> = (0..13)
            .map(|v| {
                bias[v] as f64
                    + (0..16)
                        .map(|k| row[k] as f64 * w[v * 16 + k] as f64)
                        .sum::<f64>()
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        nll += lse - logits[12];
    }
    let expected = 0.01 * nll / 4.0; // batch 2 × 2 slots
    let got = aux.clone().into_scalar() as f64;
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");

    // Its gradient reaches the learned initial memory and the special row.
    let grads = aux.backward();
    let g = model.memory_init.as_ref().unwrap().grad(&grads).unwrap();
    assert!(g.abs().sum().into_scalar() > 0.0);
    let row: Vec<f32> = model
        .embedding
        .embedding
        .weight
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert!(row[12 * 16..].iter().any(|x| *x != 0.0));

    // Off by default: no auxiliary loss, no extra row.
    let plain = rmt::<B>(
        &RmtConfig {
            memory_loss_weight: 0.0,
            ..config
        },
        5,
    );
    assert_eq!(plain.embedding.embedding.weight.dims(), [12, 16]);
    let out = plain.forward_segment(tokens::<B>(&data, 2), plain.init_memory(2, &device));
    assert!(out.aux_loss.is_none());
}

/// Memory replay back-propagation (memlab-core) gives full BPTT's gradients
/// through RMT's memory tokens over 4 segments, on both backbones; and
/// through the Tr-XL backbone's cache alone when there are no memory tokens
/// (the memory's layout says the tokens' slot is empty).
#[test]
fn memory_replay_backprop_matches_full_bptt() {
    let inputs = seq(2 * 24, 5);
    let batch = HostBatch {
        batch: 2,
        len: 24,
        targets: seq(2 * 24, 6),
        mask: (0..48)
            .map(|i| if i % 5 == 0 { 0.0 } else { 1.0 })
            .collect(),
        inputs,
    };
    for backbone in [Backbone::Transformer, Backbone::TransformerXl] {
        let config = RmtConfig {
            transformer: TransformerSizes {
                d_model: 16,
                n_heads: 2,
                d_ff: 32,
                ..RmtConfig::default().transformer
            },
            backbone,
            num_mem_tokens: 3,
            memory_loss_weight: 0.01,
            ..RmtConfig::default()
        };
        memlab_train::testing::assert_mrbp_matches_bptt::<RmtArch>(&config, &CTX, &batch, 6, 1e-4);
    }
    memlab_train::testing::assert_mrbp_matches_bptt::<RmtArch>(
        &cache_only(6),
        &CTX,
        &batch,
        6,
        1e-4,
    );
}

/// A small RMT on the Tr-XL backbone without memory tokens: its memory is
/// the cache of `mem_len` positions alone.
fn cache_only(mem_len: usize) -> RmtConfig {
    RmtConfig {
        transformer: TransformerSizes {
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            ..RmtConfig::default().transformer
        },
        backbone: Backbone::TransformerXl,
        num_mem_tokens: 0,
        mem_len,
        ..RmtConfig::default()
    }
}

/// Without memory tokens the tokens' slot is empty, and the memory rebuilt
/// from its parts is the cache alone (not the first cache layer taken for
/// memory tokens).
#[test]
fn memory_without_tokens_rebuilds_from_its_parts() {
    let device = Default::default();
    let config = cache_only(4);
    let model = materialize(rmt::<B>(&config, 4));
    let out = model.forward_segment(
        tokens::<B>(&seq(2 * 5, 1), 2),
        model.init_memory(2, &device),
    );
    let parts = out.memory.to_parts();
    assert!(!parts.layout.0[0], "the tokens' slot is empty");
    assert_eq!(parts.tensors.len(), config.n_layers);
    let rebuilt = RmtMemory::<B>::from_parts(parts).unwrap();
    assert!(rebuilt.tokens.is_none());
    assert_eq!(rebuilt.cache.layers.len(), config.n_layers);
    assert_eq!(rebuilt.cache.layers[0].dims(), [2, 4, 16]);
}

/// `preset = "paper"` is LM-RMT's code path for RMT (`run_copy.sh` et al.:
/// `MemTransformerLM`, `attn_type 0`, `--mem_len 0`, no `--pre_lnorm`,
/// `--dropout 0.1 --dropatt 0.0`, `--mem_at_end --read_mem_from_cache`),
/// each field checked; a field given beside the preset wins; an unknown
/// preset is an error naming `model.preset`.
#[test]
fn the_paper_preset_is_lm_rmts_setting() {
    let parse = |text: &str| parse_model_config::<RmtArch>(parse_toml(text).unwrap(), &CTX);
    let paper = parse("preset = \"paper\"").unwrap();
    let expected = RmtConfig {
        transformer: TransformerSizes {
            pre_norm: false,
            scale_embeddings: true,
            dropout: 0.1,
            attn_dropout: 0.0,
            tied_embeddings: true,
            init_std: 0.02,
            ..RmtConfig::default().transformer
        },
        backbone: Backbone::TransformerXl,
        mem_len: 0,
        mem_at_end: true,
        read_mem_from_cache: true,
        untie_r: false,
        memory_init: MemoryInit::Repeated,
        ..RmtConfig::default()
    };
    assert_eq!(paper, expected);
    assert_ne!(
        paper,
        RmtConfig::default(),
        "the defaults are not the paper's"
    );
    let sized =
        parse("preset = \"paper\"\nd_model = 128\nn_layers = 4\nd_head = 64\ndropout = 0.0")
            .unwrap();
    assert_eq!(
        (
            sized.transformer.d_model,
            sized.n_layers,
            sized.transformer.d_head
        ),
        (128, 4, Some(64))
    );
    assert_eq!(sized.transformer.dropout, 0.0);
    assert_eq!(sized.backbone, Backbone::TransformerXl);
    for (text, needle) in [
        (
            "preset = \"papre\"",
            "unknown preset \"papre\"; known for rmt: paper",
        ),
        ("preset = 3", "must be a string"),
    ] {
        let err = parse(text).unwrap_err();
        assert_eq!(err.field, "model.preset");
        assert!(err.message.contains(needle), "{err}");
    }
    let err =
        parse_model_config::<TransformerXlArch>(parse_toml("preset = \"paper\"").unwrap(), &CTX)
            .unwrap_err();
    assert!(err.message.contains("transformer-xl has none"), "{err}");
}

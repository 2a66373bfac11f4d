use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use memlab_baseline::{BaselineArch, BaselineConfig};
use memlab_core::config::TransformerSizes;
use memlab_core::config::parse_toml;
use memlab_core::layers::PositionKind;
use memlab_core::registry::parse_model_config;
use memlab_core::seed::{init_seeded, materialize};
use memlab_core::{
    Architecture, BpttDepth, ExperimentConfig, HostBatch, MemoryState, ModelContext, SegmentModel,
};
use memlab_tasks::{CopyConfig, CopyTask};
use memlab_train::runner::run_segments;
use memlab_train::testing::seeded_model;
use memlab_train::testing::{assert_config_errors, assert_seeded_and_round_trips};
use memlab_train::{TrainOptions, train};
use memlab_transformer_xl::{TransformerXl, TransformerXlArch, XlConfig, XlMemory, xl_mask};

type B = Flex;
type AB = Autodiff<Flex>;

const CTX: ModelContext = ModelContext {
    vocab_size: 12,
    max_segment_len: 8,
};

fn xl<BB: Backend>(config: &XlConfig, seed: u64) -> TransformerXl<BB> {
    seeded_model::<TransformerXlArch, BB>(config, &CTX, seed)
}

fn tokens<BB: Backend>(data: &[i64], b: usize) -> Tensor<BB, 2, Int> {
    memlab_train::testing::tokens(data, b, &Default::default())
}

fn seq(len: usize, seed: i64) -> Vec<i64> {
    (0..len as i64)
        .map(|i| (i * 5 + seed * 3 + i * i) % 12)
        .collect()
}

/// Logits of every position of `data` `[1, len]` read in segments of `seg`.
fn stream_logits(model: &TransformerXl<B>, data: &[i64], seg: usize) -> Vec<f32> {
    memlab_train::testing::segment_logits(model, data, seg).concat()
}

#[test]
fn shapes_and_a_cache_bounded_by_mem_len() {
    let config = XlConfig {
        mem_len: 5,
        ..XlConfig::default()
    };
    let model = xl::<B>(&config, 0);
    let mut memory = model.init_memory(2, &Default::default());
    assert!(memory.is_empty());
    for step in 0..6 {
        let out = model.forward_segment(tokens::<B>(&seq(2 * 3, step), 2), memory);
        assert_eq!(out.logits.dims(), [2, 3, 12]);
        memory = out.memory;
        assert_eq!(memory.layers.len(), config.n_layers);
        let expected = (3 * (step as usize + 1)).min(5);
        assert_eq!(memory.len(), expected, "after segment {step}");
        assert_eq!(
            memory.layers[0].dims(),
            [2, expected, config.transformer.d_model]
        );
    }
    assert_eq!(memory.num_floats(), 2 * 2 * 5 * config.transformer.d_model);
    assert_eq!(
        model.memory_floats_per_sequence(),
        2 * 5 * config.transformer.d_model
    );
    let again = XlMemory::<B>::from_parts(memory.to_parts()).unwrap();
    assert_eq!(again.len(), 5);
}

#[test]
fn eval_uses_eval_mem_len_and_training_mem_len() {
    let config = XlConfig {
        mem_len: 3,
        eval_mem_len: Some(7),
        ..XlConfig::default()
    };
    let eval_model = xl::<B>(&config, 1);
    let train_model = xl::<AB>(&config, 1);
    let (mut m_eval, mut m_train) = (XlMemory::<B>::empty(), XlMemory::<AB>::empty());
    for step in 0..4 {
        m_eval = eval_model
            .forward_segment(tokens::<B>(&seq(4, step), 1), m_eval)
            .memory;
        m_train = train_model
            .forward_segment(tokens::<AB>(&seq(4, step), 1), m_train)
            .memory;
    }
    assert_eq!(m_eval.len(), 7);
    assert_eq!(m_train.len(), 3);
}

#[test]
fn masks_cell_by_cell() {
    let device = Default::default();
    let (q, m) = (4, 3);
    let plain: Vec<bool> = xl_mask::<B>(q, m, None, &device)
        .into_data()
        .to_vec()
        .unwrap();
    for i in 0..q {
        for j in 0..m + q {
            assert_eq!(plain[i * (m + q) + j], j > m + i, "causal ({i}, {j})");
        }
    }
    // same_length (official `dec_attn_mask`): once the keys outnumber
    // mem_len, every query sees exactly the mem_len nearest keys, itself
    // included.
    for mem_len in [2, 3, 5] {
        let same: Vec<bool> = xl_mask::<B>(q, m, Some(mem_len), &device)
            .into_data()
            .to_vec()
            .unwrap();
        for i in 0..q {
            let visible: Vec<usize> = (0..m + q).filter(|&j| !same[i * (m + q) + j]).collect();
            let nearest: Vec<usize> = ((m + i + 1).saturating_sub(mem_len)..=m + i).collect();
            assert_eq!(visible, nearest, "mem_len {mem_len}, query {i}");
        }
    }
    // With no more keys than mem_len, it is the plain causal mask.
    let same: Vec<bool> = xl_mask::<B>(q, m, Some(m + q), &device)
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(same, plain);
}

#[test]
fn with_no_cache_and_no_position_term_it_is_the_baseline_for_copied_weights() {
    let device = Default::default();
    let base_config = BaselineConfig {
        transformer: TransformerSizes {
            pre_norm: false,
            d_ff: 32,
            ..BaselineConfig::default().transformer
        },
        positions: PositionKind::None,
        ..BaselineConfig::default()
    };
    let mut baseline = materialize(init_seeded::<B, _>(&device, 3, || {
        BaselineArch::init::<B>(&base_config, &CTX, &device)
    }));
    let config = XlConfig {
        transformer: TransformerSizes {
            d_ff: 32,
            ..XlConfig::default().transformer
        },
        mem_len: 0,
        ..XlConfig::default()
    };
    let mut model = materialize(xl::<B>(&config, 4));

    // XL's content projections have no biases: zero the baseline's.
    for block in &mut baseline.blocks {
        let a = &mut block.attention;
        for l in [&mut a.query, &mut a.key, &mut a.value, &mut a.output] {
            l.bias = l.bias.clone().map(|b| b.map(|t| t.zeros_like()));
        }
    }
    model.embedding = baseline.embedding.clone();
    for (layer, block) in model.layers.iter_mut().zip(&baseline.blocks) {
        layer.attention.projections = block.attention.clone();
        layer.body = block.body.clone();
        layer.attention.position.weight = layer
            .attention
            .position
            .weight
            .clone()
            .map(|w| w.zeros_like());
    }
    for bias in &mut model.biases {
        bias.u = bias.u.clone().map(|t| t.zeros_like());
        bias.v = bias.v.clone().map(|t| t.zeros_like());
    }

    let data = seq(2 * 8, 1);
    let mut memory = model.init_memory(2, &device);
    for _ in 0..3 {
        let out = model.forward_segment(tokens::<B>(&data, 2), memory);
        memory = out.memory;
        assert!(memory.is_empty());
        let a: Vec<f32> = out.logits.into_data().to_vec().unwrap();
        let b: Vec<f32> = baseline
            .forward_segment(tokens::<B>(&data, 2), memlab_core::NoMemory)
            .logits
            .into_data()
            .to_vec()
            .unwrap();
        for (n, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 1e-5, "logit {n}: {x} vs {y}");
        }
    }
}

#[test]
fn a_token_reaches_the_next_segment_and_no_further_than_layers_times_window() {
    let (n_layers, mem_len, seg) = (2, 3, 4);
    let config = XlConfig {
        transformer: TransformerSizes {
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            init_std: 0.5,
            ..XlConfig::default().transformer
        },
        n_layers,
        mem_len,
        ..XlConfig::default()
    };
    let model = xl::<B>(&config, 5);
    let len = 12 * seg;
    let data = seq(len, 2);
    let base = stream_logits(&model, &data, seg);
    let reach = n_layers * (mem_len + seg);
    for changed in [1usize, 5, 9] {
        let mut other = data.clone();
        other[changed] = (other[changed] + 1) % 12;
        let after = stream_logits(&model, &other, seg);
        let differs = |p: usize| {
            base[p * 12..(p + 1) * 12]
                .iter()
                .zip(&after[p * 12..(p + 1) * 12])
                .any(|(a, b)| a != b)
        };
        let next_segment = (changed / seg + 1) * seg;
        assert!(
            (next_segment..next_segment + seg).any(differs),
            "a change at {changed} does not reach the next segment"
        );
        let last = (0..len).filter(|&p| differs(p)).max().unwrap();
        assert!(
            last < changed + reach,
            "a change at {changed} reaches position {last}, beyond {changed} + {reach}"
        );
        assert!(
            !(0..changed).any(differs),
            "a change at {changed} reaches back"
        );
    }
}

#[test]
fn no_gradient_flows_into_the_cache() {
    // Untied embeddings: a token's embedding row then gets gradient only
    // through the positions it is read at.
    let config = XlConfig {
        transformer: TransformerSizes {
            tied_embeddings: false,
            ..XlConfig::default().transformer
        },
        mem_len: 8,
        ..XlConfig::default()
    };
    let model = xl::<AB>(&config, 6);
    let device = Default::default();
    // Segment 1 uses tokens 10 and 11 only; segment 2 never does. Loss on segment 2 only.
    let inputs: Vec<i64> = vec![10, 11, 10, 11, 2, 3, 4, 5];
    let batch = HostBatch {
        batch: 1,
        len: 8,
        inputs,
        targets: vec![3, 4, 5, 6, 3, 4, 5, 6],
        mask: vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
    }
    .to_device::<AB>(12, &device)
    .unwrap();
    let rollout = run_segments(
        &model,
        &batch,
        4,
        BpttDepth::Full,
        model.init_memory(1, &device),
    );
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
    let row = |t: usize| &g[t * config.transformer.d_model..(t + 1) * config.transformer.d_model];
    assert!(
        row(10).iter().chain(row(11)).all(|&x| x == 0.0),
        "gradient reached the cache"
    );
    assert!(
        row(2).iter().any(|&x| x != 0.0),
        "segment 2's own tokens get gradient"
    );
}

#[test]
fn same_seed_same_model_and_checkpoints_round_trip_bit_identically() {
    assert_seeded_and_round_trips::<TransformerXlArch>(&XlConfig::default(), &CTX, &seq(24, 3), 8);
}

#[test]
fn every_bad_model_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("d_model = 0", "model.d_model"),
        ("n_layers = 0", "model.n_layers"),
        ("n_heads = 0", "model.n_heads"),
        ("d_model = 30\nn_heads = 4", "model.d_model"),
        ("d_model = 9\nn_heads = 3", "model.d_model"),
        ("d_head = 0", "model.d_head"),
        ("dropout = 1.5", "model.dropout"),
        ("attn_dropout = -0.5", "model.attn_dropout"),
        ("mem_len = -1", "model.mem_len"),
        ("mem_len = 0\nsame_length = true", "model.same_length"),
        ("clamp_len = \"far\"", "model.clamp_len"),
        ("memory_length = 4", "model.memory_length"),
    ];
    assert_config_errors::<TransformerXlArch>(cases, &CTX);
}

#[test]
fn the_cache_carries_the_copy_across_segments() {
    // The copy spans three segments: the baseline stays at chance (1/8); the
    // cache lets Transformer-XL see what it must copy.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[run]
name = "xl"
out_dir = "{}"
seed = 1
[task]
kind = "copy"
length = 8
vocab_size = 10
[train]
steps = 300
batch_size = 32
segment_len = 8
lr = 0.003
min_lr = 0.0001
warmup_steps = 20
log_every = 50
eval_batches = 4
[model]
arch = "transformer-xl"
d_ff = 128
mem_len = 16
pre_norm = true
"#,
        dir.path().display()
    );
    let config = ExperimentConfig::from_table(parse_toml(&text).unwrap()).unwrap();
    let task = CopyTask::new(
        CopyConfig {
            length: 8,
            vocab_size: 10,
        },
        1,
    );
    let mut fields = config.model.clone().unwrap();
    fields.remove("arch");
    let ctx = ModelContext {
        vocab_size: 10,
        max_segment_len: 8,
    };
    let model_config = parse_model_config::<TransformerXlArch>(fields, &ctx).unwrap();
    let options = TrainOptions {
        run_dir: dir.path().join("xl"),
        resume: false,
        overwrite: false,
        memory_limit: None,
        progress: None,
    };
    let report = train::<TransformerXlArch, AB>(
        &config,
        &model_config,
        &task,
        &options,
        &Default::default(),
    )
    .unwrap();
    assert!(
        report.eval.accuracy > 0.9,
        "accuracy {}",
        report.eval.accuracy
    );
    // The last segment, entirely answer, is copied from two segments back.
    assert!(
        report.eval.segment_accuracy[2] > 0.9,
        "{:?}",
        report.eval.segment_accuracy
    );
}

/// Streaming evaluation (Transformer-XL's ordered LM iterator): the cache
/// left by batch `i` is the one batch `i + 1` starts from. `evaluate` must
/// equal that loop written out here, and differ from fresh memory per batch.
#[test]
fn streaming_evaluation_carries_the_cache_from_batch_to_batch() {
    use memlab_core::{Metric, Split, Task};
    use memlab_tasks::text::{Corpus, LmTask};
    use memlab_train::evaluate::evaluate;
    use std::sync::Arc;

    let stream: Vec<u32> = (0..1200u32).map(|i| (i * 7 + i / 13) % 12).collect();
    let task = LmTask {
        name: "toy".into(),
        corpus: Corpus {
            train: Arc::new(stream.clone()),
            valid: Arc::new(stream.clone()),
            test: Arc::new(stream),
        },
        vocab_size: 12,
        metric: Metric::Perplexity,
        seq_len: 16,
        codec: memlab_tasks::text::Codec::Bytes,
    };
    let model = xl::<B>(
        &XlConfig {
            transformer: TransformerSizes {
                d_model: 16,
                n_heads: 2,
                d_ff: 32,
                // Large weights: attention far from uniform, so the cache matters.
                init_std: 0.5,
                ..XlConfig::default().transformer
            },
            mem_len: 8,
            ..XlConfig::default()
        },
        3,
    );
    let device = Default::default();
    let (streams, batches) = (3usize, 5usize);
    let eval = evaluate(&model, &task, Split::Valid, batches, streams, 8, &device).unwrap();

    let loss_over = |carry: bool| {
        let mut memory = model.init_memory(streams, &device);
        let (mut nll, mut tokens) = (0.0, 0.0);
        for i in 0..batches as u64 {
            let batch = task
                .batch(Split::Valid, i, streams)
                .to_device::<B>(12, &device)
                .unwrap();
            let start = if carry {
                memory.clone()
            } else {
                model.init_memory(streams, &device)
            };
            let rollout = run_segments(&model, &batch, 8, BpttDepth::Full, start);
            let figures = rollout.figures();
            nll += figures.loss * figures.tokens;
            tokens += figures.tokens;
            memory = rollout.memory;
        }
        nll / tokens
    };
    let carried = loss_over(true);
    assert!(
        (eval.loss - carried).abs() < 1e-6,
        "{} vs {carried}",
        eval.loss
    );
    assert!((eval.value - carried.exp()).abs() < 1e-4, "perplexity");
    let fresh = loss_over(false);
    assert!(
        (carried - fresh).abs() > 1e-3,
        "the cache changes the loss: {carried} vs {fresh}"
    );
}

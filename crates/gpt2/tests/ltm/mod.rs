// (a module of tests/gpt2.rs: one test binary for the crate)
//! GPT-2 with the ∞-former's long-term memory (`arch = "gpt2-ltm"`). The
//! continuous attention itself (write, contraction, read, KL, sticky
//! memories) is memlab-infinity-former's and is checked against closed
//! forms there; these tests check how GPT-2 carries it: what is written,
//! which queries read it, where its output goes, what is detached, when the
//! signal starts again.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::prelude::*;
use memlab_core::{BpttDepth, MemoryState, ModelContext, SegmentModel};
use memlab_gpt2::{Gpt2Ltm, Gpt2LtmArch, Gpt2LtmConfig};
use memlab_infinity_former::basis::{GaussianBasis, uniform_positions};
use memlab_train::testing::{
    assert_config_errors, assert_seeded_and_round_trips, seeded_model, segment_logits,
    segment_logits_with_a_change, tokens,
};

type B = Flex;
type AB = Autodiff<Flex>;

const CTX: ModelContext = ModelContext {
    vocab_size: 12,
    max_segment_len: 6,
};

fn config() -> Gpt2LtmConfig {
    let mut long_term = Gpt2LtmConfig::official_long_term();
    long_term.num_basis = 8;
    long_term.basis_sigmas = vec![0.1, 0.2];
    long_term.num_samples = 8;
    long_term.sticky_bins = 16;
    Gpt2LtmConfig {
        gpt2: super::small_memory_gpt2(),
        reset_after: 0,
        long_term,
    }
}

fn seq(len: usize, offset: usize) -> Vec<i64> {
    (0..len)
        .map(|i| ((i * 5 + i * i + offset) % 12) as i64)
        .collect()
}

fn host(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[test]
fn shapes_and_a_bounded_memory() {
    let model = seeded_model::<Gpt2LtmArch, B>(&config(), &CTX, 0);
    let device = Default::default();
    let mut memory = model.init_memory(3, &device);
    assert_eq!(memory.num_floats(), 0);
    for (i, segment) in seq(3 * 6 * 5, 1).chunks(18).enumerate() {
        let out = model.forward_segment(tokens(segment, 3, &device), memory);
        assert_eq!(out.logits.dims(), [3, 6, 12]);
        // No signal to read at the first segment, so no KL.
        assert_eq!(out.aux_loss.is_some(), i > 0, "segment {i}");
        memory = out.memory;
        assert_eq!(memory.written, 6 * i, "segment {i}");
    }
    // Per block: the signal (N × d), the last inputs (6 × d), the density.
    assert_eq!(model.memory_floats_per_sequence(), 2 * ((8 + 6) * 16 + 16));
    assert_eq!(memory.num_floats(), 3 * model.memory_floats_per_sequence());
    // The layout round trip keeps the count.
    let back = memlab_gpt2::Gpt2LtmMemory::<B>::from_parts(memory.to_parts()).unwrap();
    assert_eq!(back.written, memory.written);
    assert_eq!(back.num_floats(), memory.num_floats());
}

#[test]
fn seeded_deterministic_and_checkpoint_round_trip() {
    assert_seeded_and_round_trips::<Gpt2LtmArch>(&config(), &CTX, &seq(18, 1), 6);
}

#[test]
fn it_is_gpt2_until_there_is_a_memory_and_where_the_memory_adds_nothing() {
    let mut model = seeded_model::<Gpt2LtmArch, B>(&config(), &CTX, 1);
    let data = seq(18, 2);
    let gpt2 = segment_logits(&model.gpt2, &data, 6);
    let ours = segment_logits(&model, &data, 6);
    // The first segment has nothing in memory: GPT-2's logits exactly.
    assert_eq!(ours[0], gpt2[0]);
    assert_ne!(ours[1], gpt2[1], "the memory changes nothing");
    // The memory's output projection at zero: GPT-2 at every segment (so
    // GPT-2's parity with transformers holds under the memory).
    for ltm in &mut model.long_term {
        ltm.output.weight = Param::from_tensor(ltm.output.weight.val().zeros_like());
    }
    assert_eq!(segment_logits(&model, &data, 6), gpt2);
}

#[test]
fn the_memory_holds_each_blocks_inputs_of_the_last_segment() {
    let model = seeded_model::<Gpt2LtmArch, B>(&config(), &CTX, 2);
    let device = Default::default();
    let t = tokens::<B>(&seq(12, 3), 2, &device);
    let out = model.forward_segment(t.clone(), model.init_memory(2, &device));
    // transformers' hidden states: the embeddings, then each block's output
    // (the next block's input); the last one is after ln_f.
    let states = model.gpt2.hidden_states(t);
    let pending = &out.memory.long_term.pending;
    assert_eq!(pending.len(), 2);
    for (l, x) in pending.iter().enumerate() {
        assert_eq!(
            host(x.clone().unwrap()),
            host(states[l].clone()),
            "block {l}"
        );
    }
}

/// One block, no gate, no sticky memories; the block's own attention and
/// feed-forward outputs zeroed, so that the block computes `x + LTM(q, B)`
/// and the model `ln_f(x + LTM(q, B))`.
fn bare_memory_model() -> (Gpt2Ltm<B>, Gpt2LtmConfig) {
    let mut config = config();
    config.gpt2.n_layer = 1;
    config.long_term.gate = false;
    config.long_term.sticky = false;
    let mut model = seeded_model::<Gpt2LtmArch, B>(&config, &CTX, 3);
    let zero = |p: &Param<Tensor<B, 2>>| Param::from_tensor(p.val().zeros_like());
    let zero1 = |p: &Param<Tensor<B, 1>>| Param::from_tensor(p.val().zeros_like());
    let block = &mut model.gpt2.blocks[0];
    let attention = &mut block.attention.output;
    attention.weight = zero(&attention.weight);
    attention.bias = attention.bias.as_ref().map(zero1);
    let outer = &mut block.body.feed_forward.outer;
    outer.weight = zero(&outer.weight);
    outer.bias = outer.bias.as_ref().map(zero1);
    (model, config)
}

fn matrix(t: Tensor<B, 2>) -> Vec<Vec<f64>> {
    let [r, c] = t.dims();
    let v: Vec<f32> = t.into_data().to_vec().unwrap();
    (0..r)
        .map(|i| (0..c).map(|j| v[i * c + j] as f64).collect())
        .collect()
}

/// `x W` for `x` `[n, i]`, `w` `[i, o]` (Burn's `Linear` layout).
fn times(x: &[Vec<f64>], w: &[Vec<f64>]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|row| {
            (0..w[0].len())
                .map(|j| row.iter().zip(w).map(|(a, w)| a * w[j]).sum())
                .collect()
        })
        .collect()
}

fn layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    x.iter()
        .zip(gamma.iter().zip(beta))
        .map(|(v, (g, b))| (v - mean) / (var + eps).sqrt() * g + b)
        .collect()
}

#[test]
fn segment_two_reads_segment_ones_embeddings_as_the_official_code_does() {
    // A naive reference on the host, in f64, of what the official
    // `modeling_gpt2.py` computes for the second segment: the block's input
    // of segment 1 (`Block.mem`, here the embeddings) fitted by ridge
    // regression (the basis from memlab-infinity-former's host code), read
    // by the queries `c_attn(ln_1(x))` of segment 2 split into heads, added
    // to the attention's output.
    let (model, config) = bare_memory_model();
    let lt = &config.long_term;
    let (s, d, h) = (6, 16, 2);
    let dh = d / h;
    let data = seq(12, 4);
    let logits = segment_logits(&model, &data, s);

    let vec1 = |p: &Param<Tensor<B, 1>>| -> Vec<f64> {
        p.val()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let wte = matrix(model.gpt2.embedding.embedding.weight.val());
    let wpe = matrix(model.gpt2.positions.learned.as_ref().unwrap().weight.val());
    let embed = |tokens: &[i64]| -> Vec<Vec<f64>> {
        tokens
            .iter()
            .enumerate()
            .map(|(p, &t)| (0..d).map(|j| wte[t as usize][j] + wpe[p][j]).collect())
            .collect()
    };
    let (x1, x2) = (embed(&data[..s]), embed(&data[s..]));

    // B = Gᵀ X over the segment's positions, N × d.
    let basis = GaussianBasis::new(lt.num_basis, &lt.basis_sigmas);
    let n = basis.len();
    let g = basis.regression(&uniform_positions(s), lt.ridge_penalty);
    let coefficients: Vec<Vec<f64>> = (0..n)
        .map(|k| {
            (0..d)
                .map(|j| (0..s).map(|p| g[p * n + k] * x1[p][j]).sum())
                .collect()
        })
        .collect();
    let ltm = &model.long_term[0];
    let keys = times(&coefficients, &matrix(ltm.key.weight.val()));
    let values = times(&coefficients, &matrix(ltm.value.weight.val()));
    let (w_mu, w_sigma) = (matrix(ltm.mu.weight.val()), matrix(ltm.sigma.weight.val()));

    let block = &model.gpt2.blocks[0];
    let norm = &block.body.norm_attention;
    let (g1, b1) = (vec1(&norm.gamma), vec1(norm.beta.as_ref().unwrap()));
    let eps = config.gpt2.layer_norm_epsilon;
    let normed: Vec<Vec<f64>> = x2.iter().map(|x| layer_norm(x, &g1, &b1, eps)).collect();
    let q_bias = vec1(block.attention.query.bias.as_ref().unwrap());
    let queries: Vec<Vec<f64>> = times(&normed, &matrix(block.attention.query.weight.val()))
        .into_iter()
        .map(|q| q.iter().zip(&q_bias).map(|(a, b)| a + b).collect())
        .collect();
    let softplus = |x: f64| (1.0 + x.exp()).ln();
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut context = vec![vec![0.0; d]; s];
    for (p, q) in queries.iter().enumerate() {
        for head in 0..h {
            let cols = head * dh..(head + 1) * dh;
            let scores: Vec<f64> = keys
                .iter()
                .map(|k| cols.clone().map(|c| q[c] * k[c]).sum::<f64>() / (dh as f64).sqrt())
                .collect();
            let mu = sigmoid(scores.iter().zip(&w_mu).map(|(s, w)| s * w[0]).sum());
            let var = softplus(scores.iter().zip(&w_sigma).map(|(s, w)| s * w[0]).sum())
                .max(lt.sigma_floor);
            let r = basis.expectation(mu, var);
            for c in cols {
                context[p][c] = (0..n).map(|k| r[k] * values[k][c]).sum();
            }
        }
    }
    let out = times(&context, &matrix(ltm.output.weight.val()));

    // ln_f(x + LTM) and the tied head.
    let f = &model.gpt2.final_norm;
    let (gf, bf) = (vec1(&f.gamma), vec1(f.beta.as_ref().unwrap()));
    for p in 0..s {
        let y: Vec<f64> = (0..d).map(|j| x2[p][j] + out[p][j]).collect();
        let y = layer_norm(&y, &gf, &bf, eps);
        for (t, row) in wte.iter().enumerate() {
            let want: f64 = y.iter().zip(row).map(|(a, b)| a * b).sum();
            let got = logits[1][p * 12 + t] as f64;
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "position {p}, token {t}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn what_segment_one_holds_reaches_segment_three_until_the_signal_restarts() {
    // One block: its memory is the embeddings, so once the signal has
    // started again from segment 2, segment 1 can no longer reach it.
    let mut c = config();
    c.gpt2.n_layer = 1;
    let run = |c: &Gpt2LtmConfig| {
        let model = seeded_model::<Gpt2LtmArch, B>(c, &CTX, 4);
        segment_logits_with_a_change(&model, &seq(18, 5), 6, 2, 12)
    };
    let (a, b) = run(&c);
    assert_ne!(a[2], b[2], "segment 3 does not see segment 1");
    // Within segment 1 the change is causal.
    assert_eq!(a[0][..2 * 12], b[0][..2 * 12]);
    // The official mem_threshold: a signal that holds a segment's tokens
    // starts again from the last segment.
    c.reset_after = 6;
    let (a, b) = run(&c);
    assert_ne!(a[1], b[1], "segment 2 does not see segment 1");
    assert_eq!(a[2], b[2], "the signal did not start again");
}

/// The gradient of segment 2's loss with respect to block 0's feed-forward
/// weights and to the long-term attention's parameters.
fn gradients(depth: BpttDepth) -> (Vec<f32>, f32) {
    let model = seeded_model::<Gpt2LtmArch, AB>(&config(), &CTX, 6);
    let grads = super::last_segment_gradients(&model, seq(12, 7), seq(12, 8), 12, 6, depth);
    let inner = model.gpt2.blocks[0]
        .body
        .feed_forward
        .inner
        .weight
        .grad(&grads);
    let ltm = &model.long_term[1];
    let ltm_sum: f32 = [
        &ltm.key.weight,
        &ltm.value.weight,
        &ltm.mu.weight,
        &ltm.sigma.weight,
    ]
    .into_iter()
    .map(|p| p.grad(&grads).map_or(0.0, |g| g.abs().sum().into_scalar()))
    .sum();
    let gate = ltm.gate.as_ref().unwrap().weight.grad(&grads);
    assert!(
        gate.is_some_and(|g| g.abs().sum().into_scalar() > 0.0),
        "no gradient to the gate"
    );
    (inner.unwrap().into_data().to_vec().unwrap(), ltm_sum)
}

#[test]
fn the_memory_is_detached_and_the_new_parameters_learn() {
    // However deep the truncation, segment 2's loss does not reach back
    // through the memory into segment 1's computation (the official code
    // stores `hidden_states.detach()` and a detached signal).
    let (full, ltm) = gradients(BpttDepth::Full);
    let (one, _) = gradients(BpttDepth::Segments(1));
    assert_eq!(full, one);
    assert!(full.iter().any(|g| *g != 0.0));
    assert!(ltm > 0.0, "no gradient to the long-term attention");
}

#[test]
fn every_bad_model_value_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("[long_term]\nnum_basis = 7", "model.long_term.num_basis"),
        ("[long_term]\ntau = 1.5", "model.long_term.tau"),
        (
            "[long_term]\nbasis_sigmas = []",
            "model.long_term.basis_sigmas",
        ),
        (
            "[long_term]\nsigma_floor = 0.0",
            "model.long_term.sigma_floor",
        ),
        ("n_head = 0", "model.n_head"),
        ("n_positions = 5", "model.n_positions"),
    ];
    assert_config_errors::<Gpt2LtmArch>(cases, &CTX);
    // What the deserializer refuses is named in the message.
    for (text, named) in [
        (
            "[long_term]\nnum_basiss = 8",
            "long_term: unknown field `num_basiss`",
        ),
        ("long_term = 3", "long_term: expected a table"),
        ("reset_after = -1", "reset_after"),
        ("hedas = 2", "hedas"),
    ] {
        let table = memlab_core::config::parse_toml(text).unwrap();
        let err = memlab_core::registry::parse_model_config::<Gpt2LtmArch>(table, &CTX)
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{text}: {err}");
    }
}

#[test]
fn the_official_long_term_memory_is_the_default() {
    // A table that names nothing of the memory gets the official run's.
    let table = memlab_core::config::parse_toml("[long_term]\nnum_basis = 64").unwrap();
    let parsed = memlab_core::registry::parse_model_config::<Gpt2LtmArch>(table, &CTX).unwrap();
    let mut want = Gpt2LtmConfig::official_long_term();
    want.num_basis = 64;
    assert_eq!(parsed.long_term, want);
    assert_eq!(parsed.reset_after, 2048);
}

#[test]
fn gpt2_ltm_learns_copy_within_one_segment() {
    super::learns_copy_within_one_segment::<Gpt2LtmArch>(
        "arch = \"gpt2-ltm\"\nn_positions = 16\n[model.long_term]\nnum_basis = 16\nnum_samples = 16",
    );
}

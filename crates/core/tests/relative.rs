//! Transformer-XL's relative attention against a direct construction.

use burn::backend::Flex;
use burn::prelude::*;
use memlab_core::layers::{
    MultiHeadAttentionConfig, TransformerBlockConfig, causal_mask, rel_shift, relative_sinusoids,
    sinusoids,
};
use memlab_core::seed::materialize;

type B = Flex;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn rel_shift_aligns_every_visible_cell_to_distance_mlen_plus_i_minus_j() {
    let device = Default::default();
    let (b, h, q, m) = (2, 3, 4, 5);
    let k = m + q;
    // Column c of the unshifted scores holds distance k−1−c; encode (b, h, i, distance).
    let code = |bi: usize, hi: usize, i: usize, dist: usize| {
        (((bi * 10 + hi) * 10 + i) * 100 + dist) as f32
    };
    let mut raw = vec![0.0f32; b * h * q * k];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..q {
                for c in 0..k {
                    raw[((bi * h + hi) * q + i) * k + c] = code(bi, hi, i, k - 1 - c);
                }
            }
        }
    }
    let shifted = host(rel_shift(Tensor::<B, 4>::from_data(
        TensorData::new(raw, [b, h, q, k]),
        &device,
    )));
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..q {
                for j in 0..=m + i {
                    assert_eq!(
                        shifted[((bi * h + hi) * q + i) * k + j],
                        code(bi, hi, i, m + i - j),
                        "cell b{bi} h{hi} ({i}, {j})"
                    );
                }
            }
        }
    }
}

#[test]
fn relative_sinusoids_run_from_klen_minus_one_down_to_zero_and_clamp() {
    let device = Default::default();
    let r = host(relative_sinusoids::<B>(5, 4, None, &device));
    let direct = host(sinusoids::<B>(&[4.0, 3.0, 2.0, 1.0, 0.0], 4, &device));
    assert_eq!(r, direct);
    // clamp_len 0 means no clamp in the official code (`if clamp_len > 0`).
    assert_eq!(host(relative_sinusoids::<B>(5, 4, Some(0), &device)), r);
    let clamped = host(relative_sinusoids::<B>(5, 4, Some(2), &device));
    let direct = host(sinusoids::<B>(&[2.0, 2.0, 2.0, 1.0, 0.0], 4, &device));
    assert_eq!(clamped, direct);
    // sin(0) = 0, cos(0) = 1 at distance 0.
    assert_eq!(&r[16..], &[0.0, 0.0, 1.0, 1.0]);
}

/// Applies a `[d_in, d_out]` weight (Burn's layout) to `x` `[n, d_in]`.
fn project(x: &[f32], w: &[f32], n: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * d_out];
    for r in 0..n {
        for c in 0..d_out {
            out[r * d_out + c] = (0..d_in).map(|i| x[r * d_in + i] * w[i * d_out + c]).sum();
        }
    }
    out
}

#[test]
fn relative_attention_matches_the_paper_score_for_every_query_and_key() {
    let device = Default::default();
    let (d, heads, q, m) = (8, 2, 3, 4);
    let dh = d / heads;
    let k = m + q;
    let config = MultiHeadAttentionConfig::new(d, heads).with_init_std(0.3);
    let attn = config.init_relative::<B>(&device);
    let bias = config.init_relative_bias::<B>(&device);

    let context_data = values(k * d, 7);
    let context =
        Tensor::<B, 3>::from_data(TensorData::new(context_data.clone(), [1, k, d]), &device);
    let x = context.clone().narrow(1, m, q);
    let pos = relative_sinusoids::<B>(k, d, None, &device);
    let out = host(attn.forward(
        x,
        context,
        pos.clone(),
        &bias,
        Some(causal_mask::<B>(q, m, &device)),
    ));

    // Direct construction: score(i, j) = ((q_i + u)·k_j + (q_i + v)·W_R R[dist]) / √d_head
    // with dist = m + i − j, R[dist] the sinusoid of that distance.
    let p = &attn.projections;
    let w = |l: &burn::nn::Linear<B>| host(l.weight.val());
    let (wq, wk, wv, wo, wr) = (
        w(&p.query),
        w(&p.key),
        w(&p.value),
        w(&p.output),
        w(&attn.position),
    );
    let qs = project(&context_data[m * d..], &wq, q, d, d);
    let ks = project(&context_data, &wk, k, d, d);
    let vs = project(&context_data, &wv, k, d, d);
    let sinus: Vec<f32> = host(sinusoids::<B>(
        &(0..k).map(|x| x as f32).collect::<Vec<_>>(),
        d,
        &device,
    ));
    let rs = project(&sinus, &wr, k, d, d); // row = distance
    let (u, v) = (host(bias.u.val()), host(bias.v.val()));

    let mut heads_out = vec![0.0f32; q * d];
    for hi in 0..heads {
        for i in 0..q {
            let mut scores = Vec::new();
            for j in 0..=m + i {
                let dist = m + i - j;
                let mut s = 0.0f64;
                for c in 0..dh {
                    let qc = qs[i * d + hi * dh + c] as f64;
                    s += (qc + u[hi * dh + c] as f64) * ks[j * d + hi * dh + c] as f64;
                    s += (qc + v[hi * dh + c] as f64) * rs[dist * d + hi * dh + c] as f64;
                }
                scores.push(s / (dh as f64).sqrt());
            }
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for (j, s) in scores.iter().enumerate() {
                let p = (s - max).exp() / total;
                for c in 0..dh {
                    heads_out[i * d + hi * dh + c] += (p * vs[j * d + hi * dh + c] as f64) as f32;
                }
            }
        }
    }
    let expected = project(&heads_out, &wo, q, d, d);
    for (n, (a, e)) in out.iter().zip(&expected).enumerate() {
        assert!((a - e).abs() < 1e-5, "element {n}: {a} vs {e}");
    }
}

#[test]
fn without_its_position_term_the_relative_block_is_the_standard_block() {
    let device = Default::default();
    let (d, heads, q, m) = (8, 2, 3, 2);
    let config = TransformerBlockConfig::new(d, heads, 16)
        .with_pre_norm(false)
        .with_init_std(0.3);
    // Materialise before cloning: a clone of an untouched lazy parameter
    // would draw values of its own.
    let mut relative = materialize(config.init_relative::<B>(&device));
    let mut bias = materialize(config.init_relative_bias::<B>(&device));
    let standard = materialize(config.init::<B>(&device));
    // Copy the standard block's weights, zero W_R, u and v, drop the biases
    // the relative projections do not have.
    let zero_bias = |l: &burn::nn::Linear<B>| {
        let mut l = l.clone();
        l.bias = l.bias.map(|b| b.map(|t| t.zeros_like()));
        l
    };
    let mut projections = standard.attention.clone();
    for l in [
        &mut projections.query,
        &mut projections.key,
        &mut projections.value,
        &mut projections.output,
    ] {
        *l = zero_bias(l);
    }
    let mut standard = standard;
    standard.attention = projections.clone();
    relative.attention.projections = projections;
    relative.body = standard.body.clone();
    relative.attention.position.weight = relative.attention.position.weight.map(|w| w.zeros_like());
    bias.u = bias.u.map(|t| t.zeros_like());
    bias.v = bias.v.map(|t| t.zeros_like());

    let memory = Tensor::<B, 3>::from_data(TensorData::new(values(m * d, 3), [1, m, d]), &device);
    let x = Tensor::<B, 3>::from_data(TensorData::new(values(q * d, 4), [1, q, d]), &device);
    let mask = causal_mask::<B>(q, m, &device);
    let pos = relative_sinusoids::<B>(m + q, d, None, &device);
    let a = host(relative.forward(
        x.clone(),
        Some(memory.clone()),
        pos,
        &bias,
        Some(mask.clone()),
    ));
    let context = Tensor::cat(vec![memory, x.clone()], 1);
    let b = host(standard.forward(x, Some(context), Some(mask), None));
    for (n, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() < 1e-5, "element {n}: {x} vs {y}");
    }
}

/// The position term is computed per head over all batch rows at once: each
/// sequence of a batch must get exactly what it gets alone.
#[test]
fn relative_attention_treats_every_batch_row_alone() {
    let device = Default::default();
    let (d, heads, q, m, batch) = (8, 2, 3, 4, 3);
    let k = m + q;
    let config = MultiHeadAttentionConfig::new(d, heads).with_init_std(0.3);
    let attn = config.init_relative::<B>(&device);
    let bias = config.init_relative_bias::<B>(&device);
    let pos = relative_sinusoids::<B>(k, d, None, &device);
    let data = values(batch * k * d, 11);
    let context = Tensor::<B, 3>::from_data(TensorData::new(data, [batch, k, d]), &device);
    let batched = host(attn.forward(
        context.clone().narrow(1, m, q),
        context.clone(),
        pos.clone(),
        &bias,
        None,
    ));
    for row in 0..batch {
        let one = context.clone().narrow(0, row, 1);
        let alone = host(attn.forward(one.clone().narrow(1, m, q), one, pos.clone(), &bias, None));
        let got = &batched[row * q * d..(row + 1) * q * d];
        for (a, b) in got.iter().zip(&alone) {
            assert!((a - b).abs() < 1e-5, "row {row}: {a} vs {b}");
        }
    }
}

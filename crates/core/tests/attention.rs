//! Attention against a naive per-position reference computed here on the host.

use burn::backend::Flex;
use burn::nn::DropoutConfig;
use burn::prelude::*;
use memlab_core::layers::{
    MultiHeadAttentionConfig, attention_reference, causal_mask, merge_heads,
    scaled_dot_product_attention, split_heads,
};

mod common;
use common::values;

type B = Flex;

fn tensor(data: &[f32], shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &Default::default())
}

fn host(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// softmax(q·k/√d + bias) over unmasked keys, times v — one query at a time.
#[allow(clippy::too_many_arguments)]
fn naive(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[bool],
    bias: &[f32],
    [b, h, nq, nk, d]: [usize; 5],
) -> Vec<f32> {
    let mut out = vec![0.0f32; b * h * nq * d];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..nq {
                let qi = ((bi * h + hi) * nq + i) * d;
                let mut scores = vec![f64::NEG_INFINITY; nk];
                for (j, score) in scores.iter_mut().enumerate() {
                    let cell = ((bi * h + hi) * nq + i) * nk + j;
                    if mask[cell] {
                        continue;
                    }
                    let kj = ((bi * h + hi) * nk + j) * d;
                    let dot: f64 = (0..d).map(|x| q[qi + x] as f64 * k[kj + x] as f64).sum();
                    *score = dot / (d as f64).sqrt() + bias[cell] as f64;
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue; // every key masked: zero output
                }
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for (j, w) in weights.iter().enumerate() {
                    let vj = ((bi * h + hi) * nk + j) * d;
                    for x in 0..d {
                        out[qi + x] += (w / total * v[vj + x] as f64) as f32;
                    }
                }
            }
        }
    }
    out
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
    }
}

#[test]
fn masked_biased_attention_matches_naive_reference() {
    let device = Default::default();
    let dims @ [b, h, nq, nk, d] = [2, 3, 4, 6, 5];
    let q = values(b * h * nq * d, 1);
    let k = values(b * h * nk * d, 2);
    let v = values(b * h * nk * d, 3);
    let bias = values(b * h * nq * nk, 4);
    // An arbitrary mask, with one query of one head fully masked.
    let mut mask: Vec<bool> = values(b * h * nq * nk, 5)
        .iter()
        .map(|x| *x > 0.3)
        .collect();
    for j in 0..nk {
        mask[((h + 1) * nq + 2) * nk + j] = true;
    }
    let expected = naive(&q, &k, &v, &mask, &bias, dims);

    let qt = tensor(&q, [b, h, nq, d]);
    let kt = tensor(&k, [b, h, nk, d]);
    let vt = tensor(&v, [b, h, nk, d]);
    let bt = tensor(&bias, [b, h, nq, nk]);
    let mt =
        Tensor::<B, 4, Bool>::from_data(TensorData::new(mask.clone(), [b, h, nq, nk]), &device);

    let no_dropout = DropoutConfig::new(0.0).init();
    let fused = scaled_dot_product_attention(
        qt.clone(),
        kt.clone(),
        vt.clone(),
        Some(mt.clone()),
        Some(bt.clone()),
        &no_dropout,
    );
    assert_close(&host(fused), &expected, 1e-5);
    let unfused = attention_reference(qt, kt, vt, Some(mt), Some(bt), None);
    assert_close(&host(unfused), &expected, 1e-5);
}

#[test]
fn causal_mask_with_cache_cell_by_cell() {
    let device = Default::default();
    let (q, m) = (4, 3);
    let mask: Vec<bool> = causal_mask::<B>(q, m, &device)
        .into_data()
        .to_vec::<bool>()
        .unwrap();
    assert_eq!(mask.len(), q * (m + q));
    for i in 0..q {
        for j in 0..m + q {
            // Query i (absolute position m + i) sees keys j <= m + i.
            assert_eq!(mask[i * (m + q) + j], j > m + i, "cell ({i}, {j})");
        }
    }
}

#[test]
fn broadcast_mask_and_multi_head_layer_match_reference() {
    let device = Default::default();
    let (b, len, d_model, heads) = (2, 5, 8, 2);
    let mha = MultiHeadAttentionConfig::new(d_model, heads).init::<B>(&device);
    let x = Tensor::<B, 3>::from_data(
        TensorData::new(values(b * len * d_model, 9), [b, len, d_model]),
        &device,
    );
    let mask = causal_mask::<B>(len, 0, &device);
    let out = mha.forward(x.clone(), None, Some(mask.clone()), None);

    // The same computation spelled out with the layer's own projections.
    let q = split_heads(mha.query.forward(x.clone()), heads);
    let k = split_heads(mha.key.forward(x.clone()), heads);
    let v = split_heads(mha.value.forward(x), heads);
    let dims = [b, heads, len, len, d_model / heads];
    let full_mask: Vec<bool> = mask
        .expand([b, heads, len, len])
        .into_data()
        .to_vec::<bool>()
        .unwrap();
    let expected = naive(
        &host(q),
        &host(k),
        &host(v),
        &full_mask,
        &vec![0.0; b * heads * len * len],
        dims,
    );
    let expected = Tensor::<B, 4>::from_data(
        TensorData::new(expected, [b, heads, len, d_model / heads]),
        &device,
    );
    let expected = mha.output.forward(merge_heads(expected));
    let got: Vec<f32> = out.into_data().to_vec().unwrap();
    let want: Vec<f32> = expected.into_data().to_vec().unwrap();
    assert_close(&got, &want, 1e-5);
}

/// Masks that broadcast over the batch, the heads or both (the layers pass
/// `[1, 1, q, k]` causal masks, RMT's layout and per-sequence masks) give the
/// naive reference's outputs for the expanded mask, a fully masked query
/// included.
#[test]
fn broadcast_masks_match_naive_reference() {
    let device = Default::default();
    let dims @ [b, h, nq, nk, d] = [2, 3, 4, 6, 5];
    let q = values(b * h * nq * d, 11);
    let k = values(b * h * nk * d, 12);
    let v = values(b * h * nk * d, 13);
    let zero_bias = vec![0.0f32; b * h * nq * nk];
    for (mb, mh) in [(1, 1), (b, 1), (1, h)] {
        let mut mask: Vec<bool> = values(mb * mh * nq * nk, 14 + mb as u64 * 7 + mh as u64)
            .iter()
            .map(|x| *x > 0.2)
            .collect();
        // Query 1 sees no key, in every broadcast copy.
        mask[nk..2 * nk].fill(true);
        let expanded: Vec<bool> = (0..b * h * nq * nk)
            .map(|cell| {
                let (bh, rest) = (cell / (nq * nk), cell % (nq * nk));
                let (bi, hi) = (bh / h, bh % h);
                mask[((bi % mb) * mh + hi % mh) * nq * nk + rest]
            })
            .collect();
        let expected = naive(&q, &k, &v, &expanded, &zero_bias, dims);
        let mt = Tensor::<B, 4, Bool>::from_data(TensorData::new(mask, [mb, mh, nq, nk]), &device);
        let got = attention_reference(
            tensor(&q, [b, h, nq, d]),
            tensor(&k, [b, h, nk, d]),
            tensor(&v, [b, h, nk, d]),
            Some(mt),
            None,
            None,
        );
        assert_close(&host(got), &expected, 1e-5);
    }
}

//! The CPU backend's element-wise kernels and softmax against naive
//! references. memlab patches burn-flex and burn-autodiff
//! (vendor/README.md): element-wise kernels split their work over rayon's
//! pool from 16 Ki elements, the softmax's `exp` skips libm's underflow
//! path for masked scores, and under autodiff the softmax is one tracked
//! step with a closed-form backward pass. None of this may change a value:
//! the element-wise results and the forward softmax must be exactly those
//! of a plain loop, and the gradient that of the softmax's derivative.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};

mod common;

type B = Flex;
type A = Autodiff<Flex>;

/// Deterministic values in [-3, 3).
fn values(n: usize, seed: u64) -> Vec<f32> {
    common::values(n, seed)
        .into_iter()
        .map(|v| v * 3.0)
        .collect()
}

fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: {g} against {w}"
        );
    }
}

/// Sizes on both sides of the parallel threshold, one of them not a
/// multiple of the piece size, so the last piece is short.
const SIZES: [usize; 3] = [1000, 16 * 1024, 5 * 8 * 1024 + 37];

#[test]
fn element_wise_kernels_split_over_threads_are_exact() {
    let device = Default::default();
    for n in SIZES {
        let a = values(n, 1);
        let b = values(n, 2);
        let ta = || Tensor::<B, 1>::from_data(TensorData::new(a.clone(), [n]), &device);
        let tb = Tensor::<B, 1>::from_data(TensorData::new(b.clone(), [n]), &device);

        let naive: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        // In place (unique lhs) and allocating (lhs shared with `keep`).
        assert_bits(&to_vec(ta().add(tb.clone())), &naive, "add in place");
        let keep = ta();
        assert_bits(
            &to_vec(keep.clone().add(tb.clone())),
            &naive,
            "add, shared lhs",
        );
        let naive: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
        assert_bits(
            &to_vec(keep.clone().div(tb.clone())),
            &naive,
            "div, shared lhs",
        );
        let naive: Vec<f32> = a.iter().map(|x| x * 2.5).collect();
        assert_bits(&to_vec(ta().mul_scalar(2.5)), &naive, "scalar mul in place");
        assert_bits(
            &to_vec(keep.clone().mul_scalar(2.5)),
            &naive,
            "scalar mul, shared",
        );
        let naive: Vec<f32> = a.iter().map(|x| x.exp()).collect();
        assert_bits(&to_vec(ta().exp()), &naive, "exp in place");
        assert_bits(&to_vec(keep.clone().exp()), &naive, "exp, shared");
        let naive: Vec<f32> = a.iter().map(|x| x.tanh()).collect();
        assert_bits(&to_vec(keep.clone().tanh()), &naive, "tanh, shared");
        // A view at an offset (one contiguous block).
        let naive: Vec<f32> = a[7..].iter().map(|x| x.exp()).collect();
        assert_bits(
            &to_vec(keep.clone().slice(7..n).exp()),
            &naive,
            "exp of a slice",
        );
    }
}

#[test]
fn broadcast_kernels_split_over_threads_are_exact() {
    let device = Default::default();
    // rows × row_len above the threshold, rows not a multiple of a piece.
    for (rows, row_len) in [(8, 100), (301, 128), (1025, 24)] {
        let n = rows * row_len;
        let x = values(n, 3);
        let row = values(row_len, 4);
        let per_row = values(rows, 5);
        let tx = || Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [rows, row_len]), &device);
        let trow = Tensor::<B, 2>::from_data(TensorData::new(row.clone(), [1, row_len]), &device);
        let tper = Tensor::<B, 2>::from_data(TensorData::new(per_row.clone(), [rows, 1]), &device);

        let naive: Vec<f32> = (0..n).map(|i| x[i] * row[i % row_len]).collect();
        assert_bits(&to_vec(tx().mul(trow.clone())), &naive, "shared row");
        let naive: Vec<f32> = (0..n).map(|i| x[i] - per_row[i / row_len]).collect();
        assert_bits(&to_vec(tx().sub(tper.clone())), &naive, "per-row scalar");
        let naive: Vec<f32> = (0..n).map(|i| x[i] / per_row[i / row_len]).collect();
        assert_bits(
            &to_vec(tx().div(tper.clone())),
            &naive,
            "per-row scalar div",
        );
    }
}

/// Scores of shape `[2, 3, rows, len]` with a causal-style mask of −10³⁰
/// (the value memlab's attention adds) and one fully masked row.
fn masked_scores(rows: usize, len: usize) -> (Vec<f32>, [usize; 4]) {
    let shape = [2, 3, rows, len];
    let mut x = values(shape.iter().product(), 6);
    for (r, row) in x.chunks_mut(len).enumerate() {
        let q = r % rows;
        for (k, v) in row.iter_mut().enumerate() {
            if k > q + len / 2 || r == 5 {
                *v += -1e30;
            }
        }
    }
    (x, shape)
}

/// Softmax over the last axis the way a plain loop computes it: max, then
/// `exp(x − max)` with libm summed in order, then the product with `1/sum`.
fn naive_softmax(x: &[f32], len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(len) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum = e.iter().fold(0.0f32, |s, v| s + v);
        let inv = 1.0 / sum;
        out.extend(e.iter().map(|v| v * inv));
    }
    out
}

#[test]
fn softmax_of_masked_scores_is_exact() {
    let device = Default::default();
    for (rows, len) in [(5, 9), (24, 34), (64, 130)] {
        let (x, shape) = masked_scores(rows, len);
        let t = Tensor::<B, 4>::from_data(TensorData::new(x.clone(), shape), &device);
        let got = to_vec(softmax(t, 3));
        assert_bits(&got, &naive_softmax(&x, len), "softmax");
        // The masked probabilities are exact zeros, the fully masked row
        // is uniform.
        let row5 = &got[5 * len..6 * len];
        assert!(row5.iter().all(|&p| (p - 1.0 / len as f32).abs() < 1e-7));
    }
}

#[test]
fn softmax_of_widely_spread_scores_is_exact() {
    // Scores in [-120, 120): shifted scores reach far below −104, through
    // the range where `e^d` is subnormal (−103.97 to −87.3) and down to
    // where it rounds to 0, so every branch of the kernel's `exp` is taken.
    let device = Default::default();
    let (rows, len) = (64, 200);
    let x: Vec<f32> = values(rows * len, 8).iter().map(|v| v * 40.0).collect();
    let t = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [rows, len]), &device);
    let got = to_vec(softmax(t, 1));
    assert_bits(&got, &naive_softmax(&x, len), "softmax");
    assert!(
        got.iter().any(|&p| p > 0.0 && p < f32::MIN_POSITIVE),
        "a subnormal"
    );
}

#[test]
fn softmax_gradient_is_the_closed_form_and_matches_the_decomposition() {
    let device = Default::default();
    for (rows, len) in [(5, 9), (24, 34)] {
        let (x, shape) = masked_scores(rows, len);
        let n = x.len();
        let w = values(n, 7);
        let tw = Tensor::<A, 4>::from_data(TensorData::new(w.clone(), shape), &device);

        // The patched path: one tracked softmax.
        let tx =
            Tensor::<A, 4>::from_data(TensorData::new(x.clone(), shape), &device).require_grad();
        let loss = softmax(tx.clone(), 3).mul(tw.clone()).sum();
        let fused = tx
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();

        // Burn's decomposition, built from tracked primitive ops.
        let tx2 =
            Tensor::<A, 4>::from_data(TensorData::new(x.clone(), shape), &device).require_grad();
        let shifted = tx2.clone() - tx2.clone().detach().max_dim(3);
        let e = shifted.exp();
        let y = e.clone() / e.sum_dim(3);
        let loss = y.mul(tw).sum();
        let decomposed = tx2
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();

        // The derivative in f64: ∂L/∂x_i = y_i (w_i − Σ_j w_j y_j).
        let mut closed = Vec::with_capacity(n);
        for (xr, wr) in x.chunks(len).zip(w.chunks(len)) {
            let max = xr
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
            let e: Vec<f64> = xr.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            let y: Vec<f64> = e.iter().map(|v| v / sum).collect();
            let dot: f64 = y.iter().zip(wr).map(|(y, &w)| y * w as f64).sum();
            closed.extend(y.iter().zip(wr).map(|(y, &w)| y * (w as f64 - dot)));
        }

        let mut worst_closed = 0.0f64;
        let mut worst_decomposed = 0.0f64;
        for i in 0..n {
            worst_closed = worst_closed.max((fused[i] as f64 - closed[i]).abs());
            worst_decomposed = worst_decomposed.max((fused[i] - decomposed[i]).abs() as f64);
        }
        // Gradients are O(1) (|w| ≤ 3): these are f32 rounding errors.
        assert!(
            worst_closed < 2e-6,
            "against the closed form: {worst_closed}"
        );
        assert!(
            worst_decomposed < 2e-6,
            "against the decomposition: {worst_decomposed}"
        );
        // Masked scores get no gradient.
        for (i, &v) in x.iter().enumerate() {
            if v < -1e29 && (i / len) != 5 {
                assert_eq!(fused[i], 0.0, "masked score {i}");
            }
        }
    }
}

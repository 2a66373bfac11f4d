//! The CPU backend's layout copies against a naive index map. memlab
//! patches burn-flex's contiguous copy (vendor/README.md): a layout whose
//! innermost axis is a contiguous run is copied run by run, whatever its
//! rank. Every permutation of a 4-D tensor, of a sliced one and of one with
//! short runs must give exactly the elements the strides name.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

type B = Flex;

/// The row-major flattening of `x` permuted by `perm`, computed by hand.
fn naive_permuted(values: &[f32], shape: [usize; 4], perm: [usize; 4]) -> Vec<f32> {
    let strides = [
        shape[1] * shape[2] * shape[3],
        shape[2] * shape[3],
        shape[3],
        1,
    ];
    let out_shape = perm.map(|p| shape[p]);
    let mut out = Vec::with_capacity(values.len());
    for a in 0..out_shape[0] {
        for b in 0..out_shape[1] {
            for c in 0..out_shape[2] {
                for d in 0..out_shape[3] {
                    let idx = [a, b, c, d];
                    let mut src = 0;
                    for (axis, &p) in perm.iter().enumerate() {
                        src += idx[axis] * strides[p];
                    }
                    out.push(values[src]);
                }
            }
        }
    }
    out
}

fn permutations() -> Vec<[usize; 4]> {
    let mut all = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let p = [a, b, c, d];
                    let mut seen = [false; 4];
                    p.iter().for_each(|&i| seen[i] = true);
                    if seen.iter().all(|&s| s) {
                        all.push(p);
                    }
                }
            }
        }
    }
    all
}

fn check_every_permutation(shape: [usize; 4]) {
    let device = Default::default();
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = Tensor::<B, 1>::from_data(TensorData::new(values.clone(), [n]), &device).reshape(shape);
    for perm in permutations() {
        let got: Vec<f32> = x
            .clone()
            .permute(perm)
            .reshape([n])
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(
            got,
            naive_permuted(&values, shape, perm),
            "shape {shape:?}, permutation {perm:?}"
        );
    }
}

#[test]
fn permuted_copies_match_the_strides() {
    // Runs of 16 (the patched run-by-run path) and of 3 (the fallback).
    check_every_permutation([3, 4, 5, 16]);
    check_every_permutation([4, 2, 8, 3]);
    // A head merge's shape: [heads, batch, len, d_head].
    check_every_permutation([4, 2, 11, 32]);
    // Above the element-wise threshold (16 Ki), where the runs are split
    // over rayon's pool, with a run count that leaves a short last piece.
    check_every_permutation([4, 7, 37, 32]);
}

#[test]
fn sliced_and_permuted_copies_match_the_strides() {
    let device = Default::default();
    let shape = [3, 5, 7, 12];
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let x = Tensor::<B, 1>::from_data(TensorData::new(values.clone(), [n]), &device).reshape(shape);
    // Rows 1..6 of the third axis, columns 2..11 of the last: an offset
    // view whose runs (9) are shorter than its rows (12).
    let sliced = x.slice([0..3, 0..5, 1..6, 2..11]).permute([1, 0, 2, 3]);
    let got: Vec<f32> = sliced
        .reshape([5 * 3 * 5 * 9])
        .into_data()
        .to_vec()
        .unwrap();
    let mut want = Vec::new();
    for b in 0..5 {
        for a in 0..3 {
            for c in 1..6 {
                for d in 2..11 {
                    want.push(values[((a * 5 + b) * 7 + c) * 12 + d]);
                }
            }
        }
    }
    assert_eq!(got, want);
}

#[test]
fn zeros_and_matmul_outputs_are_exact() {
    let device = Default::default();
    let zeros: Vec<f32> = Tensor::<B, 3>::zeros([3, 7, 9], &device)
        .into_data()
        .to_vec()
        .unwrap();
    assert!(zeros.iter().all(|&z| z == 0.0));
    // Small integers: the product is exact in f32, so it must equal the
    // naive sum bit for bit (matmul writes into a freshly allocated output).
    let (m, k, n) = (5, 6, 7);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
    let got: Vec<f32> = Tensor::<B, 2>::from_data(TensorData::new(a.clone(), [m, k]), &device)
        .matmul(Tensor::from_data(
            TensorData::new(b.clone(), [k, n]),
            &device,
        ))
        .into_data()
        .to_vec()
        .unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            assert_eq!(got[i * n + j], want, "({i}, {j})");
        }
    }
}

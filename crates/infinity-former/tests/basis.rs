//! The continuous signal against independent truth: numerical quadrature
//! for the expectation, analytic signals for the fit and the contraction.

use memlab_infinity_former::basis::{
    GaussianBasis, contraction_padding, contraction_positions, gaussian, uniform_positions,
};

/// Composite Simpson's rule on [a, b] with `n` (even) intervals.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let h = (b - a) / n as f64;
    let inner: f64 = (1..n)
        .map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    (f(a) + f(b) + inner) * h / 3.0
}

/// A deterministic stream of numbers in [0, 1).
fn uniforms(seed: u64) -> impl Iterator<Item = f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    std::iter::from_fn(move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Some((state >> 11) as f64 / (1u64 << 53) as f64)
    })
}

#[test]
fn closed_form_expectation_matches_quadrature() {
    let basis = GaussianBasis::new(16, &[0.01, 0.05]);
    let mut u = uniforms(3);
    for _ in 0..20 {
        let mu = u.next().unwrap();
        let sigma = 0.005 + 0.3 * u.next().unwrap();
        let closed = basis.expectation(mu, sigma * sigma);
        for (j, &expected) in closed.iter().enumerate() {
            let (mj, sj) = (basis.mu[j], basis.sigma[j]);
            let width = sigma.max(sj);
            let (a, b) = (mu.min(mj) - 12.0 * width, mu.max(mj) + 12.0 * width);
            let numeric = simpson(
                |t| gaussian(t, mu, sigma * sigma) * gaussian(t, mj, sj * sj),
                a,
                b,
                200_000,
            );
            assert!(
                (expected - numeric).abs() < 1e-6,
                "μ={mu} σ={sigma} j={j}: {expected} vs {numeric}"
            );
        }
    }
}

fn signal(t: f64) -> f64 {
    (2.0 * std::f64::consts::PI * t).sin() + 0.5 * (5.0 * std::f64::consts::PI * t).cos()
}

/// X̄(t) = ψ(t)ᵀ B for a scalar signal.
fn reconstruct(basis: &GaussianBasis, b: &[f64], t: f64) -> f64 {
    basis.eval(t).iter().zip(b).map(|(p, c)| p * c).sum()
}

/// B = Gᵀ X for scalar values X.
fn fit(g: &[f64], n: usize, values: &[f64]) -> Vec<f64> {
    (0..n)
        .map(|j| {
            values
                .iter()
                .enumerate()
                .map(|(p, x)| g[p * n + j] * x)
                .sum()
        })
        .collect()
}

/// The ridge fit of a smooth signal sampled at L = 256 points with N = 128
/// basis functions (the official widths and λ = 1) reconstructs it to a
/// mean absolute error below 0.01 (measured: 0.0060; the zero-valued
/// padding damps the edges) and, on t ∈ [0.1, 0.9], a maximum error below
/// 0.005 (measured: 0.0020), for a signal of amplitude 1.5.
#[test]
fn ridge_fit_reconstructs_a_smooth_signal() {
    let basis = GaussianBasis::new(128, &[0.01, 0.05]);
    let positions = uniform_positions(256);
    let g = basis.regression(&positions, 1.0);
    assert_eq!(g.len(), 256 * 128);
    let values: Vec<f64> = positions.iter().map(|&t| signal(t)).collect();
    let b = fit(&g, 128, &values);
    let errors: Vec<(f64, f64)> = positions
        .iter()
        .map(|&t| (t, (reconstruct(&basis, &b, t) - signal(t)).abs()))
        .collect();
    let mean = errors.iter().map(|e| e.1).sum::<f64>() / errors.len() as f64;
    let interior = errors
        .iter()
        .filter(|(t, _)| (0.1..=0.9).contains(t))
        .map(|e| e.1)
        .fold(0.0, f64::max);
    eprintln!("ridge fit: mean |error| {mean:.5}, interior max {interior:.5}");
    assert!(mean < 0.01, "mean error {mean}");
    assert!(interior < 0.005, "interior max error {interior}");
}

/// The contraction of §3.2: the old signal sampled at M points placed in
/// [0, τ], new vectors in (τ, 1], refit. The old signal's shape survives,
/// compressed: X̄'(τ s) ≈ X̄(s) within 0.005 on s ∈ [0.1, 0.9] (measured:
/// 0.0015) with M = 256 samples.
#[test]
fn contraction_keeps_the_signal_shape() {
    let (n, l, m, tau) = (128, 64, 256, 0.75);
    let basis = GaussianBasis::new(n, &[0.01, 0.05]);
    let positions = uniform_positions(256);
    let g = basis.regression(&positions, 1.0);
    let old = fit(
        &g,
        n,
        &positions.iter().map(|&t| signal(t)).collect::<Vec<_>>(),
    );

    let samples: Vec<f64> = (1..=m)
        .map(|i| reconstruct(&basis, &old, i as f64 / m as f64))
        .collect();
    let new: Vec<f64> = (1..=l).map(|j| (j as f64 / l as f64) * 0.2).collect();
    let g_inf = basis.regression(&contraction_positions(m, l, tau), 1.0);
    let values: Vec<f64> = samples.iter().chain(&new).copied().collect();
    let contracted = fit(&g_inf, n, &values);

    let mut worst: f64 = 0.0;
    for k in 1..20 {
        let s = 0.1 + 0.8 * k as f64 / 20.0;
        let before = reconstruct(&basis, &old, s);
        let after = reconstruct(&basis, &contracted, tau * s);
        worst = worst.max((before - after).abs());
    }
    eprintln!("contraction: max |X̄'(τs) − X̄(s)| on s ∈ [0.1, 0.9] = {worst:.5}");
    assert!(worst < 0.005, "{worst}");
    // The new vectors are where they were put.
    let end = reconstruct(&basis, &contracted, tau + (1.0 - tau) * 0.5);
    assert!((end - 0.1).abs() < 0.05, "new part at its midpoint: {end}");
}

#[test]
fn the_contracted_fit_is_padded_as_the_official_g_inf() {
    // M = 4, L = 2: linspace(−½ + ⅛, 3/2 − ⅛, 12), s = 1/(2L + M); the
    // points below 0 and above 1, three on each side (P/2, which the
    // official crop of G relies on).
    let (left, right) = contraction_padding(4, 2);
    let step = 1.75 / 11.0;
    let want_left: Vec<f64> = (0..3).map(|k| -0.375 + k as f64 * step).collect();
    let want_right: Vec<f64> = (9..12).map(|k| -0.375 + k as f64 * step).collect();
    for (a, b) in left
        .iter()
        .zip(&want_left)
        .chain(right.iter().zip(&want_right))
    {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert_eq!((left.len(), right.len()), (3, 3));
    // The official run (M = L = 512) and the fine-tuning config (64, 64).
    for (m, l) in [(512, 512), (64, 64), (8, 4)] {
        let (left, right) = contraction_padding(m, l);
        assert_eq!((left.len(), right.len()), ((m + l) / 2, (m + l) / 2));
    }
}

#[test]
fn positions_follow_the_official_layout() {
    assert_eq!(uniform_positions(4), vec![0.125, 0.375, 0.625, 0.875]);
    let p = contraction_positions(4, 2, 0.5);
    assert_eq!(p, vec![0.125, 0.25, 0.375, 0.5, 0.75, 1.0]);
    let basis = GaussianBasis::new(6, &[0.01, 0.05]);
    assert_eq!(basis.mu, vec![0.0, 0.0, 0.5, 0.5, 1.0, 1.0]);
    assert_eq!(basis.sigma, vec![0.01, 0.05, 0.01, 0.05, 0.01, 0.05]);
}

//! The continuous signal of the long-term memory (Martins et al., 2022,
//! §3.1–3.2): Gaussian radial basis functions ψ, the multivariate ridge
//! regression that fits their coefficients to L vectors, and the closed-form
//! expectation of ψ under a Gaussian. All on the host in f64: the regression
//! matrices depend only on lengths, so they are computed once per length.

use std::f64::consts::PI;

/// N Gaussian basis functions `ψ_j(t) = N(t; μ_j, σ_j²)`: centres
/// `linspace(0, 1, N / W)`, each with every one of the W widths, centre-major
/// (the official `add_gaussian_basis_functions` meshgrid).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianBasis {
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
}

/// The density of N(mean, var) at `x`.
pub fn gaussian(x: f64, mean: f64, var: f64) -> f64 {
    (-(x - mean).powi(2) / (2.0 * var)).exp() / (2.0 * PI * var).sqrt()
}

impl GaussianBasis {
    pub fn new(num_basis: usize, sigmas: &[f64]) -> Self {
        let centres = num_basis / sigmas.len();
        let (mut mu, mut sigma) = (Vec::new(), Vec::new());
        for i in 0..centres {
            for &s in sigmas {
                mu.push(i as f64 / (centres - 1) as f64);
                sigma.push(s);
            }
        }
        Self { mu, sigma }
    }

    pub fn len(&self) -> usize {
        self.mu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mu.is_empty()
    }

    /// `ψ(t)`, the N basis functions at `t`.
    pub fn eval(&self, t: f64) -> Vec<f64> {
        self.mu
            .iter()
            .zip(&self.sigma)
            .map(|(&m, &s)| gaussian(t, m, s * s))
            .collect()
    }

    /// `E_{t ~ N(mean, var)}[ψ_j(t)] = N(mean; μ_j, σ_j² + var)` (eq. 9 with
    /// Gaussian ψ: the convolution of two Gaussians).
    pub fn expectation(&self, mean: f64, var: f64) -> Vec<f64> {
        self.mu
            .iter()
            .zip(&self.sigma)
            .map(|(&m, &s)| gaussian(mean, m, s * s + var))
            .collect()
    }

    /// The ridge-regression matrix `G` `[P, N]` (row-major) for a signal
    /// known at `positions` (P points in [0, 1]): the coefficients are
    /// `B = Gᵀ X` for the values `X` `[P, d]` (eq. 7,
    /// `Bᵀ = Xᵀ Fᵀ (F Fᵀ + λ I)⁻¹`). As in the official `compute_G`, the fit
    /// also holds ⌊P/2⌋ zero-valued points on each side outside [0, 1],
    /// spaced 1/P, so the signal is damped at the edges; their rows of `G`
    /// are dropped (they multiply zeros).
    pub fn regression(&self, positions: &[f64], ridge: f64) -> Vec<f64> {
        let p = positions.len();
        let pads = p / 2;
        let left: Vec<f64> = (0..pads)
            .rev()
            .map(|i| -(i as f64 + 0.5) / p as f64)
            .collect();
        let right: Vec<f64> = (0..pads)
            .map(|i| 1.0 + (i as f64 + 0.5) / p as f64)
            .collect();
        self.regression_padded(&left, positions, &right, ridge)
    }

    /// [`Self::regression`] with the zero-valued points `left` (below 0)
    /// and `right` (above 1) given ([`contraction_padding`]).
    pub fn regression_padded(
        &self,
        left: &[f64],
        positions: &[f64],
        right: &[f64],
        ridge: f64,
    ) -> Vec<f64> {
        let n = self.len();
        let p = positions.len();
        let pads = left.len();
        let all: Vec<f64> = left.iter().chain(positions).chain(right).copied().collect();
        // A = F Fᵀ + λ I over every point, padding included.
        let columns: Vec<Vec<f64>> = all.iter().map(|&t| self.eval(t)).collect();
        let mut a = vec![0.0; n * n];
        for f in &columns {
            for i in 0..n {
                if f[i] == 0.0 {
                    continue;
                }
                for j in 0..=i {
                    a[i * n + j] += f[i] * f[j];
                }
            }
        }
        for i in 0..n {
            a[i * n + i] += ridge;
            for j in 0..i {
                a[j * n + i] = a[i * n + j];
            }
        }
        let chol = cholesky(&a, n);
        // Row p of G is (A⁻¹ F[:, p])ᵀ, A symmetric.
        let mut g = Vec::with_capacity(p * n);
        for f in &columns[pads..pads + p] {
            g.extend(cholesky_solve(&chol, n, f));
        }
        g
    }
}

/// Positions of L vectors spread over [0, 1]: `t_j = (j + 0.5) / L`.
pub fn uniform_positions(l: usize) -> Vec<f64> {
    (0..l).map(|j| (j as f64 + 0.5) / l as f64).collect()
}

/// The zero-valued points of the contracted fit, as the official code
/// places them (`G_inf` in `LongTermAttention.__init__`, sorting/ and
/// finetune_gpt2/ alike): the points of `linspace(−½ + s, 3/2 − s, 2P)`,
/// `s = 1/(2L + M)`, `P = M + L`, that lie below 0 and above 1 (P/2 on
/// each side for the lengths the official code runs; it has no branch for
/// an odd L that runs).
pub fn contraction_padding(samples: usize, l: usize) -> (Vec<f64>, Vec<f64>) {
    let p = samples + l;
    let shift = 1.0 / (2 * l + samples) as f64;
    let count = 2 * p;
    let (start, end) = (-0.5 + shift, 1.5 - shift);
    let step = (end - start) / (count - 1) as f64;
    let points = (0..count).map(|k| start + k as f64 * step);
    let left = points.clone().filter(|&t| t < 0.0).collect();
    let right = points.filter(|&t| t > 1.0).collect();
    (left, right)
}

/// Positions of the contracted signal (§3.2, the official `update_inf`): the
/// old signal's M samples at `i·τ/M` (i = 1..M) and the L new vectors at
/// `τ + (1 − τ)·j/L` (j = 1..L).
pub fn contraction_positions(samples: usize, l: usize, tau: f64) -> Vec<f64> {
    let old = (1..=samples).map(|i| i as f64 * tau / samples as f64);
    let new = (1..=l).map(|j| tau + (1.0 - tau) * j as f64 / l as f64);
    old.chain(new).collect()
}

/// The lower Cholesky factor of the symmetric positive-definite `a` `[n, n]`.
/// Written out (rather than a linear-algebra dependency) for this one
/// N×N solve per length, done once on the host.
fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                assert!(sum > 0.0, "F Fᵀ + λI is positive definite for λ > 0");
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    l
}

/// Solves `L Lᵀ x = b`.
fn cholesky_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let sum: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - sum) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let sum: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - sum) / l[i * n + i];
    }
    x
}

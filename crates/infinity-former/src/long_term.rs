//! The long-term memory of one layer (Martins et al., 2022, §3.1–3.3; the
//! official `LongTermAttention`): writing the vectors that left the
//! short-term cache into a continuous signal, and attending to it with one
//! Gaussian per query and head.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex};

use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig1d};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softplus};
use memlab_core::flops;
use memlab_core::layers::attention::{merge_heads, normal_init, rows};

use crate::basis::{GaussianBasis, contraction_padding, contraction_positions, uniform_positions};
use crate::config::LongTermSettings;

/// What every layer's long-term memory shares: the basis, the constants,
/// and the regression matrices computed so far (one per length; computed on
/// the host in f64 the first time a length is seen).
#[derive(Debug, Clone)]
pub struct LongTermContext {
    pub basis: GaussianBasis,
    pub ridge_penalty: f64,
    pub tau: f64,
    pub num_samples: usize,
    pub sticky: bool,
    pub sticky_bins: usize,
    pub sigma_floor: f64,
    pub sigma_0: f64,
    pub mu_0: Option<f64>,
    regressions: Regressions,
}

/// A matrix that depends only on lengths, computed once on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HostMatrix {
    Fit { l: usize, contracted: bool },
    UniformSamples,
}

/// Host matrices (f32, row-major `[rows, N]`), computed once each.
type Regressions = Arc<Mutex<HashMap<HostMatrix, Arc<Vec<f32>>>>>;

impl LongTermContext {
    pub fn new(config: &LongTermSettings) -> Self {
        Self {
            basis: GaussianBasis::new(config.num_basis, &config.basis_sigmas),
            ridge_penalty: config.ridge_penalty,
            tau: config.tau,
            num_samples: config.num_samples,
            sticky: config.sticky,
            sticky_bins: config.sticky_bins,
            sigma_floor: config.sigma_floor,
            sigma_0: config.sigma_0,
            mu_0: config.mu_0,
            regressions: Arc::default(),
        }
    }

    /// `G` `[P, N]` for `l` new vectors alone (`contracted = false`, P = l,
    /// positions `(j + 0.5)/l`) or after `M` samples of the old signal
    /// (P = M + l, [`contraction_positions`]).
    pub fn regression<B: Backend>(
        &self,
        l: usize,
        contracted: bool,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        self.host_matrix(HostMatrix::Fit { l, contracted }, device)
    }

    /// `ψ(i/M)` `[M, N]` (i = 1..M): where the old signal is sampled
    /// without sticky memories, the same at every step.
    pub fn uniform_samples<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        self.host_matrix(HostMatrix::UniformSamples, device)
    }

    fn host_matrix<B: Backend>(&self, which: HostMatrix, device: &B::Device) -> Tensor<B, 2> {
        let n = self.basis.len();
        let values = {
            let mut cache = self.regressions.lock().expect("not poisoned");
            cache
                .entry(which)
                .or_insert_with(|| {
                    let values: Vec<f64> = match which {
                        HostMatrix::Fit {
                            l,
                            contracted: false,
                        } => self
                            .basis
                            .regression(&uniform_positions(l), self.ridge_penalty),
                        HostMatrix::Fit {
                            l,
                            contracted: true,
                        } => {
                            let (left, right) = contraction_padding(self.num_samples, l);
                            self.basis.regression_padded(
                                &left,
                                &contraction_positions(self.num_samples, l, self.tau),
                                &right,
                                self.ridge_penalty,
                            )
                        }
                        HostMatrix::UniformSamples => (1..=self.num_samples)
                            .flat_map(|i| self.basis.eval(i as f64 / self.num_samples as f64))
                            .collect(),
                    };
                    Arc::new(values.into_iter().map(|x| x as f32).collect())
                })
                .clone()
        };
        let rows = values.len() / n;
        Tensor::from_data(TensorData::new(values.as_ref().clone(), [rows, n]), device)
    }

    fn basis_tensor<B: Backend>(&self, values: &[f64], device: &B::Device) -> Tensor<B, 4> {
        let n = values.len();
        let data: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        Tensor::<B, 1>::from_data(TensorData::new(data, [n]), device).reshape([1, 1, 1, n])
    }

    /// Floats one layer's long-term memory holds per sequence, at most:
    /// the signal (N × `d_model`), up to `waiting` vectors not yet written
    /// and, with sticky memories, the density over the bins.
    pub fn floats_per_layer(&self, d_model: usize, waiting: usize) -> usize {
        let density = if self.sticky { self.sticky_bins } else { 0 };
        (self.basis.len() + waiting) * d_model + density
    }

    /// `ψ(t)` at `positions` `[batch, M]` → `[batch, M, N]`.
    pub fn basis_at<B: Backend>(&self, positions: Tensor<B, 2>) -> Tensor<B, 3> {
        let device = positions.device();
        let [b, m] = positions.dims();
        let n = self.basis.len();
        let mu = self
            .basis_tensor::<B>(&self.basis.mu, &device)
            .reshape([1, 1, n]);
        let var = self
            .basis_tensor::<B>(
                &self.basis.sigma.iter().map(|s| s * s).collect::<Vec<_>>(),
                &device,
            )
            .reshape([1, 1, n]);
        let t = positions.reshape([b, m, 1]);
        gaussian(t, mu, var)
    }

    /// `E[ψ_j]` under `N(μ, σ²)` for `μ`, `σ²` `[b, h, q, 1]` → `[b, h, q, N]`:
    /// `N(μ; μ_j, σ_j² + σ²)` (eq. 9; the official `ContinuousSoftmax` with
    /// Gaussian basis functions).
    pub fn expectation<B: Backend>(&self, mu: Tensor<B, 4>, var: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = mu.device();
        let centres = self.basis_tensor::<B>(&self.basis.mu, &device);
        let widths = self.basis_tensor::<B>(
            &self.basis.sigma.iter().map(|s| s * s).collect::<Vec<_>>(),
            &device,
        );
        gaussian(mu, centres, widths + var)
    }

    /// Sticky memories: where the old signal is sampled before contraction,
    /// `[batch, M]` in (0, 1]: the `i/M` quantiles of the previous step's
    /// attention density over the bins (`density` `[batch, 1, D]`), so that
    /// more samples, and so more of [0, τ], go where attention was. (Without
    /// sticky memories the samples sit at `i/M`: [`Self::uniform_samples`].)
    pub fn sticky_positions<B: Backend>(&self, density: &Tensor<B, 3>) -> Tensor<B, 2> {
        let m = self.num_samples;
        let batch = density.dims()[0];
        let mass: Vec<f32> = density.clone().into_data().to_vec().expect("f32 density");
        let rows: Vec<f32> = mass
            .chunks(self.sticky_bins)
            .flat_map(|row| quantiles(row, m))
            .collect();
        Tensor::from_data(TensorData::new(rows, [batch, m]), &density.device())
    }
}

/// `m` `[R, C]` applied to every batch row of `x` `[batch, C, d]` →
/// `[batch, R, d]`, as one matrix product (the batch folded into columns).
fn apply<B: Backend>(m: Tensor<B, 2>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, c, d] = x.dims();
    let rows = m.dims()[0];
    let columns = x.swap_dims(0, 1).reshape([c, b * d]);
    m.matmul(columns).reshape([rows, b, d]).swap_dims(0, 1)
}

/// The density of `N(mean, var)` at `x`, broadcasting.
fn gaussian<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    mean: Tensor<B, D>,
    var: Tensor<B, D>,
) -> Tensor<B, D> {
    let z = (x - mean).powi_scalar(2) / (var.clone() * 2.0);
    z.neg().exp() / (var * (2.0 * PI)).sqrt()
}

/// The `i/M` quantiles (i = 1..M) of the histogram `mass` over equal bins
/// of [0, 1], linear within a bin; uniform when the histogram is empty.
pub fn quantiles(mass: &[f32], m: usize) -> Vec<f32> {
    let d = mass.len();
    let total: f64 = mass.iter().map(|&x| x.max(0.0) as f64).sum();
    if total <= 0.0 || !total.is_finite() {
        return (1..=m).map(|i| i as f32 / m as f32).collect();
    }
    let mut out = Vec::with_capacity(m);
    let (mut bin, mut below) = (0usize, 0.0f64);
    for i in 1..=m {
        let target = i as f64 / m as f64 * total;
        while bin < d - 1 && below + (mass[bin].max(0.0) as f64) < target {
            below += mass[bin].max(0.0) as f64;
            bin += 1;
        }
        let here = mass[bin].max(0.0) as f64;
        let within = if here > 0.0 {
            ((target - below) / here).clamp(0.0, 1.0)
        } else {
            1.0
        };
        out.push(((bin as f64 + within) / d as f64) as f32);
    }
    out
}

/// One layer's long-term attention: `K = B W_K`, `V = B W_V` per head; per
/// query and head `μ = sigmoid(w_μᵀ K q/√d)`, `σ² = softplus(w_σᵀ K q/√d)`;
/// the output `W_O [Vᵀ E_{N(μ,σ²)}[ψ]]_heads`, added to the short-term
/// attention's (eqs. 10–12).
#[derive(Module, Debug)]
pub struct LongTermAttention<B: Backend> {
    pub key: Linear<B>,
    pub value: Linear<B>,
    /// `w_μ` `[N → 1]`.
    pub mu: Linear<B>,
    /// `w_σ` `[N → 1]`.
    pub sigma: Linear<B>,
    pub output: Linear<B>,
    /// sigmoid(Conv1d(kernel 3)) over time, on the memory's input.
    pub gate: Option<Conv1d<B>>,
    pub n_heads: usize,
    pub d_head: usize,
}

/// What a read returns.
#[derive(Debug, Clone)]
pub struct LongTermRead<B: Backend> {
    /// `[batch, q, d_model]`.
    pub output: Tensor<B, 3>,
    /// Mean KL(N(μ, σ²) ‖ N(μ₀, σ₀²)) over batch, heads and queries, `[1]`.
    pub kl: Tensor<B, 1>,
    /// Sticky memories: the attention density over the bins `[batch, 1, D]`.
    pub density: Option<Tensor<B, 3>>,
}

impl LongTermSettings {
    /// One layer's long-term attention for a model of `d_model` with
    /// `n_heads` heads of `d_head` (the short-term attention's), its
    /// projections drawn N(0, `init_std`²), without biases (the official
    /// `proj_key`, `proj_value`, `attn_out`, `mu`, `sigma`).
    pub fn init_attention<B: Backend>(
        &self,
        d_model: usize,
        n_heads: usize,
        d_head: usize,
        init_std: f64,
        device: &B::Device,
    ) -> LongTermAttention<B> {
        let inner = n_heads * d_head;
        let linear = |i, o| {
            LinearConfig::new(i, o)
                .with_bias(false)
                .with_initializer(normal_init(init_std))
                .init(device)
        };
        LongTermAttention {
            key: linear(d_model, inner),
            value: linear(d_model, inner),
            mu: linear(self.num_basis, 1),
            sigma: linear(self.num_basis, 1),
            output: linear(inner, d_model),
            gate: self.gate.then(|| {
                Conv1dConfig::new(d_model, d_model, 3)
                    .with_padding(PaddingConfig1d::Explicit(1, 1))
                    .init(device)
            }),
            n_heads,
            d_head,
        }
    }
}

impl<B: Backend> LongTermAttention<B> {
    /// Model FLOPs of one segment in steady state: `written` vectors
    /// written (gated, then fitted together with the M samples of the
    /// contracted past: `B = Gᵀ[X̄_old ; X]`, §3.2), and `queries` reading
    /// the N coefficients (K, V, the scores, μ and σ over N, `E[ψ]ᵀV`, W_O;
    /// §3.1).
    pub fn flops(&self, ctx: &LongTermContext, queries: usize, written: usize) -> u64 {
        let n = self.mu.weight.dims()[0];
        let [d_model, inner] = self.key.weight.dims();
        let m = ctx.num_samples;
        let gate = self.gate.as_ref().map_or(0, |conv| {
            let [d_out, d_in, kernel] = conv.weight.dims();
            flops::matmul(written, d_in * kernel, d_out)
        });
        let write = gate + flops::matmul(m, n, d_model) + flops::matmul(n, m + written, d_model);
        let read = flops::linear(&self.key, n)
            + flops::linear(&self.value, n)
            + flops::scores_and_values(queries, n, inner)
            + 2 * flops::matmul(queries * self.n_heads, n, 1)
            + flops::linear(&self.output, queries);
        write + read
    }

    /// Writes `x` `[batch, L, d_model]` (the layer's input for the positions
    /// that left the short-term cache, detached) into the signal: the new
    /// coefficients `B` `[batch, N, d_model]`. With a past signal `past`
    /// (detached), it is sampled at M points, contracted into [0, τ] and
    /// refitted together with `x` in (τ, 1] (§3.2); else `x` alone spans
    /// [0, 1].
    pub fn write(
        &self,
        ctx: &LongTermContext,
        x: Tensor<B, 3>,
        past: Option<(Tensor<B, 3>, Option<&Tensor<B, 3>>)>,
    ) -> Tensor<B, 3> {
        let l = x.dims()[1];
        let device = x.device();
        let x = match &self.gate {
            // sigmoid(Conv1d(x)) ⊙ x over time (the official `mask_net`).
            Some(conv) => {
                let channels_first = x.clone().swap_dims(1, 2);
                x * sigmoid(conv.forward(channels_first)).swap_dims(1, 2)
            }
            None => x,
        };
        let (values, g) = match past {
            Some((coefficients, density)) => {
                // X̄_old(t_i) = ψ(t_i)ᵀ B_old at the M sample points.
                let old = match density {
                    Some(density) if ctx.sticky => ctx
                        .basis_at(ctx.sticky_positions(density))
                        .matmul(coefficients.detach()),
                    _ => apply(ctx.uniform_samples::<B>(&device), coefficients.detach()),
                };
                (
                    Tensor::cat(vec![old, x], 1),
                    ctx.regression::<B>(l, true, &device),
                )
            }
            None => (x, ctx.regression::<B>(l, false, &device)),
        };
        apply(g.transpose(), values)
    }

    /// Attends from `queries` `[batch, heads, q, d_head]` (the short-term
    /// attention's content queries) to the signal `coefficients`
    /// `[batch, N, d_model]`.
    pub fn read(
        &self,
        ctx: &LongTermContext,
        queries: Tensor<B, 4>,
        coefficients: Tensor<B, 3>,
    ) -> LongTermRead<B> {
        let [b, h, _, dh] = queries.dims();
        let n = coefficients.dims()[1];
        let heads = |t: Tensor<B, 3>| t.reshape([b, n, h, dh]).swap_dims(1, 2);
        let keys = heads(rows(&self.key, coefficients.clone()));
        let values = heads(rows(&self.value, coefficients));
        // Scores against the N basis coefficients, [b, h, q, N].
        let scores = queries.matmul(keys.transpose()) / (dh as f64).sqrt();
        let mu = sigmoid(rows(&self.mu, scores.clone()));
        let var = softplus(rows(&self.sigma, scores), 1.0).clamp_min(ctx.sigma_floor);
        let r = ctx.expectation(mu.clone(), var.clone());
        let output = rows(&self.output, merge_heads(r.matmul(values)));

        // KL(N(μ, σ²) ‖ N(μ₀, σ₀²)) as the official `kl_reg`.
        let s0 = ctx.sigma_0 * ctx.sigma_0;
        let ratio = var.clone() / s0;
        let mut kl = ratio.clone() - ratio.log() - 1.0;
        if let Some(mu_0) = ctx.mu_0 {
            kl = kl + (mu.clone() - mu_0).powi_scalar(2) / s0;
        }
        let kl = (kl * 0.5).mean();

        let density = ctx.sticky.then(|| {
            let d = ctx.sticky_bins;
            let device = mu.device();
            let edges: Vec<f32> = (0..=d).map(|i| i as f32 / d as f32).collect();
            let edges = Tensor::<B, 1>::from_data(TensorData::new(edges, [d + 1]), &device)
                .reshape([1, 1, 1, d + 1]);
            // Φ((edge − μ)/σ) per query and head, differenced: mass per bin.
            let z = (edges - mu.detach()) / var.detach().sqrt() * std::f64::consts::FRAC_1_SQRT_2;
            let cdf = (z.erf() + 1.0) * 0.5;
            let mass = cdf.clone().narrow(3, 1, d) - cdf.narrow(3, 0, d);
            mass.sum_dim(1).sum_dim(2).reshape([b, 1, d])
        });
        LongTermRead {
            output,
            kl,
            density,
        }
    }
}

/// The signal each layer reads in a segment: the vectors waiting in
/// `pending` (those that left the short-term cache, or the last segment's
/// inputs) written into the layer's past signal, or the past signal as it
/// is when nothing waits; `None` for a layer with nothing in memory yet.
/// `past = None` restarts every layer's signal from the pending vectors.
pub fn write_pending<B: Backend>(
    layers: &[LongTermAttention<B>],
    ctx: &LongTermContext,
    pending: &[Option<Tensor<B, 3>>],
    past: Option<&[Option<Tensor<B, 3>>]>,
    density: &[Option<Tensor<B, 3>>],
) -> Vec<Option<Tensor<B, 3>>> {
    let layer = |v: &[Option<Tensor<B, 3>>], i: usize| v.get(i).cloned().flatten();
    layers
        .iter()
        .enumerate()
        .map(|(i, ltm)| {
            let past = past.and_then(|p| layer(p, i));
            match layer(pending, i) {
                Some(x) => {
                    let density = density.get(i).and_then(Option::as_ref);
                    Some(ltm.write(ctx, x, past.map(|p| (p, density))))
                }
                None => past,
            }
        })
        .collect()
}

/// What the layers' long-term reads of one segment leave: the summed KL
/// and, with sticky memories, each layer's attention density (detached).
#[derive(Debug, Clone)]
pub struct LongTermReads<B: Backend> {
    /// Σ over layers of the mean KL (`None` before anything is in memory).
    pub kl: Option<Tensor<B, 1>>,
    pub density: Vec<Option<Tensor<B, 3>>>,
}

impl<B: Backend> LongTermReads<B> {
    pub fn new(layers: usize) -> Self {
        Self {
            kl: None,
            density: vec![None; layers],
        }
    }

    /// Layer `i` reads `coefficients` (if it has a signal) from `queries`:
    /// the output to add to its attention's.
    pub fn read(
        &mut self,
        i: usize,
        ltm: &LongTermAttention<B>,
        ctx: &LongTermContext,
        queries: Tensor<B, 4>,
        coefficients: Option<Tensor<B, 3>>,
    ) -> Option<Tensor<B, 3>> {
        let read = ltm.read(ctx, queries, coefficients?);
        self.kl = Some(match self.kl.take() {
            Some(sum) => sum + read.kl,
            None => read.kl,
        });
        self.density[i] = read.density.map(|d| d.detach());
        Some(read.output)
    }
}

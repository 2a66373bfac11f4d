//! Memformer's memory writer (Wu et al., 2022, §3.2.2, "memory slot
//! attention"). Each slot `m_i` queries itself and every encoder output,
//! never the other slots, with a temperature τ < 1 that sharpens the
//! choice:
//!
//! ```text
//! Q = m_i W_Q,  K_m = m_i W_K,  K_x = H W_K,  V_x = H W_V
//! [A_m, A_x] = softmax([Q K_mᵀ, Q K_xᵀ] / (√d_head · τ))
//! m'_i = A_m m_i + A_x V_x
//! ```
//!
//! per head. The slot's own value is the slot itself (no projection), so a
//! slot that attends only to itself is left exactly as it was; the encoder
//! outputs are projected (`W_V`). There is no output projection: the
//! update is the attention's output, before biased normalisation
//! (`Memformer::write`).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use memlab_core::flops;
use memlab_core::layers::{merge_heads, normal_init, rows, split_heads};

#[derive(Module, Debug)]
pub struct MemoryWriter<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    /// `W_V`, applied to the encoder outputs only.
    pub value: Linear<B>,
    pub n_heads: usize,
    pub d_head: usize,
    pub temperature: f64,
}

impl<B: Backend> MemoryWriter<B> {
    pub fn new(
        d_model: usize,
        n_heads: usize,
        d_head: usize,
        temperature: f64,
        init_std: f64,
        device: &B::Device,
    ) -> Self {
        let linear = |d_out| {
            LinearConfig::new(d_model, d_out)
                .with_bias(false)
                .with_initializer(normal_init(init_std))
                .init(device)
        };
        Self {
            query: linear(n_heads * d_head),
            key: linear(n_heads * d_head),
            value: linear(d_model),
            n_heads,
            d_head,
            temperature,
        }
    }

    /// Model FLOPs of one write: `k` slot queries against the `k + s` keys
    /// of `[M ; H]`, whose values are `[M ; H W_V]`.
    pub fn flops(&self, k: usize, s: usize) -> u64 {
        let keys = k + s;
        let d_model = self.key.weight.dims()[0];
        flops::linear(&self.query, k)
            + flops::linear(&self.key, keys)
            + flops::linear(&self.value, s)
            + flops::matmul(k, self.n_heads * self.d_head, keys)
            + flops::matmul(k, keys, d_model)
    }

    /// The new slots `[batch, k, d]` from the slots and the encoder outputs
    /// `[batch, s, d]`: `softmax(Q Kᵀ / (√d_head τ) + mask) [M ; H W_V]`
    /// per head.
    pub fn forward(&self, slots: Tensor<B, 3>, encoded: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, k, _] = slots.dims();
        let s = encoded.dims()[1];
        let device = slots.device();
        let keys_in = Tensor::cat(vec![slots.clone(), encoded.clone()], 1);
        let values_in = Tensor::cat(vec![slots.clone(), rows(&self.value, encoded)], 1);
        let q = split_heads(rows(&self.query, slots), self.n_heads);
        let keys = split_heads(rows(&self.key, keys_in), self.n_heads);
        let values = split_heads(values_in, self.n_heads);
        let scores = q.matmul(keys.transpose()) / ((self.d_head as f64).sqrt() * self.temperature);
        let scores = scores.mask_fill(writer_mask::<B>(k, s, &device), f32::NEG_INFINITY);
        merge_heads(softmax(scores, 3).matmul(values))
    }
}

/// `[1, 1, k, k + s]`, `true` = masked: slot `i` sees key `i` (itself) and
/// the `s` encoder outputs, not the other slots.
pub fn writer_mask<B: Backend>(k: usize, s: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let cells: Vec<bool> = (0..k)
        .flat_map(|i| (0..k + s).map(move |j| j < k && j != i))
        .collect();
    Tensor::<B, 2, Bool>::from_data(TensorData::new(cells, [k, k + s]), device).reshape([
        1,
        1,
        k,
        k + s,
    ])
}

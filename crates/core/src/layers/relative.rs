//! Transformer-XL's relative positional attention (Dai et al., 2019, §3.3):
//!
//! ```text
//! A_ij = (E q_i + u)ᵀ W_k E k_j  +  (E q_i + v)ᵀ W_R R_{i−j}
//!        └──── (a) + (c) ────┘      └───── (b) + (d) ─────┘
//! ```
//!
//! scaled by 1/√d_head, where `R` are fixed sinusoids of the distance and
//! `u`, `v` learned per head. 1/√d_head is folded into the queries (both
//! terms read them). The content term is the attention's `q kᵀ` (with `u`
//! added to the query); the position term is formed for every distance
//! `klen−1 … 0` at once, aligned to `(i, j)` by the rel-shift of the
//! official code, and added to the scores as a bias ([`attend`]).

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::attention::{
    MultiHeadAttention, MultiHeadAttentionConfig, attend, normal_init, rows, split_heads,
};
use super::positions::sinusoids;
use crate::partial::KeyValues;

/// Multi-head attention with relative positions. The content projections
/// are a plain [`MultiHeadAttention`] without biases (as in the official
/// code); `position` is `W_R`.
#[derive(Module, Debug)]
pub struct RelativeMultiHeadAttention<B: Backend> {
    pub projections: MultiHeadAttention<B>,
    pub position: Linear<B>,
}

/// The global content and position biases `u` and `v`, `[n_heads, d_head]`.
#[derive(Module, Debug)]
pub struct RelativeBias<B: Backend> {
    pub u: Param<Tensor<B, 2>>,
    pub v: Param<Tensor<B, 2>>,
}

impl MultiHeadAttentionConfig {
    /// The relative attention with this configuration's sizes, attention
    /// dropout and init: content projections without biases (as in the
    /// official code) and `W_R`.
    pub fn init_relative<B: Backend>(&self, device: &B::Device) -> RelativeMultiHeadAttention<B> {
        let d_head = self.head_size();
        RelativeMultiHeadAttention {
            projections: self.clone().with_bias(false).init(device),
            position: LinearConfig::new(self.d_model, self.n_heads * d_head)
                .with_bias(false)
                .with_initializer(normal_init(self.init_std))
                .init(device),
        }
    }

    /// `u` and `v`, N(0, init_std²) as in the official code.
    pub fn init_relative_bias<B: Backend>(&self, device: &B::Device) -> RelativeBias<B> {
        let init = normal_init(self.init_std);
        RelativeBias {
            u: init.init([self.n_heads, self.head_size()], device),
            v: init.init([self.n_heads, self.head_size()], device),
        }
    }
}

impl<B: Backend> RelativeMultiHeadAttention<B> {
    /// Attention of `x` `[batch, q, d]` over `context` `[batch, k, d]` (the
    /// cache followed by `x`, so the last `q` keys are `x` itself). `pos` are
    /// the sinusoids `[k, d]` for distances `k−1 … 0` ([`relative_sinusoids`]);
    /// `mask` broadcasts to `[batch, heads, q, k]` (`true` = masked).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        pos: Tensor<B, 2>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        self.forward_with_query(x, context, pos, bias, mask).0
    }

    /// [`Self::forward`], also returning the content queries `W_q x`
    /// `[batch, heads, q, d_head]` (before the `u` bias): the ∞-former's
    /// long-term attention reads them.
    pub fn forward_with_query(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        pos: Tensor<B, 2>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let p = &self.projections;
        let heads = p.n_heads;
        // The projections' rows are only viewed head-major (a CPU backend's
        // matmul reads the strides).
        let k = head_major(rows(&p.key, context.clone()), heads);
        let v = head_major(rows(&p.value, context), heads);
        let r = self.project_positions(pos);
        self.attend_projected(x, k, v, r, bias, mask)
    }

    /// `W_R R` for sinusoids `pos` `[n, d]`: `[heads, d_head, n]`.
    fn project_positions(&self, pos: Tensor<B, 2>) -> Tensor<B, 3> {
        let p = &self.projections;
        let n = pos.dims()[0];
        self.position
            .forward(pos)
            .reshape([n, p.n_heads, p.d_head])
            .permute([1, 2, 0])
    }

    /// Relative self-attention of `x` `[batch, q, d]`, the positions that
    /// follow those whose keys, values and projected sinusoids `past` holds
    /// (`None`: the first): `new_context` are the context rows not yet in
    /// `past` (at the first call the cache's rows and then `x`'s, normalised
    /// as the block normalises its context; later `x`'s alone), and
    /// `new_pos` the sinusoids of the distances not yet in `past` (the
    /// largest, descending: `keys − 1 … past`). The same as [`Self::forward`]
    /// over every key at the last `q` rows; returns the output, the content
    /// queries and the grown keys and values.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        new_context: Tensor<B, 3>,
        new_pos: Tensor<B, 2>,
        past: Option<KeyValues<B>>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, KeyValues<B>) {
        let p = &self.projections;
        let heads = p.n_heads;
        let k = head_major(rows(&p.key, new_context.clone()), heads);
        let v = head_major(rows(&p.value, new_context), heads);
        let r_new = self.project_positions(new_pos);
        let r = match past.as_ref().and_then(|kv| kv.positions.clone()) {
            Some(r_past) => Tensor::cat(vec![r_new, r_past], 2),
            None => r_new,
        };
        let mut kv = KeyValues::extended(past, k, v);
        kv.positions = Some(r.clone());
        let (out, queries) =
            self.attend_projected(x, kv.keys.clone(), kv.values.clone(), r, bias, mask);
        (out, queries, kv)
    }

    /// The attention of `x` `[batch, q, d]` over keys and values already
    /// projected (head-major `[heads, batch, k, d_head]`, the last `q` of
    /// them `x`'s own) and `r` `[heads, d_head, k]`, `W_R R` for distances
    /// `k−1 … 0`: the output and the content queries.
    fn attend_projected(
        &self,
        x: Tensor<B, 3>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        r: Tensor<B, 3>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let p = &self.projections;
        let (heads, d_head) = (p.n_heads, p.d_head);
        let [b, q_len, _] = x.dims();
        let k_len = k.dims()[2];
        let scale = (d_head as f64).sqrt().recip();
        // Everything below runs head-major, `[heads, batch, len, d_head]`:
        // the position term is one product per head over all batch rows,
        // and the scores, their bias and the rel-shift stay contiguous.
        // 1/√d_head is folded into the queries (`[b, q, d]`, smaller than
        // the `[b, h, q, k]` scores it would otherwise scale twice).
        let q = rows(&p.query, x);

        // `u` and `v` added to every row of `[b, q, heads · d_head]`.
        let per_head = |w: &Param<Tensor<B, 2>>| w.val().reshape([1, 1, heads * d_head]) * scale;
        let q_scaled = q.clone() * scale;
        // (a) + (c): (q + u)·k.
        let q_u = head_major(q_scaled.clone() + per_head(&bias.u), heads);
        // (b) + (d) for every distance, then aligned: BD[i, j] uses R_{mlen+i−j}.
        // One product per head over all batch rows (`[h, b·q, d] × [h, d, k]`)
        // rather than R broadcast over the batch (see `rows`).
        // (A view: `[b·q, heads, d]` with its first two axes swapped.)
        let q_v = (q_scaled + per_head(&bias.v))
            .reshape([b * q_len, heads, d_head])
            .swap_dims(0, 1);
        let position_scores = rel_shift(q_v.matmul(r).reshape([heads, b, q_len, k_len]));

        let mask = mask.map(|m| m.swap_dims(0, 1));
        let heads_out = attend(q_u, k, v, mask, Some(position_scores), &p.dropout);
        // [heads, b, q, d_head] -> [b, q, heads · d_head]
        let merged = heads_out
            .permute([1, 2, 0, 3])
            .reshape([b, q_len, heads * d_head]);
        (rows(&p.output, merged), split_heads(q, heads))
    }
}

/// `[batch, len, heads · d_head]` -> `[heads, batch, len, d_head]` (a view
/// on backends with strided tensors).
fn head_major<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, len, d] = x.dims();
    x.reshape([b, len, heads, d / heads]).permute([2, 0, 1, 3])
}

/// The rel-shift of Transformer-XL's code: for scores `x` `[.., .., q, k]`
/// whose column `c` holds distance `k−1−c`, returns scores whose `(i, j)`
/// holds distance `(k−q) + i − j` for every `j ≤ (k−q) + i` (the positions
/// a causal query may see; the rest is never used: it is masked).
pub fn rel_shift<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, q, k] = x.dims();
    let zero = Tensor::zeros([b, h, q, 1], &x.device());
    Tensor::cat(vec![zero, x], 3)
        .reshape([b, h, k + 1, q])
        .slice([0..b, 0..h, 1..k + 1, 0..q])
        .reshape([b, h, q, k])
}

/// Sinusoids `[k_len, d_model]` for the distances `k_len−1, …, 1, 0`, each
/// clamped to `clamp_len` when given (the official code's `pos_seq`).
/// `Some(0)` clamps nothing, as the official `if self.clamp_len > 0`
/// reads `clamp_len 0` (and its default −1).
pub fn relative_sinusoids<B: Backend>(
    k_len: usize,
    d_model: usize,
    clamp_len: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 2> {
    relative_sinusoids_from(k_len, 0, d_model, clamp_len, device)
}

/// The first rows of [`relative_sinusoids`]: the distances `k_len−1, …,
/// nearest` (what a segment read incrementally adds to the distances
/// `nearest−1 … 0` it has already projected).
pub fn relative_sinusoids_from<B: Backend>(
    k_len: usize,
    nearest: usize,
    d_model: usize,
    clamp_len: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 2> {
    let distances: Vec<f32> = (nearest..k_len)
        .rev()
        .map(|d| clamp_len.filter(|&c| c > 0).map_or(d, |c| d.min(c)) as f32)
        .collect();
    sinusoids(&distances, d_model, device)
}

//! Multi-head scaled dot-product attention (Vaswani et al., 2017, §3.2),
//! with an arbitrary boolean mask and an optional additive bias on the scores
//! (what Transformer-XL's relative positions, RMT's memory layout and
//! Memformer's slot attention all need).
//!
//! Mask convention (Burn's): `true` marks a key a query must NOT attend to.
//! A query whose keys are all masked gets a zero output.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};

use super::dropout::Dropout;
use crate::partial::KeyValues;
use crate::seed::host_backend;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// Configuration of [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    pub d_model: usize,
    pub n_heads: usize,
    /// Size of each head; `d_model / n_heads` when absent.
    #[config(default = "None")]
    pub d_head: Option<usize>,
    /// Dropout on the attention probabilities.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Whether the projections have biases.
    #[config(default = true)]
    pub bias: bool,
    /// Standard deviation of the N(0, std²) weight initialisation.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// Multi-head attention: `softmax(QKᵀ/√d + bias, masked) V`, projected.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub output: Linear<B>,
    pub dropout: Dropout,
    pub n_heads: usize,
    pub d_head: usize,
}

impl MultiHeadAttentionConfig {
    /// Size of each head.
    pub fn head_size(&self) -> usize {
        self.d_head.unwrap_or(self.d_model / self.n_heads)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        let d_head = self.head_size();
        let inner = d_head * self.n_heads;
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_bias(self.bias)
                .with_initializer(normal_init(self.init_std))
                .init(device)
        };
        MultiHeadAttention {
            query: linear(self.d_model, inner),
            key: linear(self.d_model, inner),
            value: linear(self.d_model, inner),
            output: linear(inner, self.d_model),
            dropout: Dropout::new(self.dropout),
            n_heads: self.n_heads,
            d_head,
        }
    }
}

/// N(0, std²), the initialisation of GPT-2 and Transformer-XL.
pub fn normal_init(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Attention of `x` `[batch, q, d]` over `context` `[batch, k, d]` (`x`
    /// itself when `None`). `mask` and `bias` broadcast to `[batch, heads, q, k]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        mask: Option<Tensor<B, 4, Bool>>,
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        self.forward_with_query(x, context, mask, bias).0
    }

    /// [`Self::forward`], also returning the queries `W_q x + b_q`
    /// `[batch, heads, q, d_head]` before the 1/√d_head scaling (what a
    /// second attention over another memory reads, e.g. GPT-2's long-term
    /// memory in the ∞-former's fine-tuning code, `long_term_attention(mem,
    /// query)`).
    pub fn forward_with_query(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        mask: Option<Tensor<B, 4, Bool>>,
        bias: Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let context = context.unwrap_or_else(|| x.clone());
        let scale = (self.d_head as f64).sqrt().recip();
        let queries = split_heads(rows(&self.query, x), self.n_heads);
        let k = split_heads(rows(&self.key, context.clone()), self.n_heads);
        let v = split_heads(rows(&self.value, context), self.n_heads);
        let heads = attend(queries.clone() * scale, k, v, mask, bias, &self.dropout);
        (rows(&self.output, merge_heads(heads)), queries)
    }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Self-attention of `x` `[batch, q, d]`, the positions that follow
    /// those whose keys and values `past` holds (`None`: the first), under
    /// `mask` `[.., q, past + q]`: the same as [`Self::forward_with_query`]
    /// over all of them at the last `q` rows, with only `x` projected.
    /// Returns the output, the queries (unscaled) and the keys and values
    /// with `x`'s appended.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        past: Option<KeyValues<B>>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, KeyValues<B>) {
        let queries = split_heads(rows(&self.query, x.clone()), self.n_heads);
        let new = self.key_values(x);
        let kv = KeyValues::extended(past, new.keys, new.values);
        let out = self.attend_projected(queries.clone(), &kv, mask);
        (out, queries, kv)
    }

    /// The keys and values of `context` `[batch, k, d]`, `[batch, heads, k,
    /// d_head]`: what [`Self::forward_over`] reads (e.g. a cross-attention's
    /// context, projected once for a whole segment).
    pub fn key_values(&self, context: Tensor<B, 3>) -> KeyValues<B> {
        KeyValues {
            keys: split_heads(rows(&self.key, context.clone()), self.n_heads),
            values: split_heads(rows(&self.value, context), self.n_heads),
            positions: None,
        }
    }

    /// Attention of `x` `[batch, q, d]` over keys and values already
    /// projected ([`Self::key_values`]), under `mask` `[.., q, keys]`.
    pub fn forward_over(
        &self,
        x: Tensor<B, 3>,
        kv: &KeyValues<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let queries = split_heads(rows(&self.query, x), self.n_heads);
        self.attend_projected(queries, kv, mask)
    }

    /// The attention of `queries` `[batch, heads, q, d_head]` (unscaled)
    /// over `kv`, projected back to `[batch, q, d]`.
    fn attend_projected(
        &self,
        queries: Tensor<B, 4>,
        kv: &KeyValues<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let scale = (self.d_head as f64).sqrt().recip();
        let heads = attend(
            queries * scale,
            kv.keys.clone(),
            kv.values.clone(),
            mask,
            None,
            &self.dropout,
        );
        rows(&self.output, merge_heads(heads))
    }
}

/// `[batch, len, heads * d_head]` -> `[batch, heads, len, d_head]`.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, n_heads: usize) -> Tensor<B, 4> {
    let [batch, len, d] = x.dims();
    x.reshape([batch, len, n_heads, d / n_heads])
        .swap_dims(1, 2)
}

/// `linear` applied to every row of `x` `[.., d_in]` as one 2-D product
/// `[rows, d_in] × [d_in, d_out]`.
///
/// Burn's `Linear::forward` on a rank-3+ input multiplies by the weight
/// broadcast over the leading dimensions. On CUDA (burn 0.21, CubeCL 0.10)
/// autotune can then select a TMA matmul that cannot launch on mixed
/// broadcast dimensions, and panics ("TMA doesn't support mixing broadcast
/// and non-broadcast dims"); the weight's gradient is also computed per batch
/// entry and then summed. The 2-D product has neither problem.
pub fn rows<B: Backend, const D: usize>(linear: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let n = dims.iter().product::<usize>() / d_in.max(1);
    let y = linear.forward(x.reshape([n, d_in]));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// `[batch, heads, len, d_head]` -> `[batch, len, heads * d_head]`.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, len, d_head] = x.dims();
    x.swap_dims(1, 2).reshape([batch, len, heads * d_head])
}

/// `softmax(q kᵀ / √d_head + bias, masked) v` for `q` `[b, h, q, d]`,
/// `k`/`v` `[b, h, k, d]`.
///
/// Uses Burn's fused `attention` op on GPU backends, which is exact for masks
/// and biases; on the CPU, and when attention dropout is active (training
/// with `p > 0`: the probabilities must be materialised), the unfused
/// [`attention_reference`] runs instead (see [`attend`]).
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    bias: Option<Tensor<B, 4>>,
    dropout: impl Into<Dropout>,
) -> Tensor<B, 4> {
    attend(scaled(q), k, v, mask, bias, &dropout.into())
}

/// `q / √d_head`.
fn scaled<B: Backend>(q: Tensor<B, 4>) -> Tensor<B, 4> {
    let d_head = q.dims()[3];
    q * (d_head as f64).sqrt().recip()
}

/// [`scaled_dot_product_attention`] for queries already scaled by
/// 1/√d_head: `softmax(q kᵀ + bias, masked) v`. The layers scale their
/// queries before splitting the heads, where the tensor is contiguous and
/// smaller than the scores.
pub fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    bias: Option<Tensor<B, 4>>,
    dropout: &Dropout,
) -> Tensor<B, 4> {
    // Unfused with attention dropout in training (the probabilities must be
    // materialised), and always on the CPU: burn-flex's fused op first
    // copies strided `q`, `k`, `v` (the layers pass head views) element by
    // element, where its matmul reads the views as they are.
    let training_dropout = dropout.prob > 0.0 && B::ad_enabled(&q.device());
    if training_dropout || host_backend::<B>() {
        return unfused(q, k, v, mask, bias, training_dropout.then_some(dropout));
    }
    // The fused op takes a mask or bias broadcast over batch and heads
    // (`[1 | b, 1 | h, q, k]`) as it is: expanding it first would make a
    // CPU backend copy it out to the full size.
    let [batch, heads, q_len, _] = q.dims();
    let full = [batch, heads, q_len, k.dims()[2]];
    let mask = mask.map(|m| broadcast(m, full));
    let bias = bias.map(|b| broadcast(b, full));
    let options = AttentionModuleOptions {
        scale: Some(1.0),
        ..Default::default()
    };
    attention(q, k, v, mask, bias, options)
}

/// `x` as it is where it already broadcasts over batch and heads (same last
/// two dimensions as `full`), else expanded to `full`.
fn broadcast<B: Backend, K: burn::tensor::BasicOps<B>>(
    x: Tensor<B, 4, K>,
    full: [usize; 4],
) -> Tensor<B, 4, K> {
    if x.dims()[2..] == full[2..] {
        x
    } else {
        x.expand(full)
    }
}

/// The unfused attention: scores, mask, bias, softmax, dropout, values.
/// Reference for the fused op and the path used with attention dropout.
pub fn attention_reference<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    bias: Option<Tensor<B, 4>>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    unfused(scaled(q), k, v, mask, bias, dropout)
}

/// [`attention_reference`] for queries already scaled by 1/√d_head. `mask`
/// and `bias` broadcast to the scores.
///
/// The mask is added to the scores as −10³⁰ where it is `true` (a tensor of
/// the mask's own, broadcast shape) rather than filled in: the probabilities
/// are the same bit for bit — an unmasked score gains an exact 0, a masked
/// one ends at −10³⁰ either way (10³⁰'s ulp is 10²³) and its exponential
/// underflows to 0 — while a fill needs the mask expanded to the scores'
/// size, copied out on a CPU backend, in the forward pass and again in the
/// backward. A query whose keys are all masked has uniform probabilities
/// then; its output is zeroed by one product with `[.., q, 1]`.
fn unfused<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    bias: Option<Tensor<B, 4>>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let mut scores = q.matmul(k.transpose());
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    if let Some(mask) = &mask {
        scores = leading_broadcast(scores, mask.clone().float() * MASKED, |s, m| s + m);
    }
    let mut probs = softmax(scores, 3);
    if let Some(dropout) = dropout {
        probs = dropout.forward(probs);
    }
    let out = probs.matmul(v);
    match mask {
        Some(mask) => {
            let seen = mask.bool_not().any_dim(3).float();
            leading_broadcast(out, seen, |o, s| o * s)
        }
        None => out,
    }
}

/// `op(x, y)` for `y` broadcasting to `x`, computed on `x` as a matrix
/// `[leading, rest]` and `y` as one row `[1, rest]`, where `leading` are the
/// dimensions `y` broadcasts over from the left (`y`'s other dimensions
/// are expanded to `x`'s first: `y` is the small one).
///
/// The same values as `op(x, y)`; the shape is burn-flex's fast path for a
/// broadcast operand, a row shared by every row of a contiguous `x`
/// (e.g. a `[1, 1, q, k]` mask over `[heads, batch, q, k]` scores), where
/// other broadcasts are walked element by element.
fn leading_broadcast<B: Backend>(
    x: Tensor<B, 4>,
    y: Tensor<B, 4>,
    op: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 4> {
    let dims = x.dims();
    let y_dims = y.dims();
    let leading = y_dims.iter().take_while(|&&d| d == 1).count().min(3);
    let rest: usize = dims[leading..].iter().product();
    let mut full = dims;
    full[..leading].fill(1);
    let y = if y_dims == full { y } else { y.expand(full) };
    let x = x.reshape([dims.iter().product::<usize>() / rest.max(1), rest]);
    op(x, y.reshape([1, rest])).reshape(dims)
}

/// What a masked score becomes: large and finite, so that a row with every
/// key masked stays finite (it is zeroed afterwards).
const MASKED: f64 = -1.0e30;

/// Causal mask `[1, 1, q_len, mem_len + q_len]` for a segment preceded by
/// `mem_len` cached positions: query `i` sees every cached position and
/// segment positions `j <= i` (`true` = masked).
pub fn causal_mask<B: Backend>(
    q_len: usize,
    mem_len: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    Tensor::<B, 2, Bool>::tril_mask([q_len, mem_len + q_len], mem_len as i64, device).reshape([
        1,
        1,
        q_len,
        mem_len + q_len,
    ])
}

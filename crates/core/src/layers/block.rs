//! The Transformer block (Vaswani et al., 2017, §3.1): attention and a
//! feed-forward network, each in a residual branch, with LayerNorm after the
//! residual (post-LN, the original and Transformer-XL's default) or at the
//! branch input (pre-LN, GPT-2). [`TransformerBlock`] attends with absolute
//! positions, [`RelativeTransformerBlock`] with Transformer-XL's relative
//! ones; both share [`BlockBody`], everything around the attention.

use burn::nn::{LayerNorm, LayerNormConfig};

use super::dropout::Dropout;
use burn::prelude::*;

use super::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use super::feed_forward::{Activation, FeedForward, FeedForwardConfig};
use super::relative::{RelativeBias, RelativeMultiHeadAttention};
use crate::partial::KeyValues;

#[derive(Config, Debug)]
pub struct TransformerBlockConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    /// Size of each head; `d_model / n_heads` when absent.
    #[config(default = "None")]
    pub d_head: Option<usize>,
    /// Residual and feed-forward dropout.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Dropout on attention probabilities.
    #[config(default = 0.0)]
    pub attn_dropout: f64,
    /// LayerNorm at the branch inputs (true) or after the residual sums.
    #[config(default = true)]
    pub pre_norm: bool,
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    #[config(default = 0.02)]
    pub init_std: f64,
    /// The LayerNorms' ε (GPT-2's `layer_norm_epsilon`; Burn's default).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

/// Everything of a block but its attention: the feed-forward network, the
/// two LayerNorms, residual dropout and their placement.
#[derive(Module, Debug)]
pub struct BlockBody<B: Backend> {
    pub feed_forward: FeedForward<B>,
    pub norm_attention: LayerNorm<B>,
    pub norm_feed_forward: LayerNorm<B>,
    pub dropout: Dropout,
    pub pre_norm: bool,
}

impl<B: Backend> BlockBody<B> {
    /// `x + dropout(attend(·))` with the block's LayerNorm placement;
    /// `attend` receives the (normalised, under pre-LN) input.
    pub fn attention_residual(
        &self,
        x: Tensor<B, 3>,
        attend: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        self.residual(x, &self.norm_attention, attend)
    }

    /// [`Self::attention_residual`] for an attention that also returns its
    /// queries and some state (keys and values read so far, or nothing):
    /// `extra(queries)`, a second attention's output when there is one, is
    /// added to the attention's before the residual. Returns the sum and
    /// the state.
    pub fn attention_residual_with<S>(
        &self,
        x: Tensor<B, 3>,
        attend: impl FnOnce(Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 4>, S),
        extra: impl FnOnce(Tensor<B, 4>) -> Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, S) {
        let mut state = None;
        let x = self.attention_residual(x, |h| {
            let (out, queries, s) = attend(h);
            state = Some(s);
            match extra(queries) {
                Some(second) => out + second,
                None => out,
            }
        });
        (x, state.expect("the attention ran"))
    }

    /// The context an attention reads (e.g. `[cache ; x]`), normalised like
    /// its input under pre-LN.
    pub fn attention_context(&self, context: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.pre_norm {
            self.norm_attention.forward(context)
        } else {
            context
        }
    }

    /// The feed-forward residual branch.
    pub fn feed_forward_residual(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.residual(x, &self.norm_feed_forward, |h| self.feed_forward.forward(h))
    }

    fn residual(
        &self,
        x: Tensor<B, 3>,
        norm: &LayerNorm<B>,
        f: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        if self.pre_norm {
            x.clone() + self.dropout.forward(f(norm.forward(x)))
        } else {
            norm.forward(x.clone() + self.dropout.forward(f(x)))
        }
    }
}

/// A block with standard multi-head attention.
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    pub attention: MultiHeadAttention<B>,
    pub body: BlockBody<B>,
}

/// A block with self-attention, then cross-attention to a context (an
/// encoder's output, memory slots), then the feed-forward network, each a
/// residual branch (Vaswani et al., 2017, §3.1, the decoder layer).
#[derive(Module, Debug)]
pub struct CrossAttentionBlock<B: Backend> {
    pub self_attention: MultiHeadAttention<B>,
    pub cross_attention: MultiHeadAttention<B>,
    pub norm_cross: LayerNorm<B>,
    pub body: BlockBody<B>,
}

/// A block with Transformer-XL's relative multi-head attention.
#[derive(Module, Debug)]
pub struct RelativeTransformerBlock<B: Backend> {
    pub attention: RelativeMultiHeadAttention<B>,
    pub body: BlockBody<B>,
}

impl TransformerBlockConfig {
    fn init_body<B: Backend>(&self, device: &B::Device) -> BlockBody<B> {
        BlockBody {
            feed_forward: FeedForwardConfig::new(self.d_model, self.d_ff)
                .with_dropout(self.dropout)
                .with_activation(self.activation)
                .with_init_std(self.init_std)
                .init(device),
            norm_attention: self.norm(device),
            norm_feed_forward: self.norm(device),
            dropout: Dropout::new(self.dropout),
            pre_norm: self.pre_norm,
        }
    }

    /// One of the block's LayerNorms.
    pub fn norm<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNormConfig::new(self.d_model)
            .with_epsilon(self.norm_eps)
            .init(device)
    }

    /// The configuration of the block's attention.
    pub fn attention(&self) -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
            .with_d_head(self.d_head)
            .with_dropout(self.attn_dropout)
            .with_init_std(self.init_std)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerBlock<B> {
        TransformerBlock {
            attention: self.attention().init(device),
            body: self.init_body(device),
        }
    }

    pub fn init_relative<B: Backend>(&self, device: &B::Device) -> RelativeTransformerBlock<B> {
        RelativeTransformerBlock {
            attention: self.attention().init_relative(device),
            body: self.init_body(device),
        }
    }

    pub fn init_cross<B: Backend>(&self, device: &B::Device) -> CrossAttentionBlock<B> {
        CrossAttentionBlock {
            self_attention: self.attention().init(device),
            cross_attention: self.attention().init(device),
            norm_cross: self.norm(device),
            body: self.init_body(device),
        }
    }

    /// `u`, `v` for blocks of [`Self::init_relative`].
    pub fn init_relative_bias<B: Backend>(&self, device: &B::Device) -> RelativeBias<B> {
        self.attention().init_relative_bias(device)
    }

    /// A Transformer-XL stack: `n_layers` relative blocks and their `u`, `v`
    /// (one pair shared by every layer, or one per layer with `untie_r`).
    pub fn init_relative_stack<B: Backend>(
        &self,
        n_layers: usize,
        untie_r: bool,
        device: &B::Device,
    ) -> (Vec<RelativeTransformerBlock<B>>, Vec<RelativeBias<B>>) {
        let layers = (0..n_layers).map(|_| self.init_relative(device)).collect();
        let pairs = if untie_r { n_layers } else { 1 };
        let biases = (0..pairs)
            .map(|_| self.init_relative_bias(device))
            .collect();
        (layers, biases)
    }
}

impl<B: Backend> TransformerBlock<B> {
    /// Self-attention of `x` `[batch, len, d]` (over `context` when given,
    /// e.g. `[cache ; x]`), then the feed-forward network.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        mask: Option<Tensor<B, 4, Bool>>,
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let context = context.map(|c| self.body.attention_context(c));
        let x = self
            .body
            .attention_residual(x, |h| self.attention.forward(h, context, mask, bias));
        self.body.feed_forward_residual(x)
    }

    /// [`Self::forward`]'s self-attention for positions that follow those
    /// whose keys and values `past` holds (incremental reading,
    /// [`crate::partial`]): `mask` is `[.., q, past + q]`. Returns the
    /// output and the keys and values with `x`'s appended.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        past: Option<KeyValues<B>>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> (Tensor<B, 3>, KeyValues<B>) {
        self.forward_cached_with(x, past, mask, |_| None)
    }

    /// [`Self::forward_cached`] with [`Self::forward_with`]'s second
    /// attention.
    pub fn forward_cached_with(
        &self,
        x: Tensor<B, 3>,
        past: Option<KeyValues<B>>,
        mask: Option<Tensor<B, 4, Bool>>,
        extra: impl FnOnce(Tensor<B, 4>) -> Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, KeyValues<B>) {
        let (x, kv) = self.body.attention_residual_with(
            x,
            |h| self.attention.forward_cached(h, past, mask),
            extra,
        );
        (self.body.feed_forward_residual(x), kv)
    }

    /// Causal self-attention of `x` under `mask` with a second attention
    /// over another memory: `extra(queries)` (the queries `W_q x + b_q`
    /// `[batch, heads, q, d_head]`, unscaled) returns `[batch, q, d_model]`,
    /// added to the attention's output projection before the residual
    /// dropout (GPT-2 with the ∞-former's long-term memory:
    /// `a = c_proj(a); a += a_long_term; a = resid_dropout(a)`).
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        mask: Option<Tensor<B, 4, Bool>>,
        extra: impl FnOnce(Tensor<B, 4>) -> Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        let (x, ()) = self.body.attention_residual_with(
            x,
            |h| {
                let (out, queries) = self.attention.forward_with_query(h, None, mask, None);
                (out, queries, ())
            },
            extra,
        );
        self.body.feed_forward_residual(x)
    }
}

impl<B: Backend> CrossAttentionBlock<B> {
    /// [`Self::forward`] for positions that follow those whose
    /// self-attention keys and values `past` holds (incremental reading,
    /// [`crate::partial`]), `mask` `[.., q, past + q]`, with the context's
    /// keys and values `cross` already projected
    /// ([`MultiHeadAttention::key_values`] of `cross_attention`). Returns
    /// the output and the self-attention's grown keys and values.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        past: Option<KeyValues<B>>,
        mask: Option<Tensor<B, 4, Bool>>,
        cross: &KeyValues<B>,
    ) -> (Tensor<B, 3>, KeyValues<B>) {
        let mut next = None;
        let x = self.body.attention_residual(x, |h| {
            let (out, _, kv) = self.self_attention.forward_cached(h, past, mask);
            next = Some(kv);
            out
        });
        let x = self.body.residual(x, &self.norm_cross, |h| {
            self.cross_attention.forward_over(h, cross, None)
        });
        let kv = next.expect("the attention ran");
        (self.body.feed_forward_residual(x), kv)
    }

    /// Self-attention of `x` `[batch, len, d]` under `mask`, then attention
    /// from `x` to `context` `[batch, m, d]` (every position sees all of it),
    /// then the feed-forward network.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: Option<Tensor<B, 4, Bool>>,
        context: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let x = self
            .body
            .attention_residual(x, |h| self.self_attention.forward(h, None, mask, None));
        let x = self.body.residual(x, &self.norm_cross, |h| {
            self.cross_attention.forward(h, Some(context), None, None)
        });
        self.body.feed_forward_residual(x)
    }
}

impl<B: Backend> RelativeTransformerBlock<B> {
    /// Relative self-attention of `x` `[batch, q, d]` over `[memory ; x]`
    /// (`memory` `[batch, m, d]`, this layer's cached inputs), then the
    /// feed-forward network. `pos` are the sinusoids for distances
    /// `m+q−1 … 0`; `mask` is `[.., q, m+q]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        memory: Option<Tensor<B, 3>>,
        pos: Tensor<B, 2>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, memory, pos, bias, mask, |_| None)
    }

    /// [`Self::forward`] with a second attention over another memory:
    /// `extra(queries)` (the content queries `[batch, heads, q, d_head]`)
    /// returns `[batch, q, d_model]` that is added to the attention output
    /// before the residual, as the ∞-former adds its long-term attention
    /// (Martins et al., 2022, §3.1; `attn_out += a_long_term` in the code).
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        memory: Option<Tensor<B, 3>>,
        pos: Tensor<B, 2>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
        extra: impl FnOnce(Tensor<B, 4>) -> Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        let context = match memory {
            Some(m) => Tensor::cat(vec![m, x.clone()], 1),
            None => x.clone(),
        };
        let context = self.body.attention_context(context);
        let (x, ()) = self.body.attention_residual_with(
            x,
            |h| {
                let (out, queries) = self
                    .attention
                    .forward_with_query(h, context, pos, bias, mask);
                (out, queries, ())
            },
            extra,
        );
        self.body.feed_forward_residual(x)
    }

    /// [`Self::forward_with`] for positions that follow those whose keys,
    /// values and projected sinusoids `past` holds (incremental reading,
    /// [`crate::partial`]). `memory`, this layer's cached inputs, is given at
    /// the first call only (`past` is then `None`); `new_pos` are the
    /// sinusoids of the distances not yet in `past` (`keys − 1 … past` for
    /// the `keys` held once `x` is read; at the first call all of them);
    /// `mask` is `[.., q, keys]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        memory: Option<Tensor<B, 3>>,
        new_pos: Tensor<B, 2>,
        past: Option<KeyValues<B>>,
        bias: &RelativeBias<B>,
        mask: Option<Tensor<B, 4, Bool>>,
        extra: impl FnOnce(Tensor<B, 4>) -> Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, KeyValues<B>) {
        let new_context = match memory {
            Some(m) => Tensor::cat(vec![m, x.clone()], 1),
            None => x.clone(),
        };
        let new_context = self.body.attention_context(new_context);
        let (x, kv) = self.body.attention_residual_with(
            x,
            |h| {
                self.attention
                    .forward_cached(h, new_context, new_pos, past, bias, mask)
            },
            extra,
        );
        (self.body.feed_forward_residual(x), kv)
    }
}

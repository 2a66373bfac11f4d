//! The Transformer block (Vaswani et al., 2017, §3.1): self-attention and a
//! feed-forward network, each in a residual branch, with LayerNorm after the
//! residual (post-LN, the original) or at the branch input (pre-LN, GPT-2).

use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use super::feed_forward::{Activation, FeedForward, FeedForwardConfig};

#[derive(Config, Debug)]
pub struct TransformerBlockConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
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
}

#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    pub attention: MultiHeadAttention<B>,
    pub feed_forward: FeedForward<B>,
    pub norm_attention: LayerNorm<B>,
    pub norm_feed_forward: LayerNorm<B>,
    pub dropout: Dropout,
    pub pre_norm: bool,
}

impl TransformerBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerBlock<B> {
        TransformerBlock {
            attention: MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
                .with_dropout(self.attn_dropout)
                .with_init_std(self.init_std)
                .init(device),
            feed_forward: FeedForwardConfig::new(self.d_model, self.d_ff)
                .with_dropout(self.dropout)
                .with_activation(self.activation)
                .with_init_std(self.init_std)
                .init(device),
            norm_attention: LayerNormConfig::new(self.d_model).init(device),
            norm_feed_forward: LayerNormConfig::new(self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            pre_norm: self.pre_norm,
        }
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
        let x = self.residual(x, &self.norm_attention, |h| {
            let context = context.map(|c| match self.pre_norm {
                true => self.norm_attention.forward(c),
                false => c,
            });
            self.attention.forward(h, context, mask, bias)
        });
        self.residual(x, &self.norm_feed_forward, |h| self.feed_forward.forward(h))
    }

    /// `x + dropout(f(x))` with the block's LayerNorm placement.
    pub fn residual(
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

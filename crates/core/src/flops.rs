//! Model FLOPs: what a forward pass costs in arithmetic, counted the usual
//! way (Kaplan et al., 2020, §2.1; the PaLM paper's appendix B "model FLOPs
//! utilisation"): two FLOPs per multiply-add of every matrix product —
//! projections, attention scores and values, feed-forward, output head —
//! and nothing for element-wise work (softmax, LayerNorm, activations). A
//! training step is counted as three forward passes (backward = 2×forward).
//!
//! The counts are read from the layers' own weight shapes, so they follow
//! whatever sizes a config gives. Each architecture sums them in
//! [`crate::SegmentModel::forward_flops`].

use burn::nn::Linear;
use burn::prelude::*;

use crate::layers::{
    CrossAttentionBlock, FeedForward, MultiHeadAttention, RelativeMultiHeadAttention,
    RelativeTransformerBlock, TokenEmbedding, TransformerBlock,
};

/// A training step (forward, backward, optimizer) in forward passes.
pub const TRAIN_STEP_FORWARDS: u64 = 3;

/// `2·m·k·n`: one `[m, k] × [k, n]` product.
pub const fn matmul(m: usize, k: usize, n: usize) -> u64 {
    2 * m as u64 * k as u64 * n as u64
}

/// `rows` vectors through `linear`.
pub fn linear<B: Backend>(linear: &Linear<B>, rows: usize) -> u64 {
    let [d_in, d_out] = linear.weight.dims();
    matmul(rows, d_in, d_out)
}

/// `Q Kᵀ` and `softmax(·) V` for `queries` × `keys` over heads whose widths
/// add up to `inner`.
pub const fn scores_and_values(queries: usize, keys: usize, inner: usize) -> u64 {
    2 * matmul(queries, inner, keys)
}

impl<B: Backend> MultiHeadAttention<B> {
    /// `queries` attending to `keys` (all of which are projected).
    pub fn flops(&self, queries: usize, keys: usize) -> u64 {
        let inner = self.query.weight.dims()[1];
        linear(&self.query, queries)
            + linear(&self.key, keys)
            + linear(&self.value, keys)
            + scores_and_values(queries, keys, inner)
            + linear(&self.output, queries)
    }
}

impl<B: Backend> RelativeMultiHeadAttention<B> {
    /// Content attention plus Transformer-XL's position terms: the `keys`
    /// relative encodings projected, and the (B)+(D) scores against them.
    pub fn flops(&self, queries: usize, keys: usize) -> u64 {
        let inner = self.position.weight.dims()[1];
        self.projections.flops(queries, keys)
            + linear(&self.position, keys)
            + matmul(queries, inner, keys)
    }
}

impl<B: Backend> FeedForward<B> {
    pub fn flops(&self, tokens: usize) -> u64 {
        linear(&self.inner, tokens) + linear(&self.outer, tokens)
    }
}

impl<B: Backend> TransformerBlock<B> {
    /// `queries` tokens attending to `keys` positions (theirs included).
    pub fn flops(&self, queries: usize, keys: usize) -> u64 {
        self.attention.flops(queries, keys) + self.body.feed_forward.flops(queries)
    }
}

impl<B: Backend> RelativeTransformerBlock<B> {
    /// `queries` tokens attending to `keys` positions (cache and theirs).
    pub fn flops(&self, queries: usize, keys: usize) -> u64 {
        self.attention.flops(queries, keys) + self.body.feed_forward.flops(queries)
    }
}

impl<B: Backend> CrossAttentionBlock<B> {
    /// `tokens` attending to themselves, then to `context` positions.
    pub fn flops(&self, tokens: usize, context: usize) -> u64 {
        self.self_attention.flops(tokens, tokens)
            + self.cross_attention.flops(tokens, context)
            + self.body.feed_forward.flops(tokens)
    }
}

impl<B: Backend> TokenEmbedding<B> {
    /// The output head over `tokens` positions (tied or not: the lookup
    /// itself costs no FLOPs).
    pub fn logits_flops(&self, tokens: usize) -> u64 {
        let [vocab, d_model] = self.embedding.weight.dims();
        matmul(tokens, d_model, vocab)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::Module;

    use super::*;
    use crate::layers::TransformerBlockConfig;

    type B = Flex;

    /// For a block without biases the classic count holds: 2 FLOPs per
    /// weight per token, plus 4·q·k·inner for the attention itself
    /// (Kaplan et al.'s `2N + 2·n_ctx·d_attn` per layer, for both QKᵀ and AV).
    #[test]
    fn a_block_costs_two_flops_per_weight_per_token_plus_attention() {
        let device = Default::default();
        let block: TransformerBlock<B> = TransformerBlockConfig::new(32, 4, 96).init(&device);
        let (q, k) = (5, 7);
        // Weights of the products: every parameter but biases and LayerNorms.
        let a = &block.attention;
        let ff = &block.body.feed_forward;
        let biases: usize = [&a.query, &a.key, &a.value, &a.output, &ff.inner, &ff.outer]
            .iter()
            .filter_map(|l| l.bias.as_ref().map(|b| b.dims()[0]))
            .sum();
        let weights = block.num_params() - biases - 2 * 2 * 32;
        // Q, O and the feed-forward see q rows; K and V see k rows.
        let per_row_q = 2 * 32 * 32 + 2 * 32 * 96;
        let per_row_k = 2 * 32 * 32;
        assert_eq!(weights, per_row_q + per_row_k);
        let expected = 2 * (q * per_row_q + k * per_row_k) as u64 + 4 * (q * k * 32) as u64;
        assert_eq!(block.flops(q, k), expected);
    }
}

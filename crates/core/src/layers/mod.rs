//! Layers shared by every architecture; never copy them into a model crate.

pub mod attention;
pub mod block;
pub mod dropout;
pub mod embedding;
pub mod feed_forward;
pub mod positions;
pub mod relative;
pub mod sizes;
pub mod stack;

pub use attention::{
    MultiHeadAttention, MultiHeadAttentionConfig, attend, attention_reference, causal_mask,
    merge_heads, normal_init, rows, scaled_dot_product_attention, split_heads,
};
pub use block::{
    BlockBody, CrossAttentionBlock, RelativeTransformerBlock, TransformerBlock,
    TransformerBlockConfig,
};
pub use dropout::{Dropout, without_dropout};
pub use embedding::{TokenEmbedding, TokenEmbeddingConfig};
pub use feed_forward::{Activation, FeedForward, FeedForwardConfig};
pub use positions::{AbsolutePositions, PositionKind, sinusoids};
pub use relative::{
    RelativeBias, RelativeMultiHeadAttention, rel_shift, relative_sinusoids,
    relative_sinusoids_from,
};
pub use sizes::TransformerSizes;
pub use stack::{
    absolute_stack, absolute_stack_cached, causal_stack_partial, relative_layers,
    relative_layers_cached, relative_stack,
};

//! Incremental reading of a segment, one token (or a few) at a time: each
//! attention layer keeps the keys and values of every position it has read
//! (the memory that entered the segment, and the segment's tokens so far),
//! so a new token costs one token's forward pass instead of a re-read of the
//! partial segment (the key-value cache of autoregressive decoding; for
//! Transformer-XL, Dai et al., 2019, §3.3: "the representations from the
//! previous segments can be reused ... during evaluation").
//!
//! The state lives outside the modules, as the memory does: a model that
//! keeps one implements [`crate::SegmentModel::forward_partial`]; the
//! segment stream (memlab-train's `SegmentStream`) carries it between calls
//! and drops it when the segment is complete (the memory for the next
//! segment still comes from `forward_segment` over the whole segment).

use burn::prelude::*;

/// The keys and values one attention layer has computed for every position
/// read so far, in that attention's own layout (`[batch, heads, keys,
/// d_head]` for [`crate::layers::MultiHeadAttention`], head-major `[heads,
/// batch, keys, d_head]` for the relative attention), and for the relative
/// attention the projected position sinusoids `W_R R` `[heads, d_head,
/// keys]` for the distances `keys − 1 … 0`.
#[derive(Debug, Clone)]
pub struct KeyValues<B: Backend> {
    pub keys: Tensor<B, 4>,
    pub values: Tensor<B, 4>,
    pub positions: Option<Tensor<B, 3>>,
}

impl<B: Backend> KeyValues<B> {
    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.dims()[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `keys` keys and values, and the projected sinusoids of
    /// their distances (`keys − 1 … 0`, the last columns): what a layer
    /// keeps of a read that ran past the positions read so far.
    pub fn truncated(self, keys: usize) -> Self {
        let held = self.len();
        Self {
            keys: self.keys.narrow(2, 0, keys),
            values: self.values.narrow(2, 0, keys),
            positions: self.positions.map(|r| r.narrow(2, held - keys, keys)),
        }
    }

    /// These keys and values followed by `keys` and `values` (the same
    /// layout), along the key axis.
    pub fn extended(past: Option<Self>, keys: Tensor<B, 4>, values: Tensor<B, 4>) -> Self {
        match past {
            Some(past) => Self {
                keys: Tensor::cat(vec![past.keys, keys], 2),
                values: Tensor::cat(vec![past.values, values], 2),
                positions: past.positions,
            },
            None => Self {
                keys,
                values,
                positions: None,
            },
        }
    }
}

/// A partly read segment: the number of its tokens read so far, per
/// attention layer the [`KeyValues`] of every position read (empty before the
/// segment's first token), and what else the model computes once per segment
/// (the ∞-former's signals after the segment's write).
#[derive(Debug, Clone)]
pub struct PartialSegment<B: Backend> {
    /// Tokens of the segment read so far.
    pub tokens: usize,
    /// One entry per attention layer, in the model's layer order (a block
    /// with self- and cross-attention has two).
    pub layers: Vec<KeyValues<B>>,
    /// The model's per-segment tensors, in its own order (empty for most).
    pub extra: Vec<Option<Tensor<B, 3>>>,
}

impl<B: Backend> Default for PartialSegment<B> {
    fn default() -> Self {
        Self::start()
    }
}

impl<B: Backend> PartialSegment<B> {
    /// Nothing read yet.
    pub fn start() -> Self {
        Self {
            tokens: 0,
            layers: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The same segment once `n` more tokens are read, with `layers` the
    /// grown keys and values (`extra` kept).
    pub fn advanced(self, n: usize, layers: Vec<KeyValues<B>>) -> Self {
        Self {
            tokens: self.tokens + n,
            layers,
            extra: self.extra,
        }
    }

    /// Whether no token of the segment has been read.
    pub fn is_start(&self) -> bool {
        self.tokens == 0
    }

    /// Keys held per layer (0 before the first token).
    pub fn keys(&self) -> usize {
        self.layers.first().map_or(0, KeyValues::len)
    }

    /// Layer `n`'s keys and values, `None` before the segment's first token.
    pub fn layer(&self, n: usize) -> Option<KeyValues<B>> {
        self.layers.get(n).cloned()
    }
}

//! Stacks of blocks, as the models run them: standard blocks under one
//! mask ([`absolute_stack`]), and relative blocks over a layer cache
//! ([`relative_stack`], Dai et al., 2019, §3.2–3.3).

use burn::nn::LayerNorm;
use burn::prelude::*;

use crate::cache::LayerCache;
use crate::layers::causal_mask;
use crate::layers::relative::relative_sinusoids_from;
use crate::layers::{
    Dropout, RelativeBias, RelativeTransformerBlock, TransformerBlock, relative_sinusoids,
};
use crate::partial::{KeyValues, PartialSegment};

/// Runs `h` through a stack of standard blocks under one `mask`, then the
/// final LayerNorm of a pre-LN stack when there is one: the body of the
/// baseline and of RMT's Transformer backbone ([`relative_stack`] is its
/// relative twin).
pub fn absolute_stack<B: Backend>(
    blocks: &[TransformerBlock<B>],
    final_norm: Option<&LayerNorm<B>>,
    h: Tensor<B, 3>,
    mask: Tensor<B, 4, Bool>,
) -> Tensor<B, 3> {
    let h = blocks.iter().fold(h, |h, block| {
        block.forward(h, None, Some(mask.clone()), None)
    });
    match final_norm {
        Some(norm) => norm.forward(h),
        None => h,
    }
}

/// [`absolute_stack`] for positions that follow those whose keys and values
/// `past` holds, one entry per block (empty: the first positions), under
/// `mask` `[.., q, past + q]` (incremental reading, [`crate::partial`]).
/// Returns the output rows and every block's grown keys and values.
pub fn absolute_stack_cached<B: Backend>(
    blocks: &[TransformerBlock<B>],
    final_norm: Option<&LayerNorm<B>>,
    h: Tensor<B, 3>,
    past: &[KeyValues<B>],
    mask: Option<Tensor<B, 4, Bool>>,
) -> (Tensor<B, 3>, Vec<KeyValues<B>>) {
    let mut h = h;
    let mut next = Vec::with_capacity(blocks.len());
    for (n, block) in blocks.iter().enumerate() {
        let (out, kv) = block.forward_cached(h, past.get(n).cloned(), mask.clone());
        h = out;
        next.push(kv);
    }
    let h = match final_norm {
        Some(norm) => norm.forward(h),
        None => h,
    };
    (h, next)
}

/// A causal stack of standard blocks read incrementally (the baseline,
/// GPT-2): `x` `[batch, n, d]`, embedded with its positions, are the `n`
/// tokens after `partial`'s; each sees every token before it and itself.
/// Returns the output rows (after the final LayerNorm when given) and the
/// grown `partial`.
pub fn causal_stack_partial<B: Backend>(
    blocks: &[TransformerBlock<B>],
    final_norm: Option<&LayerNorm<B>>,
    x: Tensor<B, 3>,
    partial: PartialSegment<B>,
) -> (Tensor<B, 3>, PartialSegment<B>) {
    let n = x.dims()[1];
    // One new token sees every key: no mask to add.
    let mask = (n > 1).then(|| causal_mask::<B>(n, partial.keys(), &x.device()));
    let (h, layers) = absolute_stack_cached(blocks, final_norm, x, &partial.layers, mask);
    (h, partial.advanced(n, layers))
}

/// Runs `h` `[batch, q, d]` through a stack of relative blocks, layer `n`
/// attending over `[cache_n ; h]`; returns the output and the updated cache
/// (each layer's input appended, the last `mem_len` kept, detached).
/// `biases` holds one `(u, v)` pair shared by every layer, or one per layer.
/// `mask` is `[.., q, m + q]` for `m` cached positions; `pos_dropout` is
/// applied to the relative sinusoids (Transformer-XL drops them too).
#[allow(clippy::too_many_arguments)]
pub fn relative_stack<B: Backend>(
    layers: &[RelativeTransformerBlock<B>],
    biases: &[RelativeBias<B>],
    h: Tensor<B, 3>,
    cache: &LayerCache<B>,
    mask: Tensor<B, 4, Bool>,
    mem_len: usize,
    clamp_len: Option<usize>,
    pos_dropout: &Dropout,
) -> (Tensor<B, 3>, LayerCache<B>) {
    let (h, inputs) = relative_layers(
        layers,
        biases,
        h,
        cache,
        mask,
        clamp_len,
        pos_dropout,
        |_, _| None,
    );
    (h, cache.update(inputs, mem_len))
}

/// The layer loop of [`relative_stack`] without the cache update: returns the
/// output and each layer's input. `extra(n, queries)` may add a second
/// attention's output to layer `n`'s (see
/// [`RelativeTransformerBlock::forward_with`]).
#[allow(clippy::too_many_arguments)]
pub fn relative_layers<B: Backend>(
    layers: &[RelativeTransformerBlock<B>],
    biases: &[RelativeBias<B>],
    h: Tensor<B, 3>,
    cache: &LayerCache<B>,
    mask: Tensor<B, 4, Bool>,
    clamp_len: Option<usize>,
    pos_dropout: &Dropout,
    mut extra: impl FnMut(usize, Tensor<B, 4>) -> Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
    assert!(
        cache.layers.is_empty() || cache.layers.len() == layers.len(),
        "the cache holds {} layers for a {}-layer stack",
        cache.layers.len(),
        layers.len()
    );
    let [_, q, d_model] = h.dims();
    let pos = pos_dropout.forward(relative_sinusoids::<B>(
        cache.len() + q,
        d_model,
        clamp_len,
        &h.device(),
    ));
    let mut h = h;
    let mut inputs = Vec::with_capacity(layers.len());
    for (n, layer) in layers.iter().enumerate() {
        inputs.push(h.clone());
        let bias = &biases[n.min(biases.len() - 1)];
        h = layer.forward_with(
            h,
            cache.layers.get(n).cloned(),
            pos.clone(),
            bias,
            Some(mask.clone()),
            |queries| extra(n, queries),
        );
    }
    (h, inputs)
}

/// [`relative_layers`] for positions that follow those whose keys, values
/// and projected sinusoids `past` holds, one entry per layer (incremental
/// reading, [`crate::partial`]). At the first call `past` is empty and
/// `cache`'s rows are projected with `h`'s; later calls project `h` alone
/// and `cache` is not read. `mask` is `[.., q, keys]` over every key held
/// once `h` is read. Returns the output and every layer's keys and values.
#[allow(clippy::too_many_arguments)]
pub fn relative_layers_cached<B: Backend>(
    layers: &[RelativeTransformerBlock<B>],
    biases: &[RelativeBias<B>],
    h: Tensor<B, 3>,
    cache: &LayerCache<B>,
    past: &[KeyValues<B>],
    mask: Option<Tensor<B, 4, Bool>>,
    clamp_len: Option<usize>,
    mut extra: impl FnMut(usize, Tensor<B, 4>) -> Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Vec<KeyValues<B>>) {
    let [_, q, d_model] = h.dims();
    let first = past.is_empty();
    let held = past.first().map_or(0, KeyValues::len);
    let keys = if first { cache.len() + q } else { held + q };
    let new_pos = relative_sinusoids_from::<B>(keys, held, d_model, clamp_len, &h.device());
    let mut h = h;
    let mut next = Vec::with_capacity(layers.len());
    for (n, layer) in layers.iter().enumerate() {
        let bias = &biases[n.min(biases.len() - 1)];
        let memory = if first {
            cache.layers.get(n).cloned()
        } else {
            None
        };
        let (out, kv) = layer.forward_cached(
            h,
            memory,
            new_pos.clone(),
            past.get(n).cloned(),
            bias,
            mask.clone(),
            |queries| extra(n, queries),
        );
        h = out;
        next.push(kv);
    }
    (h, next)
}

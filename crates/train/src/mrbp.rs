//! Memory Replay Back-Propagation (Wu et al., 2022, "Memformer", §3.3 and
//! Algorithm 1), for any model whose memory flattens to tensors
//! ([`MemoryState::to_parts`]).
//!
//! Full BPTT through a rollout of T segments holds every segment's
//! activations until the backward pass. MRBP holds one segment's at a time:
//!
//! 1. a forward pass over the rollout without autodiff (the module's inner,
//!    non-recording backend), keeping only the memory entering each segment;
//! 2. a backward sweep from the last segment to the first: recompute
//!    segment t from its stored memory (made a gradient-requiring leaf),
//!    back-propagate its loss plus `⟨memory out, ∂L/∂memory out⟩` (the
//!    gradient the later segments sent back), accumulate the parameter
//!    gradients, and pass the gradient of the input memory on to t − 1.
//!
//! The result equals full BPTT's gradients (tested to 1e-4 relative on RMT
//! and Memformer) as long as the model computes the same memory with and
//! without autodiff and recomputation reproduces the forward pass: no
//! dropout, no evaluation-only options (Transformer-XL's `eval_mem_len`).

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::runner::{Tallies, segment_bounds, token_nll_and_correct};
use memlab_core::data::SequenceBatch;
use memlab_core::model::{MemoryState, SegmentModel};

/// What [`memory_replay_backprop`] returns.
pub struct Replay<B: Backend, M> {
    /// The parameter gradients of the rollout's loss, as full BPTT's.
    pub grads: GradientsParams,
    /// The loss (as `run_segments` defines it: mean masked cross-entropy
    /// plus the mean auxiliary loss).
    pub loss: f64,
    /// The memory after the last segment (detached).
    pub memory: M,
    /// The rollout's figures, as `run_segments` tallies them.
    pub tallies: Tallies<B>,
}

/// The memory type of `M`'s inner (non-recording) module.
type InnerMemory<B, M> = <<M as AutodiffModule<B>>::InnerModule as SegmentModel<
    <B as AutodiffBackend>::InnerBackend,
>>::Memory;

/// Gradients of the rollout of `model` over `batch` from `memory`, with
/// full BPTT's result and one segment's activations alive at a time.
pub fn memory_replay_backprop<B, M>(
    model: &M,
    batch: &SequenceBatch<B>,
    segment_len: usize,
    memory: M::Memory,
) -> Replay<B, M::Memory>
where
    B: AutodiffBackend,
    M: SegmentModel<B> + AutodiffModule<B>,
    M::InnerModule: SegmentModel<B::InnerBackend>,
{
    let [batch_size, len] = batch.inputs.dims();
    let bounds = segment_bounds(len, segment_len);
    let segments = bounds.len();
    let total_tokens = batch.loss_tokens();
    let slice = |t: usize| {
        let (start, end) = bounds[t];
        SegmentSlice {
            tokens: batch.inputs.clone().slice([0..batch_size, start..end]),
            targets: batch.targets.clone().slice([0..batch_size, start..end]),
            mask: batch.mask.clone().slice([0..batch_size, start..end]),
        }
    };

    // 1. Forward without autodiff, keeping the memory entering each segment.
    let (entering, last) = entering_memories::<B, M>(model, &memory, segments, |t| slice(t).tokens);

    // 2. Backward sweep, last segment first.
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut upstream: Option<Vec<Tensor<B, 3>>> = None;
    let mut loss_total = 0.0;
    let mut per_token = Vec::with_capacity(segments);
    let mut aux_total: Option<Tensor<B, 1>> = None;
    let rollout = Rollout {
        batch,
        total_tokens: &total_tokens,
        segments,
    };
    for t in (0..segments).rev() {
        // Segment 0 starts from the caller's memory as it is, so gradients
        // reach a learned initial memory; later ones from leaves.
        let (start, leaves) = if t == 0 {
            (memory.clone(), None)
        } else {
            let (start, leaves) = leaf_memory::<B, M>(&entering[t]);
            (start, Some(leaves))
        };
        let replayed = replay_segment(model, &rollout, slice(t), start, leaves, upstream.take());
        loss_total += replayed.loss;
        per_token.push(replayed.tallies);
        if let Some(aux) = replayed.aux {
            aux_total = Some(match aux_total {
                Some(sum) => sum + aux,
                None => aux,
            });
        }
        upstream = replayed.upstream;
        accumulator.accumulate(model, replayed.grads);
    }
    let memory = M::Memory::from_parts(last.to_parts().map(Tensor::from_inner))
        .expect("a memory rebuilds from its own parts");
    per_token.reverse();
    Replay {
        grads: accumulator.grads(),
        loss: loss_total,
        memory,
        tallies: Tallies::new(per_token, aux_total),
    }
}

/// One segment's tokens, targets and loss mask.
struct SegmentSlice<B: Backend> {
    tokens: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
}

/// Step 1: the rollout on the inner module (no graph is recorded), keeping
/// only the memory entering each of the `segments` segments (`tokens(t)`:
/// segment t's tokens), and the memory after the last.
fn entering_memories<B, M>(
    model: &M,
    memory: &M::Memory,
    segments: usize,
    tokens: impl Fn(usize) -> Tensor<B, 2, Int>,
) -> (Vec<InnerMemory<B, M>>, InnerMemory<B, M>)
where
    B: AutodiffBackend,
    M: SegmentModel<B> + AutodiffModule<B>,
    M::InnerModule: SegmentModel<B::InnerBackend>,
{
    let inner = model.valid();
    let mut entering = Vec::with_capacity(segments);
    let mut current = InnerMemory::<B, M>::from_parts(memory.to_parts().map(|t| t.inner()))
        .expect("a memory rebuilds from its own parts");
    for t in 0..segments {
        entering.push(current.clone());
        current = inner.forward_segment(tokens(t).inner(), current).memory;
    }
    (entering, current)
}

/// A memory holding `entering`'s values in gradient-requiring leaves, and
/// the leaves, whose gradients go back to the segment before.
fn leaf_memory<B, M>(entering: &InnerMemory<B, M>) -> (M::Memory, Vec<Tensor<B, 3>>)
where
    B: AutodiffBackend,
    M: SegmentModel<B> + AutodiffModule<B>,
    M::InnerModule: SegmentModel<B::InnerBackend>,
{
    let parts = entering
        .to_parts()
        .map(|x| Tensor::from_inner(x).require_grad());
    let leaves = parts.tensors.clone();
    let memory = M::Memory::from_parts(parts).expect("a memory rebuilds from its own parts");
    (memory, leaves)
}

/// What every replayed segment shares: the batch (its auxiliary loss
/// weight), the loss tokens of the whole rollout, and its segment count.
struct Rollout<'a, B: Backend> {
    batch: &'a SequenceBatch<B>,
    total_tokens: &'a Tensor<B, 1>,
    segments: usize,
}

/// What replaying one segment gives.
struct Replayed<B: AutodiffBackend> {
    /// The segment's share of the loss.
    loss: f64,
    /// Its tallies ([`Tallies::segment`]).
    tallies: Tensor<B, 3>,
    /// Its auxiliary loss over the segments (detached).
    aux: Option<Tensor<B, 1>>,
    /// The gradient of the loss with respect to the segment's input memory
    /// (`None` for segment 0).
    upstream: Option<Vec<Tensor<B, 3>>>,
    grads: GradientsParams,
}

/// Step 2 for one segment: recompute it from `start`, back-propagate its
/// loss plus `⟨memory out, upstream⟩` (the gradient the later segments
/// sent back), and take the gradient of its input memory at `leaves` (the
/// tensors `start` was built of; `None` for segment 0).
fn replay_segment<B, M>(
    model: &M,
    rollout: &Rollout<'_, B>,
    slice: SegmentSlice<B>,
    start: M::Memory,
    leaves: Option<Vec<Tensor<B, 3>>>,
    upstream: Option<Vec<Tensor<B, 3>>>,
) -> Replayed<B>
where
    B: AutodiffBackend,
    M: SegmentModel<B> + AutodiffModule<B>,
{
    let output = model.forward_segment(slice.tokens, start);
    let (nll, correct) = token_nll_and_correct(output.logits, slice.targets);
    let mut loss = (nll.clone() * slice.mask.clone()).sum() / rollout.total_tokens.clone();
    let tallies = Tallies::segment(nll, correct, slice.mask);
    let mut aux_share = None;
    if let Some(aux) = output.aux_loss {
        let aux = aux / rollout.segments as f64;
        aux_share = Some(aux.clone().detach());
        loss = loss + aux * rollout.batch.aux_weight();
    }
    let loss_value = loss.clone().into_scalar().elem::<f64>();
    let mut objective = loss;
    if let Some(upstream) = upstream {
        let outputs = output.memory.to_parts().tensors;
        assert_eq!(outputs.len(), upstream.len(), "memory layout changed");
        for (out, grad) in outputs.into_iter().zip(upstream) {
            objective = objective + (out * grad).sum();
        }
    }
    let grads = objective.backward();
    let upstream = leaves.map(|leaves| {
        leaves
            .iter()
            .map(|leaf| match leaf.grad(&grads) {
                Some(g) => Tensor::from_inner(g),
                None => leaf.zeros_like().detach(),
            })
            .collect()
    });
    Replayed {
        loss: loss_value,
        tallies,
        aux: aux_share,
        upstream,
        grads: GradientsParams::from_grads(grads, model),
    }
}

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

use crate::data::SequenceBatch;
use crate::model::{MemoryState, SegmentModel};
use crate::runner::{Tallies, segment_bounds, token_nll_and_correct};

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
        (
            batch.inputs.clone().slice([0..batch_size, start..end]),
            batch.targets.clone().slice([0..batch_size, start..end]),
            batch.mask.clone().slice([0..batch_size, start..end]),
        )
    };

    // 1. Forward without autodiff (the inner module: no graph is recorded),
    //    keeping only the memory entering each segment.
    let inner = model.valid();
    type InnerMemory<B, M> = <<M as AutodiffModule<B>>::InnerModule as SegmentModel<
        <B as AutodiffBackend>::InnerBackend,
    >>::Memory;
    let to_inner = |m: &M::Memory| {
        InnerMemory::<B, M>::from_parts(m.to_parts().map(|t| t.inner()))
            .expect("a memory rebuilds from its own parts")
    };
    let mut entering = Vec::with_capacity(segments);
    let mut current = to_inner(&memory);
    for t in 0..segments {
        entering.push(current.clone());
        current = inner.forward_segment(slice(t).0.inner(), current).memory;
    }

    // 2. Backward sweep, last segment first.
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut upstream: Option<Vec<Tensor<B, 3>>> = None;
    let mut loss_total = 0.0;
    let mut per_token = Vec::with_capacity(segments);
    let mut aux_total: Option<Tensor<B, 1>> = None;
    for t in (0..segments).rev() {
        let (tokens, targets, mask) = slice(t);
        // Segment 0 starts from the caller's memory as it is, so gradients
        // reach a learned initial memory; later ones from a leaf.
        let (start, leaves) = if t == 0 {
            (memory.clone(), None)
        } else {
            let parts = entering[t]
                .to_parts()
                .map(|x| Tensor::from_inner(x).require_grad());
            let leaves = parts.tensors.clone();
            let start = M::Memory::from_parts(parts).expect("a memory rebuilds from its own parts");
            (start, Some(leaves))
        };
        let output = model.forward_segment(tokens, start);
        let (nll, correct) = token_nll_and_correct(output.logits, targets);
        let mut loss = (nll.clone() * mask.clone()).sum() / total_tokens.clone();
        per_token.push(Tallies::segment(nll, correct, mask));
        if let Some(aux) = output.aux_loss {
            let aux = aux / segments as f64;
            aux_total = Some(match aux_total {
                Some(sum) => sum + aux.clone().detach(),
                None => aux.clone().detach(),
            });
            loss = loss + aux * batch.aux_weight();
        }
        loss_total += loss.clone().into_scalar().elem::<f64>();
        let mut objective = loss;
        if let Some(upstream) = upstream.take() {
            let outputs = output.memory.to_parts().tensors;
            assert_eq!(outputs.len(), upstream.len(), "memory layout changed");
            for (out, grad) in outputs.into_iter().zip(upstream) {
                objective = objective + (out * grad).sum();
            }
        }
        let grads = objective.backward();
        upstream = leaves.map(|leaves| {
            leaves
                .iter()
                .map(|leaf| match leaf.grad(&grads) {
                    Some(g) => Tensor::from_inner(g),
                    None => leaf.zeros_like().detach(),
                })
                .collect()
        });
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    let memory = M::Memory::from_parts(current.to_parts().map(Tensor::from_inner))
        .expect("a memory rebuilds from its own parts");
    per_token.reverse();
    Replay {
        grads: accumulator.grads(),
        loss: loss_total,
        memory,
        tallies: Tallies::new(per_token, aux_total),
    }
}

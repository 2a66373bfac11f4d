//! The segment runner: splits a long batch `[batch, len]` into segments,
//! feeds them to a [`SegmentModel`] in order while carrying its memory,
//! truncates back-propagation through memory at the configured BPTT depth,
//! and computes masked cross-entropy and accuracy for the whole rollout and
//! for each segment.
//!
//! The loss stays on the device; figures are read back in one transfer by
//! [`Rollout::figures`], so a training step synchronises at most once.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::Serialize;

use crate::config::BpttDepth;
use crate::data::SequenceBatch;
use crate::model::{MemoryState, SegmentModel};

/// Segment boundaries `[start, end)` of a sequence of `len` tokens; the last
/// segment may be shorter.
pub fn segment_bounds(len: usize, segment_len: usize) -> Vec<(usize, usize)> {
    assert!(segment_len > 0, "segment length must be at least 1");
    (0..len)
        .step_by(segment_len)
        .map(|start| (start, (start + segment_len).min(len)))
        .collect()
}

/// The logits `[batch, segment, vocab]` of each segment of `inputs`
/// (`[batch, len]`) read in segments of `segment_len`, memory carried from
/// the model's initial one: inference, no loss.
pub fn segment_logits<B: Backend, M: SegmentModel<B>>(
    model: &M,
    inputs: Tensor<B, 2, Int>,
    segment_len: usize,
) -> Vec<Tensor<B, 3>> {
    let [batch, len] = inputs.dims();
    let mut memory = model.init_memory(batch, &inputs.device());
    let mut logits = Vec::new();
    for (start, end) in segment_bounds(len, segment_len) {
        let out = model.forward_segment(inputs.clone().narrow(1, start, end - start), memory);
        memory = out.memory;
        logits.push(out.logits);
    }
    logits
}

/// Result of running a model over a batch.
#[derive(Debug, Clone)]
pub struct Rollout<B: Backend, M> {
    /// Mean cross-entropy over the masked positions of every segment, plus
    /// the mean of the models' auxiliary losses. `[1]`, differentiable.
    pub loss: Tensor<B, 1>,
    /// The memory after the last segment.
    pub memory: M,
    /// Per segment, `[3, batch, segment]`: masked token NLL, masked
    /// correctness (0/1) and the mask, detached.
    per_token: Vec<Tensor<B, 3>>,
    aux: Option<Tensor<B, 1>>,
}

/// Figures of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SegmentFigures {
    pub index: usize,
    /// Masked tokens in this segment (over the batch).
    pub tokens: f64,
    /// Mean cross-entropy over them (0 when none).
    pub loss: f64,
    /// Accuracy over them (0 when none).
    pub accuracy: f64,
}

/// Figures of a rollout, read back from the device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutFigures {
    /// Mean cross-entropy over every masked token (without auxiliary losses).
    pub loss: f64,
    /// Token accuracy over every masked token.
    pub accuracy: f64,
    /// Fraction of sequences whose masked tokens are all right.
    pub exact_match: f64,
    /// Masked tokens.
    pub tokens: f64,
    /// Sequences.
    pub sequences: usize,
    /// Mean auxiliary loss (0 when the model has none).
    pub aux_loss: f64,
    pub segments: Vec<SegmentFigures>,
}

impl<B: Backend, M> Rollout<B, M> {
    /// Reads the figures back in one device-to-host transfer and sums them on
    /// the host in a fixed order (f64), so that the same run always reports
    /// the same figures whatever order a backend reduces in.
    pub fn figures(&self) -> RolloutFigures {
        let [_, batch, _] = self.per_token[0].dims();
        let lens: Vec<usize> = self.per_token.iter().map(|t| t.dims()[2]).collect();
        let len: usize = lens.iter().sum();
        let mut parts = vec![Tensor::cat(self.per_token.clone(), 2).reshape([3 * batch * len])];
        if let Some(aux) = &self.aux {
            parts.push(aux.clone().detach());
        }
        let values: Vec<f32> = Tensor::cat(parts, 0)
            .into_data()
            .to_vec()
            .expect("float data");
        let (nll, rest) = values.split_at(batch * len);
        let (correct, rest) = rest.split_at(batch * len);
        let (mask, aux) = rest.split_at(batch * len);

        let mut segments = Vec::with_capacity(lens.len());
        let (mut loss_sum, mut correct_sum, mut tokens) = (0.0f64, 0.0f64, 0.0f64);
        let mut row_ok = vec![true; batch];
        let mut start = 0;
        for (index, &seg_len) in lens.iter().enumerate() {
            let (mut l, mut c, mut t) = (0.0f64, 0.0f64, 0.0f64);
            for (b, ok) in row_ok.iter_mut().enumerate() {
                for i in b * len + start..b * len + start + seg_len {
                    if mask[i] > 0.0 {
                        l += nll[i] as f64;
                        c += correct[i] as f64;
                        t += 1.0;
                        *ok &= correct[i] > 0.0;
                    }
                }
            }
            let per = |x: f64| if t > 0.0 { x / t } else { 0.0 };
            segments.push(SegmentFigures {
                index,
                tokens: t,
                loss: per(l),
                accuracy: per(c),
            });
            loss_sum += l;
            correct_sum += c;
            tokens += t;
            start += seg_len;
        }
        let exact = row_ok.iter().filter(|&&ok| ok).count();
        let per = |x: f64| if tokens > 0.0 { x / tokens } else { 0.0 };
        RolloutFigures {
            loss: per(loss_sum),
            accuracy: per(correct_sum),
            exact_match: exact as f64 / batch as f64,
            tokens,
            sequences: batch,
            aux_loss: aux.first().copied().unwrap_or(0.0) as f64,
            segments,
        }
    }
}

/// Runs `model` over `batch` in segments of `segment_len` tokens, starting
/// from `memory` (the model's initial memory, or memory carried over from a
/// previous batch, which the caller should detach).
pub fn run_segments<B: Backend, M: SegmentModel<B>>(
    model: &M,
    batch: &SequenceBatch<B>,
    segment_len: usize,
    bptt: BpttDepth,
    memory: M::Memory,
) -> Rollout<B, M::Memory> {
    let [batch_size, len] = batch.inputs.dims();
    let bounds = segment_bounds(len, segment_len);

    let mut memory = memory;
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    let mut aux_sum: Option<Tensor<B, 1>> = None;
    let mut per_token = Vec::with_capacity(bounds.len());

    for (index, &(start, end)) in bounds.iter().enumerate() {
        if bptt.detach_before(index) {
            memory = memory.detach();
        }
        let tokens = batch.inputs.clone().slice([0..batch_size, start..end]);
        let targets = batch.targets.clone().slice([0..batch_size, start..end]);
        let mask = batch.mask.clone().slice([0..batch_size, start..end]);

        let output = model.forward_segment(tokens, memory);
        memory = output.memory;
        if let Some(aux) = output.aux_loss {
            aux_sum = Some(match aux_sum {
                Some(sum) => sum + aux,
                None => aux,
            });
        }

        let (nll, correct) = token_nll_and_correct(output.logits, targets);
        let masked_nll = nll * mask.clone();
        per_token.push(Tensor::stack::<3>(
            vec![masked_nll.clone().detach(), correct * mask.clone(), mask],
            0,
        ));
        let seg_loss = masked_nll.sum();
        loss_sum = Some(match loss_sum {
            Some(sum) => sum + seg_loss,
            None => seg_loss,
        });
    }

    let total_tokens = batch.mask.clone().sum().clamp_min(1.0);
    let mut loss = loss_sum.expect("a batch has at least one segment") / total_tokens;
    let aux = aux_sum.map(|a| a / bounds.len() as f64);
    if let Some(aux) = &aux {
        loss = loss + aux.clone();
    }
    Rollout {
        loss,
        memory,
        per_token,
        aux,
    }
}

/// Per-token negative log-likelihood `[batch, len]` and whether the argmax
/// equals the target (as 0/1 floats) for logits `[batch, len, vocab]`.
pub fn token_nll_and_correct<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [batch, len, _] = logits.dims();
    let predicted = logits.clone().detach().argmax(2).reshape([batch, len]);
    let correct = predicted.equal(targets.clone()).float();
    let log_probs = log_softmax(logits, 2);
    let nll = -log_probs
        .gather(2, targets.reshape([batch, len, 1]))
        .reshape([batch, len]);
    (nll, correct)
}

/// Runs batches one after the other, carrying (detached) memory from each
/// batch into the next: streaming evaluation for language modelling, where
/// batch `i+1` continues the text of batch `i` in every row.
pub fn run_streaming<B, M, I>(
    model: &M,
    batches: I,
    segment_len: usize,
    mut on_batch: impl FnMut(RolloutFigures),
) -> Option<M::Memory>
where
    B: Backend,
    M: SegmentModel<B>,
    I: IntoIterator<Item = SequenceBatch<B>>,
{
    let mut memory: Option<M::Memory> = None;
    for batch in batches {
        let start = match memory.take() {
            Some(m) => m.detach(),
            None => model.init_memory(batch.inputs.dims()[0], &batch.inputs.device()),
        };
        let rollout = run_segments(model, &batch, segment_len, BpttDepth::Full, start);
        on_batch(rollout.figures());
        memory = Some(rollout.memory);
    }
    memory
}

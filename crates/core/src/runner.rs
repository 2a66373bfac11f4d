//! The segment runner: splits a long batch `[batch, len]` into segments,
//! feeds them to a [`SegmentModel`] in order while carrying its memory,
//! truncates back-propagation through memory at the configured BPTT depth,
//! and computes masked cross-entropy and accuracy for the whole rollout and
//! for each segment.
//!
//! Everything stays on the device; figures are read back in one transfer by
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

/// On-device sums of one segment.
#[derive(Debug, Clone)]
struct SegmentSums<B: Backend> {
    /// Summed masked cross-entropy, `[1]` (detached).
    loss: Tensor<B, 1>,
    /// Correctly predicted masked tokens, `[1]`.
    correct: Tensor<B, 1>,
    /// Masked tokens, `[1]`.
    tokens: Tensor<B, 1>,
}

/// Result of running a model over a batch.
#[derive(Debug, Clone)]
pub struct Rollout<B: Backend, M> {
    /// Mean cross-entropy over the masked positions of every segment, plus
    /// the mean of the models' auxiliary losses. `[1]`, differentiable.
    pub loss: Tensor<B, 1>,
    /// The memory after the last segment.
    pub memory: M,
    segments: Vec<SegmentSums<B>>,
    /// Per sequence: masked tokens predicted correctly and masked tokens `[batch]`.
    sequence_correct: Tensor<B, 1>,
    sequence_tokens: Tensor<B, 1>,
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
    /// Reads the figures back (one device-to-host transfer).
    pub fn figures(&self) -> RolloutFigures {
        let n = self.segments.len();
        let mut parts: Vec<Tensor<B, 1>> = Vec::with_capacity(3 * n + 1);
        for s in &self.segments {
            parts.push(s.loss.clone());
            parts.push(s.correct.clone());
            parts.push(s.tokens.clone());
        }
        parts.push(
            self.aux
                .clone()
                .map(|a| a.detach())
                .unwrap_or_else(|| Tensor::zeros([1], &self.loss.device())),
        );
        let exact = self
            .sequence_correct
            .clone()
            .equal(self.sequence_tokens.clone())
            .float();
        let sequences = exact.dims()[0];
        parts.push(exact.sum().reshape([1]));
        let values: Vec<f64> = Tensor::cat(parts, 0)
            .into_data()
            .iter::<f64>()
            .collect();

        let mut segments = Vec::with_capacity(n);
        let (mut loss, mut correct, mut tokens) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let (l, c, t) = (values[3 * i], values[3 * i + 1], values[3 * i + 2]);
            loss += l;
            correct += c;
            tokens += t;
            let per = |x: f64| if t > 0.0 { x / t } else { 0.0 };
            segments.push(SegmentFigures {
                index: i,
                tokens: t,
                loss: per(l),
                accuracy: per(c),
            });
        }
        let per = |x: f64| if tokens > 0.0 { x / tokens } else { 0.0 };
        RolloutFigures {
            loss: per(loss),
            accuracy: per(correct),
            exact_match: values[3 * n + 1] / sequences.max(1) as f64,
            tokens,
            sequences,
            aux_loss: values[3 * n],
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
    let device = batch.inputs.device();
    let bounds = segment_bounds(len, segment_len);

    let mut memory = memory;
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    let mut aux_sum: Option<Tensor<B, 1>> = None;
    let mut segments = Vec::with_capacity(bounds.len());
    let mut sequence_correct = Tensor::<B, 1>::zeros([batch_size], &device);
    let mut sequence_tokens = Tensor::<B, 1>::zeros([batch_size], &device);

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
        let seg_loss = (nll * mask.clone()).sum();
        let correct = correct * mask.clone();

        sequence_correct = sequence_correct + correct.clone().sum_dim(1).reshape([batch_size]);
        sequence_tokens = sequence_tokens + mask.clone().sum_dim(1).reshape([batch_size]);
        segments.push(SegmentSums {
            loss: seg_loss.clone().detach(),
            correct: correct.sum(),
            tokens: mask.sum(),
        });
        loss_sum = Some(match loss_sum {
            Some(sum) => sum + seg_loss,
            None => seg_loss,
        });
    }

    let total_tokens = sequence_tokens.clone().sum().clamp_min(1.0);
    let mut loss = loss_sum.expect("a batch has at least one segment") / total_tokens;
    let aux = aux_sum.map(|a| a / bounds.len() as f64);
    if let Some(aux) = &aux {
        loss = loss + aux.clone();
    }
    Rollout {
        loss,
        memory,
        segments,
        sequence_correct,
        sequence_tokens,
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

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

use memlab_core::config::BpttDepth;
use memlab_core::data::{AnswerSpec, SequenceBatch};
use memlab_core::model::{MemoryState, SegmentModel};
use memlab_core::partial::PartialSegment;

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
    /// The figures, still on the device.
    pub tallies: Tallies<B>,
}

/// A rollout's figures on the device, read back on demand
/// ([`Tallies::figures`]).
#[derive(Debug, Clone)]
pub struct Tallies<B: Backend> {
    /// Per segment, `[3, batch, segment]`: masked token NLL, masked
    /// correctness (0/1) and the mask, detached.
    per_token: Vec<Tensor<B, 3>>,
    /// The mean auxiliary loss.
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

impl<B: Backend> Tallies<B> {
    /// Tallies of one segment's per-token NLL `[batch, segment]`, argmax
    /// correctness and mask.
    pub fn segment(nll: Tensor<B, 2>, correct: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 3> {
        Tensor::stack::<3>(
            vec![(nll * mask.clone()).detach(), correct * mask.clone(), mask],
            0,
        )
    }

    /// From the segments' tallies (in segment order) and the mean
    /// auxiliary loss.
    pub fn new(per_token: Vec<Tensor<B, 3>>, aux: Option<Tensor<B, 1>>) -> Self {
        Self {
            per_token,
            aux: aux.map(|a| a.detach()),
        }
    }

    /// The tallies of a whole batch from one part's: `rows` puts every
    /// part's rows of a `[3, batch, segment]` tally together along the given
    /// dimension (1), `aux` averages the parts' mean auxiliary losses (data
    /// parallelism: [`crate::peer::Peer::gather`]).
    pub fn gathered<E>(
        self,
        mut rows: impl FnMut(Tensor<B, 3>, usize) -> Result<Tensor<B, 3>, E>,
        aux: impl FnOnce(Tensor<B, 1>) -> Result<Tensor<B, 1>, E>,
    ) -> Result<Self, E> {
        let per_token = self
            .per_token
            .into_iter()
            .map(|t| rows(t, 1))
            .collect::<Result<_, _>>()?;
        let aux = self.aux.map(aux).transpose()?;
        Ok(Self { per_token, aux })
    }

    /// Whether every tallied value and the auxiliary loss is finite, on the
    /// device (`[1]`): the training loop's NaN guard.
    pub fn all_finite(&self) -> Tensor<B, 1, Bool> {
        let mut sums: Vec<Tensor<B, 1>> = self.per_token.iter().map(|t| t.clone().sum()).collect();
        sums.extend(self.aux.clone());
        match sums.into_iter().reduce(|a, b| a + b) {
            Some(total) => total.is_finite(),
            None => Tensor::<B, 1>::zeros([1], &B::Device::default()).is_finite(),
        }
    }

    /// Reads the figures back in one device-to-host transfer and sums them on
    /// the host in a fixed order (f64), so that the same run always reports
    /// the same figures whatever order a backend reduces in.
    pub fn figures(&self) -> RolloutFigures {
        let [_, batch, _] = self.per_token[0].dims();
        let lens: Vec<usize> = self.per_token.iter().map(|t| t.dims()[2]).collect();
        let len: usize = lens.iter().sum();
        let mut parts = vec![Tensor::cat(self.per_token.clone(), 2).reshape([3 * batch * len])];
        if let Some(aux) = &self.aux {
            parts.push(aux.clone());
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

impl<B: Backend, M> Rollout<B, M> {
    /// The rollout's figures ([`Tallies::figures`]).
    pub fn figures(&self) -> RolloutFigures {
        self.tallies.figures()
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
    let tokens_of = |index: usize| {
        let (start, end) = bounds[index];
        batch.inputs.clone().slice([0..batch_size, start..end])
    };
    // Sliding window: the (detached) memory entering each segment, kept to
    // replay the window from.
    let mut entering: Vec<M::Memory> = Vec::new();

    for (index, &(start, end)) in bounds.iter().enumerate() {
        if let BpttDepth::Sliding(k) = bptt {
            // LM-RMT's `mem_backprop_depth k`: segment t's loss reaches back
            // through the k segments before it. Those are recomputed from
            // the detached memory that entered segment t − k; their outputs
            // other than the memory are discarded. While the window reaches
            // the first segment (t ≤ k), the memory carried in already hangs
            // on the whole rollout from the given initial memory (so a
            // learned initial memory gets its gradient): nothing to replay.
            entering.push(memory.clone().detach());
            if index > k {
                memory = entering[index - k].clone();
                for replay in index - k..index {
                    memory = model.forward_segment(tokens_of(replay), memory).memory;
                }
            }
        } else if bptt.detach_before(index) {
            memory = memory.detach();
        }
        let tokens = tokens_of(index);
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
        let seg_loss = (nll.clone() * mask.clone()).sum();
        per_token.push(Tallies::segment(nll, correct, mask));
        loss_sum = Some(match loss_sum {
            Some(sum) => sum + seg_loss,
            None => seg_loss,
        });
    }

    let mut loss = loss_sum.expect("a batch has at least one segment") / batch.loss_tokens();
    let aux = aux_sum.map(|a| a / bounds.len() as f64);
    if let Some(aux) = &aux {
        loss = loss + aux.clone() * batch.aux_weight();
    }
    Rollout {
        loss,
        memory,
        tallies: Tallies::new(per_token, aux),
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

/// Reads a token stream segment by segment, as the runner does: segment
/// boundaries fall every `segment_len` tokens from the start of the stream,
/// and the memory is updated only when a segment is complete, so the logits
/// it gives for the next token are exactly the ones a teacher-forced pass
/// over the same tokens computes at that position. A partial segment is
/// read as part of a segment of its complete length (`segment_len`, or
/// what is left of a stream whose length is known,
/// [`SegmentStream::with_length`]), as LM-RMT re-runs the whole answer
/// segment for every generated token: where a model's attention depends on
/// the segment's length (RMT's memory tokens over Transformer-XL's
/// relative positions) it gives the teacher-forced logits all the same.
///
/// Inside a segment the stream reads incrementally where the model keeps
/// per-token state ([`SegmentModel::forward_partial`]: the keys and values of
/// the tokens read so far), so a new token costs one token's forward pass;
/// tokens pushed between two calls of [`SegmentStream::next_logits`] (a
/// prompt) are read together. A model that keeps none has its partial
/// segment re-read from the memory that entered it on every call
/// ([`SegmentStream::re_reading`] does so for every model: the reference
/// the cache is tested and timed against), the positions not yet pushed
/// held by token 0, which no earlier position sees. A completed segment is
/// always read whole by [`SegmentModel::forward_segment`], which gives the
/// memory handed on.
pub struct SegmentStream<'a, B: Backend, M: SegmentModel<B>> {
    model: &'a M,
    segment_len: usize,
    batch: usize,
    device: B::Device,
    /// The memory entering the current segment.
    memory: M::Memory,
    /// Tokens of the current segment, `[position][row]`.
    segment: Vec<Vec<i64>>,
    /// What the model kept of the segment's tokens read so far; `None` when
    /// the stream re-reads the partial segment instead.
    partial: Option<PartialSegment<B>>,
    /// Tokens at the end of `segment` pushed but not yet read into `partial`.
    pending: usize,
    /// Tokens the stream will hold, when known; else unbounded.
    length: Option<usize>,
    /// Tokens pushed before the current segment.
    before: usize,
    /// Logits `[batch, vocab]` after the last token pushed, when known.
    last: Option<Tensor<B, 2>>,
}

impl<'a, B: Backend, M: SegmentModel<B>> SegmentStream<'a, B, M> {
    /// A stream of `batch` rows starting from the model's initial memory,
    /// reading incrementally where the model can.
    pub fn new(model: &'a M, batch: usize, segment_len: usize, device: &B::Device) -> Self {
        assert!(segment_len > 0, "segment length must be at least 1");
        Self {
            model,
            segment_len,
            batch,
            device: device.clone(),
            memory: model.init_memory(batch, device),
            segment: Vec::with_capacity(segment_len),
            partial: Some(PartialSegment::start()),
            pending: 0,
            length: None,
            before: 0,
            last: None,
        }
    }

    /// The same stream for a sequence of `length` tokens: its last segment
    /// is as long as what is left of it (as a teacher-forced pass cuts it).
    pub fn with_length(mut self, length: usize) -> Self {
        self.length = Some(length);
        self
    }

    /// The length the current segment will have once complete.
    fn complete_len(&self) -> usize {
        let pushed = self.segment.len();
        match self.length {
            Some(length) => self
                .segment_len
                .min(length.saturating_sub(self.before))
                .max(pushed),
            None => self.segment_len,
        }
    }

    /// [`Self::new`], re-reading the partial segment for every token even
    /// where the model keeps per-token state.
    pub fn re_reading(model: &'a M, batch: usize, segment_len: usize, device: &B::Device) -> Self {
        Self {
            partial: None,
            ..Self::new(model, batch, segment_len, device)
        }
    }

    /// Whether the stream reads incrementally (as far as it knows: a model
    /// without per-token state is found out at the first partial read).
    pub fn is_incremental(&self) -> bool {
        self.partial.is_some()
    }

    /// Appends one token per row; a completed segment is read and its
    /// memory handed on.
    pub fn push(&mut self, tokens: &[i64]) {
        assert_eq!(tokens.len(), self.batch, "one token per row");
        self.segment.push(tokens.to_vec());
        self.pending += 1;
        self.last = None;
        if self.segment.len() == self.segment_len {
            let (logits, memory) = self.read(self.memory.clone());
            self.memory = memory;
            self.last = Some(logits);
            self.segment.clear();
            self.before += self.segment_len;
            self.pending = 0;
            if let Some(partial) = &mut self.partial {
                *partial = PartialSegment::start();
            }
        }
    }

    /// The logits `[batch, vocab]` for the token after everything pushed.
    /// Panics before the first push (there is nothing to condition on).
    pub fn next_logits(&mut self) -> Tensor<B, 2> {
        if let Some(last) = &self.last {
            return last.clone();
        }
        assert!(!self.segment.is_empty(), "push a prompt token first");
        if let Some(partial) = self.partial.take() {
            let len = self.segment.len();
            let tokens = self.tokens(len - self.pending..len);
            let complete = self.complete_len();
            if let Some((logits, partial)) =
                self.model
                    .forward_partial(tokens, &self.memory, partial, complete)
            {
                self.partial = Some(partial);
                self.pending = 0;
                let logits = last_row(logits);
                self.last = Some(logits.clone());
                return logits;
            }
        }
        let (logits, _) = self.read(self.memory.clone());
        self.last = Some(logits.clone());
        logits
    }

    /// The current segment's tokens at `positions`, `[batch, positions]`,
    /// padded with token 0 to `width` positions.
    fn padded_tokens(&self, positions: std::ops::Range<usize>, width: usize) -> Tensor<B, 2, Int> {
        let len = positions.len();
        let mut ids = Vec::with_capacity(self.batch * width);
        for row in 0..self.batch {
            ids.extend(self.segment[positions.clone()].iter().map(|step| step[row]));
            ids.extend(std::iter::repeat_n(0, width - len));
        }
        Tensor::from_data(TensorData::new(ids, [self.batch, width]), &self.device)
    }

    /// The current segment's tokens at `positions`, `[batch, positions]`.
    fn tokens(&self, positions: std::ops::Range<usize>) -> Tensor<B, 2, Int> {
        let len = positions.len();
        self.padded_tokens(positions, len)
    }

    /// Runs the current segment from `memory`, padded to its complete
    /// length: the logits at its last token pushed and the memory after it
    /// (the memory handed on when the segment is complete).
    fn read(&self, memory: M::Memory) -> (Tensor<B, 2>, M::Memory) {
        let len = self.segment.len();
        let tokens = self.padded_tokens(0..len, self.complete_len());
        let out = self.model.forward_segment(tokens, memory);
        let [batch, _, vocab] = out.logits.dims();
        let at = out
            .logits
            .slice([0..batch, len - 1..len])
            .reshape([batch, vocab]);
        (at, out.memory)
    }
}

/// The last position's row of `logits` `[batch, len, vocab]`: `[batch, vocab]`.
fn last_row<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, len, vocab] = logits.dims();
    logits
        .slice([0..batch, len - 1..len])
        .reshape([batch, vocab])
}

/// The greedy (arg-max) token of each row of `logits` `[batch, vocab]`,
/// read back in one transfer; ties go to the lowest id, as `argmax` does.
pub fn greedy_tokens<B: Backend>(logits: Tensor<B, 2>) -> Vec<i64> {
    let [batch, _] = logits.dims();
    logits
        .argmax(1)
        .reshape([batch])
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("int data")
}

/// Generates the answer of every row of `inputs` (`[batch, len]`, on the
/// host, row-major) free-running: the stream reads `inputs[..=start]`, then
/// the model's greedy prediction for each target `t ≥ start` becomes input
/// `t + 1`. Returns the predictions for targets `start..len`, row-major
/// `[batch, len - start]`. Memory is carried across every segment boundary
/// the answer crosses, exactly as in training (LM-RMT's "no teacher
/// forcing" evaluation, `train_synthetic.py`).
pub fn generate_answers<B: Backend, M: SegmentModel<B>>(
    model: &M,
    inputs: &[i64],
    batch: usize,
    start: usize,
    segment_len: usize,
    device: &B::Device,
) -> Vec<i64> {
    generate_answers_from(
        SegmentStream::new(model, batch, segment_len, device),
        inputs,
        start,
    )
}

/// [`generate_answers`] through `stream` (fresh: nothing pushed yet), e.g.
/// [`SegmentStream::re_reading`].
pub fn generate_answers_from<B: Backend, M: SegmentModel<B>>(
    stream: SegmentStream<'_, B, M>,
    inputs: &[i64],
    start: usize,
) -> Vec<i64> {
    let batch = stream.batch;
    let len = inputs.len() / batch;
    assert!(start < len, "the answer starts inside the row");
    assert!(
        stream.segment.is_empty() && stream.last.is_none(),
        "a fresh stream"
    );
    let mut stream = stream.with_length(len);
    let column = |t: usize| (0..batch).map(|b| inputs[b * len + t]).collect::<Vec<_>>();
    for t in 0..=start {
        stream.push(&column(t));
    }
    let answer = len - start;
    let mut out = vec![0i64; batch * answer];
    for t in start..len {
        let predicted = greedy_tokens(stream.next_logits());
        for (b, &p) in predicted.iter().enumerate() {
            out[b * answer + t - start] = p;
        }
        if t + 1 < len {
            stream.push(&predicted);
        }
    }
    out
}

/// Generated-answer figures of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeneratedFigures {
    /// Right generated tokens over the masked answer positions.
    pub correct: f64,
    /// Masked answer positions counted.
    pub tokens: f64,
    /// Sequences whose `exact` positions are all right.
    pub exact: usize,
    pub sequences: usize,
}

/// Scores generated answers (`[batch, len - spec.start]`, from
/// [`generate_answers`]) against `targets` and `mask` (`[batch, len]`):
/// accuracy over the masked positions from `spec.start` on (without
/// `spec.ignore_in_accuracy` targets), exact match over `spec.exact`.
pub fn score_answers(
    generated: &[i64],
    targets: &[i64],
    mask: &[f32],
    batch: usize,
    spec: &AnswerSpec,
) -> GeneratedFigures {
    let len = targets.len() / batch;
    let answer = len - spec.start;
    let (mut correct, mut tokens, mut exact) = (0.0, 0.0, 0);
    for b in 0..batch {
        let mut all = true;
        for t in spec.start..len {
            let target = targets[b * len + t];
            let right = generated[b * answer + t - spec.start] == target;
            if spec.exact.contains(&t) {
                all &= right;
            }
            if mask[b * len + t] > 0.0 && Some(target) != spec.ignore_in_accuracy {
                tokens += 1.0;
                correct += right as u8 as f64;
            }
        }
        exact += all as usize;
    }
    GeneratedFigures {
        correct,
        tokens,
        exact,
        sequences: batch,
    }
}

//! What a task hands the segment runner: long sequences of input tokens,
//! target tokens and a loss mask, built on the host and checked before they
//! reach a model.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which split a batch is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// A number mixed into seeds so that splits never share examples.
    pub fn seed_salt(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6e00_0000,
            Split::Valid => 0x7661_6c69_6400_0000,
            Split::Test => 0x7465_7374_0000_0000,
        }
    }
}

/// The figure a task is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fraction of masked target tokens predicted exactly.
    TokenAccuracy,
    /// Fraction of sequences whose masked tokens are all right.
    ExactMatch,
    /// Bits per character (loss / ln 2).
    BitsPerCharacter,
    /// exp(loss).
    Perplexity,
    /// Token accuracy of the answer the model generates itself (greedy,
    /// memory carried), as LM-RMT's `train_synthetic.py` scores copy and
    /// reverse ("no teacher forcing").
    GeneratedAccuracy,
    /// Fraction of sequences whose generated answer is right in full, as
    /// LM-RMT's `train_sqeq.py` scores quadratic equations ("answer acc").
    GeneratedExactMatch,
}

impl Metric {
    /// Whether the figure is read off a generated (free-running) answer.
    pub fn is_generated(self) -> bool {
        matches!(
            self,
            Metric::GeneratedAccuracy | Metric::GeneratedExactMatch
        )
    }

    /// Whether a larger figure is a better one (accuracies), or a smaller
    /// one (bits/char, perplexity).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::BitsPerCharacter | Metric::Perplexity)
    }

    /// Human name, for tables.
    pub fn label(self) -> &'static str {
        match self {
            Metric::TokenAccuracy => "accuracy",
            Metric::ExactMatch => "exact match",
            Metric::BitsPerCharacter => "bits/char",
            Metric::Perplexity => "perplexity",
            Metric::GeneratedAccuracy => "generated accuracy",
            Metric::GeneratedExactMatch => "generated exact match",
        }
    }
}

/// Where a task's answer starts and how its generated form is scored: the
/// model reads `inputs[..=start]` (the prompt), then feeds back its own
/// greedy prediction for target `t` as input `t + 1`, up to the end of the
/// row. Every row of the task has the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerSpec {
    /// First target position the model generates.
    pub start: usize,
    /// Target positions whose generated tokens must all be right for a
    /// sequence to count as an exact match.
    pub exact: std::ops::Range<usize>,
    /// A target id that generated token accuracy does not count (padding,
    /// as `train_sqeq.py` counts only targets `> 0`); exact match still
    /// requires it.
    pub ignore_in_accuracy: Option<i64>,
}

/// A batch of sequences on the host: `inputs`, `targets` and `mask` are
/// row-major `[batch, len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub batch: usize,
    pub len: usize,
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    /// 1 where the loss and metrics count a position, 0 elsewhere.
    pub mask: Vec<f32>,
}

/// A token id that does not fit the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError(pub String);

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BatchError {}

impl HostBatch {
    /// A batch to fill with [`HostBatch::push_sequence`]: `batch` rows of
    /// `len` tokens.
    pub fn empty(batch: usize, len: usize) -> Self {
        Self {
            batch,
            len,
            inputs: Vec::with_capacity(batch * len),
            targets: Vec::with_capacity(batch * len),
            mask: Vec::with_capacity(batch * len),
        }
    }

    /// Appends one row from a full sequence of `len + 1` tokens, read as
    /// next-token prediction: inputs `seq[..len]`, targets `seq[1..]`, and
    /// the mask 1 at the target positions `i` where `counts(i)`.
    pub fn push_sequence(&mut self, seq: &[i64], counts: impl Fn(usize) -> bool) {
        assert_eq!(seq.len(), self.len + 1, "a row needs len + 1 tokens");
        self.inputs.extend_from_slice(&seq[..self.len]);
        self.targets.extend_from_slice(&seq[1..]);
        self.mask
            .extend((0..self.len).map(|i| if counts(i) { 1.0 } else { 0.0 }));
    }

    /// Checks the shapes and that every token id is in `0..vocab_size`.
    pub fn validate(&self, vocab_size: usize) -> Result<(), BatchError> {
        let n = self.batch * self.len;
        if self.batch == 0 || self.len == 0 {
            return Err(BatchError(format!(
                "empty batch: {} sequences of {} tokens",
                self.batch, self.len
            )));
        }
        for (name, len) in [
            ("inputs", self.inputs.len()),
            ("targets", self.targets.len()),
            ("mask", self.mask.len()),
        ] {
            if len != n {
                return Err(BatchError(format!(
                    "{name} hold {len} values, expected batch {} x len {} = {n}",
                    self.batch, self.len
                )));
            }
        }
        for (name, ids) in [("input", &self.inputs), ("target", &self.targets)] {
            if let Some((i, &id)) = ids
                .iter()
                .enumerate()
                .find(|&(_, &id)| id < 0 || id as usize >= vocab_size)
            {
                return Err(BatchError(format!(
                    "{name} token id {id} at sequence {}, position {} is outside the vocabulary 0..{vocab_size}",
                    i / self.len,
                    i % self.len
                )));
            }
        }
        Ok(())
    }

    /// Rows `rows` of the batch (a data-parallel peer's share of it,
    /// memlab-train's `distributed`).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> HostBatch {
        assert!(
            rows.end <= self.batch,
            "rows {rows:?} of a batch of {}",
            self.batch
        );
        let span = rows.start * self.len..rows.end * self.len;
        HostBatch {
            batch: rows.len(),
            len: self.len,
            inputs: self.inputs[span.clone()].to_vec(),
            targets: self.targets[span.clone()].to_vec(),
            mask: self.mask[span].to_vec(),
        }
    }

    /// Number of positions the loss counts.
    pub fn masked_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }

    /// Checks the batch against the vocabulary and moves it to `device`.
    pub fn to_device<B: Backend>(
        &self,
        vocab_size: usize,
        device: &B::Device,
    ) -> Result<SequenceBatch<B>, BatchError> {
        self.validate(vocab_size)?;
        let shape = [self.batch, self.len];
        Ok(SequenceBatch {
            inputs: Tensor::from_data(TensorData::new(self.inputs.clone(), shape), device),
            targets: Tensor::from_data(TensorData::new(self.targets.clone(), shape), device),
            mask: Tensor::from_data(TensorData::new(self.mask.clone(), shape), device),
            share: None,
        })
    }
}

/// A batch on a device: `[batch, len]` each.
#[derive(Debug, Clone)]
pub struct SequenceBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    pub mask: Tensor<B, 2>,
    /// Set when these rows are one data-parallel peer's share of a larger
    /// batch (memlab-train's `distributed`); `None` for a whole batch.
    pub share: Option<BatchShare>,
}

/// What a peer's rows are a part of: the loss is normalised as the whole
/// batch's, so that the peers' losses (and their gradients) sum to the
/// whole batch's loss exactly as one device would compute it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchShare {
    /// Tokens the loss counts in the whole batch (all peers' rows).
    pub tokens: f64,
    /// Peers sharing the batch (equal numbers of rows each).
    pub peers: usize,
}

impl<B: Backend> SequenceBatch<B> {
    /// The denominator of the mean cross-entropy: the counted tokens of the
    /// whole batch (at least 1), `[1]`, without gradient.
    pub fn loss_tokens(&self) -> Tensor<B, 1> {
        match self.share {
            Some(share) => Tensor::from_data([share.tokens.max(1.0) as f32], &self.mask.device()),
            None => self.mask.clone().sum().clamp_min(1.0).detach(),
        }
    }

    /// The weight of these rows' mean auxiliary loss in the whole batch's
    /// (the mean over equal shares of rows): `1 / peers`.
    pub fn aux_weight(&self) -> f64 {
        self.share.map_or(1.0, |s| 1.0 / s.peers as f64)
    }
}

/// A source of batches. Generators are seeded and deterministic: the same
/// `(split, index)` always gives the same batch.
pub trait Task: Send + Sync {
    /// Short name, e.g. `copy`.
    fn name(&self) -> String;
    /// Token ids are `0..vocab_size`.
    fn vocab_size(&self) -> usize;
    /// Length of every sequence the task yields.
    fn seq_len(&self) -> usize;
    /// The figure the task is judged by.
    fn metric(&self) -> Metric;
    /// Batch number `index` of `split`. A finite split (see
    /// [`Task::batches`]) wraps around: index `n` is batch 0 of a new epoch.
    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch;
    /// Number of batches in `split` (`None`: a generator, unbounded).
    fn batches(&self, _split: Split, _batch_size: usize) -> Option<u64> {
        None
    }
    /// Whether the batches of a split continue each other row by row (text
    /// cut into `batch_size` streams, Transformer-XL's ordered LM iterator):
    /// training and evaluation then carry memory from batch to batch.
    fn streaming(&self) -> bool {
        false
    }
    /// Checks that the task can yield batches of `batch_size` sequences.
    fn check_batch_size(&self, _batch_size: usize) -> Result<(), BatchError> {
        Ok(())
    }
    /// Files to keep with a run (name, contents), e.g. a word vocabulary.
    fn artifacts(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The answer a model generates free-running, for tasks scored so (the
    /// RMT paper's copy, reverse and quadratic equations).
    fn answer(&self) -> Option<AnswerSpec> {
        None
    }
    /// Text tasks: how text maps to token ids and back (`memlab generate`).
    fn codec(&self) -> Option<&dyn TextCodec> {
        None
    }
}

/// Text to token ids and back, for a text task's vocabulary.
pub trait TextCodec {
    /// The token ids of `text`; an error names what cannot be encoded.
    fn encode(&self, text: &str) -> Result<Vec<i64>, BatchError>;
    /// The bytes token `id` stands for, as they are written out (a word
    /// and the space after it, a byte, a newline for `<eos>`).
    fn decode(&self, id: i64) -> Vec<u8>;
}

//! The copy task of the RMT paper (Bulatov et al., 2022, §4; the
//! `copy_generator` of booydar/LM-RMT).
//!
//! `X` is `length` tokens drawn uniformly from the symbols `2..vocab_size`;
//! the target block is `1 X X` (a start token, then `X` twice). The full
//! sequence is `X ‖ 1 ‖ X ‖ X` (`3·length + 1` tokens); the model reads
//! `seq[:-1]` and predicts `seq[1:]`, and loss and accuracy count only the
//! last `2·length` positions (LM-RMT's `answer_size`): the two copies.
//!
//! Example, `length = 3`, `X = 5 2 7`:
//!
//! ```text
//! input   5 2 7 1 5 2 7 5 2
//! target  2 7 1 5 2 7 5 2 7
//! mask    0 0 0 1 1 1 1 1 1
//! ```

use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::{HostBatch, Metric, Split, Task};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::rng::batch_rng;

/// The token that starts the target block.
pub const START: i64 = 1;
/// The first symbol id (0 is padding, 1 the start token).
pub const FIRST_SYMBOL: i64 = 2;

/// `[task]` with `kind = "copy"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CopyConfig {
    /// Length `L` of the sequence to copy.
    pub length: usize,
    /// Vocabulary size `V`: symbols are `2..V`.
    pub vocab_size: usize,
}

impl Default for CopyConfig {
    fn default() -> Self {
        Self {
            length: 24,
            vocab_size: 10,
        }
    }
}

impl Validate for CopyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("length", self.length)?;
        if self.vocab_size < 3 {
            return Err(ConfigError::new(
                "vocab_size",
                format!(
                    "must be at least 3 (0 and 1 are reserved), got {}",
                    self.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

/// The copy task.
#[derive(Debug, Clone)]
pub struct CopyTask {
    pub config: CopyConfig,
    seed: u64,
}

impl CopyTask {
    pub fn new(config: CopyConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// The full sequence `X ‖ 1 ‖ X ‖ X` for a given `X`.
    pub fn sequence(x: &[i64]) -> Vec<i64> {
        let mut seq = Vec::with_capacity(3 * x.len() + 1);
        seq.extend_from_slice(x);
        seq.push(START);
        seq.extend_from_slice(x);
        seq.extend_from_slice(x);
        seq
    }
}

impl Task for CopyTask {
    fn name(&self) -> String {
        format!(
            "copy(L={}, V={})",
            self.config.length, self.config.vocab_size
        )
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn seq_len(&self) -> usize {
        3 * self.config.length
    }

    fn metric(&self) -> Metric {
        Metric::TokenAccuracy
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let length = self.config.length;
        let len = self.seq_len();
        let mut rng = batch_rng(self.seed, split, index);
        let mut batch = HostBatch {
            batch: batch_size,
            len,
            inputs: Vec::with_capacity(batch_size * len),
            targets: Vec::with_capacity(batch_size * len),
            mask: Vec::with_capacity(batch_size * len),
        };
        let answer_start = len - 2 * length;
        for _ in 0..batch_size {
            let x: Vec<i64> = (0..length)
                .map(|_| rng.random_range(FIRST_SYMBOL..self.config.vocab_size as i64))
                .collect();
            let seq = Self::sequence(&x);
            batch.inputs.extend_from_slice(&seq[..len]);
            batch.targets.extend_from_slice(&seq[1..]);
            batch
                .mask
                .extend((0..len).map(|i| if i >= answer_start { 1.0 } else { 0.0 }));
        }
        batch
    }
}

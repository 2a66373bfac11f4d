//! The copy and reverse tasks of the RMT paper (Bulatov et al., 2022, §4;
//! the `copy_generator` and `reverse_generator` of booydar/LM-RMT).
//!
//! `X` is `length` tokens drawn uniformly from the symbols `2..vocab_size`.
//! Copy: the target block is `1 X X` (a start token, then `X` twice), the
//! full sequence `X ‖ 1 ‖ X ‖ X` (`3·length + 1` tokens). Reverse: the
//! target block is `1 X⁻¹` (`X` reversed), the sequence `X ‖ 1 ‖ X⁻¹`
//! (`2·length + 1` tokens). The model reads `seq[:-1]` and predicts
//! `seq[1:]`; loss and accuracy count only the answer (LM-RMT's
//! `answer_size`): the last `2·length` positions for copy, `length` for
//! reverse.
//!
//! Example, `length = 3`, `X = 5 2 7`:
//!
//! ```text
//! copy     input   5 2 7 1 5 2 7 5 2
//!          target  2 7 1 5 2 7 5 2 7
//!          mask    0 0 0 1 1 1 1 1 1
//! reverse  input   5 2 7 1 7 2
//!          target  2 7 1 7 2 5
//!          mask    0 0 0 1 1 1
//! ```

use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::{AnswerSpec, HostBatch, Metric, Split, Task};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::rng::batch_rng;

/// The token that starts the target block.
pub const START: i64 = 1;
/// The first symbol id (0 is padding, 1 the start token).
pub const FIRST_SYMBOL: i64 = 2;

/// `[task]` with `kind = "copy"` or `kind = "reverse"`. The paper's
/// lengths are 24, 40, 120, 240 and 360 (LM-RMT's `run_copy.sh` and
/// `run_reverse.sh` set `tgt_len` and `answer_size` for L = 24; the
/// notebook `generation/algorithmic.ipynb` writes the data for each L with
/// `NUM_TOKENS = 10`, so symbols `2..10`, memlab's default).
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

/// Copy `X` twice, or reverse it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Copy,
    Reverse,
}

/// The copy or reverse task.
#[derive(Debug, Clone)]
pub struct CopyTask {
    pub config: CopyConfig,
    pub variant: Variant,
    seed: u64,
}

impl CopyTask {
    pub fn new(config: CopyConfig, seed: u64) -> Self {
        Self {
            config,
            variant: Variant::Copy,
            seed,
        }
    }

    pub fn reverse(config: CopyConfig, seed: u64) -> Self {
        Self {
            config,
            variant: Variant::Reverse,
            seed,
        }
    }

    /// The full sequence for a given `X`: `X ‖ 1 ‖ X ‖ X` (copy) or
    /// `X ‖ 1 ‖ X⁻¹` (reverse).
    pub fn sequence(&self, x: &[i64]) -> Vec<i64> {
        let mut seq = Vec::with_capacity(3 * x.len() + 1);
        seq.extend_from_slice(x);
        seq.push(START);
        match self.variant {
            Variant::Copy => {
                seq.extend_from_slice(x);
                seq.extend_from_slice(x);
            }
            Variant::Reverse => seq.extend(x.iter().rev()),
        }
        seq
    }

    /// Answer positions (LM-RMT's `answer_size`).
    fn answer_len(&self) -> usize {
        match self.variant {
            Variant::Copy => 2 * self.config.length,
            Variant::Reverse => self.config.length,
        }
    }
}

impl Task for CopyTask {
    fn name(&self) -> String {
        let kind = match self.variant {
            Variant::Copy => "copy",
            Variant::Reverse => "reverse",
        };
        format!(
            "{kind}(L={}, V={})",
            self.config.length, self.config.vocab_size
        )
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn seq_len(&self) -> usize {
        self.config.length + self.answer_len()
    }

    /// The paper's figure: accuracy of the answer the model generates
    /// (LM-RMT's "no teacher forcing" accuracy, `train_synthetic.py`).
    fn metric(&self) -> Metric {
        Metric::GeneratedAccuracy
    }

    /// The model reads `X ‖ 1` and generates the rest.
    fn answer(&self) -> Option<AnswerSpec> {
        let len = self.seq_len();
        let start = len - self.answer_len();
        Some(AnswerSpec {
            start,
            exact: start..len,
            ignore_in_accuracy: None,
        })
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let length = self.config.length;
        let len = self.seq_len();
        let mut rng = batch_rng(self.seed, split, index);
        let mut batch = HostBatch::empty(batch_size, len);
        let answer_start = len - self.answer_len();
        for _ in 0..batch_size {
            let x: Vec<i64> = (0..length)
                .map(|_| rng.random_range(FIRST_SYMBOL..self.config.vocab_size as i64))
                .collect();
            batch.push_sequence(&self.sequence(&x), |i| i >= answer_start);
        }
        batch
    }
}

//! The sorting task of the ∞-former paper (Martins et al., 2022, §4.1;
//! deep-spin/infinite-former's `sorting/generate_data.py`).
//!
//! Per sequence, two distributions over the `symbols` (20) are drawn,
//! `p_initial, p_final ∝ randint(1, 10)` (integers 1–9 per symbol, then
//! normalised). Token `j` of `length` is drawn from
//! `(1 − r) p_initial + r p_final` with `r = (j + 1) / length`, so the
//! distribution drifts over the sequence. Then come the separator (id
//! `symbols`) and the symbols sorted by descending count in the sequence.
//! Ties keep the order of first occurrence (Python's `Counter.most_common`
//! sorts stably by count over first-insertion order), and symbols that never
//! occur follow in ascending order, as the official generator appends them.
//!
//! The model reads `seq[:-1]` and predicts `seq[1:]`; loss and token accuracy
//! count the `symbols` answer positions, as in the official code
//! (`sorting/train.py`'s `load_sequences` gives every other position the
//! padding target 21, which its `CrossEntropyLoss(ignore_index=21)` skips;
//! it also runs every segment but the last without gradient).
//!
//! Example, `symbols = 4`, `length = 8`:
//!
//! ```text
//! sequence  2 0 2 1 2 0 0 2 4 2 0 1 3    (2 ×4, 0 ×3, 1 ×1, 3 absent)
//! mask      on the last 4 targets: 2 0 1 3
//! ```

use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::{HostBatch, Metric, Split, Task};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::rng::batch_rng;

/// `[task]` with `kind = "sorting"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SortingConfig {
    /// Tokens before the separator (the paper: 4,000, 8,000, 16,000).
    pub length: usize,
    /// Distinct symbols (the paper: 20).
    pub symbols: usize,
}

impl Default for SortingConfig {
    fn default() -> Self {
        Self {
            length: 4000,
            symbols: 20,
        }
    }
}

impl Validate for SortingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("length", self.length)?;
        if self.symbols < 2 {
            return Err(ConfigError::new(
                "symbols",
                format!("must be at least 2, got {}", self.symbols),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct SortingTask {
    pub config: SortingConfig,
    seed: u64,
}

/// The symbols sorted by descending count, ties by first occurrence, then
/// the absent symbols in ascending order.
pub fn sorted_by_frequency(tokens: &[i64], symbols: usize) -> Vec<i64> {
    let mut count = vec![0usize; symbols];
    let mut first = vec![usize::MAX; symbols];
    for (j, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        count[t] += 1;
        first[t] = first[t].min(j);
    }
    let mut order: Vec<usize> = (0..symbols).collect();
    // Absent symbols have first = MAX, so they sort last, ascending by id.
    order.sort_by_key(|&s| (std::cmp::Reverse(count[s]), first[s], s));
    order.into_iter().map(|s| s as i64).collect()
}

impl SortingTask {
    pub fn new(config: SortingConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// One sequence: `length` drifting tokens, the separator, the answer.
    pub fn generate(&self, rng: &mut impl Rng) -> Vec<i64> {
        let (n, s) = (self.config.length, self.config.symbols);
        let mut draw = || {
            let w: Vec<f64> = (0..s).map(|_| rng.random_range(1..10) as f64).collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|x| x / total).collect::<Vec<f64>>()
        };
        let (initial, last) = (draw(), draw());
        let mut seq = Vec::with_capacity(n + s + 1);
        for j in 0..n {
            let r = (j + 1) as f64 / n as f64;
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut token = s - 1; // rounding: u beyond the last partial sum
            for (symbol, (a, b)) in initial.iter().zip(&last).enumerate() {
                acc += (1.0 - r) * a + r * b;
                if u < acc {
                    token = symbol;
                    break;
                }
            }
            seq.push(token as i64);
        }
        let answer = sorted_by_frequency(&seq, s);
        seq.push(s as i64);
        seq.extend(answer);
        seq
    }
}

impl Task for SortingTask {
    fn name(&self) -> String {
        format!(
            "sorting(L={}, symbols={})",
            self.config.length, self.config.symbols
        )
    }

    fn vocab_size(&self) -> usize {
        self.config.symbols + 1
    }

    fn seq_len(&self) -> usize {
        self.config.length + self.config.symbols
    }

    fn metric(&self) -> Metric {
        Metric::TokenAccuracy
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let len = self.seq_len();
        let answer_start = len - self.config.symbols;
        let mut rng = batch_rng(self.seed, split, index);
        let mut batch = HostBatch::empty(batch_size, len);
        for _ in 0..batch_size {
            let seq = self.generate(&mut rng);
            batch.push_sequence(&seq, |i| i >= answer_start);
        }
        batch
    }
}

//! Associative retrieval (Ba et al., 2016; the RMT paper §4, booydar/LM-RMT's
//! `retrieval_generator` and `create_sequence`).
//!
//! `pairs` distinct keys (ids 11–36, the letters) each get a distinct value
//! (ids 0–9); the query is one of the keys, drawn uniformly. After the query
//! come the separator `10` and the query's value: the sequence is
//! `k1 v1 … kK vK q 10 v(q)` (`2K + 3` tokens). The model reads `seq[:-1]`
//! and predicts `seq[1:]`; only the last position (the value) counts: a
//! one-token answer. Vocabulary 37.
//!
//! Example, `pairs = 4`:
//!
//! ```text
//! sequence  12 3 30 7 11 0 25 9 30 10 7     (query 30, whose value is 7)
//! input     12 3 30 7 11 0 25 9 30 10
//! target     3 30 7 11 0 25 9 30 10 7
//! mask       0 0  0 0  0 0  0 0  0 1
//! ```

use memlab_core::config::{ConfigError, Validate};
use memlab_core::{AnswerSpec, HostBatch, Metric, Split, Task};
use rand::RngExt;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::rng::batch_rng;

/// The separator between the query and its value.
pub const SEPARATOR: i64 = 10;
/// The first key id (keys are `11..37`).
pub const FIRST_KEY: i64 = 11;
/// Values `0..10`, keys `11..37`, the separator: 37 ids.
pub const VOCAB_SIZE: usize = 37;

/// `[task]` with `kind = "retrieval"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalConfig {
    /// Key–value pairs `K` (the paper: 4).
    pub pairs: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self { pairs: 4 }
    }
}

impl Validate for RetrievalConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10).contains(&self.pairs) {
            return Err(ConfigError::new(
                "pairs",
                format!(
                    "must be 1 to 10 (keys and values are distinct; there are 10 values), got {}",
                    self.pairs
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct RetrievalTask {
    pub config: RetrievalConfig,
    seed: u64,
}

impl RetrievalTask {
    pub fn new(config: RetrievalConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// The full sequence for `keys`, `values` and the index of the query.
    pub fn sequence(keys: &[i64], values: &[i64], query: usize) -> Vec<i64> {
        let mut seq: Vec<i64> = keys
            .iter()
            .zip(values)
            .flat_map(|(&k, &v)| [k, v])
            .collect();
        seq.extend([keys[query], SEPARATOR, values[query]]);
        seq
    }
}

impl Task for RetrievalTask {
    fn name(&self) -> String {
        format!("retrieval(K={})", self.config.pairs)
    }

    fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    fn seq_len(&self) -> usize {
        2 * self.config.pairs + 2
    }

    fn metric(&self) -> Metric {
        Metric::TokenAccuracy
    }

    /// One generated token: the value after the separator (generated and
    /// teacher-forced accuracy coincide).
    fn answer(&self) -> Option<AnswerSpec> {
        let len = self.seq_len();
        Some(AnswerSpec {
            start: len - 1,
            exact: len - 1..len,
            ignore_in_accuracy: None,
        })
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let k = self.config.pairs;
        let len = self.seq_len();
        let mut rng = batch_rng(self.seed, split, index);
        let mut batch = HostBatch::empty(batch_size, len);
        let mut letters: Vec<i64> = (FIRST_KEY..VOCAB_SIZE as i64).collect();
        let mut digits: Vec<i64> = (0..SEPARATOR).collect();
        for _ in 0..batch_size {
            // Without replacement, as `np.random.choice(..., replace=False)`.
            let (keys, _) = letters.partial_shuffle(&mut rng, k);
            let keys = keys.to_vec();
            let (values, _) = digits.partial_shuffle(&mut rng, k);
            let values = values.to_vec();
            let query = rng.random_range(0..k);
            let seq = Self::sequence(&keys, &values, query);
            batch.push_sequence(&seq, |i| i == len - 1);
        }
        batch
    }
}

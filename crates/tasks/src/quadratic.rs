//! Quadratic equations (the RMT paper §4), in the format of the official
//! generator: booydar/LM-RMT `generation/square_equations.ipynb`
//! (`gen_equation_solution`, `gen_no_roots_equation`,
//! `equation_generator` with `with_canonic = True, with_D = True`, the
//! `sqeq_cd` data that `run_sqeq.sh` trains on).
//!
//! With roots (probability `1 − no_root_fraction`): two roots
//! `r = trunc(uniform(−max_root, max_root))` each (so `−99..=99`, 0 twice
//! as likely); the canonical equation `x^2 + b·x + c = 0`, `b = −(r1 + r2)`,
//! `c = r1·r2`; the equation shown is it times `k = ±round(uniform(1,
//! shuffle_limit))`. Without roots: `b` uniform in `0..2·max_root`, `c`
//! uniform in `⌊b²/4⌋..max_root²` (so `D = b² − 4c ≤ 0`, and, as in the
//! official code, `D` is 0 or 1 when `c = ⌊b²/4⌋`), then the same `k`.
//!
//! Six fields of `field_len` (30) characters, zero-padded: the equation,
//! the canonical form, the discriminant `D=|b|^2-4*1*c=D=√D^2`, the two
//! solution lines `x=(−b−√D)/2=x1` and `x=(−b+√D)/2=x2`, and the answer:
//! the distinct roots in ascending order joined by `,`. Without roots the
//! discriminant line stops at `=D` and the last three fields are empty.
//! Terms follow the notebook's `get_monome`: a zero coefficient drops its
//! term, a coefficient ±1 is written as a sign alone (`x^2`, `-x`, `+1`).
//!
//! The row is the 180 characters (`src`); the targets are the row shifted
//! by one with a final 0 (the notebook's `tgt`). The model reads field 1
//! and the first character of field 2 (`train_sqeq.py` keeps
//! `data[:-answer_size]` as the prompt and generates from there), and the
//! loss covers the last `5·field_len` targets, padding included
//! (`answer_size 150`). The headline metric is the exact match of the
//! generated answer field; generated token accuracy skips padding targets
//! (`target > 0`), as `train_sqeq.py` counts.
//!
//! Splits: the official data set draws 130,000 distinct equations and
//! splits them 100k / 10k / 20k. memlab draws on the fly, so it assigns
//! every equation to one split by a hash of its first field (10 : 1 : 2),
//! which keeps the splits disjoint; within a split, equations may repeat.
//!
//! Example (the notebook's own printed output: roots −93 and −61, k = −8):
//!
//! ```text
//! -8*x^2-1232*x-45384=0
//! x^2+154*x+5673=0
//! D=154^2-4*1*5673=1024=32^2
//! x=(-154-32)/2=-93
//! x=(-154+32)/2=-61
//! -93,-61
//! ```

use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::{AnswerSpec, HostBatch, Metric, Split, Task};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::rng::batch_rng;

/// The notebook's `c2token`: the characters with ids 2, 3, …; id 0 is
/// padding, id 1 is never used, `;` (22) is the unused end-of-sequence.
pub const ALPHABET: &str = "0123456789+-*/^=()xD;,";
/// The first character id.
pub const FIRST_ID: i64 = 2;
/// Vocabulary size (`ntokens` of the official data: the largest id + 1).
pub const VOCAB_SIZE: usize = 2 + 22;
/// Fields per example (`N = 6` with the canonical form and discriminant).
pub const FIELDS: usize = 6;
/// The longest field any equation of the default ranges has (the
/// discriminant line, e.g. `D=0^2-4*1*-9801=39204=198^2`; found by
/// enumerating every root pair and factor, see the tests).
pub const MIN_FIELD_LEN: usize = 28;

/// `[task]` with `kind = "quadratic"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuadraticConfig {
    /// Characters per field (the notebook's `seq_len`: 30).
    pub field_len: usize,
    /// Roots are drawn from `(−max_root, max_root)` (the notebook: 100).
    pub max_root: i64,
    /// The factor `|k|` is `round(uniform(1, shuffle_limit))` (10).
    pub shuffle_limit: i64,
    /// Probability of an equation without real roots (`prob_no_roots`: 0.2).
    pub no_root_fraction: f64,
}

impl Default for QuadraticConfig {
    fn default() -> Self {
        Self {
            field_len: 30,
            max_root: 100,
            shuffle_limit: 10,
            no_root_fraction: 0.2,
        }
    }
}

impl Validate for QuadraticConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=100).contains(&self.max_root) {
            return Err(ConfigError::new(
                "max_root",
                format!("must be 2 to 100, got {}", self.max_root),
            ));
        }
        if !(1..=10).contains(&self.shuffle_limit) {
            return Err(ConfigError::new(
                "shuffle_limit",
                format!("must be 1 to 10, got {}", self.shuffle_limit),
            ));
        }
        if self.field_len < MIN_FIELD_LEN {
            return Err(ConfigError::new(
                "field_len",
                format!(
                    "must be at least {MIN_FIELD_LEN} (the longest field), got {}",
                    self.field_len
                ),
            ));
        }
        check::probability("no_root_fraction", self.no_root_fraction)?;
        Ok(())
    }
}

/// One equation, as the notebook draws it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equation {
    /// `gen_equation_solution`: integer roots, shown times `k`.
    Roots { r1: i64, r2: i64, k: i64 },
    /// `gen_no_roots_equation`: `x^2 + b·x + c`, shown times `k`.
    NoRoots { b: i64, c: i64, k: i64 },
}

/// The notebook's `get_monome(coef, power)` for `dim = 2`.
fn monome(coef: i64, power: u32) -> String {
    let mut out = String::new();
    match coef {
        0 => return out,
        -1 => out.push_str(if power > 0 { "-" } else { "-1" }),
        1 => {
            if power == 0 {
                out.push_str("+1");
            } else if power < 2 {
                out.push('+');
            }
        }
        _ => {
            if coef < 0 || power == 2 {
                out.push_str(&coef.to_string());
            } else {
                out.push_str(&format!("+{coef}"));
            }
            if power > 0 {
                out.push('*');
            }
        }
    }
    match power {
        0 => {}
        1 => out.push('x'),
        _ => out.push_str(&format!("x^{power}")),
    }
    out
}

/// `a·x^2 + b·x + c = 0` written as the notebook writes it.
fn equation_text([a, b, c]: [i64; 3]) -> String {
    format!("{}{}{}=0", monome(a, 2), monome(b, 1), monome(c, 0))
}

impl Equation {
    /// The canonical coefficients `[1, b, c]` and the factor `k`.
    fn canonical(&self) -> ([i64; 3], i64) {
        match *self {
            Equation::Roots { r1, r2, k } => ([1, -(r1 + r2), r1 * r2], k),
            Equation::NoRoots { b, c, k } => ([1, b, c], k),
        }
    }

    /// The six fields, unpadded.
    pub fn fields(&self) -> [String; FIELDS] {
        let (canonical, k) = self.canonical();
        let [_, b, c] = canonical;
        let shown = equation_text(canonical.map(|x| x * k));
        let d = b * b - 4 * c;
        match *self {
            Equation::Roots { r1, r2, .. } => {
                let s = d.isqrt();
                let (lo, hi) = (r1.min(r2), r1.max(r2));
                let answer = if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo},{hi}")
                };
                [
                    shown,
                    equation_text(canonical),
                    format!("D={}^2-4*1*{c}={d}={s}^2", b.abs()),
                    format!("x=({}-{s})/2={lo}", -b),
                    format!("x=({}+{s})/2={hi}", -b),
                    answer,
                ]
            }
            Equation::NoRoots { .. } => [
                shown,
                equation_text(canonical),
                format!("D={}^2-4*1*{c}={d}", b.abs()),
                String::new(),
                String::new(),
                String::new(),
            ],
        }
    }
}

/// Character → id (the notebook's `c2token`).
pub fn encode(text: &str) -> Vec<i64> {
    text.chars()
        .map(|c| {
            let position = ALPHABET
                .chars()
                .position(|a| a == c)
                .unwrap_or_else(|| panic!("{c:?} is not in the quadratic alphabet"));
            FIRST_ID + position as i64
        })
        .collect()
}

/// Ids → characters; padding (0) is shown as `_`, the unused id 1 as `?`.
pub fn decode(ids: &[i64]) -> String {
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    ids.iter()
        .map(|&i| match i {
            0 => '_',
            i if i >= FIRST_ID && ((i - FIRST_ID) as usize) < alphabet.len() => {
                alphabet[(i - FIRST_ID) as usize]
            }
            _ => '?',
        })
        .collect()
}

/// FNV-1a, 64 bits: a fixed hash, so that the split an equation belongs to
/// never changes with library versions.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The split an equation (its first field) belongs to: train, valid and
/// test in the official proportions 100k : 10k : 20k.
pub fn split_of(first_field: &str) -> Split {
    match fnv1a(first_field) % 13 {
        0..=9 => Split::Train,
        10 => Split::Valid,
        _ => Split::Test,
    }
}

#[derive(Debug, Clone)]
pub struct QuadraticTask {
    pub config: QuadraticConfig,
    seed: u64,
}

impl QuadraticTask {
    pub fn new(config: QuadraticConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// One equation, drawn as the notebook draws it.
    pub fn draw(&self, rng: &mut impl Rng) -> Equation {
        let max = self.config.max_root;
        if rng.random::<f64>() < self.config.no_root_fraction {
            let b = rng.random_range(0..2 * max);
            let c = rng.random_range(b * b / 4..max * max);
            let k = self.factor(rng);
            Equation::NoRoots { b, c, k }
        } else {
            // astype(int) truncates towards zero.
            let r1 = (rng.random::<f64>() * 2.0 * max as f64 - max as f64) as i64;
            let r2 = (rng.random::<f64>() * 2.0 * max as f64 - max as f64) as i64;
            let k = self.factor(rng);
            Equation::Roots { r1, r2, k }
        }
    }

    /// `choice([−1, 1]) · round(uniform(1, shuffle_limit))` (rounding half
    /// away from zero; the tie has probability zero).
    fn factor(&self, rng: &mut impl Rng) -> i64 {
        let sign = if rng.random::<bool>() { 1 } else { -1 };
        let limit = self.config.shuffle_limit as f64;
        sign * (1.0 + rng.random::<f64>() * (limit - 1.0)).round() as i64
    }

    /// An equation of `split`: draws until one belongs to it.
    pub fn draw_in(&self, split: Split, rng: &mut impl Rng) -> Equation {
        loop {
            let equation = self.draw(rng);
            if split_of(&equation.fields()[0]) == split {
                return equation;
            }
        }
    }

    /// The six fields padded to `field_len` with 0, as ids (`src`).
    pub fn encode(&self, equation: &Equation) -> Vec<i64> {
        let width = self.config.field_len;
        equation
            .fields()
            .iter()
            .flat_map(|field| {
                let mut ids = encode(field);
                assert!(ids.len() <= width, "{field} is longer than {width}");
                ids.resize(width, 0);
                ids
            })
            .collect()
    }
}

impl Task for QuadraticTask {
    fn name(&self) -> String {
        format!("quadratic(field_len={})", self.config.field_len)
    }

    fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    fn seq_len(&self) -> usize {
        FIELDS * self.config.field_len
    }

    fn metric(&self) -> Metric {
        Metric::GeneratedExactMatch
    }

    fn answer(&self) -> Option<AnswerSpec> {
        let w = self.config.field_len;
        Some(AnswerSpec {
            start: w,
            // The answer field's characters are targets 5w − 1 .. 6w − 1;
            // the last target (the final 0) must be right too.
            exact: FIELDS * w - w - 1..FIELDS * w,
            ignore_in_accuracy: Some(0),
        })
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let len = self.seq_len();
        let answer_start = self.config.field_len;
        let mut rng = batch_rng(self.seed, split, index);
        let mut batch = HostBatch::empty(batch_size, len);
        for _ in 0..batch_size {
            let mut row = self.encode(&self.draw_in(split, &mut rng));
            row.push(0);
            batch.push_sequence(&row, |i| i >= answer_start);
        }
        batch
    }
}

//! Quadratic equations (the RMT paper §4 and appendix; booydar/LM-RMT's
//! `sqeq` data, whose generator is not published: the format below is
//! memlab's, built to the paper's description).
//!
//! Two integer roots `x1 ≤ x2` are drawn from `[-100, 100)`; the monic
//! (canonical) equation is `x^2 + p·x + q = 0` with `p = −(x1 + x2)`,
//! `q = x1·x2`, and the equation shown is that one times a random factor
//! `k ∈ ±{1..max_factor}`. With probability `no_root_fraction` (0.2) the
//! equation has no real roots instead: `p` as above, `q = ⌊p²/4⌋ + t` with
//! `t` uniform in `1..=1000`, so `D = p² − 4q < 0`.
//!
//! The solution is written in six character fields, each right-padded to
//! `field_len` (30) with the pad symbol `_` (id 0):
//!
//! 1. the equation: `a*x^2+b*x+c=0` (terms with zero coefficients kept);
//! 2. the canonical form: `x^2+p*x+q=0`;
//! 3. the discriminant: `D=p^2-4*q=D`, negative numbers in parentheses;
//! 4. `x1=(-p-s)/2=x1` with `s = √D` (or `x1=none` when `D < 0`);
//! 5. `x2=(-p+s)/2=x2` (or `x2=none`);
//! 6. `answer:x1,x2` (or `answer:none`).
//!
//! The model reads field 1 and must generate fields 2–6: loss and the
//! metric count every target position in fields 2–6, padding included, and
//! the metric is exact match over all of them (the whole written answer).
//!
//! Example, roots 6 and 92, factor −4 (`_` is padding):
//!
//! ```text
//! -4*x^2+392*x-2208=0___________
//! x^2-98*x+552=0________________
//! D=(-98)^2-4*552=7396__________
//! x1=(98-86)/2=6________________
//! x2=(98+86)/2=92_______________
//! answer:6,92___________________
//! ```

use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::{HostBatch, Metric, Split, Task};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::rng::batch_rng;

/// The characters, in id order; id 0 (`_`) is padding.
pub const ALPHABET: &str = "_0123456789+-*^=()/,:xDanswero";
/// Fields per example.
pub const FIELDS: usize = 6;
/// The longest field a generated equation can have (25 characters, e.g.
/// `D=(-10)^2-4*(-8811)=35344`, found by enumerating every root pair).
pub const MIN_FIELD_LEN: usize = 25;

/// `[task]` with `kind = "quadratic"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuadraticConfig {
    /// Characters per field (the paper: 30).
    pub field_len: usize,
    /// The equation is the canonical one times `k`, `1 ≤ |k| ≤ max_factor`.
    pub max_factor: i64,
    /// Fraction of equations with no real roots (the paper: about 20%).
    pub no_root_fraction: f64,
}

impl Default for QuadraticConfig {
    fn default() -> Self {
        Self {
            field_len: 30,
            max_factor: 10,
            no_root_fraction: 0.2,
        }
    }
}

impl Validate for QuadraticConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.field_len < MIN_FIELD_LEN {
            return Err(ConfigError::new(
                "field_len",
                format!(
                    "must be at least {MIN_FIELD_LEN} (the longest field), got {}",
                    self.field_len
                ),
            ));
        }
        if !(1..=10).contains(&self.max_factor) {
            return Err(ConfigError::new(
                "max_factor",
                format!("must be 1 to 10, got {}", self.max_factor),
            ));
        }
        check::probability("no_root_fraction", self.no_root_fraction)?;
        Ok(())
    }
}

/// One equation: the canonical coefficients and the factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Equation {
    pub p: i64,
    pub q: i64,
    pub k: i64,
}

impl Equation {
    pub fn discriminant(&self) -> i64 {
        self.p * self.p - 4 * self.q
    }

    /// The real roots `(x1, x2)`, `x1 ≤ x2`, when they are integers.
    pub fn roots(&self) -> Option<(i64, i64)> {
        let d = self.discriminant();
        if d < 0 {
            return None;
        }
        let s = d.isqrt();
        assert_eq!(s * s, d, "generated equations have integer roots");
        Some(((-self.p - s) / 2, (-self.p + s) / 2))
    }

    /// The six fields, unpadded.
    pub fn fields(&self) -> [String; FIELDS] {
        let Equation { p, q, k } = *self;
        let signed = |v: i64| {
            if v < 0 {
                format!("{v}")
            } else {
                format!("+{v}")
            }
        };
        let paren = |v: i64| {
            if v < 0 {
                format!("({v})")
            } else {
                format!("{v}")
            }
        };
        let d = self.discriminant();
        let equation = format!("{k}*x^2{}*x{}=0", signed(k * p), signed(k * q));
        let canonical = format!("x^2{}*x{}=0", signed(p), signed(q));
        let discriminant = format!("D={}^2-4*{}={d}", paren(p), paren(q));
        match self.roots() {
            Some((x1, x2)) => {
                let s = d.isqrt();
                [
                    equation,
                    canonical,
                    discriminant,
                    format!("x1=({}-{s})/2={x1}", -p),
                    format!("x2=({}+{s})/2={x2}", -p),
                    format!("answer:{x1},{x2}"),
                ]
            }
            None => [
                equation,
                canonical,
                discriminant,
                "x1=none".into(),
                "x2=none".into(),
                "answer:none".into(),
            ],
        }
    }
}

/// Character → id (`ALPHABET` order).
pub fn encode(text: &str) -> Vec<i64> {
    text.chars()
        .map(|c| {
            ALPHABET
                .chars()
                .position(|a| a == c)
                .unwrap_or_else(|| panic!("{c:?} is not in the quadratic alphabet"))
                as i64
        })
        .collect()
}

/// Ids → characters.
pub fn decode(ids: &[i64]) -> String {
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    ids.iter().map(|&i| alphabet[i as usize]).collect()
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

    pub fn draw(&self, rng: &mut impl Rng) -> Equation {
        let x1 = rng.random_range(-100..100i64);
        let x2 = rng.random_range(-100..100i64);
        let p = -(x1 + x2);
        let magnitude = rng.random_range(1..=self.config.max_factor);
        let k = if rng.random::<bool>() {
            magnitude
        } else {
            -magnitude
        };
        let q = if rng.random::<f64>() < self.config.no_root_fraction {
            p * p / 4 + rng.random_range(1..=1000i64)
        } else {
            x1 * x2
        };
        Equation { p, q, k }
    }

    /// The six fields padded to `field_len`, as ids.
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
        ALPHABET.chars().count()
    }

    fn seq_len(&self) -> usize {
        FIELDS * self.config.field_len - 1
    }

    fn metric(&self) -> Metric {
        Metric::ExactMatch
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let len = self.seq_len();
        // Target i is character i + 1: fields 2–6 start at character field_len.
        let answer_start = self.config.field_len - 1;
        let mut rng = batch_rng(self.seed, split, index);
        let mut batch = HostBatch::empty(batch_size, len);
        for _ in 0..batch_size {
            let equation = self.draw(&mut rng);
            batch.push_sequence(&self.encode(&equation), |i| i >= answer_start);
        }
        batch
    }
}

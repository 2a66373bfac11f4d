//! The stopping rule of `train.flat_evals` and `train.flat_delta`: a run
//! ends once its validation metric has been flat for `flat_evals`
//! evaluations in a row, `train.steps` being the cap. It is the patience
//! rule of Keras' `EarlyStopping` (`patience`, `min_delta`): an evaluation
//! improves when it beats the best so far by more than `flat_delta` (up
//! for an accuracy, down for bits/char or perplexity), and only such an
//! evaluation moves the best. The rule reads nothing but the evaluations'
//! figures, in order, so a resumed run rebuilds it from the `valid` lines
//! of its `metrics.jsonl` and stops where the uninterrupted run would.

use memlab_core::config::TrainConfig;
use memlab_core::data::Metric;

/// The rule's state after the evaluations seen so far.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatRule {
    evals: usize,
    delta: f64,
    higher_is_better: bool,
    best: Option<f64>,
    /// Evaluations since the last improvement.
    flat: usize,
}

impl FlatRule {
    pub fn new(train: &TrainConfig, metric: Metric) -> Self {
        Self {
            evals: train.flat_evals,
            delta: train.flat_delta,
            higher_is_better: metric.higher_is_better(),
            best: None,
            flat: 0,
        }
    }

    /// Whether the config sets a rule at all (`flat_evals > 0`).
    pub fn is_on(&self) -> bool {
        self.evals > 0
    }

    /// Counts one evaluation's metric. A figure that is not a number (a
    /// diverged run) never improves.
    pub fn observe(&mut self, value: f64) {
        let improves = match self.best {
            _ if value.is_nan() => false,
            None => true,
            Some(best) if self.higher_is_better => value > best + self.delta,
            Some(best) => value < best - self.delta,
        };
        if improves {
            self.best = Some(value);
            self.flat = 0;
        } else {
            self.flat += 1;
        }
    }

    /// Whether the last `flat_evals` evaluations were all flat.
    pub fn is_flat(&self) -> bool {
        self.is_on() && self.flat >= self.evals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(evals: usize, delta: f64, metric: Metric) -> FlatRule {
        let train = TrainConfig {
            flat_evals: evals,
            flat_delta: delta,
            eval_every: 10,
            ..TrainConfig::default()
        };
        FlatRule::new(&train, metric)
    }

    fn flat_after(mut rule: FlatRule, values: &[f64]) -> Vec<bool> {
        values
            .iter()
            .map(|&v| {
                rule.observe(v);
                rule.is_flat()
            })
            .collect()
    }

    #[test]
    fn an_accuracy_is_flat_after_n_evaluations_without_a_gain_above_delta() {
        // 0.50 improves on nothing (first), 0.60 improves, 0.605 is within
        // delta of 0.60 (flat 1), 0.55 (flat 2): flat with 2; 0.70 resets.
        let r = rule(2, 0.01, Metric::TokenAccuracy);
        assert_eq!(
            flat_after(r, &[0.5, 0.6, 0.605, 0.55, 0.7, 0.7, 0.71]),
            [false, false, false, true, false, false, true]
        );
    }

    #[test]
    fn small_gains_do_not_move_the_best() {
        // Keras' semantics: 0.605, 0.608 and 0.6095 each beat the one
        // before, but none beats the best (0.60) by more than 0.01, so a
        // slow creep counts as flat; 0.62 does.
        let r = rule(3, 0.01, Metric::TokenAccuracy);
        assert_eq!(
            flat_after(r, &[0.6, 0.605, 0.608, 0.6095, 0.62]),
            [false, false, false, true, false]
        );
    }

    #[test]
    fn bits_per_character_improve_downwards() {
        let r = rule(1, 0.0, Metric::BitsPerCharacter);
        assert_eq!(
            flat_after(r, &[3.0, 2.5, 2.6, 2.4, 2.4]),
            [false, false, true, false, true]
        );
    }

    #[test]
    fn a_diverged_run_is_flat_and_no_rule_is_never_flat() {
        let r = rule(2, 0.0, Metric::Perplexity);
        assert_eq!(
            flat_after(r, &[f64::NAN, f64::NAN, 10.0]),
            [false, true, false]
        );
        let off = rule(0, 0.0, Metric::TokenAccuracy);
        assert!(!off.is_on());
        assert_eq!(flat_after(off, &[0.5, 0.5, 0.5]), [false, false, false]);
    }
}

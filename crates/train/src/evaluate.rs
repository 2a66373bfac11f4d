//! Evaluation: teacher-forced figures over several batches (memory
//! carried for a streaming task) and, for a task with an answer, the answer
//! the model generates itself.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use memlab_core::config::BpttDepth;
use memlab_core::config::TrainConfig;
use memlab_core::data::{Metric, Split, Task};
use memlab_core::model::SegmentModel;

use crate::error::TrainError;
use crate::runner::{
    GeneratedFigures, RolloutFigures, generate_answers, run_segments, run_streaming, score_answers,
};

/// Figures of an evaluation over several batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalFigures {
    pub loss: f64,
    pub accuracy: f64,
    pub exact_match: f64,
    /// The task's own metric (accuracy, exact match, bits/char or perplexity).
    pub metric: Metric,
    pub value: f64,
    pub tokens: f64,
    /// Mean accuracy of each segment position (over batches).
    pub segment_accuracy: Vec<f64>,
    /// Token accuracy of the generated answer (tasks with an answer).
    pub generated_accuracy: Option<f64>,
    /// Exact match of the generated answer (tasks with an answer).
    pub generated_exact_match: Option<f64>,
}

impl EvalFigures {
    fn from_rollouts(
        metric: Metric,
        rollouts: &[RolloutFigures],
        generated: &[GeneratedFigures],
    ) -> Self {
        let tokens: f64 = rollouts.iter().map(|r| r.tokens).sum();
        let sequences: usize = rollouts.iter().map(|r| r.sequences).sum();
        let weighted = |f: fn(&RolloutFigures) -> f64| {
            if tokens > 0.0 {
                rollouts.iter().map(|r| f(r) * r.tokens).sum::<f64>() / tokens
            } else {
                0.0
            }
        };
        let loss = weighted(|r| r.loss);
        let accuracy = weighted(|r| r.accuracy);
        let exact_match = rollouts
            .iter()
            .map(|r| r.exact_match * r.sequences as f64)
            .sum::<f64>()
            / sequences.max(1) as f64;
        let n_segments = rollouts.iter().map(|r| r.segments.len()).max().unwrap_or(0);
        let segment_accuracy = (0..n_segments)
            .map(|i| {
                let (c, t) = rollouts
                    .iter()
                    .filter_map(|r| r.segments.get(i))
                    .fold((0.0, 0.0), |(c, t), s| {
                        (c + s.accuracy * s.tokens, t + s.tokens)
                    });
                if t > 0.0 { c / t } else { 0.0 }
            })
            .collect();
        let (generated_accuracy, generated_exact_match) = if generated.is_empty() {
            (None, None)
        } else {
            let correct: f64 = generated.iter().map(|g| g.correct).sum();
            let counted: f64 = generated.iter().map(|g| g.tokens).sum();
            let exact: usize = generated.iter().map(|g| g.exact).sum();
            let rows: usize = generated.iter().map(|g| g.sequences).sum();
            (
                Some(if counted > 0.0 {
                    correct / counted
                } else {
                    0.0
                }),
                Some(exact as f64 / rows.max(1) as f64),
            )
        };
        let value = match metric {
            Metric::TokenAccuracy => accuracy,
            Metric::ExactMatch => exact_match,
            Metric::BitsPerCharacter => loss / std::f64::consts::LN_2,
            Metric::Perplexity => loss.exp(),
            Metric::GeneratedAccuracy => generated_accuracy.unwrap_or(f64::NAN),
            Metric::GeneratedExactMatch => generated_exact_match.unwrap_or(f64::NAN),
        };
        Self {
            loss,
            accuracy,
            exact_match,
            metric,
            value,
            tokens,
            segment_accuracy,
            generated_accuracy,
            generated_exact_match,
        }
    }
}

/// Evaluates `model` on `batches` batches of `split`: fresh memory per batch,
/// or, for a streaming task, the split's first `batches` batches in order
/// with memory carried from each into the next (at most the whole split).
/// A task with an answer ([`Task::answer`]) is also scored on the answer
/// the model generates itself ([`generate_answers`]), beside the
/// teacher-forced figures.
pub fn evaluate<B: Backend, M: SegmentModel<B>>(
    model: &M,
    task: &dyn Task,
    split: Split,
    batches: usize,
    batch_size: usize,
    segment_len: usize,
    device: &B::Device,
) -> Result<EvalFigures, TrainError> {
    task.check_batch_size(batch_size)?;
    let available = task.batches(split, batch_size).unwrap_or(u64::MAX);
    let count = (batches as u64).min(available) as usize;
    let mut rollouts = Vec::with_capacity(count);
    let answer = task.answer().filter(|_| !task.streaming());
    let mut generated = Vec::new();
    if task.streaming() {
        let mut error = None;
        let device_batches = (0..count as u64).map_while(|index| {
            match task
                .batch(split, index, batch_size)
                .to_device::<B>(task.vocab_size(), device)
            {
                Ok(batch) => Some(batch),
                Err(e) => {
                    error = Some(e);
                    None
                }
            }
        });
        run_streaming(model, device_batches, segment_len, |f| rollouts.push(f));
        if let Some(e) = error {
            return Err(e.into());
        }
    } else {
        for index in 0..count {
            let host = task.batch(split, index as u64, batch_size);
            let batch = host.to_device::<B>(task.vocab_size(), device)?;
            let memory = model.init_memory(batch_size, device);
            let rollout = run_segments(model, &batch, segment_len, BpttDepth::Full, memory);
            rollouts.push(rollout.figures());
            if let Some(spec) = &answer {
                let answers = generate_answers(
                    model,
                    &host.inputs,
                    host.batch,
                    spec.start,
                    segment_len,
                    device,
                );
                generated.push(score_answers(
                    &answers,
                    &host.targets,
                    &host.mask,
                    host.batch,
                    spec,
                ));
            }
        }
    }
    Ok(EvalFigures::from_rollouts(
        task.metric(),
        &rollouts,
        &generated,
    ))
}

pub(crate) fn evaluate_on_valid<B: AutodiffBackend, M>(
    model: &M,
    task: &dyn Task,
    train: &TrainConfig,
    device: &B::Device,
) -> Result<EvalFigures, TrainError>
where
    M: AutodiffModule<B>,
    M::InnerModule: SegmentModel<B::InnerBackend>,
{
    evaluate::<B::InnerBackend, _>(
        &model.valid(),
        task,
        Split::Valid,
        train.eval_batches,
        train.batch_size,
        train.segment_len,
        device,
    )
}

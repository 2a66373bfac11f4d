//! The `memlab` command line's commands and their output, as a library for
//! its tests. The registry, the backends and running a model are
//! memlab-zoo's (re-exported here).

pub mod bench;
pub mod compare;
pub mod crosscheck;
pub mod data;
pub mod hf;
pub mod lm_rmt;
pub mod plot;
pub mod report;

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use burn::prelude::*;
use memlab_core::{Architecture, Split};
use memlab_train::runner::SegmentStream;
use memlab_train::{EvalFigures, evaluate};
use serde::Serialize;

pub use compare::{
    CompareOptions, CompareRow, PlannedRun, compare_plan, csv_table, markdown_table, run_compare,
};
pub use memlab_zoo::{
    BackendKind, BackendVisitor, LoadedRun, ModelJob, RunModelJob, alloc, backend, build_task,
    check_model, progress_bar, registry, run_job, run_train, threads, train_model, with_backend,
    with_run_model,
};

/// What `memlab eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub run_dir: PathBuf,
    pub arch: String,
    pub step: usize,
    pub split: Split,
    pub eval: EvalFigures,
}

/// `memlab eval`: loads a run directory's config and checkpoint and evaluates.
pub fn run_eval(
    run: &Path,
    backend: BackendKind,
    split: Split,
    batches: Option<usize>,
) -> Result<EvalReport> {
    struct Eval {
        split: Split,
        batches: Option<usize>,
    }
    impl RunModelJob for Eval {
        type Output = EvalFigures;
        fn run<A: Architecture, B: Backend>(
            self,
            model: &A::Model<B>,
            _: &A::Config,
            run: &LoadedRun,
            device: &B::Device,
        ) -> Result<EvalFigures> {
            let train = &run.config.train;
            Ok(evaluate(
                model,
                run.task.as_ref(),
                self.split,
                self.batches.unwrap_or(train.eval_batches),
                train.batch_size,
                train.segment_len,
                device,
            )?)
        }
    }
    let loaded = LoadedRun::open(run)?;
    let (step, eval) = with_run_model(&loaded, backend, Eval { split, batches })?;
    Ok(EvalReport {
        run_dir: run.to_path_buf(),
        arch: loaded.spec.arch,
        step,
        split,
        eval,
    })
}

/// How `memlab generate` picks each token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: greedy (arg-max); otherwise logits are divided by it.
    pub temperature: f64,
    /// Sample among the `k` most likely tokens only (0: all).
    pub top_k: usize,
    pub seed: u64,
}

impl Sampling {
    /// Picks a token id from one row of logits, drawing with `rng`.
    pub fn pick(&self, logits: &[f32], rng: &mut impl rand::Rng) -> i64 {
        use rand::RngExt;
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                    if x > best.1 { (i, x) } else { best }
                })
                .0 as i64
        };
        if self.temperature <= 0.0 {
            return argmax();
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let top = logits[order[0]] as f64;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - top) / self.temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        for (&i, w) in order.iter().zip(&weights) {
            if u < *w {
                return i as i64;
            }
            u -= w;
        }
        order[order.len() - 1] as i64
    }
}

/// What `memlab generate` reports at the end.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    pub arch: String,
    pub step: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub tokens_per_second: f64,
}

/// `memlab generate`: streams `tokens` tokens from a text run's model after
/// `prompt`, memory carried across segments exactly as in training
/// ([`memlab_train::runner::SegmentStream`]); once the run is loaded,
/// `on_token` receives the prompt, then each token's bytes as it is
/// generated. The stream reads a partial segment incrementally where the
/// model keeps per-token state; `re_read` makes it re-read the partial
/// segment for every token instead (the same tokens, slower: the reference).
#[allow(clippy::too_many_arguments)]
pub fn run_generate(
    run: &Path,
    backend: BackendKind,
    prompt: &str,
    tokens: usize,
    sampling: Sampling,
    re_read: bool,
    progress: bool,
    on_token: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<GenerateReport> {
    struct Generate<'a> {
        text: &'a str,
        prompt: Vec<i64>,
        tokens: usize,
        sampling: Sampling,
        re_read: bool,
        progress: bool,
        on_token: &'a mut dyn FnMut(&[u8]) -> Result<()>,
    }
    impl RunModelJob for Generate<'_> {
        type Output = f64;
        fn run<A: Architecture, B: Backend>(
            self,
            model: &A::Model<B>,
            _: &A::Config,
            run: &LoadedRun,
            device: &B::Device,
        ) -> Result<f64> {
            use rand::SeedableRng;
            let codec = run.task.codec().expect("checked before");
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.sampling.seed);
            let segment_len = run.config.train.segment_len;
            let mut stream = if self.re_read {
                SegmentStream::re_reading(model, 1, segment_len, device)
            } else {
                SegmentStream::new(model, 1, segment_len, device)
            };
            (self.on_token)(self.text.as_bytes())?;
            for &id in &self.prompt {
                stream.push(&[id]);
            }
            let bar = if self.progress {
                indicatif::ProgressBar::new(self.tokens as u64)
            } else {
                indicatif::ProgressBar::hidden()
            };
            let started = std::time::Instant::now();
            for i in 0..self.tokens {
                let logits = stream
                    .next_logits()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("float logits");
                let id = self.sampling.pick(&logits, &mut rng);
                (self.on_token)(&codec.decode(id))?;
                bar.set_position(i as u64 + 1);
                if i + 1 < self.tokens {
                    stream.push(&[id]);
                }
            }
            bar.finish_and_clear();
            Ok(self.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9))
        }
    }
    let loaded = LoadedRun::open(run)?;
    let codec = loaded.task.codec().ok_or_else(|| {
        anyhow!(
            "`memlab generate` needs a text run (task kind \"bytes\" or \"words\"); {} is a {} run",
            run.display(),
            loaded.task.name()
        )
    })?;
    let prompt_text = prompt;
    let prompt = codec
        .encode(prompt_text)
        .map_err(|e| anyhow!("the prompt: {e}"))?;
    if prompt.is_empty() {
        return Err(anyhow!("the prompt is empty; give at least one token"));
    }
    let prompt_tokens = prompt.len();
    let (step, tokens_per_second) = with_run_model(
        &loaded,
        backend,
        Generate {
            text: prompt_text,
            prompt,
            tokens,
            sampling,
            re_read,
            progress,
            on_token,
        },
    )?;
    Ok(GenerateReport {
        arch: loaded.spec.arch,
        step,
        prompt_tokens,
        generated_tokens: tokens,
        tokens_per_second,
    })
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Human name of a metric.
pub fn metric_name(metric: memlab_core::Metric) -> &'static str {
    metric.label()
}

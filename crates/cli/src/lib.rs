//! The `memlab` command line's commands and their output, as a library for
//! its tests. The registry, the backends and running a model are
//! memlab-zoo's (re-exported here).

pub mod bench;
pub mod crosscheck;
pub mod data;
pub mod lm_rmt;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, anyhow};
use burn::prelude::*;
use memlab_core::compare::compared_runs;
use memlab_core::runner::SegmentStream;
use memlab_core::train::{EvalFigures, TrainOptions, evaluate, run_dir};
use memlab_core::{Architecture, ExperimentConfig, ModelContext, ModelSpec, Split, Task};
use serde::Serialize;

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
/// ([`memlab_core::runner::SegmentStream`]); once the run is loaded,
/// `on_token` receives the prompt, then each token's bytes as it is
/// generated.
pub fn run_generate(
    run: &Path,
    backend: BackendKind,
    prompt: &str,
    tokens: usize,
    sampling: Sampling,
    progress: bool,
    on_token: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<GenerateReport> {
    struct Generate<'a> {
        text: &'a str,
        prompt: Vec<i64>,
        tokens: usize,
        sampling: Sampling,
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
            let mut stream = SegmentStream::new(model, 1, segment_len, device);
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

/// One row of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub setting: String,
    pub model: String,
    pub arch: String,
    pub parameters: usize,
    pub memory_floats_per_sequence: usize,
    pub segments: usize,
    pub metric: memlab_core::Metric,
    pub value: f64,
    pub loss: f64,
    /// Teacher-forced token accuracy.
    pub accuracy: f64,
    /// Token accuracy and exact match of the generated answer (tasks with
    /// an answer; see [`memlab_core::Task::answer`]).
    pub generated_accuracy: Option<f64>,
    pub generated_exact_match: Option<f64>,
    pub tokens_per_second: f64,
}

/// One run of a comparison: a model under a setting, its config, and its
/// task (built once for every run that reads the same one).
pub struct PlannedRun {
    pub setting: String,
    pub spec: ModelSpec,
    pub config: ExperimentConfig,
    pub task: Rc<dyn Task>,
}

/// The runs a comparison trains: one per (setting, model)
/// ([`memlab_core::compare::compared_runs`]), every model table parsed
/// against its task before any training starts.
pub fn compare_plan(config: &ExperimentConfig) -> Result<Vec<PlannedRun>> {
    let mut plan = Vec::new();
    // A task (a text corpus: read from disk) is built once per
    // (task table, seed); the models of a setting share it.
    let mut tasks: Vec<(String, Rc<dyn Task>)> = Vec::new();
    for run in compared_runs(config)? {
        let key = format!(
            "{}\n{}",
            toml::to_string(&run.config.task).context("re-serialising the task")?,
            run.config.run.seed
        );
        let task = match tasks.iter().find(|(k, _)| *k == key) {
            Some((_, task)) => task.clone(),
            None => {
                let task: Rc<dyn Task> = Rc::from(build_task(&run.config)?);
                tasks.push((key, task.clone()));
                task
            }
        };
        let section = format!("compare.models[{}]", run.model);
        check_model(&run.spec, &ModelContext::of(&run.config, task.as_ref()))
            .map_err(|e| anyhow!("{e} (in `{section}`)"))?;
        plan.push(PlannedRun {
            setting: run.setting,
            spec: run.spec,
            config: run.config,
            task,
        });
    }
    Ok(plan)
}

/// `memlab compare`: trains every model of `[compare]` under every setting on
/// the same task and seed; returns the rows.
pub fn run_compare(
    config: &ExperimentConfig,
    backend: BackendKind,
    progress: bool,
    mut on_row: impl FnMut(&CompareRow),
) -> Result<Vec<CompareRow>> {
    let plan = compare_plan(config)?;
    let mut rows = Vec::with_capacity(plan.len());
    for PlannedRun {
        setting,
        spec,
        config: run_config,
        task,
    } in plan
    {
        let options = TrainOptions {
            run_dir: run_dir(&run_config),
            resume: false,
            // A comparison trains its runs afresh each time it is run.
            overwrite: true,
            memory_limit: None,
            progress: progress.then(progress_bar),
        };
        let report = train_model(&run_config, &spec, task.as_ref(), &options, backend, None)
            .with_context(|| format!("training `{}` in setting `{setting}`", spec.label))?
            .expect("a run of this process alone reports");
        let row = CompareRow {
            setting,
            model: spec.label.clone(),
            arch: spec.arch.clone(),
            parameters: report.model.parameters,
            memory_floats_per_sequence: report.model.memory_floats_per_sequence,
            segments: task.seq_len().div_ceil(run_config.train.segment_len),
            metric: report.eval.metric,
            value: report.eval.value,
            loss: report.eval.loss,
            accuracy: report.eval.accuracy,
            generated_accuracy: report.eval.generated_accuracy,
            generated_exact_match: report.eval.generated_exact_match,
            tokens_per_second: report.tokens_per_second,
        };
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// A figure that a row may lack, for tables.
fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.4}"))
}

/// The comparison as a Markdown table. For a task scored on its generated
/// answer (copy, reverse, quadratic equations), the generated accuracy and
/// exact match come first: they are the papers' figures; the teacher-forced
/// accuracy follows.
pub fn markdown_table(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "| setting | model | segments | parameters | memory floats/seq | metric | valid value | generated accuracy | generated exact match | teacher-forced accuracy | valid loss | train tokens/s |\n\
         | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.4} | {:.4} | {:.0} |",
            r.setting,
            r.model,
            r.segments,
            r.parameters,
            r.memory_floats_per_sequence,
            metric_name(r.metric),
            r.value,
            optional(r.generated_accuracy),
            optional(r.generated_exact_match),
            r.accuracy,
            r.loss,
            r.tokens_per_second
        );
    }
    out
}

/// The comparison as CSV (an absent figure is an empty field).
pub fn csv_table(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "setting,model,arch,segments,parameters,memory_floats_per_sequence,metric,value,loss,accuracy,generated_accuracy,generated_exact_match,tokens_per_second\n",
    );
    let field = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.setting),
            csv_field(&r.model),
            csv_field(&r.arch),
            r.segments,
            r.parameters,
            r.memory_floats_per_sequence,
            metric_name(r.metric),
            r.value,
            r.loss,
            r.accuracy,
            field(r.generated_accuracy),
            field(r.generated_exact_match),
            r.tokens_per_second
        );
    }
    out
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

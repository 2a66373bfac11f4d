//! The `memlab` command line, as a library so that the benchmarks and tests
//! can drive the same registry and backends.

pub mod alloc;
pub mod backend;
pub mod bench;
pub mod crosscheck;
pub mod data;
pub mod registry;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use memlab_core::config::{ConfigError, set_path};
use memlab_core::registry::parse_model_config;
use memlab_core::train::{EvalFigures, TrainOptions, TrainReport, evaluate, run_dir, train};
use memlab_core::{
    Architecture, ArchitectureVisitor, ExperimentConfig, ModelContext, ModelSpec, Split, Task,
};
use serde::Serialize;

pub use backend::{BackendKind, BackendVisitor, with_backend};

/// Builds the task of a config.
pub fn build_task(config: &ExperimentConfig) -> Result<Box<dyn Task>, memlab_tasks::TaskError> {
    memlab_tasks::build_task(&config.task, config.run.seed)
}

fn model_context(config: &ExperimentConfig, task: &dyn Task) -> ModelContext {
    ModelContext {
        vocab_size: task.vocab_size(),
        max_segment_len: config.train.segment_len,
    }
}

/// Parses every model table of a config (so that errors surface before any
/// training starts).
pub fn check_model(spec: &ModelSpec, ctx: &ModelContext) -> Result<(), ConfigError> {
    struct Check<'a>(&'a ModelSpec, &'a ModelContext);
    impl ArchitectureVisitor for Check<'_> {
        type Output = Result<(), ConfigError>;
        fn visit<A: Architecture>(self) -> Self::Output {
            parse_model_config::<A>(self.0.fields.clone(), self.1).map(|_| ())
        }
    }
    registry::dispatch(&spec.arch, Check(spec, ctx))?
}

/// `memlab train`: trains the `[model]` of a config.
pub fn run_train(
    config: &ExperimentConfig,
    backend: BackendKind,
    resume: bool,
    progress: bool,
) -> Result<TrainReport> {
    let task = build_task(config)?;
    // The model table is parsed (and any error reported) inside `train_model`.
    let spec = ModelSpec::from_table(config.model_table()?, "model")?;
    let options = TrainOptions {
        run_dir: run_dir(config),
        resume,
        progress,
    };
    train_model(config, &spec, task.as_ref(), &options, backend)
}

fn train_model(
    config: &ExperimentConfig,
    spec: &ModelSpec,
    task: &dyn Task,
    options: &TrainOptions,
    backend: BackendKind,
) -> Result<TrainReport> {
    struct Job<'a> {
        config: &'a ExperimentConfig,
        spec: &'a ModelSpec,
        task: &'a dyn Task,
        options: &'a TrainOptions,
    }
    struct ArchJob<'a, B: AutodiffBackend> {
        job: Job<'a>,
        device: B::Device,
    }
    impl<B: AutodiffBackend> ArchitectureVisitor for ArchJob<'_, B> {
        type Output = Result<TrainReport>;
        fn visit<A: Architecture>(self) -> Result<TrainReport> {
            let Job {
                config,
                spec,
                task,
                options,
            } = self.job;
            let model_config =
                parse_model_config::<A>(spec.fields.clone(), &model_context(config, task))?;
            Ok(train::<A, B>(
                config,
                &model_config,
                task,
                options,
                &self.device,
            )?)
        }
    }
    impl BackendVisitor for Job<'_> {
        type Output = Result<TrainReport>;
        fn visit<B: AutodiffBackend>(self, device: B::Device) -> Result<TrainReport> {
            let arch = self.spec.arch.clone();
            registry::dispatch(&arch, ArchJob::<B> { job: self, device })?
        }
    }
    with_backend(
        backend,
        Job {
            config,
            spec,
            task,
            options,
        },
    )?
}

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
    let config_path = run.join("config.toml");
    let config = ExperimentConfig::load(&config_path, &[])
        .with_context(|| format!("{} is not a memlab run directory", run.display()))?;
    let task = build_task(&config)?;
    let spec = ModelSpec::from_table(config.model_table()?, "model")?;

    struct Job<'a> {
        config: &'a ExperimentConfig,
        spec: &'a ModelSpec,
        task: &'a dyn Task,
        checkpoint: PathBuf,
        split: Split,
        batches: usize,
    }
    struct ArchJob<'a, B: Backend> {
        job: Job<'a>,
        device: B::Device,
    }
    impl<B: Backend> ArchitectureVisitor for ArchJob<'_, B> {
        type Output = Result<(usize, EvalFigures)>;
        fn visit<A: Architecture>(self) -> Self::Output {
            let job = self.job;
            let ctx = model_context(job.config, job.task);
            let model_config = parse_model_config::<A>(job.spec.fields.clone(), &ctx)?;
            let checkpoint = Checkpoint::load(&job.checkpoint, A::NAME)?;
            let model = A::init::<B>(&model_config, &ctx, &self.device);
            let model = checkpoint.load_model(model, &self.device)?;
            let train = &job.config.train;
            let eval = evaluate(
                &model,
                job.task,
                job.split,
                job.batches,
                train.batch_size,
                train.segment_len,
                &self.device,
            )?;
            Ok((checkpoint.step, eval))
        }
    }
    impl BackendVisitor for Job<'_> {
        type Output = Result<(usize, EvalFigures)>;
        fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
            let arch = self.spec.arch.clone();
            registry::dispatch(&arch, ArchJob::<B::InnerBackend> { job: self, device })?
        }
    }

    let checkpoint = run.join(CHECKPOINT_FILE);
    if !checkpoint.exists() {
        return Err(anyhow!(
            "{} has no checkpoint ({CHECKPOINT_FILE}); was the run started?",
            run.display()
        ));
    }
    let (step, eval) = with_backend(
        backend,
        Job {
            config: &config,
            spec: &spec,
            task: task.as_ref(),
            checkpoint,
            split,
            batches: batches.unwrap_or(config.train.eval_batches),
        },
    )??;
    Ok(EvalReport {
        run_dir: run.to_path_buf(),
        arch: spec.arch,
        step,
        split,
        eval,
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
    pub accuracy: f64,
    pub tokens_per_second: f64,
}

/// The configs a comparison trains: one per (setting, model).
pub fn compare_plan(
    config: &ExperimentConfig,
) -> Result<Vec<(String, ModelSpec, ExperimentConfig)>> {
    let compare = config.compare.as_ref().ok_or_else(|| {
        ConfigError::new(
            "compare",
            "is missing (`memlab compare` needs a [compare] table)",
        )
    })?;
    let settings = if compare.settings.is_empty() {
        vec![memlab_core::config::CompareSetting {
            label: "default".into(),
            set: toml::Table::new(),
        }]
    } else {
        compare.settings.clone()
    };
    let base = toml::Table::try_from(config).context("re-serialising the config")?;
    let mut plan = Vec::new();
    for setting in &settings {
        for (i, table) in compare.models.iter().enumerate() {
            let section = format!("compare.models[{i}]");
            let spec = ModelSpec::from_table(table, &section)?;
            let mut doc = base.clone();
            doc.remove("compare");
            doc.insert("model".into(), toml::Value::Table(table.clone()));
            for (key, value) in &setting.set {
                set_path(&mut doc, key, value.clone())?;
            }
            let name = format!(
                "{}/{}-{}",
                config.run.name,
                slug(&setting.label),
                slug(&spec.label)
            );
            let mut run_config = ExperimentConfig::from_table(doc)
                .map_err(|e| anyhow!("{e} (in setting `{}`)", setting.label))?;
            run_config.run.name = name;
            let task = build_task(&run_config)?;
            check_model(&spec, &model_context(&run_config, task.as_ref()))
                .map_err(|e| anyhow!("{e} (in `{section}`)"))?;
            plan.push((setting.label.clone(), spec, run_config));
        }
    }
    Ok(plan)
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
    for (setting, spec, run_config) in plan {
        let task = build_task(&run_config)?;
        let options = TrainOptions {
            run_dir: run_dir(&run_config),
            resume: false,
            progress,
        };
        let report = train_model(&run_config, &spec, task.as_ref(), &options, backend)
            .with_context(|| format!("training `{}` in setting `{setting}`", spec.label))?;
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
            tokens_per_second: report.tokens_per_second,
        };
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The comparison as a Markdown table.
pub fn markdown_table(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "| setting | model | segments | parameters | memory floats/seq | metric | valid value | valid loss | train tokens/s |\n\
         | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.0} |",
            r.setting,
            r.model,
            r.segments,
            r.parameters,
            r.memory_floats_per_sequence,
            metric_name(r.metric),
            r.value,
            r.loss,
            r.tokens_per_second
        );
    }
    out
}

/// The comparison as CSV.
pub fn csv_table(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "setting,model,arch,segments,parameters,memory_floats_per_sequence,metric,value,loss,accuracy,tokens_per_second\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
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
    match metric {
        memlab_core::Metric::TokenAccuracy => "accuracy",
        memlab_core::Metric::ExactMatch => "exact match",
        memlab_core::Metric::BitsPerCharacter => "bits/char",
        memlab_core::Metric::Perplexity => "perplexity",
    }
}

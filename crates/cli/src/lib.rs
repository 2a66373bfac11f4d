//! The `memlab` command line, as a library so that the benchmarks and tests
//! can drive the same registry and backends.

pub mod alloc;
pub mod backend;
pub mod bench;
pub mod crosscheck;
pub mod data;
pub mod lm_rmt;
pub mod registry;
pub mod threads;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use memlab_core::config::{ConfigError, set_path};
use memlab_core::distributed::{Nodes, Peers, peer_devices, train_parallel};
use memlab_core::registry::parse_model_config;
use memlab_core::runner::SegmentStream;
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

pub(crate) fn model_context(config: &ExperimentConfig, task: &dyn Task) -> ModelContext {
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

/// `memlab train`: trains the `[model]` of a config, with `train.devices`
/// peers in this process, and with the other processes of `nodes` when
/// given (data parallelism). Returns the report of rank 0, which node 0
/// holds (`None` on the other nodes).
pub fn run_train(
    config: &ExperimentConfig,
    backend: BackendKind,
    resume: bool,
    overwrite: bool,
    progress: bool,
    nodes: Option<Nodes>,
) -> Result<Option<TrainReport>> {
    let task = build_task(config)?;
    // The model table is parsed (and any error reported) inside `train_model`.
    let spec = ModelSpec::from_table(config.model_table()?, "model")?;
    let options = TrainOptions {
        run_dir: run_dir(config),
        resume,
        overwrite,
        memory_limit: None,
        progress,
    };
    train_model(config, &spec, task.as_ref(), &options, backend, nodes)
}

fn train_model(
    config: &ExperimentConfig,
    spec: &ModelSpec,
    task: &dyn Task,
    options: &TrainOptions,
    backend: BackendKind,
    nodes: Option<Nodes>,
) -> Result<Option<TrainReport>> {
    if let Some(n) = &nodes
        && n.count != config.train.nodes
    {
        return Err(anyhow!(
            "--nodes {} but train.nodes is {}; give one of them",
            n.count,
            config.train.nodes
        ));
    }
    if nodes.is_none() && config.train.nodes > 1 {
        return Err(anyhow!(
            "train.nodes is {}: this process needs its place among them (--node-rank and \
             --orchestrator; docs/distributed.md)",
            config.train.nodes
        ));
    }
    let peers = Peers {
        devices: config.train.devices,
        nodes,
    };
    peers.check(config.train.batch_size)?;
    // On the CPU, refuse a model that cannot fit in the host's memory
    // (GPU backends: not yet checked).
    let limited;
    let options = if backend.is_cpu() && options.memory_limit.is_none() {
        limited = TrainOptions {
            memory_limit: memlab_core::train::host_available_memory(),
            ..options.clone()
        };
        &limited
    } else {
        options
    };
    struct Job<'a> {
        config: &'a ExperimentConfig,
        spec: &'a ModelSpec,
        task: &'a dyn Task,
        options: &'a TrainOptions,
        peers: Peers,
    }
    struct ArchJob<'a, B: AutodiffBackend> {
        job: Job<'a>,
        device: B::Device,
    }
    impl<B: AutodiffBackend> ArchitectureVisitor for ArchJob<'_, B> {
        type Output = Result<Option<TrainReport>>;
        fn visit<A: Architecture>(self) -> Result<Option<TrainReport>> {
            let Job {
                config,
                spec,
                task,
                options,
                peers,
            } = self.job;
            let model_config =
                parse_model_config::<A>(spec.fields.clone(), &model_context(config, task))?;
            if peers.world() == 1 {
                return Ok(Some(train::<A, B>(
                    config,
                    &model_config,
                    task,
                    options,
                    &self.device,
                )?));
            }
            let devices = peer_devices::<B>(&self.device, peers.devices);
            Ok(train_parallel::<A, B>(
                config,
                &model_config,
                task,
                options,
                &peers,
                &devices,
            )?)
        }
    }
    impl BackendVisitor for Job<'_> {
        type Output = Result<Option<TrainReport>>;
        fn visit<B: AutodiffBackend>(self, device: B::Device) -> Result<Option<TrainReport>> {
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
            peers,
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

/// Work on the trained model of a run directory, generic over the
/// architecture and the backend ([`with_run_model`] builds the model from
/// the run's config and loads its checkpoint; `config` is its parsed
/// `[model]`).
pub trait RunModelJob {
    type Output;
    fn run<A: Architecture, B: Backend>(
        self,
        model: &A::Model<B>,
        config: &A::Config,
        run: &LoadedRun,
        device: &B::Device,
    ) -> Result<Self::Output>;
}

/// A run directory's config and task.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub config: ExperimentConfig,
    pub task: Box<dyn Task>,
    pub spec: ModelSpec,
}

impl LoadedRun {
    /// Reads `run/config.toml` and builds its task.
    pub fn open(run: &Path) -> Result<Self> {
        let config_path = run.join("config.toml");
        let config = ExperimentConfig::load(&config_path, &[])
            .with_context(|| format!("{} is not a memlab run directory", run.display()))?;
        let task = build_task(&config)?;
        let spec = ModelSpec::from_table(config.model_table()?, "model")?;
        Ok(Self {
            dir: run.to_path_buf(),
            config,
            task,
            spec,
        })
    }
}

/// Builds the model of `run`, loads its checkpoint on `backend` and hands
/// it to `job`; returns the checkpoint's step and the job's output.
pub fn with_run_model<J: RunModelJob>(
    run: &LoadedRun,
    backend: BackendKind,
    job: J,
) -> Result<(usize, J::Output)> {
    struct Job<'a, J> {
        run: &'a LoadedRun,
        job: J,
    }
    struct ArchJob<'a, J, B: Backend> {
        job: Job<'a, J>,
        device: B::Device,
    }
    impl<J: RunModelJob, B: Backend> ArchitectureVisitor for ArchJob<'_, J, B> {
        type Output = Result<(usize, J::Output)>;
        fn visit<A: Architecture>(self) -> Self::Output {
            let Job { run, job } = self.job;
            let ctx = model_context(&run.config, run.task.as_ref());
            let model_config = parse_model_config::<A>(run.spec.fields.clone(), &ctx)?;
            let checkpoint = Checkpoint::load(&run.dir.join(CHECKPOINT_FILE), A::NAME)?;
            checkpoint.check_config(&run.config)?;
            let model = A::init::<B>(&model_config, &ctx, &self.device);
            let model = checkpoint.load_model(model, &self.device)?;
            let output = job.run::<A, B>(&model, &model_config, run, &self.device)?;
            Ok((checkpoint.step, output))
        }
    }
    impl<J: RunModelJob> BackendVisitor for Job<'_, J> {
        type Output = Result<(usize, J::Output)>;
        fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
            let arch = self.run.spec.arch.clone();
            registry::dispatch(&arch, ArchJob::<J, B::InnerBackend> { job: self, device })?
        }
    }

    let checkpoint = run.dir.join(CHECKPOINT_FILE);
    if !checkpoint.exists() {
        return Err(anyhow!(
            "{} has no checkpoint ({CHECKPOINT_FILE}); was the run started?",
            run.dir.display()
        ));
    }
    with_backend(backend, Job { run, job })?
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
            // A comparison trains its runs afresh each time it is run.
            overwrite: true,
            memory_limit: None,
            progress,
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

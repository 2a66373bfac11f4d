//! What each model costs, measured the same way for every architecture and
//! backend: `memlab bench` and the criterion benches
//! (`cargo bench -p memlab-benchmarks`) both time the steps defined here.
//!
//! - [`Prepared::step`]: one segment's forward pass from memory carried over
//!   `k` segments (inference);
//! - [`TrainPrepared::step`]: one segment's training step — forward from the
//!   (detached) carried memory, cross-entropy, backward, AdamW — with the
//!   memory carried on to the next step, as streaming training does;
//! - the full-attention contrast: the baseline over the whole sequence in one
//!   segment.
//!
//! Every step ends with the backend synchronised ([`Backend::sync`]) while
//! its outputs are still alive, so GPU time is inside the measurement and no
//! lazily fused work is skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use memlab_core::config::{ConfigError, Validate, check, parse_section, read_toml};
use memlab_core::flops::TRAIN_STEP_FORWARDS;
use memlab_core::registry::parse_model_config;
use memlab_core::seed::init_seeded;
use memlab_core::{Architecture, MemoryState, ModelContext, ModelSpec, SegmentModel};
use memlab_train::runner::{SegmentStream, greedy_tokens, token_nll_and_correct};
use memlab_train::step::{clip_gradients, optimizer_config};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, BackendVisitor, with_backend};
use crate::{ModelJob, alloc, run_job};

/// The shape every model of a benchmark is measured at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub segment: usize,
    pub vocab: usize,
}

/// Token ids `[batch, len]`, deterministic, all below `shape.vocab`.
pub fn tokens<B: Backend>(
    shape: Shape,
    len: usize,
    salt: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = (0..shape.batch * len)
        .map(|i| ((i * 31 + salt * 17) % shape.vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [shape.batch, len]), device)
}

/// Waits for the device (the tensors the step produced must still be alive).
fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("the device finished its work");
}

/// What a model is built for at `shape`.
pub fn context(shape: Shape) -> ModelContext {
    ModelContext {
        vocab_size: shape.vocab,
        max_segment_len: shape.segment,
    }
}

/// `A` (forward only) from a `[model]` table's fields (empty: the
/// defaults) at `shape`, its parameters drawn under seed 0.
fn seeded_model<B: Backend, A: Architecture>(
    shape: Shape,
    fields: &toml::Table,
    device: &B::Device,
) -> Result<A::Model<B>, ConfigError> {
    let ctx = context(shape);
    let config = parse_model_config::<A>(fields.clone(), &ctx)?;
    Ok(init_seeded::<B, _>(device, 0, || {
        A::init::<B>(&config, &ctx, device)
    }))
}

/// A model (forward only), its memory after the segments it has read, and
/// the next segment's tokens.
pub struct Prepared<B: Backend, A: Architecture> {
    pub model: A::Model<B>,
    pub memory: <A::Model<B> as SegmentModel<B>>::Memory,
    pub next: Tensor<B, 2, Int>,
    /// Segments read so far.
    pub carried: usize,
    shape: Shape,
    device: B::Device,
}

impl<B: Backend, A: Architecture> Prepared<B, A> {
    /// Builds `A` from a `[model]` table's fields (empty: the defaults) and
    /// runs `k` segments.
    pub fn new(
        shape: Shape,
        k: usize,
        fields: &toml::Table,
        device: &B::Device,
    ) -> Result<Self, ConfigError> {
        let model = seeded_model::<B, A>(shape, fields, device)?;
        let memory = model.init_memory(shape.batch, device);
        let mut prepared = Self {
            model,
            memory,
            next: tokens(shape, shape.segment, 0, device),
            carried: 0,
            shape,
            device: device.clone(),
        };
        prepared.advance_to(k);
        Ok(prepared)
    }

    /// Reads segments until `k` have been read (none if already past `k`),
    /// so that one model serves every point of an ascending scaling curve.
    pub fn advance_to(&mut self, k: usize) {
        let (shape, device) = (self.shape, &self.device);
        while self.carried < k {
            let memory = self.memory.clone();
            self.memory = self.model.forward_segment(self.next.clone(), memory).memory;
            sync::<B>(device);
            self.carried += 1;
            self.next = tokens(shape, shape.segment, self.carried, device);
        }
    }

    /// One segment's forward pass from the carried memory, synchronised.
    pub fn step(&self) {
        let out = self
            .model
            .forward_segment(self.next.clone(), self.memory.clone());
        sync::<B>(&self.device);
        drop(out);
    }
}

/// A model generating text greedily, one row, as `memlab generate` does:
/// each call of [`Generating::step`] starts a fresh stream from one prompt
/// token and generates `tokens` tokens, reading each one back to the host
/// to choose the next (which synchronises the device), incrementally
/// ([`SegmentStream::new`]) or re-reading the partial segment for every
/// token ([`SegmentStream::re_reading`], the reference).
pub struct Generating<B: Backend, A: Architecture> {
    pub model: A::Model<B>,
    segment: usize,
    vocab: usize,
    device: B::Device,
}

impl<B: Backend, A: Architecture> Generating<B, A> {
    /// Builds `A` from a `[model]` table's fields for `shape`'s segments.
    pub fn new(
        shape: Shape,
        fields: &toml::Table,
        device: &B::Device,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            model: seeded_model::<B, A>(shape, fields, device)?,
            segment: shape.segment,
            vocab: shape.vocab,
            device: device.clone(),
        })
    }

    /// Generates `tokens` tokens; returns them.
    pub fn step(&self, tokens: usize, incremental: bool) -> Vec<i64> {
        let mut stream = if incremental {
            SegmentStream::new(&self.model, 1, self.segment, &self.device)
        } else {
            SegmentStream::re_reading(&self.model, 1, self.segment, &self.device)
        };
        let mut next = (self.vocab / 2) as i64;
        let mut out = Vec::with_capacity(tokens);
        for _ in 0..tokens {
            stream.push(&[next]);
            next = greedy_tokens(stream.next_logits())[0];
            out.push(next);
        }
        out
    }

    /// Whether the model reads a partial segment incrementally (it keeps
    /// per-token state), found out by reading one token.
    pub fn is_incremental(&self) -> bool {
        let mut stream = SegmentStream::new(&self.model, 1, self.segment, &self.device);
        stream.push(&[0]);
        drop(stream.next_logits());
        stream.is_incremental()
    }
}

/// A model being trained one segment per step: forward from the detached
/// carried memory, next-token cross-entropy (plus the model's auxiliary
/// loss), backward, global-norm clipping and memlab's AdamW, as
/// `memlab train` steps (`memlab_train::step::{clip_gradients, optimizer_config}`).
pub struct TrainPrepared<B: AutodiffBackend, A: Architecture> {
    model: Option<A::TrainModel<B>>,
    optimizer: OptimizerAdaptor<AdamW, A::TrainModel<B>, B>,
    memory: <A::TrainModel<B> as SegmentModel<B>>::Memory,
    inputs: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
    device: B::Device,
}

impl<B: AutodiffBackend, A: Architecture> TrainPrepared<B, A> {
    pub fn new(
        shape: Shape,
        fields: &toml::Table,
        device: &B::Device,
    ) -> Result<Self, ConfigError> {
        let ctx = context(shape);
        let config = parse_model_config::<A>(fields.clone(), &ctx)?;
        let model = init_seeded::<B, _>(device, 0, || A::init_train::<B>(&config, &ctx, device));
        let memory = model.init_memory(shape.batch, device);
        let sequence = tokens::<B>(shape, shape.segment + 1, 0, device);
        Ok(Self {
            model: Some(model),
            optimizer: optimizer_config(&Default::default()).init(),
            memory,
            inputs: sequence.clone().narrow(1, 0, shape.segment),
            targets: sequence.narrow(1, 1, shape.segment),
            device: device.clone(),
        })
    }

    /// One training step; returns its loss (read back only on request, so
    /// that timing it costs no extra transfer).
    pub fn step(&mut self) -> Tensor<B, 1> {
        let model = self.model.take().expect("a model between steps");
        let out = model.forward_segment(self.inputs.clone(), self.memory.clone().detach());
        let (nll, _) = token_nll_and_correct(out.logits, self.targets.clone());
        let mut loss = nll.mean();
        if let Some(aux) = out.aux_loss {
            loss = loss + aux;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (grads, _) = clip_gradients(&model, grads, &Default::default());
        self.model = Some(self.optimizer.step(1e-4, model, grads));
        self.memory = out.memory.detach();
        sync::<B>(&self.device);
        loss.detach()
    }
}

/// The baseline over a whole sequence of `len` tokens in one segment: the
/// cost a model without segment recurrence pays, quadratic in `len`.
/// `fields` are the baseline's (its learned position table grows to `len`).
pub fn full_attention<B: Backend>(
    shape: Shape,
    len: usize,
    fields: &toml::Table,
    device: &B::Device,
) -> Result<Prepared<B, memlab_baseline::BaselineArch>, ConfigError> {
    Prepared::new(
        Shape {
            segment: len,
            ..shape
        },
        0,
        fields,
        device,
    )
}

/// The wall times of a figure's timed calls. A noisy machine's figure is
/// their median, with the interquartile range beside it as its spread
/// (issue 38: 15 timed calls moved one figure by 2.5x between rounds; the
/// mean of a loop is dragged by every stall).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Every timed call, in call order.
    pub calls: Vec<Duration>,
}

impl Timing {
    /// The `p` quantile (0..=1) of the call times, interpolated linearly
    /// between the two nearest ranks (R's and NumPy's default, type 7).
    pub fn quantile(&self, p: f64) -> Duration {
        let mut sorted: Vec<f64> = self.calls.iter().map(Duration::as_secs_f64).collect();
        sorted.sort_by(f64::total_cmp);
        let Some(last) = sorted.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        let at = p.clamp(0.0, 1.0) * last as f64;
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        let t = sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64);
        Duration::from_secs_f64(t)
    }

    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// `work` units per second at the median call time, and at the third
    /// and first quartiles' (the slow and fast ends of the middle half).
    pub fn rates(&self, work: f64) -> Rate {
        let per_s = |t: Duration| work / t.as_secs_f64();
        Rate {
            median: per_s(self.median()),
            low: per_s(self.quantile(0.75)),
            high: per_s(self.quantile(0.25)),
            calls: self.calls.len(),
        }
    }
}

/// A throughput over a figure's timed calls: at the median call time, and
/// the interquartile range's ends (`low` from the slower quartile).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    /// How many calls were timed.
    pub calls: usize,
}

/// Times `f` call by call after `warmup` untimed calls (which absorb kernel
/// compilation and autotune on GPU backends): at least `iters` calls, and
/// more until `min_seconds` of timed calls have passed, so that a fast
/// step is timed often enough for a stable median.
pub fn time_calls(warmup: usize, iters: usize, min_seconds: f64, mut f: impl FnMut()) -> Timing {
    for _ in 0..warmup {
        f();
    }
    let mut calls = Vec::with_capacity(iters);
    let mut total = Duration::ZERO;
    while calls.len() < iters.max(1) || total.as_secs_f64() < min_seconds {
        let start = Instant::now();
        f();
        let t = start.elapsed();
        total += t;
        calls.push(t);
    }
    Timing { calls }
}

/// `[bench]` of a bench config: the shape, what to measure, and the models
/// (`[[bench.models]]`, `[model]` tables with `arch` and an optional `label`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BenchConfig {
    /// Names the output files' folder: `out_dir/name`.
    pub name: String,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    pub segment_len: usize,
    pub vocab_size: usize,
    /// Untimed calls before timing each step (GPU kernel compilation and
    /// autotune happen on the first call of every shape).
    pub warmup: usize,
    /// Timed calls per figure, at the least: more are timed until
    /// `min_seconds` have passed. Each figure is the median call.
    pub iters: usize,
    /// Seconds of timed calls per figure, at the least (1 by default).
    pub min_seconds: f64,
    /// Measure the training step too (forward + backward + AdamW).
    pub train: bool,
    /// Scaling: the forward cost of one segment after each of these numbers
    /// of carried segments.
    pub carried: Vec<usize>,
    /// Scaling contrast: the baseline over whole sequences of these lengths.
    pub full_attention: Vec<usize>,
    /// Generation: tokens generated greedily per timed call, one row, with
    /// the incremental stream and with the re-reading one (0: not timed).
    pub generate: usize,
    pub models: Vec<toml::Table>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            name: "bench".into(),
            out_dir: "runs".into(),
            batch_size: 4,
            segment_len: 64,
            vocab_size: 256,
            warmup: 2,
            iters: 5,
            min_seconds: 1.0,
            train: true,
            carried: vec![1, 4, 16, 64, 256],
            full_attention: vec![64, 256, 1024],
            generate: 0,
            models: Vec::new(),
        }
    }
}

impl Validate for BenchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        check::positive("batch_size", self.batch_size)?;
        check::positive("segment_len", self.segment_len)?;
        check::positive("vocab_size", self.vocab_size)?;
        check::positive("iters", self.iters)?;
        if !(self.min_seconds.is_finite() && self.min_seconds >= 0.0) {
            return Err(ConfigError::new(
                "min_seconds",
                format!(
                    "must be a number of seconds, 0 or more (got {})",
                    self.min_seconds
                ),
            ));
        }
        if self.models.is_empty() {
            return Err(ConfigError::new("models", "must list at least one model"));
        }
        if let Some(i) = self.full_attention.iter().position(|&l| l == 0) {
            return Err(ConfigError::new(
                format!("full_attention[{i}]"),
                "must be a positive length",
            ));
        }
        Ok(())
    }
}

/// A bench config file: `[bench]` and its models, all checked.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub config: BenchConfig,
    pub models: Vec<ModelSpec>,
}

impl BenchPlan {
    /// Reads `path`, applies `key=value` overrides and checks every model
    /// table against the bench's shape.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut doc = read_toml(path)?;
        for o in overrides {
            memlab_core::config::apply_override(&mut doc, o)?;
        }
        Self::from_table(doc)
    }

    pub fn from_table(mut doc: toml::Table) -> Result<Self> {
        let bench = doc.remove("bench").ok_or_else(|| {
            ConfigError::new("bench", "is missing (a bench config needs [bench])")
        })?;
        if let Some(other) = doc.keys().next() {
            return Err(ConfigError::new(
                other.clone(),
                "unknown table (a bench config holds [bench] and [[bench.models]])",
            )
            .into());
        }
        let config: BenchConfig = parse_section(bench, "bench")?;
        let ctx = context(config.shape());
        let mut models = Vec::with_capacity(config.models.len());
        for (i, table) in config.models.iter().enumerate() {
            let section = format!("bench.models[{i}]");
            let spec = ModelSpec::from_table(table, &section)?;
            crate::check_model(&spec, &ctx).map_err(|e| anyhow!("{e} (in `{section}`)"))?;
            models.push(spec);
        }
        Ok(Self { config, models })
    }
}

impl BenchPlan {
    /// The baseline's fields for the full-attention contrast: the bench's
    /// own baseline where it lists one, else the defaults.
    pub fn baseline_fields(&self) -> toml::Table {
        self.models
            .iter()
            .find(|m| m.arch == <memlab_baseline::BaselineArch as Architecture>::NAME)
            .map(|m| m.fields.clone())
            .unwrap_or_default()
    }
}

impl BenchConfig {
    pub fn shape(&self) -> Shape {
        Shape {
            batch: self.batch_size,
            segment: self.segment_len,
            vocab: self.vocab_size,
        }
    }

    /// The batch × segment column of the tables.
    pub fn shape_label(&self) -> String {
        format!("{}×{}", self.batch_size, self.segment_len)
    }
}

/// One model on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub arch: String,
    pub backend: BackendKind,
    /// batch × segment.
    pub config: String,
    pub parameters: usize,
    /// Forward tokens per second (median call, interquartile range, call
    /// count), memory carried over `warmup` segments.
    pub forward: Rate,
    /// Training tokens per second, when `train` is on.
    pub train: Option<Rate>,
    /// Peak bytes during a training step (forward step without `train`),
    /// parameters, optimizer state and memory included: the heap's peak on
    /// the CPU (the `memlab` binary counts its allocations), the memory
    /// pool's size on GPU backends.
    pub peak_memory_bytes: Option<u64>,
    /// Model FLOPs per token of a forward pass ([`memlab_core::flops`]).
    pub flops_per_token: f64,
}

impl BenchRow {
    /// Forward tokens per second at the median call.
    pub fn forward_tokens_per_s(&self) -> f64 {
        self.forward.median
    }

    /// Training tokens per second at the median call.
    pub fn train_tokens_per_s(&self) -> Option<f64> {
        self.train.map(|t| t.median)
    }

    /// Achieved model FLOP/s of the forward pass.
    pub fn forward_flops_per_s(&self) -> f64 {
        self.flops_per_token * self.forward_tokens_per_s()
    }

    /// Achieved model FLOP/s of training (a step counts as three forwards).
    pub fn train_flops_per_s(&self) -> Option<f64> {
        self.train_tokens_per_s()
            .map(|t| t * self.flops_per_token * TRAIN_STEP_FORWARDS as f64)
    }
}

/// Greedy generation of one model on one backend: tokens/s with the
/// incremental stream and with the re-reading one.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationRow {
    pub model: String,
    pub arch: String,
    pub backend: BackendKind,
    pub segment_len: usize,
    /// Tokens generated per timed call.
    pub tokens: usize,
    /// Whether the model reads a partial segment incrementally (else both
    /// figures re-read it).
    pub incremental: bool,
    /// Tokens/s of the stream as `memlab generate` runs it.
    pub cached: Rate,
    /// Tokens/s re-reading the partial segment for every token.
    pub re_read: Rate,
    /// Whether both generated the same tokens.
    pub same_tokens: bool,
}

impl GenerationRow {
    /// How many times faster the incremental stream is (medians).
    pub fn speedup(&self) -> f64 {
        self.cached.median / self.re_read.median
    }
}

/// One point of the scaling plot: tokens/s of one segment after `carried`
/// segments (sequence length `(carried + 1) × segment`), or of the baseline
/// over the whole sequence (`series` = "full attention").
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    pub series: String,
    pub backend: BackendKind,
    pub sequence_len: usize,
    pub tokens_per_s: f64,
}

/// Everything one `memlab bench` run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    pub rows: Vec<BenchRow>,
    pub scaling: Vec<ScalingPoint>,
    pub generation: Vec<GenerationRow>,
}

pub const FULL_ATTENTION: &str = "full attention (baseline)";

/// Runs every model of the plan on every backend. `after_model` sees the
/// report so far after each model (its last row is the new one), so that a
/// run stopped part-way (a GPU lease running out) keeps what it measured.
pub fn run_bench(
    plan: &BenchPlan,
    backends: &[BackendKind],
    progress: bool,
    mut after_model: impl FnMut(&BenchReport) -> Result<()>,
) -> Result<BenchReport> {
    let mut report = BenchReport::default();
    let per_model = 1 + plan.config.carried.len() + usize::from(plan.config.generate > 0);
    let total = backends.len() * (plan.models.len() * per_model + plan.config.full_attention.len());
    let bar = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("bench [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    for &backend in backends {
        for spec in &plan.models {
            bar.set_message(format!("{} on {backend}", spec.label));
            let job = MeasureModel {
                plan,
                spec,
                backend,
                bar: &bar,
            };
            let (row, points, generation) = run_job(backend, &spec.arch, job)?
                .with_context(|| format!("benchmarking `{}` on {backend}", spec.label))?;
            report.rows.push(row);
            report.scaling.extend(points);
            report.generation.extend(generation);
            after_model(&report)?;
        }
        bar.set_message(format!("full attention on {backend}"));
        let points = with_backend(
            backend,
            FullAttentionJob {
                plan,
                backend,
                bar: &bar,
            },
        )??;
        report.scaling.extend(points);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// One model of the plan on one backend: its row and its scaling points.
struct MeasureModel<'a> {
    plan: &'a BenchPlan,
    spec: &'a ModelSpec,
    backend: BackendKind,
    bar: &'a ProgressBar,
}

impl ModelJob for MeasureModel<'_> {
    type Output = Result<(BenchRow, Vec<ScalingPoint>, Option<GenerationRow>)>;
    fn run<A: Architecture, B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let MeasureModel {
            plan,
            spec,
            backend,
            bar,
        } = self;
        let device = &device;
        let c = &plan.config;
        let shape = c.shape();
        let tokens_per_step = (shape.batch * shape.segment) as f64;
        let time = |f: &mut dyn FnMut()| time_calls(c.warmup, c.iters, c.min_seconds, f);

        let forward = Prepared::<B::InnerBackend, A>::new(shape, c.warmup, &spec.fields, device)?;
        let parameters = forward.model.num_params();
        let flops_per_token =
            forward.model.forward_flops(shape.segment) as f64 / shape.segment as f64;
        let forward_rate = time(&mut || forward.step()).rates(tokens_per_step);
        let mut peak = None;
        if !c.train {
            peak = peak_memory::<B>(backend, device, || forward.step());
        }
        drop(forward);
        bar.inc(1);

        let mut train_rate = None;
        if c.train {
            let mut train = TrainPrepared::<B, A>::new(shape, &spec.fields, device)?;
            let rate = time(&mut || {
                train.step();
            })
            .rates(tokens_per_step);
            let loss: f32 = train.step().into_scalar().elem();
            if !loss.is_finite() {
                return Err(anyhow!("`{}`: the training loss is {loss}", spec.label));
            }
            peak = peak_memory::<B>(backend, device, || {
                train.step();
            });
            train_rate = Some(rate);
        }

        let mut points = Vec::with_capacity(c.carried.len());
        let mut after = Prepared::<B::InnerBackend, A>::new(shape, 0, &spec.fields, device)?;
        for &k in &c.carried {
            if k < after.carried {
                // A point before the last one: read again from the start.
                after = Prepared::new(shape, 0, &spec.fields, device)?;
            }
            after.advance_to(k);
            let rate = time(&mut || after.step()).rates(tokens_per_step);
            points.push(ScalingPoint {
                series: spec.label.clone(),
                backend,
                sequence_len: (k + 1) * shape.segment,
                tokens_per_s: rate.median,
            });
            bar.inc(1);
        }

        let generation = (c.generate > 0)
            .then(|| -> Result<GenerationRow> {
                let g = Generating::<B::InnerBackend, A>::new(shape, &spec.fields, device)?;
                let tokens = c.generate as f64;
                let cached = time(&mut || drop(g.step(c.generate, true))).rates(tokens);
                let re_read = time(&mut || drop(g.step(c.generate, false))).rates(tokens);
                bar.inc(1);
                Ok(GenerationRow {
                    model: spec.label.clone(),
                    arch: spec.arch.clone(),
                    backend,
                    segment_len: shape.segment,
                    tokens: c.generate,
                    incremental: g.is_incremental(),
                    cached,
                    re_read,
                    same_tokens: g.step(c.generate, true) == g.step(c.generate, false),
                })
            })
            .transpose()?;

        let row = BenchRow {
            model: spec.label.clone(),
            arch: spec.arch.clone(),
            backend,
            config: c.shape_label(),
            parameters,
            forward: forward_rate,
            train: train_rate,
            peak_memory_bytes: peak,
            flops_per_token,
        };
        Ok((row, points, generation))
    }
}

struct FullAttentionJob<'a> {
    plan: &'a BenchPlan,
    backend: BackendKind,
    bar: &'a ProgressBar,
}

impl BackendVisitor for FullAttentionJob<'_> {
    type Output = Result<Vec<ScalingPoint>>;
    fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let c = &self.plan.config;
        let fields = self.plan.baseline_fields();
        let mut points = Vec::new();
        for &len in &c.full_attention {
            let step = full_attention::<B::InnerBackend>(c.shape(), len, &fields, &device)?;
            let timing = time_calls(c.warmup, c.iters, c.min_seconds, || step.step());
            points.push(ScalingPoint {
                series: FULL_ATTENTION.into(),
                backend: self.backend,
                sequence_len: len,
                tokens_per_s: timing.rates((c.batch_size * len) as f64).median,
            });
            self.bar.inc(1);
        }
        Ok(points)
    }
}

/// Peak memory of one call: the counting allocator on the CPU (when the
/// binary installed it), the GPU memory pool otherwise.
fn peak_memory<B: Backend>(
    backend: BackendKind,
    device: &B::Device,
    f: impl FnOnce(),
) -> Option<u64> {
    match backend {
        cpu if cpu.is_cpu() => alloc::peak_during(f).map(|b| b as u64),
        gpu => {
            // Pages no longer used are freed first, so the pool afterwards
            // holds what this call needed at its peak.
            B::memory_cleanup(device);
            f();
            gpu.device_memory_reserved()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Timing {
        Timing {
            calls: v.iter().map(|&m| Duration::from_millis(m)).collect(),
        }
    }

    /// Quantiles by hand (type 7): for 10, 20, 30, 40, 100 ms the median is
    /// the middle call, the quartiles the 2nd and 4th; for an even count
    /// the median lies halfway; call order does not matter.
    #[test]
    fn quantiles_interpolate_between_the_nearest_ranks() {
        let t = ms(&[40, 10, 100, 30, 20]);
        assert_eq!(t.median(), Duration::from_millis(30));
        assert_eq!(t.quantile(0.25), Duration::from_millis(20));
        assert_eq!(t.quantile(0.75), Duration::from_millis(40));
        assert_eq!(t.quantile(1.0), Duration::from_millis(100));
        let even = ms(&[10, 20, 30, 40]);
        assert_eq!(even.median(), Duration::from_millis(25));
        // 0.25 × 3 = 0.75 of the way from 10 to 20.
        assert_eq!(even.quantile(0.25), Duration::from_micros(17_500));
        assert_eq!(ms(&[]).median(), Duration::ZERO);

        // 100 tokens a call: the median call's rate, the slow quartile's
        // below it, the fast one's above; one stall (100 ms) moves neither.
        let r = t.rates(100.0);
        assert!((r.median - 100.0 / 0.030).abs() < 1e-9);
        assert!((r.low - 100.0 / 0.040).abs() < 1e-9);
        assert!((r.high - 100.0 / 0.020).abs() < 1e-9);
        assert_eq!(r.calls, 5);
    }

    /// At least `iters` calls, and more until `min_seconds` have passed;
    /// the warm-up calls are not timed.
    #[test]
    fn calls_are_timed_until_both_the_count_and_the_time_are_reached() {
        let mut n = 0;
        let t = time_calls(3, 4, 0.0, || n += 1);
        assert_eq!((n, t.calls.len()), (7, 4));

        let mut n = 0;
        let t = time_calls(1, 2, 0.03, || {
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        });
        let total: Duration = t.calls.iter().sum();
        assert!(total.as_secs_f64() >= 0.03, "{total:?}");
        // Each call sleeps at least 2 ms: 15 calls suffice, and the loop
        // stops at the first call past 0.03 s.
        assert!(
            t.calls.len() >= 2 && t.calls.len() <= 15,
            "{}",
            t.calls.len()
        );
        assert_eq!(n, t.calls.len() + 1);
    }
}

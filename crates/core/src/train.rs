//! The training loop, shared by every architecture: Burn's AdamW with
//! gradient clipping, linear warm-up times cosine decay (Burn's schedulers),
//! seeded and reproducible, periodic evaluation, atomic checkpoints with the
//! optimizer state, and resume.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::lr_scheduler::composed::{ComposedLrScheduler, ComposedLrSchedulerConfig};
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointError, write_atomically};
use crate::config::{BpttDepth, ClipMode, ExperimentConfig, GradientMethod, TrainConfig};
use crate::data::BatchShare;
use crate::data::{BatchError, Metric, SequenceBatch, Split, Task};
use crate::distributed::Peer;
use crate::model::MemoryState;
use crate::model::{ModelContext, ModelDescription, SegmentModel};
use crate::mrbp::memory_replay_backprop;
use crate::registry::Architecture;
use crate::runner::{
    GeneratedFigures, RolloutFigures, Tallies, generate_answers, run_segments, run_streaming,
    score_answers,
};
use crate::seed::{materialize, seeded, seeded_step};

/// Anything that stops a run.
#[derive(Debug)]
pub enum TrainError {
    Batch(BatchError),
    Checkpoint(CheckpointError),
    Io(PathBuf, std::io::Error),
    Resume(String),
    /// The directory already holds a run and neither resuming nor
    /// overwriting it was asked for.
    RunExists(PathBuf),
    /// Resuming was asked for, and the directory holds no checkpoint.
    NoCheckpoint(PathBuf),
    /// Another process is training in the directory.
    Locked(PathBuf),
    /// The loss or the gradient norm of a step is NaN or infinite.
    NonFinite {
        step: usize,
        what: &'static str,
    },
    /// The peers' layout does not fit the run (data parallelism).
    Parallel(String),
    /// A collective operation between peers failed (or another peer stopped).
    Collective(String),
    /// Training would need more memory than the machine has.
    TooLarge {
        parameters: usize,
        needed: u64,
        available: u64,
    },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Batch(e) => write!(f, "bad batch: {e}"),
            TrainError::Checkpoint(e) => write!(f, "{e}"),
            TrainError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            TrainError::Resume(why) => write!(f, "cannot resume: {why}"),
            TrainError::Parallel(why) => write!(f, "data-parallel training: {why}"),
            TrainError::Collective(why) => write!(
                f,
                "a collective operation between the peers failed ({why}); another peer \
                 stopped or cannot be reached"
            ),
            TrainError::RunExists(dir) => write!(
                f,
                "{} already holds a run; resume it, or replace it (overwrite)",
                dir.display()
            ),
            TrainError::NoCheckpoint(dir) => write!(
                f,
                "cannot resume: {} holds no checkpoint ({CHECKPOINT_FILE}); start the run \
                 without resuming",
                dir.display()
            ),
            TrainError::Locked(dir) => write!(
                f,
                "another memlab process is training in {} (it holds {}); wait for it or \
                 choose another run.name",
                dir.display(),
                dir.join(LOCK_FILE).display()
            ),
            TrainError::TooLarge {
                parameters,
                needed,
                available,
            } => write!(
                f,
                "the model has {parameters} parameters: training needs at least {:.1} GiB \
                 (f32 weights, gradients and AdamW's two moments, and a step's logits), more \
                 than the {:.1} GiB available; make the model or the batch smaller",
                *needed as f64 / GIB,
                *available as f64 / GIB
            ),
            TrainError::NonFinite { step, what } => write!(
                f,
                "the {what} of step {step} is not finite (NaN or infinite): training stopped; \
                 the last checkpoint (from before step {step}) is kept. Lower train.lr, \
                 model.init_std or raise train.warmup_steps"
            ),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<BatchError> for TrainError {
    fn from(e: BatchError) -> Self {
        TrainError::Batch(e)
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError::Checkpoint(e)
    }
}

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

/// How a run is shown and where it is recorded.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run directory (config.toml, metrics.jsonl, checkpoint.mpk).
    pub run_dir: PathBuf,
    /// Continue from the run directory's checkpoint (which must exist).
    pub resume: bool,
    /// Replace a run the directory already holds (else that is an error).
    pub overwrite: bool,
    /// Refuse to start when the estimate of what training holds in memory
    /// ([`memory_estimate`]) exceeds this many bytes (the CLI gives the
    /// host's available memory for the CPU backend).
    pub memory_limit: Option<u64>,
    /// Told how the run goes (rank 0 only): a progress bar, a log.
    pub progress: Option<Progress>,
}

/// What the training loop reports to [`TrainOptions::progress`] as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent<'a> {
    /// Before the first step: the architecture's name, the run's steps and
    /// the step it starts from (a resumed run's checkpoint).
    Started {
        name: &'a str,
        steps: usize,
        start_step: usize,
    },
    /// A step at which the training figures were read (`train.log_every`).
    Logged {
        step: usize,
        loss: f64,
        accuracy: f64,
        tokens_per_second: f64,
    },
    /// `done` steps are complete.
    Stepped { done: usize },
    /// The last step is done (evaluation follows).
    Finished,
}

/// A receiver of [`TrainEvent`]s, shared by the peers of a data-parallel run.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(TrainEvent<'_>) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(TrainEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: ModelDescription,
    pub steps: usize,
    /// Step the run started from (0, or the resumed checkpoint's step).
    pub resumed_from: usize,
    pub final_train_loss: f64,
    pub eval: EvalFigures,
    /// Training throughput (input tokens per second, excluding evaluation).
    pub tokens_per_second: f64,
    pub run_dir: PathBuf,
}

/// The optimizer of every training run (and of the benchmarks' training
/// step): Burn's AdamW with the config's weight decay, and Burn's own
/// per-tensor clipping when `grad_clip_mode = "per-tensor"`; global-norm
/// clipping is [`clip_gradients`], applied before the optimizer step.
pub fn optimizer_config(train: &TrainConfig) -> AdamWConfig {
    let per_tensor = train.grad_clip > 0.0 && train.grad_clip_mode == ClipMode::PerTensor;
    AdamWConfig::new()
        .with_weight_decay(train.weight_decay as f32)
        .with_grad_clipping(per_tensor.then_some(
            burn::grad_clipping::GradientClippingConfig::Norm(train.grad_clip as f32),
        ))
}

/// The norm of all of `model`'s parameter gradients in `grads` taken
/// together, `√Σ‖g‖²`, on the device (`[1]`; `None` without gradients).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    struct Squares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        sums: Vec<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Squares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                self.sums.push(g.powi_scalar(2).sum());
            }
        }
    }
    let mut squares = Squares::<B> {
        grads,
        sums: Vec::new(),
    };
    model.visit(&mut squares);
    (!squares.sums.is_empty()).then(|| Tensor::cat(squares.sums, 0).sum().sqrt())
}

/// Clipping by the global norm, as `torch.nn.utils.clip_grad_norm_` (which
/// LM-RMT, Transformer-XL and the ∞-former call): every gradient is scaled
/// by `min(1, max_norm / (norm + 1e-6))`, `norm` the norm of all gradients
/// together. Burn's own clipping works per tensor only, hence this pass.
/// The factor stays on the device (no synchronisation). Returns the
/// gradients and the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, Option<Tensor<B::InnerBackend, 1>>) {
    struct Scale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: Tensor<B::InnerBackend, 1>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]);
                self.grads.register(param.id, g * factor);
            }
        }
    }
    let Some(norm) = global_grad_norm(model, &grads) else {
        return (grads, None);
    };
    let factor = (norm.clone().add_scalar(1e-6).recip() * max_norm).clamp_max(1.0);
    model.visit(&mut Scale::<B> {
        grads: &mut grads,
        factor,
    });
    (grads, Some(norm))
}

/// The clipping `train` asks for that the optimizer does not do itself:
/// global-norm clipping (per-tensor clipping is in [`optimizer_config`]).
/// Returns the gradients and, when it computed it, their global norm
/// before clipping (on the device).
pub fn clip_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
    train: &TrainConfig,
) -> (GradientsParams, Option<Tensor<B::InnerBackend, 1>>) {
    if train.grad_clip > 0.0 && train.grad_clip_mode == ClipMode::Global {
        clip_global_norm(model, grads, train.grad_clip)
    } else {
        (grads, None)
    }
}

/// One training step's gradients, as `train.gradients` says: back-
/// propagation through the rollout (truncated as `train.bptt()` says), or
/// memory replay back-propagation. Returns the gradients (before clipping),
/// the rollout's figures on the device and the memory after the batch.
pub fn step_gradients<B, M>(
    model: &M,
    batch: &SequenceBatch<B>,
    train: &TrainConfig,
    memory: M::Memory,
) -> (GradientsParams, Tallies<B>, M::Memory)
where
    B: AutodiffBackend,
    M: SegmentModel<B> + AutodiffModule<B>,
    M::InnerModule: SegmentModel<B::InnerBackend>,
{
    match train.gradients {
        GradientMethod::Bptt => {
            let rollout = run_segments(model, batch, train.segment_len, train.bptt(), memory);
            let grads = GradientsParams::from_grads(rollout.loss.backward(), model);
            (grads, rollout.tallies, rollout.memory)
        }
        GradientMethod::Replay => {
            let replay = memory_replay_backprop(model, batch, train.segment_len, memory);
            (replay.grads, replay.tallies, replay.memory)
        }
    }
}

/// Linear warm-up from `lr / warmup` to `lr`, times a cosine decay from `lr`
/// to `min_lr` over all steps: Burn's schedulers composed by product.
pub fn lr_scheduler(train: &TrainConfig) -> ComposedLrScheduler {
    let mut config = ComposedLrSchedulerConfig::new().cosine(
        CosineAnnealingLrSchedulerConfig::new(train.lr, train.steps).with_min_lr(train.min_lr),
    );
    if train.warmup_steps > 0 {
        config = config.linear(LinearLrSchedulerConfig::new(
            1.0 / train.warmup_steps as f64,
            1.0,
            train.warmup_steps,
        ));
    }
    config.init().expect("train config was validated")
}

/// The seed of step `step`'s randomness (dropout).
fn step_seed(seed: u64, step: usize) -> u64 {
    // SplitMix64 finaliser: decorrelates consecutive steps.
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Appends JSON lines to `metrics.jsonl`.
struct MetricsLog {
    file: fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the log; when resuming from `step`, drops lines written after it
    /// (by the interrupted run, past its last checkpoint).
    fn open(path: PathBuf, keep_until: Option<usize>) -> Result<Self, TrainError> {
        let io = |e| TrainError::Io(path.clone(), e);
        let kept = match (keep_until, path.exists()) {
            (Some(step), true) => {
                let reader = BufReader::new(fs::File::open(&path).map_err(io)?);
                let mut kept = String::new();
                for line in reader.lines() {
                    let line = line.map_err(io)?;
                    let line_step = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                    if matches!(line_step, Some(s) if s as usize <= step) {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
                kept
            }
            _ => String::new(),
        };
        write_atomically(&path, kept.as_bytes()).map_err(io)?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Self { file, path })
    }

    fn write(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{value}").map_err(|e| TrainError::Io(self.path.clone(), e))
    }
}

/// Trains architecture `A` on `task` as `config` says, on an autodiff
/// backend, on one device (`train.devices = 1`; several peers:
/// [`crate::distributed::train_parallel`]).
pub fn train<A: Architecture, B: AutodiffBackend>(
    config: &ExperimentConfig,
    model_config: &A::Config,
    task: &dyn Task,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<TrainReport, TrainError> {
    let report = train_peer::<A, B>(config, model_config, task, options, device, &Peer::solo())?;
    Ok(report.expect("the only peer writes the run"))
}

/// What a peer trains, as one type: the model with its memory.
type Memory<A, B> = <<A as Architecture>::TrainModel<B> as SegmentModel<B>>::Memory;

/// The training loop of one peer (the only one, or one of several sharing
/// each batch: [`crate::distributed`]). Rank 0 alone writes the run and
/// evaluates, and returns the report; the other peers return `None`.
pub(crate) fn train_peer<A: Architecture, B: AutodiffBackend>(
    config: &ExperimentConfig,
    model_config: &A::Config,
    task: &dyn Task,
    options: &TrainOptions,
    device: &B::Device,
    peer: &Peer,
) -> Result<Option<TrainReport>, TrainError> {
    let train = &config.train;
    let run_dir = &options.run_dir;
    let checkpoint_path = run_dir.join(CHECKPOINT_FILE);
    let config_toml = config.to_toml();
    // Rank 0 holds the directory from here to the end of the run.
    let directory = peer.writes().then(|| RunDir::claim(options)).transpose()?;
    // This peer's rows of every batch.
    let rows = peer.rows(train.batch_size);

    let model = initial_model::<A, B>(config, model_config, task, options, device, peer)?;
    let optimizer = optimizer_config(train).init::<B, A::TrainModel<B>>();
    task.check_batch_size(train.batch_size)?;
    let Resumed {
        mut model,
        mut optimizer,
        start_step,
        mut carried,
    } = if options.resume {
        resume::<A, B, _>(config, &checkpoint_path, model, optimizer, device, peer)?
    } else {
        Resumed {
            model,
            optimizer,
            start_step: 0,
            carried: None,
        }
    };
    // The schedule is a pure function of the step: a resumed run replays it.
    let mut scheduler = lr_scheduler(train);
    for _ in 0..start_step {
        scheduler.step();
    }
    let mut log = match &directory {
        Some(directory) => Some(directory.start(&config_toml, task, start_step)?),
        None => None,
    };

    let description = ModelDescription::of(A::NAME, &model);
    let report = |event: TrainEvent<'_>| {
        if let Some(progress) = options.progress.as_ref().filter(|_| peer.writes()) {
            (progress.0)(event);
        }
    };
    report(TrainEvent::Started {
        name: &description.name,
        steps: train.steps,
        start_step,
    });

    let mut train_time = Duration::ZERO;
    let mut trained_tokens = 0usize;
    let mut last_train_loss = f64::NAN;
    // Every peer takes part (its rows of the carried memory); rank 0 writes.
    let save = |model: &A::TrainModel<B>,
                optimizer_record,
                step,
                carried: &Option<Memory<A, B>>|
     -> Result<(), TrainError> {
        let memory = match carried {
            Some(memory) => Some(memory.to_parts().try_map(|t| {
                peer.gather(t.inner(), 0, train.batch_size)
                    .map(Tensor::from_inner)
            })?),
            None => None,
        };
        if peer.writes() {
            Checkpoint::new::<B, _, _>(
                A::NAME,
                step,
                config_toml.clone(),
                model,
                optimizer_record,
            )?
            .with_memory::<B>(memory)
            .save(&checkpoint_path)?;
        }
        Ok(())
    };

    let epoch_batches = task
        .batches(Split::Train, train.batch_size)
        .unwrap_or(u64::MAX);
    let abort_at = abort_after_step();
    for step in start_step..train.steps {
        let started = Instant::now();
        let lr = scheduler.step();
        let whole = task.batch(Split::Train, step as u64, train.batch_size);
        // Throughput counts the tokens actually read (by all peers).
        trained_tokens += whole.batch * whole.len;
        let batch = if peer.world() == 1 {
            whole.to_device::<B>(task.vocab_size(), device)?
        } else {
            let mut batch = whole
                .rows(rows.clone())
                .to_device::<B>(task.vocab_size(), device)?;
            batch.share = Some(BatchShare {
                tokens: whole.mask.iter().map(|&m| m as f64).sum(),
                peers: peer.world(),
            });
            batch
        };
        // A streaming task's batches continue each other: memory is carried
        // (detached) from step to step, as Transformer-XL trains, and starts
        // afresh at each epoch.
        if (step as u64).is_multiple_of(epoch_batches) {
            carried = None;
        }
        let done = step + 1;
        let log_now = done % train.log_every == 0 || done == train.steps;
        let stepped;
        (model, stepped) = optimizer_step(
            model,
            &mut optimizer,
            lr,
            &batch,
            carried.take(),
            StepPlan {
                train,
                seed: peer_seed(step_seed(config.run.seed, step), peer),
                step: done,
                norm_needed: log_now,
            },
            peer,
            device,
        )?;
        if task.streaming() {
            carried = Some(stepped.memory);
        }

        if log_now {
            // The whole batch's figures (every peer's rows).
            let tallies = stepped.tallies.gathered(
                |t, dim| {
                    peer.gather(t.inner(), dim, train.batch_size)
                        .map(Tensor::from_inner)
                },
                |aux| {
                    peer.sum(aux.inner())
                        .map(|a| Tensor::from_inner(a / peer.world() as f64))
                },
            )?;
            let figures = tallies.figures(); // synchronises
            let grad_norm = stepped.norm.map(|n| n.into_scalar().elem::<f64>());
            train_time += started.elapsed();
            last_train_loss = figures.loss;
            let tps = trained_tokens as f64 / train_time.as_secs_f64();
            report(TrainEvent::Logged {
                step: done,
                loss: figures.loss,
                accuracy: figures.accuracy,
                tokens_per_second: tps,
            });
            if let Some(log) = &mut log {
                log.write(serde_json::json!({
                    "step": done, "split": "train", "loss": figures.loss,
                    "accuracy": figures.accuracy, "aux_loss": figures.aux_loss,
                    "grad_norm": grad_norm, "lr": lr, "tokens_per_second": tps,
                }))?;
            }
        } else {
            drop(stepped.tallies);
            B::sync(device).ok();
            train_time += started.elapsed();
        }
        report(TrainEvent::Stepped { done });

        if let Some(log) = &mut log
            && train.eval_every > 0
            && done % train.eval_every == 0
            && done != train.steps
        {
            let eval = evaluate_on_valid(&model, task, train, device)?;
            log_eval(log, done, &eval)?;
        }
        if train.checkpoint_every > 0 && done % train.checkpoint_every == 0 {
            save(&model, optimizer.to_record(), done, &carried)?;
        }
        if abort_at == Some(done) {
            std::process::abort();
        }
    }
    report(TrainEvent::Finished);

    // A run resumed when already complete re-reports its figures without
    // logging or saving them a second time.
    if start_step < train.steps {
        save(&model, optimizer.to_record(), train.steps, &carried)?;
    }
    let Some(log) = &mut log else {
        return Ok(None);
    };
    let eval = evaluate_on_valid(&model, task, train, device)?;
    if start_step < train.steps {
        log_eval(log, train.steps, &eval)?;
    }

    Ok(Some(TrainReport {
        model: description,
        steps: train.steps,
        resumed_from: start_step,
        final_train_loss: last_train_loss,
        eval,
        tokens_per_second: if train_time.is_zero() {
            0.0
        } else {
            trained_tokens as f64 / train_time.as_secs_f64()
        },
        run_dir: run_dir.clone(),
    }))
}

/// The model a run starts from, drawn from the run's seed (the same on every
/// peer; rank 0's is broadcast to be sure), after checking that a step of
/// this size fits the memory available (`options.memory_limit`).
fn initial_model<A: Architecture, B: AutodiffBackend>(
    config: &ExperimentConfig,
    model_config: &A::Config,
    task: &dyn Task,
    options: &TrainOptions,
    device: &B::Device,
    peer: &Peer,
) -> Result<A::TrainModel<B>, TrainError> {
    let train = &config.train;
    let ctx = ModelContext::of(config, task);
    // Parameters are lazy: the size check counts them before any is drawn.
    let model = seeded::<B, _>(device, config.run.seed, || {
        let model = A::init_train::<B>(model_config, &ctx, device);
        if let Some(available) = options.memory_limit {
            let parameters = lazy_parameters::<B, _>(&model);
            // The tokens a batch really holds (a text task's rows may be
            // shorter than its `seq_len`).
            let tokens = task.batch(Split::Train, 0, train.batch_size).len;
            let batch = peer.rows(train.batch_size).len();
            let needed = memory_estimate(parameters, batch, tokens, ctx.vocab_size);
            if needed > available {
                return Err(TrainError::TooLarge {
                    parameters,
                    needed,
                    available,
                });
            }
        }
        Ok(materialize(model))
    })?;
    peer.broadcast(model)
}

/// Where a run resumes: the model and AdamW's state at the checkpoint's
/// step, and the memory carried into that step.
struct Resumed<A: Architecture, B: AutodiffBackend, O> {
    model: A::TrainModel<B>,
    optimizer: O,
    start_step: usize,
    carried: Option<Memory<A, B>>,
}

/// Reads the run's checkpoint into `model` and `optimizer`, after checking
/// that `config` may resume it (same task, model, seed, batch and peers; no
/// fewer steps). A checkpoint holds the memory carried into its next step,
/// so that a resumed run carries what an uninterrupted one would; each peer
/// takes its rows of it.
fn resume<A: Architecture, B: AutodiffBackend, O: Optimizer<A::TrainModel<B>, B>>(
    config: &ExperimentConfig,
    checkpoint_path: &Path,
    model: A::TrainModel<B>,
    optimizer: O,
    device: &B::Device,
    peer: &Peer,
) -> Result<Resumed<A, B, O>, TrainError> {
    let checkpoint = Checkpoint::load(checkpoint_path, A::NAME)?;
    check_resumable(&checkpoint.saved_config()?, config)?;
    if checkpoint.step > config.train.steps {
        return Err(TrainError::Resume(format!(
            "the checkpoint is at step {} but train.steps is {}; a run cannot be resumed \
             to fewer steps than it has taken (raise train.steps, or start a new run)",
            checkpoint.step, config.train.steps
        )));
    }
    let model = checkpoint.load_model(model, device)?;
    let optimizer = optimizer.load_record(checkpoint.optimizer_record(device)?);
    let carried = match checkpoint.memory::<B>(device)? {
        Some(parts) => Some(
            MemoryState::from_parts(parts.map(|t| peer.scatter(t, 0)))
                .map_err(|e| TrainError::Resume(format!("the checkpoint's carried memory: {e}")))?,
        ),
        None => None,
    };
    Ok(Resumed {
        model,
        optimizer,
        start_step: checkpoint.step,
        carried,
    })
}

/// What [`optimizer_step`] needs to know of the step beside its batch.
struct StepPlan<'a> {
    train: &'a TrainConfig,
    /// This peer's seed for the step's randomness (dropout).
    seed: u64,
    /// The step's number, counted from 1 (for the error of a non-finite one).
    step: usize,
    /// Whether the caller reports the gradient norm of this step.
    norm_needed: bool,
}

/// What one optimizer step leaves.
struct Stepped<B: AutodiffBackend, Mem> {
    /// The rollout's figures (this peer's rows), on the device.
    tallies: Tallies<B>,
    /// The global gradient norm before clipping, when it was computed and
    /// `norm_needed`.
    norm: Option<Tensor<B::InnerBackend, 1>>,
    /// The memory after the batch, detached.
    memory: Mem,
}

/// One optimizer step of one peer: this peer's gradients on its rows
/// `batch` from `memory` (the initial memory without one; dropout, and any
/// draw of the initial memory, seeded per step and peer, so that a resumed
/// run draws exactly what an uninterrupted one would), summed over
/// the peers, clipped, checked finite, applied at learning rate `lr`.
/// Returns the model after the step; a non-finite loss or gradient norm
/// stops the run before it reaches the model.
#[allow(clippy::too_many_arguments)]
fn optimizer_step<B, M, O>(
    model: M,
    optimizer: &mut O,
    lr: f64,
    batch: &SequenceBatch<B>,
    memory: Option<M::Memory>,
    plan: StepPlan<'_>,
    peer: &Peer,
    device: &B::Device,
) -> Result<(M, Stepped<B, M::Memory>), TrainError>
where
    B: AutodiffBackend,
    M: SegmentModel<B> + AutodiffModule<B>,
    M::InnerModule: SegmentModel<B::InnerBackend>,
    O: Optimizer<M, B>,
{
    let (grads, tallies, memory) = seeded_step::<B, _>(device, plan.seed, || {
        let memory = memory.unwrap_or_else(|| model.init_memory(batch.inputs.dims()[0], device));
        step_gradients(&model, batch, plan.train, memory)
    });
    let grads = peer.sum_gradients(&model, grads)?;
    let (grads, norm) = clip_gradients(&model, grads, plan.train);
    // Several peers stop together: each checks the norm of the summed
    // gradients (the same on all) and the number of finite losses.
    let norm = norm.or_else(|| {
        if plan.norm_needed || peer.world() > 1 {
            global_grad_norm(&model, &grads)
        } else {
            None
        }
    });
    // The loss's flag and the gradient norm's, read back together once per
    // step (the loop synchronises every step anyway).
    let loss_finite = if peer.world() == 1 {
        tallies.all_finite().inner()
    } else {
        let finite = peer.sum(tallies.all_finite().inner().float())?;
        finite.equal_elem(peer.world() as f32)
    };
    let mut flags = vec![loss_finite];
    flags.extend(norm.clone().map(|n| n.is_finite()));
    let finite = Tensor::cat(flags, 0).into_data().to_vec::<bool>();
    if let Some(what) = finite.ok().and_then(|f| {
        let bad = f.iter().position(|ok| !ok)?;
        Some(["loss", "gradient norm"][bad])
    }) {
        return Err(TrainError::NonFinite {
            step: plan.step,
            what,
        });
    }
    let model = optimizer.step(lr, model, grads);
    let stepped = Stepped {
        tallies,
        norm: norm.filter(|_| plan.norm_needed),
        memory: MemoryState::detach(memory),
    };
    Ok((model, stepped))
}

/// The seed of a peer's dropout in a step: rank 0 draws what a single
/// device would, the others their own streams.
fn peer_seed(step_seed: u64, peer: &Peer) -> u64 {
    match peer.rank() {
        0 => step_seed,
        rank => step_seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    }
}

fn evaluate_on_valid<B: AutodiffBackend, M>(
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

fn log_eval(log: &mut MetricsLog, step: usize, eval: &EvalFigures) -> Result<(), TrainError> {
    log.write(serde_json::json!({
        "step": step, "split": "valid", "loss": eval.loss, "accuracy": eval.accuracy,
        "exact_match": eval.exact_match, "metric": eval.metric, "value": eval.value,
        "segment_accuracy": eval.segment_accuracy,
        "generated_accuracy": eval.generated_accuracy,
        "generated_exact_match": eval.generated_exact_match,
    }))
}

const GIB: f64 = (1u64 << 30) as f64;

/// A lower bound of the bytes training holds: f32 weights, their gradients
/// and AdamW's two moments (16 bytes a parameter), and one step's logits
/// with their gradient (`batch × seq_len × vocab`, 8 bytes each).
pub fn memory_estimate(parameters: usize, batch: usize, seq_len: usize, vocab: usize) -> u64 {
    let logits = (batch as u64)
        .saturating_mul(seq_len as u64)
        .saturating_mul(vocab as u64);
    (parameters as u64)
        .saturating_mul(16)
        .saturating_add(logits.saturating_mul(8))
}

struct LazyCount(usize);

impl<B: Backend> ModuleVisitor<B> for LazyCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param
            .lazy_shape()
            .iter()
            .fold(1usize, |n, &d| n.saturating_mul(d));
        self.0 = self.0.saturating_add(n);
    }
}

/// Parameters of a module, without drawing any that are not drawn yet.
pub fn lazy_parameters<B: Backend, M: Module<B>>(module: &M) -> usize {
    let mut count = LazyCount(0);
    module.visit(&mut count);
    count.0
}

/// The memory the operating system says is available (Linux's
/// `MemAvailable`), in bytes.
pub fn host_available_memory() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The lock file of a run directory, held while a run trains there.
pub const LOCK_FILE: &str = ".lock";

/// Takes the run directory's lock (the OS releases it when the process
/// ends, however it ends), or says who holds it.
/// The run directory of a training run, held by it (the lock file) from
/// [`RunDir::claim`] to the run's end: a run it replaces is removed only
/// once the new one can start ([`RunDir::start`]), so that the directory
/// never mixes two runs.
pub struct RunDir {
    path: PathBuf,
    /// Files of the run being replaced.
    replaced: Vec<PathBuf>,
    _lock: fs::File,
}

impl RunDir {
    /// Creates and locks `options.run_dir`, refusing a run it already
    /// holds unless `overwrite` (or `resume`, which needs its checkpoint).
    pub fn claim(options: &TrainOptions) -> Result<Self, TrainError> {
        let path = options.run_dir.clone();
        fs::create_dir_all(&path).map_err(|e| TrainError::Io(path.clone(), e))?;
        let lock = lock_run_dir(&path)?;
        let replaced = check_run_dir(&path, options)?;
        Ok(Self {
            path,
            replaced,
            _lock: lock,
        })
    }

    /// Removes the run being replaced, writes `config.toml` and the task's
    /// files, and opens `metrics.jsonl` from `start_step` on.
    fn start(
        &self,
        config_toml: &str,
        task: &dyn Task,
        start_step: usize,
    ) -> Result<MetricsLog, TrainError> {
        for path in &self.replaced {
            fs::remove_file(path).map_err(|e| TrainError::Io(path.clone(), e))?;
        }
        let config_path = self.path.join("config.toml");
        write_atomically(&config_path, config_toml.as_bytes())
            .map_err(|e| TrainError::Io(config_path, e))?;
        for (name, contents) in task.artifacts() {
            let path = self.path.join(&name);
            write_atomically(&path, contents.as_bytes()).map_err(|e| TrainError::Io(path, e))?;
        }
        MetricsLog::open(self.path.join("metrics.jsonl"), Some(start_step))
    }
}

fn lock_run_dir(dir: &Path) -> Result<fs::File, TrainError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| TrainError::Io(path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(TrainError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(TrainError::Io(path, e)),
    }
}

/// The files a run writes into its directory.
const RUN_FILES: [&str; 3] = [CHECKPOINT_FILE, "metrics.jsonl", "config.toml"];

/// Refuses to start over a run the directory holds unless asked to replace
/// it, and to resume a run that has no checkpoint; returns the files of a
/// run being replaced, which the caller removes before writing any of the
/// new run's, so that the directory never mixes two runs.
fn check_run_dir(dir: &Path, options: &TrainOptions) -> Result<Vec<PathBuf>, TrainError> {
    if options.resume {
        if !dir.join(CHECKPOINT_FILE).exists() {
            return Err(TrainError::NoCheckpoint(dir.to_path_buf()));
        }
        return Ok(Vec::new());
    }
    let held: Vec<PathBuf> = RUN_FILES
        .into_iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if !held.is_empty() && !options.overwrite {
        return Err(TrainError::RunExists(dir.to_path_buf()));
    }
    Ok(held)
}

/// Test hook: `MEMLAB_TEST_ABORT_AFTER_STEP=N` ends the process abruptly
/// (as `kill -9` would: no destructor, nothing flushed) once step `N` is
/// done, so that tests can interrupt a run at an exact step.
fn abort_after_step() -> Option<usize> {
    std::env::var("MEMLAB_TEST_ABORT_AFTER_STEP")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// A checkpoint may be resumed only with the same task, model and seed.
fn check_resumable(saved: &ExperimentConfig, config: &ExperimentConfig) -> Result<(), TrainError> {
    for (field, same) in [
        ("task", saved.task == config.task),
        ("model", saved.model == config.model),
        ("run.seed", saved.run.seed == config.run.seed),
        (
            "train.batch_size",
            saved.train.batch_size == config.train.batch_size,
        ),
        (
            "train.segment_len",
            saved.train.segment_len == config.train.segment_len,
        ),
        // Another split of the batch sums the gradients in another order.
        ("train.devices", saved.train.devices == config.train.devices),
        ("train.nodes", saved.train.nodes == config.train.nodes),
    ] {
        if !same {
            return Err(TrainError::Resume(format!(
                "`{field}` differs from the checkpoint's config; start a new run instead"
            )));
        }
    }
    Ok(())
}

/// The run directory a config names: `run.out_dir / run.name`.
pub fn run_dir(config: &ExperimentConfig) -> PathBuf {
    Path::new(&config.run.out_dir).join(&config.run.name)
}

//! Running a config's model: building its task, training it (on one device
//! or data-parallel), and loading the trained model of a run directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memlab_core::config::ConfigError;
use memlab_core::registry::parse_model_config;
use memlab_core::{
    Architecture, ArchitectureVisitor, ExperimentConfig, ModelContext, ModelSpec, Task,
};
use memlab_train::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use memlab_train::distributed::{Nodes, Peers, peer_devices, train_parallel};
use memlab_train::run_dir::run_dir;
use memlab_train::{Progress, TrainEvent, TrainOptions, TrainReport, train};

use crate::{BackendKind, ModelJob, registry, run_job};

/// Builds the task of a config.
pub fn build_task(config: &ExperimentConfig) -> Result<Box<dyn Task>, memlab_tasks::TaskError> {
    memlab_tasks::build_task(&config.task, config.run.seed)
}

/// Parses a model table against its architecture (so that errors surface
/// before any training starts).
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
        progress: progress.then(progress_bar),
    };
    train_model(config, &spec, task.as_ref(), &options, backend, nodes)
}

/// A progress bar on the terminal for a training run: the architecture,
/// the elapsed time, the steps, and the last logged loss, accuracy and
/// throughput.
pub fn progress_bar() -> Progress {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    Progress::new(move |event| match event {
        TrainEvent::Started {
            name,
            steps,
            start_step,
        } => {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_length(steps as u64);
            bar.set_prefix(name.to_string());
            bar.set_position(start_step as u64);
        }
        TrainEvent::Logged {
            loss,
            accuracy,
            tokens_per_second,
            ..
        } => bar.set_message(format!(
            "loss {loss:.4} acc {accuracy:.3} {tokens_per_second:.0} tok/s"
        )),
        TrainEvent::Stepped { done } => bar.set_position(done as u64),
        TrainEvent::Finished => bar.finish_and_clear(),
    })
}

/// Trains `spec` (the model of `config`) on `task` on `backend`, with
/// `train.devices` peers and the processes of `nodes`.
pub fn train_model(
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
            memory_limit: memlab_train::budget::host_available_memory(),
            ..options.clone()
        };
        &limited
    } else {
        options
    };
    struct Train<'a> {
        config: &'a ExperimentConfig,
        spec: &'a ModelSpec,
        task: &'a dyn Task,
        options: &'a TrainOptions,
        peers: Peers,
    }
    impl ModelJob for Train<'_> {
        type Output = Result<Option<TrainReport>>;
        fn run<A: Architecture, B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
            let Train {
                config,
                spec,
                task,
                options,
                peers,
            } = self;
            let model_config =
                parse_model_config::<A>(spec.fields.clone(), &ModelContext::of(config, task))?;
            if peers.world() == 1 {
                return Ok(Some(train::<A, B>(
                    config,
                    &model_config,
                    task,
                    options,
                    &device,
                )?));
            }
            let devices = peer_devices::<B>(&device, peers.devices);
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
    let job = Train {
        config,
        spec,
        task,
        options,
        peers,
    };
    run_job(backend, &spec.arch, job)?
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
    struct Load<'a, J> {
        run: &'a LoadedRun,
        job: J,
    }
    impl<J: RunModelJob> ModelJob for Load<'_, J> {
        type Output = Result<(usize, J::Output)>;
        fn run<A: Architecture, AB: AutodiffBackend>(self, device: AB::Device) -> Self::Output {
            type B<AB> = <AB as AutodiffBackend>::InnerBackend;
            let Load { run, job } = self;
            let ctx = ModelContext::of(&run.config, run.task.as_ref());
            let model_config = parse_model_config::<A>(run.spec.fields.clone(), &ctx)?;
            let checkpoint = Checkpoint::load(&run.dir.join(CHECKPOINT_FILE), A::NAME)?;
            checkpoint.check_config(&run.config)?;
            let model = A::init::<B<AB>>(&model_config, &ctx, &device);
            let model = checkpoint.load_model(model, &device)?;
            let output = job.run::<A, B<AB>>(&model, &model_config, run, &device)?;
            Ok((checkpoint.step, output))
        }
    }

    let checkpoint = run.dir.join(CHECKPOINT_FILE);
    if !checkpoint.exists() {
        return Err(anyhow!(
            "{} has no checkpoint ({CHECKPOINT_FILE}); was the run started?",
            run.dir.display()
        ));
    }
    run_job(backend, &run.spec.arch, Load { run, job })?
}

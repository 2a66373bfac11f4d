//! The bookkeeping around a peer's optimizer steps: the progress events,
//! the training figures and their line in `metrics.jsonl`, evaluation
//! every `train.eval_every` steps, checkpoints every
//! `train.checkpoint_every` steps, and the final report. Every peer keeps
//! one; rank 0's alone writes and evaluates (the others take part in the
//! gathers of the figures and of the carried memory).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::Record;
use burn::tensor::backend::AutodiffBackend;

use memlab_core::config::ExperimentConfig;
use memlab_core::data::Task;
use memlab_core::model::{MemoryState, ModelDescription};
use memlab_core::registry::Architecture;

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use crate::error::TrainError;
use crate::evaluate::EvalFigures;
use crate::evaluate::evaluate_on_valid;
use crate::peer::Peer;
use crate::run::{Memory, TrainEvent, TrainOptions, TrainReport};
use crate::run_dir::{MetricsLog, RunDir, log_eval};
use crate::runner::Tallies;
use crate::stopping::FlatRule;

/// What a peer records of its run as it goes.
pub(crate) struct Bookkeeping<'a> {
    config: &'a ExperimentConfig,
    task: &'a dyn Task,
    options: &'a TrainOptions,
    peer: &'a Peer,
    /// The config as the run directory and every checkpoint keep it.
    config_toml: String,
    checkpoint_path: PathBuf,
    /// `metrics.jsonl` (rank 0 only).
    log: Option<MetricsLog>,
    description: ModelDescription,
    start_step: usize,
    /// Time in training steps (evaluation and checkpoints excluded).
    train_time: Duration,
    /// Input tokens of the batches trained on (by all peers).
    trained_tokens: usize,
    last_train_loss: f64,
    /// The stopping rule, fed by rank 0's evaluations.
    flat: FlatRule,
    /// The last evaluation made during the steps, and its step.
    last_eval: Option<(usize, EvalFigures)>,
}

impl<'a> Bookkeeping<'a> {
    /// Starts the run's records at `start_step` (rank 0 opens
    /// `metrics.jsonl` in `directory`) and reports that the run started.
    pub(crate) fn open(
        config: &'a ExperimentConfig,
        task: &'a dyn Task,
        options: &'a TrainOptions,
        directory: Option<&RunDir>,
        peer: &'a Peer,
        description: ModelDescription,
        start_step: usize,
    ) -> Result<Self, TrainError> {
        let config_toml = config.to_toml();
        let log = match directory {
            Some(directory) => Some(directory.start(&config_toml, task, start_step)?),
            None => None,
        };
        let mut flat = FlatRule::new(&config.train, task.metric());
        for &value in log.iter().flat_map(|l| &l.kept_valid_values) {
            flat.observe(value);
        }
        let books = Self {
            config,
            task,
            options,
            peer,
            config_toml,
            checkpoint_path: options.run_dir.join(CHECKPOINT_FILE),
            log,
            description,
            start_step,
            train_time: Duration::ZERO,
            trained_tokens: 0,
            last_train_loss: f64::NAN,
            flat,
            last_eval: None,
        };
        books.report(TrainEvent::Started {
            name: &books.description.name,
            steps: config.train.steps,
            start_step,
        });
        Ok(books)
    }

    /// Tells `options.progress` (rank 0 only).
    fn report(&self, event: TrainEvent<'_>) {
        if let Some(progress) = self
            .options
            .progress
            .as_ref()
            .filter(|_| self.peer.writes())
        {
            (progress.0)(event);
        }
    }

    /// Counts a step's batch (`tokens`: the whole batch's, every peer's rows).
    pub(crate) fn count_tokens(&mut self, tokens: usize) {
        self.trained_tokens += tokens;
    }

    /// Counts the time of a step that began at `started` (the caller has
    /// synchronised the device).
    pub(crate) fn add_time(&mut self, started: Instant) {
        self.train_time += started.elapsed();
    }

    /// Input tokens per second of training time so far (0 before any).
    fn tokens_per_second(&self) -> f64 {
        if self.train_time.is_zero() {
            0.0
        } else {
            self.trained_tokens as f64 / self.train_time.as_secs_f64()
        }
    }

    /// Step `done`'s training figures: the whole batch's (every peer's
    /// rows gathered), read back in one transfer, reported and logged with
    /// the learning rate and the gradient norm before clipping.
    pub(crate) fn log_step<B: AutodiffBackend>(
        &mut self,
        done: usize,
        lr: f64,
        tallies: Tallies<B>,
        norm: Option<Tensor<B::InnerBackend, 1>>,
        started: Instant,
    ) -> Result<(), TrainError> {
        let (peer, batch_size) = (self.peer, self.config.train.batch_size);
        let tallies = tallies.gathered(
            |t, dim| {
                peer.gather(t.inner(), dim, batch_size)
                    .map(Tensor::from_inner)
            },
            |aux| {
                peer.sum(aux.inner())
                    .map(|a| Tensor::from_inner(a / peer.world() as f64))
            },
        )?;
        let figures = tallies.figures(); // synchronises
        let grad_norm = norm.map(|n| n.into_scalar().elem::<f64>());
        self.add_time(started);
        self.last_train_loss = figures.loss;
        let tps = self.tokens_per_second();
        self.report(TrainEvent::Logged {
            step: done,
            loss: figures.loss,
            accuracy: figures.accuracy,
            tokens_per_second: tps,
        });
        if let Some(log) = &mut self.log {
            log.write(serde_json::json!({
                "step": done, "split": "train", "loss": figures.loss,
                "accuracy": figures.accuracy, "aux_loss": figures.aux_loss,
                "grad_norm": grad_norm, "lr": lr, "tokens_per_second": tps,
            }))?;
        }
        Ok(())
    }

    /// After step `done`: reports it, evaluates on the validation split when
    /// `train.eval_every` says (not at the last step, which
    /// [`Self::finish`] evaluates) and saves a checkpoint when
    /// `train.checkpoint_every` says.
    pub(crate) fn after_step<A: Architecture, B: AutodiffBackend>(
        &mut self,
        model: &A::TrainModel<B>,
        optimizer: &impl Optimizer<A::TrainModel<B>, B>,
        done: usize,
        carried: &Option<Memory<A, B>>,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        self.report(TrainEvent::Stepped { done });
        let train = &self.config.train;
        let evaluates = self.evaluates_after(done);
        if let Some(log) = &mut self.log
            && evaluates
        {
            let eval = evaluate_on_valid(model, self.task, train, device)?;
            log_eval(log, done, &eval)?;
            self.flat.observe(eval.value);
            self.last_eval = Some((done, eval));
        }
        if train.checkpoint_every > 0 && done.is_multiple_of(train.checkpoint_every) {
            self.save::<A, B>(model, optimizer.to_record(), done, carried)?;
        }
        Ok(())
    }

    /// Whether step `done` is followed by an evaluation ([`Self::after_step`];
    /// the last step's is [`Self::finish`]'s).
    pub(crate) fn evaluates_after(&self, done: usize) -> bool {
        let train = &self.config.train;
        train.eval_every > 0 && done.is_multiple_of(train.eval_every) && done != train.steps
    }

    /// Whether the stopping rule ends the run here (`train.flat_evals`):
    /// rank 0, which evaluates, decides, and every peer learns its answer.
    /// Called by every peer at the same points (after an evaluation, and
    /// once on resuming), as a collective is.
    pub(crate) fn stops_flat<B: Backend>(&self, device: &B::Device) -> Result<bool, TrainError> {
        if !self.flat.is_on() {
            return Ok(false);
        }
        let here = self.peer.writes() && self.flat.is_flat();
        if self.peer.world() == 1 {
            return Ok(here);
        }
        let vote = Tensor::<B, 1>::from_floats([if here { 1.0 } else { 0.0 }], device);
        let votes = self.peer.sum(vote)?.into_scalar().elem::<f64>();
        Ok(votes > 0.0)
    }

    /// The checkpoint of step `step`: every peer gives its rows of the
    /// carried memory; rank 0 writes.
    fn save<A: Architecture, B: AutodiffBackend>(
        &self,
        model: &A::TrainModel<B>,
        optimizer_record: impl Record<B>,
        step: usize,
        carried: &Option<Memory<A, B>>,
    ) -> Result<(), TrainError> {
        let batch_size = self.config.train.batch_size;
        let memory = match carried {
            Some(memory) => Some(memory.to_parts().try_map(|t| {
                self.peer
                    .gather(t.inner(), 0, batch_size)
                    .map(Tensor::from_inner)
            })?),
            None => None,
        };
        if self.peer.writes() {
            Checkpoint::new::<B, _, _>(
                A::NAME,
                step,
                self.config_toml.clone(),
                model,
                optimizer_record,
            )?
            .with_memory::<B>(memory)
            .save(&self.checkpoint_path)?;
        }
        Ok(())
    }

    /// After the last step (`last`: `train.steps`, or the step at which
    /// the stopping rule ended the run): the last checkpoint and
    /// evaluation, and rank 0's report (`None` on the other peers). A run
    /// resumed when already complete re-reports its figures without
    /// logging or saving them a second time.
    pub(crate) fn finish<A: Architecture, B: AutodiffBackend>(
        mut self,
        model: &A::TrainModel<B>,
        optimizer: &impl Optimizer<A::TrainModel<B>, B>,
        carried: &Option<Memory<A, B>>,
        last: usize,
        device: &B::Device,
    ) -> Result<Option<TrainReport>, TrainError> {
        self.report(TrainEvent::Finished);
        let train = &self.config.train;
        let resumed_complete = self.start_step >= last;
        if !resumed_complete {
            self.save::<A, B>(model, optimizer.to_record(), last, carried)?;
        }
        let Some(mut log) = self.log.take() else {
            return Ok(None);
        };
        // A run the rule stopped was evaluated at its last step already.
        let eval = match self.last_eval.take() {
            Some((step, eval)) if step == last => eval,
            _ => {
                let eval = evaluate_on_valid(model, self.task, train, device)?;
                if !resumed_complete {
                    log_eval(&mut log, last, &eval)?;
                    self.flat.observe(eval.value);
                }
                eval
            }
        };
        let tokens_per_second = self.tokens_per_second();
        Ok(Some(TrainReport {
            model: self.description,
            steps: last,
            flat: self.flat.is_on().then(|| self.flat.is_flat()),
            resumed_from: self.start_step,
            final_train_loss: self.last_train_loss,
            eval,
            tokens_per_second,
            run_dir: self.options.run_dir.clone(),
        }))
    }
}

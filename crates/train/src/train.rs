//! The training loop, shared by every architecture: Burn's AdamW with
//! gradient clipping, linear warm-up times cosine decay (Burn's schedulers),
//! seeded and reproducible, periodic evaluation, atomic checkpoints with the
//! optimizer state, and resume.

use std::path::Path;
use std::time::Instant;

use burn::optim::Optimizer;
use burn::optim::lr_scheduler::LrScheduler;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use memlab_core::config::ExperimentConfig;
use memlab_core::data::{BatchShare, SequenceBatch, Split, Task};
use memlab_core::model::{MemoryState, ModelContext, ModelDescription};
use memlab_core::registry::Architecture;
use memlab_core::seed::{materialize, seeded};

use crate::bookkeeping::Bookkeeping;
use crate::budget::{lazy_parameters, memory_estimate};
use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use crate::error::TrainError;
use crate::peer::Peer;
use crate::run::{Memory, TrainOptions, TrainReport};
use crate::run_dir::RunDir;
use crate::step::{
    StepPlan, lr_scheduler_at, optimizer_config, optimizer_step, peer_seed, step_seed,
};

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

/// The training loop of one peer (the only one, or one of several sharing
/// each batch: [`crate::distributed`]). Rank 0 alone writes the run and
/// evaluates, and returns the report; the other peers return `None`.
///
/// It reads as the run goes: the first model (drawn, or resumed from the
/// checkpoint), then one optimizer step per batch ([`optimizer_step`]),
/// each followed by its bookkeeping ([`Bookkeeping`]: figures, progress,
/// evaluation, checkpoints), until `train.steps` or until the stopping
/// rule ([`crate::stopping`]) says the curve is flat, then the last
/// checkpoint and evaluation.
pub(crate) fn train_peer<A: Architecture, B: AutodiffBackend>(
    config: &ExperimentConfig,
    model_config: &A::Config,
    task: &dyn Task,
    options: &TrainOptions,
    device: &B::Device,
    peer: &Peer,
) -> Result<Option<TrainReport>, TrainError> {
    let train = &config.train;
    // Rank 0 holds the directory from here to the end of the run.
    let directory = peer.writes().then(|| RunDir::claim(options)).transpose()?;

    let Resumed {
        mut model,
        mut optimizer,
        start_step,
        mut carried,
    } = first_state::<A, B>(config, model_config, task, options, device, peer)?;
    let mut scheduler = lr_scheduler_at(train, start_step);
    let description = ModelDescription::of(A::NAME, &model);
    let mut books = Bookkeeping::open(
        config,
        task,
        options,
        directory.as_ref(),
        peer,
        description,
        start_step,
    )?;

    let epoch_batches = task
        .batches(Split::Train, train.batch_size)
        .unwrap_or(u64::MAX);
    let abort_at = abort_after_step();
    // A resumed run that the stopping rule had ended stays ended.
    let mut last = start_step;
    let already_flat = start_step > 0 && books.stops_flat::<B::InnerBackend>(device)?;
    let end = if already_flat {
        start_step
    } else {
        train.steps
    };
    for step in start_step..end {
        let started = Instant::now();
        let lr = scheduler.step();
        let batch = peer_batch::<B>(task, step, train.batch_size, peer, device)?;
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
            &batch.rows,
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

        books.count_tokens(batch.whole_tokens);
        if log_now {
            books.log_step::<B>(done, lr, stepped.tallies, stepped.norm, started)?;
        } else {
            drop(stepped.tallies);
            B::sync(device).ok();
            books.add_time(started);
        }
        books.after_step::<A, B>(&model, &optimizer, done, &carried, device)?;
        if abort_at == Some(done) {
            std::process::abort();
        }
        last = done;
        if books.evaluates_after(done) && books.stops_flat::<B::InnerBackend>(device)? {
            break;
        }
    }
    books.finish::<A, B>(&model, &optimizer, &carried, last, device)
}

/// A peer's rows of a training batch, and the tokens the whole batch holds
/// (throughput counts the tokens actually read, by all peers).
struct PeerBatch<B: Backend> {
    rows: SequenceBatch<B>,
    whole_tokens: usize,
}

/// Step `step`'s batch: the whole of it for a single peer, else this peer's
/// rows, normalised by the whole batch's token count
/// ([`memlab_core::data::BatchShare`]).
fn peer_batch<B: Backend>(
    task: &dyn Task,
    step: usize,
    batch_size: usize,
    peer: &Peer,
    device: &B::Device,
) -> Result<PeerBatch<B>, TrainError> {
    let whole = task.batch(Split::Train, step as u64, batch_size);
    let whole_tokens = whole.batch * whole.len;
    let rows = if peer.world() == 1 {
        whole.to_device::<B>(task.vocab_size(), device)?
    } else {
        let mut rows = whole
            .rows(peer.rows(batch_size))
            .to_device::<B>(task.vocab_size(), device)?;
        rows.share = Some(BatchShare {
            tokens: whole.mask.iter().map(|&m| m as f64).sum(),
            peers: peer.world(),
        });
        rows
    };
    Ok(PeerBatch { rows, whole_tokens })
}

/// Where a peer's run starts: the model drawn from the seed with a fresh
/// AdamW at step 0, or, when resuming, the checkpoint's.
fn first_state<A: Architecture, B: AutodiffBackend>(
    config: &ExperimentConfig,
    model_config: &A::Config,
    task: &dyn Task,
    options: &TrainOptions,
    device: &B::Device,
    peer: &Peer,
) -> Result<Resumed<A, B, impl Optimizer<A::TrainModel<B>, B> + use<A, B>>, TrainError> {
    let model = initial_model::<A, B>(config, model_config, task, options, device, peer)?;
    let optimizer = optimizer_config(&config.train).init::<B, A::TrainModel<B>>();
    task.check_batch_size(config.train.batch_size)?;
    if options.resume {
        let checkpoint_path = options.run_dir.join(CHECKPOINT_FILE);
        resume::<A, B, _>(config, &checkpoint_path, model, optimizer, device, peer)
    } else {
        Ok(Resumed {
            model,
            optimizer,
            start_step: 0,
            carried: None,
        })
    }
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

//! One optimizer step, as every peer takes it: the gradients of a batch
//! under the step's seed (BPTT or memory replay), summed over the peers,
//! clipped, checked finite and applied by Burn's AdamW; and the learning
//! rate schedule (Burn's schedulers).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::lr_scheduler::composed::{ComposedLrScheduler, ComposedLrSchedulerConfig};
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use memlab_core::config::{ClipMode, GradientMethod, TrainConfig};
use memlab_core::data::SequenceBatch;
use memlab_core::model::{MemoryState, SegmentModel};
use memlab_core::seed::seeded_step;

use crate::error::TrainError;
use crate::mrbp::memory_replay_backprop;
use crate::peer::Peer;
use crate::runner::{Tallies, run_segments};

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

/// [`lr_scheduler`] at step `start_step`, the rate of the next step next:
/// the schedule is a pure function of the step, so a resumed run replays it.
pub fn lr_scheduler_at(train: &TrainConfig, start_step: usize) -> ComposedLrScheduler {
    let mut scheduler = lr_scheduler(train);
    for _ in 0..start_step {
        scheduler.step();
    }
    scheduler
}

/// The seed of step `step`'s randomness (dropout).
pub(crate) fn step_seed(seed: u64, step: usize) -> u64 {
    // SplitMix64 finaliser: decorrelates consecutive steps.
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What [`optimizer_step`] needs to know of the step beside its batch.
pub(crate) struct StepPlan<'a> {
    pub(crate) train: &'a TrainConfig,
    /// This peer's seed for the step's randomness (dropout).
    pub(crate) seed: u64,
    /// The step's number, counted from 1 (for the error of a non-finite one).
    pub(crate) step: usize,
    /// Whether the caller reports the gradient norm of this step.
    pub(crate) norm_needed: bool,
}

/// What one optimizer step leaves.
pub(crate) struct Stepped<B: AutodiffBackend, Mem> {
    /// The rollout's figures (this peer's rows), on the device.
    pub(crate) tallies: Tallies<B>,
    /// The global gradient norm before clipping, when it was computed and
    /// `norm_needed`.
    pub(crate) norm: Option<Tensor<B::InnerBackend, 1>>,
    /// The memory after the batch, detached.
    pub(crate) memory: Mem,
}

/// One optimizer step of one peer: this peer's gradients on its rows
/// `batch` from `memory` (the initial memory without one; dropout, and any
/// draw of the initial memory, seeded per step and peer, so that a resumed
/// run draws exactly what an uninterrupted one would), summed over
/// the peers, clipped, checked finite, applied at learning rate `lr`.
/// Returns the model after the step; a non-finite loss or gradient norm
/// stops the run before it reaches the model.
#[allow(clippy::too_many_arguments)]
pub(crate) fn optimizer_step<B, M, O>(
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
pub(crate) fn peer_seed(step_seed: u64, peer: &Peer) -> u64 {
    match peer.rank() {
        0 => step_seed,
        rank => step_seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    }
}

//! Does a backend compute what the CPU computes? For each model of a bench
//! plan, the same weights (built on the CPU, moved through a record) read the
//! same tokens on the CPU (flex) and on the backend under test, and the two are
//! compared:
//!
//! - the logits of every segment, memory carried (inference);
//! - the training loss over those segments with full BPTT, and every
//!   parameter's gradient.
//!
//! `memlab bench --check` runs it before timing, so a table of GPU figures
//! comes with the evidence that the GPU computed the same model; the
//! feature-gated test `tests/backends.rs` asserts it.

use anyhow::{Result, anyhow};
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::layers::without_dropout;
use memlab_core::registry::parse_model_config;
use memlab_core::seed::init_seeded;
use memlab_core::{
    Architecture, ArchitectureVisitor, BpttDepth, ModelContext, ModelSpec, SegmentModel,
    SequenceBatch,
};
use memlab_train::agreement::{parameter_gradients, relative_error, values, worst_parameter_error};
use memlab_train::checkpoint::{record_from_bytes, record_to_bytes};
use memlab_train::runner::{run_segments, segment_logits};
use serde::Serialize;

use crate::backend::{BackendKind, BackendVisitor, with_backend};
use crate::bench::{BenchPlan, Shape, tokens};
use crate::registry;

/// The reference: the CPU backend with autodiff.
type Cpu = Autodiff<Flex>;

/// Batch and number of segments the check reads (the segment length and
/// vocabulary are the bench's): small, so that the CPU side is quick even
/// for paper-sized models.
#[derive(Debug, Clone, Copy)]
pub struct CheckSize {
    pub batch: usize,
    pub segments: usize,
}

impl Default for CheckSize {
    fn default() -> Self {
        Self {
            batch: 2,
            segments: 3,
        }
    }
}

/// One model on one backend against the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub model: String,
    pub backend: BackendKind,
    /// ‖logits − CPU logits‖ / ‖CPU logits‖ over every segment.
    pub logits_error: f64,
    /// Training loss on the CPU and on the backend.
    pub cpu_loss: f64,
    pub loss: f64,
    /// The worst relative error of a parameter's gradient (norms floored at
    /// 1e-4 of the whole gradient's).
    pub gradient_error: f64,
}

/// Largest errors accepted for a backend's precision: f32 (CUDA's f32
/// matmuls may run as TF32 on tensor cores, 10-bit mantissas) and bf16.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub logits: f64,
    pub gradients: f64,
}

impl Tolerance {
    pub fn for_backend(kind: BackendKind) -> Self {
        match kind {
            BackendKind::CudaBf16 => Self {
                logits: 5e-2,
                gradients: 0.25,
            },
            _ => Self {
                logits: 1e-2,
                gradients: 5e-2,
            },
        }
    }
}

impl Agreement {
    /// `got` (computed on `backend`) against the CPU's `cpu`.
    fn between(model: &str, backend: BackendKind, cpu: &Computed, got: &Computed) -> Self {
        Self {
            model: model.into(),
            backend,
            logits_error: relative_error(&cpu.logits, &got.logits),
            cpu_loss: cpu.loss,
            loss: got.loss,
            gradient_error: worst_parameter_error(&cpu.gradients, &got.gradients, 1e-4),
        }
    }

    /// Within the backend's tolerance (the losses within the logits'
    /// tolerance of each other). False for anything NaN.
    pub fn within(&self, tolerance: Tolerance) -> bool {
        let loss_error = (self.loss - self.cpu_loss).abs() / self.cpu_loss.abs().max(1e-12);
        self.logits_error <= tolerance.logits
            && self.gradient_error <= tolerance.gradients
            && loss_error <= tolerance.logits
    }
}

/// Checks every model of `plan` on each of `backends` against the CPU; the
/// CPU side of a model is computed once for all backends. One row per model
/// and backend, model by model.
pub fn check_plan(
    plan: &BenchPlan,
    backends: &[BackendKind],
    size: CheckSize,
) -> Result<Vec<Agreement>> {
    let shape = Shape {
        batch: size.batch,
        ..plan.config.shape()
    };
    let mut rows = Vec::new();
    for spec in &plan.models {
        let job = CheckModel {
            spec,
            shape,
            segments: size.segments,
            backends,
        };
        // Dropout would draw different masks on each backend: every
        // architecture's is off for the check.
        rows.extend(without_dropout(|| registry::dispatch(&spec.arch, job))??);
    }
    Ok(rows)
}

/// One model of the plan: its CPU reference, then each backend.
struct CheckModel<'a> {
    spec: &'a ModelSpec,
    shape: Shape,
    segments: usize,
    backends: &'a [BackendKind],
}

impl ArchitectureVisitor for CheckModel<'_> {
    type Output = Result<Vec<Agreement>>;
    fn visit<A: Architecture>(self) -> Self::Output {
        let ctx = crate::bench::context(self.shape);
        let config = parse_model_config::<A>(self.spec.fields.clone(), &ctx)?;
        let cpu_device = Default::default();
        let reference = init_seeded::<Cpu, _>(&cpu_device, 0, || {
            A::init_train::<Cpu>(&config, &ctx, &cpu_device)
        });
        let cpu = run::<Cpu, A>(&reference, self.shape, self.segments, &cpu_device);
        self.backends
            .iter()
            .map(|&backend| {
                let job = OnBackend::<A> {
                    config: &config,
                    ctx: &ctx,
                    reference: &reference,
                    shape: self.shape,
                    segments: self.segments,
                };
                let got = with_backend(backend, job)??;
                Ok(Agreement::between(&self.spec.label, backend, &cpu, &got))
            })
            .collect()
    }
}

/// The reference's weights on another backend, run there.
struct OnBackend<'a, A: Architecture> {
    config: &'a A::Config,
    ctx: &'a ModelContext,
    reference: &'a A::TrainModel<Cpu>,
    shape: Shape,
    segments: usize,
}

impl<A: Architecture> BackendVisitor for OnBackend<'_, A> {
    type Output = Result<Computed>;
    fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        // Another seed first: a parameter the record failed to carry would
        // differ.
        let other = init_seeded::<B, _>(&device, 1, || {
            A::init_train::<B>(self.config, self.ctx, &device)
        });
        let other = transfer::<B, A>(self.reference, other, &device)?;
        Ok(run::<B, A>(&other, self.shape, self.segments, &device))
    }
}

/// `into`, with the CPU model's weights (through a full-precision record).
pub fn transfer<B: AutodiffBackend, A: Architecture>(
    from: &A::TrainModel<Cpu>,
    into: A::TrainModel<B>,
    device: &B::Device,
) -> Result<A::TrainModel<B>> {
    let bytes = record_to_bytes::<Cpu, _>(from.clone().into_record())?;
    let record = record_from_bytes::<B, _>(bytes, device)?;
    Ok(into.load_record(record))
}

/// What one model computes on one backend over the check's segments.
struct Computed {
    /// Every segment's logits, memory carried (inner backend).
    logits: Vec<f64>,
    loss: f64,
    gradients: Vec<Vec<f64>>,
}

/// `model` on the check's tokens: the segments' logits, then the training
/// loss with full BPTT and its parameter gradients.
fn run<B: AutodiffBackend, A: Architecture>(
    model: &A::TrainModel<B>,
    shape: Shape,
    segments: usize,
    device: &B::Device,
) -> Computed {
    let len = segments * shape.segment;
    let sequence = tokens::<B>(shape, len + 1, 0, device);
    let inputs = sequence.clone().narrow(1, 0, len);

    let logits = segment_logits(&model.valid(), inputs.clone().inner(), shape.segment)
        .into_iter()
        .flat_map(values)
        .collect();

    let batch = SequenceBatch {
        inputs,
        targets: sequence.narrow(1, 1, len),
        mask: Tensor::ones([shape.batch, len], device),
        share: None,
    };
    let rollout = run_segments(
        model,
        &batch,
        shape.segment,
        BpttDepth::Full,
        model.init_memory(shape.batch, device),
    );
    let loss = values(rollout.loss.clone())[0];
    let grads = GradientsParams::from_grads(rollout.loss.backward(), model);
    Computed {
        logits,
        loss,
        gradients: parameter_gradients(model, &grads),
    }
}

/// The check's table as Markdown, each row marked against its backend's
/// [`Tolerance`].
pub fn check_markdown(rows: &[Agreement]) -> String {
    let mut out = String::from(
        "| model | backend | logits rel. error | loss (CPU / backend) | worst gradient rel. error | within tolerance |\n\
         | --- | --- | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let t = Tolerance::for_backend(r.backend);
        out.push_str(&format!(
            "| {} | {} | {:.2e} | {:.5} / {:.5} | {:.2e} | {} |\n",
            r.model,
            r.backend,
            r.logits_error,
            r.cpu_loss,
            r.loss,
            r.gradient_error,
            if r.within(t) {
                "yes".to_string()
            } else {
                format!(
                    "**no** (logits ≤ {}, gradients ≤ {})",
                    t.logits, t.gradients
                )
            }
        ));
    }
    out
}

/// An error naming every row outside its tolerance, if any.
pub fn require_agreement(rows: &[Agreement]) -> Result<()> {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.within(Tolerance::for_backend(r.backend)))
        .map(|r| {
            format!(
                "`{}` on {}: logits {:.2e}, gradients {:.2e}, loss {} vs {} on the CPU",
                r.model, r.backend, r.logits_error, r.gradient_error, r.loss, r.cpu_loss
            )
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "the backend does not compute what the CPU computes: {}",
            bad.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BenchPlan {
        let text = r#"
            [bench]
            batch_size = 2
            segment_len = 8
            vocab_size = 16
            [[bench.models]]
            arch = "transformer-xl"
            d_model = 16
            n_layers = 1
            n_heads = 2
            d_ff = 32
            mem_len = 8
            dropout = 0.3
            [[bench.models]]
            arch = "rmt"
            d_model = 16
            n_layers = 1
            n_heads = 2
            d_ff = 32
            num_mem_tokens = 2
        "#;
        BenchPlan::from_table(memlab_core::config::parse_toml(text).unwrap()).unwrap()
    }

    /// The CPU against itself, through the record: exactly equal, although
    /// the other model was first built from another seed (and with dropout
    /// in the config, which the check turns off).
    #[test]
    fn the_cpu_agrees_with_itself_exactly() {
        let rows = check_plan(&plan(), &[BackendKind::Flex], CheckSize::default()).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert_eq!(r.logits_error, 0.0, "{r:?}");
            assert_eq!(r.gradient_error, 0.0, "{r:?}");
            assert_eq!(r.loss, r.cpu_loss, "{r:?}");
            assert!(r.cpu_loss > 0.0 && r.cpu_loss.is_finite(), "{r:?}");
        }
        require_agreement(&rows).unwrap();
        assert!(check_markdown(&rows).contains("| rmt | flex |"));
    }

    /// Without the transfer (another seed's weights), the check sees it.
    #[test]
    fn other_weights_are_caught() {
        type A = memlab_rmt::RmtArch;
        let plan = plan();
        let ctx = crate::bench::context(plan.config.shape());
        let config = parse_model_config::<A>(plan.models[1].fields.clone(), &ctx).unwrap();
        let device = Default::default();
        let build = |seed| {
            init_seeded::<Cpu, _>(&device, seed, || {
                A::init_train::<Cpu>(&config, &ctx, &device)
            })
        };
        let (a, b) = (build(0), build(1));
        let shape = plan.config.shape();
        let of = |model: &_| run::<Cpu, A>(model, shape, 2, &device);
        let r = Agreement::between("rmt", BackendKind::Flex, &of(&a), &of(&b));
        assert!(r.logits_error > 0.1, "{r:?}");
        assert!(r.gradient_error > 0.1, "{r:?}");
        assert!(!r.within(Tolerance::for_backend(BackendKind::Cuda)));
        let err = require_agreement(&[r]).unwrap_err().to_string();
        assert!(err.contains("`rmt` on flex"), "{err}");
        let moved = transfer::<Cpu, A>(&a, b, &device).unwrap();
        let r = Agreement::between("rmt", BackendKind::Flex, &of(&a), &of(&moved));
        assert_eq!((r.logits_error, r.gradient_error), (0.0, 0.0));
    }
}

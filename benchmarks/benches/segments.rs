//! Per-segment cost of every registered model on every compiled backend
//! (flex, the CPU, always; ndarray, wgpu and cuda with `--features ndarray,wgpu,cuda`), with the
//! device synchronised inside every measured iteration:
//!
//! - `forward/<size>/<backend>/<model>`: one segment's forward pass, memory
//!   carried over a few segments;
//! - `train_step/<size>/<backend>/<model>`: forward + backward + AdamW on one
//!   segment, memory carried from step to step;
//! - `segment_after_k/<backend>/<model>/<k>`: the forward pass after `k` = 1,
//!   4, 16, 64, 256 carried segments — flat in `k` for a bounded memory;
//! - `full_attention/<backend>/<len>`: the baseline over the whole sequence
//!   at once, for contrast: its cost per token grows with `len`.
//!
//! `<size>` is `small` (configs/bench.toml: batch 4 × 64 tokens, d_model
//! 128) and, on GPU backends or with `MEMLAB_BENCH_PAPER=1`, `paper`
//! (configs/bench-paper.toml: 12 layers, d_model 512, batch 22 × 512
//! tokens). Throughput is in tokens (criterion `Throughput::Elements`).
//!
//! `cargo bench -p memlab-benchmarks --bench segments -- --quick` runs the
//! CPU set in a few minutes.

use burn::tensor::backend::AutodiffBackend;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_main};
use memlab_benchmarks::{BenchPlan, Prepared, TrainPrepared, full_attention, plan};
use memlab_core::{Architecture, ModelSpec};
use memlab_zoo::{BackendKind, BackendVisitor, ModelJob, run_job, with_backend};

const CARRIED: [usize; 5] = [1, 4, 16, 64, 256];

/// Calls made before criterion's own warm-up: GPU kernels are compiled and
/// autotuned on the first call of every shape, which can take a minute.
const FIRST_CALLS: usize = 2;

fn group<'a>(c: &'a mut Criterion, name: String, plan: &BenchPlan) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    let shape = plan.config.shape();
    group.throughput(Throughput::Elements((shape.batch * shape.segment) as u64));
    group.sample_size(10);
    group
}

enum Step {
    Forward,
    Train,
    AfterK,
}

struct ModelBench<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, WallTime>,
    plan: &'a BenchPlan,
    spec: &'a ModelSpec,
    step: &'a Step,
}

impl ModelJob for ModelBench<'_, '_> {
    type Output = ();
    fn run<A: Architecture, B: AutodiffBackend>(self, device: B::Device) {
        let device = &device;
        let shape = self.plan.config.shape();
        let (fields, label) = (&self.spec.fields, &self.spec.label);
        let prepare = |k| {
            Prepared::<B::InnerBackend, A>::new(shape, k, fields, device).expect("valid config")
        };
        match self.step {
            Step::Forward => {
                let prepared = prepare(self.plan.config.warmup);
                (0..FIRST_CALLS).for_each(|_| prepared.step());
                self.group
                    .bench_function(label, |b| b.iter(|| prepared.step()));
            }
            Step::Train => {
                let mut train =
                    TrainPrepared::<B, A>::new(shape, fields, device).expect("valid config");
                (0..FIRST_CALLS).for_each(|_| {
                    train.step();
                });
                self.group.bench_function(label, |b| {
                    b.iter(|| {
                        train.step();
                    })
                });
            }
            Step::AfterK => {
                let mut prepared = prepare(0);
                for k in CARRIED {
                    prepared.advance_to(k);
                    (0..FIRST_CALLS).for_each(|_| prepared.step());
                    self.group
                        .bench_with_input(BenchmarkId::new(label, k), &k, |b, _| {
                            b.iter(|| prepared.step())
                        });
                }
            }
        }
    }
}

struct BackendBenches<'a> {
    c: &'a mut Criterion,
    backend: BackendKind,
}

impl BackendBenches<'_> {
    /// One group: `step` of every model of `plan`, each through the registry.
    fn models(&mut self, name: &str, plan: &BenchPlan, step: Step) {
        let mut group = group(self.c, format!("{name}/{}", self.backend), plan);
        for spec in &plan.models {
            let bench = ModelBench {
                group: &mut group,
                plan,
                spec,
                step: &step,
            };
            run_job(self.backend, &spec.arch, bench).expect("a registered model");
        }
        group.finish();
    }
}

impl BackendVisitor for BackendBenches<'_> {
    type Output = ();
    fn visit<B: AutodiffBackend>(mut self, device: B::Device) {
        let small = plan("bench");
        let paper = (!self.backend.is_cpu() || std::env::var_os("MEMLAB_BENCH_PAPER").is_some())
            .then(|| plan("bench-paper"));
        for (size, plan) in [("small", Some(&small)), ("paper", paper.as_ref())] {
            let Some(plan) = plan else { continue };
            self.models(&format!("forward/{size}"), plan, Step::Forward);
            self.models(&format!("train_step/{size}"), plan, Step::Train);
        }
        self.models("segment_after_k", &small, Step::AfterK);

        let mut group = self
            .c
            .benchmark_group(format!("full_attention/{}", self.backend));
        group.sample_size(10);
        let shape = small.config.shape();
        let fields = small.baseline_fields();
        for &len in &small.config.full_attention {
            group.throughput(Throughput::Elements((shape.batch * len) as u64));
            let step = full_attention::<B::InnerBackend>(shape, len, &fields, &device)
                .expect("valid config");
            (0..FIRST_CALLS).for_each(|_| step.step());
            group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
                b.iter(|| step.step())
            });
        }
        group.finish();
    }
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    for backend in BackendKind::compiled() {
        with_backend(backend, BackendBenches { c: &mut c, backend }).expect("compiled backend");
    }
    c.final_summary();
}

criterion_main!(benches);

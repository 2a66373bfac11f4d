//! Greedy generation of every model of configs/bench.toml on every compiled
//! backend, one row from one prompt token, the next token read back each
//! time, as `memlab generate` runs it ([`memlab_zoo::bench::Generating`]):
//!
//! - `generate/<backend>/<model>/incremental`: the stream that keeps the
//!   keys and values of the partial segment (where the model does);
//! - `generate/<backend>/<model>/re-read`: the stream that re-reads the
//!   partial segment for every token.
//!
//! Each iteration generates `bench.generate` tokens (four segments of 64 in
//! configs/bench.toml); throughput is in tokens.
//!
//! `cargo bench -p memlab-benchmarks --bench generation -- --quick`.

use burn::tensor::backend::AutodiffBackend;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_main};
use memlab_benchmarks::{BenchPlan, Generating, plan};
use memlab_core::{Architecture, ModelSpec};
use memlab_zoo::{BackendKind, BackendVisitor, ModelJob, run_job, with_backend};

struct ModelBench<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, WallTime>,
    plan: &'a BenchPlan,
    spec: &'a ModelSpec,
}

impl ModelJob for ModelBench<'_, '_> {
    type Output = ();
    fn run<A: Architecture, B: AutodiffBackend>(self, device: B::Device) {
        let shape = self.plan.config.shape();
        let tokens = self.plan.config.generate;
        let g = Generating::<B::InnerBackend, A>::new(shape, &self.spec.fields, &device)
            .expect("valid config");
        for (name, incremental) in [("incremental", true), ("re-read", false)] {
            // The first call compiles and autotunes a GPU's kernels.
            drop(g.step(tokens, incremental));
            self.group.bench_with_input(
                BenchmarkId::new(&self.spec.label, name),
                &incremental,
                |b, &incremental| b.iter(|| g.step(tokens, incremental)),
            );
        }
    }
}

struct BackendBenches<'a> {
    c: &'a mut Criterion,
    backend: BackendKind,
}

impl BackendVisitor for BackendBenches<'_> {
    type Output = ();
    fn visit<B: AutodiffBackend>(self, _device: B::Device) {
        let plan = plan("bench");
        assert!(plan.config.generate > 0, "configs/bench.toml sets generate");
        let mut group = self.c.benchmark_group(format!("generate/{}", self.backend));
        group.throughput(Throughput::Elements(plan.config.generate as u64));
        group.sample_size(10);
        for spec in &plan.models {
            let bench = ModelBench {
                group: &mut group,
                plan: &plan,
                spec,
            };
            run_job(self.backend, &spec.arch, bench).expect("a registered model");
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

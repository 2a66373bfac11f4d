//! Per-segment cost of every registered model as memory accumulates, on the
//! CPU backend (ndarray), default model configs, batch 4, segments of 64:
//!
//! - `segment_after_k/<model>/<k>`: one segment's forward pass after `k` =
//!   1, 4, 16, 64, 256 segments of carried memory (tokens/s). Flat in `k`
//!   for a bounded memory: Transformer-XL's cache, RMT's tokens, the
//!   ∞-former's N basis functions whatever the tokens absorbed.
//! - `full_attention/<len>`: the baseline over the whole sequence of `len` =
//!   64 × k tokens at once, for contrast: its cost per token grows with `len`.
//!
//! `cargo bench -p memlab-benchmarks -- --quick` runs it in a few minutes.

use burn::backend::NdArray;
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use memlab_benchmarks::{Prepared, Shape, full_attention_cost};
use memlab_core::{Architecture, ArchitectureVisitor};

type B = NdArray;

const SHAPE: Shape = Shape {
    batch: 4,
    segment: 64,
    vocab: 256,
};
const CARRIED: [usize; 5] = [1, 4, 16, 64, 256];

struct AfterK<'a, 'b>(&'a mut BenchmarkGroup<'b, WallTime>);

impl ArchitectureVisitor for AfterK<'_, '_> {
    type Output = ();
    fn visit<A: Architecture>(self) {
        let device = Default::default();
        for k in CARRIED {
            let prepared = Prepared::<B, A>::new(SHAPE, k, &toml::Table::new(), &device);
            self.0
                .bench_with_input(BenchmarkId::new(A::NAME, k), &k, |b, _| {
                    b.iter(|| prepared.step())
                });
        }
    }
}

fn segment_after_k(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment_after_k");
    group.throughput(Throughput::Elements((SHAPE.batch * SHAPE.segment) as u64));
    group.sample_size(10);
    for name in memlab_cli::registry::NAMES {
        memlab_cli::registry::dispatch(name, AfterK(&mut group)).expect("registered");
    }
    group.finish();
}

fn full_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_attention");
    group.sample_size(10);
    let device = Default::default();
    for k in [1usize, 4, 16] {
        let len = SHAPE.segment * k;
        group.throughput(Throughput::Elements((SHAPE.batch * len) as u64));
        let step = full_attention_cost::<B>(SHAPE, len, &device);
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| b.iter(&step));
    }
    group.finish();
}

criterion_group!(benches, segment_after_k, full_attention);
criterion_main!(benches);

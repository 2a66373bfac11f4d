//! Training throughput with data parallelism (docs/distributed.md): the
//! whole training loop of `memlab train` with N = 1 and 2 peers, on every
//! compiled backend (flex, the CPU, always; cuda and wgpu with their
//! features, where the peers are GPUs 0..N, so N = 2 needs two of them).
//!
//! `train/<backend>/<model>/<N> peers` trains LM-RMT's small configuration
//! (the peers' cpu-small: 4 layers, d_model 128, batch 32 in segments of 24)
//! on Tiny Shakespeare's bytes (`$MEMLAB_DATA_DIR`, default ../shared/data),
//! 48 tokens a row (two segments), memory carried from batch to batch. Each
//! sample is one run of 12 steps; the time criterion sees is the one the
//! training loop itself measures (its steps, without set-up, evaluation and
//! checkpoint), and throughput is in input tokens (`Throughput::Elements`),
//! so criterion's elements/s is `memlab train`'s tokens/s.
//!
//! It runs as the `memlab` binary does: its allocator, and its main thread
//! as rayon's worker 0 with the other workers kept warm.
//!
//! `cargo bench -p memlab-benchmarks --bench data_parallel -- --quick`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use memlab_core::ExperimentConfig;
use memlab_zoo::{BackendKind, run_train};

/// As the `memlab` binary runs: its allocator (mimalloc, counting) and
/// threads (`benches` below).
#[global_allocator]
static ALLOCATOR: memlab_zoo::alloc::Counting = memlab_zoo::alloc::Counting;

const STEPS: usize = 12;
const BATCH: usize = 32;
const SEQ_LEN: usize = 48;

const MODELS: [(&str, &str); 2] = [
    ("transformer-xl", "arch = \"transformer-xl\"\nmem_len = 24"),
    (
        "rmt",
        "arch = \"rmt\"\nbackbone = \"transformer-xl\"\nmem_len = 0\nnum_mem_tokens = 10",
    ),
];

fn config(dir: &std::path::Path, model: &str, peers: usize) -> ExperimentConfig {
    let text = format!(
        r#"
[run]
name = "run"
out_dir = "{}"
seed = 1
[task]
kind = "bytes"
path = "{}"
seq_len = {SEQ_LEN}
[train]
steps = {STEPS}
batch_size = {BATCH}
segment_len = 24
warmup_steps = 1
log_every = {STEPS}
eval_batches = 1
devices = {peers}
[model]
{model}
d_model = 128
n_layers = 4
n_heads = 4
d_ff = 512
dropout = 0.1
"#,
        dir.display(),
        corpus()
    );
    let table = memlab_core::config::parse_toml(&text).expect("TOML");
    ExperimentConfig::from_table(table).expect("valid config")
}

fn backends() -> Vec<BackendKind> {
    let mut kinds = vec![BackendKind::Flex];
    if cfg!(feature = "cuda") {
        kinds.push(BackendKind::Cuda);
    }
    if cfg!(feature = "wgpu") {
        kinds.push(BackendKind::Wgpu);
    }
    kinds
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    group.throughput(Throughput::Elements((STEPS * BATCH * SEQ_LEN) as u64));
    for backend in backends() {
        for (name, model) in MODELS {
            for peers in [1, 2] {
                let id = BenchmarkId::new(format!("{backend}/{name}"), format!("{peers} peers"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let dir = tempfile::tempdir().expect("temporary directory");
                            let config = config(dir.path(), model, peers);
                            let report = run_train(&config, backend, false, true, false, None)
                                .expect("training runs")
                                .expect("one process reports");
                            let tokens = (STEPS * BATCH * SEQ_LEN) as f64;
                            total += Duration::from_secs_f64(tokens / report.tokens_per_second);
                        }
                        total
                    })
                });
            }
        }
    }
    group.finish();
}

/// Tiny Shakespeare: found under `$MEMLAB_DATA_DIR` by the task itself,
/// else in ../shared/data beside the repository.
fn corpus() -> String {
    if std::env::var_os("MEMLAB_DATA_DIR").is_some() {
        "tinyshakespeare.txt".into()
    } else {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/tinyshakespeare.txt"
        )
        .into()
    }
}

fn benches() {
    memlab_zoo::alloc::keep_freed_memory();
    memlab_zoo::threads::adopt_main_thread();
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
}

criterion_main!(benches);

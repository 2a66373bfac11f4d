//! Peak heap memory of one training step's gradient computation, full BPTT
//! against memory replay back-propagation (memlab-core's `mrbp`), as the
//! number of segments in the rollout grows (the CPU backend: every tensor
//! lives on the heap, so a counting allocator sees it all).
//!
//! `cargo bench -p memlab-benchmarks --bench mrbp_memory` prints a Markdown
//! table. MRBP's peak stays flat; full BPTT's grows with the segments.

use burn::backend::{Autodiff, Flex};
use memlab_core::config::BpttDepth;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, HostBatch, ModelContext, SegmentModel};
use memlab_train::mrbp::memory_replay_backprop;
use memlab_train::runner::run_segments;
use memlab_zoo::alloc::{self, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

type AB = Autodiff<Flex>;

/// Peak heap bytes above the starting point while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = alloc::current();
    alloc::peak_during(f).expect("the counting allocator is installed") - base
}

fn measure<A: Architecture>(segments: usize) -> (usize, usize) {
    let (batch, segment) = (8, 64);
    let ctx = ModelContext {
        vocab_size: 256,
        max_segment_len: segment,
    };
    let device = Default::default();
    let config = parse_model_config::<A>(toml::Table::new(), &ctx).expect("defaults");
    let model = A::init_train::<AB>(&config, &ctx, &device);
    let len = segments * segment;
    let host = HostBatch {
        batch,
        len,
        inputs: (0..batch * len).map(|i| (i * 31 % 256) as i64).collect(),
        targets: (0..batch * len).map(|i| (i * 17 % 256) as i64).collect(),
        mask: vec![1.0; batch * len],
    };
    let data = host.to_device::<AB>(256, &device).expect("valid");
    let full = peak_during(|| {
        let rollout = run_segments(
            &model,
            &data,
            segment,
            BpttDepth::Full,
            model.init_memory(batch, &device),
        );
        let _grads = rollout.loss.backward();
    });
    let replay = peak_during(|| {
        let _replay =
            memory_replay_backprop(&model, &data, segment, model.init_memory(batch, &device));
    });
    (full, replay)
}

fn main() {
    // `cargo bench` passes flags (e.g. `--bench`); this bench takes none.
    println!("| model | segments | full BPTT peak | MRBP peak |");
    println!("| --- | ---: | ---: | ---: |");
    let mib = |b: usize| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    for segments in [2, 4, 8, 16] {
        let (full, replay) = measure::<memlab_rmt::RmtArch>(segments);
        println!("| rmt | {segments} | {} | {} |", mib(full), mib(replay));
    }
    for segments in [2, 4, 8, 16] {
        let (full, replay) = measure::<memlab_memformer::MemformerArch>(segments);
        println!(
            "| memformer | {segments} | {} | {} |",
            mib(full),
            mib(replay)
        );
    }
}

//! Every GPU backend compiled in (`--features wgpu` and/or `cuda`) computes
//! what the CPU computes: for every model of configs/bench.toml, the same
//! weights give the same logits, loss and gradients on the CPU (flex) and on the
//! GPU backend, within the backend's precision
//! (`memlab_cli::crosscheck::Tolerance`).
//!
//! ```sh
//! cargo test -p memlab-cli --features wgpu --test backends -- --nocapture
//! ```
//!
//! It needs a device: a GPU, or on a CPU-only machine Mesa's software
//! Vulkan driver (Debian: `mesa-vulkan-drivers`, then
//! `VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json`). Without a
//! GPU feature this file compiles to nothing.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use std::path::Path;

use memlab_cli::backend::BackendKind;
use memlab_cli::bench::BenchPlan;
use memlab_cli::crosscheck::{CheckSize, check_markdown, check_plan, require_agreement};

#[test]
fn every_gpu_backend_computes_what_the_cpu_computes() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/bench.toml");
    let plan = BenchPlan::load(&config, &[]).expect("configs/bench.toml");
    let gpus: Vec<_> = BackendKind::compiled()
        .into_iter()
        .filter(|&k| k != BackendKind::Flex)
        .collect();
    assert!(!gpus.is_empty());
    let rows = check_plan(&plan, &gpus, CheckSize::default()).expect("the check runs");
    assert_eq!(rows.len(), plan.models.len() * gpus.len());
    println!("{}", check_markdown(&rows));
    require_agreement(&rows).unwrap();
}

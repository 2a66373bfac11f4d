//! memlab-benchmarks: criterion benches of what each registered model costs
//! (`cargo bench -p memlab-benchmarks`). The steps they time are
//! `memlab bench`'s own ([`memlab_zoo::bench`]), and the models and shapes
//! come from the repository's bench configs: `configs/bench.toml` (small)
//! and `configs/bench-paper.toml` (paper-sized).

use std::path::Path;

pub use memlab_zoo::bench::{
    BenchPlan, Generating, Prepared, Shape, TrainPrepared, full_attention, time_calls, tokens,
};

/// `configs/<name>.toml` of this repository, parsed and checked.
pub fn plan(name: &str) -> BenchPlan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(format!("{name}.toml"));
    BenchPlan::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

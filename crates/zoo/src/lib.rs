//! memlab-zoo: every registered architecture on every compiled backend, for
//! the front ends (the `memlab` command line, the benchmarks, tests).
//!
//! - [`registry`]: the list of architectures (one line per crate);
//! - [`backend`]: the `--backend` choices and what each is on Burn;
//! - [`ModelJob`] and [`run_job`]: work generic over (architecture, backend),
//!   dispatched once from their names;
//! - [`run`]: training a config's model, and loading a run directory's;
//! - [`bench`]: what `memlab bench` and the criterion benches measure;
//! - [`alloc`], [`threads`]: the binary's counting allocator and its warm
//!   CPU workers.
//!
//! The architecture crates depend on `memlab-core` only; this crate is the
//! one place that names them all.

pub mod alloc;
pub mod backend;
pub mod bench;
pub mod registry;
pub mod run;
pub mod threads;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{Architecture, ArchitectureVisitor};

pub use backend::{BackendKind, BackendVisitor, with_backend};
pub use run::{
    LoadedRun, RunModelJob, build_task, check_model, progress_bar, run_train, train_model,
    with_run_model,
};

/// Work generic over the architecture and the (autodiff) backend: what
/// `memlab train`, `eval`, `bench` and `parity` and the benchmarks do with
/// a model. [`run_job`] picks both from their names.
pub trait ModelJob {
    type Output;
    fn run<A: Architecture, B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` with the architecture registered as `arch` on `backend`'s
/// default device; an unknown architecture or a backend this build lacks
/// is an error.
pub fn run_job<J: ModelJob>(backend: BackendKind, arch: &str, job: J) -> Result<J::Output> {
    struct OnBackend<'a, J> {
        arch: &'a str,
        job: J,
    }
    struct OnArch<J, B: AutodiffBackend> {
        job: J,
        device: B::Device,
    }
    impl<J: ModelJob, B: AutodiffBackend> ArchitectureVisitor for OnArch<J, B> {
        type Output = J::Output;
        fn visit<A: Architecture>(self) -> J::Output {
            self.job.run::<A, B>(self.device)
        }
    }
    impl<J: ModelJob> BackendVisitor for OnBackend<'_, J> {
        type Output = Result<J::Output>;
        fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
            let job = OnArch::<J, B> {
                job: self.job,
                device,
            };
            Ok(registry::dispatch(self.arch, job)?)
        }
    }
    // An unknown name is reported before any backend starts.
    registry::check_name(arch)?;
    with_backend(backend, OnBackend { arch, job })?
}

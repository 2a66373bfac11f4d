//! CPU worker threads for the CPU backends (flex, ndarray) of the `memlab`
//! binary: the model runs on a rayon worker, and the other workers stay awake
//! between the backend's parallel operations.
//!
//! Why: burn-flex splits each large operation (gemm's output blocks, the
//! rows of a reduction or of an element-wise op) over rayon's global pool.
//! Called from the main thread, every such operation injected a job, woke a
//! sleeping worker with a futex, put the main thread to sleep on a latch and
//! woke it again at the end. A model step is thousands of operations of a
//! few tens of microseconds each, and on a virtual machine each wake-up is an
//! inter-processor interrupt: `perf` put 20–25% of a Transformer-XL forward
//! pass in the kernel's `try_to_wake_up` (docs/benchmarks.md). PyTorch does
//! not pay this on the same machine because OpenMP's workers spin between
//! parallel regions.
//! This module does the same with rayon's own API:
//!
//! - [`adopt_main_thread`] makes the main thread worker 0 of rayon's global
//!   pool ([`rayon::ThreadPoolBuilder::use_current_thread`]), so that the
//!   backend's joins are pushed onto its own queue and stolen, instead of
//!   injected from outside;
//! - [`keep_workers_warm`] (called by `with_backend` for the CPU backends)
//!   sets every other worker on [`keep_warm`]: it takes the pool's pending
//!   jobs with [`rayon::yield_now`] and, between them, yields its core to the
//!   OS scheduler (another process that wants the core gets it). Idle for
//!   [`SPIN_FOR`], it naps [`NAP`] at a time; idle for [`WARM_FOR`], it goes
//!   back to rayon's own sleep, so an idle `memlab` costs nothing.
//!
//! The result of every operation is unchanged: the backend splits the work
//! by the same sizes whoever runs the pieces (`memlab_core::seed` says why
//! flex reproduces), so seeded and resumed runs stay bit-exact.
//!
//! Only the binary adopts its main thread: the test harness runs tests on
//! several threads at once, and there [`keep_workers_warm`] does nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long an idle worker keeps looking for work before it naps.
pub const SPIN_FOR: Duration = Duration::from_millis(5);
/// How long an idle worker naps between looks once [`SPIN_FOR`] has passed.
pub const NAP: Duration = Duration::from_micros(200);
/// How long a worker stays warm without work before it returns to rayon.
pub const WARM_FOR: Duration = Duration::from_secs(1);

static ADOPTED: AtomicBool = AtomicBool::new(false);
/// Workers in [`keep_warm`] now.
static WARM: AtomicUsize = AtomicUsize::new(0);

/// Makes the calling (main) thread worker 0 of rayon's global pool, of
/// rayon's default size (`RAYON_NUM_THREADS`, else the cores). Called once,
/// first thing, by `main`; does nothing if the global pool exists already.
pub fn adopt_main_thread() {
    let built = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .is_ok();
    ADOPTED.store(
        built && rayon::current_thread_index() == Some(0),
        Ordering::Relaxed,
    );
}

/// Sets the global pool's other workers on [`keep_warm`] unless they are
/// there already. Does nothing unless [`adopt_main_thread`] made the calling
/// thread worker 0.
pub fn keep_workers_warm() {
    if !ADOPTED.load(Ordering::Relaxed) || rayon::current_thread_index() != Some(0) {
        return;
    }
    let others = rayon::current_num_threads() - 1;
    if others == 0
        || WARM
            .compare_exchange(0, others, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    rayon::spawn_broadcast(|context| {
        if context.index() != 0 {
            keep_warm(WARM_FOR);
            WARM.fetch_sub(1, Ordering::AcqRel);
        }
    });
}

/// A worker's loop: run whatever job the pool has; when there is none, give
/// the core to the scheduler, nap once idle for [`SPIN_FOR`], return once
/// idle for `warm_for`.
fn keep_warm(warm_for: Duration) {
    let mut idle_since = Instant::now();
    loop {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
            continue;
        }
        let idle = idle_since.elapsed();
        if idle < SPIN_FOR {
            std::thread::yield_now();
        } else if idle < warm_for {
            std::thread::sleep(NAP);
        } else {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warm worker of a pool takes the pool's jobs, the results are the
    /// same as without it, and it returns once idle.
    #[test]
    fn a_warm_worker_runs_the_pools_jobs_then_returns() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let sum = || (0..1u64 << 20).into_par_iter().map(|i| i * i).sum::<u64>();
        let cold = sum();
        let start = Instant::now();
        let (hot, ran_on) = pool.install(|| {
            rayon::join(
                || keep_warm(Duration::from_millis(50)),
                || {
                    (0..64)
                        .into_par_iter()
                        .map(|_| (sum(), rayon::current_thread_index()))
                        .collect::<Vec<_>>()
                },
            )
            .1
            .into_iter()
            .unzip::<_, _, Vec<_>, Vec<_>>()
        });
        assert!(hot.iter().all(|&h| h == cold));
        assert!(ran_on.iter().all(Option::is_some));
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}

//! Data-parallel training on Burn's collective engine (burn-collective),
//! as PyTorch's `DataParallel`/`DistributedDataParallel` train LM-RMT
//! (`--multi_gpu`), Transformer-XL and the ∞-former.
//!
//! Every peer holds the whole model and takes an equal share of each batch's
//! rows; a row's memory stays with the peer that reads it (its streaming
//! memory included). Before every optimizer step the peers' gradients are
//! summed (`all_reduce`), each peer's loss being normalised by the whole
//! batch's token count ([`memlab_core::data::BatchShare`]), so that the sum is the
//! whole batch's gradient, as one device computes it up to the order of the
//! float additions. Burn's optimizer then takes the same step on every
//! peer, and the parameters, which start identical (broadcast from rank 0),
//! stay identical.
//!
//! Peers are threads of one process, one per device (the GPUs of a machine;
//! on the CPU, several peers sharing its cores), and optionally several
//! processes (nodes) through the collective's orchestrator
//! (`memlab orchestrator`), each with the same number of peers. Rank 0, the
//! first peer of node 0, alone writes the run (metrics, checkpoints) and
//! evaluates, on the whole batch, as a single device would.
//!
//! burn-collective implements broadcast between processes only for one
//! node; every collective operation here is therefore an `all_reduce` sum:
//! a broadcast is rank 0's tensor summed with the others' zeros, and a
//! gather is each peer's rows summed with zeros elsewhere. Adding zeros is
//! exact, so both are exact copies.

use std::sync::Mutex;

use burn::collective::{self, CollectiveConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::error::TrainError;
use crate::peer::{Peer, failed};
use crate::run::{TrainOptions, TrainReport};
use crate::train::train_peer;
use memlab_core::config::ExperimentConfig;
use memlab_core::data::Task;
use memlab_core::registry::Architecture;

/// Where the peers of a run are: `devices` in this process, times the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// Peers (devices) in this process.
    pub devices: usize,
    /// The processes taking part, when more than this one.
    pub nodes: Option<Nodes>,
}

/// This process's place among several, joined through the orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// This node's rank, `0..count`; node 0 holds rank 0, which writes.
    pub rank: usize,
    /// Number of nodes, each with the same number of peers.
    pub count: usize,
    /// The orchestrator's address, `ws://HOST:PORT`.
    pub orchestrator: String,
    /// The address the other nodes reach this node's data service at,
    /// `ws://HOST:PORT` (the port is `data_port`).
    pub address: String,
    /// The port this node serves its tensors on.
    pub data_port: u16,
}

impl Peers {
    /// Peers in all processes together.
    pub fn world(&self) -> usize {
        self.devices * self.nodes.as_ref().map_or(1, |n| n.count)
    }

    /// Checks the layout against a batch of `batch_size` rows.
    pub fn check(&self, batch_size: usize) -> Result<(), TrainError> {
        let bad = |why: String| Err(TrainError::Parallel(why));
        if self.devices == 0 {
            return bad("train.devices must be at least 1".into());
        }
        if let Some(nodes) = &self.nodes
            && (nodes.count == 0 || nodes.rank >= nodes.count)
        {
            return bad(format!(
                "node rank {} is outside 0..{} (--nodes)",
                nodes.rank, nodes.count
            ));
        }
        let world = self.world();
        if !batch_size.is_multiple_of(world) {
            return bad(format!(
                "train.batch_size ({batch_size}) must split into equal shares for the {world} \
                 peers (devices x nodes)"
            ));
        }
        Ok(())
    }
}

/// One run of the collective at a time in a process: burn-collective keeps
/// one server per backend type, which two runs (two tests) would share.
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// Registers local peer `local` (of `peers.devices`) on `device`.
fn join<B: Backend>(peers: &Peers, local: usize, device: &B::Device) -> Result<Peer, TrainError> {
    let node = peers.nodes.as_ref().map_or(0, |n| n.rank);
    let peer = Peer::new(node * peers.devices + local, peers.world());
    let mut config = CollectiveConfig::default().with_num_devices(peers.devices);
    if let Some(nodes) = &peers.nodes {
        let address = |s: &str| {
            s.parse()
                .map_err(|e| TrainError::Parallel(format!("address {s:?}: {e}")))
        };
        config = config
            .with_num_nodes(nodes.count as u32)
            .with_global_address(address(&nodes.orchestrator)?)
            .with_node_address(address(&nodes.address)?)
            .with_data_service_port(nodes.data_port)
            .with_global_all_reduce_strategy(collective::AllReduceStrategy::Tree(2));
    }
    collective::register::<B>(peer.id(), device.clone(), config).map_err(failed)?;
    Ok(peer)
}

/// Trains architecture `A` with one peer per device of `devices` (which
/// `peers.devices` counts) in this process, and `peers.nodes`' other
/// processes. Returns rank 0's report (`None` on the other nodes).
///
/// When one peer fails, it stops the collective, so that the others stop
/// too; the error returned is the failing peer's.
pub fn train_parallel<A: Architecture, B: AutodiffBackend>(
    config: &ExperimentConfig,
    model_config: &A::Config,
    task: &dyn Task,
    options: &TrainOptions,
    peers: &Peers,
    devices: &[B::Device],
) -> Result<Option<TrainReport>, TrainError> {
    peers.check(config.train.batch_size)?;
    if devices.len() != peers.devices {
        return Err(TrainError::Parallel(format!(
            "{} devices for {} peers",
            devices.len(),
            peers.devices
        )));
    }
    if peers.world() == 1 {
        return train_peer::<A, B>(
            config,
            model_config,
            task,
            options,
            &devices[0],
            &Peer::solo(),
        );
    }
    let _one_run = COLLECTIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // On the CPU the peers share the cores: each gets a pool of its own with
    // its share of the threads (one each for two peers on two cores), and
    // runs its operations there, instead of all of them queueing for the
    // process's one pool. Results do not depend on the number of threads
    // (`memlab_core::seed` says why).
    let cpu_threads = memlab_core::seed::host_backend::<B>()
        .then(|| (rayon::current_num_threads() / peers.devices).max(1));
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(local, device)| {
                scope.spawn(move || {
                    let run = || {
                        let peer = join::<B::InnerBackend>(peers, local, device)?;
                        let report =
                            train_peer::<A, B>(config, model_config, task, options, device, &peer)?;
                        collective::finish_collective::<B::InnerBackend>(peer.id())
                            .map_err(failed)?;
                        Ok(report)
                    };
                    run_peer::<B>(run, cpu_threads)
                })
            })
            .collect();
        join_helping_rayon(handles)
    });
    first_failure(results)
}

/// What a peer's thread ends with: its report or error, or its panic.
type PeerOutcome = std::thread::Result<Result<Option<TrainReport>, TrainError>>;

/// Runs one peer's training `run` on this thread, in a rayon pool of its
/// own of `cpu_threads` threads where given; a peer that fails or panics
/// resets the collective, which ends the other peers' pending and next
/// operations.
fn run_peer<B: AutodiffBackend>(
    run: impl FnOnce() -> Result<Option<TrainReport>, TrainError> + Send,
    cpu_threads: Option<usize>,
) -> PeerOutcome {
    let run = std::panic::AssertUnwindSafe(run);
    let pool = cpu_threads.and_then(|threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build()
            .ok()
    });
    let result = match pool {
        Some(pool) => pool.install(|| std::panic::catch_unwind(run)),
        None => std::panic::catch_unwind(run),
    };
    if !matches!(result, Ok(Ok(_))) {
        collective::reset_collective::<B::InnerBackend>();
    }
    result
}

/// Waits for the peers' threads. The calling thread may be a worker of
/// rayon's pool, on which the CPU backends' parallel operations (the
/// peers' too) rely: the `memlab` binary makes its main thread worker 0
/// (crates/zoo/src/threads.rs), the only one with `RAYON_NUM_THREADS=1`.
/// Blocked in a join, it would leave the peers' jobs to the other workers,
/// or to none; so it takes the pool's jobs while it waits.
fn join_helping_rayon(
    handles: Vec<std::thread::ScopedJoinHandle<'_, PeerOutcome>>,
) -> Vec<PeerOutcome> {
    while !handles.iter().all(|h| h.is_finished()) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(Err))
        .collect()
}

/// Rank 0's report, or the failing peer's error before the collective
/// errors it caused in the others; a peer's panic goes on unwinding here.
fn first_failure(results: Vec<PeerOutcome>) -> Result<Option<TrainReport>, TrainError> {
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    if let Some(position) = outcomes
        .iter()
        .position(|o| matches!(o, Err(e) if !matches!(e, TrainError::Collective(_))))
        .or_else(|| outcomes.iter().position(Result::is_err))
    {
        return outcomes.swap_remove(position);
    }
    Ok(outcomes.into_iter().find_map(|o| o.ok().flatten()))
}

/// The devices of `n` peers from the backend's `first`: the CPU backends'
/// one device for every peer (they share its cores), else the backend's
/// devices of the same kind from `first`'s index on (GPUs 0, 1, …).
pub fn peer_devices<B: Backend>(first: &B::Device, n: usize) -> Vec<B::Device> {
    use burn::tensor::backend::{Device, DeviceId};
    if memlab_core::seed::host_backend::<B>() {
        return vec![first.clone(); n];
    }
    let id = first.to_id();
    (0..n as u16)
        .map(|i| {
            B::Device::from_id(DeviceId {
                type_id: id.type_id,
                index_id: id.index_id + i,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    // Concurrent backward passes in one process keep every gradient. The
    // peers of this module are threads of one process that build and differentiate their graphs at the same time, on
    // Burn's one process-wide autodiff graph locator. burn-autodiff 0.21.0
    // lost gradients there (tracel-ai/burn#5573): at the end of every
    // `backward()` it sweeps *every* graph for nodes no tensor refers to any
    // more, and `float_cat` let go of its inputs' references before
    // registering its own step. An input that was the only node of its graph
    // (a leaf's first operation after an earlier backward) could be swept by
    // another thread in that window, and the gradient through the
    // concatenation silently went missing. memlab patches the concatenation
    // (vendor/README.md); without the patch this test fails within a few
    // hundred rounds.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use burn::backend::{Autodiff, Flex};
    use burn::prelude::*;
    use burn::tensor::Distribution;

    type B = Autodiff<Flex>;
    type Device = burn::backend::flex::FlexDevice;

    /// Large enough that the copy in the concatenation takes a while.
    const SIZE: usize = 256;
    const ROUNDS: usize = 150;
    const THREADS: usize = 3;

    /// One round: a leaf goes through a throwaway backward (which takes it out
    /// of the graph locator), then into `exp` (a graph of one node) and a
    /// concatenation. The leaf's gradient must exist and equal `exp(leaf)`.
    fn round(device: &Device) -> Result<(), String> {
        let leaf = Tensor::<B, 2>::random([SIZE, SIZE], Distribution::Normal(0.0, 0.5), device)
            .require_grad();
        let _ = (leaf.clone() * 2.0).sum().backward();
        let grown = leaf.clone().exp();
        let other = Tensor::<B, 2>::zeros([SIZE, SIZE], device);
        let grads = Tensor::cat(vec![grown, other], 0).sum().backward();
        let Some(grad) = leaf.grad(&grads) else {
            return Err("the leaf has no gradient".into());
        };
        // d/dx Σ exp(x) = exp(x).
        let expected = leaf.inner().exp();
        let worst = (grad - expected).abs().max().into_scalar();
        if worst > 1e-5 {
            return Err(format!("the leaf's gradient is off by {worst}"));
        }
        Ok(())
    }

    #[test]
    fn concurrent_backward_passes_keep_every_gradient() {
        let device = Default::default();
        let done = Arc::new(AtomicBool::new(false));
        // Sweepers: backward passes of their own small graphs, as fast as
        // they can; each ends with the sweep of every graph.
        let sweepers: Vec<_> = (0..THREADS)
            .map(|_| {
                let done = done.clone();
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        let x = Tensor::<B, 1>::ones([4], &device).require_grad();
                        let _ = (x * 3.0).sum().backward();
                    }
                })
            })
            .collect();
        let victims: Vec<_> = (0..THREADS)
            .map(|_| std::thread::spawn(move || (0..ROUNDS).try_for_each(|_| round(&device))))
            .collect();
        let results: Vec<_> = victims.into_iter().map(|v| v.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        for sweeper in sweepers {
            sweeper.join().unwrap();
        }
        for result in results {
            result.unwrap();
        }
    }
}

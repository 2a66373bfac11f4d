//! Reproducibility. Burn's backends keep one process-wide random generator,
//! seeded by `Backend::seed`, and initialise parameters lazily (each clone of
//! an untouched parameter draws its own values). So memlab seeds and draws
//! under one process-wide lock (two trainings in one process, as in tests,
//! cannot interleave their draws) and materialises every parameter right
//! after building a model.
//!
//! The CPU backend, burn-flex, reproduces seeded runs exactly with its SIMD
//! kernels and threads on: its matmuls (gemm) split the work by output
//! blocks, and its reductions along a dimension give each row to one thread,
//! so the order of every float sum is fixed. One operation is not: the sum of
//! a whole contiguous tensor of 4M elements or more is split across threads
//! by rayon's adaptive splitter, whose grouping varies from run to run. No
//! model here sums such a tensor whole (the gradient-norm clip sums each
//! parameter, and none has 4M elements at the sizes in configs/). Burn's
//! older ndarray backend (`--features ndarray`) must run without its SIMD
//! kernels, whose reductions round differently from run to run.
//!
//! Dropout on the CPU draws its masks from a generator of memlab's
//! ([`crate::layers::Dropout`]), one per thread, seeded here with the
//! backend's.

use std::cell::RefCell;
use std::sync::Mutex;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

static RNG_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// The generator of the CPU backends' dropout masks
    /// ([`crate::layers::Dropout`]), seeded with the backend's by [`seeded`].
    /// One per thread: data-parallel peers (memlab-train's `distributed`) are
    /// threads that each draw their own masks, at the same time.
    static MASK_RNG: RefCell<Option<Xoshiro256PlusPlus>> = const { RefCell::new(None) };
}

/// Seeds the backend's generator and runs `f` while no other memlab code in
/// this process can draw from it.
pub fn seeded<B: Backend, R>(device: &B::Device, seed: u64, f: impl FnOnce() -> R) -> R {
    let _guard = lock(&RNG_LOCK);
    B::seed(device, seed);
    seed_masks(seed);
    f()
}

/// [`seeded`] for a data-parallel peer's training step: on the CPU
/// backends, whose dropout draws only from this thread's mask generator,
/// the peers run their steps at the same time; on the others, which draw
/// from the backend's own generator, one after the other, under the lock.
pub fn seeded_step<B: Backend, R>(device: &B::Device, seed: u64, f: impl FnOnce() -> R) -> R {
    if host_backend::<B>() {
        seed_masks(seed);
        f()
    } else {
        seeded::<B, R>(device, seed, f)
    }
}

fn seed_masks(seed: u64) {
    MASK_RNG.with(|rng| *rng.borrow_mut() = Some(Xoshiro256PlusPlus::seed_from_u64(seed)));
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `B` keeps its tensors in host memory (Burn's CPU backends, with or
/// without autodiff): its type name is a compile-time constant.
pub fn host_backend<B: Backend>() -> bool {
    let name = std::any::type_name::<B>();
    name.contains("burn_flex::") || name.contains("burn_ndarray::")
}

/// `n` dropout factors: `1 / keep` with probability `keep`, else 0, from the
/// mask generator (seed 0 until [`seeded`] first runs). One `u32` per
/// element against `keep · 2³²`.
pub(crate) fn host_mask(n: usize, keep: f64) -> Vec<f32> {
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    // Branch-free, so that the loop is the generator's own cost.
    let factor = |bits: u32| scale * f32::from(u8::from(u64::from(bits) < threshold));
    MASK_RNG.with(|cell| {
        let mut guard = cell.borrow_mut();
        // A local copy keeps the state in registers (through the cell it
        // is stored back after every word); it is written back at the end.
        let mut rng = guard
            .get_or_insert_with(|| Xoshiro256PlusPlus::seed_from_u64(0))
            .clone();
        // Two factors per word, low half first; an odd last factor takes a
        // word's low half and drops the rest.
        let mut out = vec![0.0; n];
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let word = rng.next_u64();
            pair[0] = factor(word as u32);
            pair[1] = factor((word >> 32) as u32);
        }
        if let [last] = pairs.into_remainder() {
            *last = factor(rng.next_u64() as u32);
        }
        *guard = Some(rng);
        out
    })
}

/// Draws each parameter and numbers it in module order.
struct Materialize(u64);

impl<B: Backend> ModuleMapper<B> for Materialize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        Param::from_mapped_value(ParamId::from(self.0), tensor, mapper)
    }
}

/// Draws every lazily initialised parameter now, in module order, and
/// gives the parameters the ids 1, 2, … in that order instead of Burn's
/// random ones, so that two runs with the same seed write the same
/// checkpoint, byte for byte.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Materialize(0))
}

/// Builds a model with `init` under `seed`, with every parameter drawn.
pub fn init_seeded<B: Backend, M: Module<B>>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> M,
) -> M {
    seeded::<B, _>(device, seed, || materialize(init()))
}

struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dims().to_vec());
    }
}

/// The shapes of a module's float parameters, in module order.
pub fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}

//! Reproducibility. Burn's backends keep one process-wide random generator,
//! seeded by `Backend::seed`, and initialise parameters lazily (each clone of
//! an untouched parameter draws its own values). So memlab seeds and draws
//! under one process-wide lock (two trainings in one process, as in tests,
//! cannot interleave their draws) and materialises every parameter right
//! after building a model.
//!
//! The CPU backend is built without burn-ndarray's SIMD kernels: their float
//! reductions (softmax, sums along a dimension) round differently from run to
//! run, which made two runs with the same seed drift apart after one step.

use std::sync::Mutex;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

static RNG_LOCK: Mutex<()> = Mutex::new(());

/// Seeds the backend's generator and runs `f` while no other memlab code in
/// this process can draw from it.
pub fn seeded<B: Backend, R>(device: &B::Device, seed: u64, f: impl FnOnce() -> R) -> R {
    let _guard = RNG_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    f()
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

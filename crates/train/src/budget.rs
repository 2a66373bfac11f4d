//! Whether a training step fits the machine: a lower bound of what it
//! holds, measured without drawing the parameters.

use std::fs;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// A lower bound of the bytes training holds: f32 weights, their gradients
/// and AdamW's two moments (16 bytes a parameter), and one step's logits
/// with their gradient (`batch × seq_len × vocab`, 8 bytes each).
pub fn memory_estimate(parameters: usize, batch: usize, seq_len: usize, vocab: usize) -> u64 {
    let logits = (batch as u64)
        .saturating_mul(seq_len as u64)
        .saturating_mul(vocab as u64);
    (parameters as u64)
        .saturating_mul(16)
        .saturating_add(logits.saturating_mul(8))
}

struct LazyCount(usize);

impl<B: Backend> ModuleVisitor<B> for LazyCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param
            .lazy_shape()
            .iter()
            .fold(1usize, |n, &d| n.saturating_mul(d));
        self.0 = self.0.saturating_add(n);
    }
}

/// Parameters of a module, without drawing any that are not drawn yet.
pub fn lazy_parameters<B: Backend, M: Module<B>>(module: &M) -> usize {
    let mut count = LazyCount(0);
    module.visit(&mut count);
    count.0
}

/// The memory the operating system says is available (Linux's
/// `MemAvailable`), in bytes.
pub fn host_available_memory() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

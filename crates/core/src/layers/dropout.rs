//! Dropout (Srivastava et al., 2014): in training, each element is zeroed
//! with probability `prob` and the rest scaled by `1 / (1 − prob)`; the
//! identity at inference (no autodiff) and for `prob = 0`.
//!
//! Why not `burn::nn::Dropout`: it draws its mask with `random_like`,
//! which on Burn's CPU backends samples one Bernoulli variable per element
//! through the generic distribution sampler (ChaCha12 and an `f64` per
//! element), and then multiplies twice. Profiled on the training step of
//! LM-RMT's small configuration, that sampling was 14% of the step. On the
//! CPU backends (whose tensors live in host memory) the mask is drawn here
//! instead, from Xoshiro256++ at one `u32` per element, already scaled, and
//! applied with one product. It is seeded with the backend's generator by
//! [`crate::seed::seeded`], so seeded and resumed runs reproduce exactly.
//! GPU backends keep Burn's on-device draw (an upload per mask would cost
//! more than it saves).

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::seed::{host_backend, host_mask};

thread_local! {
    static DISABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every [`Dropout`] of this thread the identity, whatever
/// its probability: for computations that must agree from backend to
/// backend (`memlab bench --check`), where each would draw its own masks.
/// Every architecture's dropout is this type, so none is missed.
pub fn without_dropout<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DISABLED.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DISABLED.with(|d| d.replace(true)));
    f()
}

/// Dropout with probability `prob`, a constant module (no parameters, an
/// empty record, as Burn's own `Dropout`).
#[derive(Module, Clone, Debug)]
pub struct Dropout {
    pub prob: f64,
}

impl Dropout {
    pub fn new(prob: f64) -> Self {
        Self { prob }
    }

    /// `x` with dropout applied when autodiff is on (training), outside
    /// [`without_dropout`].
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        if !B::ad_enabled(&device) || self.prob == 0.0 || DISABLED.with(|d| d.get()) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mask = if host_backend::<B>() {
            let shape = x.shape();
            let values = host_mask(shape.num_elements(), keep);
            Tensor::from_data(TensorData::new(values, shape), &device)
        } else {
            x.random_like(Distribution::Bernoulli(keep)) * (1.0 / keep)
        };
        x * mask
    }
}

impl From<&Dropout> for Dropout {
    fn from(dropout: &Dropout) -> Self {
        dropout.clone()
    }
}

impl From<&burn::nn::Dropout> for Dropout {
    fn from(dropout: &burn::nn::Dropout) -> Self {
        Self::new(dropout.prob)
    }
}

//! What Memformer carries from segment `t` to `t + 1`: the memory slots
//! written after reading segment `t`, and the encoder's output for segment
//! `t` (with the memory before it), which segment `t + 1`'s decoder reads.

use burn::prelude::*;
use memlab_core::model::{MemoryError, MemoryState};

#[derive(Debug, Clone)]
pub struct MemformerMemory<B: Backend> {
    /// `[batch, k, d_model]`, each slot of unit norm.
    pub slots: Tensor<B, 3>,
    /// `[batch, s, d_model]`; `None` before the first segment.
    pub encoded: Option<Tensor<B, 3>>,
}

impl<B: Backend> MemoryState<B> for MemformerMemory<B> {
    fn detach(self) -> Self {
        Self {
            slots: self.slots.detach(),
            encoded: self.encoded.map(|e| e.detach()),
        }
    }

    fn num_floats(&self) -> usize {
        self.slots.shape().num_elements()
            + self
                .encoded
                .as_ref()
                .map_or(0, |e| e.shape().num_elements())
    }

    /// `[slots, encoded]`, `encoded` empty before the first segment.
    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        vec![Some(self.slots.clone()), self.encoded.clone()]
    }

    fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        match <[_; 2]>::try_from(slots) {
            Ok([Some(slots), encoded]) => Ok(Self { slots, encoded }),
            Ok([None, _]) => Err(MemoryError("Memformer memory needs its slots".into())),
            Err(slots) => Err(MemoryError(format!(
                "Memformer memory has two slots (memory slots, encoding), got {}",
                slots.len()
            ))),
        }
    }
}

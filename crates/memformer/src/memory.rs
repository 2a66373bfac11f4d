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

    /// `[slots]` or `[slots, encoded]`.
    fn to_tensors(&self) -> Vec<Tensor<B, 3>> {
        let mut out = vec![self.slots.clone()];
        out.extend(self.encoded.clone());
        out
    }

    fn from_tensors(tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError> {
        let mut it = tensors.into_iter();
        let slots = it
            .next()
            .ok_or_else(|| MemoryError("Memformer memory needs its slots".into()))?;
        let encoded = it.next();
        if it.next().is_some() {
            return Err(MemoryError(
                "Memformer memory is [slots] or [slots, encoded]".into(),
            ));
        }
        Ok(Self { slots, encoded })
    }
}

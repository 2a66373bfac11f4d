//! Segment-level recurrence with state reuse (Dai et al., 2019, §3.2): the
//! memory is, per layer, that layer's input for the last `mem_len`
//! positions, `h̃ = [SG(h_{τ−1}) ∘ h_τ]`, kept without gradient.

use burn::prelude::*;
use memlab_core::{MemoryError, MemoryState};

/// Per-layer caches `[batch, m, d_model]` (`m ≤ mem_len`); empty before the
/// first segment.
#[derive(Debug, Clone)]
pub struct XlMemory<B: Backend> {
    pub layers: Vec<Tensor<B, 3>>,
}

impl<B: Backend> XlMemory<B> {
    pub fn empty() -> Self {
        Self { layers: Vec::new() }
    }

    /// Cached positions (0 before the first segment).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |m| m.dims()[1])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The update of the official `_update_mems`: append each layer's input
    /// to its cache, keep the last `mem_len` positions, stop the gradient.
    pub fn update(&self, layer_inputs: Vec<Tensor<B, 3>>, mem_len: usize) -> Self {
        if mem_len == 0 {
            return Self::empty();
        }
        let layers = layer_inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                let all = match self.layers.get(i) {
                    Some(cache) => Tensor::cat(vec![cache.clone(), input], 1),
                    None => input,
                };
                let total = all.dims()[1];
                let keep = total.min(mem_len);
                all.narrow(1, total - keep, keep).detach()
            })
            .collect();
        Self { layers }
    }
}

impl<B: Backend> MemoryState<B> for XlMemory<B> {
    fn detach(self) -> Self {
        Self {
            layers: self.layers.into_iter().map(|t| t.detach()).collect(),
        }
    }

    fn num_floats(&self) -> usize {
        self.layers.iter().map(|t| t.shape().num_elements()).sum()
    }

    fn to_tensors(&self) -> Vec<Tensor<B, 3>> {
        self.layers.clone()
    }

    fn from_tensors(tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError> {
        if let Some(first) = tensors.first() {
            let [b, m, d] = first.dims();
            if let Some((i, t)) = tensors
                .iter()
                .enumerate()
                .find(|(_, t)| t.dims() != [b, m, d])
            {
                return Err(MemoryError(format!(
                    "layer {i} cache has shape {:?}, layer 0 {:?}",
                    t.dims(),
                    [b, m, d]
                )));
            }
        }
        Ok(Self { layers: tensors })
    }
}

//! Transformer-XL's segment-level recurrence with state reuse (Dai et al.,
//! 2019, §3.2): per layer, that layer's input for the last `mem_len`
//! positions, `h̃ = [SG(h_{τ−1}) ∘ h_τ]`, kept without gradient; and the
//! stack of relative blocks that reads it. Shared by Transformer-XL, the
//! Tr-XL backbone of RMT and the ∞-former's short-term memory.

use burn::prelude::*;

use crate::model::{MemoryError, MemoryState};

/// Per-layer caches `[batch, m, d_model]` (`m ≤ mem_len`); empty before the
/// first segment.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    pub layers: Vec<Tensor<B, 3>>,
}

impl<B: Backend> LayerCache<B> {
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
        self.update_evicting(layer_inputs, mem_len).0
    }

    /// [`Self::update`], also returning per layer the positions pushed out
    /// of the cache (detached; `None` when none left): the ∞-former writes
    /// them into its long-term memory.
    pub fn update_evicting(
        &self,
        layer_inputs: Vec<Tensor<B, 3>>,
        mem_len: usize,
    ) -> (Self, Vec<Option<Tensor<B, 3>>>) {
        let (layers, evicted) = layer_inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                let all = match self.layers.get(i) {
                    Some(cache) => Tensor::cat(vec![cache.clone(), input], 1),
                    None => input,
                };
                let total = all.dims()[1];
                let keep = total.min(mem_len);
                let left = (keep < total).then(|| all.clone().narrow(1, 0, total - keep).detach());
                let kept = (keep > 0).then(|| all.narrow(1, total - keep, keep).detach());
                (kept, left)
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let layers = if mem_len == 0 {
            Vec::new()
        } else {
            layers.into_iter().flatten().collect()
        };
        (Self { layers }, evicted)
    }
}

impl<B: Backend> MemoryState<B> for LayerCache<B> {
    fn detach(self) -> Self {
        Self {
            layers: self.layers.into_iter().map(|t| t.detach()).collect(),
        }
    }

    fn num_floats(&self) -> usize {
        self.layers.iter().map(|t| t.shape().num_elements()).sum()
    }

    /// One slot per layer, each filled (none before the first segment).
    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        self.layers.iter().cloned().map(Some).collect()
    }

    fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        let layers = slots
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| MemoryError(format!("layer {i} has no cache"))))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = layers.first() {
            let [b, m, d] = first.dims();
            if let Some((i, t)) = layers
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
        Ok(Self { layers })
    }
}

/// The attention mask `[1, 1, q, m+q]` of a segment of `q` tokens after `m`
/// cached ones (`true` = masked): query `i` sees keys `j ≤ m + i`; with
/// `same_length = Some(mem_len)` also not keys `j ≤ i − s`, where
/// `s = q − (m + q − mem_len)` when `m + q > mem_len` (else `q`), so that
/// every query sees the same `mem_len` nearest keys (the official
/// `dec_attn_mask` of Transformer-XL and LM-RMT).
pub fn xl_mask<B: Backend>(
    q: usize,
    m: usize,
    same_length: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let k = m + q;
    let future = Tensor::<B, 2, Bool>::tril_mask([q, k], m as i64, device);
    let mask = match same_length {
        Some(mem_len) => {
            let mask_len = k as i64 - mem_len as i64;
            let shift = if mask_len > 0 {
                q as i64 - mask_len
            } else {
                q as i64
            };
            // triu_mask(offset) is true where j < i + offset: here j ≤ i − shift.
            let too_far = Tensor::<B, 2, Bool>::triu_mask([q, k], 1 - shift, device);
            future.bool_or(too_far)
        }
        None => future,
    };
    mask.reshape([1, 1, q, k])
}

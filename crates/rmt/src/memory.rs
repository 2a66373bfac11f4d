//! What RMT carries between segments (Bulatov et al., 2022, §3): the
//! memory tokens written by the previous segment and, with the Tr-XL
//! backbone, Transformer-XL's per-layer cache.

use burn::prelude::*;
use memlab_core::cache::LayerCache;
use memlab_core::{MemoryError, MemoryState};

#[derive(Debug, Clone)]
pub struct RmtMemory<B: Backend> {
    /// Memory tokens `[batch, m, d_model]` (`None` when `m = 0`).
    pub tokens: Option<Tensor<B, 3>>,
    /// Tr-XL backbone's cache (empty otherwise).
    pub cache: LayerCache<B>,
}

impl<B: Backend> RmtMemory<B> {
    /// The learned initial memory `init` `[m, d]` (none without memory
    /// tokens), the same for each of `batch` sequences, and no cache.
    pub fn initial(init: Option<Tensor<B, 2>>, batch: usize) -> Self {
        let tokens = init.map(|t| {
            let [m, d] = t.dims();
            t.reshape([1, m, d]).repeat_dim(0, batch)
        });
        Self {
            tokens,
            cache: LayerCache::empty(),
        }
    }
}

impl<B: Backend> MemoryState<B> for RmtMemory<B> {
    fn detach(self) -> Self {
        Self {
            tokens: self.tokens.map(|t| t.detach()),
            cache: self.cache.detach(),
        }
    }

    fn num_floats(&self) -> usize {
        self.tokens.as_ref().map_or(0, |t| t.shape().num_elements()) + self.cache.num_floats()
    }

    /// `[tokens, cache layers…]`, `tokens` empty without memory tokens.
    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        let mut slots = vec![self.tokens.clone()];
        slots.extend(self.cache.to_slots());
        slots
    }

    fn from_slots(mut slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        if slots.is_empty() {
            return Err(MemoryError(
                "RMT memory's first slot is its memory tokens (empty without them)".into(),
            ));
        }
        let tokens = slots.remove(0);
        Ok(Self {
            tokens,
            cache: LayerCache::from_slots(slots)?,
        })
    }
}

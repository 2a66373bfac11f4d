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

    /// `[tokens, cache layers…]`; without memory tokens, the cache alone.
    fn to_tensors(&self) -> Vec<Tensor<B, 3>> {
        self.tokens
            .iter()
            .cloned()
            .chain(self.cache.to_tensors())
            .collect()
    }

    /// Takes the first tensor as the memory tokens and the rest as the
    /// cache; a model without memory tokens must rebuild its state with
    /// [`RmtMemory::cache_only`].
    fn from_tensors(mut tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError> {
        if tensors.is_empty() {
            return Err(MemoryError("RMT memory needs its memory tokens".into()));
        }
        let tokens = tensors.remove(0);
        Ok(Self {
            tokens: Some(tokens),
            cache: LayerCache::from_tensors(tensors)?,
        })
    }
}

impl<B: Backend> RmtMemory<B> {
    /// The state of a model without memory tokens.
    pub fn cache_only(cache: LayerCache<B>) -> Self {
        Self {
            tokens: None,
            cache,
        }
    }
}

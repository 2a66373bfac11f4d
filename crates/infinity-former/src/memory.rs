//! What the ∞-former carries from segment to segment: Transformer-XL's
//! short-term cache and, per layer, the long-term signal. Everything is
//! detached (stop-gradient), as in the official code: gradients never flow
//! into the past.

use burn::prelude::*;
use memlab_core::cache::LayerCache;
use memlab_core::model::{MemoryError, MemoryState};

#[derive(Debug, Clone)]
pub struct InfinityMemory<B: Backend> {
    /// Short-term memory: each layer's input for the last `mem_len` positions.
    pub cache: LayerCache<B>,
    /// Per layer: the inputs that left the short-term cache at the end of
    /// the last segment `[batch, L, d_model]`, written into the signal at
    /// the start of the next (where the gate's gradient is recorded).
    pub pending: Vec<Option<Tensor<B, 3>>>,
    /// Per layer: the signal's coefficients `B` `[batch, N, d_model]`.
    pub coefficients: Vec<Option<Tensor<B, 3>>>,
    /// Per layer, sticky memories: the last step's attention density over
    /// the bins `[batch, 1, D]`.
    pub density: Vec<Option<Tensor<B, 3>>>,
}

impl<B: Backend> InfinityMemory<B> {
    pub fn empty() -> Self {
        Self {
            cache: LayerCache::empty(),
            pending: Vec::new(),
            coefficients: Vec::new(),
            density: Vec::new(),
        }
    }

    fn groups(&self) -> [Vec<Option<Tensor<B, 3>>>; 4] {
        [
            self.cache.layers.iter().cloned().map(Some).collect(),
            self.pending.clone(),
            self.coefficients.clone(),
            self.density.clone(),
        ]
    }
}

fn detach_all<B: Backend>(v: Vec<Option<Tensor<B, 3>>>) -> Vec<Option<Tensor<B, 3>>> {
    v.into_iter().map(|t| t.map(|t| t.detach())).collect()
}

impl<B: Backend> MemoryState<B> for InfinityMemory<B> {
    fn detach(self) -> Self {
        Self {
            cache: self.cache.detach(),
            pending: detach_all(self.pending),
            coefficients: detach_all(self.coefficients),
            density: detach_all(self.density),
        }
    }

    fn num_floats(&self) -> usize {
        self.groups()
            .iter()
            .flatten()
            .flatten()
            .map(|t| t.shape().num_elements())
            .sum()
    }

    /// Four groups (cache, pending, coefficients, density) of one slot per
    /// layer, group after group; empty before the first segment.
    fn to_slots(&self) -> Vec<Option<Tensor<B, 3>>> {
        let groups = self.groups();
        let layers = groups.iter().map(Vec::len).max().unwrap_or(0);
        groups
            .into_iter()
            .flat_map(|mut g| {
                g.resize(layers, None);
                g
            })
            .collect()
    }

    fn from_slots(slots: Vec<Option<Tensor<B, 3>>>) -> Result<Self, MemoryError> {
        if !slots.len().is_multiple_of(4) {
            return Err(MemoryError(format!(
                "the ∞-former's memory has four groups of one slot per layer, got {} slots",
                slots.len()
            )));
        }
        let layers = slots.len() / 4;
        let mut slots = slots.into_iter();
        let mut group = || slots.by_ref().take(layers).collect::<Vec<_>>();
        let (cache, pending, coefficients, density) = (group(), group(), group(), group());
        // The cache holds every layer or none (mem_len 0).
        let cached = cache.iter().filter(|t| t.is_some()).count();
        if cached != 0 && cached != layers {
            return Err(MemoryError(format!(
                "{cached} of {layers} layers have a short-term cache"
            )));
        }
        Ok(Self {
            cache: LayerCache {
                layers: cache.into_iter().flatten().collect(),
            },
            pending,
            coefficients,
            density,
        })
    }
}

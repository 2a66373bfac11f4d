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

    /// A layout tensor `[batch, 4, layers]`, the same on every row (1 where a group — cache, pending,
    /// coefficients, density — holds that layer's tensor), then the tensors
    /// present, group by group. Empty before the first segment.
    fn to_tensors(&self) -> Vec<Tensor<B, 3>> {
        let groups = self.groups();
        let layers = groups.iter().map(Vec::len).max().unwrap_or(0);
        let Some(device) = groups.iter().flatten().flatten().next().map(|t| t.device()) else {
            return Vec::new();
        };
        let flags: Vec<f32> = groups
            .iter()
            .flat_map(|g| {
                (0..layers).map(move |i| f32::from(u8::from(matches!(g.get(i), Some(Some(_))))))
            })
            .collect();
        let tensors: Vec<Tensor<B, 3>> = groups.into_iter().flatten().flatten().collect();
        // The layout is repeated on every row, as [`MemoryState::to_tensors`]
        // asks (`[batch, n, d]`): a batch's rows can be split (the peers of
        // data parallelism take theirs) and each part still reads.
        let batch = tensors[0].dims()[0];
        let layout = Tensor::<B, 3>::from_data(TensorData::new(flags, [1, 4, layers]), &device)
            .repeat_dim(0, batch);
        let mut out = vec![layout];
        out.extend(tensors);
        out
    }

    fn from_tensors(tensors: Vec<Tensor<B, 3>>) -> Result<Self, MemoryError> {
        let mut tensors = tensors.into_iter();
        let Some(layout) = tensors.next() else {
            return Ok(Self::empty());
        };
        let [rows, four, layers] = layout.dims();
        if rows == 0 || four != 4 {
            return Err(MemoryError(format!(
                "the first tensor must be the [batch, 4, layers] layout, got {:?}",
                layout.dims()
            )));
        }
        // Every row holds the same layout (checkpoints before data
        // parallelism hold one row).
        let flags: Vec<f32> = layout
            .narrow(0, 0, 1)
            .into_data()
            .to_vec()
            .map_err(|e| MemoryError(format!("layout tensor: {e:?}")))?;
        let mut groups: [Vec<Option<Tensor<B, 3>>>; 4] = Default::default();
        for (g, group) in groups.iter_mut().enumerate() {
            for i in 0..layers {
                group.push(if flags[g * layers + i] > 0.5 {
                    Some(tensors.next().ok_or_else(|| {
                        MemoryError(format!("group {g}, layer {i}: missing tensor"))
                    })?)
                } else {
                    None
                });
            }
        }
        if tensors.next().is_some() {
            return Err(MemoryError("more tensors than the layout lists".into()));
        }
        let [cache, pending, coefficients, density] = groups;
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

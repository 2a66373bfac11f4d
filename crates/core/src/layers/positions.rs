//! Position information: sinusoids (Vaswani et al., 2017, §3.5) in the
//! `[sin | cos]` layout of Transformer-XL's code, and learned absolute
//! positions.
//!
//! Hand-written rather than Burn's `PositionalEncoding`, because the same
//! function must also produce sinusoids at arbitrary (descending, clamped)
//! relative distances for Transformer-XL (Dai et al., 2019, §3.3).

use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::normal_init;

/// Sinusoids for the given positions: `[positions.len(), d_model]` where
/// column `c < d/2` is `sin(p / 10000^(2c/d))` and column `d/2 + c` the cosine.
pub fn sinusoids<B: Backend>(
    positions: &[f32],
    d_model: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = d_model / 2;
    let mut data = vec![0.0f32; positions.len() * d_model];
    for (row, &p) in positions.iter().enumerate() {
        for c in 0..half {
            let inv_freq = 1.0 / 10000f64.powf(2.0 * c as f64 / d_model as f64);
            let angle = p as f64 * inv_freq;
            data[row * d_model + c] = angle.sin() as f32;
            data[row * d_model + half + c] = angle.cos() as f32;
        }
    }
    Tensor::from_data(TensorData::new(data, [positions.len(), d_model]), device)
}

/// Which absolute positions a model adds to its token embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PositionKind {
    /// Learned embeddings, one per position of a segment.
    #[default]
    Learned,
    /// Fixed sinusoids.
    Sinusoidal,
    /// No absolute positions (relative attention supplies them).
    None,
}

/// Absolute positions added to the embeddings of a segment.
#[derive(Module, Debug)]
pub struct AbsolutePositions<B: Backend> {
    /// Learned table `[max_len, d_model]`, when learned.
    pub learned: Option<Embedding<B>>,
    /// Whether fixed sinusoids are added (computed per call: they are not
    /// parameters, so they are neither counted nor saved).
    pub sinusoidal: bool,
    pub max_len: usize,
}

impl<B: Backend> AbsolutePositions<B> {
    pub fn new(
        kind: PositionKind,
        max_len: usize,
        d_model: usize,
        init_std: f64,
        device: &B::Device,
    ) -> Self {
        let learned = (kind == PositionKind::Learned).then(|| {
            EmbeddingConfig::new(max_len, d_model)
                .with_initializer(normal_init(init_std))
                .init(device)
        });
        Self {
            learned,
            sinusoidal: kind == PositionKind::Sinusoidal,
            max_len,
        }
    }

    /// Adds positions `0..len` to `x` `[batch, len, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_at(x, 0)
    }

    /// Adds positions `start..start + len` to `x` `[batch, len, d]` (the
    /// rows of a segment read from position `start` on).
    pub fn forward_at(&self, x: Tensor<B, 3>, start: usize) -> Tensor<B, 3> {
        let [_, len, d] = x.dims();
        assert!(
            start + len <= self.max_len,
            "segment of {} tokens is longer than the {} positions this model was built for",
            start + len,
            self.max_len
        );
        if let Some(learned) = &self.learned {
            return x + learned
                .weight
                .val()
                .narrow(0, start, len)
                .reshape([1, len, d]);
        }
        if self.sinusoidal {
            let positions: Vec<f32> = (start..start + len).map(|p| p as f32).collect();
            return x.clone() + sinusoids(&positions, d, &x.device()).reshape([1, len, d]);
        }
        x
    }
}

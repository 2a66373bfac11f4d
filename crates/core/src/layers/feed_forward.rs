//! Position-wise feed-forward network (Vaswani et al., 2017, §3.3):
//! `W₂ dropout(act(W₁ x + b₁)) + b₂`.

use burn::nn::{Linear, LinearConfig};

use super::dropout::Dropout;
use burn::prelude::*;
use burn::tensor::activation::{gelu, relu};
use serde::{Deserialize, Serialize};

use super::attention::{normal_init, rows};

/// The non-linearity between the two projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// ReLU, as in the original Transformer and Transformer-XL.
    #[default]
    Relu,
    /// GELU, as in GPT-2.
    Gelu,
}

#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    pub d_model: usize,
    pub d_ff: usize,
    #[config(default = 0.0)]
    pub dropout: f64,
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    #[config(default = 0.02)]
    pub init_std: f64,
}

#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub inner: Linear<B>,
    pub outer: Linear<B>,
    pub dropout: Dropout,
    pub gelu: bool,
}

impl FeedForwardConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeedForward<B> {
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_initializer(normal_init(self.init_std))
                .init(device)
        };
        FeedForward {
            inner: linear(self.d_model, self.d_ff),
            outer: linear(self.d_ff, self.d_model),
            dropout: Dropout::new(self.dropout),
            gelu: self.activation == Activation::Gelu,
        }
    }
}

impl<B: Backend> FeedForward<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = rows(&self.inner, x);
        let h = if self.gelu { gelu(h) } else { relu(h) };
        rows(&self.outer, self.dropout.forward(h))
    }
}

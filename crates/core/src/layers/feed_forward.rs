//! Position-wise feed-forward network (Vaswani et al., 2017, §3.3):
//! `W₂ dropout(act(W₁ x + b₁)) + b₂`.

use burn::nn::{Linear, LinearConfig};

use super::dropout::Dropout;
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, relu};
use serde::{Deserialize, Serialize};

use super::attention::{normal_init, rows};

/// The non-linearity between the two projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// ReLU, as in the original Transformer and Transformer-XL.
    #[default]
    Relu,
    /// GELU, exact (`x Φ(x)`, Hendrycks & Gimpel, 2016).
    Gelu,
    /// GELU's tanh approximation, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`:
    /// what GPT-2 computes (Hugging Face's `gelu_new`).
    #[serde(rename = "gelu_new")]
    GeluNew,
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
    /// GELU's tanh approximation where `gelu` (a field of its own, so that
    /// checkpoints written before it load unchanged).
    pub gelu_tanh: bool,
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
            gelu: matches!(self.activation, Activation::Gelu | Activation::GeluNew),
            gelu_tanh: self.activation == Activation::GeluNew,
        }
    }
}

impl<B: Backend> FeedForward<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = rows(&self.inner, x);
        let h = match (self.gelu, self.gelu_tanh) {
            (true, true) => gelu_approximate(h),
            (true, false) => gelu(h),
            (false, _) => relu(h),
        };
        rows(&self.outer, self.dropout.forward(h))
    }
}

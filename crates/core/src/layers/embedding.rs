//! Token embedding and the output head, optionally tied to the embedding
//! matrix (Press & Wolf, 2017), with an optional √d_model scale on the
//! embeddings (Vaswani et al., 2017, §3.4; Transformer-XL's code).

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::attention::{normal_init, rows};

#[derive(Config, Debug)]
pub struct TokenEmbeddingConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Output logits use the embedding matrix (no separate head weights).
    #[config(default = true)]
    pub tied: bool,
    /// Multiply embeddings by √d_model.
    #[config(default = false)]
    pub scale: bool,
    #[config(default = 0.02)]
    pub init_std: f64,
    /// A bias on the tied output head (GPT-2's head has none).
    #[config(default = true)]
    pub head_bias: bool,
}

#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    pub embedding: Embedding<B>,
    /// Separate output head when not tied.
    pub head: Option<Linear<B>>,
    /// Bias of the tied output head.
    pub head_bias: Option<burn::module::Param<Tensor<B, 1>>>,
    pub scale: f64,
}

impl TokenEmbeddingConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TokenEmbedding<B> {
        let embedding = EmbeddingConfig::new(self.vocab_size, self.d_model)
            .with_initializer(normal_init(self.init_std))
            .init(device);
        let head = (!self.tied).then(|| {
            LinearConfig::new(self.d_model, self.vocab_size)
                .with_initializer(normal_init(self.init_std))
                .init(device)
        });
        let head_bias = (self.tied && self.head_bias)
            .then(|| burn::module::Param::from_tensor(Tensor::zeros([self.vocab_size], device)));
        TokenEmbedding {
            embedding,
            head,
            head_bias,
            scale: if self.scale {
                (self.d_model as f64).sqrt()
            } else {
                1.0
            },
        }
    }
}

impl<B: Backend> TokenEmbedding<B> {
    /// `[batch, len]` token ids -> `[batch, len, d_model]`.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.embedding.forward(tokens);
        if self.scale == 1.0 { x } else { x * self.scale }
    }

    /// `[batch, len, d_model]` -> logits `[batch, len, vocab]`.
    pub fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        match (&self.head, &self.head_bias) {
            (Some(head), _) => rows(head, h),
            (None, bias) => {
                let [batch, len, d] = h.dims();
                let weight = self.embedding.weight.val(); // [vocab, d]
                let vocab = weight.dims()[0];
                let logits = h.reshape([batch * len, d]).matmul(weight.transpose());
                let logits = match bias {
                    Some(b) => logits + b.val().reshape([1, vocab]),
                    None => logits,
                };
                logits.reshape([batch, len, vocab])
            }
        }
    }
}

//! memlab-benchmarks: what each registered model costs per segment, the same
//! way for every architecture (`cargo bench -p memlab-benchmarks`).
//!
//! [`Prepared`] holds a model and its memory after `k` segments; its
//! [`Prepared::step`] is one more segment's forward pass. A model whose
//! memory is bounded costs the same at every `k`. [`full_attention_cost`] is
//! the contrast: the baseline attending over the whole sequence at once.

use burn::prelude::*;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, ModelContext, SegmentModel};

/// The shape every model is measured at.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub segment: usize,
    pub vocab: usize,
}

/// Token ids `[batch, len]`, deterministic.
pub fn tokens<B: Backend>(
    shape: Shape,
    len: usize,
    salt: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = (0..shape.batch * len)
        .map(|i| ((i * 31 + salt * 17) % shape.vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [shape.batch, len]), device)
}

/// A model built from a `[model]` table's fields (empty: the defaults), its
/// memory after `k` segments, and the next segment's tokens.
pub struct Prepared<B: Backend, A: Architecture> {
    pub model: A::Model<B>,
    pub memory: <A::Model<B> as SegmentModel<B>>::Memory,
    pub next: Tensor<B, 2, Int>,
}

impl<B: Backend, A: Architecture> Prepared<B, A> {
    /// Builds `A` with its defaults and runs `k` segments.
    pub fn new(shape: Shape, k: usize, fields: &toml::Table, device: &B::Device) -> Self {
        let ctx = ModelContext {
            vocab_size: shape.vocab,
            max_segment_len: shape.segment,
        };
        let config = parse_model_config::<A>(fields.clone(), &ctx).expect("valid bench config");
        let model = A::init::<B>(&config, &ctx, device);
        let mut memory = model.init_memory(shape.batch, device);
        for i in 0..k {
            memory = model
                .forward_segment(tokens(shape, shape.segment, i, device), memory)
                .memory;
        }
        Self {
            model,
            memory,
            next: tokens(shape, shape.segment, k, device),
        }
    }

    /// One segment's forward pass from the carried memory, synchronised
    /// (the logits are read back).
    pub fn step(&self) -> f32 {
        let out = self
            .model
            .forward_segment(self.next.clone(), self.memory.clone());
        out.logits.sum().into_scalar().elem()
    }
}

/// The baseline over a whole sequence of `len` tokens in one segment: the
/// cost a model without segment recurrence pays, quadratic in `len`.
pub fn full_attention_cost<B: Backend>(
    shape: Shape,
    len: usize,
    device: &B::Device,
) -> impl Fn() -> f32 {
    let wide = Shape {
        segment: len,
        ..shape
    };
    let mut fields = toml::Table::new();
    fields.insert("positions".into(), "sinusoidal".into());
    let prepared = Prepared::<B, memlab_baseline::BaselineArch>::new(wide, 0, &fields, device);
    move || prepared.step()
}

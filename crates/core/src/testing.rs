//! Test support shared by the architecture crates' tests (the `assert_*`
//! checks over an [`crate::Architecture`] live in [`crate::registry`]).

use burn::prelude::*;

use crate::model::SegmentModel;

/// Token ids `data` as a `[batch, data.len() / batch]` tensor.
pub fn tokens<B: Backend>(data: &[i64], batch: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(data.to_vec(), [batch, data.len() / batch]),
        device,
    )
}

/// The logits of each segment of `data` (one sequence, `[1, len]`) read in
/// segments of `segment_len`, memory carried from the model's initial one.
pub fn segment_logits<B: Backend, M: SegmentModel<B>>(
    model: &M,
    data: &[i64],
    segment_len: usize,
) -> Vec<Vec<f32>> {
    let device = Default::default();
    crate::runner::segment_logits(model, tokens::<B>(data, 1, &device), segment_len)
        .into_iter()
        .map(|logits| logits.into_data().to_vec::<f32>().expect("f32 logits"))
        .collect()
}

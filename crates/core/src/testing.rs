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

/// Test support: generation is what a user streaming the sequence gets.
/// For `batch` rows of `inputs` (row-major `[batch, len]`) the answers
/// generated from target `start` on ([`crate::runner::generate_answers`]),
/// fed back as inputs (prompt + generated answer), must be the arg-max of
/// one teacher-forced pass over that sequence at every answer position
/// (up to ties: the generated token's logit is the row's largest within
/// 1e-5), and a [`crate::runner::SegmentStream`] over the same sequence
/// must give the teacher-forced logits at every position (within `1e-4`).
pub fn assert_generation_matches_teacher_forcing<B: Backend, M: SegmentModel<B>>(
    model: &M,
    inputs: &[i64],
    batch: usize,
    start: usize,
    segment_len: usize,
    name: &str,
) {
    let device = Default::default();
    let len = inputs.len() / batch;
    let generated =
        crate::runner::generate_answers(model, inputs, batch, start, segment_len, &device);
    let answer = len - start;
    let mut fed = inputs.to_vec();
    for b in 0..batch {
        for t in start..len - 1 {
            fed[b * len + t + 1] = generated[b * answer + t - start];
        }
    }
    let logits: Vec<Vec<f32>> =
        crate::runner::segment_logits(model, tokens::<B>(&fed, batch, &device), segment_len)
            .into_iter()
            .map(|l| l.into_data().convert::<f32>().to_vec::<f32>().expect("f32"))
            .collect();
    let vocab = logits[0].len() / (batch * segment_len.min(len));
    let bounds = crate::runner::segment_bounds(len, segment_len);
    let row = |b: usize, t: usize| -> &[f32] {
        let s = t / segment_len;
        let (s0, s1) = bounds[s];
        let at = (b * (s1 - s0) + t - s0) * vocab;
        &logits[s][at..at + vocab]
    };
    for b in 0..batch {
        for t in start..len {
            let r = row(b, t);
            let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let token = generated[b * answer + t - start] as usize;
            assert!(
                r[token] >= max - 1e-5 * (1.0 + max.abs()),
                "{name}: row {b}, target {t}: generated {token} (logit {}), teacher-forced max {max}",
                r[token]
            );
        }
    }
    let mut stream = crate::runner::SegmentStream::new(model, batch, segment_len, &device);
    for t in 0..len {
        let column: Vec<i64> = (0..batch).map(|b| fed[b * len + t]).collect();
        stream.push(&column);
        let streamed = stream
            .next_logits()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32");
        for b in 0..batch {
            let worst = streamed[b * vocab..(b + 1) * vocab]
                .iter()
                .zip(row(b, t))
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4,
                "{name}: streamed logits at row {b}, position {t} differ by {worst}"
            );
        }
    }
}

//! The segment runner on a toy model whose memory is one tensor: loss and
//! accuracy against a host computation, segmenting, and where BPTT depth cuts
//! the gradient.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::{
    BpttDepth, HostBatch, MemoryState, SegmentModel, SegmentOutput, SequenceBatch, TensorMemory,
};
use memlab_train::runner::{run_segments, segment_bounds, token_nll_and_correct};

type AB = Autodiff<Flex>;

/// Embeds tokens `E[t]`; logits `(E[t] + m) Eᵀ`; next memory
/// `tanh(mean_t(E[t]) W + m)`. `W` is used only to write memory, so its
/// gradient measures exactly the path through memory.
#[derive(Module, Debug)]
struct Toy<B: Backend> {
    embed: Param<Tensor<B, 2>>,
    write: Param<Tensor<B, 2>>,
}

impl<B: Backend> Toy<B> {
    fn new(vocab: usize, d: usize, device: &B::Device) -> Self {
        let e: Vec<f32> = (0..vocab * d)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0)
            .collect();
        let w: Vec<f32> = (0..d * d)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 10.0)
            .collect();
        Self {
            embed: Param::from_tensor(Tensor::from_data(TensorData::new(e, [vocab, d]), device)),
            write: Param::from_tensor(Tensor::from_data(TensorData::new(w, [d, d]), device)),
        }
    }
}

impl<B: Backend> SegmentModel<B> for Toy<B> {
    type Memory = TensorMemory<B>;

    fn init_memory(&self, batch: usize, device: &B::Device) -> TensorMemory<B> {
        let d = self.embed.dims()[1];
        TensorMemory(Tensor::zeros([batch, 1, d], device))
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: TensorMemory<B>,
    ) -> SegmentOutput<B, TensorMemory<B>> {
        let [b, s] = tokens.dims();
        let [vocab, d] = self.embed.dims();
        let x = self
            .embed
            .val()
            .select(0, tokens.reshape([b * s]))
            .reshape([b, s, d]);
        let h = x.clone() + memory.0.clone();
        let logits = h
            .reshape([b * s, d])
            .matmul(self.embed.val().transpose())
            .reshape([b, s, vocab]);
        let summary = x.mean_dim(1).reshape([b, d]).matmul(self.write.val());
        let next = (summary.reshape([b, 1, d]) + memory.0).tanh();
        SegmentOutput::new(logits, TensorMemory(next))
    }

    fn memory_floats_per_sequence(&self) -> usize {
        self.embed.dims()[1]
    }

    fn forward_flops(&self, segment_len: usize) -> u64 {
        let [vocab, d] = self.embed.dims();
        memlab_core::flops::matmul(segment_len, d, vocab) + memlab_core::flops::matmul(1, d, d)
    }
}

fn batch<B: Backend>(
    inputs: Vec<i64>,
    targets: Vec<i64>,
    mask: Vec<f32>,
    b: usize,
) -> SequenceBatch<B> {
    let len = inputs.len() / b;
    HostBatch {
        batch: b,
        len,
        inputs,
        targets,
        mask,
    }
    .to_device::<B>(8, &Default::default())
    .unwrap()
}

#[test]
fn segment_bounds_cover_the_sequence_with_a_shorter_last_segment() {
    assert_eq!(segment_bounds(10, 4), vec![(0, 4), (4, 8), (8, 10)]);
    assert_eq!(segment_bounds(8, 4), vec![(0, 4), (4, 8)]);
    assert_eq!(segment_bounds(3, 8), vec![(0, 3)]);
}

#[test]
fn loss_and_accuracy_match_a_host_computation() {
    let device = Default::default();
    let model = Toy::<Flex>::new(8, 4, &device);
    let (b, len) = (2, 7);
    let inputs: Vec<i64> = (0..b * len).map(|i| (i * 3 % 8) as i64).collect();
    let targets: Vec<i64> = (0..b * len).map(|i| (i * 5 % 8) as i64).collect();
    let mask: Vec<f32> = (0..b * len)
        .map(|i| if i % 3 == 0 { 0.0 } else { 1.0 })
        .collect();
    let data = batch::<Flex>(inputs, targets.clone(), mask.clone(), b);

    let rollout = run_segments(
        &model,
        &data,
        3,
        BpttDepth::Full,
        model.init_memory(b, &device),
    );
    let figures = rollout.figures();

    // Recompute on the host from the logits of each segment, carrying memory.
    let mut memory = model.init_memory(b, &device);
    let (mut nll, mut correct, mut count) = (0.0f64, 0.0f64, 0.0f64);
    for (start, end) in segment_bounds(len, 3) {
        let tokens = data.inputs.clone().slice([0..b, start..end]);
        let out = model.forward_segment(tokens, memory);
        memory = out.memory;
        let s = end - start;
        let logits: Vec<f32> = out.logits.into_data().to_vec().unwrap();
        for bi in 0..b {
            for t in 0..s {
                let pos = bi * len + start + t;
                if mask[pos] == 0.0 {
                    continue;
                }
                let row = &logits[(bi * s + t) * 8..(bi * s + t + 1) * 8];
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&x| (x as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                nll += lse - row[targets[pos] as usize] as f64;
                let argmax = (0..8).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
                correct += (argmax as i64 == targets[pos]) as u8 as f64;
                count += 1.0;
            }
        }
    }
    assert_eq!(figures.tokens, count);
    assert!(
        (figures.loss - nll / count).abs() < 1e-5,
        "{} vs {}",
        figures.loss,
        nll / count
    );
    assert!((figures.accuracy - correct / count).abs() < 1e-9);
    let loss: f32 = rollout.loss.into_scalar();
    assert!((loss as f64 - nll / count).abs() < 1e-5);
    assert_eq!(figures.segments.len(), 3);
    let seg_tokens: f64 = figures.segments.iter().map(|s| s.tokens).sum();
    assert_eq!(seg_tokens, count);
}

#[test]
fn nll_matches_closed_form_on_uniform_logits() {
    let device = Default::default();
    let logits = Tensor::<Flex, 3>::zeros([1, 2, 4], &device);
    let targets =
        Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![1i64, 3], [1, 2]), &device);
    let (nll, _) = token_nll_and_correct(logits, targets);
    for v in nll.into_data().to_vec::<f32>().unwrap() {
        assert!((v - 4f32.ln()).abs() < 1e-6);
    }
}

/// Loss only on segment 1 (of 3): `W` affects it only by writing the memory
/// that segment 0 hands to segment 1.
fn write_grad_norm(depth: BpttDepth) -> f32 {
    let device = Default::default();
    let model = Toy::<AB>::new(8, 4, &device);
    let (b, len) = (2, 9);
    let inputs: Vec<i64> = (0..b * len).map(|i| (i * 3 % 8) as i64).collect();
    let targets: Vec<i64> = (0..b * len).map(|i| (i * 5 % 8) as i64).collect();
    let mask: Vec<f32> = (0..b * len)
        .map(|i| {
            if (3..6).contains(&(i % len)) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let data = batch::<AB>(inputs, targets, mask, b);
    let rollout = run_segments(&model, &data, 3, depth, model.init_memory(b, &device));
    let grads = rollout.loss.backward();
    match model.write.grad(&grads) {
        Some(g) => g.abs().sum().into_scalar(),
        None => 0.0,
    }
}

#[test]
fn bptt_depth_zero_cuts_the_gradient_through_memory() {
    assert_eq!(write_grad_norm(BpttDepth::Segments(0)), 0.0);
}

#[test]
fn bptt_depth_one_or_full_lets_the_gradient_through_memory() {
    assert!(write_grad_norm(BpttDepth::Segments(1)) > 1e-6);
    assert!(write_grad_norm(BpttDepth::Segments(2)) > 1e-6);
    assert!(write_grad_norm(BpttDepth::Full) > 1e-6);
}

#[test]
fn bptt_depth_windows_detach_where_documented() {
    let d = BpttDepth::Segments(2);
    let detached: Vec<usize> = (0..8).filter(|&i| d.detach_before(i)).collect();
    assert_eq!(detached, vec![3, 6]);
    assert!((0..8).all(|i| !BpttDepth::Full.detach_before(i)));
    assert!((1..8).all(|i| BpttDepth::Segments(0).detach_before(i)));
    assert!(!BpttDepth::Segments(0).detach_before(0));
}

#[test]
fn detached_memory_carries_no_gradient() {
    fn grad_sum<B: AutodiffBackend>(detach: bool) -> f32 {
        let device = Default::default();
        let param = Param::from_tensor(Tensor::<B, 3>::ones([1, 2, 2], &device));
        let memory = TensorMemory(param.val() * 3.0);
        let memory = if detach { memory.detach() } else { memory };
        // A second term keeps the parameter in the graph either way.
        let loss = memory.0.sum() + param.val().sum() * 0.5;
        let grads = loss.backward();
        param
            .grad(&grads)
            .unwrap()
            .sum()
            .into_scalar()
            .elem::<f32>()
    }
    // d/dp of (3p summed) + 0.5 p summed over 4 elements: 4 * (3 + 0.5).
    assert_eq!(grad_sum::<AB>(false), 14.0);
    // With the memory detached only the 0.5 term remains: 4 * 0.5.
    assert_eq!(grad_sum::<AB>(true), 2.0);
}

#[test]
fn bad_token_ids_are_rejected_with_their_position() {
    let err = HostBatch {
        batch: 1,
        len: 3,
        inputs: vec![1, 9, 2],
        targets: vec![0, 0, 0],
        mask: vec![1.0; 3],
    }
    .validate(8)
    .unwrap_err();
    assert!(err.0.contains("input token id 9"), "{err}");
    assert!(err.0.contains("position 1"), "{err}");
    let err = HostBatch {
        batch: 1,
        len: 2,
        inputs: vec![1, 2],
        targets: vec![0, -1],
        mask: vec![1.0; 2],
    }
    .validate(8)
    .unwrap_err();
    assert!(err.0.contains("target token id -1"), "{err}");
    let err = HostBatch {
        batch: 2,
        len: 2,
        inputs: vec![1, 2],
        targets: vec![0, 1],
        mask: vec![1.0; 2],
    }
    .validate(8)
    .unwrap_err();
    assert!(err.0.contains("inputs hold 2 values"), "{err}");
}

/// Memory is the running sum of the segments' token embeddings; logits read
/// it through a separate output matrix, so embedding row `j` is used only
/// by the segments whose tokens are `j` and by the memory they write.
#[derive(Module, Debug)]
struct Summing<B: Backend> {
    embed: Param<Tensor<B, 2>>,
    out: Param<Tensor<B, 2>>,
}

impl<B: Backend> SegmentModel<B> for Summing<B> {
    type Memory = TensorMemory<B>;

    fn init_memory(&self, batch: usize, device: &B::Device) -> TensorMemory<B> {
        TensorMemory(Tensor::zeros([batch, 1, self.embed.dims()[1]], device))
    }

    fn forward_segment(
        &self,
        tokens: Tensor<B, 2, Int>,
        memory: TensorMemory<B>,
    ) -> SegmentOutput<B, TensorMemory<B>> {
        let [b, s] = tokens.dims();
        let [_, d] = self.embed.dims();
        let vocab = self.out.dims()[1];
        let x = self
            .embed
            .val()
            .select(0, tokens.reshape([b * s]))
            .reshape([b, s, d]);
        let h = (x.clone() + memory.0.clone()).tanh();
        let logits = h
            .reshape([b * s, d])
            .matmul(self.out.val())
            .reshape([b, s, vocab]);
        let next = memory.0 + x.sum_dim(1);
        SegmentOutput::new(logits, TensorMemory(next))
    }

    fn memory_floats_per_sequence(&self) -> usize {
        self.embed.dims()[1]
    }

    fn forward_flops(&self, _: usize) -> u64 {
        0
    }
}

fn summing<B: Backend>(segments: usize, device: &B::Device) -> Summing<B> {
    let d = 3;
    let e: Vec<f32> = (0..segments * d)
        .map(|i| 0.1 + (i % 7) as f32 / 10.0)
        .collect();
    let o: Vec<f32> = (0..d * segments)
        .map(|i| ((i * 3 % 5) as f32 - 2.0) / 4.0)
        .collect();
    Summing {
        embed: Param::from_tensor(Tensor::from_data(TensorData::new(e, [segments, d]), device)),
        out: Param::from_tensor(Tensor::from_data(TensorData::new(o, [d, segments]), device)),
    }
}

/// Which segments' embeddings receive gradient from the last segment's
/// loss (segment `j` reads only token `j`).
fn segments_reached(bptt: BpttDepth) -> Vec<usize> {
    let (segments, seg_len, b) = (6, 2, 1);
    let device = Default::default();
    let model = summing::<AB>(segments, &device);
    let len = segments * seg_len;
    let inputs: Vec<i64> = (0..len).map(|i| (i / seg_len) as i64).collect();
    let targets: Vec<i64> = (0..len).map(|i| ((i + 1) % segments) as i64).collect();
    let mask: Vec<f32> = (0..len)
        .map(|i| if i >= len - seg_len { 1.0 } else { 0.0 })
        .collect();
    let data = HostBatch {
        batch: b,
        len,
        inputs,
        targets,
        mask,
    }
    .to_device::<AB>(segments, &device)
    .unwrap();
    let rollout = run_segments(&model, &data, seg_len, bptt, model.init_memory(b, &device));
    let grads = rollout.loss.backward();
    let g: Vec<f32> = model
        .embed
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    (0..segments)
        .filter(|&j| g[j * 3..(j + 1) * 3].iter().any(|x| *x != 0.0))
        .collect()
}

#[test]
fn sliding_bptt_reaches_exactly_k_segments_back() {
    // LM-RMT's mem_backprop_depth k: the last segment's loss reaches the
    // k segments before it.
    assert_eq!(segments_reached(BpttDepth::Sliding(0)), vec![5]);
    assert_eq!(segments_reached(BpttDepth::Sliding(1)), vec![4, 5]);
    assert_eq!(segments_reached(BpttDepth::Sliding(3)), vec![2, 3, 4, 5]);
    assert_eq!(
        segments_reached(BpttDepth::Sliding(9)),
        vec![0, 1, 2, 3, 4, 5]
    );
    assert_eq!(segments_reached(BpttDepth::Full), vec![0, 1, 2, 3, 4, 5]);
    // memlab's blocks of k + 1: with k = 3 the memory is detached before
    // segment 4, so segment 5 reaches only segment 4.
    assert_eq!(segments_reached(BpttDepth::Segments(3)), vec![4, 5]);
    assert_eq!(segments_reached(BpttDepth::Segments(1)), vec![4, 5]);
    assert_eq!(segments_reached(BpttDepth::Segments(2)), vec![3, 4, 5]);
}

#[test]
fn sliding_bptt_gives_each_loss_its_own_window() {
    // With every segment's loss on, sliding depth 1 equals the sum of the
    // per-segment losses each back-propagated through one segment before:
    // the same loss as full BPTT (the forward values are the same), but
    // the gradient of the first segment's embedding only from losses 0, 1.
    let (segments, seg_len) = (4, 2);
    let device = Default::default();
    let len = segments * seg_len;
    let host = HostBatch {
        batch: 1,
        len,
        inputs: (0..len).map(|i| (i / seg_len) as i64).collect(),
        targets: (0..len).map(|i| ((i * 3 + 1) % segments) as i64).collect(),
        mask: vec![1.0; len],
    };
    let grad_of_row0 = |bptt: BpttDepth, mask_from: usize| {
        let model = summing::<AB>(segments, &device);
        let mut host = host.clone();
        for (i, m) in host.mask.iter_mut().enumerate() {
            *m = if i / seg_len >= mask_from && i / seg_len <= mask_from + 1 {
                1.0
            } else {
                0.0
            };
        }
        let data = host.to_device::<AB>(segments, &device).unwrap();
        let rollout = run_segments(&model, &data, seg_len, bptt, model.init_memory(1, &device));
        let loss: f32 = rollout.loss.clone().into_scalar();
        let g: Vec<f32> = model
            .embed
            .grad(&rollout.loss.backward())
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        (loss, g[..3].to_vec())
    };
    // Losses of segments 0 and 1 only: depth 1 reaches row 0 from both,
    // exactly as full BPTT does.
    let (l_full, g_full) = grad_of_row0(BpttDepth::Full, 0);
    let (l_slide, g_slide) = grad_of_row0(BpttDepth::Sliding(1), 0);
    assert!((l_full - l_slide).abs() < 1e-6);
    for (a, b) in g_full.iter().zip(&g_slide) {
        assert!((a - b).abs() < 1e-6, "{g_full:?} vs {g_slide:?}");
    }
    // Losses of segments 2 and 3: more than one segment away from row 0.
    let (_, g) = grad_of_row0(BpttDepth::Sliding(1), 2);
    assert!(g.iter().all(|x| *x == 0.0), "{g:?}");
    let (_, g) = grad_of_row0(BpttDepth::Full, 2);
    assert!(g.iter().any(|x| *x != 0.0), "{g:?}");
}

/// `train.gradients = "replay"` gives the gradients and figures of
/// `"bptt"` through the training step's own dispatch.
#[test]
fn replay_and_bptt_give_the_same_step_gradients() {
    use memlab_core::config::{GradientMethod, TrainConfig};
    use memlab_train::agreement::{parameter_gradients, worst_parameter_error};
    use memlab_train::step::step_gradients;
    let device = Default::default();
    let model = Toy::<AB>::new(8, 4, &device);
    let (b, len) = (2, 9);
    let host = HostBatch {
        batch: b,
        len,
        inputs: (0..b * len).map(|i| (i * 3 % 8) as i64).collect(),
        targets: (0..b * len).map(|i| (i * 5 % 8) as i64).collect(),
        mask: (0..b * len)
            .map(|i| if i % 4 == 0 { 0.0 } else { 1.0 })
            .collect(),
    };
    let data = host.to_device::<AB>(8, &device).unwrap();
    let step = |gradients| {
        let train = TrainConfig {
            segment_len: 3,
            gradients,
            ..TrainConfig::default()
        };
        let (grads, tallies, _) =
            step_gradients(&model, &data, &train, model.init_memory(b, &device));
        (parameter_gradients(&model, &grads), tallies.figures())
    };
    let (bptt, bptt_figures) = step(GradientMethod::Bptt);
    let (replay, replay_figures) = step(GradientMethod::Replay);
    assert!(bptt.iter().all(|g| !g.is_empty()));
    let worst = worst_parameter_error(&bptt, &replay, 1e-4);
    assert!(worst < 1e-5, "replay vs BPTT: {worst}");
    assert!((bptt_figures.loss - replay_figures.loss).abs() < 1e-6);
    assert_eq!(bptt_figures.accuracy, replay_figures.accuracy);
    assert_eq!(bptt_figures.segments.len(), 3);
    assert_eq!(replay_figures.segments, bptt_figures.segments);
}

/// Two parameters with the gradients `[3, 4]` and `[12]` (a loss linear in
/// them): the global norm is 13; clipping to 6.5 halves both, and per-tensor
/// clipping would have left `[3, 4]` (norm 5) alone.
#[test]
fn global_norm_clipping_matches_the_hand_computed_norm() {
    use memlab_train::agreement::parameter_gradients;
    use memlab_train::step::{clip_global_norm, global_grad_norm};

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        a: Param<Tensor<B, 1>>,
        b: Param<Tensor<B, 1>>,
    }
    let device = Default::default();
    let model = Two::<AB> {
        a: Param::from_tensor(Tensor::zeros([2], &device)),
        b: Param::from_tensor(Tensor::zeros([1], &device)),
    };
    let grads_of = || {
        let coef = |v: Vec<f32>| {
            Tensor::<AB, 1>::from_data(TensorData::new(v.clone(), [v.len()]), &device)
        };
        let loss =
            (model.a.val() * coef(vec![3.0, 4.0])).sum() + (model.b.val() * coef(vec![12.0])).sum();
        burn::optim::GradientsParams::from_grads(loss.backward(), &model)
    };
    let scalar = |t: Option<Tensor<Flex, 1>>| t.unwrap().into_scalar() as f64;
    assert!((scalar(global_grad_norm(&model, &grads_of())) - 13.0).abs() < 1e-6);
    let (clipped, norm) = clip_global_norm(&model, grads_of(), 6.5);
    assert!((scalar(norm) - 13.0).abs() < 1e-5);
    let g = parameter_gradients(&model, &clipped);
    let factor = 6.5 / (13.0 + 1e-6);
    for (got, want) in g.concat().iter().zip([3.0, 4.0, 12.0]) {
        assert!((got - want * factor).abs() < 1e-5, "{g:?}");
    }
    // Below the threshold nothing changes.
    let (same, _) = clip_global_norm(&model, grads_of(), 20.0);
    assert_eq!(
        parameter_gradients(&model, &same).concat(),
        vec![3.0, 4.0, 12.0]
    );
}

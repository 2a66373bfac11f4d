//! Test support for the architecture crates' tests (feature `testing`,
//! which they enable as a dev-dependency): the checks every
//! [`Architecture`] must pass, run on the CPU. Nothing here is part of the
//! production API.

use burn::prelude::*;

use memlab_core::model::{ModelContext, SegmentModel};
use memlab_core::registry::{Architecture, parse_model_config};

/// Architecture `A` built from `config` for `ctx` with its parameters drawn
/// under `seed` (on any backend: autodiff ones included).
pub fn seeded_model<A: Architecture, B: Backend>(
    config: &A::Config,
    ctx: &ModelContext,
    seed: u64,
) -> A::Model<B> {
    let device = Default::default();
    memlab_core::seed::init_seeded::<B, _>(&device, seed, || A::init::<B>(config, ctx, &device))
}

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

/// [`segment_logits`] of `data` and of `data` with its token `changed`
/// replaced by the next id (mod `vocab_size`): what a change early in the
/// text does to later segments, through the memory or not at all.
pub fn segment_logits_with_a_change<B: Backend, M: SegmentModel<B>>(
    model: &M,
    data: &[i64],
    segment_len: usize,
    changed: usize,
    vocab_size: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut other = data.to_vec();
    other[changed] = (other[changed] + 1) % vocab_size as i64;
    (
        segment_logits(model, data, segment_len),
        segment_logits(model, &other, segment_len),
    )
}

/// Test support: generation is what a user streaming the sequence gets.
/// For `batch` rows of `inputs` (row-major `[batch, len]`) the answers
/// generated from target `start` on ([`crate::runner::generate_answers`]),
/// fed back as inputs (prompt + generated answer), must be the arg-max of
/// one teacher-forced pass over that sequence at every answer position
/// (up to ties: the generated token's logit is the row's largest within
/// 1e-5), and a [`crate::runner::SegmentStream`] over the same sequence
/// must give the teacher-forced logits at every position (within `1e-4`).
/// The stream reads incrementally where the model can: its logits must be
/// those of a [`crate::runner::SegmentStream::re_reading`] within 1e-5
/// (relative), and its generated answers the same tokens (up to ties).
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
    // The incremental stream against the re-reading one: the same tokens,
    // and the same logits at every position up to rounding (each token's
    // row is one product where the re-read multiplies the whole segment).
    let re_read = crate::runner::generate_answers_from(
        crate::runner::SegmentStream::re_reading(model, batch, segment_len, &device),
        inputs,
        start,
    );
    // Both know the sequence's length: its last segment is as long as the
    // teacher-forced pass cuts it.
    let mut stream =
        crate::runner::SegmentStream::new(model, batch, segment_len, &device).with_length(len);
    let mut reference =
        crate::runner::SegmentStream::re_reading(model, batch, segment_len, &device)
            .with_length(len);
    let mut diverged = vec![false; batch];
    let host = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    for t in 0..len {
        let column: Vec<i64> = (0..batch).map(|b| fed[b * len + t]).collect();
        stream.push(&column);
        reference.push(&column);
        let streamed = host(stream.next_logits());
        let re_read_logits = host(reference.next_logits());
        let worst = streamed
            .iter()
            .zip(&re_read_logits)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{name}: incremental and re-read logits at position {t} differ by {worst}"
        );
        if (start..len).contains(&t) {
            for (b, diverged) in diverged.iter_mut().enumerate() {
                let (ours, theirs) = (
                    generated[b * answer + t - start],
                    re_read[b * answer + t - start],
                );
                if *diverged || ours == theirs {
                    continue;
                }
                // Only a tie may part them (then the prefixes differ).
                let r = &re_read_logits[b * vocab..(b + 1) * vocab];
                assert!(
                    (r[ours as usize] - r[theirs as usize]).abs() <= 1e-5,
                    "{name}: row {b}, target {t}: generated {ours} incrementally, {theirs} re-reading"
                );
                *diverged = true;
            }
        }
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

/// Each `(model table, field)` case
/// must be rejected with an error that names `field` (e.g. `model.n_heads`).
pub fn assert_config_errors<A: Architecture>(cases: &[(&str, &str)], ctx: &ModelContext) {
    for (text, field) in cases {
        let table = memlab_core::config::parse_toml(text)
            .unwrap_or_else(|e| panic!("case {text:?} is not TOML: {e}"));
        match parse_model_config::<A>(table, ctx) {
            Ok(config) => panic!("{}: {text:?} was accepted as {config:?}", A::NAME),
            Err(err) => assert_eq!(&err.field, field, "{}: {text:?}: {err}", A::NAME),
        }
    }
}

/// Two models built from `config`
/// with the same seed give identical logits over the segments of `data`
/// (`[1, len]`, segments of `segment_len`), another seed different ones,
/// a checkpoint reloaded into a third model gives bit-identical logits, and
/// loading it as another architecture's is an error.
pub fn assert_seeded_and_round_trips<A: Architecture>(
    config: &A::Config,
    ctx: &ModelContext,
    data: &[i64],
    segment_len: usize,
) {
    type B = burn::backend::Flex;
    let device = Default::default();
    let build = |seed| seeded_model::<A, B>(config, ctx, seed);
    let logits = |model: &A::Model<B>| -> Vec<u32> {
        segment_logits(model, data, segment_len)
            .concat()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    };
    let a = build(7);
    assert_eq!(logits(&a), logits(&build(7)), "{}: same seed", A::NAME);
    assert_ne!(logits(&a), logits(&build(8)), "{}: other seed", A::NAME);
    let path = std::env::temp_dir().join(format!(
        "memlab-{}-{}-{:?}.mpk",
        A::NAME,
        std::process::id(),
        std::thread::current().id()
    ));
    let checkpoint = crate::checkpoint::Checkpoint::new::<B, _, _>(A::NAME, 1, "x".into(), &a, ())
        .expect("checkpoint");
    checkpoint.save(&path).expect("save");
    let other = crate::checkpoint::Checkpoint::load(&path, "another-model");
    assert!(
        other.is_err(),
        "{}: a checkpoint of another model loads",
        A::NAME
    );
    let loaded = crate::checkpoint::Checkpoint::load(&path, A::NAME)
        .and_then(|c| c.load_model(build(9), &device))
        .expect("load");
    std::fs::remove_file(&path).ok();
    assert_eq!(
        logits(&a),
        logits(&loaded),
        "{}: checkpoint round trip",
        A::NAME
    );
}

/// Memory replay back-propagation gives the same parameter
/// gradients as full BPTT on `batch` (relative error below `tolerance` for
/// every parameter, over `segment_len` segments), and the same loss.
pub fn assert_mrbp_matches_bptt<A: Architecture>(
    config: &A::Config,
    ctx: &ModelContext,
    batch: &memlab_core::data::HostBatch,
    segment_len: usize,
    tolerance: f64,
) {
    use burn::optim::GradientsParams;
    type AB = burn::backend::Autodiff<burn::backend::Flex>;

    let device = Default::default();
    let model = memlab_core::seed::init_seeded::<AB, _>(&device, 3, || {
        A::init_train::<AB>(config, ctx, &device)
    });
    let sequences = batch
        .to_device::<AB>(ctx.vocab_size, &device)
        .expect("valid batch");
    // Each pass gets its own initial memory: a backward pass frees the graph
    // of everything it went through, a learned initial memory included.
    let full = crate::runner::run_segments(
        &model,
        &sequences,
        segment_len,
        memlab_core::config::BpttDepth::Full,
        model.init_memory(batch.batch, &device),
    );
    let full_loss = full.loss.clone().into_scalar().elem::<f64>();
    let full_grads = GradientsParams::from_grads(full.loss.backward(), &model);
    let memory = model.init_memory(batch.batch, &device);
    let replay = crate::mrbp::memory_replay_backprop(&model, &sequences, segment_len, memory);
    assert!(
        (replay.loss - full_loss).abs() < 1e-5 * full_loss.abs().max(1.0),
        "{}: loss {} vs {full_loss}",
        A::NAME,
        replay.loss
    );
    let full = crate::agreement::parameter_gradients(&model, &full_grads);
    let replay = crate::agreement::parameter_gradients(&model, &replay.grads);
    assert!(
        full.iter().any(|g| !g.is_empty()),
        "{}: no gradients",
        A::NAME
    );
    // Relative per parameter, each norm floored at 1e-4 of the whole
    // gradient's (gradients that are zero in exact arithmetic are noise).
    let worst = crate::agreement::worst_parameter_error(&full, &replay, 1e-4);
    assert!(
        worst < tolerance,
        "{}: MRBP vs BPTT relative error {worst}",
        A::NAME
    );
}

/// Trains architecture `A` on `task` (CPU, autodiff) as the
/// experiment config `text` says, writing the run into `run_dir`.
pub fn train_for_test<A: Architecture>(
    text: &str,
    task: &dyn memlab_core::data::Task,
    run_dir: std::path::PathBuf,
) -> crate::TrainReport {
    type AB = burn::backend::Autodiff<burn::backend::Flex>;
    let config = memlab_core::config::ExperimentConfig::from_table(
        memlab_core::config::parse_toml(text).expect("test config is TOML"),
    )
    .expect("valid test config");
    let ctx = ModelContext::of(&config, task);
    let mut table = config.model.clone().expect("a [model] table");
    table.remove("arch");
    let model_config = parse_model_config::<A>(table, &ctx).expect("valid model config");
    let options = crate::TrainOptions {
        run_dir,
        resume: false,
        overwrite: false,
        memory_limit: None,
        progress: None,
    };
    crate::train::train::<A, AB>(&config, &model_config, task, &options, &Default::default())
        .expect("training runs")
}

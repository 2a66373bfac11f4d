//! The model registry. Each architecture crate implements [`Architecture`]
//! (a name, a serde config, a constructor); one line in the CLI's registry
//! (`memlab_core::architectures!`) makes it available to `memlab train`,
//! `compare`, `bench` and the benchmarks, with nothing else to change.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, Validate, parse_section, take_tag};
use crate::lm_rmt::LmRmtLayout;
use crate::model::{ModelContext, SegmentModel, SegmentOutput};

/// An architecture: its registry name, config type and constructors.
///
/// `Model<B>` is the model on any backend; `TrainModel<B>` is the same type on
/// an autodiff backend, with the bound Burn's optimizers need (in every
/// implementation both are the same struct: `type TrainModel<B> = Model<B>`).
pub trait Architecture: 'static {
    /// Name used in configs (`arch = "..."`) and tables.
    const NAME: &'static str;
    /// One line for `memlab models`.
    const SUMMARY: &'static str;

    /// The `[model]` table, without its `arch` key.
    type Config: Serialize
        + DeserializeOwned
        + Validate
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync;

    /// Named settings a `[model]` table can start from with
    /// `preset = "name"`: `(name, TOML fields)`. Fields the table gives
    /// itself override the preset's (e.g. RMT's `"paper"`: LM-RMT's code
    /// path, with the sizes of each experiment given beside it).
    const PRESETS: &'static [(&'static str, &'static str)] = &[];

    type Model<B: Backend>: SegmentModel<B>;
    type TrainModel<B: AutodiffBackend>: SegmentModel<B>
        + AutodiffModule<B, InnerModule = Self::Model<B::InnerBackend>>;

    /// Checks the config against the task (e.g. sizes that must agree).
    fn check(config: &Self::Config, ctx: &ModelContext) -> Result<(), ConfigError> {
        let _ = (config, ctx);
        Ok(())
    }

    fn init<B: Backend>(
        config: &Self::Config,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Self::Model<B>;

    /// Where LM-RMT's `MemTransformerLM` (`attn_type 0`) keeps what this
    /// architecture holds under `config`, for `memlab import`, `export` and
    /// `parity`; or why it has no counterpart there.
    fn lm_rmt_layout(config: &Self::Config) -> Result<LmRmtLayout, String> {
        let _ = config;
        Err(format!(
            "`{}` has no counterpart in LM-RMT's MemTransformerLM (transformer-xl and rmt with \
             backbone = \"transformer-xl\" have)",
            Self::NAME
        ))
    }

    /// One segment as `MemTransformerLM._forward` reads it: the model's
    /// output, and the last layer's output at every position of the
    /// (augmented) segment, which LM-RMT caches too (`hids[n_layer]`).
    /// `None` where [`Self::lm_rmt_layout`] has no counterpart.
    #[allow(clippy::type_complexity)]
    fn lm_rmt_forward<B: Backend>(
        model: &Self::Model<B>,
        tokens: Tensor<B, 2, Int>,
        memory: <Self::Model<B> as SegmentModel<B>>::Memory,
    ) -> Option<(
        SegmentOutput<B, <Self::Model<B> as SegmentModel<B>>::Memory>,
        Tensor<B, 3>,
    )> {
        let _ = (model, tokens, memory);
        None
    }

    fn init_train<B: AutodiffBackend>(
        config: &Self::Config,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Self::TrainModel<B>;
}

/// Parses a `[model]` table (with its `arch` key removed) for architecture `A`.
pub fn parse_model_config<A: Architecture>(
    table: toml::Table,
    ctx: &ModelContext,
) -> Result<A::Config, ConfigError> {
    let table = apply_preset::<A>(table)?;
    let config: A::Config = parse_section(toml::Value::Table(table), "model")?;
    A::check(&config, ctx).map_err(|e| e.within("model"))?;
    Ok(config)
}

/// Expands `preset = "name"` ([`Architecture::PRESETS`]): the preset's
/// fields, then the table's own on top.
pub fn apply_preset<A: Architecture>(mut table: toml::Table) -> Result<toml::Table, ConfigError> {
    let Some(value) = table.remove("preset") else {
        return Ok(table);
    };
    let names: Vec<&str> = A::PRESETS.iter().map(|(n, _)| *n).collect();
    let name = value.as_str().ok_or_else(|| {
        ConfigError::new(
            "model.preset",
            format!("must be a string, got {}", value.type_str()),
        )
    })?;
    let Some((_, fields)) = A::PRESETS.iter().find(|(n, _)| *n == name) else {
        let known = if names.is_empty() {
            format!("{} has none", A::NAME)
        } else {
            format!("known for {}: {}", A::NAME, names.join(", "))
        };
        return Err(ConfigError::new(
            "model.preset",
            format!("unknown preset {name:?}; {known}"),
        ));
    };
    let mut merged = crate::config::parse_toml(fields).expect("a preset is valid TOML");
    merged.extend(table);
    Ok(merged)
}

/// Test support for architecture crates: each `(model table, field)` case
/// must be rejected with an error that names `field` (e.g. `model.n_heads`).
pub fn assert_config_errors<A: Architecture>(cases: &[(&str, &str)], ctx: &ModelContext) {
    for (text, field) in cases {
        let table = crate::config::parse_toml(text)
            .unwrap_or_else(|e| panic!("case {text:?} is not TOML: {e}"));
        match parse_model_config::<A>(table, ctx) {
            Ok(config) => panic!("{}: {text:?} was accepted as {config:?}", A::NAME),
            Err(err) => assert_eq!(&err.field, field, "{}: {text:?}: {err}", A::NAME),
        }
    }
}

/// Work that is generic over the architecture: the registry calls
/// `visit::<A>()` with the architecture named in a config.
pub trait ArchitectureVisitor {
    type Output;
    fn visit<A: Architecture>(self) -> Self::Output;
}

/// A model table split into its architecture name, optional row label and
/// the remaining fields.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub arch: String,
    pub label: String,
    pub fields: toml::Table,
}

impl ModelSpec {
    /// Splits `arch` (required) and `label` (optional, defaults to `arch`).
    pub fn from_table(table: &toml::Table, section: &str) -> Result<Self, ConfigError> {
        let (arch, mut fields) = take_tag(table.clone(), "arch", section)?;
        let label = match fields.remove("label") {
            None => arch.clone(),
            Some(toml::Value::String(s)) if !s.is_empty() => s,
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{section}.label"),
                    format!("must be a non-empty string, got {other}"),
                ));
            }
        };
        Ok(Self {
            arch,
            label,
            fields,
        })
    }
}

/// Declares the registry: the list of architectures, with `NAMES`,
/// `SUMMARIES` and `dispatch(name, visitor)`.
///
/// ```ignore
/// memlab_core::architectures! {
///     memlab_baseline::Baseline,
/// }
/// ```
#[macro_export]
macro_rules! architectures {
    ($($arch:ty),+ $(,)?) => {
        /// Registry names of every architecture, in registry order.
        pub const NAMES: &[&str] = &[$(<$arch as $crate::registry::Architecture>::NAME),+];

        /// `(name, summary)` of every architecture.
        pub const SUMMARIES: &[(&str, &str)] = &[$((
            <$arch as $crate::registry::Architecture>::NAME,
            <$arch as $crate::registry::Architecture>::SUMMARY,
        )),+];

        /// Runs `visitor` with the architecture called `name`.
        pub fn dispatch<V: $crate::registry::ArchitectureVisitor>(
            name: &str,
            visitor: V,
        ) -> Result<V::Output, $crate::config::ConfigError> {
            $(
                if name == <$arch as $crate::registry::Architecture>::NAME {
                    return Ok(visitor.visit::<$arch>());
                }
            )+
            Err($crate::config::ConfigError::new(
                "model.arch",
                format!("unknown architecture {name:?}; known: {}", NAMES.join(", ")),
            ))
        }
    };
}

/// Test support for architecture crates: two models built from `config`
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
    let build = |seed| {
        crate::seed::init_seeded::<B, _>(&device, seed, || A::init::<B>(config, ctx, &device))
    };
    let logits = |model: &A::Model<B>| -> Vec<u32> {
        crate::testing::segment_logits(model, data, segment_len)
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

/// Test support: memory replay back-propagation gives the same parameter
/// gradients as full BPTT on `batch` (relative error below `tolerance` for
/// every parameter, over `segment_len` segments), and the same loss.
pub fn assert_mrbp_matches_bptt<A: Architecture>(
    config: &A::Config,
    ctx: &ModelContext,
    batch: &crate::data::HostBatch,
    segment_len: usize,
    tolerance: f64,
) {
    use burn::optim::GradientsParams;
    type AB = burn::backend::Autodiff<burn::backend::Flex>;

    let device = Default::default();
    let model =
        crate::seed::init_seeded::<AB, _>(&device, 3, || A::init_train::<AB>(config, ctx, &device));
    let sequences = batch
        .to_device::<AB>(ctx.vocab_size, &device)
        .expect("valid batch");
    // Each pass gets its own initial memory: a backward pass frees the graph
    // of everything it went through, a learned initial memory included.
    let full = crate::runner::run_segments(
        &model,
        &sequences,
        segment_len,
        crate::config::BpttDepth::Full,
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

/// Test support: trains architecture `A` on `task` (CPU, autodiff) as the
/// experiment config `text` says, writing the run into `run_dir`.
pub fn train_for_test<A: Architecture>(
    text: &str,
    task: &dyn crate::data::Task,
    run_dir: std::path::PathBuf,
) -> crate::train::TrainReport {
    type AB = burn::backend::Autodiff<burn::backend::Flex>;
    let config = crate::config::ExperimentConfig::from_table(
        crate::config::parse_toml(text).expect("test config is TOML"),
    )
    .expect("valid test config");
    let ctx = ModelContext {
        vocab_size: task.vocab_size(),
        max_segment_len: config.train.segment_len,
    };
    let mut table = config.model.clone().expect("a [model] table");
    table.remove("arch");
    let model_config = parse_model_config::<A>(table, &ctx).expect("valid model config");
    let options = crate::train::TrainOptions {
        run_dir,
        resume: false,
        overwrite: false,
        memory_limit: None,
        progress: false,
    };
    crate::train::train::<A, AB>(&config, &model_config, task, &options, &Default::default())
        .expect("training runs")
}

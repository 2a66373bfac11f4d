//! A sixth architecture written exactly as docs/adding-an-architecture.md
//! lists it (its config, its model and its registry entry, here in one
//! file instead of a crate's three), checked by everything that is
//! generic over an architecture: config parsing with the shared Transformer
//! fields flat in `[model]`, the checks of `memlab_train::testing`, the
//! measuring engine of `memlab bench` and the criterion benches, and
//! dispatch by name from a registry that lists it.
//!
//! The model: a causal Transformer whose memory is one vector per
//! sequence, the mean of the last segment's final hidden states, added to
//! every token embedding of the next segment.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use memlab_core::config::parse_toml;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, ArchitectureVisitor, HostBatch, ModelContext};
use memlab_train::testing::{
    assert_config_errors, assert_generation_matches_teacher_forcing, assert_mrbp_matches_bptt,
    assert_seeded_and_round_trips, segment_logits_with_a_change,
};
use memlab_zoo::bench::{Prepared, Shape, TrainPrepared};

/// `src/config.rs` of the doc.
mod config {
    use memlab_core::config::{ConfigError, TransformerSizes, Validate, check};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct SampleConfig {
        pub transformer: TransformerSizes,
        pub n_layers: usize,
    }

    impl Default for SampleConfig {
        fn default() -> Self {
            Self {
                transformer: TransformerSizes {
                    d_model: 16,
                    n_heads: 2,
                    d_ff: 32,
                    ..TransformerSizes::default()
                },
                n_layers: 1,
            }
        }
    }

    impl Validate for SampleConfig {
        fn validate(&self) -> Result<(), ConfigError> {
            self.transformer.check(false)?;
            check::positive("n_layers", self.n_layers)
        }
    }
}

/// `src/model.rs` of the doc.
mod model {
    use burn::nn::LayerNorm;
    use burn::prelude::*;
    use memlab_core::layers::{
        AbsolutePositions, PositionKind, TokenEmbedding, TransformerBlock, absolute_stack,
        causal_mask,
    };
    use memlab_core::{ModelContext, SegmentModel, SegmentOutput, TensorMemory};

    use super::config::SampleConfig;

    #[derive(Module, Debug)]
    pub struct Sample<B: Backend> {
        pub embedding: TokenEmbedding<B>,
        pub positions: AbsolutePositions<B>,
        pub blocks: Vec<TransformerBlock<B>>,
        pub final_norm: Option<LayerNorm<B>>,
        pub d_model: usize,
    }

    impl SampleConfig {
        pub fn init<B: Backend>(&self, ctx: &ModelContext, device: &B::Device) -> Sample<B> {
            let t = &self.transformer;
            let block = t.block();
            Sample {
                embedding: t.embedding(ctx.vocab_size).init(device),
                positions: AbsolutePositions::new(
                    PositionKind::Learned,
                    ctx.max_segment_len,
                    t.d_model,
                    t.init_std,
                    device,
                ),
                blocks: (0..self.n_layers).map(|_| block.init(device)).collect(),
                final_norm: t.final_norm(device),
                d_model: t.d_model,
            }
        }
    }

    impl<B: Backend> SegmentModel<B> for Sample<B> {
        type Memory = TensorMemory<B>;

        fn init_memory(&self, batch: usize, device: &B::Device) -> TensorMemory<B> {
            TensorMemory(Tensor::zeros([batch, 1, self.d_model], device))
        }

        fn forward_segment(
            &self,
            tokens: Tensor<B, 2, Int>,
            memory: TensorMemory<B>,
        ) -> SegmentOutput<B, TensorMemory<B>> {
            let [_, len] = tokens.dims();
            let device = tokens.device();
            let x = self.positions.forward(self.embedding.embed(tokens)) + memory.0;
            let mask = causal_mask::<B>(len, 0, &device);
            let h = absolute_stack(&self.blocks, self.final_norm.as_ref(), x, mask);
            let next = TensorMemory(h.clone().mean_dim(1));
            SegmentOutput::new(self.embedding.logits(h), next)
        }

        fn memory_floats_per_sequence(&self) -> usize {
            self.d_model
        }

        fn forward_flops(&self, segment_len: usize) -> u64 {
            let s = segment_len;
            self.blocks.iter().map(|b| b.flops(s, s)).sum::<u64>() + self.embedding.logits_flops(s)
        }
    }
}

// `src/lib.rs` of the doc: the registry entry.
use config::SampleConfig;
use model::Sample;

memlab_core::architecture! {
    /// The registry entry.
    pub struct SampleArch {
        name: "sample",
        summary: "a causal Transformer carrying the mean of its last segment",
        config: SampleConfig,
        model: Sample,
    }
}

/// The one line memlab-zoo's registry (`crates/zoo/src/registry.rs`) gets.
mod registry {
    memlab_core::architectures! {
        memlab_baseline::BaselineArch,
        super::SampleArch,
    }
}

const CTX: ModelContext = ModelContext {
    vocab_size: 11,
    max_segment_len: 4,
};

fn parse(text: &str) -> config::SampleConfig {
    parse_model_config::<SampleArch>(parse_toml(text).unwrap(), &CTX).unwrap()
}

fn sequence(len: usize, salt: i64) -> Vec<i64> {
    (0..len as i64).map(|i| (i * 7 + salt) % 11).collect()
}

#[test]
fn the_shared_fields_sit_flat_in_the_model_table() {
    let config = parse("d_model = 24\nn_heads = 3\ndropout = 0.1\nn_layers = 2");
    assert_eq!(config.transformer.d_model, 24);
    assert_eq!(config.transformer.n_heads, 3);
    assert_eq!(config.transformer.dropout, 0.1);
    assert_eq!(config.n_layers, 2);
    // Fields not given keep this architecture's defaults, not the shared type's.
    assert_eq!(config.transformer.d_ff, 32);
    assert_eq!(parse(""), config::SampleConfig::default());
    let cases = &[
        ("d_model = 0", "model.d_model"),
        ("d_model = \"big\"", "model.d_model"),
        ("n_heads = 3", "model.d_model"),
        ("dropout = 1.5", "model.dropout"),
        ("n_layers = 0", "model.n_layers"),
        ("d_modle = 16", "model.d_modle"),
        ("transformer = 3", "model.transformer"),
    ];
    assert_config_errors::<SampleArch>(cases, &CTX);
}

#[test]
fn the_checks_every_architecture_passes() {
    let config = config::SampleConfig::default();
    assert_seeded_and_round_trips::<SampleArch>(&config, &CTX, &sequence(12, 1), 4);
    let batch = HostBatch {
        batch: 2,
        len: 12,
        inputs: sequence(24, 2),
        targets: sequence(24, 3),
        mask: vec![1.0; 24],
    };
    assert_mrbp_matches_bptt::<SampleArch>(&config, &CTX, &batch, 4, 1e-4);
    let device = Default::default();
    let model = SampleArch::init::<Flex>(&config, &CTX, &device);
    assert_generation_matches_teacher_forcing(&model, &sequence(24, 4), 2, 8, 4, "sample");
}

#[test]
fn what_segment_one_holds_reaches_segment_three() {
    let device = Default::default();
    let model = SampleArch::init::<Flex>(&config::SampleConfig::default(), &CTX, &device);
    let (la, lb) = segment_logits_with_a_change::<Flex, _>(&model, &sequence(12, 1), 4, 0, 11);
    assert_ne!(la[2], lb[2], "segment 3 does not see segment 1");
}

#[test]
fn the_bench_engine_measures_it() {
    type AB = Autodiff<Flex>;
    let device = Default::default();
    let shape = Shape {
        batch: 2,
        segment: 4,
        vocab: 11,
    };
    let fields = parse_toml("d_model = 8\nn_heads = 2").unwrap();
    let mut forward = Prepared::<Flex, SampleArch>::new(shape, 2, &fields, &device).unwrap();
    forward.step();
    forward.advance_to(3);
    assert_eq!(forward.carried, 3);
    let mut train = TrainPrepared::<AB, SampleArch>::new(shape, &fields, &device).unwrap();
    let loss: f32 = train.step().into_scalar().elem();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
}

#[test]
fn a_registry_that_lists_it_dispatches_to_it() {
    struct Name;
    impl ArchitectureVisitor for Name {
        type Output = &'static str;
        fn visit<A: Architecture>(self) -> &'static str {
            A::SUMMARY
        }
    }
    assert!(registry::NAMES.contains(&"sample"));
    assert_eq!(
        registry::dispatch("sample", Name).unwrap(),
        SampleArch::SUMMARY
    );
    let err = registry::check_name("sampel").unwrap_err();
    assert!(err.message.contains("sample"), "{err}");
}

//! Free-running generation is what a user streaming the sequence gets, for
//! every registered architecture (untrained, answers crossing segment
//! boundaries): fed back through one teacher-forced pass, the generated
//! answer is that pass's arg-max at every answer position, and the stream's
//! logits are the teacher-forced ones everywhere.

use burn::backend::Flex;
use memlab_cli::registry;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, ArchitectureVisitor, ModelContext};
use memlab_train::testing::{assert_generation_matches_teacher_forcing, seeded_model};

struct Check {
    table: &'static str,
    segment_len: usize,
}

impl ArchitectureVisitor for Check {
    type Output = ();
    fn visit<A: Architecture>(self) {
        let ctx = ModelContext {
            vocab_size: 11,
            max_segment_len: self.segment_len,
        };
        let table = memlab_core::config::parse_toml(self.table).unwrap();
        let config = parse_model_config::<A>(table, &ctx).expect("valid test config");
        let model = seeded_model::<A, Flex>(&config, &ctx, 3);
        let (batch, len, start) = (2, 23, 7);
        let inputs: Vec<i64> = (0..batch * len)
            .map(|i| ((i * 7 + i / 5) % 11) as i64)
            .collect();
        assert_generation_matches_teacher_forcing(
            &model,
            &inputs,
            batch,
            start,
            self.segment_len,
            &format!("{} {}", A::NAME, self.table),
        );
    }
}

#[test]
fn every_architecture_generates_what_teacher_forcing_predicts() {
    for name in registry::NAMES {
        // GPT-2's fields are Hugging Face's names for the same sizes.
        let table = match *name {
            "gpt2" | "gpt2-rmt" | "gpt2-ltm" => "n_embd = 32\nn_head = 2\nn_inner = 64",
            _ => "d_model = 32\nn_heads = 2\nd_ff = 64",
        };
        for segment_len in [5, 8] {
            registry::dispatch(name, Check { table, segment_len }).unwrap();
        }
    }
}

#[test]
fn memory_settings_generate_what_teacher_forcing_predicts() {
    for (name, table) in [
        (
            "transformer-xl",
            "d_model = 32\nn_heads = 2\nd_ff = 64\nmem_len = 6",
        ),
        (
            "transformer-xl",
            "d_model = 32\nn_heads = 2\nd_ff = 64\nmem_len = 6\nsame_length = true",
        ),
        (
            "rmt",
            "preset = \"paper\"\nd_model = 32\nn_heads = 2\nd_ff = 64\nnum_mem_tokens = 3",
        ),
        (
            "rmt",
            "backbone = \"transformer-xl\"\nd_model = 32\nn_heads = 2\nd_ff = 64\nmem_len = 7\nread_mem_from_cache = true",
        ),
        (
            "rmt",
            "d_model = 32\nn_heads = 2\nd_ff = 64\nmem_at_end = false",
        ),
        // configs/paper/rmt-reverse-segments.toml's RMT (no cache, memory
        // tokens over relative positions), with weights large enough that
        // the read block's dependence on the segment's length shows (the
        // rel-shifted terms beyond the causal part): a partial segment
        // must be read as part of a complete one.
        (
            "rmt",
            "backbone = \"transformer-xl\"\nd_model = 32\nn_heads = 2\nd_ff = 64\nmem_len = 0\nnum_mem_tokens = 6\nscale_embeddings = true\nread_mem_from_cache = true\ninit_std = 0.3",
        ),
        (
            "rmt",
            "backbone = \"transformer-xl\"\nd_model = 32\nn_heads = 2\nd_ff = 64\nmem_len = 4\nnum_mem_tokens = 3\ninit_std = 0.3",
        ),
        (
            "infinity-former",
            "d_model = 32\nn_heads = 2\nd_ff = 64\nmem_len = 4\nnum_basis = 8\nsticky = true",
        ),
        // The signal restarted within the text, not sticky.
        (
            "gpt2-ltm",
            "n_embd = 32\nn_head = 2\nn_inner = 64\nreset_after = 10\n[long_term]\nnum_basis = 8\nnum_samples = 8\nsticky = false",
        ),
    ] {
        registry::dispatch(
            name,
            Check {
                table,
                segment_len: 5,
            },
        )
        .unwrap();
    }
}

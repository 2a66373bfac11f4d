use memlab_core::config::parse_toml;
use memlab_core::{Split, Task};
use memlab_tasks::copy::{CopyTask, START};
use memlab_tasks::{CopyConfig, build_task};

#[test]
fn the_sequence_is_x_start_x_x_or_x_start_reversed_x() {
    let config = CopyConfig::default();
    assert_eq!(
        CopyTask::new(config.clone(), 0).sequence(&[5, 2, 7]),
        vec![5, 2, 7, 1, 5, 2, 7, 5, 2, 7]
    );
    assert_eq!(
        CopyTask::reverse(config, 0).sequence(&[5, 2, 7]),
        vec![5, 2, 7, 1, 7, 2, 5]
    );
}

/// The hand-checked reverse example of docs/tasks.md, and the invariant on
/// random batches: the answer is X reversed, one token per position.
#[test]
fn reverse_batches_answer_x_reversed() {
    for seed in 0..10u64 {
        let length = 1 + seed as usize % 6;
        let task = CopyTask::reverse(
            CopyConfig {
                length,
                vocab_size: 10,
            },
            seed,
        );
        let batch = task.batch(Split::Valid, seed, 3);
        batch.validate(task.vocab_size()).unwrap();
        assert_eq!(batch.len, 2 * length);
        for row in 0..3 {
            let r = row * batch.len..(row + 1) * batch.len;
            let (inputs, targets, mask) = (
                &batch.inputs[r.clone()],
                &batch.targets[r.clone()],
                &batch.mask[r],
            );
            let x = &inputs[..length];
            assert_eq!(inputs[length], START);
            let answer: Vec<i64> = targets
                .iter()
                .zip(mask)
                .filter(|(_, m)| **m > 0.0)
                .map(|(t, _)| *t)
                .collect();
            let reversed: Vec<i64> = x.iter().rev().copied().collect();
            assert_eq!(answer, reversed);
        }
    }
}

#[test]
fn a_batch_has_the_format_of_the_paper_code() {
    let task = CopyTask::new(
        CopyConfig {
            length: 3,
            vocab_size: 10,
        },
        0,
    );
    let batch = task.batch(Split::Train, 0, 1);
    assert_eq!((batch.batch, batch.len), (1, 9));
    let x = &batch.inputs[..3];
    let mut expected_input = x.to_vec();
    expected_input.push(START);
    expected_input.extend_from_slice(x);
    expected_input.extend_from_slice(&x[..2]);
    assert_eq!(batch.inputs, expected_input);
    let mut expected_target = x[1..].to_vec();
    expected_target.push(START);
    expected_target.extend_from_slice(x);
    expected_target.extend_from_slice(x);
    assert_eq!(batch.targets, expected_target);
    assert_eq!(
        batch.mask,
        vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    );
}

#[test]
fn every_batch_keeps_the_invariants() {
    for seed in 0..20u64 {
        let length = 1 + (seed as usize % 7);
        let vocab_size = 3 + (seed as usize % 5);
        let task = CopyTask::new(CopyConfig { length, vocab_size }, seed);
        let batch = task.batch(Split::Train, seed, 4);
        batch.validate(task.vocab_size()).unwrap();
        for row in 0..4 {
            let inputs = &batch.inputs[row * batch.len..(row + 1) * batch.len];
            let targets = &batch.targets[row * batch.len..(row + 1) * batch.len];
            let mask = &batch.mask[row * batch.len..(row + 1) * batch.len];
            // Targets are the inputs shifted by one.
            assert_eq!(&inputs[1..], &targets[..batch.len - 1]);
            let x = &inputs[..length];
            assert!(x.iter().all(|&t| (2..vocab_size as i64).contains(&t)));
            assert_eq!(inputs[length], START);
            // The masked targets are X twice.
            let answer: Vec<i64> = targets
                .iter()
                .zip(mask)
                .filter(|(_, m)| **m > 0.0)
                .map(|(t, _)| *t)
                .collect();
            assert_eq!(answer, [x, x].concat());
        }
    }
}

#[test]
fn batches_are_seeded_and_splits_differ() {
    let task = CopyTask::new(CopyConfig::default(), 7);
    assert_eq!(
        task.batch(Split::Train, 3, 8),
        task.batch(Split::Train, 3, 8)
    );
    assert_ne!(
        task.batch(Split::Train, 3, 8),
        task.batch(Split::Train, 4, 8)
    );
    assert_ne!(
        task.batch(Split::Train, 3, 8),
        task.batch(Split::Valid, 3, 8)
    );
    let other_seed = CopyTask::new(CopyConfig::default(), 8);
    assert_ne!(
        task.batch(Split::Train, 3, 8),
        other_seed.batch(Split::Train, 3, 8)
    );
}

#[test]
fn bad_task_configs_name_their_field() {
    let cases: &[(&str, &str)] = &[
        ("kind = \"copy\"\nlength = 0", "task.length"),
        ("kind = \"copy\"\nvocab_size = 2", "task.vocab_size"),
        ("kind = \"copy\"\nlenght = 3", "task.lenght"),
        ("kind = \"copy\"\nlength = -3", "task.length"),
        ("kind = \"cpy\"", "task.kind"),
        ("kind = 3", "task.kind"),
        ("length = 3", "task.kind"),
    ];
    for (text, field) in cases {
        let err = build_task(&parse_toml(text).unwrap(), 0).err().expect(text);
        let memlab_tasks::TaskError::Config(err) = err else {
            panic!("{text}: not a config error: {err}")
        };
        assert_eq!(&err.field, field, "{text}: {err}");
    }
    let task = build_task(&parse_toml("kind = \"copy\"\nlength = 5").unwrap(), 0).unwrap();
    assert_eq!(task.seq_len(), 15);
}

//! Retrieval, quadratic equations and sorting: a hand-checked example per
//! format and the invariant of each task on random batches.

use memlab_core::config::parse_toml;
use memlab_core::{HostBatch, Metric, Split, Task};
use memlab_tasks::quadratic::{self, Equation, QuadraticTask};
use memlab_tasks::retrieval::{RetrievalTask, SEPARATOR, VOCAB_SIZE};
use memlab_tasks::sorting::{SortingTask, sorted_by_frequency};
use memlab_tasks::{QuadraticConfig, RetrievalConfig, SortingConfig, TaskError, build_task};

/// Row `r` of a batch: (inputs, targets, masked targets).
fn row(batch: &HostBatch, r: usize) -> (&[i64], &[i64], Vec<i64>) {
    let span = r * batch.len..(r + 1) * batch.len;
    let targets = &batch.targets[span.clone()];
    let answer = targets
        .iter()
        .zip(&batch.mask[span.clone()])
        .filter(|(_, m)| **m > 0.0)
        .map(|(t, _)| *t)
        .collect();
    (&batch.inputs[span], targets, answer)
}

#[test]
fn retrieval_example_and_invariant() {
    assert_eq!(
        RetrievalTask::sequence(&[12, 30, 11, 25], &[3, 7, 0, 9], 1),
        vec![12, 3, 30, 7, 11, 0, 25, 9, 30, 10, 7]
    );
    let task = RetrievalTask::new(RetrievalConfig::default(), 3);
    assert_eq!(task.vocab_size(), 37);
    let batch = task.batch(Split::Train, 0, 64);
    batch.validate(VOCAB_SIZE).unwrap();
    assert_eq!(batch.len, 10);
    for r in 0..64 {
        let (inputs, targets, answer) = row(&batch, r);
        let keys: Vec<i64> = inputs[..8].iter().step_by(2).copied().collect();
        let values: Vec<i64> = inputs[1..8].iter().step_by(2).copied().collect();
        assert!(keys.iter().all(|k| (11..37).contains(k)));
        assert!(values.iter().all(|v| (0..10).contains(v)));
        let mut distinct = keys.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "keys are distinct");
        let query = inputs[8];
        assert_eq!(inputs[9], SEPARATOR);
        let position = keys.iter().position(|&k| k == query).expect("q is a key");
        // One-token answer: the value of q.
        assert_eq!(answer, vec![values[position]]);
        assert_eq!(targets[9], values[position]);
    }
}

#[test]
fn quadratic_example_fields() {
    let example = Equation {
        p: -98,
        q: 552,
        k: -4,
    };
    assert_eq!(
        example.fields(),
        [
            "-4*x^2+392*x-2208=0",
            "x^2-98*x+552=0",
            "D=(-98)^2-4*552=7396",
            "x1=(98-86)/2=6",
            "x2=(98+86)/2=92",
            "answer:6,92",
        ]
        .map(String::from)
    );
    let none = Equation { p: 3, q: 5, k: 2 };
    assert_eq!(none.fields()[2], "D=3^2-4*5=-11");
    assert_eq!(none.fields()[5], "answer:none");
    let task = QuadraticTask::new(QuadraticConfig::default(), 0);
    let ids = task.encode(&example);
    assert_eq!(ids.len(), 180);
    assert_eq!(
        quadratic::decode(&ids[150..180]),
        "answer:6,92___________________"
    );
}

/// Parses a signed integer field value.
fn int(s: &str) -> i64 {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is not an integer"))
}

#[test]
fn quadratic_answers_satisfy_their_equation() {
    let task = QuadraticTask::new(QuadraticConfig::default(), 11);
    assert_eq!(task.metric(), Metric::ExactMatch);
    let batch = task.batch(Split::Train, 0, 400);
    batch.validate(task.vocab_size()).unwrap();
    let mut no_roots = 0;
    for r in 0..400 {
        let (inputs, targets, answer) = row(&batch, r);
        // Fields 2–6 are the masked targets: 5 fields × 30 characters.
        assert_eq!(answer.len(), 150);
        let mut text = quadratic::decode(&inputs[..1]);
        text.push_str(&quadratic::decode(targets));
        let fields: Vec<String> = (0..6)
            .map(|f| text[f * 30..(f + 1) * 30].trim_end_matches('_').to_string())
            .collect();
        // a*x^2+b*x+c=0
        let eq = fields[0].strip_suffix("=0").unwrap();
        let (a, rest) = eq.split_once("*x^2").unwrap();
        let (b, c) = rest.split_once("*x").unwrap();
        let (a, b, c) = (int(a), int(b), int(c));
        assert!(a != 0 && (1..=10).contains(&a.abs()));
        let answer = fields[5].strip_prefix("answer:").unwrap();
        if answer == "none" {
            no_roots += 1;
            assert!(b * b - 4 * a * c < 0, "{}", fields[0]);
        } else {
            let (x1, x2) = answer.split_once(',').unwrap();
            for x in [int(x1), int(x2)] {
                assert_eq!(a * x * x + b * x + c, 0, "{} at x = {x}", fields[0]);
                assert!((-100..100).contains(&x));
            }
            assert!(int(x1) <= int(x2));
        }
    }
    // About 20% have no real roots.
    assert!((50..110).contains(&no_roots), "{no_roots} of 400");
}

#[test]
fn quadratic_fields_fit_the_narrowest_width() {
    let task = QuadraticTask::new(
        QuadraticConfig {
            field_len: quadratic::MIN_FIELD_LEN,
            ..QuadraticConfig::default()
        },
        5,
    );
    // Extreme coefficients, then many random draws (encode panics if a
    // field does not fit).
    for (x1, x2) in [(-100, 99), (-100, -100), (99, 99), (-100, 1), (-99, -1)] {
        for k in [-10, 10] {
            let (p, q) = (-(x1 + x2), x1 * x2);
            task.encode(&Equation { p, q, k });
            // The same p with no real roots and the largest q.
            task.encode(&Equation {
                p,
                q: p * p / 4 + 1000,
                k,
            });
        }
    }
    task.batch(Split::Train, 0, 5000);
}

#[test]
fn sorting_example_and_invariant() {
    assert_eq!(
        sorted_by_frequency(&[2, 0, 2, 1, 2, 0, 0, 2], 4),
        vec![2, 0, 1, 3]
    );
    // Ties keep first occurrence: 3 before 1 (both twice).
    assert_eq!(sorted_by_frequency(&[3, 1, 1, 3, 0], 4), vec![3, 1, 0, 2]);
    let task = SortingTask::new(
        SortingConfig {
            length: 500,
            symbols: 20,
        },
        9,
    );
    assert_eq!(task.vocab_size(), 21);
    let batch = task.batch(Split::Test, 2, 4);
    batch.validate(21).unwrap();
    assert_eq!(batch.len, 520);
    for r in 0..4 {
        let (inputs, _, answer) = row(&batch, r);
        assert_eq!(inputs[500], 20, "separator");
        let tokens = &inputs[..500];
        let count = |s: i64| tokens.iter().filter(|&&t| t == s).count();
        assert_eq!(answer.len(), 20);
        let mut seen = answer.clone();
        seen.sort();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "a permutation");
        for pair in answer.windows(2) {
            assert!(count(pair[0]) >= count(pair[1]), "descending counts");
        }
    }
}

/// The distribution drifts: the first and last tenth of a long sequence
/// follow different distributions (each drawn ∝ randint(1, 10)).
#[test]
fn sorting_tokens_drift_from_the_initial_to_the_final_distribution() {
    let task = SortingTask::new(
        SortingConfig {
            length: 20_000,
            symbols: 20,
        },
        1,
    );
    let batch = task.batch(Split::Train, 0, 1);
    let histogram = |range: std::ops::Range<usize>| {
        let mut h = [0f64; 20];
        for &t in &batch.inputs[range.clone()] {
            h[t as usize] += 1.0 / range.len() as f64;
        }
        h
    };
    let (first, last) = (histogram(0..2000), histogram(18_000..20_000));
    let distance: f64 = first.iter().zip(&last).map(|(a, b)| (a - b).abs()).sum();
    assert!(distance > 0.15, "total variation {distance}");
}

#[test]
fn synthetic_tasks_are_seeded_and_bad_fields_are_named() {
    for text in [
        "kind = \"retrieval\"",
        "kind = \"quadratic\"",
        "kind = \"sorting\"\nlength = 50",
        "kind = \"reverse\"\nlength = 5",
    ] {
        let a = build_task(&parse_toml(text).unwrap(), 4).unwrap();
        let b = build_task(&parse_toml(text).unwrap(), 4).unwrap();
        assert_eq!(
            a.batch(Split::Valid, 1, 3),
            b.batch(Split::Valid, 1, 3),
            "{text}"
        );
        assert_ne!(
            a.batch(Split::Valid, 1, 3),
            a.batch(Split::Train, 1, 3),
            "{text}"
        );
    }
    let cases: &[(&str, &str)] = &[
        ("kind = \"retrieval\"\npairs = 11", "task.pairs"),
        ("kind = \"retrieval\"\npairs = 0", "task.pairs"),
        ("kind = \"quadratic\"\nfield_len = 20", "task.field_len"),
        (
            "kind = \"quadratic\"\nno_root_fraction = 1.5",
            "task.no_root_fraction",
        ),
        ("kind = \"quadratic\"\nmax_factor = 0", "task.max_factor"),
        ("kind = \"sorting\"\nsymbols = 1", "task.symbols"),
        ("kind = \"sorting\"\nlength = 0", "task.length"),
        ("kind = \"sorting\"\nlenght = 10", "task.lenght"),
    ];
    for (text, field) in cases {
        match build_task(&parse_toml(text).unwrap(), 0) {
            Err(TaskError::Config(e)) => assert_eq!(&e.field, field, "{text}: {e}"),
            Err(e) => panic!("{text}: {e}"),
            Ok(_) => panic!("{text}: accepted"),
        }
    }
}

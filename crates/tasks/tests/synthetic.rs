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

/// The notebook's own printed example (`square_equations.ipynb`: roots
/// −93 and −61, factor −8), and one of each special case of `get_monome`.
#[test]
fn quadratic_fields_follow_the_official_generator() {
    let example = Equation::Roots {
        r1: -93,
        r2: -61,
        k: -8,
    };
    assert_eq!(
        example.fields(),
        [
            "-8*x^2-1232*x-45384=0",
            "x^2+154*x+5673=0",
            "D=154^2-4*1*5673=1024=32^2",
            "x=(-154-32)/2=-93",
            "x=(-154+32)/2=-61",
            "-93,-61",
        ]
        .map(String::from)
    );
    // Coefficients 0 and ±1 drop or shrink their terms; equal roots give
    // one answer; the discriminant prints |b| and c as it is.
    let f = Equation::Roots { r1: 1, r2: 0, k: 1 }.fields();
    assert_eq!(f[0], "x^2-x=0");
    assert_eq!(f[2], "D=1^2-4*1*0=1=1^2");
    assert_eq!(f[5], "0,1");
    let f = Equation::Roots {
        r1: 5,
        r2: 5,
        k: -1,
    }
    .fields();
    assert_eq!(f[0], "-x^2+10*x-25=0");
    assert_eq!(f[1], "x^2-10*x+25=0");
    assert_eq!(f[5], "5");
    let f = Equation::Roots {
        r1: -1,
        r2: 1,
        k: 3,
    }
    .fields();
    assert_eq!(f[0], "3*x^2-3=0");
    assert_eq!(f[1], "x^2-1=0");
    assert_eq!(f[2], "D=0^2-4*1*-1=4=2^2");
    assert_eq!(f[3], "x=(0-2)/2=-1");
    let none = Equation::NoRoots { b: 3, c: 5, k: 2 }.fields();
    assert_eq!(
        none,
        [
            "2*x^2+6*x+10=0",
            "x^2+3*x+5=0",
            "D=3^2-4*1*5=-11",
            "",
            "",
            ""
        ]
        .map(String::from)
    );
    assert_eq!(
        Equation::NoRoots { b: 0, c: 1, k: 1 }.fields()[1],
        "x^2+1=0"
    );

    // Ids are the notebook's c2token: digits 2–11, then + - * / ^ = ( ) x D ; ,
    assert_eq!(quadratic::encode("0"), vec![2]);
    assert_eq!(quadratic::encode("x^2+,"), vec![20, 16, 4, 12, 23]);
    let task = QuadraticTask::new(QuadraticConfig::default(), 0);
    assert_eq!(task.vocab_size(), 24);
    let ids = task.encode(&example);
    assert_eq!(ids.len(), 180);
    assert_eq!(
        quadratic::decode(&ids[150..180]),
        "-93,-61_______________________"
    );
}

/// Parses a signed integer.
fn int(s: &str) -> i64 {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is not an integer"))
}

/// `a*x^2±b*x±c=0` as the notebook writes it, back to (a, b, c).
fn coefficients(equation: &str) -> (i64, i64, i64) {
    let lhs = equation.strip_suffix("=0").unwrap();
    let mut terms = Vec::new();
    let mut current = String::new();
    for (i, ch) in lhs.chars().enumerate() {
        if i > 0 && (ch == '+' || ch == '-') {
            terms.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    terms.push(current);
    let (mut a, mut b, mut c) = (0, 0, 0);
    for term in terms {
        let coef = |t: &str| match t {
            "" | "+" => 1,
            "-" => -1,
            t => int(t.trim_end_matches('*')),
        };
        if let Some(t) = term.strip_suffix("x^2") {
            a = coef(t);
        } else if let Some(t) = term.strip_suffix('x') {
            b = coef(t);
        } else {
            c = int(&term);
        }
    }
    (a, b, c)
}

#[test]
fn quadratic_rows_are_the_official_layout_and_answers_solve_them() {
    let task = QuadraticTask::new(QuadraticConfig::default(), 11);
    assert_eq!(task.metric(), Metric::GeneratedExactMatch);
    let spec = task.answer().unwrap();
    assert_eq!(spec.start, 30);
    assert_eq!(spec.exact, 149..180);
    let batch = task.batch(Split::Train, 0, 400);
    batch.validate(task.vocab_size()).unwrap();
    assert_eq!(batch.len, 180);
    let mut no_roots = 0;
    for r in 0..400 {
        let (inputs, targets, answer) = row(&batch, r);
        // The targets are the row shifted by one, ending in 0 (`tgt`).
        assert_eq!(&targets[..179], &inputs[1..]);
        assert_eq!(targets[179], 0);
        // The loss covers the last 150 targets (`answer_size 150`).
        assert_eq!(answer.len(), 150);
        let text = quadratic::decode(inputs);
        let fields: Vec<&str> = (0..6)
            .map(|f| text[f * 30..(f + 1) * 30].trim_end_matches('_'))
            .collect();
        let (a, b, c) = coefficients(fields[0]);
        assert!((1..=10).contains(&a.abs()), "{}", fields[0]);
        let (one, p, q) = coefficients(fields[1]);
        assert_eq!((one, a * p, a * q), (1, b, c), "{fields:?}");
        if fields[5].is_empty() {
            no_roots += 1;
            assert!(p >= 0 && p * p - 4 * q <= 1, "{fields:?}");
            assert!(fields[3].is_empty() && fields[4].is_empty());
        } else {
            let roots: Vec<i64> = fields[5].split(',').map(int).collect();
            for &x in &roots {
                assert_eq!(a * x * x + b * x + c, 0, "{} at x = {x}", fields[0]);
                assert!((-99..=99).contains(&x));
            }
            assert!(roots.windows(2).all(|w| w[0] < w[1]), "{fields:?}");
            assert!(fields[3].starts_with("x=(") && fields[4].starts_with("x=("));
        }
        // Every equation of this split belongs to it.
        assert_eq!(quadratic::split_of(fields[0]), Split::Train);
    }
    // About 20% have no real roots.
    assert!((50..110).contains(&no_roots), "{no_roots} of 400");
}

#[test]
fn quadratic_splits_are_disjoint() {
    let task = QuadraticTask::new(QuadraticConfig::default(), 2);
    let firsts = |split| {
        let batch = task.batch(split, 0, 300);
        (0..300)
            .map(|r| quadratic::decode(&row(&batch, r).0[..30]))
            .collect::<std::collections::HashSet<_>>()
    };
    let (train, valid, test) = (
        firsts(Split::Train),
        firsts(Split::Valid),
        firsts(Split::Test),
    );
    assert!(train.is_disjoint(&valid) && train.is_disjoint(&test) && valid.is_disjoint(&test));
}

#[test]
fn quadratic_fields_fit_the_narrowest_width() {
    // Every root pair and factor, and the widest equations without roots
    // (`encode` panics if a field does not fit).
    let task = QuadraticTask::new(
        QuadraticConfig {
            field_len: quadratic::MIN_FIELD_LEN,
            ..QuadraticConfig::default()
        },
        5,
    );
    let mut widest = 0;
    for r1 in -99..=99 {
        for r2 in -99..=99 {
            for k in [-10, 10] {
                let e = Equation::Roots { r1, r2, k };
                widest = widest.max(e.fields().iter().map(String::len).max().unwrap());
                task.encode(&e);
            }
        }
    }
    for b in 190..200 {
        task.encode(&Equation::NoRoots { b, c: 9999, k: -10 });
    }
    assert_eq!(
        widest,
        quadratic::MIN_FIELD_LEN,
        "MIN_FIELD_LEN is the widest"
    );
    task.batch(Split::Train, 0, 2000);
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
        (
            "kind = \"quadratic\"\nshuffle_limit = 0",
            "task.shuffle_limit",
        ),
        ("kind = \"quadratic\"\nmax_root = 1000", "task.max_root"),
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

//! Byte- and word-level corpora: the ordered LM iterator against a naive
//! reference, the vocabulary, the standard splits, and clear errors for bad
//! data. The shared corpora (`$MEMLAB_DATA_DIR`) are read when present.

use std::path::{Path, PathBuf};

use memlab_core::config::parse_toml;
use memlab_core::{Metric, Split, Task};
use memlab_tasks::text::{self, STANDARD_SPLIT, Vocab, split_sizes};
use memlab_tasks::{BytesConfig, TaskError, WordsConfig, build_task};

fn fixture(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

fn bytes_task(path: &str, seq_len: usize, split: [f64; 3]) -> memlab_tasks::LmTask {
    BytesConfig {
        path: path.into(),
        seq_len,
        split,
    }
    .build()
    .unwrap()
}

/// Transformer-XL's `LMOrderedIterator`, written out naively: stream `b` is
/// `data[b·n .. (b+1)·n]`, batch `i` reads positions `iL ..` of every stream.
#[test]
fn batches_follow_the_ordered_lm_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..=99u8).collect();
    let path = fixture(dir.path(), "digits.bin", &data);
    // Train: the first 50 bytes → 2 streams of 25; L = 7.
    let task = bytes_task(&path, 7, [0.5, 0.25, 0.25]);
    assert!(task.streaming());
    assert_eq!(task.metric(), Metric::BitsPerCharacter);
    let (streams, n, l) = (2usize, 25usize, 7usize);
    let count = task.batches(Split::Train, streams).unwrap();
    assert_eq!(count, 4); // ⌈(25 − 1) / 7⌉
    let mut covered = vec![vec![false; n]; streams];
    for i in 0..count {
        let batch = task.batch(Split::Train, i, streams);
        let start = i as usize * l;
        let len = l.min(n - 1 - start);
        assert_eq!((batch.batch, batch.len), (streams, len));
        for (b, seen) in covered.iter_mut().enumerate() {
            for t in 0..len {
                let pos = b * n + start + t;
                assert_eq!(batch.inputs[b * len + t], data[pos] as i64);
                assert_eq!(batch.targets[b * len + t], data[pos + 1] as i64);
                seen[start + t + 1] = true;
            }
        }
        assert!(batch.mask.iter().all(|&m| m == 1.0));
    }
    // Every token but each stream's first is predicted exactly once.
    assert!(covered.iter().all(|s| s[1..].iter().all(|&c| c)));
    // Past the end: a new epoch.
    assert_eq!(
        task.batch(Split::Train, count, streams),
        task.batch(Split::Train, 0, streams)
    );
    // Valid holds bytes 50..75.
    assert_eq!(task.batch(Split::Valid, 0, 1).inputs[0], 50);
}

#[test]
fn split_sizes_standard_and_fractional() {
    assert_eq!(
        split_sizes(100_000_000, true, [0.9, 0.05, 0.05]),
        STANDARD_SPLIT
    );
    assert_eq!(split_sizes(1000, false, [0.9, 0.05, 0.05]), [900, 50, 50]);
    assert_eq!(split_sizes(1000, false, [0.5, 0.2, 0.1]), [500, 200, 100]);
}

#[test]
fn words_vocabulary_eos_and_unk() {
    let vocab = Vocab::build(text::words("b a b\nc b a\n"), 1);
    // <eos>, <unk>, then by count: b ×3, <eos> ×2 (already placed), a ×2, c.
    assert_eq!(vocab.words, ["<eos>", "<unk>", "b", "a", "c"]);
    assert_eq!(vocab.id("zebra"), 1);
    let rare = Vocab::build(text::words("b a b\n"), 2);
    assert_eq!(rare.words, ["<eos>", "<unk>", "b"]);

    let dir = tempfile::tempdir().unwrap();
    let train = fixture(
        dir.path(),
        "train.txt",
        b" = A = \n\n the cat sat \n the end \n",
    );
    let valid = fixture(dir.path(), "valid.txt", b"the dog sat\n");
    let task = WordsConfig {
        train,
        valid: valid.clone(),
        test: valid,
        seq_len: 4,
        min_freq: 1,
    }
    .build()
    .unwrap();
    assert_eq!(task.metric(), Metric::Perplexity);
    let (_, vocab) = task.artifacts().remove(0);
    let words: Vec<&str> = vocab.lines().collect();
    // Counts: <eos> 4, the 2, then = 2 ... ties by first appearance.
    assert_eq!(
        words,
        ["<eos>", "<unk>", "=", "the", "A", "cat", "sat", "end"]
    );
    assert_eq!(task.vocab_size(), 8);
    // "the dog sat <eos>": dog is unknown.
    let ids: Vec<u32> = task.corpus.valid.to_vec();
    assert_eq!(ids, vec![3, 1, 6, 0]);
    // The empty line is one <eos>.
    assert_eq!(&task.corpus.train[..5], &[2, 4, 2, 0, 0]);
}

fn data_error(result: Result<Box<dyn Task>, TaskError>) -> String {
    match result {
        Err(TaskError::Data(e)) => e.to_string(),
        Err(e) => panic!("not a data error: {e}"),
        Ok(t) => panic!("accepted: {}", t.name()),
    }
}

#[test]
fn bad_data_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let toml = |text: String| parse_toml(&text).unwrap();
    let missing = dir.path().join("nope.txt").display().to_string();
    let err = data_error(build_task(
        &toml(format!("kind = \"bytes\"\npath = {missing:?}")),
        0,
    ));
    assert!(
        err.contains("nope.txt") && err.contains("no such data file"),
        "{err}"
    );

    let empty = fixture(dir.path(), "empty.txt", b"");
    let err = data_error(build_task(
        &toml(format!("kind = \"bytes\"\npath = {empty:?}")),
        0,
    ));
    assert!(err.contains("empty"), "{err}");

    let short = fixture(dir.path(), "short.txt", b"abcdefghij");
    let err = data_error(build_task(
        &toml(format!("kind = \"bytes\"\npath = {short:?}")),
        0,
    ));
    assert!(err.contains("too short") && err.contains("Valid"), "{err}");

    let latin1 = fixture(dir.path(), "latin1.txt", b"caf\xe9 au lait\n");
    let ok = fixture(dir.path(), "ok.txt", b"some words here\n");
    let err = data_error(build_task(
        &toml(format!(
            "kind = \"words\"\ntrain = {latin1:?}\nvalid = {ok:?}\ntest = {ok:?}"
        )),
        0,
    ));
    assert!(
        err.contains("latin1.txt") && err.contains("not UTF-8") && err.contains("offset 3"),
        "{err}"
    );

    let blank = fixture(dir.path(), "blank.txt", b"\n  \n");
    let err = data_error(build_task(
        &toml(format!(
            "kind = \"words\"\ntrain = {ok:?}\nvalid = {blank:?}\ntest = {ok:?}"
        )),
        0,
    ));
    assert!(
        err.contains("blank.txt") && err.contains("no words"),
        "{err}"
    );

    // Too many streams for the split.
    let small = fixture(dir.path(), "small.txt", &[b'x'; 100]);
    let task = bytes_task(&small, 8, [0.8, 0.1, 0.1]);
    task.check_batch_size(4).unwrap();
    let err = task.check_batch_size(8).unwrap_err().to_string();
    assert!(err.contains("Valid") && err.contains("batch_size"), "{err}");

    // A bad field is a config error naming it.
    match build_task(&toml("kind = \"bytes\"\nsplit = [0.9, 0.2, 0.1]".into()), 0) {
        Err(TaskError::Config(e)) => assert_eq!(e.field, "task.split"),
        other => panic!("{:?}", other.err()),
    }
}

/// The shared corpora, found through `$MEMLAB_DATA_DIR` (as `.ci/run` sets).
fn shared(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(text::DATA_DIR_VAR)?;
    let path = Path::new(&dir).join(name);
    path.is_file().then_some(path)
}

#[test]
fn shared_corpora_load_by_name() {
    let Some(_) = shared("tinyshakespeare.txt") else {
        eprintln!("skipped: set MEMLAB_DATA_DIR to the shared data directory");
        return;
    };
    // A bare name resolves through MEMLAB_DATA_DIR.
    let task = bytes_task("tinyshakespeare.txt", 256, [0.9, 0.05, 0.05]);
    assert_eq!(task.vocab_size(), 256);
    assert_eq!(task.corpus.train.len(), 1_003_855); // round(0.9 × 1,115,394)
    assert_eq!(task.corpus.valid.len(), 55_770);
    let words = WordsConfig {
        train: "wikitext-2-valid.txt".into(),
        valid: "wikitext-2-test.txt".into(),
        test: "wikitext-2-test.txt".into(),
        seq_len: 64,
        min_freq: 1,
    }
    .build()
    .unwrap();
    // WikiText-2 valid: 217,646 tokens with <eos> (Merity et al.'s count).
    assert_eq!(words.corpus.train.len(), 217_646);
    let unk = words.corpus.valid.iter().filter(|&&t| t == 1).count();
    assert!(unk > 0, "test words unseen in valid map to <unk>");
}

// ------------------------------------------------------------------- BPE

/// `tests/bpe/`: a byte-level BPE tokenizer trained with Hugging Face's
/// `tokenizers` package, and what that package encodes sample texts to
/// (`scripts/bpe_fixture.py`).
fn bpe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpe")
}

#[test]
fn bpe_encodes_and_decodes_as_hugging_face_tokenizers_does() {
    let bpe = memlab_tasks::Bpe::read(&bpe_dir().join("tokenizer.json")).unwrap();
    let sample: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bpe_dir().join("sample.json")).unwrap())
            .unwrap();
    assert_eq!(
        bpe.vocab_size() as u64,
        sample["vocab_size"].as_u64().unwrap()
    );
    for case in sample["samples"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(bpe.encode(text).unwrap(), want, "{text:?}");
        // Token by token, as `memlab generate` streams them, the bytes
        // add up to the text (characters split over tokens included).
        let bytes: Vec<u8> = want
            .iter()
            .flat_map(|&id| bpe.token_bytes(id as i64))
            .collect();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            case["decoded"].as_str().unwrap()
        );
    }
}

#[test]
fn a_bpe_task_reads_three_files_and_keeps_its_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let line = "Before we proceed any further, hear me speak.\n";
    let train = fixture(dir.path(), "train.txt", line.repeat(40).as_bytes());
    let valid = fixture(dir.path(), "valid.txt", line.repeat(5).as_bytes());
    let tokenizer = bpe_dir().join("tokenizer.json");
    let table = toml(format!(
        "kind = \"bpe\"\ntrain = \"{train}\"\nvalid = \"{valid}\"\ntest = \"{valid}\"\n\
         tokenizer = \"{}\"\nseq_len = 8",
        tokenizer.display()
    ));
    let task = build_task(&table, 0).unwrap();
    assert_eq!(task.vocab_size(), 400);
    assert_eq!(task.metric(), Metric::Perplexity);
    let per_line = memlab_tasks::Bpe::read(&tokenizer)
        .unwrap()
        .encode(line)
        .unwrap()
        .len();
    let batch = task.batch(Split::Train, 0, 2);
    assert_eq!(batch.len, 8);
    assert!(batch.inputs.iter().all(|&id| (0..400).contains(&id)));
    // The streams are the encoded file: 40 lines in 2 streams of 20.
    let streams = task.batches(Split::Train, 2).unwrap() as usize;
    assert_eq!(streams, (20 * per_line - 1).div_ceil(8));
    let artifacts = task.artifacts();
    assert_eq!(artifacts[0].0, "tokenizer.json");
    assert_eq!(artifacts[0].1, std::fs::read_to_string(&tokenizer).unwrap());
    let codec = task.codec().unwrap();
    let ids = codec.encode("hear me speak.").unwrap();
    let text: Vec<u8> = ids.iter().flat_map(|&id| codec.decode(id)).collect();
    assert_eq!(text, b"hear me speak.");
}

#[test]
fn a_missing_or_broken_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = fixture(dir.path(), "c.txt", b"some words here\n");
    let task = |tokenizer: &str| {
        build_task(
            &toml(format!(
                "kind = \"bpe\"\ntrain = \"{corpus}\"\nvalid = \"{corpus}\"\ntest = \"{corpus}\"\n\
                 tokenizer = \"{tokenizer}\""
            )),
            0,
        )
    };
    let missing = dir.path().join("nope.json");
    let err = data_error(task(&missing.display().to_string()));
    assert!(
        err.contains("nope.json") && err.contains("no such data file"),
        "{err}"
    );
    let json = std::fs::read_to_string(bpe_dir().join("tokenizer.json")).unwrap();
    let broken = fixture(
        dir.path(),
        "broken.json",
        &json.as_bytes()[..json.len() / 2],
    );
    let err = data_error(task(&broken));
    assert!(err.contains("not a Hugging Face tokenizer.json"), "{err}");
    match build_task(&toml("kind = \"bpe\"\nvocab = \"x\"".into()), 0) {
        Err(TaskError::Config(e)) => assert_eq!(e.field, "task.vocab", "{e}"),
        Err(e) => panic!("{e}"),
        Ok(t) => panic!("accepted: {}", t.name()),
    }
}

fn toml(text: String) -> toml::Table {
    parse_toml(&text).unwrap()
}

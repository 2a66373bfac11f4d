//! The `memlab` binary end to end: train, kill, resume, eval, compare, and
//! the errors a user sees.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{memlab, run, text};

fn write_config(dir: &Path, name: &str, steps: usize, checkpoint_every: usize) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[run]
name = "{name}"
out_dir = "{}"
seed = 5
[task]
kind = "copy"
length = 4
vocab_size = 8
[train]
steps = {steps}
batch_size = 16
segment_len = 12
lr = 0.003
min_lr = 0.0001
warmup_steps = 5
log_every = 1
eval_batches = 2
checkpoint_every = {checkpoint_every}
[model]
arch = "baseline"
d_model = 32
n_heads = 2
d_ff = 64
dropout = 0.1
"#,
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn models_lists_the_registry() {
    let out = run(&["models"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("baseline"), "{stdout}");
    assert!(stdout.contains("copy"), "{stdout}");
}

#[test]
fn a_bad_config_value_is_reported_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "bad", 10, 0);
    let config = config.to_str().unwrap();
    for (set, field) in [
        ("model.n_heads=0", "model.n_heads"),
        ("model.n_heads=3", "model.d_model"),
        ("train.lr=-1", "train.lr"),
        ("task.length=0", "task.length"),
        ("model.arch=\"nope\"", "model.arch"),
        ("model.wings=2", "model.wings"),
    ] {
        let out = run(&["train", "--config", config, "--set", set]);
        assert_eq!(out.status.code(), Some(1), "{set}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(field), "{set}: {stderr}");
        assert!(!stderr.contains("panicked"), "{set}: {stderr}");
    }
    let out = run(&["train", "--config", "/no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/no/such/file.toml"));
}

#[test]
fn a_backend_that_was_not_compiled_in_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "cuda", 10, 0);
    let out = run(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--backend",
        "cuda",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--features cuda"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint_and_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 150;
    let config = write_config(dir.path(), "killed", steps, 10);
    let run_dir = dir.path().join("killed");
    let checkpoint = run_dir.join("checkpoint.mpk");

    // Start, wait for a checkpoint past the first, kill (SIGKILL: no cleanup).
    let mut child = memlab()
        .args(["train", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(120) {
        let metrics = run_dir.join("metrics.jsonl");
        let progressed = metrics.exists()
            && std::fs::read_to_string(&metrics)
                .unwrap_or_default()
                .lines()
                .count()
                >= 25;
        if checkpoint.exists() && progressed {
            child.kill().unwrap();
            killed = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait().unwrap();
    assert!(
        killed,
        "the run ended before it could be killed; make it longer"
    );

    // A half-written temporary checkpoint must never be read.
    std::fs::write(run_dir.join("checkpoint.mpk.tmp"), b"partial garbage").unwrap();

    let out = run(&["train", "--config", config.to_str().unwrap(), "--resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let resumed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("resumed from step "))
        .expect("the run says where it resumed")
        .trim()
        .parse()
        .unwrap();
    assert!(
        resumed >= 10 && resumed < steps && resumed.is_multiple_of(10),
        "{resumed}"
    );

    // Every training step is logged exactly once, in order.
    let metrics = jsonl(&run_dir.join("metrics.jsonl"));
    let train_steps: Vec<u64> = metrics
        .iter()
        .filter(|m| m["split"] == "train")
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(train_steps, (1..=steps as u64).collect::<Vec<_>>());

    // The same run without interruption reports the same figures.
    let whole = write_config(dir.path(), "whole", steps, 10);
    let out = run(&["train", "--config", whole.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reference = jsonl(&dir.path().join("whole/metrics.jsonl"));
    let strip = |ms: &[serde_json::Value]| -> Vec<String> {
        ms.iter()
            .map(|m| {
                let mut m = m.clone();
                m.as_object_mut().unwrap().remove("tokens_per_second");
                m.to_string()
            })
            .collect()
    };
    assert_eq!(strip(&metrics), strip(&reference));

    // eval reads the run directory back.
    let out = run(&["eval", "--run", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("at step {steps}")), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let final_valid = reference
        .iter()
        .rev()
        .find(|m| m["split"] == "valid")
        .unwrap();
    assert_eq!(report["eval"]["loss"], final_valid["loss"]);
}

#[test]
fn eval_of_a_directory_without_a_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["eval", "--run", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a memlab run directory"),
        "{}",
        text(&out.stderr)
    );
}

fn write_compare_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[run]
name = "{name}"
out_dir = "{}"
[task]
kind = "copy"
length = 2
vocab_size = 6
[train]
steps = 4
batch_size = 4
segment_len = 6
warmup_steps = 1
eval_batches = 1
checkpoint_every = 2
[compare]
seeds = [1, 2]
settings = [{{ label = "one", set = {{ "train.segment_len" = 6 }} }},
            {{ label = "three", set = {{ "train.segment_len" = 2 }} }}]
[[compare.models]]
arch = "baseline"
label = "small"
d_model = 16
n_heads = 2
d_ff = 16
[[compare.models]]
arch = "baseline"
label = "post-ln"
d_model = 16
n_heads = 2
d_ff = 16
pre_norm = false
"#,
            dir.display()
        ),
    )
    .unwrap();
    path
}

/// The figures of a compare.csv, without the throughput, heap and time
/// (which vary).
fn compare_figures(csv: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(csv).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    // Every column but the timings, found by name.
    let timing = ["tokens_per_second", "peak_heap_bytes", "seconds"];
    let kept: Vec<usize> = (0..header.len())
        .filter(|&i| !timing.contains(&header[i]))
        .collect();
    assert_eq!(kept.len() + timing.len(), header.len(), "{header:?}");
    text.lines()
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            kept.iter()
                .map(|&i| fields[i])
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// The matrix: 2 settings × 2 models × 2 seeds, tables of mean ± std, the
/// per-cell CSV, the summary CSV and the figure.
#[test]
fn compare_runs_a_matrix_of_seeds_and_writes_tables_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_compare_config(dir.path(), "cmp");
    let out = run(&["compare", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(mean ± std, 2 seeds) | one | three |"),
        "{stdout}"
    );
    for model in ["| small | ", "| post-ln | "] {
        assert!(stdout.contains(model), "{model} missing from\n{stdout}");
    }
    for row in [
        "| one | small | 1 |",
        "| one | post-ln | 1 |",
        "| three | small | 3 |",
        "| three | post-ln | 3 |",
    ] {
        assert!(stdout.contains(row), "{row} missing from\n{stdout}");
    }
    // Copy is scored on the generated answer: its columns are filled.
    assert!(
        stdout.contains("| generated accuracy |") && stdout.contains("| generated exact match |"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("—"),
        "a copy row lacks a generated figure:\n{stdout}"
    );
    let csv = std::fs::read_to_string(dir.path().join("cmp/compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "{csv}");
    let summary = std::fs::read_to_string(dir.path().join("cmp/summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 5, "{summary}");
    assert!(
        summary.lines().skip(1).all(|l| l.contains(",2,")),
        "{summary}"
    );
    let md = std::fs::read_to_string(dir.path().join("cmp/compare.md")).unwrap();
    assert!(md.contains("## Every cell"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("cmp/compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("post-ln") && svg.contains("segments"));
    let cell = dir.path().join("cmp/three-post-ln-seed2");
    assert!(cell.join("checkpoint.mpk").exists() && cell.join("cell.toml").exists());
    // One training-curve figure per setting, every (model, seed) a line.
    assert!(
        stdout.contains("compare.svg and 2 training-curve figures"),
        "{stdout}"
    );
    for (i, setting) in ["one", "three"].iter().enumerate() {
        let curves =
            std::fs::read_to_string(dir.path().join(format!("cmp/curves-{}.svg", i + 1))).unwrap();
        assert!(curves.contains(&format!(": {setting}")), "{curves}");
        for line in [
            "small, seed 1",
            "small, seed 2",
            "post-ln, seed 1",
            "post-ln, seed 2",
        ] {
            assert!(curves.contains(line), "curves-{}.svg lacks {line}", i + 1);
        }
        assert!(curves.contains("valid generated accuracy"), "{curves}");
    }

    // `memlab plot` draws the cells' training curves from their metrics.
    let plot = dir.path().join("curves.svg");
    let cmp_dir = dir.path().join("cmp");
    let out = run(&[
        "plot",
        "--run",
        cmp_dir.to_str().unwrap(),
        "--out",
        plot.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(8 runs)"),
        "{}",
        text(&out.stdout)
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("three-post-ln-seed2") && svg.contains("step"));
    let out = run(&[
        "plot",
        "--run",
        cell.to_str().unwrap(),
        "--field",
        "bpc",
        "--out",
        plot.to_str().unwrap(),
    ]);
    common::assert_fails_with(&out, "no `bpc`");

    // A bad model in the list is caught before anything trains.
    let bad = std::fs::read_to_string(&path)
        .unwrap()
        .replace("pre_norm = false", "pre_norm = 3");
    std::fs::write(&path, bad).unwrap();
    let out = run(&["compare", "--config", path.to_str().unwrap()]);
    common::assert_fails_with(&out, "compare.models[1]");
    assert!(text(&out.stderr).contains("model.pre_norm"));
}

/// A comparison killed in its first cell, run again, resumes that cell
/// from its checkpoint and trains the rest; run once more, it keeps them all; its
/// figures equal those of an uninterrupted comparison. A changed config is
/// refused, naming the field, until --fresh.
#[test]
fn an_interrupted_comparison_resumes_without_redoing_finished_cells() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_compare_config(dir.path(), "cmp");
    let config = path.to_str().unwrap();
    // Kill (no cleanup) when a cell finishes step 3 of 4: in the first
    // cell. Checkpoints are written every 2 steps.
    let out = memlab()
        .args(["compare", "--config", config])
        .env("MEMLAB_TEST_ABORT_AFTER_STEP", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let first = dir.path().join("cmp/one-small-seed1");
    assert!(first.join("checkpoint.mpk").exists() && !first.join("cell.toml").exists());

    let out = run(&["compare", "--config", config]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("resumed and done: one / small / seed 1"),
        "{stderr}"
    );
    let trained = stderr.lines().filter(|l| l.starts_with("done: ")).count();
    assert_eq!(trained, 7, "{stderr}");

    // Again: every cell is kept, nothing trains.
    let metrics = std::fs::read_to_string(first.join("metrics.jsonl")).unwrap();
    let out = run(&["compare", "--config", config]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("kept (finished before)").count(),
        8,
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(first.join("metrics.jsonl")).unwrap(),
        metrics
    );

    // The same comparison, never interrupted, in another directory.
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = write_compare_config(clean_dir.path(), "cmp");
    let out = run(&["compare", "--config", clean.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        compare_figures(&dir.path().join("cmp/compare.csv")),
        compare_figures(&clean_dir.path().join("cmp/compare.csv"))
    );

    // Another config over the same cells: refused, naming the field.
    let out = run(&["compare", "--config", config, "--set", "train.steps=5"]);
    common::assert_fails_with(&out, "`train.steps` differs");
    assert!(text(&out.stderr).contains("--fresh"));
    let out = run(&[
        "compare",
        "--config",
        config,
        "--set",
        "train.steps=5",
        "--fresh",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A word-level run end to end: the vocabulary is saved with the run, the
/// metric is perplexity = exp(loss), and `eval` rebuilds the same task.
#[test]
fn a_word_level_run_saves_its_vocabulary_and_reports_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(&format!(
            "the cat {} sat on the mat\n",
            ["red", "old", "big"][i % 3]
        ));
    }
    std::fs::write(&corpus, &lines).unwrap();
    let config = dir.path().join("words.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[run]
name = "words"
out_dir = "{out}"
seed = 2
[task]
kind = "words"
train = "{c}"
valid = "{c}"
test = "{c}"
seq_len = 16
[train]
steps = 40
batch_size = 4
segment_len = 8
lr = 0.01
warmup_steps = 5
eval_batches = 3
[model]
arch = "transformer-xl"
d_model = 16
n_heads = 2
d_ff = 32
mem_len = 8
"#,
            out = dir.path().display(),
            c = corpus.display()
        ),
    )
    .unwrap();
    let out = run(&["train", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_dir = dir.path().join("words");
    let vocab = std::fs::read_to_string(run_dir.join("vocab.txt")).unwrap();
    assert_eq!(
        vocab.lines().collect::<Vec<_>>(),
        [
            "<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "red", "old", "big"
        ]
    );
    let valid = jsonl(&run_dir.join("metrics.jsonl"))
        .into_iter()
        .rfind(|v| v["split"] == "valid")
        .unwrap();
    assert_eq!(valid["metric"], "perplexity");
    let (loss, value) = (
        valid["loss"].as_f64().unwrap(),
        valid["value"].as_f64().unwrap(),
    );
    assert!((value - loss.exp()).abs() < 1e-9 * value.max(1.0));
    assert!(value < 10.0, "perplexity {value} over a 10-word vocabulary");
    let out = run(&[
        "eval",
        "--run",
        run_dir.to_str().unwrap(),
        "--split",
        "test",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("perplexity"),
        "{}",
        text(&out.stdout)
    );

    // Generation from the word-level run: the prompt, then words of the
    // vocabulary, greedy and reproducible.
    let generate_with = |seed: &str, temperature: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--run",
            run_dir.to_str().unwrap(),
            "--prompt",
            "the cat",
            "--tokens",
            "12",
            "--temperature",
            temperature,
            "--seed",
            seed,
        ];
        args.extend(extra);
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let generate = |seed: &str, temperature: &str| generate_with(seed, temperature, &[]);
    let greedy = generate("1", "0");
    assert!(greedy.starts_with("the cat"), "{greedy}");
    let words: Vec<&str> = greedy["the cat".len()..].split_whitespace().collect();
    assert!(!words.is_empty(), "{greedy}");
    for w in &words {
        assert!(
            vocab.lines().any(|v| v == *w),
            "{w:?} is not in the vocabulary"
        );
    }
    assert_eq!(greedy, generate("2", "0"), "greedy ignores the seed");
    // Re-reading the partial segment for every token gives the same text.
    assert_eq!(
        generate_with("1", "0", &["--re-read"]),
        greedy,
        "--re-read changes the text"
    );
    assert_eq!(generate("3", "1.0"), generate("3", "1.0"), "a seed repeats");
}

/// `memlab generate` on a byte-level model trained on Tiny Shakespeare
/// (the shared corpus): streams the prompt and the requested number of
/// bytes, reports tokens/s, and refuses a run that is not a text run.
#[test]
fn generate_streams_text_from_a_byte_level_run() {
    let Some(data) = std::env::var_os("MEMLAB_DATA_DIR") else {
        eprintln!("skipped: set MEMLAB_DATA_DIR to the shared data directory");
        return;
    };
    if !Path::new(&data).join("tinyshakespeare.txt").is_file() {
        eprintln!("skipped: no tinyshakespeare.txt in MEMLAB_DATA_DIR");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bytes.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[run]
name = "bytes"
out_dir = "{}"
seed = 3
[task]
kind = "bytes"
path = "tinyshakespeare.txt"
seq_len = 32
[train]
steps = 30
batch_size = 8
segment_len = 16
lr = 0.003
warmup_steps = 3
eval_batches = 2
[model]
arch = "rmt"
preset = "paper"
num_mem_tokens = 2
d_model = 32
n_heads = 2
d_ff = 64
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let out = run(&["train", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_dir = dir.path().join("bytes");
    let prompt = "ROMEO:\nWhat light through yonder window";
    let out = run(&[
        "generate",
        "--run",
        run_dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--tokens",
        "40",
        "--top-k",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The prompt, 40 generated bytes and a final newline.
    assert_eq!(
        out.stdout.len(),
        prompt.len() + 40 + 1,
        "{}",
        text(&out.stdout)
    );
    assert!(out.stdout.starts_with(prompt.as_bytes()));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("40 tokens") && stderr.contains("tokens/s"),
        "{stderr}"
    );

    // A prompt file works the same; a run of a synthetic task is refused.
    let prompt_file = dir.path().join("prompt.txt");
    std::fs::write(&prompt_file, "KING:").unwrap();
    let out = run(&[
        "generate",
        "--run",
        run_dir.to_str().unwrap(),
        "--prompt-file",
        prompt_file.to_str().unwrap(),
        "--tokens",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.starts_with(b"KING:"));
    let copy = write_config(dir.path(), "copyrun", 6, 0);
    assert!(
        run(&["train", "--config", copy.to_str().unwrap()])
            .status
            .success()
    );
    let out = run(&[
        "generate",
        "--run",
        dir.path().join("copyrun").to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("needs a text run"),
        "{}",
        text(&out.stderr)
    );
}

fn write_bench_config(dir: &Path, extra_model: &str) -> PathBuf {
    let path = dir.join("bench.toml");
    let mut text = format!(
        r#"
[bench]
name = "tiny"
out_dir = "{}"
batch_size = 2
segment_len = 8
vocab_size = 16
warmup = 1
iters = 2
min_seconds = 0.0
carried = [1, 3]
full_attention = [8, 32]
generate = 12
"#,
        dir.display()
    );
    for arch in [
        "baseline",
        "transformer-xl",
        "rmt",
        "infinity-former",
        "memformer",
    ] {
        let extra = match arch {
            "transformer-xl" => "mem_len = 8\n",
            "rmt" => "num_mem_tokens = 2\n",
            "infinity-former" => "mem_len = 8\nnum_basis = 8\nnum_samples = 8\n",
            "memformer" => "n_encoder_layers = 1\nn_decoder_layers = 1\nnum_slots = 2\n",
            _ => "n_layers = 1\npositions = \"sinusoidal\"\n",
        };
        text.push_str(&format!(
            "[[bench.models]]\narch = \"{arch}\"\nd_model = 16\nn_heads = 2\nd_ff = 32\n{extra}"
        ));
    }
    text.push_str(extra_model);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bench_measures_every_model_and_writes_tables_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_bench_config(dir.path(), "");
    let out = run(&["bench", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_dir = dir.path().join("tiny");

    let csv = std::fs::read_to_string(run_dir.join("bench.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let archs: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(
        archs,
        [
            "baseline",
            "transformer-xl",
            "rmt",
            "infinity-former",
            "memformer"
        ]
    );
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for r in &rows {
        for name in [
            "forward_tokens_per_s",
            "train_tokens_per_s",
            "flops_per_token",
        ] {
            let v: f64 = r[col(name)].parse().unwrap();
            assert!(v.is_finite() && v > 0.0, "{}: {name} = {v}", r[0]);
        }
        // The binary counts its heap: the peak holds at least the parameters
        // and AdamW's two moments, in f32.
        let peak: u64 = r[col("peak_memory_bytes")].parse().unwrap();
        let params: u64 = r[col("parameters")].parse().unwrap();
        assert!(
            peak >= 3 * 4 * params,
            "{}: peak {peak} B for {params} parameters",
            r[0]
        );
        // The median between the interquartile range's ends, over the
        // `iters` timed calls (min_seconds = 0 asks for no more).
        for phase in ["forward", "train"] {
            let at = |suffix: &str| -> f64 {
                r[col(&format!("{phase}_tokens_per_s{suffix}"))]
                    .parse()
                    .unwrap()
            };
            assert!(at("_low") <= at("") && at("") <= at("_high"), "{}", r[0]);
            assert_eq!(r[col(&format!("{phase}_calls"))], "2", "{}", r[0]);
        }
        // Achieved FLOP/s = FLOPs/token × tokens/s.
        let fwd: f64 = r[col("forward_flops_per_s")].parse().unwrap();
        let tps: f64 = r[col("forward_tokens_per_s")].parse().unwrap();
        let fpt: f64 = r[col("flops_per_token")].parse().unwrap();
        assert!((fwd - tps * fpt).abs() <= 1e-6 * fwd);
    }

    // Scaling: every model after 1 and 3 segments (16 and 32 tokens), and
    // full attention over 8 and 32.
    let scaling = std::fs::read_to_string(run_dir.join("scaling.csv")).unwrap();
    let lens: Vec<(String, usize)> = scaling
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(lens.len(), 5 * 2 + 2);
    assert!(lens.contains(&("memformer".to_string(), 32)));
    assert!(lens.contains(&("full attention (baseline)".to_string(), 32)));

    let svg = std::fs::read_to_string(run_dir.join("scaling.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("full attention (baseline)"));
    let md = std::fs::read_to_string(run_dir.join("bench.md")).unwrap();
    assert!(md.contains("| infinity-former | flex | 2×8 |"), "{md}");

    // Generation: 12 tokens (across a segment boundary) per call, the same
    // tokens with and without the incremental stream, which every model
    // reads incrementally.
    let generation = std::fs::read_to_string(run_dir.join("generation.csv")).unwrap();
    let header: Vec<&str> = generation.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = generation
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let incremental: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[col("arch")], r[col("incremental")]))
        .collect();
    assert_eq!(
        incremental,
        [
            ("baseline", "true"),
            ("transformer-xl", "true"),
            ("rmt", "true"),
            ("infinity-former", "true"),
            ("memformer", "true"),
        ]
    );
    for r in &rows {
        assert_eq!(r[col("same_tokens")], "true", "{}", r[0]);
        assert_eq!(r[col("tokens")], "12", "{}", r[0]);
        for name in ["tokens_per_s", "re_read_tokens_per_s", "speedup"] {
            let v: f64 = r[col(name)].parse().unwrap();
            assert!(v.is_finite() && v > 0.0, "{}: {name} = {v}", r[0]);
        }
    }
    assert!(md.contains("| re-read tokens/s |"), "{md}");
}

#[test]
fn bench_config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad_model =
        "[[bench.models]]\narch = \"rmt\"\nnum_mem_tokens = 0\nmemory_loss_weight = 0.5\n";
    let config = write_bench_config(dir.path(), bad_model);
    let out = run(&["bench", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("model.memory_loss_weight") && stderr.contains("bench.models[5]"),
        "{stderr}"
    );

    let config = write_bench_config(dir.path(), "");
    for (set, field) in [
        ("bench.itres=3", "bench.itres"),
        ("bench.iters=0", "bench.iters"),
        ("bench.min_seconds=-1", "bench.min_seconds"),
        ("bench.full_attention=[0]", "bench.full_attention[0]"),
    ] {
        let out = run(&["bench", "--config", config.to_str().unwrap(), "--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            text(&out.stderr).contains(field),
            "{set}: {}",
            text(&out.stderr)
        );
    }
    if !cfg!(feature = "cuda") {
        let out = run(&[
            "bench",
            "--config",
            config.to_str().unwrap(),
            "--backend",
            "cuda",
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("--features cuda"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// Every config of configs/paper/ and configs/held-out/ plans as written:
/// it parses, its tasks build (text corpora from $MEMLAB_DATA_DIR), every
/// model is checked against its task, and `--dry-run` lists its cells (at
/// least 3 seeds each) without training. A config without `[compare]` is a first step
/// (the GPT-2 that the fine-tuning comparison starts from): it trains for
/// one step and is exported as its header says, and the comparisons that
/// start from it (`init_from = "runs/..."`) plan from that folder. Each
/// runs from the repository's root, as its header's command does.
#[test]
fn every_paper_config_plans_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // configs/paper/ and its folders (learnable/: the searches), and
    // configs/held-out/ (the same comparisons on data no matrix trained on).
    let mut configs: Vec<PathBuf> = Vec::new();
    let mut folders = vec![root.join("configs/paper"), root.join("configs/held-out")];
    while let Some(folder) = folders.pop() {
        for path in std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().path())
        {
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                configs.push(path);
            }
        }
    }
    // First steps first.
    let is_step = |p: &PathBuf| !std::fs::read_to_string(p).unwrap().contains("\n[compare]");
    configs.sort_by_key(|p| (!is_step(p), p.clone()));
    assert!(configs.len() >= 8, "{configs:?}");
    let data = std::env::var_os("MEMLAB_DATA_DIR");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().display().to_string();
    let set_out = format!("run.out_dir={out}");
    let at_root = |args: &[&str]| {
        memlab()
            .current_dir(&root)
            .args(args)
            .output()
            .expect("memlab runs")
    };
    for config in &configs {
        let body = std::fs::read_to_string(config).unwrap();
        let text_task = body
            .lines()
            .any(|l| l == "kind = \"bytes\"" || l == "kind = \"words\"" || l == "kind = \"bpe\"");
        if text_task && data.is_none() {
            eprintln!(
                "skipped {}: set MEMLAB_DATA_DIR to the shared data directory",
                config.display()
            );
            continue;
        }
        // The path from the repository's root, as a reader types it.
        let file = config.strip_prefix(&root).unwrap().to_str().unwrap();
        assert!(
            body.contains(&format!("--config {file}")),
            "{} does not give the command that runs it",
            config.display()
        );
        if is_step(config) {
            let run = at_root(&[
                "train",
                "--config",
                config.to_str().unwrap(),
                "--set",
                &set_out,
                "--set",
                "train.steps=1",
                "--set",
                "train.warmup_steps=0",
                "--set",
                "train.eval_batches=1",
            ]);
            assert!(
                run.status.success(),
                "{}: {}",
                config.display(),
                text(&run.stderr)
            );
            // `export --run runs/NAME --to hf --out runs/NAME/hf`, into the
            // temporary out_dir.
            let name = body
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap();
            if body.contains("--to hf") {
                let export = at_root(&[
                    "export",
                    "--run",
                    &format!("{out}/{name}"),
                    "--to",
                    "hf",
                    "--out",
                    &format!("{out}/{name}/hf"),
                ]);
                assert!(export.status.success(), "{}", text(&export.stderr));
            }
            continue;
        }
        // A comparison from a first step's folder plans from ours.
        let planned = out_dir.path().join(file.replace('/', "-"));
        std::fs::write(
            &planned,
            body.replace("init_from = \"runs/", &format!("init_from = \"{out}/")),
        )
        .unwrap();
        let run = at_root(&[
            "compare",
            "--config",
            planned.to_str().unwrap(),
            "--dry-run",
            "--set",
            &set_out,
        ]);
        let stdout = text(&run.stdout);
        assert!(
            run.status.success(),
            "{}: {}",
            config.display(),
            text(&run.stderr)
        );
        let summary = stdout.lines().rfind(|l| !l.is_empty()).unwrap();
        let cells: usize = summary.split(' ').next().unwrap().parse().unwrap();
        assert!(
            summary.ends_with(&format!("0 finished, 0 interrupted, {cells} to train")),
            "{}: {summary}",
            config.display()
        );
        let doc: toml::Table = toml::from_str(&body).unwrap();
        let seeds = doc["compare"]
            .get("seeds")
            .and_then(|s| s.as_array())
            .map_or(0, |s| s.len());
        assert!(seeds >= 3, "{}: fewer than 3 seeds", config.display());
    }
}

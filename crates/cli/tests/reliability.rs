//! Runs that cannot be lost or silently wrong, tried through the binary as a
//! user meets them: exact resume after an abrupt end at any step (every
//! architecture, a text task and a synthetic one), run folders that are
//! never mixed or shared, the NaN guard, checked checkpoints, clear errors
//! where output cannot be written or a model cannot fit. docs/reliability.md
//! lists what each test shows.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{assert_fails_with, corpus, experiment, memlab, run, text};

/// A config of `arch` (small sizes, dropout on) on `task`.
fn config(dir: &Path, name: &str, task: &str, model: &str, steps: usize) -> PathBuf {
    let train = format!(
        "steps = {steps}\nbatch_size = 4\nsegment_len = 8\nlr = 0.003\nwarmup_steps = 2\n\
         log_every = 1\neval_every = 4\neval_batches = 1\ncheckpoint_every = 5"
    );
    experiment(dir, name, 9, task, &train, model)
}

/// A small baseline on the copy task.
fn baseline_copy(dir: &Path, name: &str, steps: usize) -> PathBuf {
    config(
        dir,
        name,
        &copy_task(),
        "arch = \"baseline\"\nd_model = 16\nn_heads = 2\nd_ff = 32",
        steps,
    )
}

fn copy_task() -> String {
    "[task]\nkind = \"copy\"\nlength = 5\nvocab_size = 8".into()
}

fn bytes_task(corpus: &Path) -> String {
    format!(
        "[task]\nkind = \"bytes\"\npath = \"{}\"\nseq_len = 16",
        corpus.display()
    )
}

/// Every metric but the timing.
fn metrics(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_second");
            v.to_string()
        })
        .collect()
}

/// The two logs are the same; else the first line that differs.
fn assert_same_metrics(run: &Path, reference: &[String], what: &str) {
    let got = metrics(run);
    if let Some((i, (a, b))) = got
        .iter()
        .zip(reference)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!("{what}: metrics line {i} differs:\n  {a}\n  {b}");
    }
    assert_eq!(got.len(), reference.len(), "{what}: metrics lines");
}

const MODELS: [(&str, &str); 5] = [
    ("baseline", "arch = \"baseline\""),
    ("transformer-xl", "arch = \"transformer-xl\"\nmem_len = 8"),
    (
        "rmt",
        "arch = \"rmt\"\nbackbone = \"transformer-xl\"\nmem_len = 4\nnum_mem_tokens = 2",
    ),
    ("infinity-former", "arch = \"infinity-former\"\nmem_len = 4"),
    ("memformer", "arch = \"memformer\""),
];

#[test]
fn a_run_ended_abruptly_at_any_step_resumes_to_the_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    for (arch, model) in MODELS {
        let model = format!("{model}\nd_model = 16\nn_heads = 2\nd_ff = 32\ndropout = 0.1");
        for (task_name, task) in [("bytes", bytes_task(&corpus)), ("copy", copy_task())] {
            let name = format!("{arch}-{task_name}");
            let cfg = config(dir.path(), &name, &task, &model, 13);
            let cfg = cfg.to_str().unwrap();
            let run_dir = dir.path().join(&name);
            let whole = run(&["train", "--config", cfg]);
            assert!(whole.status.success(), "{name}: {}", text(&whole.stderr));
            let reference_metrics = metrics(&run_dir);
            let reference_checkpoint = std::fs::read(run_dir.join("checkpoint.mpk")).unwrap();

            // The same run, ended abruptly after step 8 (its last
            // checkpoint is step 5's), then resumed.
            let killed = memlab()
                .args(["train", "--config", cfg, "--overwrite"])
                .env("MEMLAB_TEST_ABORT_AFTER_STEP", "8")
                .output()
                .unwrap();
            assert!(!killed.status.success(), "{name}: the run was not ended");
            assert_eq!(
                metrics(&run_dir).len(),
                8 + 2,
                "{name}: 8 steps and 2 evaluations logged"
            );
            let resumed = run(&["train", "--config", cfg, "--resume"]);
            assert!(
                resumed.status.success(),
                "{name}: {}",
                text(&resumed.stderr)
            );
            assert!(
                text(&resumed.stdout).contains("resumed from step 5"),
                "{name}"
            );
            assert_same_metrics(&run_dir, &reference_metrics, &name);
            assert!(
                std::fs::read(run_dir.join("checkpoint.mpk")).unwrap() == reference_checkpoint,
                "{name}: the final checkpoint differs from the uninterrupted run's"
            );
        }
    }
}

/// The stopping rule (`train.flat_evals`): with `flat_delta = 1` no
/// accuracy can improve on the first evaluation (step 4), so the run is
/// flat after two more, at step 12 of its 200, by hand. It stops there,
/// evaluated once; resumed, it stays stopped; and a run ended abruptly
/// after step 9 (its checkpoint: step 5, one evaluation behind it)
/// rebuilds the rule from its log and stops at the same step, line for line.
#[test]
fn the_stopping_rule_ends_a_flat_run_where_it_says_also_after_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "flat", 200);
    let text_of = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text_of.replace("[train]\n", "[train]\nflat_evals = 2\nflat_delta = 1.0\n"),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let run_dir = dir.path().join("flat");
    let whole = run(&["train", "--config", cfg]);
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    assert!(
        text(&whole.stdout).contains("12 steps on flex (stopped: flat for 2 evaluations)"),
        "{}",
        text(&whole.stdout)
    );
    let reference = metrics(&run_dir);
    let steps_of = |split: &str| -> Vec<u64> {
        reference
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["split"] == split)
            .map(|v| v["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps_of("valid"), [4, 8, 12]);
    assert_eq!(steps_of("train"), (1..=12).collect::<Vec<_>>());

    let again = run(&["train", "--config", cfg, "--resume"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("resumed from step 12"));
    assert!(text(&again.stdout).contains("12 steps on flex (stopped"));
    assert_same_metrics(&run_dir, &reference, "resumed after the stop");

    let killed = memlab()
        .args(["train", "--config", cfg, "--overwrite"])
        .env("MEMLAB_TEST_ABORT_AFTER_STEP", "9")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the run was not ended");
    let resumed = run(&["train", "--config", cfg, "--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(text(&resumed.stdout).contains("resumed from step 5"));
    assert_same_metrics(&run_dir, &reference, "resumed before the stop");

    let bad = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("eval_every = 4", "eval_every = 0");
    std::fs::write(cfg, bad).unwrap();
    assert_fails_with(
        &run(&["train", "--config", cfg, "--overwrite"]),
        "flat_evals",
    );
}

#[test]
fn the_process_can_be_killed_at_any_moment_and_resumed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let model = "arch = \"transformer-xl\"\nmem_len = 8\nd_model = 16\nn_heads = 2\nd_ff = 32";
    let cfg = config(dir.path(), "xl", &bytes_task(&corpus), model, 400);
    let cfg = cfg.to_str().unwrap();
    let run_dir = dir.path().join("xl");
    assert!(run(&["train", "--config", cfg]).status.success());
    let reference = metrics(&run_dir);
    let reference_checkpoint = std::fs::read(run_dir.join("checkpoint.mpk")).unwrap();

    // SIGKILL once it has checkpointed a few times, wherever it is.
    std::fs::remove_dir_all(&run_dir).unwrap();
    let mut child = memlab()
        .args(["train", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let logged = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .map(|m| m.lines().count())
            .unwrap_or(0);
        if logged >= 60 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = run(&["train", "--config", cfg, "--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_same_metrics(&run_dir, &reference, "killed");
    assert!(std::fs::read(run_dir.join("checkpoint.mpk")).unwrap() == reference_checkpoint);
}

#[test]
fn run_folders_are_never_mixed_shared_or_relabelled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "r", 10);
    let cfg = cfg.to_str().unwrap();

    // --resume on a run that does not exist.
    assert_fails_with(
        &run(&["train", "--config", cfg, "--resume"]),
        "holds no checkpoint",
    );
    assert!(run(&["train", "--config", cfg]).status.success());
    let before = std::fs::read(dir.path().join("r/checkpoint.mpk")).unwrap();

    // Training again without --resume or --overwrite leaves the run alone.
    assert_fails_with(
        &run(&["train", "--config", cfg, "--set", "run.seed=2"]),
        "--overwrite",
    );
    assert_eq!(
        std::fs::read(dir.path().join("r/checkpoint.mpk")).unwrap(),
        before
    );
    // --overwrite replaces all of it.
    let out = run(&[
        "train",
        "--config",
        cfg,
        "--set",
        "run.seed=2",
        "--overwrite",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(
        std::fs::read(dir.path().join("r/checkpoint.mpk")).unwrap(),
        before
    );
    let saved = std::fs::read_to_string(dir.path().join("r/config.toml")).unwrap();
    assert!(saved.contains("seed = 2"));
    assert_eq!(metrics(&dir.path().join("r")).len(), 10 + 2 + 1);

    // Resuming a finished run re-reports it and logs nothing twice.
    let logged = metrics(&dir.path().join("r"));
    let out = run(&["train", "--config", cfg, "--resume", "--set", "run.seed=2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(metrics(&dir.path().join("r")), logged);

    // Resuming to fewer steps than the run has taken.
    let out = run(&[
        "train",
        "--config",
        cfg,
        "--resume",
        "--set",
        "run.seed=2",
        "--set",
        "train.steps=6",
    ]);
    assert_fails_with(&out, "fewer steps");

    // run.name = "." would write into the shared parent folder.
    let out = run(&["train", "--config", cfg, "--set", "run.name=\".\""]);
    assert_fails_with(&out, "run.name");
}

#[test]
fn a_second_training_of_the_same_run_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "busy", 100_000);
    let cfg = cfg.to_str().unwrap();
    let mut first = memlab()
        .args(["train", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = dir.path().join("busy/checkpoint.mpk");
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the first run did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = run(&["train", "--config", cfg, "--resume"]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_fails_with(&second, "another memlab process is training");
    // Once the first is gone (killed: the lock goes with it), resuming works.
    let out = run(&[
        "train",
        "--config",
        cfg,
        "--resume",
        "--set",
        "train.steps=6",
    ]);
    assert!(
        out.status.success() || text(&out.stderr).contains("fewer steps"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "nan", 10);
    let cfg = cfg.to_str().unwrap();
    let out = run(&["train", "--config", cfg, "--set", "model.init_std=1e30"]);
    assert_fails_with(&out, "of step 1 is not finite");
    assert!(
        !dir.path().join("nan/checkpoint.mpk").exists(),
        "a NaN checkpoint was written"
    );

    for line in std::fs::read_to_string(dir.path().join("nan/metrics.jsonl"))
        .unwrap()
        .lines()
    {
        assert!(
            !line.contains("null"),
            "a non-finite figure was logged: {line}"
        );
    }
}

#[test]
fn a_checkpoint_that_was_changed_or_a_config_that_was_edited_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "c", 6);
    assert!(
        run(&["train", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    let run_dir = dir.path().join("c");
    let run_str = run_dir.to_str().unwrap();
    let path = run_dir.join("checkpoint.mpk");
    let good = std::fs::read(&path).unwrap();
    assert!(run(&["eval", "--run", run_str]).status.success());

    // Flipped bytes anywhere in the file are refused, never evaluated.
    for at in (0..12).map(|i| good.len() * (2 * i + 1) / 24) {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let out = run(&["eval", "--run", run_str]);
        assert_fails_with(&out, "checkpoint");
    }
    std::fs::write(&path, &good).unwrap();

    // An edit that keeps every weight's shape (2 heads → 1) is refused.
    let config_path = run_dir.join("config.toml");
    let saved = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, saved.replace("n_heads = 2", "n_heads = 1")).unwrap();
    assert_fails_with(&run(&["eval", "--run", run_str]), "another [model]");
}

#[test]
fn output_that_cannot_be_written_ends_cleanly() {
    // A full disk is an error, not a panic.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = memlab().arg("models").stdout(full).output().unwrap();
        assert_fails_with(&out, "standard output");
    }
    // A closed pipe (`| head -1`) ends quietly.
    let mut child = memlab()
        .arg("models")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_model_too_large_for_the_machine_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "big", 6);
    for model in ["baseline", "transformer-xl"] {
        let out = run(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            &format!("model.arch=\"{model}\""),
            "--set",
            "model.d_model=1000000000",
        ]);
        assert_fails_with(&out, "GiB available");
    }
}

#[test]
fn small_silent_errors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = baseline_copy(dir.path(), "s", 6);
    let cfg = cfg.to_str().unwrap();
    assert!(run(&["train", "--config", cfg]).status.success());
    let run_dir = dir.path().join("s");
    let run_str = run_dir.to_str().unwrap();
    let out = run(&["eval", "--run", run_str, "--batches", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("at least 1"));

    // tokens/s counts the tokens read, not the configured length.
    let corpus = dir.path().join("small.txt");
    std::fs::write(
        &corpus,
        "a short corpus of a few hundred bytes. ".repeat(12),
    )
    .unwrap();
    let long = config(
        dir.path(),
        "long",
        &format!(
            "[task]\nkind = \"bytes\"\npath = \"{}\"\nseq_len = 1000000000000",
            corpus.display()
        ),
        "arch = \"baseline\"\nd_model = 16\nn_heads = 2\nd_ff = 32",
        3,
    );
    let out = run(&["train", "--config", long.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let tps: f64 = stdout
        .split("; train ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("tokens/s is printed: {stdout}"));
    assert!(tps < 1e8, "{tps} tokens/s");

    // A directory given as a data file.
    let as_dir = config(
        dir.path(),
        "dir",
        &format!(
            "[task]\nkind = \"bytes\"\npath = \"{}\"\nseq_len = 16",
            dir.path().display()
        ),
        "arch = \"baseline\"",
        3,
    );
    assert_fails_with(
        &run(&["train", "--config", as_dir.to_str().unwrap()]),
        "is a directory",
    );

    // --peak-tflops must be a number above 0.
    for bad in ["0", "nan", "-3"] {
        let out = run(&["bench", "--config", cfg, &format!("--peak-tflops={bad}")]);
        assert_fails_with(&out, "--peak-tflops");
    }

    // A config without [run] and [train] says which defaults it takes.
    let bare = dir.path().join("bare.toml");
    std::fs::write(
        &bare,
        "[task]\nkind = \"copy\"\nlength = 3\nvocab_size = 6\n[model]\narch = \"baseline\"\nd_model = 16\nn_heads = 2\nd_ff = 32\n",
    )
    .unwrap();
    let out = memlab()
        .args([
            "train",
            "--config",
            bare.to_str().unwrap(),
            "--set",
            "train.steps=2",
            "--set",
            "train.warmup_steps=0",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has no [run] section; using its defaults: name = \"run\""),
        "{stderr}"
    );
    assert!(stderr.contains("has no [train] section"), "{stderr}");

    // eval's --split names every split it takes.
    let help = text(&run(&["eval", "--help"]).stdout);
    assert!(help.contains("valid, test or train"), "{help}");
}

//! What the binary's integration tests share: running `memlab` and reading
//! what it printed.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn memlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memlab"))
}

pub fn run(args: &[&str]) -> Output {
    memlab().args(args).output().expect("memlab runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit status 1 with `needle` in the error, and no panic.
pub fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A small byte-level corpus in `dir`.
pub fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    let body: String = (0..300)
        .map(|i| format!("{i}: a stream of words, {} of them, for memory.\n", i % 11))
        .collect();
    std::fs::write(&path, body).unwrap();
    path
}

/// Writes `dir/<name>.toml`: the run `name` in `dir` with `seed`, and the
/// given `[task]` table (with its header), `[train]` and `[model]` fields.
pub fn experiment(
    dir: &Path,
    name: &str,
    seed: u64,
    task: &str,
    train: &str,
    model: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[run]\nname = \"{name}\"\nout_dir = \"{}\"\nseed = {seed}\n{task}\n[train]\n{train}\n[model]\n{model}\n",
        dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

//! What the binary's integration tests share: running `memlab` and reading
//! what it printed.
#![allow(dead_code)] // each test file uses its own part

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

//! memlab-tasks: the tasks models are trained and compared on. Every
//! generator is seeded and deterministic: batch `(split, index)` of a task
//! built with the same config and seed is always the same.
//!
//! A task is chosen by the `kind` key of the `[task]` table.

pub mod copy;
mod rng;

use memlab_core::Task;
use memlab_core::config::{ConfigError, parse_section, take_tag};

pub use copy::{CopyConfig, CopyTask};

/// Names of the task kinds, for error messages and `memlab models`.
pub const KINDS: &[&str] = &["copy"];

/// Builds the task a `[task]` table describes, seeded with `seed`.
pub fn build_task(table: &toml::Table, seed: u64) -> Result<Box<dyn Task>, ConfigError> {
    let (kind, fields) = take_tag(table.clone(), "kind", "task")?;
    let fields = toml::Value::Table(fields);
    match kind.as_str() {
        "copy" => Ok(Box::new(CopyTask::new(
            parse_section(fields, "task")?,
            seed,
        ))),
        other => Err(ConfigError::new(
            "task.kind",
            format!("unknown task {other:?}; known: {}", KINDS.join(", ")),
        )),
    }
}

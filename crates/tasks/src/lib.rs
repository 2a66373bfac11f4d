//! memlab-tasks: the tasks models are trained and compared on. Every
//! generator is seeded and deterministic: batch `(split, index)` of a task
//! built with the same config and seed is always the same. docs/tasks.md
//! shows each format with an example.
//!
//! A task is chosen by the `kind` key of the `[task]` table.

pub mod copy;
pub mod quadratic;
pub mod retrieval;
mod rng;
pub mod sorting;
pub mod text;

use memlab_core::Task;
use memlab_core::config::{ConfigError, parse_section, take_tag};

pub use copy::{CopyConfig, CopyTask};
pub use quadratic::{QuadraticConfig, QuadraticTask};
pub use retrieval::{RetrievalConfig, RetrievalTask};
pub use sorting::{SortingConfig, SortingTask};
pub use text::{Bpe, BpeConfig, BytesConfig, Codec, DataError, LmTask, WordsConfig};

/// Names of the task kinds, for error messages and `memlab models`.
pub const KINDS: &[&str] = &[
    "copy",
    "reverse",
    "retrieval",
    "quadratic",
    "sorting",
    "bytes",
    "words",
    "bpe",
];

/// Why a task could not be built: its config, or its data files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    Config(ConfigError),
    Data(DataError),
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Config(e) => write!(f, "{e}"),
            TaskError::Data(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TaskError {}

impl From<ConfigError> for TaskError {
    fn from(e: ConfigError) -> Self {
        TaskError::Config(e)
    }
}

impl From<DataError> for TaskError {
    fn from(e: DataError) -> Self {
        TaskError::Data(e)
    }
}

/// Builds the task a `[task]` table describes, seeded with `seed`.
pub fn build_task(table: &toml::Table, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    let (kind, fields) = take_tag(table.clone(), "kind", "task")?;
    let fields = toml::Value::Table(fields);
    let section = "task";
    Ok(match kind.as_str() {
        "copy" => Box::new(CopyTask::new(parse_section(fields, section)?, seed)),
        "reverse" => Box::new(CopyTask::reverse(parse_section(fields, section)?, seed)),
        "retrieval" => Box::new(RetrievalTask::new(parse_section(fields, section)?, seed)),
        "quadratic" => Box::new(QuadraticTask::new(parse_section(fields, section)?, seed)),
        "sorting" => Box::new(SortingTask::new(parse_section(fields, section)?, seed)),
        "bytes" => Box::new(parse_section::<BytesConfig>(fields, section)?.build()?),
        "words" => Box::new(parse_section::<WordsConfig>(fields, section)?.build()?),
        "bpe" => Box::new(parse_section::<BpeConfig>(fields, section)?.build()?),
        other => {
            return Err(ConfigError::new(
                "task.kind",
                format!("unknown task {other:?}; known: {}", KINDS.join(", ")),
            )
            .into());
        }
    })
}

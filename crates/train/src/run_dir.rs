//! The run directory and its bookkeeping: the lock a run holds while it
//! trains, the files of a run it replaces, and `metrics.jsonl`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use memlab_core::config::ExperimentConfig;
use memlab_core::data::Task;

use crate::checkpoint::{CHECKPOINT_FILE, write_atomically};
use crate::error::TrainError;
use crate::evaluate::EvalFigures;
use crate::run::TrainOptions;

/// Appends JSON lines to `metrics.jsonl`.
pub(crate) struct MetricsLog {
    file: fs::File,
    path: PathBuf,
    /// The `value` of each `valid` line kept from before the resumed
    /// step, in order (what the stopping rule rebuilds itself from).
    pub(crate) kept_valid_values: Vec<f64>,
}

impl MetricsLog {
    /// Opens the log; when resuming from `step`, drops lines written after it
    /// (by the interrupted run, past its last checkpoint).
    fn open(path: PathBuf, keep_until: Option<usize>) -> Result<Self, TrainError> {
        let io = |e| TrainError::Io(path.clone(), e);
        let mut kept_valid_values = Vec::new();
        let kept = match (keep_until, path.exists()) {
            (Some(step), true) => {
                let reader = BufReader::new(fs::File::open(&path).map_err(io)?);
                let mut kept = String::new();
                for line in reader.lines() {
                    let line = line.map_err(io)?;
                    let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                    let line_step = parsed
                        .as_ref()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                    if matches!(line_step, Some(s) if s as usize <= step) {
                        kept.push_str(&line);
                        kept.push('\n');
                        let value = parsed.as_ref().filter(|v| v["split"] == "valid");
                        if let Some(value) = value {
                            // A NaN is written as null.
                            kept_valid_values.push(value["value"].as_f64().unwrap_or(f64::NAN));
                        }
                    }
                }
                kept
            }
            _ => String::new(),
        };
        write_atomically(&path, kept.as_bytes()).map_err(io)?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            file,
            path,
            kept_valid_values,
        })
    }

    pub(crate) fn write(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{value}").map_err(|e| TrainError::Io(self.path.clone(), e))
    }
}

pub(crate) fn log_eval(
    log: &mut MetricsLog,
    step: usize,
    eval: &EvalFigures,
) -> Result<(), TrainError> {
    log.write(serde_json::json!({
        "step": step, "split": "valid", "loss": eval.loss, "accuracy": eval.accuracy,
        "exact_match": eval.exact_match, "metric": eval.metric, "value": eval.value,
        "segment_accuracy": eval.segment_accuracy,
        "generated_accuracy": eval.generated_accuracy,
        "generated_exact_match": eval.generated_exact_match,
    }))
}

/// The lock file of a run directory, held while a run trains there.
pub const LOCK_FILE: &str = ".lock";

/// The run directory of a training run, held by it (the lock file) from
/// [`RunDir::claim`] to the run's end: a run it replaces is removed only
/// once the new one can start (`start`), so that the directory
/// never mixes two runs.
pub struct RunDir {
    path: PathBuf,
    /// Files of the run being replaced.
    replaced: Vec<PathBuf>,
    _lock: fs::File,
}

impl RunDir {
    /// Creates and locks `options.run_dir`, refusing a run it already
    /// holds unless `overwrite` (or `resume`, which needs its checkpoint).
    pub fn claim(options: &TrainOptions) -> Result<Self, TrainError> {
        let path = options.run_dir.clone();
        fs::create_dir_all(&path).map_err(|e| TrainError::Io(path.clone(), e))?;
        let lock = lock_run_dir(&path)?;
        let replaced = check_run_dir(&path, options)?;
        Ok(Self {
            path,
            replaced,
            _lock: lock,
        })
    }

    /// Removes the run being replaced, writes `config.toml` and the task's
    /// files, and opens `metrics.jsonl` from `start_step` on.
    pub(crate) fn start(
        &self,
        config_toml: &str,
        task: &dyn Task,
        start_step: usize,
    ) -> Result<MetricsLog, TrainError> {
        for path in &self.replaced {
            fs::remove_file(path).map_err(|e| TrainError::Io(path.clone(), e))?;
        }
        let config_path = self.path.join("config.toml");
        write_atomically(&config_path, config_toml.as_bytes())
            .map_err(|e| TrainError::Io(config_path, e))?;
        for (name, contents) in task.artifacts() {
            let path = self.path.join(&name);
            write_atomically(&path, contents.as_bytes()).map_err(|e| TrainError::Io(path, e))?;
        }
        MetricsLog::open(self.path.join("metrics.jsonl"), Some(start_step))
    }
}

/// Takes the run directory's lock (the OS releases it when the process
/// ends, however it ends), or says who holds it.
fn lock_run_dir(dir: &Path) -> Result<fs::File, TrainError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| TrainError::Io(path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(TrainError::Locked(path)),
        Err(fs::TryLockError::Error(e)) => Err(TrainError::Io(path, e)),
    }
}

/// The files a run writes into its directory.
const RUN_FILES: [&str; 3] = [CHECKPOINT_FILE, "metrics.jsonl", "config.toml"];

/// Refuses to start over a run the directory holds unless asked to replace
/// it, and to resume a run that has no checkpoint; returns the files of a
/// run being replaced, which the caller removes before writing any of the
/// new run's, so that the directory never mixes two runs.
fn check_run_dir(dir: &Path, options: &TrainOptions) -> Result<Vec<PathBuf>, TrainError> {
    if options.resume {
        if !dir.join(CHECKPOINT_FILE).exists() {
            return Err(TrainError::NoCheckpoint(dir.to_path_buf()));
        }
        return Ok(Vec::new());
    }
    let held: Vec<PathBuf> = RUN_FILES
        .into_iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if !held.is_empty() && !options.overwrite {
        return Err(TrainError::RunExists(dir.to_path_buf()));
    }
    Ok(held)
}

/// The run directory a config names: `run.out_dir / run.name`.
pub fn run_dir(config: &ExperimentConfig) -> PathBuf {
    Path::new(&config.run.out_dir).join(&config.run.name)
}

//! Experiment configuration: TOML files parsed strictly (unknown fields are
//! rejected) and validated, with every error naming the offending field by
//! its dotted path (`model.heads`, `train.lr`, ...).

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A configuration error that names the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `model.heads`; empty for the whole file.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path with a section name (`heads` -> `model.heads`).
    pub fn within(mut self, section: &str) -> Self {
        self.field = join_path(section, &self.field);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid config: {}", self.message)
        } else {
            write!(f, "invalid config: `{}` {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn join_path(section: &str, field: &str) -> String {
    match (section.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => section.to_string(),
        _ => format!("{section}.{field}"),
    }
}

/// Types whose values can be checked beyond what their types express.
pub trait Validate {
    /// Checks every value; field paths in the error are relative to `self`.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Small helpers so that validation code reads like the rules it enforces.
pub mod check {
    use super::ConfigError;

    pub fn positive(field: &str, value: usize) -> Result<(), ConfigError> {
        if value == 0 {
            return Err(ConfigError::new(field, "must be at least 1, got 0"));
        }
        Ok(())
    }

    pub fn probability(field: &str, value: f64) -> Result<(), ConfigError> {
        if !(0.0..1.0).contains(&value) {
            return Err(ConfigError::new(
                field,
                format!("must be in [0, 1), got {value}"),
            ));
        }
        Ok(())
    }

    pub fn positive_f64(field: &str, value: f64) -> Result<(), ConfigError> {
        if !(value.is_finite() && value > 0.0) {
            return Err(ConfigError::new(
                field,
                format!("must be a finite number > 0, got {value}"),
            ));
        }
        Ok(())
    }

    pub fn non_negative_f64(field: &str, value: f64) -> Result<(), ConfigError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(ConfigError::new(
                field,
                format!("must be a finite number >= 0, got {value}"),
            ));
        }
        Ok(())
    }

    pub fn divides(
        field: &str,
        value: usize,
        by_field: &str,
        by: usize,
    ) -> Result<(), ConfigError> {
        if by == 0 || !value.is_multiple_of(by) {
            return Err(ConfigError::new(
                field,
                format!("({value}) must be divisible by `{by_field}` ({by})"),
            ));
        }
        Ok(())
    }
}

/// The sizes every Transformer's config shares (re-exported from [`crate::layers`]).
pub use crate::layers::TransformerSizes;

/// Deserializes `value` into `T`, rejecting unknown fields (when `T` says
/// `deny_unknown_fields`) and naming the failing field as `section.path`.
pub fn from_value<T: DeserializeOwned>(
    value: toml::Value,
    section: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = err.into_inner();
        // serde reports unknown fields at the enclosing path; name the field itself.
        // toml adds the enclosing key on a second line; the path says it already.
        let message = inner
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let field = match unknown_field_name(&message) {
            Some(name) if !path.ends_with(name) => join_path(&path, name),
            _ => path,
        };
        ConfigError::new(join_path(section, &field), message)
    })
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Deserializes and validates a section.
pub fn parse_section<T: DeserializeOwned + Validate>(
    value: toml::Value,
    section: &str,
) -> Result<T, ConfigError> {
    let parsed: T = from_value(value, section)?;
    parsed.validate().map_err(|e| e.within(section))?;
    Ok(parsed)
}

/// Applies `key=value` overrides (`--set train.lr=0.001`) to a TOML document.
/// The value is parsed as a TOML value (`3`, `0.5`, `true`, `"x"`, `[1, 2]`);
/// anything that does not parse is taken as a string.
pub fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        ConfigError::new(
            "",
            format!("override `{assignment}` must have the form key=value"),
        )
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::new(
            key,
            format!("override `{assignment}` has an empty key"),
        ));
    }
    let value = parse_toml_value(raw.trim());
    set_path(doc, key, value)
}

fn parse_toml_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Sets a dotted key in a TOML table, creating intermediate tables.
pub fn set_path(doc: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut table = doc;
    let mut walked = String::new();
    for part in parts {
        walked = join_path(&walked, part);
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::new(walked.clone(), "is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Reads a TOML file into a table, with errors that name the file.
pub fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )
    })?;
    parse_toml(&text)
        .map_err(|e| ConfigError::new(e.field, format!("in {}: {}", path.display(), e.message)))
}

/// Parses TOML text into a table.
pub fn parse_toml(text: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::new("", format!("not valid TOML: {e}")))
}

/// Removes the string-valued tag key (e.g. `arch`, `kind`) from a table and
/// returns it with the remaining table, for configs that choose a type by name.
pub fn take_tag(
    mut table: toml::Table,
    tag: &str,
    section: &str,
) -> Result<(String, toml::Table), ConfigError> {
    match table.remove(tag) {
        Some(toml::Value::String(name)) => Ok((name, table)),
        Some(other) => Err(ConfigError::new(
            join_path(section, tag),
            format!("must be a string, got {}", other.type_str()),
        )),
        None => Err(ConfigError::new(join_path(section, tag), "is missing")),
    }
}

/// How far gradients flow back through the memory carried between segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BpttDepth {
    /// Gradients flow through every segment of the rollout.
    #[default]
    Full,
    /// memlab's own block truncation: the memory is detached before
    /// segments `k+1, 2(k+1), ...` (truncated BPTT in windows of `k+1`
    /// segments, each segment computed once); `0` detaches after every
    /// segment. `train.bptt_window = "blocks"`.
    Segments(usize),
    /// LM-RMT's `mem_backprop_depth k` (`train_synthetic.py`): every
    /// segment's loss back-propagates through exactly the `k` segments
    /// before it (fewer at the start), a window sliding with the segment.
    /// The window is recomputed from the memory that entered its first
    /// segment, so a step costs up to `k + 1` forward passes per segment.
    /// `train.bptt_window = "sliding"` (the default) with `bptt_depth = k`.
    Sliding(usize),
}

/// How `train.bptt_depth = k` truncates: LM-RMT's sliding window, or
/// memlab's cheaper blocks of `k + 1` segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BpttWindow {
    #[default]
    Sliding,
    Blocks,
}

/// How a training step computes its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradientMethod {
    /// Back-propagation through the rollout (truncated as `bptt_depth` says).
    #[default]
    Bptt,
    /// Memory replay back-propagation (Memformer §3.3, `memlab_train::mrbp`):
    /// full BPTT's gradients with one segment's activations alive at a time.
    Replay,
}

/// How gradients are clipped to `train.grad_clip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClipMode {
    /// By the norm of all parameters' gradients together, as every official
    /// code base does (`torch.nn.utils.clip_grad_norm_`).
    #[default]
    Global,
    /// Each parameter tensor by its own norm (Burn's `GradientClipping::Norm`).
    PerTensor,
}

impl Serialize for BpttDepth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BpttDepth::Full => s.serialize_str("full"),
            BpttDepth::Segments(k) | BpttDepth::Sliding(k) => s.serialize_u64(*k as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BpttDepth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(k) if k >= 0 => Ok(BpttDepth::Segments(k as usize)),
            Raw::Int(k) => Err(serde::de::Error::custom(format!(
                "bptt depth must be \"full\" or a number >= 0, got {k}"
            ))),
            Raw::Str(s) if s == "full" => Ok(BpttDepth::Full),
            Raw::Str(s) => Err(serde::de::Error::custom(format!(
                "bptt depth must be \"full\" or a number >= 0, got \"{s}\""
            ))),
        }
    }
}

impl BpttDepth {
    /// Whether the memory entering segment `index` (0-based) is detached.
    /// The first segment's memory is never detached here: it is either the
    /// model's (possibly learned) initial memory, or memory carried over from
    /// a previous batch, which the caller detaches.
    pub fn detach_before(&self, index: usize) -> bool {
        match self {
            BpttDepth::Full | BpttDepth::Sliding(_) => false,
            BpttDepth::Segments(k) => index > 0 && index.is_multiple_of(k + 1),
        }
    }
}

impl fmt::Display for BpttDepth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpttDepth::Full => write!(f, "full"),
            BpttDepth::Segments(k) => write!(f, "{k} (blocks)"),
            BpttDepth::Sliding(k) => write!(f, "{k} (sliding)"),
        }
    }
}

/// `[run]`: where and how a run is recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Name of the run; its directory is `out_dir/name`.
    pub name: String,
    /// Parent directory of run directories.
    pub out_dir: String,
    /// Seed for parameter initialisation, data and dropout.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            out_dir: "runs".into(),
            seed: 42,
        }
    }
}

impl Validate for RunConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // A plain directory name, or plain names joined by `/`: a cell of a
        // comparison is `<matrix>/<cell>` (its config.toml says so, and
        // `memlab eval --run` reads it back).
        let plain =
            |part: &str| !part.is_empty() && part != "." && part != ".." && !part.contains('\\');
        if !self.name.split('/').all(plain) {
            return Err(ConfigError::new(
                "name",
                format!(
                    "must be a plain directory name (or plain names joined by `/`), got {:?}",
                    self.name
                ),
            ));
        }
        if self.out_dir.is_empty() {
            return Err(ConfigError::new("out_dir", "must not be empty"));
        }
        Ok(())
    }
}

impl TrainConfig {
    /// The truncation the runner applies: `bptt_depth` read as
    /// `bptt_window` says.
    pub fn bptt(&self) -> BpttDepth {
        match (self.bptt_depth, self.bptt_window) {
            (BpttDepth::Segments(k), BpttWindow::Sliding) => BpttDepth::Sliding(k),
            (depth, _) => depth,
        }
    }
}

/// `[train]`: optimisation and the segment runner's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of optimizer steps.
    pub steps: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Segment length the runner splits sequences into.
    pub segment_len: usize,
    /// BPTT depth through memory: `"full"` or a number of segments `k`.
    pub bptt_depth: BpttDepth,
    /// What `bptt_depth = k` means: `"sliding"` (LM-RMT's
    /// `mem_backprop_depth`: each segment's loss reaches `k` segments back)
    /// or `"blocks"` (memlab's: detach every `k + 1` segments).
    pub bptt_window: BpttWindow,
    /// `"bptt"` or `"replay"` (memory replay back-propagation: full BPTT's
    /// gradients in one segment's activation memory; needs
    /// `bptt_depth = "full"`, and dropout 0 to equal BPTT).
    pub gradients: GradientMethod,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Gradient clipping to this norm; 0 = off.
    pub grad_clip: f64,
    /// `"global"` (the norm of all gradients together, as LM-RMT's
    /// `clip_grad_norm_`) or `"per-tensor"`.
    pub grad_clip_mode: ClipMode,
    /// Evaluate every this many steps (and at the end); 0 = only at the end.
    pub eval_every: usize,
    /// Batches per evaluation.
    pub eval_batches: usize,
    /// The stopping rule: end the run once the validation metric has been
    /// flat for this many evaluations in a row (none of them improved on
    /// the best before it by more than `flat_delta`); `steps` is then the
    /// cap. 0 = off: every run trains its `steps`.
    pub flat_evals: usize,
    /// How much an evaluation must improve on the best so far (in the
    /// task's metric: accuracy up, bits/char down...) not to count as flat.
    pub flat_delta: f64,
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end.
    pub checkpoint_every: usize,
    /// Log training figures to metrics.jsonl every this many steps.
    pub log_every: usize,
    /// Data-parallel peers (devices) in each process, each with an equal
    /// share of every batch's rows (docs/distributed.md); 1 = no collective.
    pub devices: usize,
    /// Processes (machines) taking part, each with `devices` peers, joined
    /// through `memlab orchestrator` (`memlab train --nodes`).
    pub nodes: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 32,
            segment_len: 24,
            bptt_depth: BpttDepth::Full,
            bptt_window: BpttWindow::Sliding,
            gradients: GradientMethod::Bptt,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 100,
            weight_decay: 0.0,
            grad_clip: 1.0,
            grad_clip_mode: ClipMode::Global,
            eval_every: 0,
            eval_batches: 4,
            flat_evals: 0,
            flat_delta: 0.0,
            checkpoint_every: 0,
            log_every: 10,
            devices: 1,
            nodes: 1,
        }
    }
}

impl Validate for TrainConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("steps", self.steps)?;
        check::positive("batch_size", self.batch_size)?;
        check::positive("segment_len", self.segment_len)?;
        check::positive("eval_batches", self.eval_batches)?;
        check::positive("log_every", self.log_every)?;
        check::positive("devices", self.devices)?;
        check::positive("nodes", self.nodes)?;
        let peers = self.devices * self.nodes;
        if !self.batch_size.is_multiple_of(peers) {
            return Err(ConfigError::new(
                "batch_size",
                format!(
                    "({}) must split into equal shares for the {peers} data-parallel peers \
                     (devices {} x nodes {})",
                    self.batch_size, self.devices, self.nodes
                ),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return Err(ConfigError::new(
                "lr",
                format!("must be in (0, 1], got {}", self.lr),
            ));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return Err(ConfigError::new(
                "min_lr",
                format!("must be in [0, lr = {}], got {}", self.lr, self.min_lr),
            ));
        }
        if self.warmup_steps >= self.steps {
            return Err(ConfigError::new(
                "warmup_steps",
                format!(
                    "({}) must be smaller than `steps` ({})",
                    self.warmup_steps, self.steps
                ),
            ));
        }
        check::non_negative_f64("weight_decay", self.weight_decay)?;
        check::non_negative_f64("flat_delta", self.flat_delta)?;
        if self.flat_evals > 0 && self.eval_every == 0 {
            return Err(ConfigError::new(
                "flat_evals",
                format!(
                    "({}) counts evaluations, but `eval_every` is 0 (only the last step is \
                     evaluated); set `eval_every`",
                    self.flat_evals
                ),
            ));
        }
        check::non_negative_f64("grad_clip", self.grad_clip)?;
        if self.gradients == GradientMethod::Replay && self.bptt_depth != BpttDepth::Full {
            return Err(ConfigError::new(
                "gradients",
                format!(
                    "\"replay\" computes full BPTT's gradients; it needs `bptt_depth = \"full\"`, got {}",
                    self.bptt_depth
                ),
            ));
        }
        Ok(())
    }
}

/// One setting of a comparison: a label and `key=value` overrides applied to
/// the whole config (e.g. `task.length = 24`), and to single models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompareSetting {
    pub label: String,
    #[serde(default)]
    pub set: toml::Table,
    /// Fields of single models in this setting, by model label:
    /// `models = { "rmt" = { num_mem_tokens = 8 }, "tr-xl" = { mem_len = 8 } }`
    /// (a memory size that each architecture names its own way).
    #[serde(default)]
    pub models: toml::Table,
    /// Where the setting lies on the plot's x axis (its memory size,
    /// sequence length...); without it, the number of segments.
    #[serde(default)]
    pub x: Option<f64>,
    /// The labels of the models this setting runs (all of them when
    /// absent): `only = ["baseline"]` for a "no memory" column.
    #[serde(default)]
    pub only: Option<Vec<String>>,
}

/// `[compare]`: which models and settings `memlab compare` runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// Model tables, each with `arch` and its fields; `label` names the row.
    pub models: Vec<toml::Table>,
    /// Settings (columns of the matrix); one unnamed setting when empty.
    #[serde(default)]
    pub settings: Vec<CompareSetting>,
    /// Seeds every (setting, model) cell is trained with (`run.seed` each
    /// time, for parameters, data and dropout); `[run.seed]` when empty.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// The plot's x axis: what the settings' `x` measure (default: the
    /// number of segments).
    #[serde(default)]
    pub x_label: Option<String>,
    /// The title of the tables and the figure (default: `run.name`).
    #[serde(default)]
    pub title: Option<String>,
}

/// A whole experiment file. Task and model tables stay raw here: the tasks
/// crate and the model registry parse them by their `kind` / `arch` tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub task: toml::Table,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub model: Option<toml::Table>,
    #[serde(default)]
    pub compare: Option<CompareConfig>,
}

impl ExperimentConfig {
    /// Parses and validates a document (after any overrides were applied).
    pub fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: ExperimentConfig = from_value(toml::Value::Table(table), "")?;
        config.run.validate().map_err(|e| e.within("run"))?;
        config.train.validate().map_err(|e| e.within("train"))?;
        if let Some(compare) = &config.compare {
            if compare.models.is_empty() {
                return Err(ConfigError::new(
                    "compare.models",
                    "must list at least one model",
                ));
            }
            for (i, s) in compare.settings.iter().enumerate() {
                if s.label.is_empty() {
                    return Err(ConfigError::new(
                        format!("compare.settings[{i}].label"),
                        "must not be empty",
                    ));
                }
                if compare.settings[..i].iter().any(|t| t.label == s.label) {
                    return Err(ConfigError::new(
                        format!("compare.settings[{i}].label"),
                        format!("`{}` names two settings", s.label),
                    ));
                }
                if s.only.as_ref().is_some_and(|only| only.is_empty()) {
                    return Err(ConfigError::new(
                        format!("compare.settings[{i}].only"),
                        "must name at least one model (leave it out to run them all)",
                    ));
                }
                if s.x.is_some_and(|x| !x.is_finite()) {
                    return Err(ConfigError::new(
                        format!("compare.settings[{i}].x"),
                        "must be a finite number",
                    ));
                }
            }
            if (1..compare.seeds.len()).any(|i| compare.seeds[..i].contains(&compare.seeds[i])) {
                return Err(ConfigError::new(
                    "compare.seeds",
                    format!("lists a seed twice: {:?}", compare.seeds),
                ));
            }
        }
        Ok(config)
    }

    /// The sections a file leaves out that take their defaults (`run`,
    /// `train`), for the CLI to say so.
    pub fn defaulted_sections(path: &Path) -> Vec<&'static str> {
        let Ok(table) = read_toml(path) else {
            return Vec::new();
        };
        ["run", "train"]
            .into_iter()
            .filter(|s| !table.contains_key(*s))
            .collect()
    }

    /// Reads a file, applies `key=value` overrides, parses and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table = read_toml(path)?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        Self::from_table(table)
    }

    /// The document as TOML text (what a run directory's config.toml holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an experiment config always serializes")
    }

    /// The `[model]` table, or an error naming it when absent.
    pub fn model_table(&self) -> Result<&toml::Table, ConfigError> {
        self.model
            .as_ref()
            .ok_or_else(|| ConfigError::new("model", "is missing (training needs a [model] table)"))
    }
}

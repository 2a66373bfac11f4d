//! `[compare]` expanded into the runs of a comparison: one per (setting,
//! model), each a whole experiment config that `memlab train` could run on
//! its own. Building their tasks (the tasks crate) and training them is the
//! caller's.

use crate::config::{ConfigError, ExperimentConfig, set_path};
use crate::registry::ModelSpec;

/// One run of a comparison: a model under a setting, and the run's config.
#[derive(Debug, Clone)]
pub struct ComparedRun {
    /// The setting's label (a column of the comparison).
    pub setting: String,
    /// The model's table (`arch`, its label, its fields), and where it is:
    /// `compare.models[model]`.
    pub spec: ModelSpec,
    pub model: usize,
    /// The whole config: `[compare]` removed, the model's table as
    /// `[model]`, the setting's `set` applied, and `run.name` made
    /// `<name>/<setting>-<model label>`.
    pub config: ExperimentConfig,
}

/// The runs `config`'s `[compare]` asks for, settings first, models within
/// each (one unnamed setting, `default`, when it lists none). An error names
/// the field, and the setting or model table it is in.
pub fn compared_runs(config: &ExperimentConfig) -> Result<Vec<ComparedRun>, ConfigError> {
    let compare = config.compare.as_ref().ok_or_else(|| {
        ConfigError::new(
            "compare",
            "is missing (`memlab compare` needs a [compare] table)",
        )
    })?;
    let settings = if compare.settings.is_empty() {
        vec![crate::config::CompareSetting {
            label: "default".into(),
            set: toml::Table::new(),
        }]
    } else {
        compare.settings.clone()
    };
    let mut base = toml::Table::try_from(config)
        .map_err(|e| ConfigError::new("", format!("re-serialising the config: {e}")))?;
    base.remove("compare");
    let mut runs = Vec::new();
    for setting in &settings {
        let in_setting = |e: ConfigError| ConfigError {
            message: format!("{} (in setting `{}`)", e.message, setting.label),
            ..e
        };
        for (i, table) in compare.models.iter().enumerate() {
            let spec = ModelSpec::from_table(table, &format!("compare.models[{i}]"))?;
            let mut doc = base.clone();
            doc.insert("model".into(), toml::Value::Table(table.clone()));
            for (key, value) in &setting.set {
                set_path(&mut doc, key, value.clone()).map_err(in_setting)?;
            }
            let mut run_config = ExperimentConfig::from_table(doc).map_err(in_setting)?;
            run_config.run.name = format!(
                "{}/{}-{}",
                config.run.name,
                slug(&setting.label),
                slug(&spec.label)
            );
            runs.push(ComparedRun {
                setting: setting.label.clone(),
                spec,
                model: i,
                config: run_config,
            });
        }
    }
    Ok(runs)
}

/// `s` as a file name: ASCII letters, digits, `-` and `_`; `_` for the rest.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

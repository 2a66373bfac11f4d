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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_toml;

    fn config(text: &str) -> ExperimentConfig {
        ExperimentConfig::from_table(parse_toml(text).unwrap()).unwrap()
    }

    const BASE: &str = r#"
[run]
name = "cmp"
[task]
kind = "copy"
[train]
segment_len = 24
[compare]
settings = [
    { label = "1 segment", set = { "train.segment_len" = 24 } },
    { label = "3 segments", set = { "train.segment_len" = 8 } },
]
[[compare.models]]
arch = "baseline"
[[compare.models]]
arch = "rmt"
label = "rmt (8)"
num_mem_tokens = 8
"#;

    /// Settings are the outer loop; each run is a whole config with the
    /// model's table as `[model]`, the setting applied, no `[compare]`.
    #[test]
    fn every_setting_runs_every_model() {
        let runs = compared_runs(&config(BASE)).unwrap();
        let seen: Vec<_> = runs
            .iter()
            .map(|r| {
                (
                    r.setting.as_str(),
                    r.model,
                    r.config.run.name.as_str(),
                    r.config.train.segment_len,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("1 segment", 0, "cmp/1_segment-baseline", 24),
                ("1 segment", 1, "cmp/1_segment-rmt__8_", 24),
                ("3 segments", 0, "cmp/3_segments-baseline", 8),
                ("3 segments", 1, "cmp/3_segments-rmt__8_", 8),
            ]
        );
        let rmt = &runs[1].config;
        assert!(rmt.compare.is_none());
        let model = rmt.model.as_ref().unwrap();
        assert_eq!(model["arch"].as_str(), Some("rmt"));
        assert_eq!(model["num_mem_tokens"].as_integer(), Some(8));
        assert_eq!(runs[1].spec.label, "rmt (8)");
    }

    /// A setting that names a field no config has is an error naming the
    /// field and the setting; no `[compare]` is an error naming it.
    #[test]
    fn a_wrong_setting_is_named() {
        let text = BASE.replace("\"train.segment_len\" = 8", "\"train.segment_length\" = 8");
        let err = compared_runs(&config(&text)).unwrap_err();
        assert!(err.to_string().contains("segment_length"), "{err}");
        assert!(err.to_string().contains("in setting `3 segments`"), "{err}");
        let plain = config("[task]\nkind = \"copy\"\n");
        assert_eq!(compared_runs(&plain).unwrap_err().field, "compare");
    }
}

//! `[compare]` expanded into the runs of a comparison: one per (setting,
//! model), each a whole experiment config that `memlab train` could run on
//! its own. Building their tasks (the tasks crate) and training them is the
//! caller's.

use memlab_core::config::{CompareSetting, ConfigError, ExperimentConfig, set_path};
use memlab_core::registry::ModelSpec;

/// One run of a comparison: a model under a setting with a seed, and the
/// run's config.
#[derive(Debug, Clone)]
pub struct ComparedRun {
    /// The setting's label (a column of the comparison).
    pub setting: String,
    /// The setting's place on the plot's x axis, when it gives one.
    pub x: Option<f64>,
    /// The model's table (`arch`, its label, its fields, with the
    /// setting's `models` entry for it applied), and where it is:
    /// `compare.models[model]`.
    pub spec: ModelSpec,
    pub model: usize,
    /// `run.seed` of this run.
    pub seed: u64,
    /// `init_from` of the model's table: a folder of pre-trained weights
    /// the run starts from (a Hugging Face GPT-2 folder, which the CLI's
    /// importer reads), not a field of `[model]`.
    pub init_from: Option<String>,
    /// The whole config: `[compare]` removed, the model's table as
    /// `[model]`, the setting's `set` applied, `run.seed` the seed, and
    /// `run.name` made `<name>/<setting>-<model label>-seed<seed>`.
    pub config: ExperimentConfig,
}

/// The runs `config`'s `[compare]` asks for: for each seed (`run.seed` when
/// it lists none), each setting (one unnamed setting, `default`, when it
/// lists none), each model. Seeds are the outer loop, so that an
/// interrupted matrix holds whole tables of its first seeds. An error names
/// the field, and the setting or model table it is in.
pub fn compared_runs(config: &ExperimentConfig) -> Result<Vec<ComparedRun>, ConfigError> {
    let compare = config.compare.as_ref().ok_or_else(|| {
        ConfigError::new(
            "compare",
            "is missing (`memlab compare` needs a [compare] table)",
        )
    })?;
    let settings = if compare.settings.is_empty() {
        vec![CompareSetting {
            label: "default".into(),
            set: toml::Table::new(),
            models: toml::Table::new(),
            x: None,
            only: None,
        }]
    } else {
        compare.settings.clone()
    };
    let seeds = if compare.seeds.is_empty() {
        vec![config.run.seed]
    } else {
        compare.seeds.clone()
    };
    let models = compared_models(&compare.models)?;
    check_setting_labels(&settings, &models)?;

    let mut base = toml::Table::try_from(config)
        .map_err(|e| ConfigError::new("", format!("re-serialising the config: {e}")))?;
    base.remove("compare");
    let mut runs = Vec::new();
    for &seed in &seeds {
        for setting in &settings {
            for (i, model) in models.iter().enumerate() {
                let skipped = setting
                    .only
                    .as_ref()
                    .is_some_and(|only| !only.contains(&model.spec.label));
                if !skipped {
                    runs.push(compared_run(&base, config, setting, i, model, seed)?);
                }
            }
        }
    }
    Ok(runs)
}

/// One of `[compare]`'s models: its table without `set` and `init_from`,
/// its own `set` (dotted overrides of the whole config for its runs alone,
/// `set = { "train.bptt_depth" = 0 }`, applied after the setting's), the
/// pre-trained weights its runs start from (`init_from = "DIR"`), and its
/// spec.
struct ComparedModel {
    table: toml::Table,
    set: toml::Table,
    init_from: Option<String>,
    spec: ModelSpec,
}

/// `compare.models`, each with a label no other model has.
fn compared_models(tables: &[toml::Table]) -> Result<Vec<ComparedModel>, ConfigError> {
    let mut split = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        let mut table = table.clone();
        let set = match table.remove("set") {
            None => toml::Table::new(),
            Some(toml::Value::Table(set)) => set,
            Some(other) => {
                return Err(ConfigError::new(
                    format!("compare.models[{i}].set"),
                    format!(
                        "must be a table of dotted keys and values (e.g. {{ \"train.bptt_depth\" = 0 }}), got {other}"
                    ),
                ));
            }
        };
        let init_from = match table.remove("init_from") {
            None => None,
            Some(toml::Value::String(dir)) => Some(dir),
            Some(other) => {
                return Err(ConfigError::new(
                    format!("compare.models[{i}].init_from"),
                    format!("must be the path of a folder of pre-trained weights, got {other}"),
                ));
            }
        };
        split.push((table, set, init_from));
    }
    let mut models: Vec<ComparedModel> = Vec::with_capacity(split.len());
    for (i, (table, set, init_from)) in split.into_iter().enumerate() {
        let spec = ModelSpec::from_table(&table, &format!("compare.models[{i}]"))?;
        if let Some(j) = models.iter().position(|m| m.spec.label == spec.label) {
            return Err(ConfigError::new(
                format!("compare.models[{i}].label"),
                format!(
                    "`{}` is also compare.models[{j}]'s label; give each model its own",
                    spec.label
                ),
            ));
        }
        models.push(ComparedModel {
            table,
            set,
            init_from,
            spec,
        });
    }
    Ok(models)
}

/// Every label a setting's `models` or `only` names is a model's label.
fn check_setting_labels(
    settings: &[CompareSetting],
    models: &[ComparedModel],
) -> Result<(), ConfigError> {
    for (s, setting) in settings.iter().enumerate() {
        let only = setting.only.iter().flatten();
        if let Some((label, field)) = setting
            .models
            .keys()
            .map(|l| (l, "models"))
            .chain(only.map(|l| (l, "only")))
            .find(|(label, _)| !models.iter().any(|m| &m.spec.label == *label))
        {
            return Err(ConfigError::new(
                format!("compare.settings[{s}].{field}"),
                format!(
                    "names `{label}`, which no model is labelled (the labels: {})",
                    models
                        .iter()
                        .map(|m| format!("`{}`", m.spec.label))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The run of model `i` under `setting` with `seed`: `base` (the config
/// without `[compare]`) with the model's table (the setting's fields for
/// it over its own) as `[model]`, the setting's `set`, then the model's,
/// then `run.seed`; named `<name>/<setting>-<model label>-seed<seed>`.
fn compared_run(
    base: &toml::Table,
    config: &ExperimentConfig,
    setting: &CompareSetting,
    i: usize,
    model: &ComparedModel,
    seed: u64,
) -> Result<ComparedRun, ConfigError> {
    let in_setting = |e: ConfigError| ConfigError {
        message: format!("{} (in setting `{}`)", e.message, setting.label),
        ..e
    };
    let label = &model.spec.label;
    let mut table = model.table.clone();
    if let Some(fields) = setting.models.get(label) {
        let fields = fields.as_table().ok_or_else(|| {
            in_setting(ConfigError::new(
                format!("models.\"{label}\""),
                "must be a table of the model's fields",
            ))
        })?;
        table.extend(fields.clone());
    }
    let spec =
        ModelSpec::from_table(&table, &format!("compare.models[{i}]")).map_err(in_setting)?;
    let mut doc = base.clone();
    doc.insert("model".into(), toml::Value::Table(table));
    for (key, value) in &setting.set {
        set_path(&mut doc, key, value.clone()).map_err(in_setting)?;
    }
    for (key, value) in &model.set {
        set_path(&mut doc, key, value.clone()).map_err(|e| ConfigError {
            message: format!("{} (in `compare.models[{i}].set`)", e.message),
            ..e
        })?;
    }
    set_path(&mut doc, "run.seed", toml::Value::Integer(seed as i64))?;
    let mut run_config = ExperimentConfig::from_table(doc).map_err(|e| {
        if model.set.is_empty() {
            in_setting(e)
        } else {
            ConfigError {
                message: format!(
                    "{} (in setting `{}` with `compare.models[{i}].set`)",
                    e.message, setting.label
                ),
                ..e
            }
        }
    })?;
    run_config.run.name = format!(
        "{}/{}-{}-seed{seed}",
        config.run.name,
        slug(&setting.label),
        slug(&spec.label)
    );
    Ok(ComparedRun {
        setting: setting.label.clone(),
        x: setting.x,
        spec,
        model: i,
        seed,
        init_from: model.init_from.clone(),
        config: run_config,
    })
}

/// The mean and spread of one figure over a cell's seeds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// How many values (seeds).
    pub n: usize,
    pub mean: f64,
    /// The sample standard deviation (divisor n − 1); 0 for one value.
    pub std: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { n, mean, std })
    }
}

impl std::fmt::Display for Spread {
    /// `mean ± std` to 4 decimals (the mean alone for one value).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n > 1 {
            write!(f, "{:.4} ± {:.4}", self.mean, self.std)
        } else {
            write!(f, "{:.4}", self.mean)
        }
    }
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
    use memlab_core::config::{BpttDepth, parse_toml};

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
                ("1 segment", 0, "cmp/1_segment-baseline-seed42", 24),
                ("1 segment", 1, "cmp/1_segment-rmt__8_-seed42", 24),
                ("3 segments", 0, "cmp/3_segments-baseline-seed42", 8),
                ("3 segments", 1, "cmp/3_segments-rmt__8_-seed42", 8),
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

    /// Seeds are the outer loop and each run's `run.seed`; a setting's
    /// `models` entry changes that model only, in that setting only.
    #[test]
    fn seeds_and_per_model_fields() {
        let text = BASE
            .replace("[compare]\n", "[compare]\nseeds = [7, 9]\n")
            .replace(
                "{ label = \"3 segments\", set = { \"train.segment_len\" = 8 } },",
                "{ label = \"3 segments\", x = 3.0, set = { \"train.segment_len\" = 8 }, \
                 models = { \"rmt (8)\" = { num_mem_tokens = 4 } } },",
            );
        let runs = compared_runs(&config(&text)).unwrap();
        assert_eq!(runs.len(), 8);
        let seen: Vec<_> = runs
            .iter()
            .map(|r| {
                let tokens = r.config.model.as_ref().unwrap().get("num_mem_tokens");
                (
                    r.seed,
                    r.config.run.seed,
                    r.setting.as_str(),
                    r.x,
                    r.model,
                    tokens.and_then(|t| t.as_integer()),
                )
            })
            .collect();
        assert_eq!(
            seen[..4],
            [
                (7, 7, "1 segment", None, 0, None),
                (7, 7, "1 segment", None, 1, Some(8)),
                (7, 7, "3 segments", Some(3.0), 0, None),
                (7, 7, "3 segments", Some(3.0), 1, Some(4)),
            ]
        );
        assert_eq!((runs[4].seed, runs[4].config.run.seed), (9, 9));
        assert_eq!(runs[7].config.run.name, "cmp/3_segments-rmt__8_-seed9");
    }

    /// A setting's `models` naming no model, two models with one label (their
    /// runs would share a directory) and a seed listed twice are errors
    /// naming the field.
    #[test]
    fn matrix_errors_name_the_field() {
        let unknown = BASE.replace(
            "set = { \"train.segment_len\" = 8 } }",
            "set = { \"train.segment_len\" = 8 }, models = { \"rmt\" = { num_mem_tokens = 4 } } }",
        );
        let err = compared_runs(&config(&unknown)).unwrap_err();
        assert_eq!(err.field, "compare.settings[1].models");
        assert!(err.message.contains("`rmt (8)`"), "{err}");

        let twice = BASE.replace("label = \"rmt (8)\"", "label = \"baseline\"");
        let err = compared_runs(&config(&twice)).unwrap_err();
        assert_eq!(err.field, "compare.models[1].label");

        let seeds = BASE.replace("[compare]\n", "[compare]\nseeds = [1, 2, 1]\n");
        let table = parse_toml(&seeds).unwrap();
        let err = ExperimentConfig::from_table(table).unwrap_err();
        assert_eq!(err.field, "compare.seeds");
    }

    /// A model's `set` changes its runs alone, after the setting's; a
    /// setting's `only` runs the models it names; a label `only` does not
    /// know, or an `only` naming none, is an error naming the field.
    #[test]
    fn model_overrides_and_settings_of_some_models() {
        let text = BASE
            .replace(
                "label = \"rmt (8)\"\n",
                "label = \"rmt (8)\"\nset = { \"train.bptt_depth\" = 2, \"train.segment_len\" = 12 }\n",
            )
            .replace(
                "{ label = \"1 segment\", set = { \"train.segment_len\" = 24 } },",
                "{ label = \"1 segment\", set = { \"train.segment_len\" = 24 }, only = [\"baseline\"] },",
            );
        let runs = compared_runs(&config(&text)).unwrap();
        let seen: Vec<_> = runs
            .iter()
            .map(|r| {
                (
                    r.setting.as_str(),
                    r.spec.label.as_str(),
                    r.config.train.segment_len,
                    r.config.train.bptt_depth,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("1 segment", "baseline", 24, BpttDepth::Full),
                ("3 segments", "baseline", 8, BpttDepth::Full),
                ("3 segments", "rmt (8)", 12, BpttDepth::Segments(2)),
            ]
        );
        assert!(!runs[2].config.model.as_ref().unwrap().contains_key("set"));

        let unknown = text.replace("only = [\"baseline\"]", "only = [\"base\"]");
        let err = compared_runs(&config(&unknown)).unwrap_err();
        assert_eq!(err.field, "compare.settings[0].only");
        let empty = text.replace("only = [\"baseline\"]", "only = []");
        let err = ExperimentConfig::from_table(parse_toml(&empty).unwrap()).unwrap_err();
        assert_eq!(err.field, "compare.settings[0].only");
        let bad = text.replace(
            "set = { \"train.bptt_depth\" = 2, \"train.segment_len\" = 12 }",
            "set = { \"train.bptt_deep\" = 2 }",
        );
        let err = compared_runs(&config(&bad)).unwrap_err();
        assert!(
            err.to_string().contains("bptt_deep")
                && err.to_string().contains("compare.models[1].set"),
            "{err}"
        );
    }

    /// Mean and sample standard deviation against the closed form: for
    /// 1, 2, 3, 4 the mean is 2.5 and the variance (n − 1) 5/3.
    #[test]
    fn spread_is_the_mean_and_sample_deviation() {
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.n, s.mean), (4, 2.5));
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.to_string(), "2.5000 ± 1.2910");
        let one = Spread::of(&[0.125]).unwrap();
        assert_eq!((one.std, one.to_string().as_str()), (0.0, "0.1250"));
        assert!(Spread::of(&[]).is_none());
    }
}

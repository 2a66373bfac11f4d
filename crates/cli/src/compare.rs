//! `memlab compare`: a matrix of models × settings × seeds from one config
//! ([`memlab_train::compare::compared_runs`]). Each cell is a run directory;
//! a finished cell leaves its figures in `cell.toml` beside its checkpoint,
//! so that running the comparison again keeps it and trains only the cells
//! still missing (an interrupted cell resumes from its last checkpoint).
//! The tables give each (setting, model) as mean ± std over its seeds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use memlab_core::{ExperimentConfig, Metric, ModelContext, ModelSpec, Task};
use memlab_train::TrainOptions;
use memlab_train::checkpoint::write_atomically;
use memlab_train::compare::{Spread, compared_runs};
use memlab_train::run_dir::run_dir;
use serde::{Deserialize, Serialize};

use crate::plot::{Chart, Point, Series};
use crate::{BackendKind, build_task, check_model, csv_field, metric_name, progress_bar};

/// The file a finished cell's figures are kept in, in its run directory.
/// TOML, not JSON: serde_json reads a float back to within one ulp only
/// (unless its `float_roundtrip` feature is on, which would rebuild Burn),
/// and a kept cell must give the very figures it was trained to.
pub const CELL_FILE: &str = "cell.toml";

/// Records a finished cell's figures in `dir`.
fn write_cell(dir: &Path, row: &CompareRow) -> Result<()> {
    let path = dir.join(CELL_FILE);
    let text = toml::to_string(row).context("serialising the cell")?;
    write_atomically(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// One cell of a comparison: a model under a setting with one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub setting: String,
    /// The setting's place on the plot's x axis, when it gives one.
    pub x: Option<f64>,
    pub model: String,
    pub arch: String,
    pub seed: u64,
    pub parameters: usize,
    pub memory_floats_per_sequence: usize,
    pub segments: usize,
    pub metric: Metric,
    pub value: f64,
    pub loss: f64,
    /// Teacher-forced token accuracy.
    pub accuracy: f64,
    /// Token accuracy and exact match of the generated answer (tasks with
    /// an answer; see [`memlab_core::Task::answer`]).
    pub generated_accuracy: Option<f64>,
    pub generated_exact_match: Option<f64>,
    pub tokens_per_second: f64,
    /// The most heap bytes held while the cell trained and was evaluated
    /// (CPU backends, in the `memlab` binary; else none).
    pub peak_heap_bytes: Option<u64>,
    /// Wall-clock seconds the cell took in this process: training (from
    /// its checkpoint, when it resumed) and evaluation.
    pub seconds: f64,
    /// The steps the cell trained: `train.steps`, or fewer when the
    /// stopping rule (`train.flat_evals`) ended it (none in cells
    /// recorded before the rule existed, which trained `train.steps`).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Whether its validation curve was flat by the stopping rule at the
    /// end (none: the config sets no rule). `false` = the cell hit the
    /// step cap unflattened.
    #[serde(default)]
    pub flat: Option<bool>,
}

/// How a cell ended, for tables: its steps, and, under a stopping rule,
/// "flat" or "cap, not flat".
pub fn steps_note(row: &CompareRow) -> String {
    let steps = optional(row.steps);
    match row.flat {
        Some(true) => format!("{steps} (flat)"),
        Some(false) => format!("{steps} (cap, not flat)"),
        None => steps,
    }
}

/// One run of a comparison, its config, and its task (built once for every
/// run that reads the same one).
pub struct PlannedRun {
    pub setting: String,
    pub x: Option<f64>,
    pub seed: u64,
    pub spec: ModelSpec,
    pub config: ExperimentConfig,
    pub task: Rc<dyn Task>,
    /// The Hugging Face folder the cell starts from (`init_from`); the
    /// cell's `[model]` then holds its `config.json`'s sizes.
    pub init_from: Option<PathBuf>,
}

/// The runs a comparison trains ([`memlab_train::compare::compared_runs`]),
/// every model table parsed against its task before any training starts.
pub fn compare_plan(config: &ExperimentConfig) -> Result<Vec<PlannedRun>> {
    let mut plan = Vec::new();
    // A task (a text corpus: read from disk) is built once per
    // (task table, seed); the models of a setting share it.
    let mut tasks: Vec<(String, Rc<dyn Task>)> = Vec::new();
    for mut run in compared_runs(config)? {
        let section = format!("compare.models[{}]", run.model);
        let init_from = run.init_from.as_ref().map(PathBuf::from);
        if let Some(dir) = &init_from {
            // The cell's model is the folder's: its sizes, the table's
            // architecture, dropouts and memory.
            let table = crate::hf::pretrained_model_table(dir, run.config.model.as_ref())
                .with_context(|| format!("`{section}.init_from`"))?;
            run.spec = ModelSpec::from_table(&table, &section)?;
            run.config.model = Some(table);
        }
        let key = format!(
            "{}\n{}",
            toml::to_string(&run.config.task).context("re-serialising the task")?,
            run.config.run.seed
        );
        let task = match tasks.iter().find(|(k, _)| *k == key) {
            Some((_, task)) => task.clone(),
            None => {
                let task: Rc<dyn Task> = Rc::from(build_task(&run.config)?);
                tasks.push((key, task.clone()));
                task
            }
        };
        check_model(&run.spec, &ModelContext::of(&run.config, task.as_ref()))
            .map_err(|e| anyhow!("{e} (in `{section}`, setting `{}`)", run.setting))?;
        plan.push(PlannedRun {
            setting: run.setting,
            x: run.x,
            seed: run.seed,
            spec: run.spec,
            config: run.config,
            task,
            init_from,
        });
    }
    Ok(plan)
}

/// How `memlab compare` runs its cells.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompareOptions {
    /// Train every cell afresh, replacing what its directory holds.
    pub fresh: bool,
    /// Show a progress bar per cell.
    pub progress: bool,
}

/// What became of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellOutcome {
    /// Trained from the start.
    Trained,
    /// An interrupted run, continued from its checkpoint.
    Resumed,
    /// Finished before, with this config: its figures were read back.
    Kept,
}

/// What a cell's directory holds for a config, before the cell runs.
enum CellState {
    Empty,
    Finished(Box<CompareRow>),
    Interrupted,
}

/// Reads a cell's directory: a run of another config there is an error
/// naming the fields that differ (never replaced without `--fresh`).
fn cell_state(dir: &Path, config: &ExperimentConfig) -> Result<CellState> {
    let recorded = dir.join("config.toml");
    if !recorded.exists() {
        return Ok(CellState::Empty);
    }
    let text = std::fs::read_to_string(&recorded)
        .with_context(|| format!("reading {}", recorded.display()))?;
    let saved: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", recorded.display()))?;
    // Read through the config's own type, so that a field added to memlab
    // since the cell was trained takes its default (the value the cell
    // trained with) instead of counting as a difference.
    // (Not `from_table`: a cell's `run.name` holds a `/`, which a config
    // of one's own may not.)
    let saved = toml::Value::Table(saved.clone())
        .try_into::<ExperimentConfig>()
        .ok()
        .and_then(|c| toml::Table::try_from(&c).ok())
        .unwrap_or(saved);
    let wanted = toml::Table::try_from(config).context("re-serialising the cell's config")?;
    let mut differ = Vec::new();
    differing_keys("", &saved, &wanted, &mut differ);
    if !differ.is_empty() {
        bail!(
            "{} holds a run of another config ({} differ{}); give --fresh to retrain every cell, \
             or move that directory away",
            dir.display(),
            differ.join(", "),
            if differ.len() == 1 { "s" } else { "" }
        );
    }
    let cell = dir.join(CELL_FILE);
    if cell.exists() {
        let text = std::fs::read_to_string(&cell)
            .with_context(|| format!("reading {}", cell.display()))?;
        match toml::from_str::<CompareRow>(&text) {
            Ok(mut row) => {
                // A cell recorded before the stopping rule trained them all.
                row.steps.get_or_insert(config.train.steps);
                return Ok(CellState::Finished(Box::new(row)));
            }
            // Written atomically, so unreadable only if damaged: the run is
            // retrained (or resumed), and the file rewritten.
            Err(e) => eprintln!(
                "warning: {} is unreadable ({e}); the cell runs again",
                cell.display()
            ),
        }
    }
    if dir.join(memlab_train::checkpoint::CHECKPOINT_FILE).exists() {
        Ok(CellState::Interrupted)
    } else {
        Ok(CellState::Empty)
    }
}

/// The dotted keys whose values differ between two tables.
fn differing_keys(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (a.get(key), b.get(key)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                differing_keys(&path, x, y, out)
            }
            (x, y) if x != y => out.push(format!("`{path}`")),
            _ => {}
        }
    }
}

/// `memlab compare`: trains every cell of `[compare]` that its directory
/// does not already hold finished, in plan order; `on_cell` hears of each
/// as it ends. Returns every cell's row.
pub fn run_compare(
    config: &ExperimentConfig,
    backend: BackendKind,
    options: CompareOptions,
    mut on_cell: impl FnMut(&CompareRow, CellOutcome),
) -> Result<Vec<CompareRow>> {
    let plan = compare_plan(config)?;
    // Every directory is read before anything trains, so that a clash is
    // reported at once, not hours into the matrix.
    let states = plan
        .iter()
        .map(|run| {
            if options.fresh {
                Ok(CellState::Empty)
            } else {
                cell_state(&run_dir(&run.config), &run.config)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::with_capacity(plan.len());
    for (run, state) in plan.into_iter().zip(states) {
        let (row, outcome) = match state {
            CellState::Finished(row) => (*row, CellOutcome::Kept),
            state => {
                let resume = matches!(state, CellState::Interrupted);
                let row = train_cell(run, backend, resume, options.progress)?;
                let outcome = if resume {
                    CellOutcome::Resumed
                } else {
                    CellOutcome::Trained
                };
                (row, outcome)
            }
        };
        on_cell(&row, outcome);
        rows.push(row);
    }
    Ok(rows)
}

/// `memlab compare --dry-run`: every cell of the plan, its steps and
/// segments, and what its directory holds (finished, interrupted, to
/// train), without training anything. A clash with another config's run
/// is an error, as it would be when running.
pub fn plan_table(config: &ExperimentConfig) -> Result<String> {
    let plan = compare_plan(config)?;
    let mut out = String::from(
        "| setting | model | seed | steps | segments | cell |\n| --- | --- | ---: | ---: | ---: | --- |\n",
    );
    let mut counts = [0usize; 3];
    for run in &plan {
        let state = match cell_state(&run_dir(&run.config), &run.config)? {
            CellState::Finished(_) => 0,
            CellState::Interrupted => 1,
            CellState::Empty => 2,
        };
        counts[state] += 1;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            run.setting,
            run.spec.label,
            run.seed,
            run.config.train.steps,
            run.task.seq_len().div_ceil(run.config.train.segment_len),
            ["finished", "interrupted (resumes)", "to train"][state]
        );
    }
    let _ = writeln!(
        out,
        "\n{} cells: {} finished, {} interrupted, {} to train",
        plan.len(),
        counts[0],
        counts[1],
        counts[2]
    );
    Ok(out)
}

/// Trains one cell (continuing its checkpoint when `resume`) and records
/// its figures in its directory.
fn train_cell(
    run: PlannedRun,
    backend: BackendKind,
    resume: bool,
    progress: bool,
) -> Result<CompareRow> {
    let PlannedRun {
        setting,
        x,
        seed,
        spec,
        config,
        task,
        init_from,
    } = run;
    let dir = run_dir(&config);
    // A cell from pre-trained weights starts as `memlab import` leaves a
    // run (step 0, the folder's weights) and trains on from there.
    let imported = match &init_from {
        // (Training on from its step-0 checkpoint keeps no metrics of a run
        // the directory held before: `--fresh` replaces it whole.)
        Some(model_dir) if !resume => {
            crate::hf::import_into(model_dir, &config, task.as_ref(), &dir).with_context(|| {
                format!("loading {} into `{}`", model_dir.display(), spec.label)
            })?;
            true
        }
        _ => false,
    };
    let options = TrainOptions {
        run_dir: dir,
        resume: resume || imported,
        overwrite: !resume && !imported,
        memory_limit: None,
        progress: progress.then(progress_bar),
    };
    let mut trained = None;
    let started = std::time::Instant::now();
    let peak = crate::alloc::peak_during(|| {
        trained = Some(crate::train_model(
            &config,
            &spec,
            task.as_ref(),
            &options,
            backend,
            None,
        ));
    });
    let report = trained
        .expect("the closure ran")
        .with_context(|| format!("training `{}` in setting `{setting}`", spec.label))?
        .expect("a run of this process alone reports");
    let row = CompareRow {
        setting,
        x,
        model: spec.label.clone(),
        arch: spec.arch.clone(),
        seed,
        parameters: report.model.parameters,
        memory_floats_per_sequence: report.model.memory_floats_per_sequence,
        segments: task.seq_len().div_ceil(config.train.segment_len),
        metric: report.eval.metric,
        value: report.eval.value,
        loss: report.eval.loss,
        accuracy: report.eval.accuracy,
        generated_accuracy: report.eval.generated_accuracy,
        generated_exact_match: report.eval.generated_exact_match,
        tokens_per_second: report.tokens_per_second,
        peak_heap_bytes: peak.filter(|_| backend.is_cpu()).map(|b| b as u64),
        seconds: started.elapsed().as_secs_f64(),
        steps: Some(report.steps),
        flat: report.flat,
    };
    write_cell(&options.run_dir, &row)?;
    Ok(row)
}

/// A (setting, model) over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct CompareSummary {
    pub setting: String,
    pub x: Option<f64>,
    pub model: String,
    pub arch: String,
    pub seeds: Vec<u64>,
    pub parameters: usize,
    pub memory_floats_per_sequence: usize,
    pub segments: usize,
    pub metric: Metric,
    pub value: Spread,
    pub loss: Spread,
    pub accuracy: Spread,
    pub generated_accuracy: Option<Spread>,
    pub generated_exact_match: Option<Spread>,
    pub tokens_per_second: Spread,
    pub peak_heap_bytes: Option<Spread>,
    pub seconds: Spread,
}

/// The cells grouped by (setting, model), in the order they first appear.
pub fn summarize(rows: &[CompareRow]) -> Vec<CompareSummary> {
    let mut groups: Vec<Vec<&CompareRow>> = Vec::new();
    for row in rows {
        match groups
            .iter_mut()
            .find(|g| g[0].setting == row.setting && g[0].model == row.model)
        {
            Some(g) => g.push(row),
            None => groups.push(vec![row]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let spread = |f: &dyn Fn(&CompareRow) -> f64| {
                Spread::of(&g.iter().map(|r| f(r)).collect::<Vec<_>>()).expect("a group has a row")
            };
            let optional = |f: &dyn Fn(&CompareRow) -> Option<f64>| {
                let values: Option<Vec<f64>> = g.iter().map(|r| f(r)).collect();
                values.and_then(|v| Spread::of(&v))
            };
            let first = g[0];
            CompareSummary {
                setting: first.setting.clone(),
                x: first.x,
                model: first.model.clone(),
                arch: first.arch.clone(),
                seeds: g.iter().map(|r| r.seed).collect(),
                parameters: first.parameters,
                memory_floats_per_sequence: first.memory_floats_per_sequence,
                segments: first.segments,
                metric: first.metric,
                value: spread(&|r| r.value),
                loss: spread(&|r| r.loss),
                accuracy: spread(&|r| r.accuracy),
                generated_accuracy: optional(&|r| r.generated_accuracy),
                generated_exact_match: optional(&|r| r.generated_exact_match),
                tokens_per_second: spread(&|r| r.tokens_per_second),
                peak_heap_bytes: optional(&|r| r.peak_heap_bytes.map(|b| b as f64)),
                seconds: spread(&|r| r.seconds),
            }
        })
        .collect()
}

/// A figure that a row may lack, for tables.
fn optional<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "—".into(), |v| v.to_string())
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / (1u64 << 20) as f64)
}

/// The headline table: one row per model, one column per setting, each
/// cell the task's metric as mean ± std over the seeds (and how many there
/// are when they differ from the table's).
pub fn headline_table(summaries: &[CompareSummary]) -> String {
    let mut settings: Vec<&str> = Vec::new();
    let mut models: Vec<&str> = Vec::new();
    for s in summaries {
        if !settings.contains(&s.setting.as_str()) {
            settings.push(&s.setting);
        }
        if !models.contains(&s.model.as_str()) {
            models.push(&s.model);
        }
    }
    let most = summaries.iter().map(|s| s.value.n).max().unwrap_or(0);
    let metrics: Vec<&str> = {
        let mut m: Vec<&str> = summaries.iter().map(|s| metric_name(s.metric)).collect();
        m.dedup();
        m
    };
    let mut out = format!(
        "| {} (mean ± std, {most} seed{}) |",
        metrics.join(" / "),
        if most == 1 { "" } else { "s" }
    );
    for s in &settings {
        let _ = write!(out, " {s} |");
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(settings.len()));
    out.push('\n');
    for model in &models {
        let _ = write!(out, "| {model} |");
        for setting in &settings {
            let cell = summaries
                .iter()
                .find(|s| s.model == *model && s.setting == *setting);
            let text = match cell {
                Some(s) if s.value.n < most => format!("{} ({} of {most})", s.value, s.value.n),
                Some(s) => s.value.to_string(),
                None => "—".into(),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

/// Every figure of each (setting, model), mean ± std over its seeds. For a
/// task scored on its generated answer (copy, reverse, quadratic
/// equations), the generated accuracy and exact match come first: they are
/// the papers' figures; the teacher-forced accuracy follows.
pub fn summary_table(summaries: &[CompareSummary]) -> String {
    let mut out = String::from(
        "| setting | model | segments | parameters | memory floats/seq | seeds | metric | valid value | generated accuracy | generated exact match | teacher-forced accuracy | valid loss | train tokens/s | peak heap MiB | seconds per cell |\n\
         | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.0} |",
            s.setting,
            s.model,
            s.segments,
            s.parameters,
            s.memory_floats_per_sequence,
            s.value.n,
            metric_name(s.metric),
            s.value,
            optional(s.generated_accuracy),
            optional(s.generated_exact_match),
            s.accuracy,
            s.loss,
            s.tokens_per_second.mean,
            optional(s.peak_heap_bytes.map(|p| mib(p.mean))),
            s.seconds.mean
        );
    }
    out
}

/// Every cell as a Markdown table.
pub fn markdown_table(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "| setting | model | seed | segments | parameters | memory floats/seq | metric | valid value | generated accuracy | generated exact match | teacher-forced accuracy | valid loss | train tokens/s | peak heap MiB | seconds | steps |\n\
         | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let four = |v: Option<f64>| optional(v.map(|v| format!("{v:.4}")));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.4} | {:.4} | {:.0} | {} | {:.0} | {} |",
            r.setting,
            r.model,
            r.seed,
            r.segments,
            r.parameters,
            r.memory_floats_per_sequence,
            metric_name(r.metric),
            r.value,
            four(r.generated_accuracy),
            four(r.generated_exact_match),
            r.accuracy,
            r.loss,
            r.tokens_per_second,
            optional(r.peak_heap_bytes.map(|b| mib(b as f64))),
            r.seconds,
            steps_note(r)
        );
    }
    out
}

/// Every cell as CSV (an absent figure is an empty field).
pub fn csv_table(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "setting,x,model,arch,seed,segments,parameters,memory_floats_per_sequence,metric,value,loss,accuracy,generated_accuracy,generated_exact_match,tokens_per_second,peak_heap_bytes,seconds,steps,flat\n",
    );
    let field = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    let shown = |v: Option<String>| v.unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.setting),
            field(r.x),
            csv_field(&r.model),
            csv_field(&r.arch),
            r.seed,
            r.segments,
            r.parameters,
            r.memory_floats_per_sequence,
            metric_name(r.metric),
            r.value,
            r.loss,
            r.accuracy,
            field(r.generated_accuracy),
            field(r.generated_exact_match),
            r.tokens_per_second,
            field(r.peak_heap_bytes.map(|b| b as f64)),
            r.seconds,
            shown(r.steps.map(|s| s.to_string())),
            shown(r.flat.map(|f| f.to_string()))
        );
    }
    out
}

/// The (setting, model) means and standard deviations as CSV.
pub fn summary_csv(summaries: &[CompareSummary]) -> String {
    let mut out = String::from(
        "setting,x,model,arch,seeds,segments,parameters,memory_floats_per_sequence,metric,value_mean,value_std,generated_accuracy_mean,generated_accuracy_std,generated_exact_match_mean,generated_exact_match_std,accuracy_mean,accuracy_std,loss_mean,loss_std,tokens_per_second_mean,peak_heap_bytes_mean,seconds_mean\n",
    );
    let pair =
        |s: Option<Spread>| s.map_or_else(|| ",".to_string(), |s| format!("{},{}", s.mean, s.std));
    for s in summaries {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&s.setting),
            s.x.map_or_else(String::new, |x| x.to_string()),
            csv_field(&s.model),
            csv_field(&s.arch),
            s.value.n,
            s.segments,
            s.parameters,
            s.memory_floats_per_sequence,
            metric_name(s.metric),
            pair(Some(s.value)),
            pair(s.generated_accuracy),
            pair(s.generated_exact_match),
            pair(Some(s.accuracy)),
            pair(Some(s.loss)),
            s.tokens_per_second.mean,
            s.peak_heap_bytes
                .map_or_else(String::new, |p| p.mean.to_string()),
            s.seconds.mean
        );
    }
    out
}

/// The comparison's figure: the task's metric (mean, error bars of one
/// standard deviation) against the settings' `x` — or, where some setting
/// gives none, the number of segments when the settings differ in it, and
/// else the settings in order, by label.
pub fn compare_chart(rows: &[CompareRow], title: &str, x_label: Option<&str>) -> Result<Chart> {
    let summaries = &summarize(rows)[..];
    if summaries.is_empty() {
        bail!("nothing to plot: the comparison has no cells");
    }
    let mut settings: Vec<&CompareSummary> = Vec::new();
    for s in summaries {
        if !settings.iter().any(|t| t.setting == s.setting) {
            settings.push(s);
        }
    }
    let mut segments: Vec<usize> = settings.iter().map(|s| s.segments).collect();
    segments.sort_unstable();
    segments.dedup();
    /// Where a (setting, model) lies on the x axis.
    type Position = Box<dyn Fn(&CompareSummary) -> f64>;
    let (x_of, x_desc, ticks): (Position, String, _) = if settings.iter().all(|s| s.x.is_some()) {
        (
            Box::new(|s| s.x.expect("checked")),
            x_label.unwrap_or("x").to_string(),
            None,
        )
    } else if segments.len() == settings.len() {
        (
            Box::new(|s| s.segments as f64),
            x_label.unwrap_or("segments").to_string(),
            None,
        )
    } else {
        let labels: Vec<String> = settings.iter().map(|s| s.setting.clone()).collect();
        let order = labels.clone();
        (
            Box::new(move |s| {
                order
                    .iter()
                    .position(|l| *l == s.setting)
                    .expect("a setting of the table") as f64
            }),
            x_label.unwrap_or("setting").to_string(),
            Some(labels),
        )
    };
    let mut series: Vec<Series> = Vec::new();
    for s in summaries {
        let x = x_of(s);
        let point = Point {
            x,
            y: s.value.mean,
            err: (s.value.n > 1).then_some(s.value.std),
        };
        // Each seed's value beside the mean: a bimodal cell (some seeds
        // learn, some stay at chance) shows as two groups, not as one
        // mean with a wide bar.
        let seeds = rows
            .iter()
            .filter(|r| r.setting == s.setting && r.model == s.model)
            .map(|r| (x, r.value));
        match series.iter_mut().find(|t| t.name == s.model) {
            Some(t) => {
                t.points.push(point);
                t.samples.extend(seeds);
            }
            None => series.push(Series {
                name: s.model.clone(),
                points: vec![point],
                samples: seeds.collect(),
            }),
        }
    }
    let mut marks: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x))
        .collect();
    marks.sort_by(f64::total_cmp);
    marks.dedup();
    for s in &mut series {
        s.points.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    let most = summaries.iter().map(|s| s.value.n).max().unwrap_or(1);
    let metrics: Vec<&str> = {
        let mut m: Vec<&str> = summaries.iter().map(|s| metric_name(s.metric)).collect();
        m.dedup();
        m
    };
    Ok(Chart {
        title: title.to_string(),
        x_desc,
        y_desc: if most > 1 {
            format!("{} (mean ± std, {most} seeds)", metrics.join(" / "))
        } else {
            metrics.join(" / ")
        },
        log_x: false,
        log_y: false,
        x_marks: ticks.is_none().then_some(marks),
        x_ticks: ticks,
        series,
    })
}

/// Writes compare.md (the headline, the summary and every cell),
/// compare.csv (every cell), summary.csv and compare.svg into `dir`;
/// returns the headline and summary tables as printed.
pub fn write_compare_outputs(
    dir: &Path,
    rows: &[CompareRow],
    title: &str,
    x_label: Option<&str>,
) -> Result<(String, Vec<PathBuf>)> {
    let summaries = summarize(rows);
    let printed = format!(
        "{}\n{}",
        headline_table(&summaries),
        summary_table(&summaries)
    );
    let md = format!(
        "# {title}\n\n{}\n## Every (setting, model), over its seeds\n\n{}\n## Every cell\n\n{}",
        headline_table(&summaries),
        summary_table(&summaries),
        markdown_table(rows)
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        (dir.join("compare.md"), md),
        (dir.join("compare.csv"), csv_table(rows)),
        (dir.join("summary.csv"), summary_csv(&summaries)),
        (
            dir.join("compare.svg"),
            compare_chart(rows, title, x_label)?.svg()?,
        ),
    ];
    for (path, text) in &files {
        write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((printed, files.into_iter().map(|(p, _)| p).collect()))
}

/// The training curves of a comparison, one figure per setting
/// (`curves-1.svg`, `curves-2.svg`… in the settings' order), written into
/// each of `dirs`: the validation metric of every cell (each model and
/// seed its own line) against the step, read from the cells'
/// `metrics.jsonl`, so that a reader sees whether each cell's curve was
/// flat where it ended. A cell without a log (not trained in this folder)
/// is left out of its figure, and said so on stderr. Returns how many
/// figures each folder got.
pub fn write_curves(
    dirs: &[&Path],
    config: &ExperimentConfig,
    rows: &[CompareRow],
    title: &str,
) -> Result<usize> {
    let runs = compared_runs(config)?;
    let mut settings: Vec<&str> = Vec::new();
    for run in &runs {
        if !settings.contains(&run.setting.as_str()) {
            settings.push(&run.setting);
        }
    }
    let mut figures = 0;
    for (i, setting) in settings.iter().enumerate() {
        let mut series = Vec::new();
        for run in runs.iter().filter(|r| r.setting == *setting) {
            let log = run_dir(&run.config).join("metrics.jsonl");
            if !log.exists() {
                eprintln!(
                    "note: {} has no metrics.jsonl; its curve is left out",
                    log.display()
                );
                continue;
            }
            series.push(Series {
                name: format!("{}, seed {}", run.spec.label, run.seed),
                points: crate::plot::read_curve(&log, "value", "valid")?
                    .into_iter()
                    .map(|(x, y)| Point { x, y, err: None })
                    .collect(),
                ..Series::default()
            });
        }
        if series.is_empty() {
            continue;
        }
        let metric = rows
            .iter()
            .find(|r| r.setting == *setting)
            .map_or("value", |r| metric_name(r.metric));
        let svg = Chart {
            title: format!("{title}: {setting}"),
            x_desc: "step".into(),
            y_desc: format!("valid {metric}"),
            series,
            ..Chart::default()
        }
        .svg()?;
        for dir in dirs {
            let path = dir.join(format!("curves-{}.svg", i + 1));
            write_atomically(&path, svg.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        figures += 1;
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(setting: &str, model: &str, seed: u64, value: f64, segments: usize) -> CompareRow {
        CompareRow {
            setting: setting.into(),
            x: None,
            model: model.into(),
            arch: "baseline".into(),
            seed,
            parameters: 10,
            memory_floats_per_sequence: 0,
            segments,
            metric: Metric::GeneratedAccuracy,
            value,
            loss: 1.0,
            accuracy: value,
            generated_accuracy: Some(value),
            generated_exact_match: Some(0.0),
            tokens_per_second: 100.0,
            peak_heap_bytes: None,
            seconds: 1.0,
            steps: Some(100),
            flat: None,
        }
    }

    /// Cells of one (setting, model) pool their seeds; the headline table
    /// puts models in rows, settings in columns, and says where a cell has
    /// fewer seeds than the others.
    #[test]
    fn seeds_pool_into_mean_and_std() {
        let rows = [
            row("1 seg", "a", 1, 1.0, 1),
            row("3 seg", "a", 1, 0.2, 3),
            row("1 seg", "a", 2, 0.5, 1),
            row("3 seg", "a", 2, 0.4, 3),
            row("1 seg", "b", 1, 0.125, 1),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].setting.as_str(), s[0].model.as_str()), ("1 seg", "a"));
        assert_eq!(s[0].seeds, [1, 2]);
        assert!((s[0].value.mean - 0.75).abs() < 1e-12);
        assert!((s[0].value.std - 0.125f64.sqrt()).abs() < 1e-12);
        assert!((s[1].value.mean - 0.3).abs() < 1e-12);
        let table = headline_table(&s);
        assert!(table.contains("| generated accuracy (mean ± std, 2 seeds) | 1 seg | 3 seg |"));
        assert!(
            table.contains("| a | 0.7500 ± 0.3536 | 0.3000 ± 0.1414 |"),
            "{table}"
        );
        assert!(table.contains("| b | 0.1250 (1 of 2) | — |"), "{table}");
        // The settings differ in their segments: those are the x axis.
        let chart = compare_chart(&rows, "t", None).unwrap();
        assert_eq!(chart.x_desc, "segments");
        let a = &chart.series[0];
        assert_eq!(
            a.points
                .iter()
                .map(|p| (p.x, p.err.is_some()))
                .collect::<Vec<_>>(),
            [(1.0, true), (3.0, true)]
        );
        // Every seed is drawn beside the mean, and only the settings'
        // positions are labelled.
        assert_eq!(a.samples, [(1.0, 1.0), (1.0, 0.5), (3.0, 0.2), (3.0, 0.4)]);
        assert_eq!(chart.x_marks.as_deref(), Some(&[1.0, 3.0][..]));
        assert!(chart.series[1].points[0].err.is_none());
    }

    /// Settings with the same number of segments and no `x` are placed in
    /// order and labelled on the axis.
    #[test]
    fn settings_without_a_position_are_categories() {
        let rows = [
            row("depth 0", "a", 1, 0.5, 3),
            row("depth 2", "a", 1, 0.6, 3),
        ];
        let chart = compare_chart(&rows, "t", None).unwrap();
        assert_eq!(
            chart.x_ticks.as_deref(),
            Some(&["depth 0".to_string(), "depth 2".to_string()][..])
        );
        assert_eq!(chart.series[0].points[1].x, 1.0);
    }

    /// A cell's directory holding a run of another config is refused,
    /// naming the fields; the same config with `cell.toml` is kept, its
    /// figures bit for bit.
    #[test]
    fn a_cell_directory_of_another_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = ExperimentConfig::from_table(
            memlab_core::config::parse_toml("[task]\nkind = \"copy\"\n[train]\nsteps = 500\n")
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            cell_state(dir.path(), &config),
            Ok(CellState::Empty)
        ));
        let mut other = config.clone();
        other.train.steps = 600;
        std::fs::write(dir.path().join("config.toml"), other.to_toml()).unwrap();
        let err = cell_state(dir.path(), &config).err().unwrap().to_string();
        assert!(
            err.contains("`train.steps` differs") && err.contains("--fresh"),
            "{err}"
        );
        std::fs::write(dir.path().join("config.toml"), config.to_toml()).unwrap();
        // A float of 17 significant digits (seen read back one ulp off
        // through serde_json) and an absent figure.
        let mut kept = row("s", "m", 1, 0.5, 1);
        kept.loss = 1.8400975093245506;
        kept.generated_accuracy = None;
        write_cell(dir.path(), &kept).unwrap();
        match cell_state(dir.path(), &config).unwrap() {
            CellState::Finished(row) => assert_eq!(*row, kept),
            _ => panic!("a finished cell is kept"),
        }
        let mut config = config;
        config.run.name = "matrix/cell-seed1".into();
        // A cell trained before the stopping rule's fields existed: its
        // config.toml lacks them, and its cell.toml lacks `steps` and
        // `flat`. It is kept, with the steps it trained.
        let old_config = config
            .to_toml()
            .lines()
            .filter(|l| !l.starts_with("flat_"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!old_config.contains("flat_evals"));
        std::fs::write(dir.path().join("config.toml"), old_config).unwrap();
        let old_cell = toml::to_string(&kept)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("steps") && !l.starts_with("flat"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join(CELL_FILE), old_cell).unwrap();
        match cell_state(dir.path(), &config) {
            Ok(CellState::Finished(row)) => {
                assert_eq!(row.steps, Some(500));
                assert_eq!(row.flat, None);
            }
            Ok(_) => panic!("an older finished cell is kept"),
            Err(e) => panic!("an older finished cell is kept: {e}"),
        }
    }
}

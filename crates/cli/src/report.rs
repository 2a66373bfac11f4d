//! `memlab report`: the figures of a Markdown document (docs/reproductions.md)
//! generated from the comparison files published beside it
//! (`memlab compare --publish`: `summary.csv`, one row per setting and
//! model over its seeds; `compare.csv`, one row per cell), never typed.
//!
//! A generated part sits between two HTML comments, which Markdown does not
//! show; the first says what to generate:
//!
//! ```text
//! <!-- report: table dir=reproductions/rmt-copy-segments title="copy" -->
//! | copy | 1 segment | 2 segments |
//! ...
//! <!-- /report -->
//! RMT reaches <!-- report: value dir=reproductions/rmt-copy-segments model="rmt" setting="9 segments" digits=2 -->0.52<!-- /report --> at 9 segments.
//! ```
//!
//! What can be generated ([`Spec`]): `table` (models × settings, mean ±
//! std of a field, optionally every seed), `fields` ((setting, model) ×
//! fields), `value` (one statistic of one (setting, model)), `row` (one
//! model's means over the settings), `gap` (the range over settings of one
//! model's figure minus, or over, another's, in the same setting or in
//! `minus_setting`), `range` (the lowest and highest of a field over
//! models, settings and seeds), `cells` and `time` (how many cells, how long they
//! trained, summed over one or every published comparison), and `runs`
//! (a paper's own results, one row per run: [`runs`]). `dir` and `file`
//! are relative to the document's folder. [`check`] regenerates every part
//! and names the first one that differs, down to its cell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

mod runs;

const OPEN: &str = "<!-- report:";
const CLOSE: &str = "<!-- /report -->";

/// One generated part: what the opening comment asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The opening comment's text after `report:`, as written (it names the
    /// part in errors).
    pub text: String,
    pub kind: String,
    pub args: BTreeMap<String, String>,
}

impl Spec {
    /// Parses `KIND key=value key="a value" ...`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut words = split_words(text)?.into_iter();
        let kind = words
            .next()
            .ok_or_else(|| anyhow!("an empty `report:` comment"))?;
        let mut args = BTreeMap::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| anyhow!("`{word}` in `report: {text}` is not key=value"))?;
            args.insert(key.to_string(), value.to_string());
        }
        Ok(Self {
            text: text.trim().to_string(),
            kind,
            args,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.args.get(key).map(String::as_str)
    }

    fn need(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| anyhow!("`report: {}` needs `{key}=`", self.text))
    }

    fn digits(&self, default: usize) -> Result<usize> {
        match self.get("digits") {
            None => Ok(default),
            Some(d) => d
                .parse()
                .map_err(|_| anyhow!("`digits={d}` in `report: {}` is not a count", self.text)),
        }
    }

    /// The field's name in the CSVs (`value`, `loss`, `accuracy`,
    /// `generated_accuracy`, `generated_exact_match`, ...).
    fn field(&self) -> &str {
        self.get("field").unwrap_or("value")
    }
}

/// Splits on spaces outside double quotes, dropping the quotes.
fn split_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if quoted {
        bail!("an unclosed quote in `report: {text}`");
    }
    if any {
        words.push(word);
    }
    Ok(words)
}

/// A CSV file's rows as maps from its header's names.
struct Csv {
    path: PathBuf,
    rows: Vec<BTreeMap<String, String>>,
}

impl Csv {
    fn read(path: &Path) -> Result<Self> {
        let mut reader =
            csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let header = reader
            .headers()
            .with_context(|| format!("reading {}", path.display()))?
            .clone();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.with_context(|| format!("reading {}", path.display()))?;
            rows.push(
                header
                    .iter()
                    .zip(record.iter())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            rows,
        })
    }

    fn number(&self, row: &BTreeMap<String, String>, column: &str) -> Result<f64> {
        let text = row
            .get(column)
            .ok_or_else(|| anyhow!("{} has no column `{column}`", self.path.display()))?;
        text.parse().map_err(|_| {
            anyhow!(
                "{}: `{column}` is `{text}`, not a number",
                self.path.display()
            )
        })
    }

    /// The distinct values of `column`, in the order they first appear.
    fn ordered(&self, column: &str) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for row in &self.rows {
            if let Some(v) = row.get(column)
                && !seen.contains(v)
            {
                seen.push(v.clone());
            }
        }
        seen
    }

    /// The rows of (setting, model): one in a summary, one per seed in
    /// the cells.
    fn rows_of<'a>(
        &'a self,
        setting: &'a str,
        model: &'a str,
    ) -> impl Iterator<Item = &'a BTreeMap<String, String>> {
        self.rows.iter().filter(move |r| {
            r.get("setting").map(String::as_str) == Some(setting)
                && r.get("model").map(String::as_str) == Some(model)
        })
    }
}

/// The published comparison `dir` (relative to `base`): its summary and cells.
struct Published {
    summary: Csv,
    cells: Csv,
}

impl Published {
    fn read(base: &Path, dir: &str) -> Result<Self> {
        let dir = base.join(dir);
        Ok(Self {
            summary: Csv::read(&dir.join("summary.csv"))?,
            cells: Csv::read(&dir.join("compare.csv"))?,
        })
    }

    /// The list `key=` names (separated by `;`), or else every value of
    /// the summary's `column` in the order the comparison ran them.
    fn pick(&self, spec: &Spec, key: &str, column: &str) -> Vec<String> {
        match spec.get(key) {
            Some(list) => list.split(';').map(str::to_string).collect(),
            None => self.summary.ordered(column),
        }
    }

    /// `field`'s mean and std over the seeds of (setting, model), and every
    /// seed's value in seed order.
    fn figure(
        &self,
        setting: &str,
        model: &str,
        field: &str,
        stat: Stat,
    ) -> Result<Option<Figure>> {
        let Some(row) = self.summary.rows_of(setting, model).next() else {
            return Ok(None);
        };
        // A figure that does not vary over seeds (`parameters`,
        // `memory_floats_per_sequence`) has its own column, no `_mean`.
        let mean_column = format!("{field}_mean");
        let mean = if row.contains_key(&mean_column) || !row.contains_key(field) {
            self.summary.number(row, &mean_column)?
        } else {
            self.summary.number(row, field)?
        };
        let std = match stat {
            Stat::MeanStd => self.summary.number(row, &format!("{field}_std"))?,
            Stat::Mean => f64::NAN,
        };
        let mut seeds = Vec::new();
        for cell in self.cells.rows_of(setting, model) {
            // `flat` is empty for a cell trained without a stopping rule
            // (and absent from files written before it).
            let unflat = cell.get("flat").is_some_and(|f| f == "false");
            seeds.push((
                self.cells.number(cell, "seed")?,
                self.cells.number(cell, field)?,
                unflat,
            ));
        }
        seeds.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Some(Figure {
            mean,
            std,
            unflat: seeds.iter().map(|s| s.2).collect(),
            seeds: seeds.into_iter().map(|s| s.1).collect(),
        }))
    }
}

struct Figure {
    mean: f64,
    std: f64,
    seeds: Vec<f64>,
    /// Each seed's cell hit `train.steps` before its stopping rule found
    /// the curve flat (`flat = false` in compare.csv).
    unflat: Vec<bool>,
}

/// Every comparison published under `base/reproductions`, or the one `dir`.
fn published_dirs(base: &Path, dir: Option<&str>) -> Result<Vec<String>> {
    if let Some(dir) = dir {
        return Ok(vec![dir.to_string()]);
    }
    let root = base.join("reproductions");
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        if entry.path().join("compare.csv").exists() {
            dirs.push(format!(
                "reproductions/{}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The text `spec` stands for, from the files under `base` (the
/// document's folder).
pub fn render(spec: &Spec, base: &Path) -> Result<String> {
    let in_spec = |e: anyhow::Error| e.context(format!("in `report: {}`", spec.text));
    match spec.kind.as_str() {
        "table" => render_table(spec, base).map_err(in_spec),
        "fields" => render_fields(spec, base).map_err(in_spec),
        "runs" => runs::render(spec, base).map_err(in_spec),
        "value" => {
            let published = Published::read(base, spec.need("dir")?).map_err(in_spec)?;
            let (setting, model) = (spec.need("setting")?, spec.need("model")?);
            // A field the summary gives no std of (peak heap, tokens/s)
            // has a mean and seeds alone.
            let stat = match spec.get("stat") {
                Some("std" | "mean±std") => Stat::MeanStd,
                _ => Stat::Mean,
            };
            let figure = published
                .figure(setting, model, spec.field(), stat)
                .map_err(in_spec)?
                .ok_or_else(|| anyhow!("`report: {}`: no cell ({setting}, {model})", spec.text))?;
            let digits = spec.digits(3)?;
            let k = CellFormat::of_scale(spec)?;
            let seeds: Vec<f64> = figure.seeds.iter().map(|v| v / k).collect();
            Ok(match spec.get("stat").unwrap_or("mean") {
                "mean" => format!("{:.digits$}", figure.mean / k),
                "std" => format!("{:.digits$}", figure.std / k),
                "mean±std" => {
                    format!("{:.digits$} ± {:.digits$}", figure.mean / k, figure.std / k)
                }
                "seeds" => join(&seeds, digits),
                other => bail!(
                    "`report: {}`: stat `{other}` (mean, std, mean±std or seeds)",
                    spec.text
                ),
            })
        }
        "row" => {
            // One model's means over the settings, joined by ` / `.
            let published = Published::read(base, spec.need("dir")?).map_err(in_spec)?;
            let model = spec.need("model")?;
            let settings = published.pick(spec, "settings", "setting");
            let digits = spec.digits(2)?;
            let scale = CellFormat::of_scale(spec)?;
            let mut means = Vec::new();
            for setting in &settings {
                if let Some(f) = published.figure(setting, model, spec.field(), Stat::Mean)? {
                    means.push(format!("{:.digits$}", f.mean / scale));
                }
            }
            if means.is_empty() {
                bail!("`report: {}`: model `{model}` has no cell", spec.text);
            }
            Ok(means.join(" / "))
        }
        "gap" => {
            // The range over the settings both models ran (or `settings=`)
            // of `model`'s mean minus `minus`'s (`sign=-`: `minus`'s minus
            // `model`'s; `op=ratio`: `model`'s over `minus`'s).
            let published = Published::read(base, spec.need("dir")?).map_err(in_spec)?;
            let (model, minus) = (spec.need("model")?, spec.need("minus")?);
            let mut gaps = Vec::new();
            // `minus_setting`: the other model's figure in that one setting
            // (a no-memory reference), else in the same setting.
            let minus_setting = spec.get("minus_setting");
            let combine: fn(f64, f64) -> f64 = match (
                spec.get("op").unwrap_or("minus"),
                spec.get("sign"),
            ) {
                ("minus", None | Some("+")) => |a: f64, b: f64| a - b,
                ("minus", Some("-")) => |a: f64, b: f64| b - a,
                ("ratio", None) => |a: f64, b: f64| a / b,
                (op, sign) => bail!(
                    "`report: {}`: op `{op}` with sign `{}` (op=minus with sign=+ or -, or op=ratio)",
                    spec.text,
                    sign.unwrap_or("")
                ),
            };
            let settings = published.pick(spec, "settings", "setting");
            for setting in settings {
                let a = published.figure(&setting, model, spec.field(), Stat::Mean)?;
                let b = published.figure(
                    minus_setting.unwrap_or(&setting),
                    minus,
                    spec.field(),
                    Stat::Mean,
                )?;
                if let (Some(a), Some(b)) = (a, b) {
                    gaps.push(combine(a.mean, b.mean));
                }
            }
            if gaps.is_empty() {
                bail!("`report: {}`: no setting holds both models", spec.text);
            }
            Ok(span(&gaps, spec.digits(2)?))
        }
        "range" => render_range(spec, base).map_err(in_spec),
        "cells" | "time" => {
            let mut cells = 0usize;
            let mut seconds = 0.0;
            for dir in published_dirs(base, spec.get("dir"))? {
                let published = Published::read(base, &dir).map_err(in_spec)?;
                for row in &published.cells.rows {
                    cells += 1;
                    seconds += published.cells.number(row, "seconds")?;
                }
            }
            if spec.kind == "cells" {
                return Ok(cells.to_string());
            }
            let digits = spec.digits(0)?;
            Ok(match spec.get("unit").unwrap_or("minutes") {
                "minutes" => format!("{:.digits$}", seconds / 60.0),
                "hours" => format!("{:.digits$}", seconds / 3600.0),
                other => bail!("`report: {}`: unit `{other}` (minutes or hours)", spec.text),
            })
        }
        other => bail!(
            "`report: {}`: unknown kind `{other}` (table, fields, value, row, gap, range, cells, time, runs)",
            spec.text
        ),
    }
}

/// The lowest–highest of `field` over `models=` and `settings=` (lists
/// separated by `;`, each all the comparison ran when not given): over
/// every seed (`over=seeds`, the default) or the seeds' means
/// (`over=means`), divided by `scale`.
fn render_range(spec: &Spec, base: &Path) -> Result<String> {
    let published = Published::read(base, spec.need("dir")?)?;
    let pick = |key: &str, column: &str| published.pick(spec, key, column);
    let means = match spec.get("over").unwrap_or("seeds") {
        "seeds" => false,
        "means" => true,
        other => bail!("over `{other}` (seeds or means)"),
    };
    let scale = CellFormat::of_scale(spec)?;
    let mut values = Vec::new();
    for model in pick("models", "model") {
        for setting in pick("settings", "setting") {
            if let Some(f) = published.figure(&setting, &model, spec.field(), Stat::Mean)? {
                if means {
                    values.push(f.mean / scale);
                } else {
                    values.extend(f.seeds.iter().map(|v| v / scale));
                }
            }
        }
    }
    if values.is_empty() {
        bail!("no cell of these models and settings");
    }
    Ok(span(&values, spec.digits(3)?))
}

/// The lowest–highest of `values`, or one figure where the two read the
/// same at `digits`.
fn span(values: &[f64], digits: usize) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = (format!("{lo:.digits$}"), format!("{hi:.digits$}"));
    if lo == hi { lo } else { format!("{lo}–{hi}") }
}

fn join(values: &[f64], digits: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Models down, settings across (both in the order the comparison ran
/// them, or `models=` / `settings=` lists separated by `;`), each cell the
/// mean ± std of the field over the seeds (`seeds=yes`: every seed beside
/// it), `—` where the model did not run.
fn render_table(spec: &Spec, base: &Path) -> Result<String> {
    let published = Published::read(base, spec.need("dir")?)?;
    let pick = |key: &str, column: &str| published.pick(spec, key, column);
    let settings = pick("settings", "setting");
    let models = pick("models", "model");
    let format = CellFormat::of(spec)?;
    let title = spec.get("title").unwrap_or("mean ± std over seeds");
    let mut rows = Vec::with_capacity(models.len());
    for model in &models {
        let mut cells = Vec::with_capacity(settings.len());
        for setting in &settings {
            let cell = published.figure(setting, model, spec.field(), format.stat)?;
            cells.push(format.cell(cell.as_ref()));
        }
        rows.push((model.clone(), cells));
    }
    Ok(markdown_table(title, &settings, &rows))
}

/// A Markdown table: `title` over the row labels, `headers` over the
/// right-aligned figure columns.
fn markdown_table(title: &str, headers: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut out = format!("| {title} | {} |\n", headers.join(" | "));
    out.push_str(&format!("| --- |{}", " ---: |".repeat(headers.len())));
    for (label, cells) in rows {
        out.push_str(&format!("\n| {label} | {} |", cells.join(" | ")));
    }
    out
}

/// How a table writes a figure: `digits`, `scale` (a divisor: 1048576 for
/// MiB), `stat=mean` (the mean alone; else mean ± std) and `seeds=yes`
/// (every seed in brackets after it).
struct CellFormat {
    digits: usize,
    scale: f64,
    stat: Stat,
    seeds: bool,
}

impl CellFormat {
    /// `scale=`: the divisor every figure is shown over (1 when not given).
    fn of_scale(spec: &Spec) -> Result<f64> {
        match spec.get("scale") {
            None => Ok(1.0),
            Some(s) => s
                .parse()
                .map_err(|_| anyhow!("`scale={s}` in `report: {}` is not a number", spec.text)),
        }
    }

    fn of(spec: &Spec) -> Result<Self> {
        let scale = Self::of_scale(spec)?;
        let stat = match spec.get("stat") {
            None | Some("mean±std") => Stat::MeanStd,
            Some("mean") => Stat::Mean,
            Some(other) => bail!("`report: {}`: stat `{other}` (mean or mean±std)", spec.text),
        };
        Ok(Self {
            digits: spec.digits(4)?,
            scale,
            stat,
            seeds: spec.get("seeds") == Some("yes"),
        })
    }

    fn cell(&self, figure: Option<&Figure>) -> String {
        let Some(f) = figure else {
            return "—".into();
        };
        let (d, k) = (self.digits, self.scale);
        let mut text = match self.stat {
            Stat::Mean => format!("{:.d$}", f.mean / k),
            Stat::MeanStd => format!("{:.d$} ± {:.d$}", f.mean / k, f.std / k),
        };
        if self.seeds {
            let seeds: Vec<String> = f
                .seeds
                .iter()
                .zip(&f.unflat)
                .map(|(v, unflat)| format!("{:.d$}{}", v / k, if *unflat { UNFLAT } else { "" }))
                .collect();
            text.push_str(&format!(" ({})", seeds.join(", ")));
        } else if f.unflat.contains(&true) {
            text.push_str(UNFLAT);
        }
        text
    }
}

/// The mark of a figure whose cell hit its step cap with the curve not yet
/// flat under its stopping rule (issue 37: such cells are marked in the
/// tables); after the seed's value, or after the mean when the seeds are
/// not shown and any of them is so.
const UNFLAT: &str = "†";

/// What a table cell shows of the seeds.
#[derive(Clone, Copy, PartialEq)]
enum Stat {
    /// The mean alone (for a column the summary gives no std of).
    Mean,
    MeanStd,
}

/// Rows of (setting, model), in the order the comparison ran them, labelled
/// `model, setting`; columns `columns="field:header;field:header"`, each
/// cell as [`CellFormat`] says.
fn render_fields(spec: &Spec, base: &Path) -> Result<String> {
    let published = Published::read(base, spec.need("dir")?)?;
    let format = CellFormat::of(spec)?;
    let columns: Vec<(&str, &str)> = spec
        .need("columns")?
        .split(';')
        .map(|c| c.split_once(':').unwrap_or((c, c)))
        .collect();
    let title = spec.get("title").unwrap_or("mean ± std over seeds");
    let headers: Vec<String> = columns.iter().map(|c| c.1.to_string()).collect();
    let mut rows = Vec::with_capacity(published.summary.rows.len());
    for row in &published.summary.rows {
        let column = |name: &str| {
            row.get(name).ok_or_else(|| {
                anyhow!(
                    "{} has no column `{name}`",
                    published.summary.path.display()
                )
            })
        };
        let (setting, model) = (column("setting")?, column("model")?);
        let mut cells = Vec::with_capacity(columns.len());
        for (field, _) in &columns {
            let cell = published.figure(setting, model, field, format.stat)?;
            cells.push(format.cell(cell.as_ref()));
        }
        rows.push((format!("{model}, {setting}"), cells));
    }
    Ok(markdown_table(title, &headers, &rows))
}

/// A generated part of a document: its spec and the byte range of what
/// the document holds for it.
struct Part {
    spec: Spec,
    content: std::ops::Range<usize>,
}

fn parts(doc: &str) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut at = 0;
    while let Some(found) = doc[at..].find(OPEN) {
        let open = at + found;
        let line = doc[..open].matches('\n').count() + 1;
        let end_of_open = doc[open..]
            .find("-->")
            .map(|i| open + i)
            .ok_or_else(|| anyhow!("line {line}: a `report:` comment that never closes"))?;
        let spec = Spec::parse(&doc[open + OPEN.len()..end_of_open])
            .with_context(|| format!("line {line}"))?;
        let start = end_of_open + "-->".len();
        let close = doc[start..]
            .find(CLOSE)
            .map(|i| start + i)
            .ok_or_else(|| anyhow!("line {line}: `report: {}` has no `{CLOSE}`", spec.text))?;
        if doc[start..close].contains(OPEN) {
            bail!(
                "line {line}: `report: {}` has no `{CLOSE}` before the next part",
                spec.text
            );
        }
        parts.push(Part {
            spec,
            content: start..close,
        });
        at = close + CLOSE.len();
    }
    Ok(parts)
}

/// The generated text of `part`, laid out as the document lays it: a block
/// part (its content on lines of its own) keeps its newlines.
fn generated(doc: &str, part: &Part, base: &Path) -> Result<String> {
    let text = render(&part.spec, base)?;
    Ok(if doc[part.content.clone()].starts_with('\n') {
        format!("\n{text}\n")
    } else {
        text
    })
}

/// `doc` with every generated part made anew from the files under `base`.
pub fn regenerate(doc: &str, base: &Path) -> Result<String> {
    let mut out = String::with_capacity(doc.len());
    let mut at = 0;
    for part in parts(doc)? {
        out.push_str(&doc[at..part.content.start]);
        out.push_str(&generated(doc, &part, base)?);
        at = part.content.end;
    }
    out.push_str(&doc[at..]);
    Ok(out)
}

/// How many generated parts `doc` holds.
pub fn count_parts(doc: &str) -> Result<usize> {
    Ok(parts(doc)?.len())
}

/// Checks that every generated part of `doc` is what the files give; else
/// names the first part that is not and, in a table, its first differing
/// cell (row, column, the document's text and the files').
pub fn check(doc: &str, base: &Path) -> Result<()> {
    for part in parts(doc)? {
        let have = &doc[part.content.clone()];
        let want = generated(doc, &part, base)?;
        if have != want {
            let line = doc[..part.content.start].matches('\n').count() + 1;
            bail!(
                "line {line}, `report: {}`: {}; run `memlab report --doc FILE` to regenerate it",
                part.spec.text,
                first_difference(have.trim(), want.trim())
            );
        }
    }
    Ok(())
}

/// Where `have` (the document) and `want` (the files) first differ: for a
/// table, the row (its first cell) and the column (the header's cell).
fn first_difference(have: &str, want: &str) -> String {
    let have_lines: Vec<&str> = have.lines().collect();
    let want_lines: Vec<&str> = want.lines().collect();
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    if !want.starts_with('|') {
        return format!("the document has `{have}`, the files give `{want}`");
    }
    let header = want_lines.first().map(|l| cells(l)).unwrap_or_default();
    for i in 0..have_lines.len().max(want_lines.len()) {
        let (h, w) = (have_lines.get(i), want_lines.get(i));
        if h == w {
            continue;
        }
        let (Some(h), Some(w)) = (h, w) else {
            return format!(
                "the document has {} table lines, the files give {}",
                have_lines.len(),
                want_lines.len()
            );
        };
        let (hc, wc) = (cells(h), cells(w));
        for j in 0..hc.len().max(wc.len()) {
            if hc.get(j) != wc.get(j) {
                let column = header.get(j).map_or("?", String::as_str);
                let row = wc.first().map_or("?", String::as_str);
                return format!(
                    "row `{row}`, column `{column}`: the document has `{}`, the files give `{}`",
                    hc.get(j).map_or("", String::as_str),
                    wc.get(j).map_or("", String::as_str)
                );
            }
        }
        return format!("line {} of the table differs: `{h}` against `{w}`", i + 1);
    }
    "they differ in white space".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published comparison of two settings × two models × two seeds.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("reproductions/m");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(
            m.join("summary.csv"),
            "setting,model,value_mean,value_std\n\
             1 seg,base,1,0\n1 seg,\"rmt, 6\",0.9,0.1\n2 seg,\"rmt, 6\",0.5,0.25\n",
        )
        .unwrap();
        std::fs::write(
            m.join("compare.csv"),
            "setting,model,seed,value,seconds\n\
             1 seg,base,1,1,60\n1 seg,base,2,1,60\n1 seg,\"rmt, 6\",2,1.0,30\n\
             1 seg,\"rmt, 6\",1,0.8,30\n2 seg,\"rmt, 6\",1,0.25,600\n2 seg,\"rmt, 6\",2,0.75,600\n",
        )
        .unwrap();
        dir
    }

    const DOC: &str = "Intro.\n\n<!-- report: table dir=reproductions/m title=\"acc\" digits=2 -->\n\
        | acc | 1 seg | 2 seg |\n| --- | ---: | ---: |\n| base | 1.00 ± 0.00 | — |\n\
        | rmt, 6 | 0.90 ± 0.10 | 0.50 ± 0.25 |\n<!-- /report -->\n\n\
        RMT: <!-- report: value dir=reproductions/m model=\"rmt, 6\" setting=\"1 seg\" stat=seeds digits=1 -->0.8, 1.0<!-- /report -->; \
        <!-- report: cells -->6<!-- /report --> cells in <!-- report: time unit=minutes -->23<!-- /report --> minutes.\n";

    #[test]
    fn a_document_in_step_with_its_files_passes_and_regenerates_unchanged() {
        let dir = fixture();
        check(DOC, dir.path()).unwrap();
        assert_eq!(regenerate(DOC, dir.path()).unwrap(), DOC);
        assert_eq!(count_parts(DOC).unwrap(), 4);
    }

    /// A cell that hit its cap with the curve not flat (`flat = false`) is
    /// marked after its seed's value, or after the mean when the seeds are
    /// not shown; a flat cell and one trained without a rule (empty) are
    /// not.
    #[test]
    fn cells_at_the_cap_not_flat_are_marked() {
        let dir = fixture();
        let m = dir.path().join("reproductions/m");
        std::fs::write(
            m.join("compare.csv"),
            "setting,model,seed,value,seconds,steps,flat\n\
             1 seg,base,1,1,60,100,true\n1 seg,base,2,1,60,100,\n\
             1 seg,\"rmt, 6\",2,1.0,30,100,true\n1 seg,\"rmt, 6\",1,0.8,30,100,false\n\
             2 seg,\"rmt, 6\",1,0.25,600,100,true\n2 seg,\"rmt, 6\",2,0.75,600,100,true\n",
        )
        .unwrap();
        let table = |extra: &str| {
            part(
                &format!("table dir=reproductions/m title=acc digits=2 {extra}"),
                dir.path(),
            )
            .unwrap()
        };
        assert_eq!(
            table("seeds=yes"),
            "| acc | 1 seg | 2 seg |\n| --- | ---: | ---: |\n\
             | base | 1.00 ± 0.00 (1.00, 1.00) | — |\n\
             | rmt, 6 | 0.90 ± 0.10 (0.80†, 1.00) | 0.50 ± 0.25 (0.25, 0.75) |"
        );
        assert_eq!(
            table(""),
            "| acc | 1 seg | 2 seg |\n| --- | ---: | ---: |\n\
             | base | 1.00 ± 0.00 | — |\n\
             | rmt, 6 | 0.90 ± 0.10† | 0.50 ± 0.25 |"
        );
    }

    #[test]
    fn a_cell_typed_by_hand_is_named_by_row_and_column() {
        let dir = fixture();
        let edited = DOC.replace("0.50 ± 0.25", "0.55 ± 0.25");
        let err = check(&edited, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("row `rmt, 6`, column `2 seg`")
                && err.contains("`0.55 ± 0.25`")
                && err.contains("`0.50 ± 0.25`")
                && err.contains("table dir=reproductions/m"),
            "{err}"
        );
        assert_eq!(regenerate(&edited, dir.path()).unwrap(), DOC);
    }

    #[test]
    fn a_csv_changed_without_the_document_is_caught() {
        let dir = fixture();
        let cells = dir.path().join("reproductions/m/compare.csv");
        let text = std::fs::read_to_string(&cells).unwrap();
        std::fs::write(&cells, text.replace(",600\n", ",660\n")).unwrap();
        let err = check(DOC, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("report: time unit=minutes")
                && err.contains("`23`")
                && err.contains("`25`"),
            "{err}"
        );
    }

    #[test]
    fn bad_specs_are_errors_that_name_them() {
        let dir = fixture();
        for (doc, expected) in [
            ("<!-- report: table -->x<!-- /report -->", "needs `dir=`"),
            (
                "<!-- report: chart dir=a -->x<!-- /report -->",
                "unknown kind `chart`",
            ),
            ("<!-- report: table dir=reproductions/m", "never closes"),
            ("<!-- report: cells -->6", "has no `<!-- /report -->`"),
            (
                "<!-- report: table dir=reproductions/none -->x<!-- /report -->",
                "reproductions/none/summary.csv",
            ),
            (
                "<!-- report: value dir=reproductions/m model=x setting=\"1 seg\" -->1<!-- /report -->",
                "no cell (1 seg, x)",
            ),
        ] {
            let err = format!("{:#}", check(doc, dir.path()).unwrap_err());
            assert!(err.contains(expected), "{doc}: {err}");
        }
    }

    /// A paper's results file: one row per run, as
    /// scripts/lm_rmt_results.py writes them.
    fn runs_fixture(dir: &Path) {
        let p = dir.join("reproductions/paper");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("runs.csv"),
            "dataset,n_chunks,mem_backprop_depth,seed,test acc,model\n\
             copy,1,0.0,1,1,baseline\ncopy,3,0.0,1,0.12,baseline\n\
             copy,3,2.0,1,1,RMT\ncopy,3,2.0,2,0.1,RMT\ncopy,3,2.0,3,1,RMT\n\
             reverse,3,0.0,1,0.5,baseline\n",
        )
        .unwrap();
    }

    fn part(spec: &str, dir: &Path) -> Result<String> {
        render(&Spec::parse(spec).unwrap(), dir)
    }

    #[test]
    fn runs_are_grouped_counted_and_summarised_as_written() {
        let dir = fixture();
        runs_fixture(dir.path());
        let file = "file=reproductions/paper/runs.csv";
        let table = part(
            &format!(
                "runs {file} where=dataset=copy group=\"n_chunks:segments;model;mem_backprop_depth:depth\" value=\"test acc\" digits=2"
            ),
            dir.path(),
        )
        .unwrap();
        // Groups in the file's order, `2.0` shown as `2`, the sample std
        // (n - 1) of 1, 0.1, 1: 0.5196; one run has no std.
        assert_eq!(
            table,
            "| segments | model | depth | runs | mean ± std | every run |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |\n\
             | 1 | baseline | 0 | 1 | 1.00 | 1.00 |\n\
             | 3 | baseline | 0 | 1 | 0.12 | 0.12 |\n\
             | 3 | RMT | 2 | 3 | 0.70 ± 0.52 | 1.00, 0.10, 1.00 |"
        );
        let inline = |spec: &str| {
            part(
                &format!("runs {file} value=\"test acc\" {spec}"),
                dir.path(),
            )
        };
        assert_eq!(
            inline("where=\"model=RMT\" stat=every").unwrap(),
            "1.000, 0.100, 1.000"
        );
        assert_eq!(
            inline("where=\"model=baseline\" group=n_chunks stat=every").unwrap(),
            "1.000 / 0.120, 0.500"
        );
        assert_eq!(
            inline("where=\"dataset=copy,reverse;model=baseline\" stat=range digits=2").unwrap(),
            "0.12–1.00"
        );
        assert_eq!(
            inline("where=\"model=RMT;seed=2\" stat=range").unwrap(),
            "0.100"
        );
        assert_eq!(
            inline("where=\"model=RMT\" stat=mean±std digits=4").unwrap(),
            "0.7000 ± 0.5196"
        );
        // How many runs reach 0.9 (1, 0.1, 1 for RMT: 2 of 3), per group;
        // the threshold itself counts.
        assert_eq!(
            inline("where=\"model=RMT\" stat=share above=0.9").unwrap(),
            "2 of 3"
        );
        assert_eq!(
            inline("where=\"dataset=copy\" group=model stat=share above=1").unwrap(),
            "1 of 2 / 2 of 3"
        );
        for (spec, expected) in [
            ("where=\"model=RMT\" stat=share", "needs `above=`"),
            ("where=\"model=RMT\" stat=share above=most", "`above=most`"),
            ("where=\"model=Tr-XL\"", "no row of"),
            ("where=\"arch=rmt\"", "no column `arch`"),
            ("where=model", "is not column=value"),
            ("where=\"model=RMT\" stat=median", "stat `median`"),
            ("where=\"model=RMT\"", "needs `group=`"),
        ] {
            let err = format!("{:#}", inline(spec).unwrap_err());
            assert!(err.contains(expected), "{spec}: {err}");
        }
        let err = format!(
            "{:#}",
            part("runs file=reproductions/paper/none.csv value=x", dir.path()).unwrap_err()
        );
        assert!(err.contains("reproductions/paper/none.csv"), "{err}");
    }

    #[test]
    fn ranges_ratios_and_reversed_gaps_come_from_the_cells() {
        let dir = fixture();
        let m = "dir=reproductions/m";
        let p = |spec: &str| part(spec, dir.path()).unwrap();
        // Every seed of every cell: 0.25 ... 1.
        assert_eq!(p(&format!("range {m} digits=2")), "0.25–1.00");
        // The means: 0.5, 0.9, 1.
        assert_eq!(p(&format!("range {m} over=means digits=2")), "0.50–1.00");
        assert_eq!(
            p(&format!(
                "range {m} models=\"rmt, 6\" settings=\"2 seg\" digits=2"
            )),
            "0.25–0.75"
        );
        // The summary's means, one setting both models ran.
        assert_eq!(p(&format!("gap {m} model=\"rmt, 6\" minus=base")), "-0.10");
        assert_eq!(
            p(&format!("gap {m} model=\"rmt, 6\" minus=base sign=-")),
            "0.10"
        );
        assert_eq!(
            p(&format!("gap {m} model=\"rmt, 6\" minus=base op=ratio")),
            "0.90"
        );
        assert_eq!(
            p(&format!(
                "value {m} model=\"rmt, 6\" setting=\"2 seg\" scale=0.5 stat=seeds digits=1"
            )),
            "0.5, 1.5"
        );
        let err = format!(
            "{:#}",
            part(
                &format!("gap {m} model=base minus=base op=ratio sign=-"),
                dir.path()
            )
            .unwrap_err()
        );
        assert!(err.contains("op `ratio` with sign `-`"), "{err}");
    }

    /// The project's own document: every generated part of
    /// docs/reproductions.md is what the committed CSVs give.
    #[test]
    fn docs_reproductions_is_in_step_with_its_files() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let doc = std::fs::read_to_string(docs.join("reproductions.md")).unwrap();
        assert!(count_parts(&doc).unwrap() > 0, "no generated part");
        if let Err(e) = check(&doc, &docs) {
            panic!("docs/reproductions.md: {e:#}");
        }
    }
}

//! `report: runs`: figures from a paper's own results, one row per training
//! run (docs/reproductions/lm-rmt-results/, LM-RMT's `experiment_results`
//! rows as `scripts/lm_rmt_results.py` copies them), so that the papers'
//! figures beside ours are generated from a file too, never typed.
//!
//! ```text
//! <!-- report: runs file=reproductions/lm-rmt-results/short_synthetic.csv
//!      where="dataset=copy" group="n_chunks:segments;model;mem_size:memory"
//!      value="test acc" -->
//! ```
//!
//! - `file`: the CSV, relative to the document's folder; `value`: the
//!   result column.
//! - `where="column=a,b;column=c"`: the rows kept (each column's text one
//!   of the values given, compared as written; a comma, not `|`, between
//!   values, so that a part can sit in a Markdown table's cell).
//! - `group="column:header;column"`: the runs grouped by these columns, in
//!   the order the groups first appear in the file.
//! - `stat`: `table` (the default: one row per group with its runs, mean ±
//!   std, every run), `every` (every run's value, `, ` between runs and
//!   ` / ` between groups), `range` (lowest–highest run), `mean±std`,
//!   `groups` (each group's values, ` / ` between groups), or `share`
//!   with `above=X` (each group's count of runs at X or more, "k of n",
//!   ` / ` between groups: how many seeds learn, for a bimodal result).
//! - `digits` (default 3) for the results; a group column's value is shown
//!   as written, a whole number without its `.0`.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use memlab_train::compare::Spread;

use super::{Csv, Spec, join, markdown_table, span};

/// One group of runs: its columns' values as shown, and every run's result
/// in file order.
struct Group {
    key: Vec<String>,
    values: Vec<f64>,
}

pub(super) fn render(spec: &Spec, base: &Path) -> Result<String> {
    let csv = Csv::read(&base.join(spec.need("file")?))?;
    let value = spec.need("value")?;
    let filters = filters(spec)?;
    let columns: Vec<(&str, &str)> = match spec.get("group") {
        Some(list) => list
            .split(';')
            .map(|c| c.split_once(':').unwrap_or((c, c)))
            .collect(),
        None => Vec::new(),
    };
    let mut groups: Vec<Group> = Vec::new();
    for row in &csv.rows {
        let mut kept = true;
        for (column, allowed) in &filters {
            let text = row
                .get(*column)
                .ok_or_else(|| anyhow!("{} has no column `{column}`", csv.path.display()))?;
            kept &= allowed.contains(&text.as_str());
        }
        if !kept {
            continue;
        }
        let mut key = Vec::with_capacity(columns.len());
        for (column, _) in &columns {
            let text = row
                .get(*column)
                .ok_or_else(|| anyhow!("{} has no column `{column}`", csv.path.display()))?;
            key.push(tidy(text));
        }
        let result = csv.number(row, value)?;
        match groups.iter_mut().find(|g| g.key == key) {
            Some(group) => group.values.push(result),
            None => groups.push(Group {
                key,
                values: vec![result],
            }),
        }
    }
    if groups.is_empty() {
        bail!(
            "no row of {} matches `where={}`",
            csv.path.display(),
            spec.get("where").unwrap_or("")
        );
    }
    let digits = spec.digits(3)?;
    let all: Vec<f64> = groups.iter().flat_map(|g| g.values.clone()).collect();
    let spread = |values: &[f64]| {
        let s = Spread::of(values).expect("a group holds a run");
        if s.n > 1 {
            format!("{:.digits$} ± {:.digits$}", s.mean, s.std)
        } else {
            format!("{:.digits$}", s.mean)
        }
    };
    let per_group =
        |f: &dyn Fn(&Group) -> String| groups.iter().map(f).collect::<Vec<_>>().join(" / ");
    Ok(match spec.get("stat").unwrap_or("table") {
        "table" => {
            let Some(((_, title), rest)) = columns.split_first() else {
                bail!("a `runs` table needs `group=`");
            };
            let mut headers: Vec<String> = rest.iter().map(|c| c.1.to_string()).collect();
            headers.extend(["runs", "mean ± std", "every run"].map(String::from));
            let rows: Vec<(String, Vec<String>)> = groups
                .iter()
                .map(|g| {
                    let mut cells = g.key[1..].to_vec();
                    cells.push(g.values.len().to_string());
                    cells.push(spread(&g.values));
                    cells.push(join(&g.values, digits));
                    (g.key[0].clone(), cells)
                })
                .collect();
            markdown_table(title, &headers, &rows)
        }
        "every" => per_group(&|g| join(&g.values, digits)),
        "groups" => per_group(&|g| g.key.join(", ")),
        "range" => span(&all, digits),
        "mean±std" => spread(&all),
        "share" => {
            let text = spec.need("above")?;
            let above: f64 = text.parse().map_err(|_| {
                anyhow!("`above={text}` in `report: {}` is not a number", spec.text)
            })?;
            per_group(&|g| {
                let k = g.values.iter().filter(|v| **v >= above).count();
                format!("{k} of {}", g.values.len())
            })
        }
        other => bail!("stat `{other}` (table, every, groups, range, mean±std or share)"),
    })
}

/// `where="column=a,b;column=c"` as (column, allowed values).
fn filters(spec: &Spec) -> Result<Vec<(&str, Vec<&str>)>> {
    let Some(list) = spec.get("where") else {
        return Ok(Vec::new());
    };
    list.split(';')
        .map(|f| {
            let (column, values) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("`{f}` in `where=` is not column=value"))?;
            Ok((column, values.split(',').collect()))
        })
        .collect()
}

/// A group column's value as shown: `2.0` as `2`, anything else as written.
fn tidy(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        _ => text.to_string(),
    }
}

//! `memlab bench`'s output: the Markdown tables, the CSV files and the
//! scaling plot of a [`BenchReport`]. What is measured, and how, is
//! [`memlab_zoo::bench`]'s (re-exported here).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

pub use memlab_zoo::bench::*;

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// FLOP/s in TFLOP/s with, where the device's peak is known, its fraction.
fn tflops(flops_per_s: f64, peak_tflops: Option<f64>) -> String {
    let t = flops_per_s / 1e12;
    match peak_tflops {
        Some(peak) => format!("{t:.3} ({:.1}%)", 100.0 * t / peak),
        None => format!("{t:.3}"),
    }
}

/// `median (low–high)` tokens/s.
fn rate_cell(rate: &Rate) -> String {
    format!("{:.0} ({:.0}–{:.0})", rate.median, rate.low, rate.high)
}

/// The main table as Markdown; `peak_tflops` (the device's peak, e.g. from
/// its data sheet) adds the achieved fraction of it.
pub fn bench_markdown(report: &BenchReport, peak_tflops: Option<f64>) -> String {
    let mut out = String::from(
        "Tokens/s at the median timed call, the interquartile range in brackets \
         (slow–fast quartile), over the timed calls counted in `calls` (forward / train).\n\n\
         | model | backend | batch×segment | parameters | fwd tokens/s | train tokens/s | calls | peak memory (MiB) | model MFLOPs/token | fwd TFLOP/s | train TFLOP/s |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            r.model,
            r.backend,
            r.config,
            r.parameters,
            rate_cell(&r.forward),
            r.train.as_ref().map_or("–".into(), rate_cell),
            match &r.train {
                Some(t) => format!("{} / {}", r.forward.calls, t.calls),
                None => r.forward.calls.to_string(),
            },
            r.peak_memory_bytes
                .map_or("–".into(), |b| format!("{:.1}", mib(b))),
            r.flops_per_token / 1e6,
            tflops(r.forward_flops_per_s(), peak_tflops),
            r.train_flops_per_s()
                .map_or("–".into(), |f| tflops(f, peak_tflops)),
        );
    }
    if !report.generation.is_empty() {
        out.push_str(
            "\nGreedy generation, one row from one prompt token, the next token read back \
             each time (`memlab generate`): tokens/s of the stream, which reads a partial \
             segment incrementally where the model keeps its keys and values, and of a \
             stream that re-reads the partial segment for every token.\n\n\
             | model | backend | segment | tokens | incremental | tokens/s | re-read tokens/s | speed-up | same tokens |\n\
             | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |\n",
        );
        for g in &report.generation {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2}× | {} |",
                g.model,
                g.backend,
                g.segment_len,
                g.tokens,
                if g.incremental { "yes" } else { "no" },
                rate_cell(&g.cached),
                rate_cell(&g.re_read),
                g.speedup(),
                if g.same_tokens { "yes" } else { "no" },
            );
        }
    }
    if !report.scaling.is_empty() {
        out.push_str(
            "\nForward tokens/s of one segment against the sequence length read so far \
             (memory carried), and of the baseline attending to the whole sequence:\n\n\
             | series | backend | sequence length | tokens/s |\n| --- | --- | ---: | ---: |\n",
        );
        for p in &report.scaling {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} |",
                p.series, p.backend, p.sequence_len, p.tokens_per_s
            );
        }
    }
    out
}

/// The main table as CSV.
pub fn bench_csv(report: &BenchReport) -> String {
    let mut out = String::from(
        "model,arch,backend,batch_x_segment,parameters,forward_tokens_per_s,train_tokens_per_s,peak_memory_bytes,flops_per_token,forward_flops_per_s,train_flops_per_s,\
         forward_tokens_per_s_low,forward_tokens_per_s_high,forward_calls,train_tokens_per_s_low,train_tokens_per_s_high,train_calls\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            crate::csv_field(&r.model),
            r.arch,
            r.backend,
            r.config,
            r.parameters,
            r.forward_tokens_per_s(),
            opt(r.train_tokens_per_s()),
            r.peak_memory_bytes.map_or(String::new(), |b| b.to_string()),
            r.flops_per_token,
            r.forward_flops_per_s(),
            opt(r.train_flops_per_s()),
            r.forward.low,
            r.forward.high,
            r.forward.calls,
            opt(r.train.map(|t| t.low)),
            opt(r.train.map(|t| t.high)),
            r.train.map_or(String::new(), |t| t.calls.to_string()),
        );
    }
    out
}

/// The generation rows as CSV.
pub fn generation_csv(report: &BenchReport) -> String {
    let mut out = String::from(
        "model,arch,backend,segment_len,tokens,incremental,tokens_per_s,tokens_per_s_low,tokens_per_s_high,calls,\
         re_read_tokens_per_s,re_read_tokens_per_s_low,re_read_tokens_per_s_high,re_read_calls,speedup,same_tokens\n",
    );
    for g in &report.generation {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            crate::csv_field(&g.model),
            g.arch,
            g.backend,
            g.segment_len,
            g.tokens,
            g.incremental,
            g.cached.median,
            g.cached.low,
            g.cached.high,
            g.cached.calls,
            g.re_read.median,
            g.re_read.low,
            g.re_read.high,
            g.re_read.calls,
            g.speedup(),
            g.same_tokens,
        );
    }
    out
}

/// The scaling points as CSV.
pub fn scaling_csv(report: &BenchReport) -> String {
    let mut out = String::from("series,backend,sequence_len,tokens_per_s\n");
    for p in &report.scaling {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            crate::csv_field(&p.series),
            p.backend,
            p.sequence_len,
            p.tokens_per_s
        );
    }
    out
}

/// The scaling plot: tokens/s against sequence length, both axes
/// logarithmic, one line per model and backend.
pub fn scaling_svg(report: &BenchReport, title: &str) -> Result<String> {
    use crate::plot::{Chart, Point, Series};

    if report.scaling.is_empty() {
        return Err(anyhow!("nothing to plot: no scaling points"));
    }
    let mut series: Vec<Series> = Vec::new();
    for p in &report.scaling {
        let name = format!("{} ({})", p.series, p.backend);
        let point = Point {
            x: p.sequence_len as f64,
            y: p.tokens_per_s,
            err: None,
        };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                name,
                points: vec![point],
                ..Series::default()
            }),
        }
    }
    Chart {
        title: title.to_string(),
        x_desc: "sequence length (tokens)".into(),
        y_desc: "tokens/s (forward, one segment)".into(),
        log_x: true,
        log_y: true,
        x_ticks: None,
        series,
        ..Chart::default()
    }
    .svg()
}

/// Writes bench.md, bench.csv, scaling.csv and scaling.svg into `dir`, and
/// generation.csv when generation was timed.
pub fn write_bench_outputs(
    dir: &Path,
    report: &BenchReport,
    title: &str,
    peak_tflops: Option<f64>,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![
        (dir.join("bench.md"), bench_markdown(report, peak_tflops)),
        (dir.join("bench.csv"), bench_csv(report)),
        (dir.join("scaling.csv"), scaling_csv(report)),
    ];
    if !report.scaling.is_empty() {
        files.push((dir.join("scaling.svg"), scaling_svg(report, title)?));
    }
    if !report.generation.is_empty() {
        files.push((dir.join("generation.csv"), generation_csv(report)));
    }
    for (path, text) in &files {
        memlab_train::checkpoint::write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

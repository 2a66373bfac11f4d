//! `memlab bench`'s output: the Markdown table, the CSV files and the
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

/// The main table as Markdown; `peak_tflops` (the device's peak, e.g. from
/// its data sheet) adds the achieved fraction of it.
pub fn bench_markdown(report: &BenchReport, peak_tflops: Option<f64>) -> String {
    let mut out = String::from(
        "| model | backend | batch×segment | parameters | fwd tokens/s | train tokens/s | peak memory (MiB) | model MFLOPs/token | fwd TFLOP/s | train TFLOP/s |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.2} | {} | {} |",
            r.model,
            r.backend,
            r.config,
            r.parameters,
            r.forward_tokens_per_s,
            r.train_tokens_per_s
                .map_or("–".into(), |t| format!("{t:.0}")),
            r.peak_memory_bytes
                .map_or("–".into(), |b| format!("{:.1}", mib(b))),
            r.flops_per_token / 1e6,
            tflops(r.forward_flops_per_s(), peak_tflops),
            r.train_flops_per_s()
                .map_or("–".into(), |f| tflops(f, peak_tflops)),
        );
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
        "model,arch,backend,batch_x_segment,parameters,forward_tokens_per_s,train_tokens_per_s,peak_memory_bytes,flops_per_token,forward_flops_per_s,train_flops_per_s\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            crate::csv_field(&r.model),
            r.arch,
            r.backend,
            r.config,
            r.parameters,
            r.forward_tokens_per_s,
            opt(r.train_tokens_per_s),
            r.peak_memory_bytes.map_or(String::new(), |b| b.to_string()),
            r.flops_per_token,
            r.forward_flops_per_s(),
            opt(r.train_flops_per_s()),
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
    use plotters::prelude::*;

    let points = &report.scaling;
    if points.is_empty() {
        return Err(anyhow!("nothing to plot: no scaling points"));
    }
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, 0f64, f64::MAX, 0f64);
    for p in points {
        x_lo = x_lo.min(p.sequence_len as f64);
        x_hi = x_hi.max(p.sequence_len as f64);
        y_lo = y_lo.min(p.tokens_per_s);
        y_hi = y_hi.max(p.tokens_per_s);
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        let name = format!("{} ({})", p.series, p.backend);
        let xy = (p.sequence_len as f64, p.tokens_per_s);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(xy),
            None => series.push((name, vec![xy])),
        }
    }

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x_lo * 0.8..x_hi * 1.25).log_scale(),
                (y_lo * 0.5..y_hi * 2.0).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("sequence length (tokens)")
            .y_desc("tokens/s (forward, one segment)")
            .draw()?;
        for (i, (name, xy)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(xy.iter().copied(), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart.draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Writes bench.md, bench.csv, scaling.csv and scaling.svg into `dir`.
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
    for (path, text) in &files {
        memlab_core::checkpoint::write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

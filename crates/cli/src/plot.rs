//! Line charts as SVG (plotters): the comparison's figure, the bench's
//! scaling plot and `memlab plot`'s training curves all draw through
//! [`Chart::svg`]. `memlab plot` reads runs' `metrics.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// A point of a line, with an optional error bar (± `err`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub err: Option<f64>,
}

/// One line of a chart, named in its legend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
    /// Single values drawn as small hollow marks beside the line (a
    /// comparison's seeds, whose mean the line joins).
    pub samples: Vec<(f64, f64)>,
}

/// A chart of lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    pub log_y: bool,
    /// Names for the x positions 0, 1, 2…, for settings that have no
    /// position of their own.
    pub x_ticks: Option<Vec<String>>,
    /// The only x values to label (the settings' positions), instead of
    /// evenly spaced ones.
    pub x_marks: Option<Vec<f64>>,
    pub series: Vec<Series>,
}

/// Line colours (Tableau 10): distinct on white, unlike plotters'
/// `Palette99`, whose third colour is a pale yellow.
const COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// The range an axis shows: a margin around the values (a factor on a
/// logarithmic axis), and some width when they are all equal.
fn axis_range(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        (lo * 0.8, hi * 1.25)
    } else {
        let pad = if hi > lo { (hi - lo) * 0.06 } else { 0.5 };
        (lo - pad, hi + pad)
    }
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String> {
        use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
        use plotters::prelude::*;

        let points = self.series.iter().flat_map(|s| {
            let lines = s.points.iter().map(|p| (p.x, p.y, p.err.unwrap_or(0.0)));
            lines.chain(s.samples.iter().map(|&(x, y)| (x, y, 0.0)))
        });
        let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y, e) in points {
            x_lo = x_lo.min(x);
            x_hi = x_hi.max(x);
            y_lo = y_lo.min(y - e);
            y_hi = y_hi.max(y + e);
        }
        if x_lo > x_hi {
            bail!("nothing to plot: the chart has no points");
        }
        for (log, lo, axis) in [(self.log_x, x_lo, "x"), (self.log_y, y_lo, "y")] {
            if log && lo <= 0.0 {
                bail!("a logarithmic {axis} axis needs positive values, got {lo}");
            }
        }
        let (x_lo, x_hi) = axis_range(x_lo, x_hi, self.log_x);
        let (y_lo, y_hi) = axis_range(y_lo, y_hi, self.log_y);

        /// Draws on any x and y coordinate (linear or logarithmic).
        fn draw<X, Y>(chart: &Chart, svg: &mut String, x: X, y: Y) -> Result<()>
        where
            X: AsRangedCoord<Value = f64>,
            Y: AsRangedCoord<Value = f64>,
            X::CoordDescType: ValueFormatter<f64>,
            Y::CoordDescType: ValueFormatter<f64>,
        {
            // The legend gets a panel of its own right of the plot, where
            // it can never hide a point.
            let longest = chart.series.iter().map(|s| s.name.chars().count()).max();
            let legend_width = (longest.unwrap_or(0) as u32 * 7 + 50).clamp(120, 420);
            let root = SVGBackend::with_string(svg, (820 + legend_width, 560)).into_drawing_area();
            root.fill(&WHITE)?;
            let (area, legend) = root.split_horizontally(820);
            let mut plot = ChartBuilder::on(&area)
                .caption(&chart.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x, y)?;
            let ticks = chart.x_ticks.clone();
            let marks = chart.x_marks.clone();
            let label = move |v: &f64| match (&ticks, &marks) {
                (Some(names), _) => {
                    let i = v.round();
                    if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                        names[i as usize].clone()
                    } else {
                        String::new()
                    }
                }
                (None, Some(marks)) => match marks.iter().find(|m| (*m - v).abs() < 1e-6) {
                    Some(m) => format!("{}", (m * 1e4).round() / 1e4),
                    None => String::new(),
                },
                (None, None) => format!("{}", (v * 1e4).round() / 1e4),
            };
            let mut mesh = plot.configure_mesh();
            mesh.x_desc(&chart.x_desc)
                .y_desc(&chart.y_desc)
                .x_label_formatter(&label);
            if let Some(names) = &chart.x_ticks {
                mesh.x_labels(names.len() * 2 + 1);
            }
            if chart.x_marks.is_some() {
                // Fine candidate positions, of which only the marks are
                // labelled; the x grid lines would be as fine, so none.
                mesh.x_labels(400)
                    .disable_x_mesh()
                    .set_tick_mark_size(LabelAreaPosition::Bottom, 0);
            }
            mesh.draw()?;
            for (i, s) in chart.series.iter().enumerate() {
                let (r, g, b) = COLORS[i % COLORS.len()];
                let color = RGBColor(r, g, b).to_rgba();
                let xy: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.y)).collect();
                plot.draw_series(LineSeries::new(xy.iter().copied(), color.stroke_width(2)))?;
                let y = 60 + 22 * i as i32;
                legend.draw(&PathElement::new(
                    vec![(4, y), (26, y)],
                    color.stroke_width(2),
                ))?;
                legend.draw(&Text::new(
                    s.name.clone(),
                    (32, y - 7),
                    ("sans-serif", 13).into_font(),
                ))?;
                if s.points.len() <= 64 {
                    plot.draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
                }
                plot.draw_series(
                    s.samples
                        .iter()
                        .map(|&p| Circle::new(p, 2, color.mix(0.6).stroke_width(1))),
                )?;
                plot.draw_series(s.points.iter().filter_map(|p| {
                    p.err.map(|e| {
                        ErrorBar::new_vertical(p.x, p.y - e, p.y, p.y + e, color.stroke_width(1), 8)
                    })
                }))?;
            }
            root.present()?;
            Ok(())
        }

        let mut svg = String::new();
        match (self.log_x, self.log_y) {
            (false, false) => draw(self, &mut svg, x_lo..x_hi, y_lo..y_hi)?,
            (true, false) => draw(self, &mut svg, (x_lo..x_hi).log_scale(), y_lo..y_hi)?,
            (false, true) => draw(self, &mut svg, x_lo..x_hi, (y_lo..y_hi).log_scale())?,
            (true, true) => draw(
                self,
                &mut svg,
                (x_lo..x_hi).log_scale(),
                (y_lo..y_hi).log_scale(),
            )?,
        }
        Ok(svg)
    }
}

/// What `memlab plot` draws: one field of runs' metrics.jsonl against the
/// step.
#[derive(Debug, Clone)]
pub struct CurveRequest {
    /// Run directories; a directory without metrics.jsonl stands for the
    /// runs in its subdirectories (a comparison's cells).
    pub runs: Vec<PathBuf>,
    /// The field to draw (`loss`, `accuracy`, `grad_norm`, `value`…).
    pub field: String,
    /// The lines to read: `train` or `valid`.
    pub split: String,
    /// Average each point with the `smooth − 1` logged before it.
    pub smooth: usize,
    pub log_y: bool,
}

/// The run directories `paths` stand for, and their names in the legend.
fn expand_runs(paths: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    let mut runs = Vec::new();
    for path in paths {
        if path.join("metrics.jsonl").is_file() {
            runs.push((path.display().to_string(), path.clone()));
            continue;
        }
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("{} is not a run directory", path.display()))?;
        let mut inner: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("metrics.jsonl").is_file())
            .collect();
        if inner.is_empty() {
            bail!(
                "{} holds no metrics.jsonl, nor do its subdirectories",
                path.display()
            );
        }
        inner.sort();
        for p in inner {
            let name = p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
            runs.push((name, p));
        }
    }
    Ok(runs)
}

/// The (step, value) pairs of `field` in the lines of `split` of one
/// metrics.jsonl. An unfinished last line (a run being written, or killed
/// mid-line) is left out; any other line that is not JSON is an error
/// naming it.
pub fn read_curve(path: &Path, field: &str, split: &str) -> Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut points = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() => continue,
            Err(e) => bail!("{} line {}: not JSON ({e})", path.display(), i + 1),
        };
        if value.get("split").and_then(|s| s.as_str()) != Some(split) {
            continue;
        }
        let Some(object) = value.as_object() else {
            continue;
        };
        for (k, v) in object {
            if v.is_number() && !fields.contains(k) {
                fields.push(k.clone());
            }
        }
        if let (Some(step), Some(y)) = (
            value.get("step").and_then(|s| s.as_f64()),
            value.get(field).and_then(|v| v.as_f64()),
        ) {
            points.push((step, y));
        }
    }
    if points.is_empty() {
        fields.retain(|f| f != "step");
        return Err(anyhow!(
            "{} has no `{field}` in its {split} lines{}",
            path.display(),
            if fields.is_empty() {
                " (it has no such lines)".to_string()
            } else {
                format!(" (its fields: {})", fields.join(", "))
            }
        ));
    }
    Ok(points)
}

/// `memlab plot`: the training curves of `request.runs`, one line each.
pub fn training_curves(request: &CurveRequest) -> Result<Chart> {
    if request.split != "train" && request.split != "valid" {
        bail!("--split must be train or valid, got `{}`", request.split);
    }
    let mut series = Vec::new();
    for (name, dir) in expand_runs(&request.runs)? {
        let curve = read_curve(&dir.join("metrics.jsonl"), &request.field, &request.split)?;
        let k = request.smooth.max(1);
        let points = (0..curve.len())
            .map(|i| {
                let window = &curve[i.saturating_sub(k - 1)..=i];
                Point {
                    x: curve[i].0,
                    y: window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64,
                    err: None,
                }
            })
            .collect();
        series.push(Series {
            name,
            points,
            ..Series::default()
        });
    }
    Ok(Chart {
        title: format!("{} {}", request.split, request.field),
        x_desc: "step".into(),
        y_desc: if request.smooth > 1 {
            format!(
                "{} (mean of {} logged points)",
                request.field, request.smooth
            )
        } else {
            request.field.clone()
        },
        log_x: false,
        log_y: request.log_y,
        x_ticks: None,
        series,
        ..Chart::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points, error bars and names reach the SVG; a log axis refuses a
    /// value ≤ 0 with the axis named.
    #[test]
    fn a_chart_draws_its_series() {
        let chart = Chart {
            title: "title".into(),
            x_desc: "segments".into(),
            y_desc: "accuracy".into(),
            log_x: false,
            log_y: false,
            x_ticks: None,
            x_marks: Some(vec![1.0, 3.0]),
            series: vec![Series {
                name: "rmt (8)".into(),
                samples: vec![(1.0, 1.0), (3.0, 0.4), (3.0, 0.6)],
                points: vec![
                    Point {
                        x: 1.0,
                        y: 1.0,
                        err: Some(0.0),
                    },
                    Point {
                        x: 3.0,
                        y: 0.5,
                        err: Some(0.1),
                    },
                ],
            }],
        };
        let svg = chart.svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("rmt (8)") && svg.contains("segments"));
        let log = Chart {
            log_y: true,
            series: vec![Series {
                name: "a".into(),
                points: vec![Point {
                    x: 1.0,
                    y: 0.0,
                    err: None,
                }],
                ..Series::default()
            }],
            ..chart
        };
        assert!(
            log.svg()
                .unwrap_err()
                .to_string()
                .contains("logarithmic y axis")
        );
    }

    /// Train lines give (step, field); valid lines are another split; a
    /// cut-off last line is skipped, a bad line in the middle is named.
    #[test]
    fn curves_are_read_from_metrics_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("cell");
        std::fs::create_dir(&run).unwrap();
        let log = run.join("metrics.jsonl");
        std::fs::write(
            &log,
            "{\"step\":10,\"split\":\"train\",\"loss\":2.0}\n\
             {\"step\":20,\"split\":\"train\",\"loss\":1.0}\n\
             {\"step\":20,\"split\":\"valid\",\"loss\":1.5,\"value\":0.5}\n\
             {\"step\":30,\"split\":\"tra",
        )
        .unwrap();
        assert_eq!(
            read_curve(&log, "loss", "train").unwrap(),
            [(10.0, 2.0), (20.0, 1.0)]
        );
        assert_eq!(read_curve(&log, "value", "valid").unwrap(), [(20.0, 0.5)]);
        let err = read_curve(&log, "bpc", "train").unwrap_err().to_string();
        assert!(err.contains("no `bpc`") && err.contains("loss"), "{err}");
        // The parent directory stands for its runs; smoothing averages.
        let chart = training_curves(&CurveRequest {
            runs: vec![dir.path().to_path_buf()],
            field: "loss".into(),
            split: "train".into(),
            smooth: 2,
            log_y: false,
        })
        .unwrap();
        assert_eq!(chart.series[0].name, "cell");
        assert_eq!(
            chart.series[0]
                .points
                .iter()
                .map(|p| p.y)
                .collect::<Vec<_>>(),
            [2.0, 1.5]
        );
        std::fs::write(&log, "{\"step\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let err = read_curve(&log, "loss", "train").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}

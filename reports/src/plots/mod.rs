//! The plots, drawn with plotters to SVG (inlined in the HTML) and PNG (for sharing), each with
//! the fault windows shaded and labelled. Text uses the DejaVu Sans font bundled in
//! `reports/fonts/` through plotters' `ab_glyph` support: no system font is needed. [`alerts`]
//! draws the alert bands (pending, firing, notified) on the same time axis, under the others.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor};

use plotters::coord::types::RangedCoordf64;

use crate::data::{Run, Window, OUTCOMES};

pub mod alerts;
pub mod supervisor;

const FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 320);
const SHADE: RGBColor = RGBColor(230, 80, 60);

/// Registers the bundled font once.
pub(crate) fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the bundled font did not load".to_string())
    })
    .clone()
}

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// What one plot shows.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File stem: `latency` → `plots/latency.svg`, `plots/latency.png`.
    pub name: &'static str,
    pub title: String,
    pub y_label: &'static str,
    pub lines: Vec<Line>,
    /// Stacked areas (bottom first) instead of lines.
    pub stacked: bool,
    /// A band for a state (0 closed, 1 open, 2 half-open): y axis labelled with the states.
    pub states: Option<&'static [&'static str]>,
}

pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(46, 125, 50),
    RGBColor(25, 118, 210),
    RGBColor(251, 140, 0),
    RGBColor(123, 31, 162),
    RGBColor(211, 47, 47),
    RGBColor(93, 64, 55),
    RGBColor(96, 96, 96),
    RGBColor(0, 151, 167),
];

/// The plots of a run.
pub fn plots(run: &Run) -> Vec<Plot> {
    let s = &run.series;
    let secs = |i: usize| i as f64 + 0.5;
    let mut out = Vec::new();
    let latency = |which: usize, corrected: bool| -> Vec<(f64, f64)> {
        let v = if corrected { &s.corrected } else { &s.service };
        v.iter().enumerate().filter(|(_, p)| p[which].is_finite()).map(|(i, p)| (secs(i), p[which])).collect()
    };
    let mut lines = Vec::new();
    for (i, name) in ["p50", "p95", "p99"].iter().enumerate() {
        lines.push(Line {
            label: format!("{name} corrected"),
            color: PALETTE[i + 1],
            dashed: false,
            points: latency(i, true),
        });
        lines.push(Line {
            label: format!("{name} service"),
            color: PALETTE[i + 1],
            dashed: true,
            points: latency(i, false),
        });
    }
    out.push(Plot {
        name: "latency",
        title: "POST /buy latency (corrected: from the intended send; service: from the send)".into(),
        y_label: "ms",
        lines,
        stacked: false,
        states: None,
    });
    let outcome_colors = [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[3], PALETTE[4], PALETTE[5], PALETTE[6]];
    out.push(Plot {
        name: "throughput",
        title: "answers per second by outcome (stacked)".into(),
        y_label: "answers/s",
        lines: OUTCOMES
            .iter()
            .enumerate()
            .map(|(g, label)| Line {
                label: (*label).to_string(),
                color: outcome_colors[g],
                dashed: false,
                points: s.outcomes.iter().enumerate().map(|(i, c)| (secs(i), c[g] as f64)).collect(),
            })
            .collect(),
        stacked: true,
        states: None,
    });
    let metric_lines = |prefix: &str| -> Vec<Line> {
        s.metrics
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .enumerate()
            .map(|(i, (k, v))| Line {
                label: k.split_once('|').map(|(_, c)| c.replace('|', " ")).unwrap_or_default(),
                color: PALETTE[i % PALETTE.len()],
                dashed: false,
                points: v.clone(),
            })
            .collect()
    };
    let mut stock = metric_lines("stock|");
    for (i, (item, points)) in s.completed.iter().enumerate() {
        stock.push(Line {
            label: format!("{item} completed (cumulative)"),
            color: PALETTE[(i + 4) % PALETTE.len()],
            dashed: true,
            points: points.clone(),
        });
    }
    out.push(Plot {
        name: "stock",
        title: "stock per item (processor gauge) and completed units".into(),
        y_label: "units",
        lines: stock,
        stacked: false,
        states: None,
    });
    let mut dlq = metric_lines("dlq depth|");
    for mut l in metric_lines("dlq oldest age s|") {
        l.label = format!("{} oldest age (s)", l.label);
        l.dashed = true;
        dlq.push(l);
    }
    out.push(Plot {
        name: "dlq",
        title: "DLQ depth and oldest age".into(),
        y_label: "messages / s",
        lines: dlq,
        stacked: false,
        states: None,
    });
    out.push(Plot {
        name: "breaker",
        title: "circuit breaker state per gateway".into(),
        y_label: "state",
        lines: metric_lines("breaker|"),
        stacked: false,
        states: Some(&["closed", "open", "half-open"]),
    });
    out.push(Plot {
        name: "lag",
        title: "consumer lag".into(),
        y_label: "messages",
        lines: metric_lines("lag|"),
        stacked: false,
        states: None,
    });
    out.push(Plot {
        name: "processing",
        title: "mean order processing time".into(),
        y_label: "ms",
        lines: metric_lines("processing ms|"),
        stacked: false,
        states: None,
    });
    out
}

type DrawResult = Result<(), String>;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, plot: &Plot, windows: &[Window], seconds: f64) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    // Stacked: each line is the sum of those below and itself.
    let mut lines = plot.lines.clone();
    if plot.stacked {
        let mut below: Vec<f64> = vec![0.0; lines.first().map(|l| l.points.len()).unwrap_or(0)];
        for line in &mut lines {
            for (j, p) in line.points.iter_mut().enumerate() {
                if let Some(b) = below.get_mut(j) {
                    p.1 += *b;
                    *b = p.1;
                }
            }
        }
    }
    let y_max =
        lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let y_max = if let Some(states) = plot.states { (states.len() - 1) as f64 + 0.5 } else { (y_max * 1.1).max(1.0) };
    let x_max = seconds.max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(e)?;
    let states = plot.states;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc(plot.y_label)
        .label_style(("sans-serif", 12))
        .y_label_formatter(&|v| match states {
            Some(names) if (v.fract().abs() < 1e-9) => {
                names.get(*v as usize).map(|s| s.to_string()).unwrap_or_default()
            }
            Some(_) => String::new(),
            // Enough decimals that ticks of a small or flat range read apart (0.2, 0.4 — not
            // 0, 0, 1).
            None if y_max <= 2.0 => format!("{v:.1}"),
            None => format!("{v:.0}"),
        })
        .draw()
        .map_err(e)?;
    shade(&mut chart, windows, y_max)?;
    for line in lines.iter().rev() {
        if line.points.is_empty() {
            continue;
        }
        let color = line.color;
        let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: if line.dashed { 1 } else { 2 } };
        if plot.stacked {
            chart
                .draw_series(AreaSeries::new(line.points.iter().copied(), 0.0, color.mix(0.6)).border_style(color))
                .map_err(e)?
                .label(&line.label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        } else if line.dashed {
            chart
                .draw_series(DashedLineSeries::new(line.points.iter().copied(), 6, 4, style))
                .map_err(e)?
                .label(&line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        } else {
            // A hole in the samples (a component down, a failed scrape) is a gap in the line,
            // never a straight line across what was not measured.
            for (k, segment) in segments(&line.points).into_iter().enumerate() {
                let drawn = chart.draw_series(LineSeries::new(segment.iter().copied(), style)).map_err(e)?;
                if k == 0 {
                    drawn
                        .label(&line.label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                }
            }
        }
    }
    if lines.iter().any(|l| !l.points.is_empty()) {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
    } else {
        root.draw(&Text::new("no data in this run", (SIZE.0 as i32 / 2 - 60, SIZE.1 as i32 / 2), ("sans-serif", 14)))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Lane plots (the alert bands, the supervisor's): this wide, a lane this tall, names in a
/// margin this wide.
const LANES_WIDTH: u32 = 960;
const LANE_PX: u32 = 28;
const LANE_LABEL_PX: u32 = 190;

/// The size of a lane plot with `lanes` lanes.
fn lanes_size(lanes: usize) -> (u32, u32) {
    (LANES_WIDTH, 90 + LANE_PX * lanes.max(1) as u32)
}

/// A white lane plot of `n` lanes (lane i from the top spans y in n-1-i .. n-i) on the time
/// axis of the other plots (seconds since the load started), the fault windows shaded.
fn lanes_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
    n: f64,
    seconds: f64,
    windows: &[Window],
) -> Result<Chart<'a, DB>, String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(LANE_LABEL_PX)
        .build_cartesian_2d(0f64..seconds.max(1.0), 0f64..n)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .disable_y_mesh()
        .y_labels(0)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    shade(&mut chart, windows, n)?;
    Ok(chart)
}

/// The fault windows, shaded over the whole height (`0..y_max`) and labelled.
fn shade<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, windows: &[Window], y_max: f64) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    for (i, w) in windows.iter().enumerate() {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(w.from_s, 0.0), (w.to_s.max(w.from_s + 0.2), y_max)],
                SHADE.mix(0.15).filled(),
            )))
            .map_err(e)?;
        let y = y_max * (0.97 - 0.07 * (i % 4) as f64);
        chart
            .draw_series(std::iter::once(Text::new(
                w.label.clone(),
                (w.from_s, y),
                ("sans-serif", 11).into_font().color(&SHADE),
            )))
            .map_err(e)?;
    }
    Ok(())
}

/// Samples further apart than this (seconds) are not joined: per-second series had a hole.
const GAP_S: f64 = 2.5;

/// `points` cut into runs without holes: at a NaN (an explicit missing sample) or where two
/// samples are more than [`GAP_S`] apart.
pub fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for &(x, y) in points {
        let hole = !y.is_finite() || current.last().is_some_and(|(px, _)| x - px > GAP_S);
        if hole && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if y.is_finite() {
            current.push((x, y));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The plot as an SVG document.
pub fn svg(plot: &Plot, run: &Run) -> Result<String, String> {
    font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(root, plot, &run.windows, run.series.seconds as f64)?;
    }
    Ok(out)
}

/// The plot as a PNG file.
pub fn png(plot: &Plot, run: &Run, path: &std::path::Path) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(root, plot, &run.windows, run.series.seconds as f64)
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn a_hole_in_the_samples_is_a_gap_not_a_line() {
        let pts = [(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 5.0), (4.0, 5.0), (30.0, 9.0)];
        let s = segments(&pts);
        assert_eq!(s, vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(3.0, 5.0), (4.0, 5.0)], vec![(30.0, 9.0)]]);
        assert!(segments(&[]).is_empty());
    }
}

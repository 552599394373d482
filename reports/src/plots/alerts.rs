//! The alert bands: one lane per alert that was ever pending or firing, on the time axis of the
//! other plots (seconds since the load started) with the fault windows shaded — pending light,
//! firing solid, in the alert's severity colour; a ▲ where a firing notification reached the
//! lab, a ○ where a resolved one did. Drawn from `alerts.jsonl` alone.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::RGBColor;

use rundir::{AlertPhase, AlertRecord};

use super::{font, lanes_chart, lanes_size, DrawResult};
use crate::data::{Run, Window};

/// Prometheus evaluates every second in the lab: a state seen at one evaluation holds until the
/// next, so a stretch is drawn one interval past its last evaluation.
const EVALUATION_S: f64 = 1.0;

/// One alert's lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub alert: String,
    pub severity: String,
    /// `(from, to)` seconds.
    pub pending: Vec<(f64, f64)>,
    pub firing: Vec<(f64, f64)>,
    /// When a firing / a resolved notification of it was received (seconds).
    pub notified: Vec<f64>,
    pub resolved: Vec<f64>,
}

/// Whether the run had monitoring (an `alerts.jsonl` with its setup record): only then is there
/// an alerts plot — an empty one says "nothing fired", which is evidence too.
pub fn monitored(run: &Run) -> bool {
    run.alerts.iter().any(|r| matches!(r, AlertRecord::Setup { .. }))
}

/// The lanes of a run, in the order the alerts first became active.
pub fn lanes(run: &Run) -> Vec<Lane> {
    let at = |ms: u64| (ms as f64 - run.series.start_ms as f64) / 1000.0;
    let mut lanes: Vec<(f64, Lane)> = Vec::new();
    /// The lane of `name` (made if new), its first activity moved back to `first` if earlier.
    fn lane<'a>(lanes: &'a mut Vec<(f64, Lane)>, name: &str, severity: &str, first: f64) -> &'a mut Lane {
        let i = match lanes.iter().position(|(_, l)| l.alert == name) {
            Some(i) => i,
            None => {
                let empty = Lane {
                    alert: name.to_string(),
                    severity: severity.to_string(),
                    pending: Vec::new(),
                    firing: Vec::new(),
                    notified: Vec::new(),
                    resolved: Vec::new(),
                };
                lanes.push((first, empty));
                lanes.len() - 1
            }
        };
        lanes[i].0 = lanes[i].0.min(first);
        &mut lanes[i].1
    }
    // States first: a notification of an alert never seen pending or firing still gets a lane.
    let mut notices = Vec::new();
    for r in &run.alerts {
        match r {
            AlertRecord::State { alertname, state, labels, from_ms, to_ms } => {
                let span = (at(*from_ms), at(*to_ms) + EVALUATION_S);
                let l = lane(&mut lanes, alertname, rundir::alerts::severity(labels), span.0);
                match state {
                    AlertPhase::Pending => l.pending.push(span),
                    AlertPhase::Firing => l.firing.push(span),
                }
            }
            AlertRecord::Notification { .. } => notices.push(r),
            AlertRecord::Setup { .. } => {}
        }
    }
    for r in notices {
        if let AlertRecord::Notification { alertname, status, labels, received_ms, .. } = r {
            let t = at(*received_ms);
            let l = lane(&mut lanes, alertname, rundir::alerts::severity(labels), t);
            if status == "resolved" {
                l.resolved.push(t)
            } else {
                l.notified.push(t)
            }
        }
    }
    lanes.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.alert.cmp(&b.1.alert)));
    lanes.into_iter().map(|(_, l)| l).collect()
}

fn color(severity: &str) -> RGBColor {
    match severity {
        "critical" => RGBColor(211, 47, 47),
        "warning" => RGBColor(251, 140, 0),
        "info" => RGBColor(25, 118, 210),
        _ => RGBColor(96, 96, 96),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    lanes: &[Lane],
    windows: &[Window],
    seconds: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let n = lanes.len().max(1) as f64;
    let caption = "alerts: pending (light), firing (solid), ▲ firing notice, ○ resolved notice";
    let mut chart = lanes_chart(&root, caption, n, seconds, windows)?;
    // Lane i from the top: y in (n-1-i, n-i).
    for (i, lane) in lanes.iter().enumerate() {
        let base = n - 1.0 - i as f64;
        let c = color(&lane.severity);
        let bars = lane
            .pending
            .iter()
            .map(|&(a, b)| Rectangle::new([(a, base + 0.2), (b, base + 0.8)], c.mix(0.3).filled()))
            .chain(lane.firing.iter().map(|&(a, b)| Rectangle::new([(a, base + 0.2), (b, base + 0.8)], c.filled())));
        chart.draw_series(bars).map_err(e)?;
        chart
            .draw_series(lane.notified.iter().map(|&t| TriangleMarker::new((t, base + 0.85), 6, BLACK.filled())))
            .map_err(e)?;
        chart
            .draw_series(lane.resolved.iter().map(|&t| Circle::new((t, base + 0.85), 4, BLACK.stroke_width(1))))
            .map_err(e)?;
        let (_, y) = chart.backend_coord(&(0.0, base + 0.5));
        let name =
            if lane.severity.is_empty() { lane.alert.clone() } else { format!("{} ({})", lane.alert, lane.severity) };
        let name: String = name.chars().take(30).collect();
        root.draw(&Text::new(name, (12, y - 6), ("sans-serif", 12).into_font().color(&c))).map_err(e)?;
    }
    if lanes.is_empty() {
        let (x, y) = chart.backend_coord(&(seconds.max(1.0) / 2.0, 0.5));
        root.draw(&Text::new("no alert was pending or firing", (x - 90, y - 6), ("sans-serif", 14))).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// The alert bands as an SVG document.
pub fn svg(run: &Run) -> Result<String, String> {
    font()?;
    let lanes = lanes(run);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, lanes_size(lanes.len())).into_drawing_area();
        draw(root, &lanes, &run.windows, run.series.seconds as f64)?;
    }
    Ok(out)
}

/// The alert bands as a PNG file.
pub fn png(run: &Run, path: &std::path::Path) -> Result<(), String> {
    font()?;
    let lanes = lanes(run);
    let root = BitMapBackend::new(path, lanes_size(lanes.len())).into_drawing_area();
    draw(root, &lanes, &run.windows, run.series.seconds as f64)
}

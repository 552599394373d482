//! The supervisor bands, for a run with a supervisor: one lane per service it ever acted on,
//! on the time axis of the other plots with the fault windows shaded — not ready (light, in the
//! front's rotation no more for a gateway), a ▲ at each restart (red when the start failed, with
//! its back-off), an × at each failed liveness probe. Drawn from `events.jsonl` alone.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::RGBColor;

use rundir::events::SupervisorEvent;

use super::{font, lanes_chart, lanes_size, DrawResult};
use crate::data::{Run, Window};

const NOT_READY: RGBColor = RGBColor(251, 140, 0);
const RESTART: RGBColor = RGBColor(25, 118, 210);
const FAILED: RGBColor = RGBColor(211, 47, 47);

/// One service's lane.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lane {
    pub component: String,
    /// `(from, to)` seconds not ready.
    pub not_ready: Vec<(f64, f64)>,
    /// `(second, started, back-off s)` of each restart.
    pub restarts: Vec<(f64, bool, f64)>,
    /// Failed liveness probes (seconds).
    pub probe_failures: Vec<f64>,
}

/// The lanes of a run, in the order the services were first acted on; `None` without a
/// supervisor.
pub fn lanes(run: &Run) -> Option<Vec<Lane>> {
    let events = rundir::events::supervisor_events(&run.events)?;
    let at = |ms: u64| (ms as f64 - run.series.start_ms as f64) / 1000.0;
    let end = run.series.seconds as f64;
    let mut lanes: Vec<Lane> = Vec::new();
    let mut down_since: Vec<Option<f64>> = Vec::new();
    for e in &events {
        let i = match lanes.iter().position(|l| l.component == e.component()) {
            Some(i) => i,
            None => {
                lanes.push(Lane { component: e.component().to_string(), ..Lane::default() });
                down_since.push(None);
                lanes.len() - 1
            }
        };
        let t = at(e.ts_ms());
        match e {
            SupervisorEvent::Ready { ready: false, .. } => {
                down_since[i].get_or_insert(t);
            }
            SupervisorEvent::Ready { ready: true, .. } => {
                if let Some(from) = down_since[i].take() {
                    lanes[i].not_ready.push((from, t));
                }
            }
            SupervisorEvent::Restart { ok, back_off_ms, .. } => {
                lanes[i].restarts.push((t, *ok, *back_off_ms as f64 / 1000.0));
            }
            SupervisorEvent::ProbeFailed { .. } => lanes[i].probe_failures.push(t),
        }
    }
    for (lane, since) in lanes.iter_mut().zip(down_since) {
        if let Some(from) = since {
            lane.not_ready.push((from, end.max(from)));
        }
    }
    Some(lanes)
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
    let caption = "supervisor: not ready (band), ▲ restart (red: died starting), × liveness probe failed";
    let mut chart = lanes_chart(&root, caption, n, seconds, windows)?;
    for (i, lane) in lanes.iter().enumerate() {
        let base = n - 1.0 - i as f64;
        chart
            .draw_series(lane.not_ready.iter().map(|&(a, b)| {
                Rectangle::new([(a, base + 0.2), (b.max(a + 0.1), base + 0.8)], NOT_READY.mix(0.4).filled())
            }))
            .map_err(e)?;
        chart
            .draw_series(lane.restarts.iter().map(|&(t, ok, _)| {
                TriangleMarker::new((t, base + 0.5), 6, if ok { RESTART.filled() } else { FAILED.filled() })
            }))
            .map_err(e)?;
        chart
            .draw_series(lane.probe_failures.iter().map(|&t| Cross::new((t, base + 0.85), 4, BLACK.stroke_width(1))))
            .map_err(e)?;
        let (_, y) = chart.backend_coord(&(0.0, base + 0.5));
        let label = format!("{} ({} restarts)", lane.component, lane.restarts.len());
        root.draw(&Text::new(label, (12, y - 6), ("sans-serif", 12).into_font().color(&BLACK))).map_err(e)?;
    }
    if lanes.is_empty() {
        let (x, y) = chart.backend_coord(&(seconds.max(1.0) / 2.0, 0.5));
        root.draw(&Text::new("the supervisor had nothing to do", (x - 90, y - 6), ("sans-serif", 14))).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// The supervisor bands as an SVG document; `None` for a run without a supervisor.
pub fn svg(run: &Run) -> Option<Result<String, String>> {
    let lanes = lanes(run)?;
    Some(font().and_then(|()| {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, lanes_size(lanes.len())).into_drawing_area();
            draw(root, &lanes, &run.windows, run.series.seconds as f64)?;
        }
        Ok(out)
    }))
}

/// The supervisor bands as a PNG file.
pub fn png(run: &Run, path: &std::path::Path) -> Result<(), String> {
    font()?;
    let lanes = lanes(run).unwrap_or_default();
    let root = BitMapBackend::new(path, lanes_size(lanes.len())).into_drawing_area();
    draw(root, &lanes, &run.windows, run.series.seconds as f64)
}

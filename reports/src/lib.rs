//! Everything rendered from a run directory alone (DESIGN.md).
//!
//! - [`data`]: reads the run directory — verdict, manifest, events (fault windows), and
//!   per-second series from `history.jsonl` (streamed), `metrics.jsonl`, `final_state.json`.
//! - [`plots`]: latency, throughput by outcome, stock against completed units, DLQ, breaker
//!   state, consumer lag, processing time — SVG and PNG, fault windows shaded and labelled, with
//!   a bundled font; under them, when the run had monitoring, the alert bands (pending, firing,
//!   notified) from `alerts.jsonl` ([`plots::alerts`]), and with a supervisor its restarts and
//!   readiness from `events.jsonl` ([`plots::supervisor`]).
//! - [`documents`]: `report.html` (self-contained), `summary.md`, `junit.xml`.
//! - [`compare`]: two runs side by side — deltas, regressions past a limit, overlaid plots.
//! - [`capacity`]: a capacity search's `summary.md`, `report.html` and plots, from `capacity.json`.
//! - [`gate`]: a regression gate's `gate.md`, `gate.html` and `junit.xml`, from `gate.json`.
//!
//! [`render`] writes them all into the run directory.

pub mod capacity;
pub mod compare;
pub mod data;
pub mod documents;
pub mod gate;
pub mod plots;

use std::path::{Path, PathBuf};

pub use data::ReportError;

/// What [`render`] wrote.
#[derive(Debug)]
pub struct Rendered {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub junit: PathBuf,
    pub plots: Vec<PathBuf>,
    pub outcome: rundir::Outcome,
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Read { path: path.display().to_string(), source })
}

/// Renders (or re-renders) the reports of the run in `dir`.
pub fn render(dir: &Path) -> Result<Rendered, ReportError> {
    let run = data::load(dir)?;
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .map_err(|source| ReportError::Read { path: plots_dir.display().to_string(), source })?;
    let mut svgs = Vec::new();
    let mut files = Vec::new();
    for plot in plots::plots(&run) {
        let svg = plots::svg(&plot, &run).map_err(|e| ReportError::Render(format!("{}: {e}", plot.name)))?;
        let svg_path = plots_dir.join(format!("{}.svg", plot.name));
        write(&svg_path, &svg)?;
        let png_path = plots_dir.join(format!("{}.png", plot.name));
        plots::png(&plot, &run, &png_path).map_err(|e| ReportError::Render(format!("{}: {e}", plot.name)))?;
        files.push(svg_path);
        files.push(png_path);
        svgs.push((plot.name.to_string(), svg));
    }
    // Under the time plots, on their axis: the alert bands of a run with monitoring, and the
    // supervisor's restarts and readiness of a run with one.
    let mut lanes = |name: &str, svg: Result<String, String>, png: &dyn Fn(&Path) -> Result<(), String>| {
        let render = |e: String| ReportError::Render(format!("{name}: {e}"));
        let svg = svg.map_err(render)?;
        let svg_path = plots_dir.join(format!("{name}.svg"));
        write(&svg_path, &svg)?;
        let png_path = plots_dir.join(format!("{name}.png"));
        png(&png_path).map_err(render)?;
        files.push(svg_path);
        files.push(png_path);
        svgs.push((name.to_string(), svg));
        Ok::<(), ReportError>(())
    };
    if plots::alerts::monitored(&run) {
        lanes("alerts", plots::alerts::svg(&run), &|p| plots::alerts::png(&run, p))?;
    }
    if let Some(svg) = plots::supervisor::svg(&run) {
        lanes("supervisor", svg, &|p| plots::supervisor::png(&run, p))?;
    }
    let html = dir.join("report.html");
    write(&html, &documents::html(&run, &svgs))?;
    let markdown = dir.join("summary.md");
    write(&markdown, &documents::markdown(&run))?;
    let junit = dir.join("junit.xml");
    write(&junit, &documents::junit(&run))?;
    Ok(Rendered { html, markdown, junit, plots: files, outcome: run.verdict.outcome })
}

/// Compares `run` with `baseline`, writes `run/compare.md` and `run/compare.html`; returns the
/// comparison (its [`compare::Comparison::regressed`] decides the exit code).
pub fn compare_runs(baseline: &Path, run: &Path, limit: f64) -> Result<compare::Comparison, ReportError> {
    let (comparison, b, r) = compare::compare(baseline, run, limit)?;
    write(&run.join("compare.md"), &compare::markdown(&comparison, baseline, run))?;
    let html = compare::html(&comparison, &b, &r).map_err(ReportError::Render)?;
    write(&run.join("compare.html"), &html)?;
    Ok(comparison)
}

//! `flashlab compare BASELINE RUN`: the SLIs of two runs side by side, with deltas, and the
//! checks that passed before and fail now. A figure *regresses* when it moved the wrong way by
//! more than the limit (relative): latencies and RTOs up; throughput down; unavailability
//! (1 − availability) up — and by more than 0.01 percentage points, so that 0 → 0.001% is not a
//! regression. A figure the baseline has and the run lacks is a regression too (the run no
//! longer measures it). Runs of different scenarios are not compared at all (an error, exit 2);
//! a different scale or seed is said at the top. Written to `RUN/compare.md` and
//! `RUN/compare.html` (with overlaid plots).

use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::data::{self, ReportError, Run};
use crate::documents::escape;
use crate::plots::{self, Line, Plot};

/// One compared figure.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub baseline: Option<f64>,
    pub run: Option<f64>,
    pub unit: &'static str,
    /// Whether the figure moved the wrong way past the limit.
    pub regressed: bool,
}

/// The comparison.
#[derive(Debug)]
pub struct Comparison {
    pub rows: Vec<Row>,
    /// Checks that passed in the baseline and do not pass in the run (failed, inconclusive, or
    /// gone).
    pub newly_failing: Vec<String>,
    pub limit: f64,
    /// What differs between the two runs besides the build (scale, seed).
    pub notes: Vec<String>,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        !self.newly_failing.is_empty() || self.rows.iter().any(|r| r.regressed)
    }
}

#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
    Availability,
}

fn row(name: String, base: Option<f64>, run: Option<f64>, unit: &'static str, better: Better, limit: f64) -> Row {
    let regressed = match (base, run) {
        (Some(b), Some(r)) => match better {
            Better::Lower => r > b * (1.0 + limit) && r - b > 1e-9,
            Better::Higher => r < b * (1.0 - limit),
            Better::Availability => {
                let (ub, ur) = (1.0 - b, 1.0 - r);
                ur > ub * (1.0 + limit) && ur - ub > 0.0001
            }
        },
        // Measured before, not now: the run lost sight of it.
        (Some(_), None) => true,
        _ => false,
    };
    Row { name, baseline: base, run, unit, regressed }
}

fn load_summary(dir: &Path) -> Value {
    std::fs::read_to_string(dir.join("load-summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Compares two run directories; `limit` is the allowed relative regression (0.1 = 10%).
pub fn compare(baseline: &Path, run: &Path, limit: f64) -> Result<(Comparison, Run, Run), ReportError> {
    let (b, r) = (data::load(baseline)?, data::load(run)?);
    if b.verdict.scenario != r.verdict.scenario {
        return Err(ReportError::Render(format!(
            "{} is a run of {:?} and {} of {:?}: runs of different scenarios are not comparable",
            baseline.display(),
            b.verdict.scenario,
            run.display(),
            r.verdict.scenario
        )));
    }
    let mut notes = Vec::new();
    if b.verdict.scale != r.verdict.scale {
        notes.push(format!(
            "different scale: baseline {} and run {} (rates and durations differ; figures are not like for like)",
            b.verdict.scale, r.verdict.scale
        ));
    }
    if b.verdict.seed != r.verdict.seed {
        notes.push(format!("different seed: baseline {} and run {}", b.verdict.seed, r.verdict.seed));
    }
    let (bl, rl) = (load_summary(baseline), load_summary(run));
    let mut rows = Vec::new();
    let (bf, rf) = (&b.verdict.figures, &r.verdict.figures);
    for (name, base, now) in [
        ("availability", bf.availability, rf.availability),
        ("availability outside faults", bf.availability_outside_faults, rf.availability_outside_faults),
        ("availability during faults", bf.availability_during_faults, rf.availability_during_faults),
    ] {
        rows.push(row(name.into(), base, now, "%", Better::Availability, limit));
    }
    let phases = |s: &Value| -> Vec<Value> { s["phases"].as_array().cloned().unwrap_or_default() };
    // Every phase of either run (a phase the run lacks shows as missing).
    let mut names: Vec<Value> = phases(&rl).iter().map(|p| p["name"].clone()).collect();
    for p in phases(&bl) {
        if !names.contains(&p["name"]) {
            names.push(p["name"].clone());
        }
    }
    for phase_name in names {
        let name = phase_name.as_str().unwrap_or_default().to_string();
        let base = phases(&bl).into_iter().find(|p| p["name"] == phase_name);
        let phase = phases(&rl).into_iter().find(|p| p["name"] == phase_name).unwrap_or(Value::Null);
        let get = |p: Option<&Value>, path: [&str; 2]| p.and_then(|p| p[path[0]][path[1]].as_f64());
        for (label, path) in
            [("p95", ["corrected", "p95_ms"]), ("p99", ["corrected", "p99_ms"]), ("service p99", ["service", "p99_ms"])]
        {
            rows.push(row(
                format!("{label} {name}"),
                get(base.as_ref(), path),
                get(Some(&phase), path),
                "ms",
                Better::Lower,
                limit,
            ));
        }
        let rate = |p: Option<&Value>| p.and_then(|p| p["achieved_rate"].as_f64());
        rows.push(row(
            format!("throughput {name}"),
            rate(base.as_ref()),
            rate(Some(&phase)),
            "/s",
            Better::Higher,
            limit,
        ));
    }
    let rtos = |v: &Run| -> Vec<(String, Option<f64>)> {
        v.verdict.figures.rto_s.iter().map(|(k, v)| (k.clone(), *v)).collect()
    };
    let worst = |v: &[(String, Option<f64>)]| -> Option<f64> {
        if v.iter().any(|(_, s)| s.is_none()) {
            Some(f64::INFINITY)
        } else {
            v.iter().filter_map(|(_, s)| *s).fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))))
        }
    };
    rows.push(row("worst RTO".into(), worst(&rtos(&b)), worst(&rtos(&r)), "s", Better::Lower, limit));
    let now: Vec<(String, bool)> = r.verdict.checks.iter().map(|c| (c.title(), c.passed())).collect();
    let newly_failing = b
        .verdict
        .checks
        .iter()
        .filter(|c| c.passed())
        .filter_map(|c| match now.iter().find(|(n, _)| *n == c.title()) {
            Some((_, true)) => None,
            Some((n, false)) => Some(n.clone()),
            None => Some(format!("{} (no longer checked)", c.title())),
        })
        .collect();
    Ok((Comparison { rows, newly_failing, limit, notes }, b, r))
}

fn show(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.is_infinite() => "never".into(),
        Some(v) if unit == "%" => format!("{:.3}%", v * 100.0),
        Some(v) => format!("{v:.1} {unit}"),
    }
}

fn delta(row: &Row) -> String {
    match (row.baseline, row.run) {
        (Some(b), Some(r)) if b.is_finite() && r.is_finite() => {
            if row.unit == "%" {
                format!("{:+.3} pp", (r - b) * 100.0)
            } else if b.abs() > 1e-9 {
                format!("{:+.1}%", (r - b) / b * 100.0)
            } else {
                format!("{:+.1} {}", r - b, row.unit)
            }
        }
        _ => "–".into(),
    }
}

/// The comparison as a text table.
pub fn table(c: &Comparison) -> String {
    let mut out = String::new();
    for n in &c.notes {
        let _ = writeln!(out, "NOTE: {n}");
    }
    let _ = writeln!(out, "{:<36} {:>14} {:>14} {:>12}", "figure", "baseline", "run", "delta");
    for r in &c.rows {
        let _ = writeln!(
            out,
            "{:<36} {:>14} {:>14} {:>12}  {}",
            r.name,
            show(r.baseline, r.unit),
            show(r.run, r.unit),
            delta(r),
            if r.regressed { "REGRESSED" } else { "" }
        );
    }
    for name in &c.newly_failing {
        let _ = writeln!(out, "check now failing: {name}");
    }
    let _ =
        writeln!(out, "{} (limit {:.0}%)", if c.regressed() { "REGRESSION" } else { "no regression" }, c.limit * 100.0);
    out
}

/// `compare.md`.
pub fn markdown(c: &Comparison, baseline: &Path, run: &Path) -> String {
    let mut out = format!(
        "## flashlab compare: {}\n\nbaseline `{}` → run `{}`, limit {:.0}%\n\n| figure | baseline | run | delta | |\n|---|---|---|---|---|\n",
        if c.regressed() { "❌ regression" } else { "✅ no regression" },
        baseline.display(),
        run.display(),
        c.limit * 100.0
    );
    let notes: String = c.notes.iter().map(|n| format!("> **Note:** {n}\n")).collect();
    out = out.replacen("\n\n| figure", &format!("\n\n{notes}\n| figure"), 1);
    for r in &c.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.name,
            show(r.baseline, r.unit),
            show(r.run, r.unit),
            delta(r),
            if r.regressed { "**regressed**" } else { "" }
        );
    }
    if !c.newly_failing.is_empty() {
        out.push_str("\nChecks that passed in the baseline and fail now:\n");
        for n in &c.newly_failing {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// `compare.html`: the table and the baseline's and the run's latency and good throughput
/// overlaid (the run's fault windows shaded).
pub fn html(c: &Comparison, b: &Run, r: &Run) -> Result<String, String> {
    let p99 = |run: &Run| {
        run.series
            .corrected
            .iter()
            .enumerate()
            .filter(|(_, p)| p[2].is_finite())
            .map(|(i, p)| (i as f64 + 0.5, p[2]))
            .collect::<Vec<_>>()
    };
    let good = |run: &Run| {
        run.series
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| (i as f64 + 0.5, (o[0] + o[1] + o[2] + o[3]) as f64))
            .collect::<Vec<_>>()
    };
    let base_color = plotters::style::RGBColor(120, 120, 120);
    let run_color = plotters::style::RGBColor(25, 118, 210);
    let overlay = |name: &'static str, title: &str, unit: &'static str, f: &dyn Fn(&Run) -> Vec<(f64, f64)>| Plot {
        name,
        title: title.to_string(),
        y_label: unit,
        lines: vec![
            Line { label: "baseline".into(), color: base_color, dashed: true, points: f(b) },
            Line { label: "run".into(), color: run_color, dashed: false, points: f(r) },
        ],
        stacked: false,
        states: None,
    };
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>flashlab compare</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:4px 8px}}.bad{{background:#fdecea}}</style></head><body><h1>{}</h1><table><tr><th>figure</th><th>baseline</th><th>run</th><th>delta</th></tr>",
        if c.regressed() { "Regression" } else { "No regression" }
    );
    for row in &c.rows {
        let _ = write!(
            out,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if row.regressed { " class=\"bad\"" } else { "" },
            escape(&row.name),
            show(row.baseline, row.unit),
            show(row.run, row.unit),
            delta(row)
        );
    }
    out.push_str("</table>");
    for n in &c.newly_failing {
        let _ = write!(out, "<p class=\"bad\">check now failing: {}</p>", escape(n));
    }
    for plot in [
        overlay("compare-p99", "corrected p99 latency, baseline vs run", "ms", &p99),
        overlay("compare-good", "good answers per second, baseline vs run", "answers/s", &good),
    ] {
        let svg = plots::svg(&plot, r)?;
        let body = svg.find("<svg").map(|i| svg[i..].to_string()).unwrap_or(svg);
        let _ = write!(out, "<figure id=\"{}\">{body}</figure>", plot.name);
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

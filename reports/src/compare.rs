//! `flashlab compare BASELINE RUN`: the SLIs of two runs side by side, with deltas, and the
//! checks that passed before and fail now. A figure *regresses* when it moved the wrong way by
//! more than the limit (relative): latencies and RTOs up; throughput down; unavailability
//! (1 − availability) up — and by more than 0.01 percentage points, so that 0 → 0.001% is not a
//! regression. Written to `RUN/compare.md` and `RUN/compare.html` (with overlaid plots).

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
    /// Checks that passed in the baseline and fail in the run.
    pub newly_failing: Vec<String>,
    pub limit: f64,
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
    let (bl, rl) = (load_summary(baseline), load_summary(run));
    let mut rows = Vec::new();
    let fig = |v: &Run, k: &str| v.verdict["figures"][k].as_f64();
    for (name, key) in [
        ("availability", "availability"),
        ("availability outside faults", "availability_outside_faults"),
        ("availability during faults", "availability_during_faults"),
    ] {
        rows.push(row(name.into(), fig(&b, key), fig(&r, key), "%", Better::Availability, limit));
    }
    let phases = |s: &Value| -> Vec<Value> { s["phases"].as_array().cloned().unwrap_or_default() };
    for phase in phases(&rl) {
        let name = phase["name"].as_str().unwrap_or_default().to_string();
        let base = phases(&bl).into_iter().find(|p| p["name"] == phase["name"]);
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
        v.verdict["figures"]["rto_s"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_f64())).collect())
            .unwrap_or_default()
    };
    let worst = |v: &[(String, Option<f64>)]| -> Option<f64> {
        if v.iter().any(|(_, s)| s.is_none()) {
            Some(f64::INFINITY)
        } else {
            v.iter().filter_map(|(_, s)| *s).fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))))
        }
    };
    rows.push(row("worst RTO".into(), worst(&rtos(&b)), worst(&rtos(&r)), "s", Better::Lower, limit));
    let passed = |v: &Run| -> Vec<(String, bool)> {
        v.verdict["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["name"].as_str().unwrap_or_default().to_string(), c["pass"].as_bool().unwrap_or(false)))
            .collect()
    };
    let before = passed(&b);
    let newly_failing = passed(&r)
        .into_iter()
        .filter(|(name, ok)| !ok && before.iter().any(|(n, was)| n == name && *was))
        .map(|(name, _)| name)
        .collect();
    Ok((Comparison { rows, newly_failing, limit }, b, r))
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
    let mut out = format!("{:<36} {:>14} {:>14} {:>12}  {}\n", "figure", "baseline", "run", "delta", "");
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

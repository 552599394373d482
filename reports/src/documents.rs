//! The documents: `report.html` (one self-contained file: inline SVG and CSS, no script, no
//! external asset), `summary.md` (for a pull-request comment) and `junit.xml` (one test case
//! per check; a failed or inconclusive check is a failure carrying its evidence).

use std::fmt::Write;

use rundir::{CheckResult, Outcome};

use crate::data::Run;

/// Escapes text for HTML and XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(v: Option<f64>) -> String {
    v.map(|a| format!("{:.3}%", a * 100.0)).unwrap_or_else(|| "–".into())
}

/// `HH:MM:SS.mmm` UTC of a Unix time in ms (with the date when `date`).
pub fn utc(ms: u64, date: bool) -> String {
    let secs = ms / 1000;
    let rem = secs % 86_400;
    let time = format!("{:02}:{:02}:{:02}.{:03}", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000);
    if !date {
        return time;
    }
    let (y, m, d, _) = rundir::stats::utc_civil(secs);
    format!("{y:04}-{m:02}-{d:02} {time} UTC")
}

fn figures(run: &Run) -> Vec<(String, String)> {
    let f = &run.verdict.figures;
    let mut rows = vec![
        ("availability".to_string(), format!("{} of {} requests", pct(f.availability), f.requests)),
        ("unserved arrivals (failed requests)".into(), f.unserved.to_string()),
        ("availability outside faults".into(), pct(f.availability_outside_faults)),
        ("availability during faults".into(), pct(f.availability_during_faults)),
        ("error budget burned (30-day 99.9%)".into(), format!("{:.3}%", f.error_budget_burned * 100.0)),
        ("maintenance pages served (no gateway up)".into(), f.maintenance_pages.to_string()),
        (
            "RPO (acknowledged orders lost)".into(),
            f.rpo.map(|r| r.to_string()).unwrap_or_else(|| "not measured".into()),
        ),
        (
            "max consumer lag".into(),
            f.max_consumer_lag.map(|l| format!("{l:.0} messages")).unwrap_or_else(|| "not measured".into()),
        ),
        ("answered failed, then completed".into(), f.answered_failed_then_completed.to_string()),
    ];
    for (fault, s) in &f.rto_s {
        rows.push((format!("RTO {fault}"), s.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "not recovered".into())));
    }
    for (phase, t) in &f.time_to_decision {
        rows.push((
            format!("time to decision, phase {phase}"),
            format!("p99 {:.0} ms, max {:.0} ms ({} orders)", t.p99_ms, t.max_ms, t.decisions),
        ));
    }
    for (fault, t) in &f.decided_after_heal {
        rows.push((
            format!("orders held by fault {fault}, decided after its heal"),
            format!("{} orders, the last {:.0} ms after (p99 {:.0} ms)", t.decisions, t.max_ms, t.p99_ms),
        ));
    }
    if let Some(r) = &f.release {
        rows.extend(r.rows());
    }
    for (item, units) in &f.drift_fixed {
        rows.push((format!("stock drift fixed, item {item}"), format!("{units:+} units")));
    }
    rows
}

fn class(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Inconclusive => "inconclusive",
    }
}

fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "ok",
        Outcome::Fail => "FAIL",
        Outcome::Inconclusive => "INCONCLUSIVE",
    }
}

/// The evidence lines a check shows: what was missing (inconclusive), then the examples.
fn evidence(c: &CheckResult) -> Vec<String> {
    let mut out = Vec::new();
    if c.outcome == Outcome::Inconclusive {
        out.push(format!("not enough evidence: needs {}, saw {}", c.needed, c.seen));
    }
    if !c.passed() {
        out.extend(c.evidence.iter().cloned());
    }
    out
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
h1{margin-bottom:0}.pass{color:#2e7d32}.fail{color:#c62828}.inconclusive{color:#b26a00}\
table{border-collapse:collapse;margin:1em 0;width:100%}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}\
th{background:#f5f5f5}tr.fail td{background:#fdecea}tr.inconclusive td{background:#fff4e0}.verdict{font-size:28px;font-weight:bold}\
ul.evidence{margin:0;padding-left:1.2em;font-family:monospace;font-size:12px}figure{margin:1.5em 0}\
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}";

/// The alerts table's rows: undetected faults first (nobody was paged), then each expectation
/// and false alarm — `(outcome, alert, fault, pending, fired, notified, resolved, note)`.
fn alert_rows(run: &Run) -> Vec<[String; 8]> {
    let v = &run.verdict;
    let after = |t: Option<u64>| t.map(|t| format!("{:.1} s", t as f64 / 1000.0)).unwrap_or_else(|| "–".into());
    let mut rows: Vec<[String; 8]> = v
        .figures
        .undetected_faults
        .iter()
        .map(|n| {
            [
                "FINDING".into(),
                "(none)".into(),
                format!("#{n}"),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "no alarm fired during this fault: nobody would have been paged".into(),
            ]
        })
        .collect();
    for a in &v.alerts {
        rows.push([
            mark(a.outcome).into(),
            a.alert.clone(),
            a.fault.map_or("outside faults".into(), |n| format!("#{n}")),
            after(a.pending_after_ms),
            after(a.fired_after_ms),
            after(a.notified_after_ms),
            after(a.resolved_after_ms),
            if a.expected { a.note.clone() } else { format!("unexpected — {}", a.note) },
        ]);
    }
    rows
}

/// How the monitoring ran, from `alerts.jsonl`'s setup: the rules, the config and the time
/// factor (1: as written) — a report always says whether the rules were scaled.
fn alert_setup(run: &Run) -> Option<String> {
    run.alerts.iter().find_map(|r| match r {
        rundir::AlertRecord::Setup { rules, alertmanager_config, time_factor, .. } => Some(format!(
            "Rules: {}; Alertmanager: {alertmanager_config}; {}.",
            rules.join(", "),
            if *time_factor == 1.0 {
                "windows, `for` and waits as written (time factor 1)".to_string()
            } else {
                format!("windows, `for`, waits and marked thresholds scaled by a time factor of {time_factor}")
            }
        )),
        _ => None,
    })
}

const ALERT_HEADERS: [&str; 8] = [
    "",
    "alert",
    "fault",
    "pending after start",
    "fired after start",
    "notified after start",
    "resolved after end",
    "note",
];

/// `report.html`. `svgs` are the plots' SVG documents, in order.
pub fn html(run: &Run, svgs: &[(String, String)]) -> String {
    let v = &run.verdict;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>flashlab: {}</title><style>{CSS}</style></head><body>",
        escape(&v.scenario)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p>{}</p><p class=\"verdict {}\" id=\"verdict\">{}</p>",
        escape(&v.scenario),
        escape(&v.description),
        class(v.outcome),
        v.outcome.label()
    );
    out.push_str("<h2>Verdict</h2><table id=\"checks\"><tr><th></th><th>check</th><th>kind</th><th>target</th><th>measured</th><th>evidence</th></tr>");
    for c in &v.checks {
        let lines: Vec<String> = evidence(c).iter().map(|e| format!("<li>{}</li>", escape(e))).collect();
        let kind = serde_json::to_value(c.kind).ok().and_then(|k| k.as_str().map(String::from)).unwrap_or_default();
        let _ = write!(
            out,
            "<tr class=\"{0}\"><td class=\"{0}\">{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td></tr>",
            class(c.outcome),
            mark(c.outcome),
            escape(&c.title()),
            escape(&kind),
            escape(&c.target),
            escape(&c.measured),
            if lines.is_empty() { String::new() } else { format!("<ul class=\"evidence\">{}</ul>", lines.join("")) }
        );
    }
    let alerts = alert_rows(run);
    let setup = alert_setup(run);
    if !alerts.is_empty() || setup.is_some() {
        out.push_str("</table><h2>Alerts</h2>");
        if let Some(setup) = &setup {
            let _ = write!(out, "<p id=\"alerts-setup\">{}</p>", escape(setup));
        }
        out.push_str("<table id=\"alerts\"><tr>");
        for h in ALERT_HEADERS {
            let _ = write!(out, "<th>{h}</th>");
        }
        out.push_str("</tr>");
        for row in &alerts {
            let class = match row[0].as_str() {
                "ok" => "pass",
                "INCONCLUSIVE" => "inconclusive",
                _ => "fail",
            };
            let cells: String = row.iter().map(|c| format!("<td>{}</td>", escape(c))).collect();
            let _ = write!(out, "<tr class=\"{class}\">{cells}</tr>");
        }
    }
    out.push_str("</table><h2>Figures</h2><table id=\"figures\">");
    for (name, value) in figures(run) {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(&name), escape(&value));
    }
    let _ = write!(
        out,
        "</table><p>{} requests in {} s.</p><h2>Plots</h2><p>Fault windows are shaded and labelled. A gap in a line is a time with no sample (the component was down or did not answer its scrape).</p>",
        run.series.requests, run.series.seconds
    );
    for (name, svg) in svgs {
        // The SVG document without its XML declaration, inline.
        let body = svg.find("<svg").map(|i| &svg[i..]).unwrap_or(svg);
        let _ = write!(out, "<figure id=\"plot-{name}\">{body}</figure>");
    }
    let _ = write!(
        out,
        "<h2>Timeline</h2><p>Second 0 is {}.</p><table id=\"timeline\"><tr><th>time (UTC)</th><th>+s</th><th>event</th><th>what</th></tr>",
        escape(&utc(run.series.start_ms, true))
    );
    for e in &run.events {
        let ts = e["ts_ms"].as_u64().unwrap_or(0);
        let rel = (ts as f64 - run.series.start_ms as f64) / 1000.0;
        let what = e["description"]
            .as_str()
            .map(String::from)
            .or_else(|| e["action"].as_str().map(String::from))
            .or_else(|| e["name"].as_str().map(String::from))
            .unwrap_or_default();
        let check =
            e["check"]["observed"].as_str().or(e["error"].as_str()).map(|o| format!(" — {o}")).unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{rel:+.1}</td><td>{}</td><td>{}{}</td></tr>",
            utc(ts, false),
            escape(e["event"].as_str().unwrap_or_default()),
            escape(&what),
            escape(&check)
        );
    }
    let manifest = serde_json::to_string_pretty(&run.manifest).unwrap_or_default();
    let _ = writeln!(out, "</table><h2>Manifest</h2><pre>{}</pre></body></html>", escape(&manifest));
    out
}

/// `summary.md`: the verdict, checks not passed first with their evidence, then the figures.
pub fn markdown(run: &Run) -> String {
    let v = &run.verdict;
    let mut out = String::new();
    let icon = match v.outcome {
        Outcome::Pass => "✅",
        Outcome::Fail => "❌",
        Outcome::Inconclusive => "⚠️",
    };
    let _ = writeln!(out, "## {icon} {} — flashlab drill `{}`\n\n{}\n", v.outcome.label(), v.scenario, v.description);
    let mut rows: Vec<&CheckResult> = v.checks.iter().collect();
    rows.sort_by_key(|c| std::cmp::Reverse(c.outcome));
    out.push_str("| | check | target | measured |\n|---|---|---|---|\n");
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for c in &rows {
        let m = match c.outcome {
            Outcome::Pass => "ok".to_string(),
            o => format!("**{}**", mark(o)),
        };
        let _ = writeln!(out, "| {m} | {} | {} | {} |", cell(&c.title()), cell(&c.target), cell(&c.measured));
    }
    let alerts = alert_rows(run);
    let setup = alert_setup(run);
    if !alerts.is_empty() || setup.is_some() {
        out.push_str("\n### Alerts\n\n");
        if let Some(setup) = &setup {
            let _ = writeln!(out, "{setup}\n");
        }
        out.push('|');
        for h in ALERT_HEADERS {
            let _ = write!(out, " {h} |");
        }
        out.push_str("\n|---|---|---|---|---|---|---|---|\n");
        for row in &alerts {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    let shown: Vec<_> = rows.iter().filter(|c| !evidence(c).is_empty()).collect();
    if !shown.is_empty() {
        out.push_str("\n### Evidence\n");
        for c in shown {
            let _ = writeln!(out, "\n**{}**", cell(&c.title()));
            for e in evidence(c) {
                let _ = writeln!(out, "- `{e}`");
            }
        }
    }
    out.push_str("\n| figure | value |\n|---|---|\n");
    for (name, value) in figures(run) {
        let _ = writeln!(out, "| {} | {} |", cell(&name), cell(&value));
    }
    out
}

/// `junit.xml`: one test suite, one test case per check; failed and inconclusive checks are
/// failures (red), an inconclusive one saying what evidence was missing.
pub fn junit(run: &Run) -> String {
    let v = &run.verdict;
    let failures = v.checks.iter().filter(|c| !c.passed()).count();
    let scenario = escape(&v.scenario);
    let seconds = v.ended_unix_ms.saturating_sub(v.started_unix_ms) as f64 / 1000.0;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"flashlab\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.1}\">\n  <testsuite name=\"{scenario}\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.1}\">",
        v.checks.len(),
        v.checks.len()
    );
    for c in &v.checks {
        let name = escape(&c.title());
        let kind = serde_json::to_value(c.kind).ok().and_then(|k| k.as_str().map(String::from)).unwrap_or_default();
        let class = format!("{scenario}.{}", escape(&kind));
        if c.passed() {
            let _ = writeln!(out, "    <testcase classname=\"{class}\" name=\"{name}\"/>");
        } else {
            let lines: Vec<String> = evidence(c).iter().map(|e| escape(e)).collect();
            let _ = writeln!(
                out,
                "    <testcase classname=\"{class}\" name=\"{name}\">\n      <failure type=\"{}\" message=\"{}: target {}, measured {}\">{}</failure>\n    </testcase>",
                class_of(c.outcome),
                mark(c.outcome),
                escape(&c.target),
                escape(&c.measured),
                lines.join("\n")
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn class_of(o: Outcome) -> &'static str {
    class(o)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::utc(1_795_248_000_123, true), "2026-11-21 08:00:00.123 UTC");
        assert_eq!(super::utc(1_795_248_003_723, false), "08:00:03.723");
    }
}

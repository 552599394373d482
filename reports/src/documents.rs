//! The documents: `report.html` (one self-contained file: inline SVG and CSS, no script, no
//! external asset), `summary.md` (for a pull-request comment) and `junit.xml` (one test case
//! per check; failures carry the evidence).

use std::fmt::Write;

use serde_json::Value;

use crate::data::Run;

/// Escapes text for HTML and XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn checks(run: &Run) -> Vec<&Value> {
    run.verdict["checks"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn pct(v: &Value) -> String {
    v.as_f64().map(|a| format!("{:.3}%", a * 100.0)).unwrap_or_else(|| "–".into())
}

fn figures(run: &Run) -> Vec<(String, String)> {
    let f = &run.verdict["figures"];
    let mut rows = vec![
        ("availability".to_string(), pct(&f["availability"])),
        ("availability outside faults".into(), pct(&f["availability_outside_faults"])),
        ("availability during faults".into(), pct(&f["availability_during_faults"])),
        (
            "error budget burned (30-day 99.9%)".into(),
            f["error_budget_burned"].as_f64().map(|v| format!("{:.3}%", v * 100.0)).unwrap_or_else(|| "–".into()),
        ),
        ("RPO (acknowledged orders lost)".into(), f["rpo"].to_string()),
    ];
    if let Some(rto) = f["rto_s"].as_object() {
        for (fault, s) in rto {
            rows.push((
                format!("RTO {fault}"),
                s.as_f64().map(|s| format!("{s:.0} s")).unwrap_or_else(|| "not recovered".into()),
            ));
        }
    }
    rows
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
h1{margin-bottom:0}.pass{color:#2e7d32}.fail{color:#c62828}\
table{border-collapse:collapse;margin:1em 0;width:100%}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}\
th{background:#f5f5f5}tr.fail td{background:#fdecea}.verdict{font-size:28px;font-weight:bold}\
ul.evidence{margin:0;padding-left:1.2em;font-family:monospace;font-size:12px}figure{margin:1.5em 0}\
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}";

/// `report.html`. `svgs` are the plots' SVG documents, in order.
pub fn html(run: &Run, svgs: &[(String, String)]) -> String {
    let v = &run.verdict;
    let pass = v["pass"].as_bool().unwrap_or(false);
    let mut out = String::new();
    let scenario = v["scenario"].as_str().unwrap_or("run");
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>flashlab: {}</title><style>{CSS}</style></head><body>",
        escape(scenario)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p>{}</p><p class=\"verdict {}\" id=\"verdict\">{}</p>",
        escape(scenario),
        escape(v["description"].as_str().unwrap_or_default()),
        if pass { "pass" } else { "fail" },
        if pass { "PASS" } else { "FAIL" }
    );
    out.push_str("<h2>Verdict</h2><table id=\"checks\"><tr><th></th><th>check</th><th>kind</th><th>target</th><th>measured</th><th>evidence</th></tr>");
    for c in checks(run) {
        let ok = c["pass"].as_bool().unwrap_or(false);
        let evidence: Vec<String> = c["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .map(|e| format!("<li>{}</li>", escape(e)))
            .collect();
        let _ = write!(
            out,
            "<tr class=\"{}\"><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if ok { "pass" } else { "fail" },
            if ok { "pass" } else { "fail" },
            if ok { "ok" } else { "FAIL" },
            escape(c["name"].as_str().unwrap_or_default()),
            escape(c["kind"].as_str().unwrap_or_default()),
            escape(c["target"].as_str().unwrap_or_default()),
            escape(c["measured"].as_str().unwrap_or_default()),
            if evidence.is_empty() {
                String::new()
            } else {
                format!("<ul class=\"evidence\">{}</ul>", evidence.join(""))
            }
        );
    }
    out.push_str("</table><h2>Figures</h2><table id=\"figures\">");
    for (name, value) in figures(run) {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(&name), escape(&value));
    }
    let _ = write!(
        out,
        "</table><p>{} requests in {} s.</p><h2>Plots</h2><p>Fault windows are shaded and labelled.</p>",
        run.series.requests, run.series.seconds
    );
    for (name, svg) in svgs {
        // The SVG document without its XML declaration, inline.
        let body = svg.find("<svg").map(|i| &svg[i..]).unwrap_or(svg);
        let _ = write!(out, "<figure id=\"plot-{name}\">{body}</figure>");
    }
    out.push_str(
        "<h2>Timeline</h2><table id=\"timeline\"><tr><th>time (UTC ms)</th><th>+s</th><th>event</th><th>what</th></tr>",
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
        let check = e["check"]["observed"].as_str().map(|o| format!(" — {o}")).unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{ts}</td><td>{rel:.1}</td><td>{}</td><td>{}{}</td></tr>",
            escape(e["event"].as_str().unwrap_or_default()),
            escape(&what),
            escape(&check)
        );
    }
    let manifest = serde_json::to_string_pretty(&run.manifest).unwrap_or_default();
    let _ = writeln!(out, "</table><h2>Manifest</h2><pre>{}</pre></body></html>", escape(&manifest));
    out
}

/// `summary.md`: the verdict, failed checks first with their evidence, then the figures.
pub fn markdown(run: &Run) -> String {
    let v = &run.verdict;
    let pass = v["pass"].as_bool().unwrap_or(false);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {} flashlab drill `{}`\n\n{}\n",
        if pass { "✅ PASS —" } else { "❌ FAIL —" },
        v["scenario"].as_str().unwrap_or("run"),
        v["description"].as_str().unwrap_or_default()
    );
    let mut rows = checks(run);
    rows.sort_by_key(|c| c["pass"].as_bool().unwrap_or(false));
    out.push_str("| | check | target | measured |\n|---|---|---|---|\n");
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for c in &rows {
        let ok = c["pass"].as_bool().unwrap_or(false);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            if ok { "ok" } else { "**FAIL**" },
            cell(c["name"].as_str().unwrap_or_default()),
            cell(c["target"].as_str().unwrap_or_default()),
            cell(c["measured"].as_str().unwrap_or_default())
        );
    }
    let failed: Vec<_> =
        rows.iter().filter(|c| c["pass"] == false && c["evidence"].as_array().is_some_and(|e| !e.is_empty())).collect();
    if !failed.is_empty() {
        out.push_str("\n### Evidence\n");
        for c in failed {
            let _ = writeln!(out, "\n**{}**", cell(c["name"].as_str().unwrap_or_default()));
            for e in c["evidence"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "- `{}`", e.as_str().unwrap_or_default());
            }
        }
    }
    out.push_str("\n| figure | value |\n|---|---|\n");
    for (name, value) in figures(run) {
        let _ = writeln!(out, "| {} | {} |", cell(&name), cell(&value));
    }
    out
}

/// `junit.xml`: one test suite, one test case per check.
pub fn junit(run: &Run) -> String {
    let v = &run.verdict;
    let rows = checks(run);
    let failures = rows.iter().filter(|c| c["pass"] == false).count();
    let scenario = escape(v["scenario"].as_str().unwrap_or("run"));
    let seconds = (v["ended_unix_ms"].as_u64().unwrap_or(0).saturating_sub(v["started_unix_ms"].as_u64().unwrap_or(0)))
        as f64
        / 1000.0;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"flashlab\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.1}\">\n  <testsuite name=\"{scenario}\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.1}\">",
        rows.len(),
        rows.len()
    );
    for c in rows {
        let name = escape(c["name"].as_str().unwrap_or_default());
        let class = format!("{scenario}.{}", escape(c["kind"].as_str().unwrap_or("check")));
        if c["pass"] == true {
            let _ = writeln!(out, "    <testcase classname=\"{class}\" name=\"{name}\"/>");
        } else {
            let evidence: Vec<String> =
                c["evidence"].as_array().into_iter().flatten().filter_map(|e| e.as_str()).map(escape).collect();
            let _ = writeln!(
                out,
                "    <testcase classname=\"{class}\" name=\"{name}\">\n      <failure message=\"target {}, measured {}\">{}</failure>\n    </testcase>",
                escape(c["target"].as_str().unwrap_or_default()),
                escape(c["measured"].as_str().unwrap_or_default()),
                evidence.join("\n")
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

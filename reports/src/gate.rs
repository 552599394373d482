//! A regression gate's documents, from `gate.json` alone: `gate.md` (short enough for a pull
//! request comment: what regressed, by how much, with what confidence, and links to the runs'
//! reports), `gate.html` (every figure of every drill with both sides' runs drawn on one axis)
//! and `junit.xml` (one test case per drill and figure, and one per drill for its invariants).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use rundir::gate::{Better, Change, DrillGate, FigureGate, GateOutcome, GateRun};

use crate::documents::escape;
use crate::ReportError;

/// What [`render`] wrote.
#[derive(Debug)]
pub struct RenderedGate {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub junit: PathBuf,
    pub outcome: GateOutcome,
}

/// Renders (or re-renders) the gate in `dir`.
pub fn render(dir: &Path) -> Result<RenderedGate, ReportError> {
    let run = rundir::gate::read(&dir.join(rundir::files::GATE))?;
    let markdown = dir.join("gate.md");
    let html = dir.join("gate.html");
    let junit_path = dir.join("junit.xml");
    crate::write(&markdown, &summary(&run))?;
    crate::write(&html, &page(&run))?;
    crate::write(&junit_path, &junit(&run))?;
    Ok(RenderedGate { markdown, html, junit: junit_path, outcome: run.outcome() })
}

fn headline(run: &GateRun) -> &'static str {
    match run.outcome() {
        GateOutcome::Pass => "PASS — nothing regressed",
        GateOutcome::Fail => "FAIL — a regression or a broken invariant",
        GateOutcome::Undecided => "UNDECIDED — no regression found, but not every figure could be decided",
    }
}

fn change_word(c: Change) -> &'static str {
    match c {
        Change::Regressed => "regressed",
        Change::Improved => "improved",
        Change::Unchanged => "unchanged",
        Change::Inconclusive => "inconclusive",
    }
}

/// `+12.3 ms (+40 %)`.
fn delta(f: &FigureGate) -> String {
    let j = &f.judgement;
    if !j.difference.is_finite() {
        return "–".into();
    }
    let rel = if j.base_median.abs() > 0.0 {
        format!(" ({:+.0} %)", j.difference / j.base_median.abs() * 100.0)
    } else {
        String::new()
    };
    format!("{:+.4}{rel}", j.difference)
}

fn interval(f: &FigureGate) -> String {
    let j = &f.judgement;
    if j.interval.0.is_finite() {
        format!("[{:+.4}, {:+.4}]", j.interval.0, j.interval.1)
    } else {
        "–".into()
    }
}

/// `gate.md`: the answer, then only what needs a reader — regressions, broken invariants,
/// undecided figures and runs that could not run; improvements in one line.
pub fn summary(run: &GateRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## flashlab gate: {}\n", headline(run));
    let runs: usize = run.drills.iter().map(|d| d.runs.len()).sum();
    let _ = writeln!(
        out,
        "{} drill(s), {runs} runs ({}); base `{}`{}, head `{}`{}. Mann–Whitney two-sided, α = {}; {:.0} % bootstrap interval of the difference of medians.\n",
        run.drills.len(),
        run.mode,
        run.base.bin,
        env_text(&run.base.env),
        run.head.bin,
        env_text(&run.head.env),
        run.alpha,
        run.confidence * 100.0
    );
    let mut rows = Vec::new();
    for d in &run.drills {
        for f in d.figures.iter().filter(|f| matches!(f.judgement.change, Change::Regressed | Change::Inconclusive)) {
            rows.push(format!(
                "| {} | {} | {} | {:.4} → {:.4} | {} | {} | {:.4} | ≥ {:.4} |",
                change_word(f.judgement.change),
                d.drill,
                f.name,
                f.judgement.base_median,
                f.judgement.head_median,
                delta(f),
                interval(f),
                f.judgement.p,
                f.judgement.threshold
            ));
        }
    }
    if !rows.is_empty() {
        out.push_str("| | drill | figure | median base → head | Δ | interval | p | matters |\n|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
        out.push('\n');
    }
    for d in &run.drills {
        for r in d.runs.iter().filter(|r| !r.broken_invariants.is_empty()) {
            let _ = writeln!(
                out,
                "- **invariant broken** in {} {} run {} ([report]({}/report.html)): {}",
                d.drill,
                r.side,
                r.repetition + 1,
                r.dir,
                r.broken_invariants.join("; ")
            );
        }
        for r in d.runs.iter().filter(|r| r.outcome.is_none()) {
            let _ = writeln!(
                out,
                "- **could not run**: {} {} run {}: {}",
                d.drill,
                r.side,
                r.repetition + 1,
                r.error.as_deref().unwrap_or("?")
            );
        }
    }
    let improved: Vec<String> = run
        .drills
        .iter()
        .flat_map(|d| {
            d.figures
                .iter()
                .filter(|f| f.judgement.change == Change::Improved)
                .map(move |f| format!("{} {} {}", d.drill, f.name, delta(f)))
        })
        .collect();
    if !improved.is_empty() {
        let _ = writeln!(out, "\nImproved: {}.", improved.join(", "));
    }
    let unchanged: usize =
        run.drills.iter().map(|d| d.figures.iter().filter(|f| f.judgement.change == Change::Unchanged).count()).sum();
    let _ = writeln!(out, "\n{unchanged} figure(s) unchanged. Every figure and run: `gate.html`.");
    if run.interrupted {
        out.push_str("\nThe gate was cut short: what ran is above.\n");
    }
    out
}

fn env_text(env: &std::collections::BTreeMap<String, String>) -> String {
    if env.is_empty() {
        String::new()
    } else {
        format!(" with {}", env.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(" "))
    }
}

/// One figure's runs on one axis: the base's dots on the upper row, the head's on the lower,
/// each side's median a bar, the band within the smallest change that matters around the
/// base's median shaded.
fn strip(f: &FigureGate) -> String {
    let j = &f.judgement;
    let all: Vec<f64> = f.base.iter().chain(&f.head).copied().filter(|v| v.is_finite()).collect();
    if all.is_empty() {
        return String::from("<em>no runs</em>");
    }
    let (mut lo, mut hi) = all.iter().fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    if j.base_median.is_finite() {
        lo = lo.min(j.base_median - j.threshold);
        hi = hi.max(j.base_median + j.threshold);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let (w, left, right) = (420.0, 10.0, 10.0);
    let x = |v: f64| left + (v - lo) / (hi - lo) * (w - left - right);
    let mut svg =
        format!("<svg width=\"{w}\" height=\"64\" viewBox=\"0 0 {w} 64\" xmlns=\"http://www.w3.org/2000/svg\">");
    if j.base_median.is_finite() {
        let (a, b) = (x(j.base_median - j.threshold), x(j.base_median + j.threshold));
        let _ = write!(svg, "<rect x=\"{a:.1}\" y=\"2\" width=\"{:.1}\" height=\"44\" fill=\"#eef\"/>", b - a);
    }
    for (row, values, median, color) in [(14.0, &f.base, j.base_median, "#555"), (34.0, &f.head, j.head_median, "#c33")]
    {
        for v in values.iter().filter(|v| v.is_finite()) {
            let _ =
                write!(svg, "<circle cx=\"{:.1}\" cy=\"{row}\" r=\"4\" fill=\"{color}\" fill-opacity=\"0.6\"/>", x(*v));
        }
        if median.is_finite() {
            let _ = write!(
                svg,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{color}\" stroke-width=\"2\"/>",
                x(median),
                row - 8.0,
                row + 8.0
            );
        }
    }
    let _ = write!(svg, "<text x=\"{left}\" y=\"60\" font-size=\"10\">{lo:.4}</text><text x=\"{}\" y=\"60\" font-size=\"10\" text-anchor=\"end\">{hi:.4}</text></svg>", w - right);
    svg
}

/// `gate.html`: self-contained, no script.
pub fn page(run: &GateRun) -> String {
    let mut out = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>flashlab gate</title><style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:middle}.regressed{background:#fdd}.improved{background:#dfd}.inconclusive{background:#ffd}</style></head><body>");
    let _ = write!(out, "<h1>flashlab gate: {}</h1>", escape(headline(run)));
    let _ = write!(
        out,
        "<p>{} — base <code>{}</code> ({}){}; head <code>{}</code> ({}){}. Grey dots: the base's runs; red: the head's; bars: medians; shaded: within the smallest change that matters of the base's median. Mann–Whitney two-sided, α = {}, {:.0} % bootstrap interval.</p>",
        escape(&run.mode),
        escape(&run.base.bin),
        escape(&run.base.bin_identity),
        escape(&env_text(&run.base.env)),
        escape(&run.head.bin),
        escape(&run.head.bin_identity),
        escape(&env_text(&run.head.env)),
        run.alpha,
        run.confidence * 100.0
    );
    for d in &run.drills {
        drill_section(&mut out, d);
    }
    out.push_str("</body></html>\n");
    out
}

fn drill_section(out: &mut String, d: &DrillGate) {
    let _ = write!(out, "<h2>{} (scale {}, {} runs a side)</h2>", escape(&d.drill), d.scale, d.repetitions);
    out.push_str("<table><tr><th>figure</th><th>answer</th><th>runs</th><th>median base → head</th><th>Δ</th><th>interval</th><th>p</th><th>matters</th></tr>");
    for f in &d.figures {
        let better = match f.better {
            Better::Lower => "lower is better",
            Better::Higher => "higher is better",
        };
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}<br><small>{}; {better}</small></td><td>{}</td><td>{}</td><td>{:.4} → {:.4}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>≥ {:.4}</td></tr>",
            change_word(f.judgement.change),
            escape(&f.name),
            escape(&f.what),
            change_word(f.judgement.change),
            strip(f),
            f.judgement.base_median,
            f.judgement.head_median,
            escape(&delta(f)),
            escape(&interval(f)),
            f.judgement.p,
            f.judgement.threshold
        );
    }
    out.push_str("</table><p>Runs: ");
    let links: Vec<String> = d
        .runs
        .iter()
        .map(|r| {
            let outcome = r.outcome.map_or("could not run", |o| o.label());
            let broken = if r.broken_invariants.is_empty() {
                String::new()
            } else {
                format!(" — {}", escape(&r.broken_invariants.join("; ")))
            };
            format!(
                "<a href=\"{0}/report.html\">{1} {2}</a> {outcome}{broken}",
                escape(&r.dir),
                escape(&r.side),
                r.repetition + 1
            )
        })
        .collect();
    out.push_str(&links.join(", "));
    out.push_str("</p>");
}

/// `junit.xml`: a test suite per drill, a test case per figure (a regression is a failure, an
/// undecided figure is a failure saying it could not be decided) and one for the drill's
/// invariants over every run of both sides.
pub fn junit(run: &GateRun) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"flashlab gate\">\n");
    for d in &run.drills {
        let name = escape(&d.drill);
        let cases = d.figures.len() + 1;
        let broken: Vec<String> = d
            .runs
            .iter()
            .flat_map(|r| r.broken_invariants.iter().map(move |b| format!("{} run {}: {b}", r.side, r.repetition + 1)))
            .collect();
        let failures =
            d.figures.iter().filter(|f| matches!(f.judgement.change, Change::Regressed | Change::Inconclusive)).count()
                + usize::from(!broken.is_empty());
        let _ = writeln!(out, "  <testsuite name=\"{name}\" tests=\"{cases}\" failures=\"{failures}\">");
        for f in &d.figures {
            let case = format!("    <testcase classname=\"gate.{name}\" name=\"{}\"", escape(&f.name));
            match f.judgement.change {
                Change::Regressed | Change::Inconclusive => {
                    let _ = writeln!(
                        out,
                        "{case}>\n      <failure type=\"{}\" message=\"{}: median {:.4} → {:.4}, Δ {}, interval {}, p {:.4}, matters ≥ {:.4}\"/>\n    </testcase>",
                        change_word(f.judgement.change),
                        change_word(f.judgement.change),
                        f.judgement.base_median,
                        f.judgement.head_median,
                        escape(&delta(f)),
                        escape(&interval(f)),
                        f.judgement.p,
                        f.judgement.threshold
                    );
                }
                _ => {
                    let _ = writeln!(out, "{case}/>");
                }
            }
        }
        let case = format!("    <testcase classname=\"gate.{name}\" name=\"invariants\"");
        if broken.is_empty() {
            let _ = writeln!(out, "{case}/>");
        } else {
            let _ = writeln!(
                out,
                "{case}>\n      <failure type=\"invariant\" message=\"an invariant broke\">{}</failure>\n    </testcase>",
                escape(&broken.join("\n"))
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rundir::gate::{GateRunRecord, Machine, Side};
    use rundir::Outcome;

    use super::*;

    fn figure(name: &str, change: Change) -> FigureGate {
        FigureGate {
            name: name.into(),
            what: "w".into(),
            better: Better::Lower,
            base: vec![20.0, 21.0, 22.0],
            head: vec![60.0, 61.0, 62.0],
            judgement: rundir::gate::Judgement {
                change,
                base_median: 21.0,
                head_median: 61.0,
                difference: 40.0,
                interval: (38.0, 42.0),
                threshold: 10.0,
                p: 0.1,
            },
        }
    }

    fn gate(broken: bool) -> GateRun {
        let record = |side: &str, rep: u32| GateRunRecord {
            side: side.into(),
            repetition: rep,
            seed: 1,
            dir: format!("kafka-outage/{side}-{rep:02}"),
            outcome: Some(Outcome::Pass),
            error: None,
            values: BTreeMap::new(),
            broken_invariants: if broken && side == "head" {
                vec!["no oversell: 101: 12 completed of 10".into()]
            } else {
                vec![]
            },
            took_ms: 1000,
        };
        GateRun {
            started_unix_ms: 0,
            ended_unix_ms: Some(1),
            mode: "a/b".into(),
            suite: "ci/gate-suite.toml".into(),
            alpha: 0.05,
            confidence: 0.95,
            base: Side { label: "base".into(), bin: "/b/flashsale".into(), ..Side::default() },
            head: Side { label: "head".into(), bin: "/h/flashsale".into(), ..Side::default() },
            machine: Machine::default(),
            drills: vec![DrillGate {
                drill: "kafka-outage".into(),
                scale: 0.3,
                repetitions: 1,
                runs: vec![record("base", 0), record("head", 0)],
                figures: vec![figure("p99_ms", Change::Regressed), figure("availability", Change::Unchanged)],
            }],
            interrupted: false,
        }
    }

    #[test]
    fn the_summary_names_the_regression_with_its_statistics_and_the_broken_invariant() {
        let md = summary(&gate(true));
        assert!(md.starts_with("## flashlab gate: FAIL"), "{md}");
        assert!(md.contains("| regressed | kafka-outage | p99_ms | 21.0000 → 61.0000 | +40.0000 (+190 %) | [+38.0000, +42.0000] | 0.1000 | ≥ 10.0000 |"), "{md}");
        assert!(!md.contains("| unchanged |"), "unchanged figures stay out of the comment: {md}");
        assert!(md.contains("**invariant broken** in kafka-outage head run 1 ([report](kafka-outage/head-00/report.html)): no oversell"), "{md}");
        let xml = junit(&gate(true));
        assert!(xml.contains("name=\"p99_ms\">\n      <failure type=\"regressed\""), "{xml}");
        assert!(xml.contains("name=\"availability\"/>"), "{xml}");
        assert!(xml.contains("<failure type=\"invariant\""), "{xml}");
        let html = page(&gate(false));
        assert!(html.contains("<tr class=\"regressed\">") && html.contains("<circle"), "drawn");
        assert!(!junit(&gate(false)).contains("type=\"invariant\""));
    }
}

//! A capacity search's reports, from its `capacity.json` alone: `summary.md`, `report.html`
//! (self-contained, inline SVG) and `plots/*.png|svg` — achieved vs offered throughput (the
//! ideal line, the knee and the answer marked), p99 and time-to-decision vs offered with the
//! SLO line, per-component CPU vs offered, and the USL curve with the measured points and the
//! peak needed.

pub mod plots;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use rundir::capacity::{usl, CapacityRun, TopologyResult, TrialOutcome};

use crate::documents::{escape, utc};
use crate::ReportError;
use plots::{color, Mark, Series, XyPlot};

/// What [`render`] wrote.
#[derive(Debug)]
pub struct Rendered {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
}

fn achieved(t: &rundir::capacity::Trial) -> f64 {
    t.m.decided_rate.unwrap_or(t.m.accepted_rate)
}

fn judged(t: &TopologyResult) -> impl Iterator<Item = &rundir::capacity::Trial> {
    t.trials.iter().filter(|x| x.outcome != TrialOutcome::Invalid)
}

/// The plots of a search.
pub fn plots_of(run: &CapacityRun) -> Vec<XyPlot> {
    let mut out = Vec::new();
    let max_rate = run.topologies.iter().flat_map(|t| t.trials.iter().map(|x| x.rate)).fold(0.0, f64::max);
    let mut throughput = XyPlot {
        name: "capacity-throughput".into(),
        title: "Achieved vs offered (orders decided per second)".into(),
        x_label: "offered, orders/s".into(),
        y_label: "achieved, orders/s".into(),
        series: vec![Series {
            label: "ideal (achieved = offered)".into(),
            color: plotters::style::RGBColor(150, 150, 150),
            mark: Mark::Dashed,
            points: vec![(0.0, 0.0), (max_rate, max_rate)],
        }],
        vlines: Vec::new(),
        hlines: Vec::new(),
    };
    let mut latency = XyPlot {
        name: "capacity-latency".into(),
        title: "Corrected p99 of POST /buy vs offered".into(),
        x_label: "offered, orders/s".into(),
        y_label: "p99, ms".into(),
        series: Vec::new(),
        vlines: Vec::new(),
        hlines: vec![(run.criteria.p99_ms, format!("SLO p99 ≤ {} ms", run.criteria.p99_ms))],
    };
    let mut decision = XyPlot {
        name: "capacity-decision".into(),
        title: "Time to decision (accepted → decided), p99, vs offered".into(),
        x_label: "offered, orders/s".into(),
        y_label: "p99, ms".into(),
        series: Vec::new(),
        vlines: Vec::new(),
        hlines: vec![(
            run.criteria.time_to_decision_p99_ms,
            format!("SLO p99 ≤ {} ms", run.criteria.time_to_decision_p99_ms),
        )],
    };
    for (i, t) in run.topologies.iter().enumerate() {
        let c = color(i);
        throughput.series.push(Series {
            label: t.label.clone(),
            color: c,
            mark: Mark::Line,
            points: judged(t).map(|x| (x.rate, achieved(x))).collect(),
        });
        let invalid: Vec<(f64, f64)> =
            t.trials.iter().filter(|x| x.outcome == TrialOutcome::Invalid).map(|x| (x.rate, achieved(x))).collect();
        if !invalid.is_empty() {
            throughput.series.push(Series {
                label: format!("{} invalid trials", t.label),
                color: plotters::style::RGBColor(0, 0, 0),
                mark: Mark::Points,
                points: invalid,
            });
        }
        if let Some(k) = &t.knee {
            throughput.vlines.push((k.rate, format!("knee {}", t.label)));
        }
        if let Some(s) = t.sustainable {
            throughput.vlines.push((s, format!("sustained {}", t.label)));
            latency.vlines.push((s, format!("sustained {}", t.label)));
        }
        latency.series.push(Series {
            label: t.label.clone(),
            color: c,
            mark: Mark::Line,
            points: judged(t).filter_map(|x| Some((x.rate, x.m.p99_ms?))).collect(),
        });
        decision.series.push(Series {
            label: t.label.clone(),
            color: c,
            mark: Mark::Line,
            points: judged(t).filter_map(|x| Some((x.rate, x.m.time_to_decision_p99_ms?))).collect(),
        });
        // CPU per component.
        let mut components: Vec<String> = judged(t).flat_map(|x| x.m.components.keys().cloned()).collect();
        components.sort();
        components.dedup();
        let cpu = XyPlot {
            name: format!("capacity-cpu-{}", t.label.replace('=', "-")),
            title: format!("CPU per process vs offered, {}", t.label),
            x_label: "offered, orders/s".into(),
            y_label: "cores".into(),
            series: components
                .iter()
                .enumerate()
                .map(|(j, comp)| Series {
                    label: comp.clone(),
                    color: color(j),
                    mark: Mark::Line,
                    points: judged(t).filter_map(|x| Some((x.rate, x.m.components.get(comp)?.cores))).collect(),
                })
                .collect(),
            vlines: t.sustainable.map(|s| vec![(s, "sustained".to_string())]).unwrap_or_default(),
            hlines: Vec::new(),
        };
        out.push(cpu);
    }
    let mut all = vec![throughput, latency, decision];
    all.append(&mut out);
    if let Some(fit) = &run.usl {
        let top = fit.trusted_up_to.max(fit.points.iter().map(|p| p.0).fold(1.0, f64::max));
        let curve: Vec<(f64, f64)> =
            (0..=40).map(|i| 1.0 + (top - 1.0) * i as f64 / 40.0).map(|n| (n, usl(fit.lambda, fit.sigma, fit.kappa, n))).collect();
        let mut p = XyPlot {
            name: "capacity-usl".into(),
            title: format!("Universal Scalability Law: σ {:.3}, κ {:.4}, R² {:.2}", fit.sigma, fit.kappa, fit.r2),
            x_label: fit.parameter.clone(),
            y_label: "sustained, orders/s".into(),
            series: vec![
                Series { label: "measured".into(), color: color(0), mark: Mark::Points, points: fit.points.clone() },
                Series {
                    label: format!("fit (trusted up to {})", fit.trusted_up_to),
                    color: color(1),
                    mark: Mark::Dashed,
                    points: curve,
                },
            ],
            vlines: fit.peak_n.filter(|n| *n <= top).map(|n| vec![(n, format!("peak N {n:.1}"))]).unwrap_or_default(),
            hlines: Vec::new(),
        };
        if let Some(peak) = &run.peak {
            p.hlines.push((peak.needed(), "peak + headroom".into()));
        }
        all.push(p);
    }
    all
}

fn fmt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}{unit}")).unwrap_or_else(|| "–".into())
}

fn rate(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}/s")).unwrap_or_else(|| "–".into())
}

/// `summary.md`.
pub fn markdown(run: &CapacityRun) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Capacity\n\n**{}**\n", run.answer.sentence);
    let c = &run.criteria;
    let _ = writeln!(
        s,
        "Sustainable: availability ≥ {} % (unserved arrivals counted), corrected p99 ≤ {} ms, time to decision p99 ≤ {} ms, consumer lag not growing (slope ≤ {} % of the rate per second), ≤ {} dropped arrivals; every invariant held; the generator kept its schedule. Commit `{}`, seed {}, started {}{}.\n",
        c.availability * 100.0,
        c.p99_ms,
        c.time_to_decision_p99_ms,
        c.lag_growth_share * 100.0,
        c.max_dropped,
        run.commit,
        run.seed,
        utc(run.started_unix_ms, true),
        if run.interrupted { "; **cut short** (Ctrl-C or the time budget)" } else { "" }
    );
    let _ = writeln!(s, "| topology | sustained | ± | first failed | knee | p99 knee | saturates first | search |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for t in &run.topologies {
        let _ = writeln!(
            s,
            "| {} | {}{} | {} | {} | {} | {} | {} | {} |",
            t.label,
            rate(t.sustainable),
            if t.generator_bound { " (lower bound: generator)" } else { "" },
            fmt(t.uncertainty.map(|u| u * 100.0), " %", 1),
            rate(t.first_failed),
            rate(t.knee.as_ref().map(|k| k.rate)),
            rate(t.knee.as_ref().and_then(|k| k.latency_knee_rate)),
            t.bottleneck.as_ref().map(|b| b.component.as_str()).unwrap_or("–"),
            t.stopped
        );
    }
    for t in &run.topologies {
        if let Some(b) = &t.bottleneck {
            let _ = writeln!(s, "\n**{}: {} saturates first**\n", t.label, b.component);
            for e in &b.evidence {
                let _ = writeln!(s, "- {e}");
            }
        }
    }
    if let Some(fit) = &run.usl {
        let _ = writeln!(
            s,
            "\n**Universal Scalability Law** over {}: λ {:.0}/s, σ {:.4} (contention), κ {:.5} (coherency), R² {:.3}; {}{}.",
            fit.parameter,
            fit.lambda,
            fit.sigma,
            fit.kappa,
            fit.r2,
            fit.note,
            match (fit.peak_n, fit.peak_rate) {
                (Some(n), Some(x)) => format!("; the law peaks at {} ≈ {n:.1} ({x:.0}/s)", fit.parameter),
                _ => String::new(),
            }
        );
    }
    let _ = writeln!(s, "\n## Trials\n");
    let _ = writeln!(
        s,
        "| # | topology | why | offered | outcome | availability | p99 | decision p99 | decided | generator CPU | reason |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for t in &run.topologies {
        for x in &t.trials {
            let _ = writeln!(
                s,
                "| {} | {} | {:?} | {:.0}/s × {:.0} s | {:?} | {} | {} | {} | {} | {} | {} |",
                x.index,
                t.label,
                x.role,
                x.rate,
                x.duration_s,
                x.outcome,
                fmt(x.m.availability.map(|a| a * 100.0), " %", 3),
                fmt(x.m.p99_ms, " ms", 0),
                fmt(x.m.time_to_decision_p99_ms, " ms", 0),
                rate(x.m.decided_rate),
                fmt(x.m.generator_cores, " cores", 2),
                x.reasons.first().map(|r| r.replace('|', "/")).unwrap_or_default()
            );
        }
    }
    s
}

/// `report.html`: the summary with the plots inline.
pub fn html(run: &CapacityRun, svgs: &[(String, String)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>capacity</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}} table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} .answer{{font-size:1.25em;padding:.6em;background:#f3f7ff;border-left:4px solid #1976d2}} .Failed{{color:#b71c1c}} .Invalid{{color:#666;font-style:italic}}</style></head><body>"
    );
    let _ = write!(h, "<h1>Capacity</h1><p class=\"answer\">{}</p>", escape(&run.answer.sentence));
    let _ = write!(
        h,
        "<p>How to read it: {} at one constant open arrival rate. A trial <b>sustained</b> the rate when every SLO and invariant held on enough evidence and the consumer lag did not grow; <b>failed</b> names what broke; <b>invalid</b> trials (the generator fell behind, too little evidence) count neither way. The answer is the highest rate a full-length confirmation trial sustained; ± is the gap to the next failed rate and the spread where trials disagreed.</p>",
        match &run.target {
            Some(url) => format!(
                "each trial loaded the deployment at {} (load only, after its processors showed no lag and nothing in flight; judged from its /metrics)",
                escape(url)
            ),
            None => "each trial ran the system fresh".to_string(),
        }
    );
    let md = markdown(run);
    // The tables, as HTML.
    let _ = write!(h, "<table><tr><th>topology</th><th>sustained</th><th>±</th><th>first failed</th><th>knee</th><th>saturates first</th><th>evidence</th></tr>");
    for t in &run.topologies {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.label),
            rate(t.sustainable),
            if t.generator_bound { " (lower bound)" } else { "" },
            fmt(t.uncertainty.map(|u| u * 100.0), " %", 1),
            rate(t.first_failed),
            rate(t.knee.as_ref().map(|k| k.rate)),
            t.bottleneck.as_ref().map(|b| escape(&b.component)).unwrap_or_else(|| "–".into()),
            t.bottleneck.as_ref().map(|b| b.evidence.iter().map(|e| escape(e)).collect::<Vec<_>>().join("<br>")).unwrap_or_default()
        );
    }
    let _ = write!(h, "</table>");
    for (name, svg) in svgs {
        let _ = write!(h, "<h3>{}</h3>{svg}", escape(name));
    }
    let _ = write!(h, "<h2>Trials</h2><table><tr><th>#</th><th>topology</th><th>why</th><th>offered</th><th>outcome</th><th>availability</th><th>p99</th><th>decision p99</th><th>decided</th><th>generator CPU</th><th>reasons</th><th>run</th></tr>");
    for t in &run.topologies {
        for x in &t.trials {
            let _ = write!(
                h,
                "<tr class=\"{:?}\"><td>{}</td><td>{}</td><td>{:?}</td><td>{:.0}/s × {:.0} s</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}/run/report.html\">report</a></td></tr>",
                x.outcome,
                x.index,
                escape(&t.label),
                x.role,
                x.rate,
                x.duration_s,
                x.outcome,
                fmt(x.m.availability.map(|a| a * 100.0), " %", 3),
                fmt(x.m.p99_ms, " ms", 0),
                fmt(x.m.time_to_decision_p99_ms, " ms", 0),
                rate(x.m.decided_rate),
                fmt(x.m.generator_cores, " cores", 2),
                x.reasons.iter().map(|r| escape(r)).collect::<Vec<_>>().join("<br>"),
                escape(&x.dir)
            );
        }
    }
    let _ = write!(h, "</table><h2>summary.md</h2><pre>{}</pre></body></html>", escape(&md));
    h
}

/// Renders the reports of the search in `dir` (and each trial's drill report).
pub fn render(dir: &Path) -> Result<Rendered, ReportError> {
    let path = dir.join(rundir::files::CAPACITY);
    let run = rundir::capacity::read(&path)?;
    for t in &run.topologies {
        for x in &t.trials {
            let trial = dir.join(&x.dir).join("run");
            if trial.join(rundir::files::VERDICT).is_file() {
                // A trial's own report is a view: a failure to draw it leaves the search's.
                let _ = crate::render(&trial);
            }
        }
    }
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .map_err(|source| ReportError::Read { path: plots_dir.display().to_string(), source })?;
    let mut svgs = Vec::new();
    let mut written = Vec::new();
    for p in plots_of(&run) {
        let svg = plots::svg(&p).map_err(ReportError::Render)?;
        let svg_path = plots_dir.join(format!("{}.svg", p.name));
        crate::write(&svg_path, &svg)?;
        let png_path = plots_dir.join(format!("{}.png", p.name));
        plots::png(&p, &png_path).map_err(ReportError::Render)?;
        written.push(png_path);
        svgs.push((p.title.clone(), svg));
    }
    let markdown = dir.join("summary.md");
    crate::write(&markdown, &self::markdown(&run))?;
    let html_path = dir.join("report.html");
    crate::write(&html_path, &html(&run, &svgs))?;
    Ok(Rendered { html: html_path, markdown, plots: written })
}

//! The table `flashlab load` prints at the end.

use std::fmt::Write;

use crate::run::{LoadSummary, PhaseSummary};

fn row(out: &mut String, p: &PhaseSummary) {
    let top: Vec<String> = {
        let mut outcomes: Vec<(&String, &u64)> = p.outcomes.iter().collect();
        outcomes.sort_by(|a, b| b.1.cmp(a.1));
        outcomes.iter().take(4).map(|(k, v)| format!("{k}:{v}")).collect()
    };
    let _ = writeln!(
        out,
        "{:<10} {:>8} {:>8} {:>7} {:>8.1} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {}",
        p.name,
        p.offered,
        p.started,
        p.dropped + p.not_started,
        p.achieved_rate,
        p.buy_requests,
        p.corrected.p50_ms,
        p.corrected.p95_ms,
        p.corrected.p99_ms,
        p.service.p99_ms,
        p.corrected.max_ms,
        top.join(" "),
    );
}

/// The summary as a table: one row per phase and a total.
pub fn table(summary: &LoadSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>8} {:>8} {:>7} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  POST /buy outcomes",
        "phase",
        "offered",
        "started",
        "dropped",
        "rate/s",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "svc p99",
        "max ms",
    );
    for phase in &summary.phases {
        row(&mut out, phase);
    }
    row(&mut out, &summary.total);
    let _ = writeln!(
        out,
        "latency: from the intended send time (coordinated omission corrected); svc p99: from the actual send"
    );
    if let Some(goose) = &summary.goose {
        let counted: Vec<String> = goose.requests.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "goose counted {} with {} users", counted.join(", "), goose.users);
    }
    if let Some(g) = &summary.generator {
        let _ = writeln!(
            out,
            "generator: {} of {} users up at the start (after {:.1} s); arrivals offered late p99 {:.1} ms, max {:.1} ms ({} ≥ {} ms late); peak backlog {}, in flight {} of {}; CPU {:.1} s over {:.1} s",
            g.users_ready_at_start,
            g.max_in_flight,
            g.users_ready_ms as f64 / 1000.0,
            g.feeder_late.p99_ms,
            g.feeder_late.max_ms,
            g.late_arrivals,
            crate::run::LATE_MS,
            g.peak_backlog,
            g.peak_in_flight,
            g.max_in_flight,
            g.process_cpu_s,
            g.wall_s,
        );
    }
    if summary.interrupted {
        let _ = writeln!(out, "INTERRUPTED before the schedule ended");
    }
    out
}

//! The verdict as the table `flashlab drill` prints.

use rundir::Outcome;

use super::DrillRun;

/// The verdict as a table.
pub fn table(run: &DrillRun) -> String {
    let v = &run.verdict;
    let mut out = String::new();
    out.push_str(&format!("{:<4} {:<58} {:<34} {}\n", "", "check", "target", "measured"));
    for c in &v.checks {
        let mark = match c.outcome {
            Outcome::Pass => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Inconclusive => "??",
        };
        out.push_str(&format!(
            "{:<4} {:<58} {:<34} {}\n",
            mark,
            truncate(&c.title(), 58),
            truncate(&c.target, 34),
            c.measured
        ));
        if c.outcome == Outcome::Inconclusive {
            out.push_str(&format!("       - not enough evidence: needs {}, saw {}\n", c.needed, c.seen));
        }
        if !c.passed() {
            for e in &c.evidence {
                out.push_str(&format!("       - {e}\n"));
            }
        }
    }
    let f = &v.figures;
    out.push_str(&format!(
        "availability {} of {} requests ({} unserved); outside faults {}; during faults {}; error budget burned {:.3}% of 30 days; RPO {}\n",
        f.availability.map(|a| format!("{:.3}%", a * 100.0)).unwrap_or("-".into()),
        f.requests,
        f.unserved,
        f.availability_outside_faults.map(|a| format!("{:.3}%", a * 100.0)).unwrap_or("-".into()),
        f.availability_during_faults.map(|a| format!("{:.3}%", a * 100.0)).unwrap_or("-".into()),
        f.error_budget_burned * 100.0,
        f.rpo.map(|r| r.to_string()).unwrap_or("not measured".into())
    ));
    for (fault, rto) in &f.rto_s {
        out.push_str(&format!("RTO {fault}: {}\n", rto.map(|s| format!("{s:.1} s")).unwrap_or("not recovered".into())));
    }
    if let Some(lag) = f.max_consumer_lag {
        out.push_str(&format!("max consumer lag {lag:.0}\n"));
    }
    if f.maintenance_pages > 0 {
        out.push_str(&format!("maintenance pages served {}\n", f.maintenance_pages));
    }
    for (phase, t) in &f.time_to_decision {
        out.push_str(&format!(
            "time to decision, phase {phase}: p99 {:.0} ms, max {:.0} ms ({} orders)\n",
            t.p99_ms, t.max_ms, t.decisions
        ));
    }
    for (fault, t) in &f.decided_after_heal {
        out.push_str(&format!(
            "orders held by fault {fault}: {} decided after its heal, the last {:.0} ms after\n",
            t.decisions, t.max_ms
        ));
    }
    for (what, figure) in f.release.iter().flat_map(|r| r.rows()) {
        out.push_str(&format!("{what}: {figure}\n"));
    }
    out.push_str(&format!("verdict: {} — {} ({})\n", v.outcome.label(), v.scenario, run.dir.display()));
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

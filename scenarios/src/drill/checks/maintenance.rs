//! The maintenance page (`[slo] phase_maintenance_min`): in the phases named, when no gateway is
//! up, buyers get the front's maintenance page (503, HTML, `Retry-After`) — not a refused or reset
//! connection. Judged on the `POST /buy` answers of each phase; the page's count over the run is
//! a figure.

use rundir::{CheckResult, Figures, Kind, Op, Outcome};

use super::{Evidence, Judged};

/// Answers a phase needs before its share is judged.
const NEED: u64 = 50;

pub fn maintenance(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let page = |a: &rundir::Attempt| a.error.as_deref() == Some(rundir::MAINTENANCE);
    let buys = || run.attempts.iter().map(|&(i, _)| &ev.history[i]).filter(|a| a.op == Op::Buy);
    figures.maintenance_pages = buys().filter(|a| page(a)).count() as u64;
    for (phase, &min) in &ev.scenario.slo.phase_maintenance_min {
        let (mut pages, mut total) = (0u64, 0u64);
        let mut others: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for a in buys().filter(|a| &a.phase == phase) {
            total += 1;
            if page(a) {
                pages += 1;
            } else {
                *others.entry(a.outcome()).or_default() += 1;
            }
        }
        let share = (total > 0).then(|| pages as f64 / total as f64);
        let evidence: Vec<String> = others.iter().map(|(outcome, n)| format!("{n} answered {outcome}")).collect();
        results.push(
            CheckResult::new(
                &format!("maintenance page, phase {phase}"),
                Kind::Slo,
                format!("≥ {:.0}% of the answers", min * 100.0),
                match share {
                    Some(s) => format!("{pages} of {total} ({:.1}%)", s * 100.0),
                    None => "no requests".into(),
                },
                Outcome::judge(share.is_none_or(|s| s >= min), total >= NEED),
            )
            .needing(format!("≥ {NEED} answers"), format!("{total} answers"))
            .with(evidence),
        );
    }
}

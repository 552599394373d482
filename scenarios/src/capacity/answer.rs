//! The headroom answer, a plain sentence first, and the exit status: 0 the peak with headroom
//! is met by a measured topology (or, without `--peak`, a rate was sustained), 1 it is not, 2
//! the search could not answer.

use rundir::capacity::{Answer, CapacityRun, TopologyResult, UslFit};

use super::analysis::fit_usl;
use super::settings::Settings;

/// The answer before the search has one.
pub fn pending() -> Answer {
    Answer { sentence: "the search has not finished".into(), peak_met: None, answered: false }
}

/// The law over a sweep's answers (needs N = 1 and another N).
pub fn usl_of(settings: &Settings, topologies: &[TopologyResult]) -> Option<UslFit> {
    let parameter = settings.sweep.as_deref()?;
    let points: Vec<(f64, f64)> = topologies
        .iter()
        .filter_map(|t| {
            let n = if parameter == "gateways" { t.gateways } else { t.processors };
            Some((n as f64, t.sustainable?))
        })
        .collect();
    fit_usl(parameter, &points).ok()
}

/// `2,350`.
pub fn rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn noun(parameter: &str, n: usize) -> String {
    let one = parameter.trim_end_matches('s');
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {parameter}")
    }
}

/// The sentence and whether the peak is met.
pub fn answer(run: &CapacityRun) -> Answer {
    let parameter = run.usl.as_ref().map(|u| u.parameter.clone()).unwrap_or_else(|| "processors".into());
    let n_of = |t: &TopologyResult| if parameter == "gateways" { t.gateways } else { t.processors };
    let answered: Vec<&TopologyResult> = run.topologies.iter().filter(|t| t.sustainable.is_some()).collect();
    let describe = |t: &TopologyResult| {
        let s = t.sustainable.unwrap_or(0.0);
        let mut out = format!(
            "sustainable {} orders/s (±{:.0} %) with {}",
            rate(s),
            t.uncertainty.unwrap_or(0.0) * 100.0,
            noun(&parameter, n_of(t))
        );
        if t.generator_bound {
            out.push_str(" — a lower bound: the generator, not the system, fell behind above it");
        }
        out
    };
    let saturates = |t: &TopologyResult| {
        t.bottleneck.as_ref().map(|b| format!("{} saturates first", b.component)).unwrap_or_else(|| "the component that saturates was not identified".into())
    };
    let interrupted = if run.interrupted { " (the search was cut short: what was measured so far)" } else { "" };
    if answered.is_empty() {
        let why = run.topologies.first().map(|t| t.stopped.clone()).unwrap_or_else(|| "no trial ran".into());
        return Answer { sentence: format!("no rate was sustained: {why}{interrupted}"), peak_met: None, answered: false };
    }
    let Some(peak) = &run.peak else {
        let best = answered.iter().max_by(|a, b| a.sustainable.unwrap_or(0.0).total_cmp(&b.sustainable.unwrap_or(0.0))).copied();
        let parts: Vec<String> = answered.iter().map(|t| describe(t)).collect();
        let tail = best.map(|t| format!("; {}", saturates(t))).unwrap_or_default();
        return Answer { sentence: format!("{}{tail}{interrupted}", parts.join("; ")), peak_met: None, answered: true };
    };
    let need = peak.needed();
    let head = format!("expected peak {}/s + {:.0} % headroom ({}/s)", rate(peak.rate), peak.headroom * 100.0, rate(need));
    let meets = answered.iter().filter(|t| t.sustainable.unwrap_or(0.0) >= need).min_by_key(|t| n_of(t));
    if let Some(t) = meets {
        return Answer {
            sentence: format!("{}; {head} is met with {}{interrupted}", describe(t), noun(&parameter, n_of(t))),
            peak_met: Some(true),
            answered: true,
        };
    }
    let best = answered.iter().max_by_key(|t| n_of(t)).copied().unwrap_or(answered[0]);
    let measured_n = n_of(best);
    if let Some(fit) = &run.usl {
        let max_n = (fit.trusted_up_to.floor() as usize).min(8);
        if let Some((n, x)) = (measured_n + 1..=max_n).find_map(|n| fit.predict(n as f64).filter(|x| *x >= need).map(|x| (n, x))) {
            return Answer {
                sentence: format!(
                    "{}; {head} needs {} (predicted {}/s by the USL fit, not measured){interrupted}",
                    describe(best),
                    noun(&parameter, n),
                    rate(x)
                ),
                peak_met: Some(false),
                answered: true,
            };
        }
        let why = match fit.peak_n {
            Some(p) if p <= max_n as f64 => format!("adding {parameter} stops helping at about {p:.1}"),
            _ => format!("the fit is trusted up to {parameter}={} only ({})", fit.trusted_up_to, fit.note),
        };
        return Answer {
            sentence: format!(
                "{}; {head} is not reachable by adding {parameter} within what the data supports: {why}; {}{interrupted}",
                describe(best),
                saturates(best)
            ),
            peak_met: Some(false),
            answered: true,
        };
    }
    Answer {
        sentence: format!(
            "{}; {head} is not met; {} (sweep {parameter}, e.g. --sweep {parameter}=1,2,4, to see what adding them buys){interrupted}",
            describe(best),
            saturates(best)
        ),
        peak_met: Some(false),
        answered: true,
    }
}

/// 0 / 1 / 2 as the module says.
pub fn exit_code(run: &CapacityRun) -> u8 {
    match (run.answer.answered, run.answer.peak_met) {
        (false, _) => 2,
        (true, Some(false)) => 1,
        (true, _) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_with_thousands_separators() {
        assert_eq!(rate(2350.4), "2,350");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1_234_567.0), "1,234,567");
    }
}

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
    // A deployment (`--target`) is searched as it is: no topology of the lab's to name.
    let with = |t: &TopologyResult| match &run.target {
        Some(url) => format!("by the deployment at {url}"),
        None => format!("with {}", noun(&parameter, n_of(t))),
    };
    let describe = |t: &TopologyResult| {
        let s = t.sustainable.unwrap_or(0.0);
        let mut out = format!("sustainable {} orders/s (±{:.0} %) {}", rate(s), t.uncertainty.unwrap_or(0.0) * 100.0, with(t));
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
        let by = if run.target.is_some() { "is met".to_string() } else { format!("is met with {}", noun(&parameter, n_of(t))) };
        return Answer {
            sentence: format!("{}; {head} {by}{interrupted}", describe(t)),
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
        let measured_max = fit.points.iter().map(|p| p.0).fold(1.0, f64::max);
        let verdict = match (fit.peak_n, fit.peak_rate) {
            (Some(p), Some(x)) if p <= max_n as f64 => format!(
                "is not reachable by adding {parameter}: the law peaks at about {p:.1} {parameter} ({}/s)",
                rate(x)
            ),
            _ if fit.trusted_up_to <= measured_max + 1e-9 => format!(
                "needs more than {}; how many the data cannot say ({}): sweep further, e.g. --sweep {parameter}=1,2,4",
                noun(&parameter, measured_max as usize),
                fit.note
            ),
            _ => format!(
                "is not reachable with up to {} (predicted {}/s there)",
                noun(&parameter, max_n),
                rate(fit.predict(max_n as f64).unwrap_or(0.0))
            ),
        };
        return Answer {
            sentence: format!("{}; {head} {verdict}; {}{interrupted}", describe(best), saturates(best)),
            peak_met: Some(false),
            answered: true,
        };
    }
    let advice = if run.target.is_some() {
        "add capacity to the deployment and search again".to_string()
    } else {
        format!("sweep {parameter}, e.g. --sweep {parameter}=1,2,4, to see what adding them buys")
    };
    Answer {
        sentence: format!("{}; {head} is not met; {} ({advice}){interrupted}", describe(best), saturates(best)),
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

#[cfg(test)]
mod sentence_tests {
    use super::*;
    use rundir::capacity::{Bottleneck, Criteria, Peak, Search};

    fn topology(n: usize, sustainable: Option<f64>) -> TopologyResult {
        TopologyResult {
            label: format!("processors={n}"),
            gateways: 1,
            processors: n,
            partitions: 6,
            trials: Vec::new(),
            sustainable,
            first_failed: None,
            uncertainty: Some(0.04),
            knee: None,
            bottleneck: Some(Bottleneck { component: "broker".into(), evidence: Vec::new() }),
            stopped: "confirmed".into(),
            generator_bound: false,
        }
    }

    fn run(topologies: Vec<TopologyResult>, peak: Option<f64>) -> CapacityRun {
        let mut r = CapacityRun {
            started_unix_ms: 0,
            ended_unix_ms: None,
            commit: String::new(),
            seed: 1,
            criteria: Criteria { availability: 0.999, p99_ms: 1000.0, time_to_decision_p99_ms: 5000.0, lag_growth_share: 0.02, max_dropped: 0 },
            search: Search { start_rate: 100.0, max_rate: 8000.0, resolution: 0.05, trial_s: 15.0, confirm_s: 45.0, repeats: 2, budget_s: 1800.0 },
            peak: peak.map(|rate| Peak { rate, headroom: 0.3 }),
            topologies,
            usl: None,
            answer: pending(),
            interrupted: false,
            target: None,
        };
        let points: Vec<(f64, f64)> = r.topologies.iter().filter_map(|t| Some((t.processors as f64, t.sustainable?))).collect();
        r.usl = fit_usl("processors", &points).ok();
        r
    }

    #[test]
    fn a_met_peak_names_the_smallest_topology_that_meets_it() {
        let r = run(vec![topology(1, Some(1000.0)), topology(2, Some(1800.0))], Some(1200.0));
        let a = answer(&r);
        assert_eq!(a.peak_met, Some(true));
        assert!(a.sentence.starts_with("sustainable 1,800 orders/s (±4 %) with 2 processors; expected peak 1,200/s + 30 % headroom (1,560/s) is met with 2 processors"), "{}", a.sentence);
        assert_eq!(exit_code(&RunWith(a).into_run(r)), 0);
    }

    #[test]
    fn a_deployment_is_answered_as_it_is() {
        let mut r = run(vec![topology(1, Some(1000.0))], Some(1000.0));
        r.target = Some("http://127.0.0.1:8080".into());
        let a = answer(&r);
        assert_eq!(a.peak_met, Some(false));
        assert!(
            a.sentence.starts_with("sustainable 1,000 orders/s (±4 %) by the deployment at http://127.0.0.1:8080; expected peak 1,000/s + 30 % headroom (1,300/s) is not met; broker saturates first (add capacity to the deployment"),
            "{}",
            a.sentence
        );
        r.peak = Some(Peak { rate: 500.0, headroom: 0.3 });
        let a = answer(&r);
        assert!(a.sentence.ends_with("(650/s) is met"), "{}", a.sentence);
        assert_eq!(exit_code(&RunWith(a).into_run(r)), 0);
    }

    #[test]
    fn a_peak_beyond_the_data_is_not_met_and_says_what_is_unknown() {
        let r = run(vec![topology(1, Some(1000.0)), topology(2, Some(1800.0))], Some(2000.0));
        let a = answer(&r);
        assert_eq!(a.peak_met, Some(false));
        assert!(a.sentence.contains("needs more than 2 processors; how many the data cannot say"), "{}", a.sentence);
        assert!(a.sentence.contains("broker saturates first"), "{}", a.sentence);
        assert_eq!(exit_code(&RunWith(a).into_run(r)), 1);
    }

    #[test]
    fn a_good_fit_predicts_the_topology_needed_and_a_peaked_law_says_adding_stops_helping() {
        let law = |n: f64| rundir::capacity::usl(1000.0, 0.1, 0.01, n);
        let three = vec![topology(1, Some(law(1.0))), topology(2, Some(law(2.0))), topology(3, Some(law(3.0)))];
        let a = answer(&run(three.clone(), Some(law(4.0) / 1.3 - 1.0)));
        assert_eq!(a.peak_met, Some(false));
        assert!(a.sentence.contains("needs 4 processors (predicted"), "{}", a.sentence);
        // The law peaks at √((1−0.1)/0.01) = 9.5 with X ≈ 4,250/s: more than that is unreachable.
        let a = answer(&run(three, Some(5000.0)));
        assert!(a.sentence.contains("is not reachable with up to 6 processors") || a.sentence.contains("is not reachable by adding processors"), "{}", a.sentence);
    }

    #[test]
    fn no_sustained_rate_is_exit_2_and_a_generator_bound_is_said() {
        let r = run(vec![topology(1, None)], Some(100.0));
        let a = answer(&r);
        assert!(!a.answered);
        assert!(a.sentence.starts_with("no rate was sustained"));
        assert_eq!(exit_code(&RunWith(a).into_run(r)), 2);
        let mut t = topology(1, Some(500.0));
        t.generator_bound = true;
        let a = answer(&run(vec![t], None));
        assert!(a.sentence.contains("a lower bound: the generator"), "{}", a.sentence);
        assert_eq!(a.peak_met, None);
    }

    struct RunWith(Answer);
    impl RunWith {
        fn into_run(self, mut r: CapacityRun) -> CapacityRun {
            r.answer = self.0;
            r
        }
    }
}

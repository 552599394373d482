//! The search for the highest sustained rate of one topology, over any [`Runner`] (the real
//! trials, or a model system in the tests):
//!
//! 1. **grow**: from the start rate, ×2 per trial until one fails (or the maximum rate holds);
//!    a failing start rate halves instead, at most four times;
//! 2. **bisect** between the last sustained and the first failed rate, at their geometric
//!    mean, until fail ÷ pass − 1 ≤ the resolution; then the failure that bounds the answer is
//!    tried again (up to `repeats` times in all): a one-off failure would otherwise cap the
//!    answer unseen — when it holds, the trials disagreed and the search goes on above it;
//! 3. **confirm** the answer with a full-length trial; a failed confirmation steps down by the
//!    resolution (twice) and confirms again, at most three times;
//! 4. **repeat**: where trials disagreed (a rate failed below one that held, or a confirmation
//!    failed where a short trial held), the answer is tried `repeats` more times; any failure
//!    steps it down again, and the disagreement widens the stated uncertainty.
//!
//! An invalid trial (the generator, not the system, fell behind; too little evidence) is never a
//! pass or a fail: it is retried once at the same rate, and a second invalid result ends the
//! search there with the answer marked a lower bound. Every trial checks the time budget and the
//! stop flag first: what was measured stands.

use rundir::capacity::{Role, Search, Trial, TrialOutcome};

/// Runs one trial; `None`: interrupted (Ctrl-C).
pub trait Runner {
    fn trial(
        &mut self,
        index: usize,
        role: Role,
        rate: f64,
        duration_s: f64,
    ) -> impl std::future::Future<Output = Option<Trial>>;
    /// Whether the time budget is spent.
    fn out_of_time(&self) -> bool;
}

/// What one topology's search found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub trials: Vec<Trial>,
    pub sustainable: Option<f64>,
    pub first_failed: Option<f64>,
    pub uncertainty: Option<f64>,
    pub stopped: String,
    pub generator_bound: bool,
    pub interrupted: bool,
}

struct State<'a, R: Runner> {
    runner: &'a mut R,
    search: &'a Search,
    found: Found,
}

enum Step {
    Held,
    Broke,
    /// Invalid twice, out of time or interrupted: the search ends.
    End,
}

impl<R: Runner> State<'_, R> {
    async fn run(&mut self, role: Role, rate: f64, duration_s: f64) -> Step {
        for attempt in 0..2 {
            if self.runner.out_of_time() {
                self.found.stopped = "the time budget ran out".into();
                self.found.interrupted = true;
                return Step::End;
            }
            let index = self.found.trials.len() + 1;
            let Some(trial) = self.runner.trial(index, role, rate, duration_s).await else {
                self.found.stopped = "interrupted".into();
                self.found.interrupted = true;
                return Step::End;
            };
            let outcome = trial.outcome;
            let reasons = trial.reasons.join("; ");
            self.found.trials.push(trial);
            match outcome {
                TrialOutcome::Sustained => return Step::Held,
                TrialOutcome::Failed => return Step::Broke,
                TrialOutcome::Invalid if attempt == 0 => continue,
                TrialOutcome::Invalid => {
                    self.found.generator_bound |= reasons.contains("generator");
                    self.found.stopped = format!("two invalid trials at {rate:.0}/s: {reasons}");
                    return Step::End;
                }
            }
        }
        Step::End
    }
}

/// Searches one topology.
pub async fn search<R: Runner>(runner: &mut R, search: &Search) -> Found {
    let mut st = State { runner, search, found: Found::default() };
    let s = st.search.clone();
    let (mut pass, mut fail): (Option<f64>, Option<f64>) = (None, None);
    let mut disagreed = false;
    // 1. grow (or halve from a failing start); 2. bisect; then the failure that bounds the
    // answer is tried once more (a one-off failure would otherwise cap the answer unseen): when
    // it holds, the trials disagreed and the search goes on above it.
    let mut rate = s.start_rate;
    let mut halvings = 0;
    let mut ended = false;
    let mut rechecks = 0;
    'search: loop {
        // Grow unless a recheck left both bounds standing.
        while !(pass.is_some() && fail.is_some()) {
            match st.run(Role::Grow, rate, s.trial_s).await {
                Step::Held => {
                    pass = Some(rate);
                    if fail.is_some() {
                        break;
                    }
                    if rate >= s.max_rate {
                        st.found.stopped = format!("held at the maximum rate tried ({:.0}/s)", s.max_rate);
                        break;
                    }
                    rate = (rate * 2.0).min(s.max_rate);
                }
                Step::Broke => {
                    fail = Some(rate);
                    if pass.is_some() {
                        break;
                    }
                    halvings += 1;
                    if halvings > 4 {
                        st.found.stopped = format!("no rate held, down to {rate:.0}/s");
                        break;
                    }
                    rate /= 2.0;
                }
                Step::End => {
                    ended = true;
                    break 'search;
                }
            }
        }
        loop {
            let (Some(p), Some(f)) = (pass, fail) else { break };
            if f / p - 1.0 <= s.resolution {
                break;
            }
            let mid = (p * f).sqrt();
            match st.run(Role::Bisect, mid, s.trial_s).await {
                Step::Held => pass = Some(mid),
                Step::Broke => fail = Some(mid),
                Step::End => {
                    ended = true;
                    break 'search;
                }
            }
        }
        let (Some(_), Some(f)) = (pass, fail) else { break };
        if rechecks >= s.repeats {
            break;
        }
        rechecks += 1;
        match st.run(Role::Repeat, f, s.trial_s).await {
            Step::Held => {
                disagreed = true;
                pass = Some(f);
                fail = lowest_failed_above(&st.found.trials, f);
                if fail.is_none() {
                    if f >= s.max_rate {
                        break;
                    }
                    rate = (f * 2.0).min(s.max_rate);
                }
            }
            Step::Broke => break,
            Step::End => {
                ended = true;
                break;
            }
        }
    }
    // 3. confirm, stepping down; 4. repeat where trials disagreed.
    let step_down = |r: f64| r / (1.0 + s.resolution).powi(2);
    let mut confirmed = None;
    let mut tries = 0;
    while !ended {
        let Some(candidate) = pass else { break };
        tries += 1;
        if tries > 3 {
            st.found.stopped = "three confirmations failed".into();
            break;
        }
        match st.run(Role::Confirm, candidate, s.confirm_s).await {
            Step::Held => {}
            Step::Broke => {
                disagreed = true;
                fail = Some(fail.map_or(candidate, |f| f.min(candidate)));
                pass = Some(step_down(candidate));
                continue;
            }
            Step::End => break,
        }
        disagreed |= non_monotone(&st.found.trials);
        let mut held = true;
        if disagreed {
            for _ in 0..s.repeats {
                match st.run(Role::Repeat, candidate, s.trial_s).await {
                    Step::Held => {}
                    Step::Broke => {
                        held = false;
                        break;
                    }
                    Step::End => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            break;
        }
        if held {
            confirmed = Some(candidate);
            break;
        }
        fail = Some(fail.map_or(candidate, |f| f.min(candidate)));
        pass = Some(step_down(candidate));
    }
    let f = &mut st.found;
    f.sustainable = confirmed;
    f.first_failed = confirmed.and_then(|c| lowest_failed_above(&f.trials, c)).or(fail);
    f.uncertainty = confirmed.map(|c| uncertainty(&f.trials, c, s.resolution));
    if f.stopped.is_empty() {
        f.stopped = match confirmed {
            Some(c) => format!("confirmed {c:.0}/s"),
            None => "no rate confirmed".into(),
        };
    }
    st.found
}

/// A rate failed below one that held.
fn non_monotone(trials: &[Trial]) -> bool {
    let held = trials.iter().filter(|t| t.outcome == TrialOutcome::Sustained).map(|t| t.rate).fold(0.0, f64::max);
    trials.iter().any(|t| t.outcome == TrialOutcome::Failed && t.rate < held)
}

fn lowest_failed_above(trials: &[Trial], rate: f64) -> Option<f64> {
    trials.iter().filter(|t| t.outcome == TrialOutcome::Failed && t.rate > rate).map(|t| t.rate).reduce(f64::min)
}

/// ± relative: half the gap from the answer to the lowest failed rate above it (the search's
/// resolution when none failed), widened to the span over which trials disagreed.
pub fn uncertainty(trials: &[Trial], answer: f64, resolution: f64) -> f64 {
    let gap = lowest_failed_above(trials, answer).map(|f| (f / answer - 1.0) / 2.0).unwrap_or(resolution);
    let held_max = trials.iter().filter(|t| t.outcome == TrialOutcome::Sustained).map(|t| t.rate).fold(answer, f64::max);
    let failed_min = trials.iter().filter(|t| t.outcome == TrialOutcome::Failed).map(|t| t.rate).fold(f64::MAX, f64::min);
    let mixed = if failed_min < held_max { (held_max - failed_min.min(answer)) / answer } else { 0.0 };
    gap.max(mixed)
}

#[cfg(test)]
#[path = "search_tests.rs"]
mod tests;

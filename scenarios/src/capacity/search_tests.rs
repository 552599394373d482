//! The search against model systems: a known capacity, noise at the boundary, a generator
//! that falls behind first, a budget that runs out.

use proptest::prelude::*;
use rundir::capacity::{Role, Search, Trial, TrialMeasures, TrialOutcome};

use super::{search, Found, Runner};

/// Sustains every rate up to `capacity`; `flaky`: the first trial within 3 % above... below
/// the capacity fails once; above `generator` every trial is invalid.
struct Model {
    capacity: f64,
    generator: f64,
    /// A confirmation (long trial) holds only up to this share of the capacity.
    long_share: f64,
    flaky_once: Option<f64>,
    budget_trials: usize,
    ran: usize,
}

impl Model {
    fn new(capacity: f64) -> Self {
        Model { capacity, generator: f64::MAX, long_share: 1.0, flaky_once: None, budget_trials: 100, ran: 0 }
    }
}

impl Runner for Model {
    async fn trial(&mut self, index: usize, role: Role, rate: f64, duration_s: f64) -> Option<Trial> {
        self.ran += 1;
        let limit = if role == Role::Confirm { self.capacity * self.long_share } else { self.capacity };
        let outcome = if rate > self.generator {
            TrialOutcome::Invalid
        } else if self.flaky_once.is_some_and(|f| rate >= f && rate <= self.capacity) {
            self.flaky_once = None;
            TrialOutcome::Failed
        } else if rate <= limit {
            TrialOutcome::Sustained
        } else {
            TrialOutcome::Failed
        };
        let reasons = if outcome == TrialOutcome::Invalid {
            vec!["generator kept its schedule: 900 of 3000 arrivals late".to_string()]
        } else {
            Vec::new()
        };
        Some(Trial { index, role, rate, duration_s, dir: String::new(), outcome, reasons, m: TrialMeasures::default() })
    }

    fn out_of_time(&self) -> bool {
        self.ran >= self.budget_trials
    }
}

fn settings() -> Search {
    Search { start_rate: 100.0, max_rate: 8000.0, resolution: 0.05, trial_s: 15.0, confirm_s: 45.0, repeats: 2, budget_s: 600.0 }
}

fn run(model: &mut Model) -> Found {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(search(model, &settings()))
}

proptest! {
    /// The answer is never above the capacity and within the resolution below it, in a bounded
    /// number of trials, and it was confirmed by a long trial.
    #[test]
    fn finds_a_known_capacity_within_the_resolution(capacity in 120.0f64..7000.0) {
        let mut m = Model::new(capacity);
        let f = run(&mut m);
        let answer = f.sustainable.expect("an answer");
        prop_assert!(answer <= capacity, "{answer} > {capacity}");
        prop_assert!(answer >= capacity / 1.05 - 1e-9, "{answer} too far below {capacity}");
        prop_assert!(f.trials.len() <= 16, "{} trials", f.trials.len());
        prop_assert!(f.trials.iter().any(|t| t.role == Role::Confirm && t.rate == answer && t.outcome == TrialOutcome::Sustained));
        prop_assert!(!f.interrupted && !f.generator_bound);
        prop_assert!(f.uncertainty.unwrap() <= 0.05 / 2.0 + 1e-9);
    }

    /// A confirmation that fails steps the answer down until a long trial holds.
    #[test]
    fn a_failed_confirmation_steps_down(capacity in 300.0f64..5000.0) {
        let mut m = Model { long_share: 0.93, ..Model::new(capacity) };
        let f = run(&mut m);
        let answer = f.sustainable.expect("an answer");
        prop_assert!(answer <= capacity * 0.93 + 1e-9, "{answer} above what a long trial holds");
        prop_assert!(f.trials.iter().any(|t| t.role == Role::Confirm && t.outcome == TrialOutcome::Failed));
        prop_assert!(f.trials.iter().any(|t| t.role == Role::Repeat), "disagreement must be repeated");
    }
}

#[test]
fn a_generator_that_falls_behind_makes_the_answer_a_lower_bound() {
    let mut m = Model { generator: 900.0, ..Model::new(5000.0) };
    let f = run(&mut m);
    assert!(f.generator_bound, "{f:?}");
    assert!(f.stopped.contains("two invalid trials"), "{}", f.stopped);
    // 800 held; nothing above the generator's limit was ever counted as a pass.
    assert!(f.trials.iter().filter(|t| t.outcome == TrialOutcome::Sustained).all(|t| t.rate <= 900.0));
    assert_eq!(f.sustainable, None, "an unconfirmed rate is not an answer");
}

#[test]
fn a_noisy_failure_below_the_boundary_is_repeated_and_widens_the_uncertainty() {
    let mut m = Model { flaky_once: Some(1500.0), ..Model::new(2000.0) };
    let f = run(&mut m);
    let answer = f.sustainable.expect("an answer");
    assert!(answer <= 2000.0);
    assert!(f.trials.iter().any(|t| t.role == Role::Repeat), "{:?}", f.trials.iter().map(|t| (t.role, t.rate, t.outcome)).collect::<Vec<_>>());
    assert!(f.uncertainty.unwrap() > 0.05, "{:?}", f.uncertainty);
}

#[test]
fn the_budget_ends_the_search_and_keeps_what_was_measured() {
    let mut m = Model { budget_trials: 3, ..Model::new(5000.0) };
    let f = run(&mut m);
    assert!(f.interrupted);
    assert_eq!(f.trials.len(), 3);
    assert_eq!(f.stopped, "the time budget ran out");
    assert_eq!(f.sustainable, None);
}

#[test]
fn a_system_that_holds_nothing_says_so() {
    let mut m = Model::new(5.0);
    let f = run(&mut m);
    assert_eq!(f.sustainable, None);
    assert!(f.stopped.starts_with("no rate held"), "{}", f.stopped);
    assert_eq!(f.trials.len(), 5);
}

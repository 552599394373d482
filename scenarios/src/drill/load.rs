//! The load of a scenario: the generator's configuration from the scenario's `[load]` and
//! `[stock]`, and what the run records of it in `events.jsonl` (each phase's window, the load's
//! end with the generator's own health) — shared by a drill and a capacity trial against a
//! deployment, so that both are judged from the same records.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chaos::EventLog;
use loadgen::{ArrivalSchedule, Behaviour, Catalogue, Live, LoadConfig, LoadSummary, Traffic, UserMix};
use serde_json::json;

use crate::scenario::Scenario;

/// How long the generator's users may take to finish after the schedule.
const DRAIN: Duration = Duration::from_secs(30);
/// Arrivals that may wait for a free user before they are dropped (and counted).
const MAX_BACKLOG: usize = 100_000;

/// The generator's configuration: `schedule` against `target`, the history into `out`.
pub fn config(
    scenario: &Scenario,
    schedule: &ArrivalSchedule,
    target: String,
    out: &Path,
    live: Option<Arc<Live>>,
) -> Result<LoadConfig, String> {
    let mix: UserMix = scenario.load.mix.parse()?;
    Ok(LoadConfig {
        target,
        schedule: schedule.clone(),
        traffic: Traffic {
            mix,
            catalogue: Catalogue {
                items: scenario.stock.keys().cloned().collect(),
                buyers: scenario.load.buyers,
                ..Catalogue::default()
            },
            seed: scenario.seed,
        },
        behaviour: Behaviour {
            timeout: scenario.load.timeout,
            polls: scenario.load.polls,
            retries: scenario.load.retries,
            abuse_burst: scenario.load.abuse_burst,
            ..Behaviour::default()
        },
        out: out.to_path_buf(),
        max_in_flight: scenario.load.max_in_flight,
        max_backlog: MAX_BACKLOG,
        drain: DRAIN,
        progress: false,
        live,
    })
}

/// Records the phases as they ran and the load's end (the generator's health with it): what
/// the latency, availability and generator checks read.
pub fn record(events: &EventLog, schedule: &ArrivalSchedule, summary: &LoadSummary) {
    for (phase, start) in schedule.phases.iter().zip(schedule.phase_starts()) {
        events.record(
            "phase",
            json!({"name": phase.name, "spec": phase.to_string(), "start_ms": summary.started_unix_ms + start.as_millis() as u64, "duration_ms": phase.duration.as_millis() as u64}),
        );
    }
    events.record(
        "load_end",
        json!({"interrupted": summary.interrupted, "buy_requests": summary.total.buy_requests, "offered": summary.total.offered, "generator": summary.generator}),
    );
}

//! The run directory (DESIGN.md): what a drill writes and what a report, a re-check, compare and
//! the gate read — its one definition in code. Every file has a typed record here, with its
//! reader and writer; nothing else parses these files.
//!
//! | file | record | module |
//! |---|---|---|
//! | `history.jsonl` | [`Attempt`] (written by [`loadgen`]) | [`history`] |
//! | `events.jsonl` | JSON objects with `event` and `ts_ms` (written by `chaos::EventLog`); fault windows from them | [`events`] |
//! | `metrics.jsonl` | [`Scrape`] | [`metrics`] |
//! | `final_state.json` | [`FinalState`] (outcome records as [`flashsale::order::Outcome`]) | [`state`] |
//! | `verdict.json` | [`Verdict`], [`CheckResult`], [`Figures`] | [`verdict`] |
//! | `load-summary.json` | [`loadgen::LoadSummary`] | (loadgen) |
//! | `alerts.jsonl` | [`AlertRecord`]: the monitoring's setup, alert states, notifications | [`alerts`] |
//! | `processes.jsonl` | [`ProcessSample`]: CPU and memory of every process, each second | [`processes`] |
//! | `capacity.json` (a capacity search's directory) | [`CapacityRun`]: every trial, the answer, the fit | [`capacity`] |
//! | `gate.json` (a regression gate's directory) | [`GateRun`]: both sides' runs, every figure's judgement | [`gate`] |
//!
//! [`io`] has the readers and writers (errors name the file and line); [`stats`] the one
//! quantile every figure uses.

pub mod alerts;
pub mod capacity;
pub mod events;
pub mod gate;
pub mod history;
pub mod io;
pub mod metrics;
pub mod processes;
pub mod state;
pub mod stats;
pub mod verdict;

pub use alerts::{AlertPhase, AlertRecord};
pub use capacity::CapacityRun;
pub use events::{fault_windows, FaultWindow};
pub use gate::GateRun;
pub use history::{Attempt, Class, Op, MAINTENANCE};
pub use io::RunDirError;
pub use metrics::Scrape;
pub use processes::ProcessSample;
pub use state::FinalState;
pub use verdict::{AlertScore, CheckResult, Figures, Kind, Outcome, Stage, Verdict};

/// The files of a run directory.
pub mod files {
    pub const MANIFEST: &str = "manifest.json";
    pub const HISTORY: &str = "history.jsonl";
    pub const EVENTS: &str = "events.jsonl";
    pub const METRICS: &str = "metrics.jsonl";
    pub const FINAL_STATE: &str = "final_state.json";
    pub const VERDICT: &str = "verdict.json";
    pub const LOAD_SUMMARY: &str = "load-summary.json";
    pub const ALERTS: &str = "alerts.jsonl";
    pub const PROCESSES: &str = "processes.jsonl";
    pub const CAPACITY: &str = "capacity.json";
    pub const GATE: &str = "gate.json";
}

//! `events.jsonl`: one JSON object per line, `{"ts_ms", "event", ...}`, written by
//! `chaos::EventLog`. The events the checks and reports read: `fault_start` / `fault_stop` /
//! `fault_error` (id, description, check, error, `undone_ms`), `phase` (name, start_ms,
//! duration_ms), `load_start`, `action` (action, ok, output), `repair_snapshot`, `drain_end`,
//! and the supervisor's `supervisor_start` / `supervisor_restart` / `supervisor_ready` /
//! `supervisor_probe` ([`SupervisorEvent`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Reads `events.jsonl`.
pub fn read(path: &Path) -> Result<Vec<Value>, crate::RunDirError> {
    crate::io::read_jsonl(path)
}

/// A fault's time window (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub id: u64,
    pub description: String,
    /// The component (`processor[0]`, `redis`); empty in runs recorded before it was kept.
    #[serde(default)]
    pub target: String,
    pub start_ms: u64,
    /// When it was lifted; `None`: never (it was still in force when the run ended).
    pub end_ms: Option<u64>,
}

/// The fault windows in `events`, by fault id.
pub fn fault_windows(events: &[Value]) -> Vec<FaultWindow> {
    let mut out: BTreeMap<u64, FaultWindow> = BTreeMap::new();
    for e in events {
        let id = e["id"].as_u64().unwrap_or(0);
        match e["event"].as_str() {
            Some("fault_start") => {
                out.insert(
                    id,
                    FaultWindow {
                        id,
                        description: e["description"].as_str().unwrap_or_default().to_string(),
                        target: e["target"].as_str().unwrap_or_default().to_string(),
                        // From when applying began; older runs only have the event's time.
                        start_ms: e["applied_from_ms"].as_u64().or(e["ts_ms"].as_u64()).unwrap_or(0),
                        end_ms: None,
                    },
                );
            }
            Some("fault_stop") => {
                if let Some(w) = out.get_mut(&id) {
                    w.end_ms = e["undone_ms"].as_u64().or(e["ts_ms"].as_u64());
                }
            }
            _ => {}
        }
    }
    out.into_values().collect()
}

/// What the supervisor did to one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// Started again after `back_off_ms`; `reason` `exited` or `liveness`; `restarts` in a row.
    Restart { ts_ms: u64, component: String, reason: String, back_off_ms: u64, restarts: u64, ok: bool },
    /// Readiness changed.
    Ready { ts_ms: u64, component: String, ready: bool },
    /// A liveness probe failed (`failures` in a row).
    ProbeFailed { ts_ms: u64, component: String, failures: u64 },
}

impl SupervisorEvent {
    pub fn ts_ms(&self) -> u64 {
        match self {
            SupervisorEvent::Restart { ts_ms, .. }
            | SupervisorEvent::Ready { ts_ms, .. }
            | SupervisorEvent::ProbeFailed { ts_ms, .. } => *ts_ms,
        }
    }

    pub fn component(&self) -> &str {
        match self {
            SupervisorEvent::Restart { component, .. }
            | SupervisorEvent::Ready { component, .. }
            | SupervisorEvent::ProbeFailed { component, .. } => component,
        }
    }
}

/// The supervisor's events in `events`, in order; `None` when the run had no supervisor.
pub fn supervisor_events(events: &[Value]) -> Option<Vec<SupervisorEvent>> {
    events.iter().any(|e| e["event"] == "supervisor_start").then(|| {
        events
            .iter()
            .filter_map(|e| {
                let ts_ms = e["ts_ms"].as_u64()?;
                let component = e["component"].as_str()?.to_string();
                Some(match e["event"].as_str()? {
                    "supervisor_restart" => SupervisorEvent::Restart {
                        ts_ms,
                        component,
                        reason: e["reason"].as_str().unwrap_or_default().to_string(),
                        back_off_ms: e["back_off_ms"].as_u64().unwrap_or(0),
                        restarts: e["restarts"].as_u64().unwrap_or(0),
                        ok: e["ok"].as_bool().unwrap_or(false),
                    },
                    "supervisor_ready" => SupervisorEvent::Ready { ts_ms, component, ready: e["ready"].as_bool()? },
                    "supervisor_probe" => {
                        SupervisorEvent::ProbeFailed { ts_ms, component, failures: e["failures"].as_u64().unwrap_or(0) }
                    }
                    _ => return None,
                })
            })
            .collect()
    })
}

/// A load phase's time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseWindow {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The load phases recorded in `events`.
pub fn phases(events: &[Value]) -> Vec<PhaseWindow> {
    events
        .iter()
        .filter(|e| e["event"] == "phase")
        .filter_map(|e| {
            let start_ms = e["start_ms"].as_u64()?;
            Some(PhaseWindow {
                name: e["name"].as_str()?.to_string(),
                start_ms,
                end_ms: start_ms + e["duration_ms"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_from_start_and_stop() {
        let events = vec![
            json!({"event": "fault_start", "id": 1, "description": "kill broker", "ts_ms": 1000}),
            json!({"event": "fault_stop", "id": 1, "ts_ms": 5000, "undone_ms": 4900}),
            json!({"event": "fault_start", "id": 2, "description": "pause redis", "ts_ms": 6000, "applied_from_ms": 5500}),
        ];
        let w = fault_windows(&events);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start_ms, w[0].end_ms), (1000, Some(4900)));
        assert_eq!(w[1].start_ms, 5500, "the window starts when applying began");
        assert_eq!(w[1].end_ms, None);
    }
}

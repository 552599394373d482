//! `events.jsonl`: one JSON object per line, `{"ts_ms", "event", ...}`, written by
//! `chaos::EventLog`. The events the checks and reports read: `fault_start` / `fault_stop` /
//! `fault_error` (id, description, check, error, `undone_ms`), `phase` (name, start_ms,
//! duration_ms), `load_start`, `action` (action, ok, output), `repair_snapshot`, `drain_end`.

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

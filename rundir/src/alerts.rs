//! `alerts.jsonl`: what the monitoring saw — the setup it ran with, every stretch of time an
//! alert was pending or firing as Prometheus evaluated it, and every alert of every notification
//! Alertmanager delivered to the lab's receiver, with times (Unix ms).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One line of `alerts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum AlertRecord {
    /// How the monitoring ran: the rules' source and the factor their windows, `for` durations
    /// and Alertmanager's waits were multiplied by (1: as written).
    Setup {
        rules: Vec<String>,
        alertmanager_config: String,
        time_factor: f64,
        /// The stretch the monitoring watched, and how many full rounds of rule evaluation
        /// Prometheus made in it (one a second when healthy): the evidence behind every alert
        /// check.
        from_ms: u64,
        to_ms: u64,
        evaluation_rounds: u64,
    },
    /// One stretch of time an alert was in one state.
    State {
        alertname: String,
        state: AlertPhase,
        /// Every label but `alertname` and `alertstate`: severity, component, instance…
        labels: BTreeMap<String, String>,
        /// First and last evaluation in this state.
        from_ms: u64,
        to_ms: u64,
    },
    /// One alert of one notification the lab received.
    Notification {
        received_ms: u64,
        alertname: String,
        /// `firing` or `resolved`.
        status: String,
        labels: BTreeMap<String, String>,
        /// Alertmanager's `startsAt` / `endsAt` (RFC 3339).
        starts_at: String,
        ends_at: String,
    },
}

/// Prometheus's two alert states (`ALERTS{alertstate}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    Pending,
    Firing,
}

/// Reads `alerts.jsonl`; an absent file is no alerts (a run without monitoring).
pub fn read(path: &Path) -> Result<Vec<AlertRecord>, crate::RunDirError> {
    crate::io::read_jsonl_if_present(path)
}

/// Writes `alerts.jsonl`.
pub fn write(path: &Path, records: &[AlertRecord]) -> Result<(), crate::RunDirError> {
    crate::io::write_jsonl(path, records)
}

/// The severity label of an alert record (`""` when it has none).
pub fn severity(labels: &BTreeMap<String, String>) -> &str {
    labels.get("severity").map(String::as_str).unwrap_or("")
}

/// The first moment at or after `from_ms` that `alertname` was in `state` (a stretch that began
/// earlier and still held counts from `from_ms`).
pub fn first_in_state(records: &[AlertRecord], alertname: &str, state: AlertPhase, from_ms: u64) -> Option<u64> {
    records
        .iter()
        .filter_map(|r| match r {
            AlertRecord::State { alertname: name, state: s, from_ms: a, to_ms: b, .. }
                if name == alertname && *s == state && *b >= from_ms =>
            {
                Some((*a).max(from_ms))
            }
            _ => None,
        })
        .min()
}

/// When the last firing stretch of `alertname` that overlaps `[from_ms, …)` ended; `None` when
/// it never fired from then on.
pub fn last_firing_end(records: &[AlertRecord], alertname: &str, from_ms: u64) -> Option<u64> {
    records
        .iter()
        .filter_map(|r| match r {
            AlertRecord::State { alertname: name, state: AlertPhase::Firing, to_ms, .. }
                if name == alertname && *to_ms >= from_ms =>
            {
                Some(*to_ms)
            }
            _ => None,
        })
        .max()
}

/// The first notification of `alertname` with `status` received at or after `from_ms`.
pub fn first_notified(records: &[AlertRecord], alertname: &str, status: &str, from_ms: u64) -> Option<u64> {
    records
        .iter()
        .filter_map(|r| match r {
            AlertRecord::Notification { alertname: name, status: s, received_ms, .. }
                if name == alertname && s == status && *received_ms >= from_ms =>
            {
                Some(*received_ms)
            }
            _ => None,
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, phase: AlertPhase, from_ms: u64, to_ms: u64) -> AlertRecord {
        let labels = BTreeMap::from([("severity".to_string(), "critical".to_string())]);
        AlertRecord::State { alertname: name.into(), state: phase, labels, from_ms, to_ms }
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let records = vec![
            AlertRecord::Setup {
                rules: vec!["shipped".into()],
                alertmanager_config: "shipped".into(),
                time_factor: 0.1,
                from_ms: 0,
                to_ms: 60_000,
                evaluation_rounds: 59,
            },
            state("A", AlertPhase::Firing, 10, 20),
            AlertRecord::Notification {
                received_ms: 15,
                alertname: "A".into(),
                status: "firing".into(),
                labels: BTreeMap::new(),
                starts_at: "2026-12-02T10:00:00Z".into(),
                ends_at: "0001-01-01T00:00:00Z".into(),
            },
        ];
        write(&path, &records).unwrap();
        assert_eq!(read(&path).unwrap(), records);
        assert!(std::fs::read_to_string(&path).unwrap().contains(r#""record":"state""#));
        assert_eq!(read(&dir.path().join("absent.jsonl")).unwrap(), Vec::new());
    }

    #[test]
    fn first_and_last_times_are_found_from_a_moment_on() {
        let records = vec![
            state("A", AlertPhase::Pending, 1_000, 2_000),
            state("A", AlertPhase::Firing, 3_000, 9_000),
            state("A", AlertPhase::Firing, 20_000, 21_000),
            state("B", AlertPhase::Firing, 500, 600),
        ];
        assert_eq!(first_in_state(&records, "A", AlertPhase::Firing, 0), Some(3_000));
        assert_eq!(first_in_state(&records, "A", AlertPhase::Firing, 5_000), Some(5_000), "already firing");
        assert_eq!(first_in_state(&records, "A", AlertPhase::Firing, 10_000), Some(20_000));
        assert_eq!(first_in_state(&records, "B", AlertPhase::Firing, 1_000), None);
        assert_eq!(last_firing_end(&records, "A", 0), Some(21_000));
        assert_eq!(last_firing_end(&records, "C", 0), None);
    }
}

//! `alerts.jsonl` from the monitoring that watched the drill: its setup and evidence (how many
//! rounds of rule evaluation), every pending and firing stretch Prometheus evaluated, and every
//! alert of every notification Alertmanager delivered to the lab.

use std::collections::BTreeMap;

use chaos::monitoring::{Monitoring, MonitoringConfig};
use rundir::{AlertPhase, AlertRecord};
use serde_json::Value;

use crate::scenario::Scenario;

/// The monitoring a drill asks for: the shipped rules and routing, windows scaled by the
/// scenario's (already `--scale`d) time factor. A canary gate needs Prometheus too (its alerts
/// are then recorded, and judged only with `[alerts] monitoring = true`).
pub(super) fn config(scenario: &Scenario) -> Option<MonitoringConfig> {
    let gate = scenario.release.as_ref().is_some_and(|r| r.gate.is_some());
    (scenario.alerts.monitoring || gate).then(|| MonitoringConfig {
        rules: scenario.alerts.rules.clone(),
        time_factor: scenario.alerts.time_factor,
        ..MonitoringConfig::default()
    })
}

/// Everything the monitoring saw up to now.
pub(super) async fn collect(monitoring: &Monitoring, scenario: &Scenario) -> Result<Vec<AlertRecord>, String> {
    let to_ms = chaos::events::unix_ms();
    let from_ms = monitoring.started_ms();
    let rounds = monitoring.evaluation_rounds().await.map_err(|e| e.to_string())?;
    let mut records = vec![AlertRecord::Setup {
        rules: if scenario.alerts.rules.is_empty() {
            vec!["shipped: monitoring/rules/flashsale.rules.yml".into()]
        } else {
            scenario.alerts.rules.iter().map(|r| r.display().to_string()).collect()
        },
        alertmanager_config: "shipped: monitoring/alertmanager.yml".into(),
        time_factor: scenario.alerts.time_factor,
        from_ms,
        to_ms,
        evaluation_rounds: rounds,
    }];
    for s in monitoring.alert_states(from_ms, to_ms).await.map_err(|e| e.to_string())? {
        let state = match s.state.as_str() {
            "pending" => AlertPhase::Pending,
            "firing" => AlertPhase::Firing,
            _ => continue,
        };
        records.push(AlertRecord::State {
            alertname: s.alertname,
            state,
            labels: strings(&s.labels),
            from_ms: s.from_ms,
            to_ms: s.to_ms,
        });
    }
    for n in monitoring.notifications() {
        for alert in n.body["alerts"].as_array().into_iter().flatten() {
            let labels = alert["labels"].as_object().map(strings).unwrap_or_default();
            records.push(AlertRecord::Notification {
                received_ms: n.received_ms,
                alertname: labels.get("alertname").cloned().unwrap_or_default(),
                status: alert["status"].as_str().unwrap_or_default().to_owned(),
                labels,
                starts_at: alert["startsAt"].as_str().unwrap_or_default().to_owned(),
                ends_at: alert["endsAt"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(records)
}

fn strings(labels: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
}

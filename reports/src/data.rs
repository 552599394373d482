//! What a report shows, read from a run directory alone (DESIGN.md): the verdict, the
//! manifest, the events (fault windows, phases), the alert records, and per-second series built from
//! `history.jsonl` (streamed: one pass, memory bounded by the run's length), `metrics.jsonl` and
//! `final_state.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    RunDir(#[from] rundir::RunDirError),
    #[error("{0}")]
    Render(String),
}

/// The outcome groups of the throughput plot, in stacking order.
pub const OUTCOMES: [&str; 7] = ["202", "409", "429", "400", "503", "other 5xx", "timeout/error"];

fn outcome_group(status: Option<u16>) -> usize {
    match status {
        Some(200..=299) => 0,
        Some(409) => 1,
        Some(429) => 2,
        Some(400..=499) => 3,
        Some(503) => 4,
        Some(_) => 5,
        None => 6,
    }
}

/// A shaded window on every plot.
#[derive(Debug, Clone)]
pub struct Window {
    pub label: String,
    /// Seconds from the start of the run.
    pub from_s: f64,
    pub to_s: f64,
}

/// Per-second series of the run, seconds counted from its first request.
#[derive(Debug, Default)]
pub struct Series {
    /// Unix ms of second 0.
    pub start_ms: u64,
    pub seconds: usize,
    /// `[second][OUTCOMES index]` counts of `POST /buy` answers, by completion second.
    pub outcomes: Vec<[u64; 7]>,
    /// p50, p95, p99 of corrected and of service latency per second (ms), by intended second.
    pub corrected: Vec<[f64; 3]>,
    pub service: Vec<[f64; 3]>,
    /// `(second, value)` per component and series name, from `metrics.jsonl`.
    pub metrics: BTreeMap<String, Vec<(f64, f64)>>,
    /// Completed units per item, cumulative, by decision time.
    pub completed: BTreeMap<String, Vec<(f64, f64)>>,
    pub requests: u64,
}

/// Everything a report needs.
#[derive(Debug)]
pub struct Run {
    pub verdict: rundir::Verdict,
    pub manifest: Value,
    pub events: Vec<Value>,
    pub windows: Vec<Window>,
    pub series: Series,
    /// `alerts.jsonl`: empty for a run without monitoring.
    pub alerts: Vec<rundir::AlertRecord>,
}

/// The `q` quantile of `v` (sorted here), in ms; NaN when empty (a gap in the plot).
fn quantile_ms(v: &mut [u64], q: f64) -> f64 {
    v.sort_unstable();
    rundir::stats::quantile_ms(v, q).unwrap_or(f64::NAN)
}

/// Reads a run directory.
pub fn load(dir: &Path) -> Result<Run, ReportError> {
    let verdict = rundir::verdict::read(&dir.join(rundir::files::VERDICT))?;
    let manifest: Value = rundir::io::read_json(&dir.join(rundir::files::MANIFEST)).unwrap_or(Value::Null);
    let events = rundir::io::read_jsonl_if_present(&dir.join(rundir::files::EVENTS))?;
    let series = series(dir, &events)?;
    let at = |ms: u64| (ms as f64 - series.start_ms as f64) / 1000.0;
    // The same windows the checks judge by (rundir), in plot seconds; one never lifted runs
    // to the end of the plot.
    let windows = rundir::fault_windows(&events)
        .into_iter()
        .map(|w| Window {
            label: format!("#{} {}", w.id, w.description),
            from_s: at(w.start_ms),
            to_s: w.end_ms.map_or(series.seconds as f64, |end| at(end.max(w.start_ms + 200))),
        })
        .collect();
    let alerts = rundir::alerts::read(&dir.join(rundir::files::ALERTS))?;
    Ok(Run { verdict, manifest, events, windows, series, alerts })
}

fn series(dir: &Path, events: &[Value]) -> Result<Series, ReportError> {
    // Second 0: the load's start if recorded, else the first request's.
    let load_start = events.iter().find(|e| e["event"] == "load_start").and_then(|e| e["ts_ms"].as_u64());
    let mut start_ms = load_start;
    let mut outcomes: Vec<[u64; 7]> = Vec::new();
    let mut corrected: Vec<Vec<u64>> = Vec::new();
    let mut service: Vec<Vec<u64>> = Vec::new();
    let mut requests = 0u64;
    // Streamed: memory bounded by the run's length, not its request count.
    rundir::history::for_each(&dir.join(rundir::files::HISTORY), |a: rundir::Attempt| {
        let unserved = a.op == rundir::Op::Unserved;
        if a.op == rundir::Op::Status {
            return;
        }
        requests += 1;
        let start = *start_ms.get_or_insert(a.intended_us / 1000);
        let second = |us: u64| ((us / 1000).saturating_sub(start) / 1000) as usize;
        let done_s = second(a.done_us);
        let intended_s = second(a.intended_us);
        let needed = done_s.max(intended_s) + 1;
        if outcomes.len() < needed {
            outcomes.resize(needed, [0; 7]);
            corrected.resize_with(needed, Vec::new);
            service.resize_with(needed, Vec::new);
        }
        let group = if a.error.is_some() && a.status.is_none() { 6 } else { outcome_group(a.status) };
        outcomes[done_s][group] += 1;
        // An arrival never sent has no latency.
        if !unserved {
            corrected[intended_s].push(a.corrected_us());
            service[intended_s].push(a.service_us());
        }
    })?;
    let start_ms = start_ms.unwrap_or(0);
    let pct = |v: &mut Vec<u64>| [quantile_ms(v, 0.5), quantile_ms(v, 0.95), quantile_ms(v, 0.99)];
    let corrected: Vec<[f64; 3]> = corrected.iter_mut().map(pct).collect();
    let service: Vec<[f64; 3]> = service.iter_mut().map(pct).collect();
    let at = |ms: u64| (ms as f64 - start_ms as f64) / 1000.0;

    // Metrics: the series the plots use, per component.
    let mut metrics: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut processing: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new(); // component → (t, sum, count)
    for scrape in rundir::metrics::read(&dir.join(rundir::files::METRICS))? {
        let t = at(scrape.ts_ms);
        let component = scrape.component.clone();
        if !scrape.up {
            // The component did not answer: a hole in each of its series (drawn as a gap).
            for (key, points) in metrics.iter_mut() {
                if key.ends_with(&format!("|{component}")) {
                    points.push((t, f64::NAN));
                }
            }
            continue;
        }
        for (name, metric) in [
            ("breaker", "gateway_circuit_breaker_state"),
            ("lag", "processor_consumer_lag"),
            ("dlq depth", "processor_dlq_size"),
            ("dlq oldest age s", "processor_dlq_oldest_message_age_seconds"),
        ] {
            if let Some(v) = scrape.sum(metric) {
                metrics.entry(format!("{name}|{component}")).or_default().push((t, v));
            }
        }
        for (k, v) in &scrape.metrics {
            if let Some(item) =
                k.strip_prefix("processor_inventory_level{item_id=\"").and_then(|r| r.strip_suffix("\"}"))
            {
                metrics.entry(format!("stock|{item}|{component}")).or_default().push((t, *v));
            }
        }
        if let (Some(sum), Some(count)) = (
            scrape.sum("processor_order_processing_duration_seconds_sum"),
            scrape.sum("processor_order_processing_duration_seconds_count"),
        ) {
            if let Some((_, s0, c0)) = processing.get(&component) {
                if count > *c0 {
                    metrics
                        .entry(format!("processing ms|{component}"))
                        .or_default()
                        .push((t, (sum - s0) / (count - c0) * 1000.0));
                } else {
                    // No order finished this second: no processing time to show (a gap).
                    metrics.entry(format!("processing ms|{component}")).or_default().push((t, f64::NAN));
                }
            }
            processing.insert(component, (t, sum, count));
        }
    }

    // Completed units per item from the outcome records (first decision per attempt).
    let mut completed: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    if let Ok(states) = rundir::state::read(&dir.join(rundir::files::FINAL_STATE)) {
        let mut seen = std::collections::HashSet::new();
        let mut done: Vec<(u64, String, u64)> = states
            .after
            .outcomes
            .iter()
            .filter(|o| seen.insert((o.request_id.clone(), o.attempt)))
            .filter(|o| o.outcome == flashsale::order::Decision::Completed)
            .map(|o| (o.decided_at_ms, o.item_id.clone(), u64::from(o.amount)))
            .collect();
        done.sort();
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for (ms, item, amount) in done {
            let total = totals.entry(item.clone()).or_default();
            *total += amount;
            completed.entry(item).or_default().push((at(ms), *total as f64));
        }
    }
    let seconds = outcomes.len();
    Ok(Series { start_ms, seconds, outcomes, corrected, service, metrics, completed, requests })
}

//! The monitoring pipeline under fire: real Prometheus, Alertmanager and exporters beside the
//! testbed, and the lab's own webhook receiver that records every notification.
//!
//! [`Monitoring::start`] writes a Prometheus config (1 s scrape and evaluation; the rule files;
//! one job per component, targets in `file_sd` files so a processor started later is scraped
//! at once), starts `prometheus`, `prometheus-alertmanager` (clustering off), the Redis exporter
//! and the process exporter (the broker's CPU and memory: tansu exports none), all supervised
//! children on free loopback ports like Redis and the broker — they never outlive the lab.
//! Alertmanager's receivers are pointed at the lab's webhook ([`Receiver`]), which appends every
//! notification it is sent to `notifications.jsonl` as it arrives.
//!
//! The shipped rules and routing (`monitoring/` at the repository root) are compiled in; a user
//! may bring their own ([`MonitoringConfig`]). What the lab reads back afterwards:
//! [`Monitoring::alert_states`] (every pending and firing interval, from Prometheus's `ALERTS`
//! series at the evaluation step) and [`Monitoring::notifications`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod config;
mod receiver;

use crate::process::{ProcessError, ProcessSpec, Supervised};
use config::{
    alertmanager_config, alertmanager_spec, process_exporter_config, process_exporter_spec, prometheus_config,
    prometheus_spec, redis_exporter_spec, rule_files, write_targets,
};
pub use config::{scale_durations, MIN_SCALED, SCALED_THRESHOLD_MARK};
use receiver::Receiver;

/// The rules shipped with the lab (`monitoring/rules/flashsale.rules.yml`).
pub const SHIPPED_RULES: &str = include_str!("../../../monitoring/rules/flashsale.rules.yml");
/// The routing shipped with the lab (`monitoring/alertmanager.yml`).
pub const SHIPPED_ALERTMANAGER: &str = include_str!("../../../monitoring/alertmanager.yml");
/// Scrape and rule evaluation interval.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Limit on each call to Prometheus's or Alertmanager's API.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Prometheus refuses a range query of more than 11,000 points per series: ask in chunks.
const QUERY_CHUNK: Duration = Duration::from_secs(10_000);

/// What to run: the shipped rules and routing unless the user brings their own.
#[derive(Debug, Clone)]
pub struct MonitoringConfig {
    /// Rule files (`--rules`); empty: the shipped ones.
    pub rules: Vec<PathBuf>,
    /// An Alertmanager config (`--alertmanager-config`); `None`: the shipped one. Every webhook
    /// `url:` in it is pointed at the lab's receiver.
    pub alertmanager_config: Option<PathBuf>,
    /// Multiplies every rule window, `for` and Alertmanager wait ([`scale_durations`]); 1: the
    /// rules as written.
    pub time_factor: f64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig { rules: Vec::new(), alertmanager_config: None, time_factor: 1.0 }
    }
}

/// One component Prometheus scrapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// The job: `gateway`, `processor`, `payment` (their own `/metrics`), `redis`, `broker` (the
    /// exporters').
    pub job: &'static str,
    /// The `instance` label: `gateway[0]`, `processor[1]`, `redis`…
    pub instance: String,
    pub addr: SocketAddr,
    /// The `release` label: the build a deploy put on this instance (`candidate`…); `None`
    /// for the release the testbed started with (no label).
    pub release: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    #[error("monitoring directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Config { path: String, why: String },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("webhook receiver: {0}")]
    Receiver(std::io::Error),
    #[error("{what}: {why}")]
    Api { what: String, why: String },
}

/// One stretch of time an alert was in one state, as Prometheus evaluated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub alertname: String,
    /// `pending` or `firing`.
    pub state: String,
    /// Every label of the alert (severity, component, instance…), `alertname` and
    /// `alertstate` excepted.
    pub labels: serde_json::Map<String, Value>,
    /// First and last evaluation seen in this state, Unix ms.
    pub from_ms: u64,
    pub to_ms: u64,
}

/// One notification Alertmanager delivered to the lab's receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// When the lab received it, Unix ms.
    pub received_ms: u64,
    /// The webhook body as sent (status, alerts with labels, startsAt, endsAt…).
    pub body: Value,
}

/// Prometheus, Alertmanager, the exporters and the receiver. See the module docs.
#[derive(Debug)]
pub struct Monitoring {
    // Field order is drop order: Prometheus stops sending before Alertmanager goes.
    prometheus: Supervised,
    alertmanager: Supervised,
    redis_exporter: Option<Supervised>,
    process_exporter: Option<Supervised>,
    receiver: Receiver,
    dir: PathBuf,
    http: reqwest::Client,
    /// When Prometheus was ready (Unix ms).
    started_ms: u64,
}

impl Monitoring {
    /// Starts everything in `dir` and waits until Prometheus and Alertmanager are ready.
    /// `redis` and `broker` are the components' own addresses (the exporters watch those).
    pub async fn start(
        config: &MonitoringConfig,
        dir: &Path,
        targets: &[ScrapeTarget],
        redis: Option<SocketAddr>,
        broker_listen: Option<SocketAddr>,
    ) -> Result<Monitoring, MonitoringError> {
        make_dir(dir)?;
        make_dir(&dir.join("rules"))?;
        make_dir(&dir.join("targets"))?;
        let receiver = Receiver::start(dir.join("notifications.jsonl")).await?;

        let rules = rule_files(config, &dir.join("rules"))?;
        let am_config = alertmanager_config(config, receiver.url())?;
        write(&dir.join("alertmanager.yml"), &am_config)?;
        let alertmanager = start_on_free_port(|addr| alertmanager_spec(addr, dir)).await?;

        let redis_exporter = match redis {
            Some(redis) => Some(start_on_free_port(|addr| redis_exporter_spec(addr, redis, dir)).await?),
            None => None,
        };
        let process_exporter = match broker_listen {
            Some(broker) => {
                write(&dir.join("process-exporter.yml"), &process_exporter_config(broker))?;
                Some(start_on_free_port(|addr| process_exporter_spec(addr, dir)).await?)
            }
            None => None,
        };
        write_targets(dir, &with_exporters(targets, redis_exporter.as_ref(), process_exporter.as_ref()))?;
        write(&dir.join("prometheus.yml"), &prometheus_config(&rules, probe_addr(&alertmanager)))?;
        let prometheus = start_on_free_port(|addr| prometheus_spec(addr, dir)).await?;
        let http = reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .build()
            .map_err(|e| MonitoringError::Api { what: "http client".into(), why: e.to_string() })?;
        let started_ms = receiver::now_ms();
        Ok(Monitoring {
            prometheus,
            alertmanager,
            redis_exporter,
            process_exporter,
            receiver,
            dir: dir.to_path_buf(),
            http,
            started_ms,
        })
    }

    /// `http://127.0.0.1:PORT` of Prometheus (graph, alerts and targets pages, the API).
    pub fn prometheus_url(&self) -> String {
        format!("http://{}", probe_addr(&self.prometheus))
    }

    /// `http://127.0.0.1:PORT` of Alertmanager.
    pub fn alertmanager_url(&self) -> String {
        format!("http://{}", probe_addr(&self.alertmanager))
    }

    /// Where the lab's receiver listens.
    pub fn receiver_url(&self) -> &str {
        self.receiver.url()
    }

    /// Rewrites the scrape targets (a processor was added): Prometheus picks the file up by
    /// itself.
    pub fn set_targets(&self, targets: &[ScrapeTarget]) -> Result<(), MonitoringError> {
        write_targets(&self.dir, &with_exporters(targets, self.redis_exporter.as_ref(), self.process_exporter.as_ref()))
    }

    /// Every target's last scrape: `(job, instance, health)` with health `up`, `down` or
    /// `unknown`.
    pub async fn target_health(&self) -> Result<Vec<(String, String, String)>, MonitoringError> {
        let body = self.get_json("targets", &format!("{}/api/v1/targets", self.prometheus_url())).await?;
        let active = body["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        Ok(active
            .iter()
            .map(|t| {
                let label = |k: &str| t["labels"][k].as_str().unwrap_or_default().to_owned();
                (label("job"), label("instance"), t["health"].as_str().unwrap_or("unknown").to_owned())
            })
            .collect())
    }

    /// Every pending and firing stretch of every alert between `start_ms` and `end_ms`, from
    /// Prometheus's `ALERTS` series at the evaluation step.
    pub async fn alert_states(&self, start_ms: u64, end_ms: u64) -> Result<Vec<AlertState>, MonitoringError> {
        let step_ms = SCRAPE_INTERVAL.as_millis() as u64;
        let mut samples: Vec<(serde_json::Map<String, Value>, Vec<u64>)> = Vec::new();
        let mut from = start_ms;
        while from <= end_ms {
            let to = end_ms.min(from + QUERY_CHUNK.as_millis() as u64);
            let url = format!(
                "{}/api/v1/query_range?query=ALERTS&start={:.3}&end={:.3}&step={}s",
                self.prometheus_url(),
                from as f64 / 1000.0,
                to as f64 / 1000.0,
                SCRAPE_INTERVAL.as_secs()
            );
            let body = self.get_json("ALERTS", &url).await?;
            for series in body["data"]["result"].as_array().cloned().unwrap_or_default() {
                let metric = series["metric"].as_object().cloned().unwrap_or_default();
                let times: Vec<u64> = series["values"]
                    .as_array()
                    .map(|values| {
                        values.iter().filter_map(|v| v[0].as_f64()).map(|t| (t * 1000.0).round() as u64).collect()
                    })
                    .unwrap_or_default();
                match samples.iter_mut().find(|(m, _)| *m == metric) {
                    Some((_, all)) => all.extend(times),
                    None => samples.push((metric, times)),
                }
            }
            from = to + step_ms;
        }
        Ok(samples.into_iter().flat_map(|(metric, times)| stretches(metric, times, step_ms)).collect())
    }

    /// When Prometheus became ready (Unix ms).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Full rounds of rule evaluation since Prometheus started: the fewest iterations of any
    /// rule group (`prometheus_rule_group_iterations_total` minus the missed ones, from its own
    /// `/metrics`). About one a second when it keeps up.
    pub async fn evaluation_rounds(&self) -> Result<u64, MonitoringError> {
        let api = |why: String| MonitoringError::Api { what: "prometheus /metrics".into(), why };
        let url = format!("{}/metrics", self.prometheus_url());
        let text = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| api(e.to_string()))?
            .text()
            .await
            .map_err(|e| api(e.to_string()))?;
        Ok(rule_rounds(&text))
    }

    /// The pid of every monitoring process that runs: `(name, pid)`.
    pub fn pids(&self) -> Vec<(String, u32)> {
        [Some(&self.prometheus), Some(&self.alertmanager), self.redis_exporter.as_ref(), self.process_exporter.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.name().to_owned(), p.pid()?)))
            .collect()
    }

    /// Every notification received so far.
    pub fn notifications(&self) -> Vec<Notification> {
        self.receiver.notifications()
    }

    async fn get_json(&self, what: &str, url: &str) -> Result<Value, MonitoringError> {
        let api = |why: String| MonitoringError::Api { what: what.into(), why };
        let response = self.http.get(url).send().await.map_err(|e| api(e.to_string()))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| api(e.to_string()))?;
        if !status.is_success() || body["status"] != "success" {
            return Err(api(format!("{status}: {body}")));
        }
        Ok(body)
    }

    /// Stops Prometheus first (no more alerts sent), then Alertmanager and the exporters.
    pub async fn stop(&mut self) -> Result<(), MonitoringError> {
        let mut first_error = None;
        for process in [Some(&mut self.prometheus), Some(&mut self.alertmanager)]
            .into_iter()
            .chain([self.redis_exporter.as_mut(), self.process_exporter.as_mut()])
            .flatten()
        {
            if let Err(e) = process.stop().await {
                first_error.get_or_insert(e);
            }
        }
        self.receiver.stop();
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// The system's targets and the exporters' (Redis as job `redis`, the broker as job `broker`).
fn with_exporters(
    targets: &[ScrapeTarget],
    redis_exporter: Option<&Supervised>,
    process_exporter: Option<&Supervised>,
) -> Vec<ScrapeTarget> {
    let mut all = targets.to_vec();
    if let Some(e) = redis_exporter {
        all.push(ScrapeTarget { job: "redis", instance: "redis".into(), addr: probe_addr(e), release: None });
    }
    if let Some(e) = process_exporter {
        all.push(ScrapeTarget { job: "broker", instance: "broker".into(), addr: probe_addr(e), release: None });
    }
    all
}

/// The fewest evaluations (iterations − missed) of any rule group on a Prometheus `/metrics`
/// page; 0 when it has no rule group.
fn rule_rounds(metrics: &str) -> u64 {
    let mut per_group: std::collections::BTreeMap<&str, (f64, f64)> = std::collections::BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some((s, v)) => (s, v.parse::<f64>().unwrap_or(0.0)),
            None => continue,
        };
        let group = |s: &'static str| -> Option<&str> {
            let rest = series.strip_prefix(s)?;
            let start = rest.find("rule_group=\"")? + "rule_group=\"".len();
            let end = rest[start..].find('"')? + start;
            Some(&rest[start..end])
        };
        if let Some(g) = group("prometheus_rule_group_iterations_total{") {
            per_group.entry(g).or_default().0 = value;
        } else if let Some(g) = group("prometheus_rule_group_iterations_missed_total{") {
            per_group.entry(g).or_default().1 = value;
        }
    }
    per_group.values().map(|(all, missed)| (all - missed).max(0.0) as u64).min().unwrap_or(0)
}

/// Consecutive evaluation times (one step apart) of one series → one stretch each.
fn stretches(mut metric: serde_json::Map<String, Value>, mut times: Vec<u64>, step_ms: u64) -> Vec<AlertState> {
    times.sort_unstable();
    times.dedup();
    let alertname = metric.remove("alertname").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let state = metric.remove("alertstate").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    metric.remove("__name__");
    let mut out: Vec<AlertState> = Vec::new();
    for t in times {
        match out.last_mut() {
            // A missing evaluation or two (a slow rule group) does not split a stretch.
            Some(last) if t <= last.to_ms + 3 * step_ms => last.to_ms = t,
            _ => out.push(AlertState {
                alertname: alertname.clone(),
                state: state.clone(),
                labels: metric.clone(),
                from_ms: t,
                to_ms: t,
            }),
        }
    }
    out
}

fn make_dir(path: &Path) -> Result<(), MonitoringError> {
    std::fs::create_dir_all(path).map_err(|source| MonitoringError::Io { path: path.display().to_string(), source })
}

fn write(path: &Path, text: &str) -> Result<(), MonitoringError> {
    std::fs::write(path, text).map_err(|source| MonitoringError::Io { path: path.display().to_string(), source })
}

fn probe_addr(process: &Supervised) -> SocketAddr {
    process.addr()
}

async fn start_on_free_port(spec_for: impl Fn(SocketAddr) -> ProcessSpec) -> Result<Supervised, MonitoringError> {
    Ok(crate::process::start_on_free_port(spec_for).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_the_fewest_evaluations_of_any_group() {
        let page = "# HELP x\n\
            prometheus_rule_group_iterations_total{rule_group=\"/r/a.yml;g1\"} 60\n\
            prometheus_rule_group_iterations_total{rule_group=\"/r/a.yml;g2\"} 58\n\
            prometheus_rule_group_iterations_missed_total{rule_group=\"/r/a.yml;g1\"} 5\n\
            prometheus_rule_group_iterations_missed_total{rule_group=\"/r/a.yml;g2\"} 0\n";
        assert_eq!(rule_rounds(page), 55);
        assert_eq!(rule_rounds("up 1\n"), 0);
    }

    #[test]
    fn evaluations_one_step_apart_make_one_stretch_and_a_gap_splits_it() {
        let mut metric = serde_json::Map::new();
        metric.insert("alertname".into(), "X".into());
        metric.insert("alertstate".into(), "firing".into());
        metric.insert("severity".into(), "critical".into());
        let got = stretches(metric, vec![3000, 1000, 2000, 5000, 20_000, 21_000], 1000);
        let spans: Vec<(u64, u64)> = got.iter().map(|s| (s.from_ms, s.to_ms)).collect();
        assert_eq!(spans, vec![(1000, 5000), (20_000, 21_000)]);
        assert_eq!(got[0].alertname, "X");
        assert_eq!(got[0].state, "firing");
        assert_eq!(got[0].labels.get("severity"), Some(&Value::from("critical")));
        assert!(!got[0].labels.contains_key("alertstate"));
    }
}

//! The timeline's `deploy` and `rollback` entries, and the canary gate: while a candidate runs,
//! its PromQL condition is asked of the testbed's Prometheus every `every`; once it has held for
//! `for`, the lab rolls every instance of the candidate back to the release and halts the
//! rollout (the timeline's later deploys are skipped, and say why).
//!
//! Events (`events.jsonl`), read by `checks::release`:
//! - `deploy`: one instance replaced — `target`, `release` (the build's name, or `null` for a
//!   rollback to the release), `ok`, `took_ms`, `error`;
//! - `gate_breach`: the condition held — `query`, `value`, `first_ms` (its first breach),
//!   `held_ms`;
//! - `gate_error`: Prometheus could not answer (a bad query, or down) — `error`;
//! - `action` (`deploy` / `rollback`, `by` = `timeline` or `gate`): as every lab action.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaos::testbed::release::Build;
use chaos::{EventLog, Target, Testbed};
use serde_json::json;
use tokio::time::Instant;

use super::steps::lock;
use crate::scenario::{DeployTarget, Gate, Scenario};

/// Limit on each question to Prometheus.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// `gate_error` events recorded at most (a bad query would write one a second).
const MAX_GATE_ERRORS: usize = 5;

/// The candidate, the gate, and whether the rollout was halted.
#[derive(Debug, Clone)]
pub(super) struct Releases {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    testbed: Arc<tokio::sync::Mutex<Testbed>>,
    events: EventLog,
    build: Build,
    /// Why later deploys are skipped: the gate rolled the candidate back.
    halted: Mutex<Option<String>>,
    /// The drill is over: the gate stops watching.
    done: AtomicBool,
}

impl Releases {
    /// The candidate of `scenario`'s `[release]`, built on `testbed`'s own binary and the
    /// scenario's environment; `None` without a `[release]` section.
    pub(super) fn new(
        scenario: &Scenario,
        testbed: Arc<tokio::sync::Mutex<Testbed>>,
        release_bin: &Path,
        events: EventLog,
    ) -> Result<Option<Releases>, String> {
        let Some(release) = &scenario.release else { return Ok(None) };
        let build = Build {
            release: release.name.clone(),
            program: release.program(release_bin)?,
            env: release.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let inner = Inner { testbed, events, build, halted: Mutex::new(None), done: AtomicBool::new(false) };
        Ok(Some(Releases { inner: Arc::new(inner) }))
    }

    /// Watches the candidate with `gate` through Prometheus at `prometheus` until
    /// [`Releases::finish`] or `limit`.
    pub(super) fn watch(&self, gate: Gate, prometheus: String, limit: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.gate_loop(gate, prometheus, limit).await })
    }

    /// The drill is over: the gate stops.
    pub(super) fn finish(&self) {
        self.inner.done.store(true, Ordering::SeqCst);
    }

    /// A `deploy` entry: the candidate on `target`, one instance after another; skipped when
    /// the gate halted the rollout.
    pub(super) async fn deploy(&self, target: DeployTarget, quiet: bool) {
        let halted = lock(&self.inner.halted).clone();
        if let Some(why) = halted {
            let output = format!("{target}: skipped — {why}");
            self.inner.events.record(
                "action",
                json!({"action": "deploy", "by": "timeline", "ok": true, "skipped": true, "output": output}),
            );
            if !quiet {
                eprintln!("action deploy: {output}");
            }
            return;
        }
        let targets = {
            let bed = self.inner.testbed.lock().await;
            target.expand(bed.processor_count(), bed.gateway_count())
        };
        let started = Instant::now();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for t in targets {
            if lock(&self.inner.halted).is_some() {
                break; // the gate fired between two instances: the rollout stops here
            }
            let runs = self.inner.testbed.lock().await.release_of(&t.to_string());
            if runs.as_deref() == Some(self.inner.build.release.as_str()) {
                continue; // the canary already runs it
            }
            match self.replace(t, true).await {
                Ok(()) => done.push(t.to_string()),
                Err(e) => failed.push(e),
            }
        }
        let output = if failed.is_empty() {
            format!(
                "{} now run{} {}",
                done.join(", "),
                if done.len() == 1 { "s" } else { "" },
                self.inner.build.release
            )
        } else {
            failed.join("; ")
        };
        self.inner.events.record(
            "action",
            json!({"action": "deploy", "by": "timeline", "ok": failed.is_empty(), "output": output,
                   "targets": done, "took_ms": started.elapsed().as_millis() as u64}),
        );
        if !quiet {
            eprintln!("action deploy: {output}");
        }
    }

    /// A `rollback` entry (`by` the timeline) or the gate's: `target`'s instances — by default
    /// every one running the candidate — back to the release.
    pub(super) async fn rollback(&self, target: DeployTarget, by: &str, quiet: bool) {
        let started = Instant::now();
        let targets: Vec<Target> = {
            let bed = self.inner.testbed.lock().await;
            let deployed: Vec<String> = bed.deployed().into_iter().map(|(name, _)| name).collect();
            match target {
                DeployTarget::Deployed => deployed.iter().filter_map(|n| n.parse().ok()).collect(),
                other => other
                    .expand(bed.processor_count(), bed.gateway_count())
                    .into_iter()
                    .filter(|t| deployed.contains(&t.to_string()))
                    .collect(),
            }
        };
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for t in targets {
            match self.replace(t, false).await {
                Ok(()) => done.push(t.to_string()),
                Err(e) => failed.push(e),
            }
        }
        let output = match (done.is_empty(), failed.is_empty()) {
            (true, true) => "nothing runs the candidate".to_string(),
            (false, true) => format!("{} back to the release", done.join(", ")),
            _ => failed.join("; "),
        };
        self.inner.events.record(
            "action",
            json!({"action": "rollback", "by": by, "ok": failed.is_empty(), "output": output,
                   "targets": done, "took_ms": started.elapsed().as_millis() as u64}),
        );
        if !quiet {
            eprintln!("action rollback ({by}): {output}");
        }
    }

    /// One instance to the candidate (`candidate`) or back; a `deploy` event either way.
    async fn replace(&self, target: Target, candidate: bool) -> Result<(), String> {
        let build = candidate.then_some(&self.inner.build);
        let result = self.inner.testbed.lock().await.deploy(target, build).await;
        let release = build.map(|b| b.release.clone());
        let (ok, took_ms, error) = match &result {
            Ok(took) => (true, took.as_millis() as u64, None),
            Err(e) => (false, 0, Some(e.to_string())),
        };
        self.inner.events.record(
            "deploy",
            json!({"target": target.to_string(), "release": release, "ok": ok, "took_ms": took_ms, "error": error}),
        );
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn gate_loop(&self, gate: Gate, prometheus: String, limit: Duration) {
        let http = match reqwest::Client::builder().timeout(QUERY_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                self.inner.events.record("gate_error", json!({"error": e.to_string()}));
                return;
            }
        };
        let deadline = Instant::now() + limit;
        let mut first_breach: Option<(Instant, u64)> = None;
        let mut errors = 0;
        while Instant::now() < deadline && !self.inner.done.load(Ordering::SeqCst) {
            tokio::time::sleep(gate.every).await;
            let candidate_runs = !self.inner.testbed.lock().await.deployed().is_empty();
            if !candidate_runs || lock(&self.inner.halted).is_some() {
                first_breach = None;
                continue;
            }
            let value = match query(&http, &prometheus, &gate.query).await {
                Ok(value) => value,
                Err(e) => {
                    if errors < MAX_GATE_ERRORS {
                        self.inner.events.record("gate_error", json!({"error": e}));
                    }
                    errors += 1;
                    continue;
                }
            };
            self.inner.events.record("gate_evaluated", json!({"breached": value.is_some(), "value": value}));
            let Some(value) = value else {
                first_breach = None;
                continue;
            };
            let (since, since_ms) = *first_breach.get_or_insert((Instant::now(), chaos::events::unix_ms()));
            if since.elapsed() < gate.hold {
                continue;
            }
            self.inner.events.record(
                "gate_breach",
                json!({"query": gate.query, "value": value, "first_ms": since_ms,
                       "held_ms": since.elapsed().as_millis() as u64}),
            );
            *lock(&self.inner.halted) =
                Some(format!("the gate rolled {} back (query returned {value})", self.inner.build.release));
            self.rollback(DeployTarget::Deployed, "gate", true).await;
            first_breach = None;
        }
    }
}

/// Asks Prometheus for `promql` now: the first sample's value, `None` when it returned none.
async fn query(http: &reqwest::Client, prometheus: &str, promql: &str) -> Result<Option<f64>, String> {
    let response = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .map_err(|e| format!("prometheus: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| format!("prometheus answer: {e}"))?;
    if !status.is_success() || body["status"] != "success" {
        return Err(format!("prometheus refused the query ({status}): {}", body["error"].as_str().unwrap_or_default()));
    }
    if body["data"]["resultType"] != "vector" {
        // A scalar always has a value: it would roll back every candidate.
        return Err(format!(
            "the gate's query must return a vector, like an alert rule's (got {})",
            body["data"]["resultType"]
        ));
    }
    let first = body["data"]["result"].as_array().and_then(|r| r.first()).cloned();
    Ok(first.map(|s| s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)))
}

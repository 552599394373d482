//! The drill's own steps around the load: the timeline's faults and actions, the warm-up, the
//! drain (judged from the broker), and the request ids the final state is read for.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chaos::{Action, EventLog, Injector};
use serde_json::json;
use tokio::time::Instant;

use super::final_state::{self, Sources};
use super::{checks, scrape};
use crate::scenario::Step;

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_step(
    step: Step,
    injector: &Injector,
    events: &EventLog,
    sources: &Sources,
    dir: &Path,
    quiet: bool,
    processors_stopped: bool,
    releases: Option<&super::release::Releases>,
) {
    match step {
        // The scenario's parse refuses a deploy or rollback without `[release]`.
        Step::Deploy(target) => {
            if let Some(releases) = releases {
                releases.deploy(target, quiet).await;
            }
        }
        Step::Rollback(target) => {
            if let Some(releases) = releases {
                releases.rollback(target, "timeline", quiet).await;
            }
        }
        Step::Fault(mut fault) => {
            if let Action::RedisLoss { restore: Some(_) } = &fault.action {
                fault.action = Action::RedisLoss { restore: Some(dir.join("backup.jsonl")) };
            }
            match injector.inject(fault.clone()).await {
                Ok(info) if !quiet => eprintln!(
                    "fault #{} {} — {}: {}",
                    info.id,
                    info.description,
                    if info.check.ok { "verified" } else { "NOT VERIFIED" },
                    info.check.observed
                ),
                Ok(_) => {}
                Err(e) => {
                    // Refused before it touched anything (invalid, conflicting, no such target):
                    // a failed check of the drill, with the injector's message.
                    events.record("fault_refused", json!({"description": fault.to_string(), "error": e.to_string()}));
                    if !quiet {
                        eprintln!("fault {fault}: REFUSED: {e}");
                    }
                }
            }
        }
        Step::RedisFailover => {
            use chaos::testbed::failover::{manual_failover, Handover};
            let result =
                manual_failover(&sources.sentinels, &sources.redis_nodes, FAILOVER_LIMIT, Handover::Coordinated).await;
            let (ok, output, took_ms) = match &result {
                Ok(f) => (true, f.to_string(), Some(f.took.as_millis() as u64)),
                Err(e) => (false, e.clone(), None),
            };
            events
                .record("action", json!({"action": "redis_failover", "ok": ok, "output": output, "took_ms": took_ms}));
            if !quiet {
                eprintln!("action redis_failover: {output}");
            }
        }
        Step::Degrade { on, admit } => {
            let started = Instant::now();
            let name = if on { "degrade_on" } else { "degrade_off" };
            let admit_text = admit.map(|n| n.to_string());
            let mut args = vec!["degrade", if on { "on" } else { "off" }];
            if let Some(n) = &admit_text {
                args.extend(["--admit", n.as_str()]);
            }
            let result = match final_state::admin(sources, &args).await {
                Ok(out) => {
                    degrade_shown(&sources.gateways, on, admit).await.map(|shown| format!("{}; {shown}", out.trim()))
                }
                Err(e) => Err(format!("{e:#}")),
            };
            let (ok, output) = match result {
                Ok(out) => (true, out),
                Err(e) => (false, e),
            };
            let took_ms = started.elapsed().as_millis() as u64;
            events.record("action", json!({"action": name, "ok": ok, "output": output, "took_ms": took_ms}));
            if !quiet {
                eprintln!("action {name}: {output}");
            }
        }
        Step::Backup | Step::DlqReplay | Step::ReconcileFix => {
            let backup = dir.join("backup.jsonl");
            let backup = backup.display().to_string();
            let (name, args): (&str, Vec<&str>) = match step {
                Step::Backup => ("backup", vec!["backup", &backup]),
                // Every pending letter, as an operator processing the DLQ would (the command's own
                // default stops at 1,000); bounded by the admin call's 180 s.
                Step::DlqReplay => ("dlq_replay", vec!["dlq", "replay", "--max", "1000000"]),
                _ if processors_stopped => {
                    ("reconcile_fix", vec!["reconcile", "--fix", "--processors-stopped", "--json"])
                }
                _ => ("reconcile_fix", vec!["reconcile", "--fix", "--json"]),
            };
            let result = final_state::admin(sources, &args).await;
            let ok = result.is_ok();
            let output = match result {
                Ok(out) => out.chars().take(2000).collect::<String>(),
                Err(e) => e.to_string(),
            };
            events.record("action", json!({"action": name, "ok": ok, "output": output}));
            if !quiet {
                eprintln!("action {name}: {}", if ok { "done" } else { "FAILED" });
            }
        }
    }
}

/// How long every gateway may take to show the degradation switch's new mode (they read it
/// every `DEGRADE_POLL`, 1 s).
const DEGRADE_SHOWN_LIMIT: Duration = Duration::from_secs(10);

/// Waits until every gateway's `/metrics` shows the switch `on` (with the cap `admit`), or says
/// which did not within [`DEGRADE_SHOWN_LIMIT`]: a switch that did not land is a failed action.
/// (`/metrics` rather than `/health`, which pings Redis on the connection the overload backs up:
/// it took seconds to answer in `degrade-under-overload`.)
async fn degrade_shown(gateways: &[std::net::SocketAddr], on: bool, admit: Option<u32>) -> Result<String, String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let deadline = started + DEGRADE_SHOWN_LIMIT;
    let mut waiting: Vec<usize> = (0..gateways.len()).collect();
    loop {
        let mut still = Vec::new();
        for &i in &waiting {
            let page = match http.get(scrape::metrics_url(gateways[i])).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let m = scrape::parse(&page);
            let cap = if on { admit.map_or(0.0, f64::from) } else { 0.0 };
            let shown = m.get("gateway_degraded") == Some(&if on { 1.0 } else { 0.0 })
                && m.get("gateway_degrade_admit_per_second") == Some(&cap);
            if !shown {
                still.push(i);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return Ok(format!("shown by {} gateway(s) in {} ms", gateways.len(), started.elapsed().as_millis()));
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = waiting.iter().map(|i| format!("gateway[{i}]")).collect();
            return Err(format!("not shown within {DEGRADE_SHOWN_LIMIT:?} by {}", names.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long an operator's failover may take from the order to another primary named (Sentinel's
/// own failover timeout in a testbed is 10 s).
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// How long the fault timeline waits for the load's clock to start.
pub(super) const LOAD_START_LIMIT: Duration = Duration::from_secs(70);

/// The item the warm-up orders (stock 0: each is decided sold out).
pub(super) const WARMUP_ITEM: &str = "warmup";

/// How long the warm-up may take.
const WARMUP_LIMIT: Duration = Duration::from_secs(90);

pub(super) async fn warm_up(gateways: &[String], processors: bool, events: &EventLog) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let deadline = Instant::now() + WARMUP_LIMIT;
    let started = Instant::now();
    for (i, base) in gateways.iter().enumerate() {
        let id = format!("{}{i}", checks::WARMUP_PREFIX);
        let body = json!({"user_id": "warmup", "item_id": WARMUP_ITEM, "amount": 1, "request_id": id});
        loop {
            let status = http.post(format!("{base}/buy")).json(&body).send().await.map(|r| r.status().as_u16());
            if matches!(status, Ok(202 | 409)) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "warm-up: gateway[{i}] did not take an order within {WARMUP_LIMIT:?} ({status:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Without processors nothing decides it. Bounded by the warm-up's deadline.
        if processors {
            loop {
                let answer: serde_json::Value = match http.get(format!("{base}/orders/{id}")).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
                if answer["status"].as_str().is_some_and(|s| s != "PENDING") {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "warm-up: the order through gateway[{i}] was not decided within {WARMUP_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    events.record("warm_up", json!({"gateways": gateways.len(), "took_ms": started.elapsed().as_millis() as u64}));
    Ok(())
}

/// Whether every processor is down (its port refuses connections): the timeline stopped them
/// (the runbook's "stop services" around a restore). A frozen processor still accepts
/// connections and is not stopped.
pub(super) async fn processors_stopped(processors: &[std::net::SocketAddr]) -> bool {
    if processors.is_empty() {
        return false;
    }
    for addr in processors {
        match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            _ => return false,
        }
    }
    true
}

/// Waits until nothing is left to decide, twice in a row: the processors' consumer group has
/// committed every `orders` partition to its end (read from the broker, so a partition nobody
/// is assigned counts too), no processor has an order in flight and no payment is deferred.
pub(super) async fn drain(processors: &[std::net::SocketAddr], kafka: std::net::SocketAddr, limit: Duration) -> bool {
    if processors.is_empty() {
        return true;
    }
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(2)).build() {
        Ok(c) => c,
        Err(_) => return false,
    };
    let deadline = Instant::now() + limit;
    let mut idle_in_a_row = 0;
    while Instant::now() < deadline {
        let bootstrap = kafka.to_string();
        let backlog = tokio::task::spawn_blocking(move || {
            flashsale::topic_reader::group_backlog(
                &bootstrap,
                flashsale::processor::GROUP,
                flashsale::order::ORDERS_TOPIC,
                Duration::from_secs(2),
            )
        })
        .await;
        let mut idle = matches!(&backlog, Ok(Ok(parts)) if parts.iter().all(|(_, done, end)| done >= end));
        for addr in processors {
            let page = match http.get(format!("http://{addr}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let m = scrape::parse(&page);
            // A processor that does not answer may hold orders: not idle. A deferred payment
            // (PAYMENT_OUTAGE_MODE=defer) is an order in flight too.
            if page.is_empty()
                || scrape::sum(&m, "processor_orders_in_flight") > 0.0
                || scrape::sum(&m, "processor_payments_deferred") > 0.0
            {
                idle = false;
            }
        }
        idle_in_a_row = if idle { idle_in_a_row + 1 } else { 0 };
        if idle_in_a_row >= 2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The distinct request_ids of the orders in `history` (sent or not).
pub(super) fn request_ids_of(history: &[rundir::Attempt]) -> Vec<String> {
    let mut ids: Vec<String> = history
        .iter()
        .filter(|a| a.op != rundir::Op::Status && a.kind != loadgen::UserKind::Invalid)
        .map(|a| a.request_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The request_ids recorded so far (the history is being written; a torn last line is skipped).
pub(super) fn request_ids_so_far(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(rundir::files::HISTORY)).unwrap_or_default();
    let history: Vec<rundir::Attempt> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    request_ids_of(&history)
}

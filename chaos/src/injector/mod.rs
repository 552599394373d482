//! The [`Injector`]: applies a [`Fault`] to a running [`Testbed`], checks that it took effect,
//! heals it (after its duration, by hand, or when the lab stops) and checks that service came
//! back. Every start and stop is an event in the [`EventLog`] with the check's result.
//!
//! How each fault is checked:
//! - kill / terminate / redis_loss: the process was reaped (its pid is gone);
//! - pause: the kernel reports the process stopped (`T` in `/proc/PID/stat`), or, in a
//!   container, its cgroup freezer `FROZEN`;
//! - partition (containers): off the network, the probe through its published port fails; from
//!   a peer, the peer's proxy holds its address's traffic and it has connections open there;
//! - network faults: a probe in the component's own protocol (Redis `PING`, Kafka
//!   `ApiVersions`, HTTP `GET /health`) sent *through the proxy* sees the latency, gets no answer
//!   (blackhole), is reset or refused; a fault on a share of connections is checked in the
//!   proxy's settings (the probe's connection may be spared);
//! - payment faults: the provider's `GET /control` shows the behaviour;
//! - redis_stall: a `PING` on a fresh connection gets no answer;
//! - cpu / memory: the kernel holds the process in the fault's cgroup with the limit; when it
//!   heals the fault must have bitten — throttled at least once (`cpu.stat`), the memory limit
//!   reached (`memory.failcnt`, `oom_kill`) — or the heal check fails: a quota on an idle
//!   process is no fault. In a container the limits are the engine's (`docker update`), read on
//!   the container's own cgroups, an OOM kill from the engine (`State.OOMKilled`).
//!
//! A heal is checked by the same probe through the proxy answering again.
//!
//! Here: the injector and its bookkeeping; `apply.rs` (each fault applied and checked), `heal.rs`
//! (each undone and checked), `engine.rs` (cpu and memory on containers, both ways),
//! `observe.rs` (the probes and readings the checks use).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cgroups::{Controller, Limit};
use crate::events::{unix_ms, EventLog};
use crate::faults::{Action, Directions, Fault, InvalidFault, Target, MAX_FAULT_DURATION};
use crate::probe::{redis_command, Probe};
use crate::process::ProcessError;
use crate::proxy::{Toxic, ToxicSetting};
use crate::testbed::Testbed;

mod apply;
mod engine;
mod heal;
mod observe;
use observe::*;

/// The processor's payment timeout when the testbed does not set `PAYMENT_TIMEOUT`.
const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a check probe may wait beyond the latency it expects.
const PROBE_SLACK: Duration = Duration::from_secs(2);
/// A probe that should get no answer (blackhole, stall) waits this long for one.
const SILENCE_PROBE: Duration = Duration::from_millis(500);
/// How long a heal waits for service to come back through the proxy.
const HEAL_CHECK_LIMIT: Duration = Duration::from_secs(10);
/// How long an HTTP call to the payment control endpoint or a restore may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(transparent)]
    Invalid(#[from] InvalidFault),
    #[error("no component {target} in this lab; it has: {valid}")]
    NoSuchTarget { target: Target, valid: String },
    #[error("{target} already has fault #{id} ({fault}); heal it first")]
    Conflict { target: Target, id: u64, fault: String },
    #[error("{0} is not behind a fault proxy in this testbed (started with proxies off)")]
    NoProxy(Target),
    #[error("{target} is not running")]
    NotRunning { target: Target },
    #[error("no active fault #{0}; `list` shows the active ones")]
    NoSuchFault(u64),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("payment control endpoint: {0}")]
    Payment(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// A fault that exists on one runtime only (docs/faults.md).
    #[error("{0}")]
    OtherRuntime(String),
    #[error("containers: {0}")]
    Container(String),
}

/// Why `redis loss` is refused on replicated Redis.
pub const REDIS_LOSS_REPLICATED: &str = "redis loss deletes one server's data: with replicas, Sentinel promotes \
one that has it (a failover: kill redis), and a restore on heal would write the old backup over the promoted \
primary; losing the whole set is not a fault of this lab";

/// The result of checking a fault (or a heal) on the real system.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    /// Whether the check saw what it expected.
    pub ok: bool,
    /// What it saw, for people.
    pub observed: String,
}

impl Check {
    fn new(ok: bool, observed: impl Into<String>) -> Check {
        Check { ok, observed: observed.into() }
    }
}

/// An active (or just ended) fault, as `list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultInfo {
    pub id: u64,
    /// `latency redis 200ms ± 50ms for 1m`.
    pub description: String,
    pub fault: Fault,
    pub started_ms: u64,
    /// When it heals by itself.
    pub heals_at_ms: u64,
    /// The check made after applying it.
    pub check: Check,
}

/// A healed fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealReport {
    pub id: u64,
    pub description: String,
    /// The check made after healing; `ok: false` with the error when the heal failed.
    pub check: Check,
}

/// How to undo a fault.
#[derive(Debug, Clone)]
enum Undo {
    /// Nothing to undo (an instant fault).
    Nothing,
    /// Start the process again, same spec.
    StartAgain,
    /// SIGCONT.
    Resume,
    /// Remove the toxic named `name` from these directions of the target's proxy.
    Proxy { directions: Directions, name: &'static str },
    /// Remove the toxic named `name` for connections from `from` (a replica's replication)
    /// from every Redis node's proxy.
    LinkProxy { directions: Directions, name: &'static str, from: std::net::IpAddr },
    /// The proxy accepts connections again.
    ProxyUp,
    /// Put back the payment provider's behaviour from before the fault.
    Payment(Value),
    /// `CLIENT UNPAUSE` (Redis 7.0 pauses that command too: it returns when the pause ends).
    RedisUnpause,
    /// Start Redis again (empty), then restore this backup if any.
    RedisBack { restore: Option<std::path::PathBuf> },
    /// Move the process out of the fault's cgroup and remove it; start the process again if
    /// the OOM killer took it.
    Cgroup(Limit),
    /// Lift the engine's limit on the container (`docker update`; [`engine`]).
    Engine(Limit),
    /// Lift the engine's memory limit of a container that did not start inside it, and start it.
    EngineStopped,
    /// Put the container back on the run's network.
    Reconnect,
    /// Lift the stall for `from` (the component's address) from `peer`'s proxy.
    PeerPartition { peer: Target, from: std::net::IpAddr },
}

#[derive(Debug)]
struct Active {
    info: FaultInfo,
    undo: Undo,
    timer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    testbed: Arc<AsyncMutex<Testbed>>,
    /// A supervisor restarts what dies: a kill or terminate without a duration is then over
    /// when applied (the supervisor's restart is the recovery), not healed by the lab.
    supervised: std::sync::atomic::AtomicBool,
    events: EventLog,
    active: Mutex<BTreeMap<u64, Active>>,
    next_id: AtomicU64,
    payment_timeout: Duration,
    http: reqwest::Client,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for active in self.active.get_mut().unwrap_or_else(|p| p.into_inner()).values() {
            if let Some(timer) = &active.timer {
                timer.abort();
            }
        }
    }
}

/// Applies, checks and heals faults on a shared [`Testbed`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Injector {
    inner: Arc<Inner>,
}

impl Injector {
    /// An injector for `testbed`, recording to `events`. `payment_timeout` is the processor's
    /// `PAYMENT_TIMEOUT` (payment timeout faults answer later than twice that).
    pub fn new(testbed: Arc<AsyncMutex<Testbed>>, events: EventLog) -> Injector {
        let payment_timeout = {
            // The testbed is fresh here: nobody else holds the lock.
            let env = testbed.try_lock().map(|t| t.service_env().to_vec()).unwrap_or_default();
            env.iter()
                .find(|(k, _)| k == "PAYMENT_TIMEOUT")
                .and_then(|(_, v)| humantime::parse_duration(v).ok())
                .unwrap_or(DEFAULT_PAYMENT_TIMEOUT)
        };
        let http = reqwest::Client::builder().timeout(CONTROL_TIMEOUT).build().unwrap_or_default();
        Injector {
            inner: Arc::new(Inner {
                testbed,
                supervised: std::sync::atomic::AtomicBool::new(false),
                events,
                active: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                payment_timeout,
                http,
            }),
        }
    }

    /// With a supervisor ([`crate::supervisor`]): a `kill` or `terminate` without a duration is
    /// over when applied — the supervisor brings the process back, as in production — instead
    /// of lasting until healed by hand or the lab stops.
    pub fn set_supervised(&self, supervised: bool) {
        self.inner.supervised.store(supervised, Ordering::Relaxed);
    }

    /// Whether a fault in force holds `target` down on purpose (a kill, terminate or Redis loss
    /// with a duration): a supervisor leaves it down until the fault heals.
    pub fn holds_down(&self, target: Target) -> bool {
        self.inner.active().values().any(|a| {
            a.info.fault.target == target
                && matches!(a.info.fault.action, Action::Kill | Action::Terminate | Action::RedisLoss { .. })
        })
    }

    /// The event log faults are recorded in.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// The testbed the faults apply to.
    pub fn testbed(&self) -> &Arc<AsyncMutex<Testbed>> {
        &self.inner.testbed
    }

    /// The faults in force, oldest first.
    pub fn list(&self) -> Vec<FaultInfo> {
        self.inner.active().values().map(|a| a.info.clone()).collect()
    }

    /// Applies `fault`, checks it and schedules its heal. An instant fault (`restart`) is over
    /// when this returns. Fails without changing anything when the fault is invalid for this
    /// lab or conflicts with one in force.
    pub async fn inject(&self, mut fault: Fault) -> Result<FaultInfo, FaultError> {
        fault.validate()?;
        let mut testbed = self.inner.testbed.lock().await;
        if matches!(fault.action, Action::RedisLoss { .. }) && testbed.replicated() {
            return Err(FaultError::Redis(REDIS_LOSS_REPLICATED.into()));
        }
        // With replicated Redis, `redis` is the node that is the primary now: the fault (and its
        // heal) stays on that node even after a failover.
        if fault.target == Target::Redis && testbed.replicated() {
            testbed.refresh_primary().await;
            fault.target = testbed.resolve(Target::Redis);
        }
        let description = fault.to_string();
        let valid = testbed.targets();
        if !valid.contains(&fault.target) {
            let valid = valid.iter().map(Target::to_string).collect::<Vec<_>>().join(", ");
            return Err(FaultError::NoSuchTarget { target: fault.target, valid });
        }
        let key = fault.action.conflict_key();
        if let Some(other) = self
            .inner
            .active()
            .values()
            .find(|a| a.info.fault.target == fault.target && a.info.fault.action.conflict_key() == key)
        {
            return Err(FaultError::Conflict {
                target: fault.target,
                id: other.info.id,
                fault: other.info.description.clone(),
            });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let started_ms = unix_ms();
        let applied = self.inner.apply(&mut testbed, &fault).await;
        drop(testbed);
        let (undo, check) = match applied {
            Ok(done) => done,
            Err(e) => {
                self.inner.events.record(
                    "fault_error",
                    json!({"id": id, "description": description, "target": fault.target, "action": fault.action.name(), "error": e.to_string()}),
                );
                return Err(e);
            }
        };
        let lasts = fault.duration.unwrap_or(MAX_FAULT_DURATION);
        let info = FaultInfo {
            id,
            description: description.clone(),
            fault: fault.clone(),
            started_ms,
            heals_at_ms: started_ms + lasts.as_millis() as u64,
            check: check.clone(),
        };
        self.inner.events.record(
            "fault_start",
            json!({
                "id": id,
                "description": description,
                "target": fault.target,
                "action": fault.action.name(),
                "fault": fault,
                "duration_ms": fault.duration.map(|d| d.as_millis() as u64),
                // When applying began (the event itself is written once it was verified): the
                // fault's window starts here.
                "applied_from_ms": started_ms,
                "check": check,
            }),
        );
        if let Undo::Nothing = undo {
            // Instant: over already.
            self.inner.events.record(
                "fault_stop",
                json!({"id": id, "description": description, "target": fault.target, "action": fault.action.name(), "reason": "instant", "check": check}),
            );
            return Ok(info);
        }
        let weak = Arc::downgrade(&self.inner);
        let timer = tokio::spawn(heal_later(weak, id, lasts));
        self.inner.active().insert(id, Active { info: info.clone(), undo, timer: Some(timer) });
        Ok(info)
    }

    /// Heals fault `id` now.
    pub async fn heal(&self, id: u64) -> Result<HealReport, FaultError> {
        self.inner.heal(id, "healed", true).await.ok_or(FaultError::NoSuchFault(id))
    }

    /// Heals every fault in force, newest first; `reason` goes into the events
    /// (`healed`, `lab stopping`, ...).
    pub async fn heal_all(&self, reason: &str) -> Vec<HealReport> {
        let ids: Vec<u64> = self.inner.active().keys().rev().copied().collect();
        let mut reports = Vec::new();
        for id in ids {
            if let Some(report) = self.inner.heal(id, reason, true).await {
                reports.push(report);
            }
        }
        reports
    }
}

async fn heal_later(inner: Weak<Inner>, id: u64, after: Duration) {
    tokio::time::sleep(after).await;
    if let Some(inner) = inner.upgrade() {
        inner.heal(id, "expired", false).await;
    }
}

impl Inner {
    fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Heals `id` if it is still in force (whoever removes it from the map heals it).
    async fn heal(&self, id: u64, reason: &str, stop_timer: bool) -> Option<HealReport> {
        let active = self.active().remove(&id)?;
        if stop_timer {
            if let Some(timer) = &active.timer {
                timer.abort();
            }
        }
        let fault = &active.info.fault;
        let mut testbed = self.testbed.lock().await;
        let undone = self.undo(&mut testbed, fault.target, &active.undo).await;
        let probe = testbed.client_probe(fault.target);
        drop(testbed);
        let undone_ms = unix_ms();
        let check = match undone {
            Err(e) => Check::new(false, format!("heal failed: {e}")),
            Ok((step, false)) => step,
            Ok((step, true)) => {
                // Another fault on the same target would fail the service check for its own reason.
                let others: Vec<String> = self
                    .active()
                    .values()
                    .filter(|a| a.info.fault.target == fault.target)
                    .map(|a| format!("#{} {}", a.info.id, a.info.description))
                    .collect();
                if others.is_empty() {
                    let back = service_back(probe).await;
                    Check::new(step.ok && back.ok, format!("{}; {}", step.observed, back.observed))
                } else {
                    let others = others.join(", ");
                    Check::new(step.ok, format!("{}; service not checked: {others} still in force", step.observed))
                }
            }
        };
        if !check.ok {
            tracing::warn!(id, fault = %active.info.description, observed = %check.observed, "heal not confirmed");
        }
        self.events.record(
            "fault_stop",
            json!({
                "id": id,
                "description": active.info.description,
                "target": fault.target,
                "action": fault.action.name(),
                "reason": reason,
                "undone_ms": undone_ms,
                "check": check,
            }),
        );
        Some(HealReport { id, description: active.info.description, check })
    }
}

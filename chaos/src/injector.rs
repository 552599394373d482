//! The [`Injector`]: applies a [`Fault`] to a running [`Testbed`], checks that it took effect,
//! heals it (after its duration, by hand, or when the lab stops) and checks that service came
//! back. Every start and stop is an event in the [`EventLog`] with the check's result.
//!
//! How each fault is checked:
//! - kill / terminate / redis_loss: the process was reaped (its pid is gone);
//! - pause: the kernel reports the process stopped (`T` in `/proc/PID/stat`);
//! - network faults: a probe in the component's own protocol (Redis `PING`, Kafka
//!   `ApiVersions`, HTTP `GET /health`) sent *through the proxy* sees the latency, gets no answer
//!   (blackhole), is reset or refused; a fault on a share of connections is checked in the
//!   proxy's settings (the probe's connection may be spared);
//! - payment faults: the provider's `GET /control` shows the behaviour;
//! - redis_stall: a `PING` on a fresh connection gets no answer;
//! - cpu / memory: the kernel holds the process in the fault's cgroup with the limit; when it
//!   heals the fault must have bitten — throttled at least once (`cpu.stat`), the memory limit
//!   reached (`memory.failcnt`, `oom_kill`) — or the heal check fails: a quota on an idle
//!   process is no fault.
//!
//! A heal is checked by the same probe through the proxy answering again.

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

    async fn apply(&self, testbed: &mut Testbed, fault: &Fault) -> Result<(Undo, Check), FaultError> {
        let target = fault.target;
        match &fault.action {
            Action::Kill | Action::Terminate | Action::RedisLoss { .. } => {
                let process = running(testbed, target)?;
                let pid = process.pid().unwrap_or(0);
                let status =
                    if fault.action == Action::Terminate { process.stop().await? } else { process.kill().await? };
                let gone = !pid_alive(pid);
                let mut observed = format!(
                    "pid {pid} {} ({})",
                    if gone { "gone" } else { "still alive" },
                    match (status, process.container()) {
                        (Some(s), _) => s.to_string(),
                        (None, Some(c)) => format!("container {} stopped", c.name()),
                        (None, None) => "not reaped".into(),
                    }
                );
                let undo = match &fault.action {
                    Action::RedisLoss { restore } => {
                        let dir = process.spec().cwd.clone();
                        let removed =
                            wipe_redis_data(&dir).map_err(|e| FaultError::Redis(format!("deleting data: {e}")))?;
                        observed.push_str(&format!("; deleted {removed} data file(s) in {}", dir.display()));
                        Undo::RedisBack { restore: restore.clone() }
                    }
                    _ if fault.duration.is_none() && self.supervised.load(Ordering::Relaxed) => {
                        observed.push_str("; the supervisor brings it back");
                        Undo::Nothing
                    }
                    _ => Undo::StartAgain,
                };
                Ok((undo, Check::new(gone, observed)))
            }
            Action::Pause => {
                let process = running(testbed, target)?;
                process.pause()?;
                let stopped = wait_for(Duration::from_secs(1), || process.paused().0).await;
                let observed = process.paused().1;
                Ok((Undo::Resume, Check::new(stopped, observed)))
            }
            Action::Partition { from } => self.partition(testbed, target, *from).await,
            Action::Restart => {
                let process = running(testbed, target)?;
                let before = process.pid().unwrap_or(0);
                process.restart().await?;
                let after = process.pid().unwrap_or(0);
                let ok = after != 0 && after != before && !pid_alive(before);
                Ok((Undo::Nothing, Check::new(ok, format!("pid {before} → {after}, ready"))))
            }
            Action::Network { toxic, directions, toxicity } if matches!(target, Target::RedisLink(_)) => {
                let (proxies, from) = testbed.link(target).ok_or(FaultError::NoProxy(target))?;
                for proxy in &proxies {
                    for &direction in directions.each() {
                        proxy.set(direction, ToxicSetting { toxic: *toxic, toxicity: *toxicity, from: Some(from) });
                    }
                }
                // The lab cannot speak from the replica's address: the check is the proxies'
                // settings, and the replica's link as the primary reports it is in the events.
                let set = proxies.iter().all(|p| {
                    directions
                        .each()
                        .iter()
                        .all(|&d| p.toxics(d).iter().any(|s| s.toxic == *toxic && s.from == Some(from)))
                });
                let check = Check::new(
                    set,
                    format!(
                        "{} on all {} Redis proxies for connections from {from} (the replica's replication)",
                        toxic.name(),
                        proxies.len()
                    ),
                );
                Ok((Undo::Proxy { directions: *directions, name: toxic.name() }, check))
            }
            Action::Network { toxic, directions, toxicity } => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                for &direction in directions.each() {
                    proxy.set(direction, ToxicSetting { toxic: *toxic, toxicity: *toxicity, from: None });
                }
                let check = check_network(testbed, target, toxic, *directions, *toxicity).await;
                Ok((Undo::Proxy { directions: *directions, name: toxic.name() }, check))
            }
            Action::Down => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                proxy.set_down(true);
                let probe = client_probe(testbed, target)?;
                let (took, answer) = timed(&probe, SILENCE_PROBE).await;
                let check = Check::new(
                    answer.is_err() && proxy.is_down(),
                    format!("probe through the proxy: {} after {took:?}", describe(&answer)),
                );
                Ok((Undo::ProxyUp, check))
            }
            Action::PaymentTimeout { latency } => {
                let latency = latency.unwrap_or(self.payment_timeout * 2);
                self.payment_fault(testbed, json!({"latency_ms": latency.as_millis() as u64, "jitter_ms": 0})).await
            }
            Action::PaymentCaptureThenTimeout { latency } => {
                let latency = latency.unwrap_or(self.payment_timeout * 2);
                self.payment_fault(
                    testbed,
                    json!({"latency_ms": latency.as_millis() as u64, "jitter_ms": 0, "capture_then_timeout": true}),
                )
                .await
            }
            Action::PaymentFailures { rate } => self.payment_fault(testbed, json!({"failure_rate": rate})).await,
            Action::PaymentOutage => self.payment_fault(testbed, json!({"outage": true})).await,
            Action::RedisStall => {
                let duration = fault.duration.unwrap_or(MAX_FAULT_DURATION);
                let addr = testbed.redis_direct_addr();
                let ms = duration.as_millis().to_string();
                let answer = redis_command(addr, &["CLIENT", "PAUSE", &ms, "ALL"], CONTROL_TIMEOUT)
                    .await
                    .map_err(FaultError::Redis)?;
                if !answer.starts_with("+OK") {
                    return Err(FaultError::Redis(format!("CLIENT PAUSE answered {answer}")));
                }
                let ping = redis_command(addr, &["PING"], SILENCE_PROBE).await;
                let check = Check::new(ping.is_err(), format!("PING on a new connection: {}", describe(&ping)));
                Ok((Undo::RedisUnpause, check))
            }
            Action::Cpu { cores } => {
                let process = running(testbed, target)?;
                if process.container().is_some() {
                    return Err(FaultError::OtherRuntime(format!(
                        "cpu on {target}: a CPU quota of a container (docker update --cpus) is not built; \
                         cpu faults run on processes"
                    )));
                }
                let limit = Limit::cpu(process.pid().unwrap_or(0), *cores).map_err(FaultError::Cgroup)?;
                // A restart while the fault lasts starts inside the quota too.
                process.enter_on_start(limit.dir.join("cgroup.procs"), true);
                Ok(hold(limit))
            }
            Action::Memory { bytes, restart: false } => {
                let process = running(testbed, target)?;
                let pid = process.pid().unwrap_or(0);
                let cgroup = process.memory_cgroup().map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                let limit =
                    Limit::memory(cgroup, pid, *bytes).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                Ok(hold(limit))
            }
            Action::Memory { bytes, restart: true } => {
                let process = running(testbed, target)?;
                process.memory_cgroup().map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                // Replaced like a pod whose limit was lowered: stopped (it finishes what it has
                // in hand), then started inside the limit.
                process.stop().await?;
                let cgroup = process.memory_cgroup().map_err(FaultError::Cgroup)?;
                let mut limit =
                    Limit::memory(cgroup, 0, *bytes).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                let started = process.start_again().await;
                limit.pid = process.pid().unwrap_or(0);
                let setting = limit.setting();
                let check = match started {
                    Ok(()) => Check::new(
                        limit.holds(),
                        format!("restarted into {setting} as pid {} in {}", limit.pid, limit.dir.display()),
                    ),
                    Err(ProcessError::ExitedEarly { status, .. }) => {
                        let (_, oom) = limit.memory_events().unwrap_or((0, 0));
                        Check::new(
                            oom > 0,
                            format!(
                                "restarted into {setting}: it exited while starting ({status}), {}",
                                limit.effect()
                            ),
                        )
                    }
                    Err(e) => Check::new(false, format!("restarted into {setting}: {e}")),
                };
                Ok((Undo::Cgroup(limit), check))
            }
        }
    }

    /// Saves the provider's behaviour, applies `update`, and checks it in `GET /control`.
    /// `partition` (containers only): off the run's network, or from one peer through its proxy.
    async fn partition(
        &self,
        testbed: &mut Testbed,
        target: Target,
        from: Option<Target>,
    ) -> Result<(Undo, Check), FaultError> {
        let Some(network) = testbed.network().map(str::to_string) else {
            return Err(FaultError::OtherRuntime(format!(
                "partition of {target}: on processes every connection comes from 127.0.0.1, so nothing \
                 cuts one component's links alone; partition runs on containers (--runtime containers)"
            )));
        };
        if let Some(peer) = from {
            testbed.proxy(peer).ok_or(FaultError::NoProxy(peer))?;
        }
        let process = running(testbed, target)?;
        let probe = process.spec().probe.clone();
        let container = process.container().ok_or(FaultError::NotRunning { target })?;
        match from {
            Some(peer) => {
                let ip = container
                    .ip_on(&network)
                    .await
                    .map_err(|e| FaultError::Container(e.to_string()))?
                    .ok_or_else(|| FaultError::Container(format!("{target} has no address on {network}")))?;
                let proxy = testbed.proxy(peer).ok_or(FaultError::NoProxy(peer))?;
                // Held, not dropped: a partition loses packets, but TCP retransmits them once the
                // link is back, so a stream never loses bytes in its middle. (A blackhole here
                // made the processor's Redis connection answer its later requests with the replies
                // to earlier ones that never arrived: it never recovered, a fault no network makes.)
                let stall = Toxic::Latency { latency: MAX_FAULT_DURATION, jitter: Duration::ZERO };
                for &direction in Directions::Both.each() {
                    proxy.set(direction, ToxicSetting { toxic: stall, toxicity: 1.0, from: Some(ip) });
                }
                let set = Directions::Both
                    .each()
                    .iter()
                    .all(|&d| proxy.toxics(d).iter().any(|s| s.toxic == stall && s.from == Some(ip)));
                // It lands on something: the component talks to the peer from that address now.
                let open = proxy.open_from(ip);
                let check = Check::new(
                    set && open > 0,
                    format!(
                        "{peer}'s proxy holds everything from {ip} ({target} on {network}) and back: {open} open connection(s) from there"
                    ),
                );
                Ok((Undo::PeerPartition { peer, from: ip }, check))
            }
            None => {
                container.disconnect(&network).await.map_err(|e| FaultError::Container(e.to_string()))?;
                // Cut off, the lab cannot reach it through its published port either.
                let (took, answer) = timed(&probe, SILENCE_PROBE).await;
                let check = Check::new(
                    answer.is_err(),
                    format!(
                        "off {network}; its probe through the published port: {} after {took:?}",
                        describe(&answer)
                    ),
                );
                Ok((Undo::Reconnect, check))
            }
        }
    }

    async fn payment_fault(&self, testbed: &Testbed, update: Value) -> Result<(Undo, Check), FaultError> {
        let url = testbed.payment_url().ok_or(FaultError::NotRunning { target: Target::Payment })?;
        let before = self.payment_control(&url, None).await?;
        let after = self.payment_control(&url, Some(&update)).await?;
        let now = self.payment_control(&url, None).await?;
        let took = update.as_object().into_iter().flatten().all(|(k, v)| now.get(k) == Some(v));
        let check = Check::new(took && now == after, format!("GET /control: {now}"));
        Ok((Undo::Payment(before), check))
    }

    /// `GET /control`, or `PUT /control` with `body`; the behaviour it answers.
    async fn payment_control(&self, base: &str, body: Option<&Value>) -> Result<Value, FaultError> {
        let url = format!("{base}/control");
        let request = match body {
            Some(body) => self.http.put(&url).json(body),
            None => self.http.get(&url),
        };
        let response = request.send().await.map_err(|e| FaultError::Payment(format!("{url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| FaultError::Payment(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(FaultError::Payment(format!("{url} answered {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| FaultError::Payment(format!("{url}: {e}: {text}")))
    }

    /// Undoes a fault; returns the undo step's own check, and whether service through the
    /// client path should be checked next (done by the caller, without the testbed lock).
    async fn undo(&self, testbed: &mut Testbed, target: Target, undo: &Undo) -> Result<(Check, bool), FaultError> {
        match undo {
            Undo::Nothing => Ok((Check::new(true, "nothing to undo"), false)),
            Undo::StartAgain => {
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                process.start_again().await?;
                let pid = process.pid().unwrap_or(0);
                Ok((Check::new(pid != 0, format!("started again as pid {pid}")), true))
            }
            Undo::Resume => {
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                process.resume()?;
                let running = wait_for(Duration::from_secs(1), || !process.paused().0).await;
                let observed = process.paused().1;
                Ok((Check::new(running, format!("resumed ({observed})")), true))
            }
            Undo::Reconnect => {
                let network = testbed.network().ok_or(FaultError::NotRunning { target })?.to_string();
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                let container = process.container().ok_or(FaultError::NotRunning { target })?;
                container.connect(&network).await.map_err(|e| FaultError::Container(e.to_string()))?;
                let probe = process.spec().probe.clone();
                let back = wait_for_probe(&probe, Duration::from_secs(10)).await;
                Ok((Check::new(back.is_ok(), format!("back on {network}; its probe: {}", describe(&back))), true))
            }
            Undo::PeerPartition { peer, from } => {
                let proxy = testbed.proxy(*peer).ok_or(FaultError::NoProxy(*peer))?;
                for &direction in Directions::Both.each() {
                    proxy.remove_from(direction, "latency", Some(*from));
                }
                let gone = Directions::Both
                    .each()
                    .iter()
                    .all(|&d| proxy.toxics(d).iter().all(|s| !(s.toxic.name() == "latency" && s.from == Some(*from))));
                // What it held goes on its way now.
                Ok((Check::new(gone, format!("{peer}'s proxy passes {from} ({target}) again")), true))
            }
            Undo::Proxy { directions, name } if matches!(target, Target::RedisLink(_)) => {
                let (proxies, from) = testbed.link(target).ok_or(FaultError::NoProxy(target))?;
                for proxy in &proxies {
                    for &direction in directions.each() {
                        proxy.remove_from(direction, name, Some(from));
                    }
                }
                let gone = proxies.iter().all(|p| {
                    directions
                        .each()
                        .iter()
                        .all(|&d| p.toxics(d).iter().all(|s| !(s.toxic.name() == *name && s.from == Some(from))))
                });
                Ok((Check::new(gone, format!("{name} for {from} removed from every Redis proxy")), false))
            }
            Undo::Proxy { directions, name } => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                for &direction in directions.each() {
                    proxy.remove(direction, name);
                }
                let gone = directions.each().iter().all(|&d| proxy.toxics(d).iter().all(|s| s.toxic.name() != *name));
                Ok((Check::new(gone, format!("{name} removed from the proxy")), true))
            }
            Undo::ProxyUp => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                proxy.set_down(false);
                Ok((Check::new(!proxy.is_down(), "proxy up"), true))
            }
            Undo::Payment(before) => {
                let url = testbed.payment_url().ok_or(FaultError::NotRunning { target })?;
                let now = self.payment_control(&url, Some(before)).await?;
                Ok((Check::new(&now == before, format!("GET /control: {now}")), false))
            }
            Undo::RedisUnpause => {
                let addr = testbed.redis_direct_addr();
                // Bounded by the pause itself, which Redis ends on time.
                let answer =
                    redis_command(addr, &["CLIENT", "UNPAUSE"], MAX_FAULT_DURATION).await.map_err(FaultError::Redis)?;
                Ok((Check::new(answer.starts_with("+OK"), format!("CLIENT UNPAUSE: {answer}")), true))
            }
            Undo::Cgroup(limit) => {
                let (bit, effect) = (limit.bit(), limit.effect());
                let released = limit.release();
                if let Some(process) = testbed.process(target) {
                    process.enter_on_start(limit.dir.join("cgroup.procs"), false);
                }
                let mut observed = match &released {
                    Ok(()) if limit.home.is_some() => {
                        format!("{effect}; pid {} out of the limit, {} removed", limit.pid, limit.dir.display())
                    }
                    Ok(()) => format!("{effect}; limit lifted from {}", limit.dir.display()),
                    Err(e) => format!("{effect}; {e}"),
                };
                if limit.controller == Controller::Memory && !pid_alive(limit.pid) {
                    // The OOM killer took it: started again, as a kill's heal does.
                    let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                    process.start_again().await?;
                    observed.push_str(&format!("; OOM-killed, started again as pid {}", process.pid().unwrap_or(0)));
                }
                if !bit {
                    observed.push_str(" — the limit never bit: the fault did not land (was the process idle?)");
                }
                Ok((Check::new(released.is_ok() && bit, observed), true))
            }
            Undo::RedisBack { restore } => {
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                process.start_again().await?;
                let mut observed = format!("started empty as pid {}", process.pid().unwrap_or(0));
                if let Some(path) = restore {
                    let output = tokio::time::timeout(
                        RESTORE_TIMEOUT,
                        tokio::process::Command::new(testbed.flashsale_bin())
                            .arg("restore")
                            .arg(path)
                            .envs(testbed.admin_env())
                            .stdin(std::process::Stdio::null())
                            .kill_on_drop(true)
                            .output(),
                    )
                    .await
                    .map_err(|_| FaultError::Redis(format!("flashsale restore: no end within {RESTORE_TIMEOUT:?}")))?
                    .map_err(|e| FaultError::Redis(format!("flashsale restore: {e}")))?;
                    if !output.status.success() {
                        return Err(FaultError::Redis(format!(
                            "flashsale restore {}: {}",
                            path.display(),
                            String::from_utf8_lossy(&output.stderr).trim()
                        )));
                    }
                    observed.push_str(&format!("; restored {}", path.display()));
                }
                let keys = redis_command(testbed.redis_direct_addr(), &["DBSIZE"], CONTROL_TIMEOUT)
                    .await
                    .map_err(FaultError::Redis)?;
                let keys: u64 = keys.trim_start_matches(':').parse().unwrap_or(u64::MAX);
                let expected = if restore.is_some() { keys > 0 && keys != u64::MAX } else { keys == 0 };
                Ok((Check::new(expected, format!("{observed}; {keys} keys")), true))
            }
        }
    }
}

/// A resource fault applied: the kernel holds the process in the cgroup with the limit.
/// Whether it bit (throttled, limit reached) is judged when it heals.
fn hold(limit: Limit) -> (Undo, Check) {
    let observed = format!("pid {} in {} at {}", limit.pid, limit.dir.display(), limit.setting());
    (Undo::Cgroup(limit.clone()), Check::new(limit.holds(), observed))
}

fn running(testbed: &mut Testbed, target: Target) -> Result<&mut crate::Supervised, FaultError> {
    let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
    if !process.is_running() {
        return Err(FaultError::NotRunning { target });
    }
    Ok(process)
}

fn client_probe(testbed: &Testbed, target: Target) -> Result<Probe, FaultError> {
    testbed.client_probe(target).ok_or(FaultError::NotRunning { target })
}

/// One probe, timed.
async fn timed(probe: &Probe, limit: Duration) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let answer = probe.check(limit).await;
    (started.elapsed(), answer)
}

fn describe(answer: &Result<impl std::fmt::Debug, String>) -> String {
    match answer {
        Ok(_) => "answered".into(),
        Err(e) => format!("failed ({e})"),
    }
}

/// Whether a network fault shows on a probe through the proxy.
async fn check_network(
    testbed: &Testbed,
    target: Target,
    toxic: &Toxic,
    directions: Directions,
    toxicity: f64,
) -> Check {
    let Ok(probe) = client_probe(testbed, target) else {
        return Check::new(false, format!("{target} is not running"));
    };
    let in_force = testbed.proxy(target).is_some_and(|proxy| {
        directions.each().iter().all(|&d| proxy.toxics(d).iter().any(|s| s.toxic == *toxic && s.toxicity == toxicity))
    });
    let legs = directions.each().len() as u32;
    let (expected_min, limit) = match toxic {
        Toxic::Latency { latency, jitter } => (*latency * legs, (*latency + *jitter) * legs + PROBE_SLACK),
        Toxic::Blackhole | Toxic::ResetPeer => (Duration::ZERO, SILENCE_PROBE),
        Toxic::Slicer { delay, .. } => (Duration::ZERO, *delay * 64 + PROBE_SLACK),
        Toxic::SlowClose { .. } | Toxic::Bandwidth { .. } | Toxic::LimitData { .. } => (Duration::ZERO, PROBE_SLACK),
    };
    let (took, answer) = timed(&probe, limit).await;
    let seen = format!("probe through the proxy {} after {took:?}", describe(&answer));
    if toxicity < 1.0 {
        // The probe's connection may be spared: the proxy's settings are the check.
        return Check::new(in_force, format!("set on {:.0}% of connections; {seen}", toxicity * 100.0));
    }
    match toxic {
        Toxic::Latency { .. } => {
            let ok = in_force && answer.is_ok() && took.as_secs_f64() >= expected_min.as_secs_f64() * 0.9;
            Check::new(ok, format!("{seen} (expected ≥ {expected_min:?})"))
        }
        Toxic::Blackhole | Toxic::ResetPeer => Check::new(in_force && answer.is_err(), seen),
        _ => Check::new(in_force, seen),
    }
}

/// Service through the client's path is back: the probe through the proxy answers (retried,
/// bounded).
async fn service_back(probe: Option<Probe>) -> Check {
    let Some(probe) = probe else {
        return Check::new(false, "not running".to_string());
    };
    let started = Instant::now();
    loop {
        let (took, answer) = timed(&probe, Duration::from_secs(1)).await;
        if answer.is_ok() {
            return Check::new(true, format!("a probe through the client path answered in {took:?}"));
        }
        if started.elapsed() >= HEAL_CHECK_LIMIT {
            return Check::new(
                false,
                format!("no answer through the client path for {HEAL_CHECK_LIMIT:?}: {}", describe(&answer)),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Repeats `probe` until it answers or `limit` passes; the last answer.
async fn wait_for_probe(probe: &Probe, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let answer = probe.check(Duration::from_secs(1)).await;
        if answer.is_ok() || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The process state letter from `/proc/PID/stat` (`R`, `S`, `T` stopped, `Z` zombie...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Whether `pid` is a live (not zombie) process.
fn pid_alive(pid: u32) -> bool {
    pid != 0 && !matches!(process_state(pid), None | Some('Z') | Some('X'))
}

/// Deletes Redis' data files (AOF directory, RDB) in `dir`, keeping its log. Returns how many
/// entries went.
fn wipe_redis_data(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

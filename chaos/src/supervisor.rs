//! The [`Supervisor`]: Kubernetes-style auto-recovery for a testbed's services — the gateways,
//! the processors and the payment provider.
//!
//! Each service gets, as a pod would (the monitoring article's §6 settings are the defaults):
//! - **restart on exit**: a process that exited (crashed, was killed, or the OOM killer took
//!   it) is started again — the first time at once, then after an exponential back-off
//!   (`back_off`, doubling, at most `back_off_max`: Kubernetes' CrashLoopBackOff), reset once it
//!   has run `back_off_reset` without trouble;
//! - a **liveness probe**: `GET /healthz` every `liveness_period` once `liveness_initial_delay`
//!   has passed since it started, each bounded by `probe_timeout`; after `failure_threshold`
//!   failures in a row it is killed and restarted (a frozen or stuck process);
//! - a **readiness probe**: `GET /readyz` every `readiness_period`; a gateway that is not ready
//!   is taken out of the front proxy's rotation (the others carry the load) and put back when
//!   it is ready again.
//!
//! A component a fault holds down on purpose (`kill … for 30s`: a node that is gone) is left
//! alone until the fault heals. Every probe failure, restart and readiness change is an event
//! in `events.jsonl` (`supervisor_probe`, `supervisor_restart`, `supervisor_ready`). Redis and
//! the broker are not supervised: the drills that lose them say how they come back.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::events::EventLog;
use crate::faults::{duration_text, Target};
use crate::injector::Injector;
use crate::probe::Probe;
use crate::testbed::Testbed;

/// How often a process is checked for having exited.
const EXIT_CHECK: Duration = Duration::from_millis(100);

/// The probes' and restarts' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Between liveness probes.
    #[serde(with = "duration_text")]
    pub liveness_period: Duration,
    /// After a start, before the first liveness probe.
    #[serde(with = "duration_text")]
    pub liveness_initial_delay: Duration,
    /// Between readiness probes.
    #[serde(with = "duration_text")]
    pub readiness_period: Duration,
    /// Each probe's own limit.
    #[serde(with = "duration_text")]
    pub probe_timeout: Duration,
    /// Liveness failures in a row that restart the process.
    pub failure_threshold: u32,
    /// The wait before the second restart in a row; doubled for each one after.
    #[serde(with = "duration_text")]
    pub back_off: Duration,
    /// The longest wait.
    #[serde(with = "duration_text")]
    pub back_off_max: Duration,
    /// Running this long without a restart resets the back-off.
    #[serde(with = "duration_text")]
    pub back_off_reset: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            liveness_period: Duration::from_secs(10),
            liveness_initial_delay: Duration::from_secs(30),
            readiness_period: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(1),
            failure_threshold: 3,
            back_off: Duration::from_secs(10),
            back_off_max: Duration::from_secs(300),
            back_off_reset: Duration::from_secs(600),
        }
    }
}

impl SupervisorConfig {
    /// Every period and wait multiplied by `factor` (a drill's `--scale`); the probe timeout
    /// stays (it is about the network, not the drill's clock).
    pub fn scaled(&self, factor: f64) -> SupervisorConfig {
        let s = |d: Duration| d.mul_f64(factor);
        SupervisorConfig {
            liveness_period: s(self.liveness_period),
            liveness_initial_delay: s(self.liveness_initial_delay),
            readiness_period: s(self.readiness_period),
            probe_timeout: self.probe_timeout,
            failure_threshold: self.failure_threshold,
            back_off: s(self.back_off),
            back_off_max: s(self.back_off_max),
            back_off_reset: s(self.back_off_reset),
        }
    }

    /// What is wrong with it, if anything.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("liveness_period", self.liveness_period),
            ("readiness_period", self.readiness_period),
            ("probe_timeout", self.probe_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(format!("{name}: {d:?} is below 100ms"));
            }
        }
        if self.failure_threshold == 0 {
            return Err("failure_threshold: at least 1".into());
        }
        if self.back_off_max < self.back_off {
            return Err(format!("back_off_max: {:?} is below back_off {:?}", self.back_off_max, self.back_off));
        }
        Ok(())
    }

    /// The wait before restart number `n` in a row (1 = the first): none, then `back_off`,
    /// doubling, at most `back_off_max`.
    pub fn delay(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let doublings = (n - 2).min(30);
        self.back_off.saturating_mul(1 << doublings).min(self.back_off_max)
    }
}

/// The supervisor's tasks, one per service. Stop it before stopping the testbed, or it starts
/// again what the testbed stops.
#[derive(Debug)]
pub struct Supervisor {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Supervisor {
    /// Supervises every gateway, processor and the payment provider of `testbed`. Faults that
    /// hold a component down are read from `injector`.
    pub async fn start(
        testbed: Arc<AsyncMutex<Testbed>>,
        injector: Injector,
        events: EventLog,
        config: SupervisorConfig,
    ) -> Supervisor {
        let targets: Vec<Target> = testbed
            .lock()
            .await
            .targets()
            .into_iter()
            .filter(|t| matches!(t, Target::Gateway(_) | Target::Processor(_) | Target::Payment))
            .collect();
        events.record("supervisor_start", json!({"components": targets, "config": config}));
        let tasks = targets
            .into_iter()
            .map(|target| {
                let watch = Watch {
                    target,
                    testbed: testbed.clone(),
                    injector: injector.clone(),
                    events: events.clone(),
                    config: config.clone(),
                };
                tokio::spawn(watch.run())
            })
            .collect();
        Supervisor { tasks }
    }

    /// Stops supervising (nothing is restarted from now on).
    pub fn stop(self) {}
}

/// One service under watch.
struct Watch {
    target: Target,
    testbed: Arc<AsyncMutex<Testbed>>,
    injector: Injector,
    events: EventLog,
    config: SupervisorConfig,
}

/// Why a process is restarted.
#[derive(Debug, Clone, Copy)]
enum Why {
    Exited,
    Liveness,
}

impl Why {
    fn name(self) -> &'static str {
        match self {
            Why::Exited => "exited",
            Why::Liveness => "liveness",
        }
    }
}

impl Watch {
    async fn run(self) {
        let config = &self.config;
        let mut started = Instant::now();
        let mut next_liveness = started + config.liveness_initial_delay;
        let mut next_readiness = started + config.readiness_period;
        let mut failures = 0u32;
        let mut ready = true;
        // Restarts in a row (since the back-off was last reset) and when the last one was.
        let mut restarts = 0u32;
        loop {
            tokio::time::sleep(EXIT_CHECK).await;
            let now = Instant::now();
            if restarts > 0 && now.duration_since(started) >= config.back_off_reset {
                restarts = 0;
            }
            if self.injector.holds_down(self.target) {
                if ready {
                    ready = false;
                    self.set_ready(false, "held down by a fault").await;
                }
                continue;
            }
            let (running, addr) = {
                let mut testbed = self.testbed.lock().await;
                let Some(process) = testbed.process(self.target) else { return };
                (process.is_running(), process.addr())
            };
            let why = if !running {
                Some(Why::Exited)
            } else if now >= next_liveness {
                next_liveness = now + config.liveness_period;
                match Probe::HttpOk(addr, "/healthz").check(config.probe_timeout).await {
                    Ok(()) => {
                        failures = 0;
                        None
                    }
                    Err(error) => {
                        failures += 1;
                        self.events.record(
                            "supervisor_probe",
                            json!({"component": self.target, "probe": "liveness", "failures": failures, "error": error}),
                        );
                        (failures >= config.failure_threshold).then_some(Why::Liveness)
                    }
                }
            } else {
                None
            };
            if let Some(why) = why {
                if ready {
                    ready = false;
                    self.set_ready(false, why.name()).await;
                }
                restarts += 1;
                let delay = config.delay(restarts);
                self.restart(why, restarts, delay).await;
                failures = 0;
                started = Instant::now();
                next_liveness = started + config.liveness_initial_delay;
                next_readiness = started;
                continue;
            }
            if now >= next_readiness {
                next_readiness = now + config.readiness_period;
                let answer = Probe::HttpOk(addr, "/readyz").check(config.probe_timeout).await;
                if answer.is_ok() != ready {
                    ready = answer.is_ok();
                    let error = answer.err().unwrap_or_default();
                    self.set_ready(ready, &error).await;
                }
            }
        }
    }

    /// Waits out the back-off, then starts the process again (killing it first when it runs).
    async fn restart(&self, why: Why, n: u32, delay: Duration) {
        let exit = {
            let mut testbed = self.testbed.lock().await;
            let Some(process) = testbed.process(self.target) else { return };
            match why {
                Why::Liveness => process.kill().await.ok().flatten().map(|s| s.to_string()),
                Why::Exited => None,
            }
        };
        tokio::time::sleep(delay).await;
        if self.injector.holds_down(self.target) {
            return;
        }
        let mut testbed = self.testbed.lock().await;
        let Some(process) = testbed.process(self.target) else { return };
        if process.is_running() {
            // Started meanwhile by the lab (a fault's heal): nothing to do.
            return;
        }
        let result = process.start_again().await;
        let pid = process.pid();
        self.events.record(
            "supervisor_restart",
            json!({
                "component": self.target,
                "reason": why.name(),
                "killed": exit,
                "restarts": n,
                "back_off_ms": delay.as_millis() as u64,
                "pid": pid,
                "ok": result.is_ok(),
                "error": result.err().map(|e| e.to_string()),
            }),
        );
    }

    /// Records a readiness change; a gateway's changes the front proxy's rotation.
    async fn set_ready(&self, ready: bool, why: &str) {
        self.events.record("supervisor_ready", json!({"component": self.target, "ready": ready, "why": why}));
        if let Target::Gateway(index) = self.target {
            self.testbed.lock().await.set_gateway_in_rotation(index, ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_is_none_then_doubles_up_to_its_cap() {
        let config = SupervisorConfig::default();
        let delays: Vec<u64> = (1..=8).map(|n| config.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(config.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn scaling_shrinks_the_clock_but_not_the_probe_timeout() {
        let config = SupervisorConfig::default().scaled(0.1);
        assert_eq!(config.liveness_period, Duration::from_secs(1));
        assert_eq!(config.back_off, Duration::from_secs(1));
        assert_eq!(config.probe_timeout, Duration::from_secs(1));
        assert!(config.validate().is_ok());
        let bad = SupervisorConfig { failure_threshold: 0, ..SupervisorConfig::default() };
        assert!(bad.validate().unwrap_err().contains("failure_threshold"));
        let bad = SupervisorConfig { back_off_max: Duration::from_secs(1), ..SupervisorConfig::default() };
        assert!(bad.validate().unwrap_err().contains("back_off_max"));
    }
}

//! Resource faults on a component in a container: the engine's limits (`docker update`) on the
//! container's own cgroups, read back from the kernel as the lab's own limits are
//! ([`Limit::engine`]). The engine keeps them across a restart of the container, as the lab
//! starts a restarted process inside its limit.
//!
//! - `cpu`: `docker update --cpu-period --cpu-quota`; lifted with `--cpu-quota -1`.
//! - `memory`: `docker update --memory B --memory-swap B` (swap included, as on processes);
//!   with `restart`, the container is stopped, limited, and started again into the limit.
//!   Lifted to [`MEMORY_LIFTED`] (1 TiB): Docker cannot take a memory limit back. An OOM kill
//!   is the engine's `State.OOMKilled` (the container's cgroup goes with its process).

use super::*;
use crate::containers::MEMORY_LIFTED;

/// Docker's least memory limit (6 MB; `docker update` refuses less).
const ENGINE_MIN_MEMORY: u64 = 6 * 1024 * 1024;

impl Inner {
    pub(super) async fn engine_cpu(
        &self,
        testbed: &mut Testbed,
        target: Target,
        cores: f64,
    ) -> Result<(Undo, Check), FaultError> {
        let process = running(testbed, target)?;
        let quota = crate::cgroups::cpu_quota(cores).map_err(FaultError::Cgroup)?;
        let pid = process.pid().unwrap_or(0);
        let limit = Limit::engine(Controller::Cpu, pid).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
        let container = process.container().ok_or(FaultError::NotRunning { target })?;
        container.set_cpu_quota(Some(quota)).await.map_err(|e| FaultError::Container(e.to_string()))?;
        let observed = format!(
            "docker update --cpu-period {} --cpu-quota {}: pid {pid} in {} at {}",
            quota.1,
            quota.0,
            limit.dir.display(),
            limit.setting()
        );
        let check = Check::new(limit.holds(), observed);
        Ok((Undo::Engine(limit), check))
    }

    pub(super) async fn engine_memory(
        &self,
        testbed: &mut Testbed,
        target: Target,
        bytes: u64,
        restart: bool,
    ) -> Result<(Undo, Check), FaultError> {
        if bytes < ENGINE_MIN_MEMORY {
            return Err(FaultError::Cgroup(format!(
                "{:.1} MiB on a container: the engine's least memory limit is 6 MiB (Docker refuses less)",
                bytes as f64 / 1048576.0
            )));
        }
        let process = running(testbed, target)?;
        let engine = |e: crate::containers::images::ImageError| FaultError::Container(e.to_string());
        if !restart {
            let pid = process.pid().unwrap_or(0);
            let limit =
                Limit::engine(Controller::Memory, pid).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
            let container = process.container().ok_or(FaultError::NotRunning { target })?;
            container.set_memory_limit(Some(bytes)).await.map_err(engine)?;
            let observed =
                format!("docker update --memory {bytes}: pid {pid} in {} at {}", limit.dir.display(), limit.setting());
            let check = Check::new(limit_holds_bytes(&limit, bytes), observed);
            return Ok((Undo::Engine(limit), check));
        }
        // Replaced like a pod whose limit was lowered: stopped (it finishes what it has in
        // hand), limited, started again inside the limit.
        process.stop().await?;
        let container = process.container().ok_or(FaultError::NotRunning { target })?;
        if let Err(e) = container.set_memory_limit(Some(bytes)).await {
            // Refused: nothing is left stopped behind the refusal.
            process.start_again().await?;
            return Err(engine(e));
        }
        let started = process.start_again().await;
        let pid = process.pid().unwrap_or(0);
        let container = process.container().ok_or(FaultError::NotRunning { target })?;
        let setting = format!("{:.1} MiB", bytes as f64 / 1048576.0);
        match started {
            Ok(()) => {
                let limit =
                    Limit::engine(Controller::Memory, pid).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                let observed = format!("restarted into {} as pid {pid} in {}", limit.setting(), limit.dir.display());
                let check = Check::new(limit_holds_bytes(&limit, bytes), observed);
                Ok((Undo::Engine(limit), check))
            }
            Err(e) => {
                // It died starting: the OOM killer's work is the engine's to say.
                let oom = container.oom_killed().await.unwrap_or(false);
                let observed = format!(
                    "restarted into {setting}: it did not start ({e}); {}",
                    if oom { "OOM-killed (State.OOMKilled)" } else { "not OOM-killed" }
                );
                Ok((Undo::EngineStopped, Check::new(oom, observed)))
            }
        }
    }

    /// Lifts the engine's limit: the quota gone, or the memory limit at [`MEMORY_LIFTED`]; a
    /// component the OOM killer took is started again. Checked on the kernel, and on whether
    /// the limit ever bit.
    pub(super) async fn engine_lift(
        &self,
        testbed: &mut Testbed,
        target: Target,
        limit: Option<&Limit>,
    ) -> Result<Check, FaultError> {
        let effect = limit.map(Limit::effect);
        let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
        let container = process.container().ok_or(FaultError::NotRunning { target })?;
        let engine = |e: crate::containers::images::ImageError| FaultError::Container(e.to_string());
        let cpu = limit.is_some_and(|l| l.controller == Controller::Cpu);
        if cpu {
            container.set_cpu_quota(None).await.map_err(engine)?;
        } else {
            container.set_memory_limit(None).await.map_err(engine)?;
        }
        let oom = !cpu && container.oom_killed().await.unwrap_or(false);
        let bit = limit.is_some_and(Limit::bit) || oom;
        let mut observed = effect.unwrap_or_else(|| "it never started inside the limit".into());
        if oom {
            observed.push_str("; OOM-killed (State.OOMKilled)");
        }
        if !process.is_running() {
            process.start_again().await?;
            observed.push_str(&format!("; started again as pid {}", process.pid().unwrap_or(0)));
        }
        // Read on the container's cgroup now: its process may be another since a restart.
        let pid = process.pid().unwrap_or(0);
        let now = Limit::engine(if cpu { Controller::Cpu } else { Controller::Memory }, pid);
        let lifted = match &now {
            Ok(now) if cpu => !now.limited(),
            Ok(now) => now.limit_bytes().is_some_and(|b| b >= MEMORY_LIFTED),
            Err(_) => false,
        };
        match &now {
            Ok(now) if cpu => observed.push_str(&format!("; docker update --cpu-quota -1: {}", now.setting())),
            Ok(now) => observed.push_str(&format!("; limit lifted to {} (none in effect)", now.setting())),
            Err(e) => observed.push_str(&format!("; the limit now unreadable: {e}")),
        }
        if !bit {
            observed.push_str(" — the limit never bit: the fault did not land (was the process idle?)");
        }
        Ok(Check::new(lifted && bit, observed))
    }
}

/// The kernel has the memory limit asked for on the cgroup.
fn limit_holds_bytes(limit: &Limit, bytes: u64) -> bool {
    limit.holds() && limit.limit_bytes().is_some_and(|b| b <= bytes)
}

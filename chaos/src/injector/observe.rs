//! What the injector looks at: probes, timed and described; a process's state; a resource
//! fault's hold; Redis' data files.

use super::*;

/// A resource fault applied: the kernel holds the process in the cgroup with the limit.
/// Whether it bit (throttled, limit reached) is judged when it heals.
pub(super) fn hold(limit: Limit) -> (Undo, Check) {
    let observed = format!("pid {} in {} at {}", limit.pid, limit.dir.display(), limit.setting());
    (Undo::Cgroup(limit.clone()), Check::new(limit.holds(), observed))
}

pub(super) fn running(testbed: &mut Testbed, target: Target) -> Result<&mut crate::Supervised, FaultError> {
    let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
    if !process.is_running() {
        return Err(FaultError::NotRunning { target });
    }
    Ok(process)
}

pub(super) fn client_probe(testbed: &Testbed, target: Target) -> Result<Probe, FaultError> {
    testbed.client_probe(target).ok_or(FaultError::NotRunning { target })
}

/// One probe, timed.
pub(super) async fn timed(probe: &Probe, limit: Duration) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let answer = probe.check(limit).await;
    (started.elapsed(), answer)
}

pub(super) fn describe(answer: &Result<impl std::fmt::Debug, String>) -> String {
    match answer {
        Ok(_) => "answered".into(),
        Err(e) => format!("failed ({e})"),
    }
}

/// Whether a network fault shows on a probe through the proxy.
pub(super) async fn check_network(
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
pub(super) async fn service_back(probe: Option<Probe>) -> Check {
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
pub(super) async fn wait_for_probe(probe: &Probe, limit: Duration) -> Result<(), String> {
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
pub(super) async fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
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

pub(super) use crate::process::pid_alive;

/// Deletes Redis' data files (AOF directory, RDB) in `dir`, keeping its log. Returns how many
/// entries went.
pub(super) fn wipe_redis_data(dir: &std::path::Path) -> std::io::Result<usize> {
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

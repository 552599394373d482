//! A component of the testbed running in a container ([`Hosted`]), as a
//! [`crate::process::Supervised`] runs it: its process is seen from the host (its pid), signalled
//! from the host, frozen by its container's cgroup freezer, killed, stopped and started again by
//! the engine — the same container, data and published port.

use std::sync::atomic::{AtomicBool, Ordering};

use super::images::ImageError;
use super::runtime::Container;
use crate::process::pid_alive;

/// A running component's container and what the lab knows of its process. See the module docs.
#[derive(Debug)]
pub struct Hosted {
    container: Container,
    /// The host's pid of its process while it runs (from the engine, at each start).
    pid: Option<u32>,
    /// Frozen by [`Hosted::freeze`] (a kill or stop thaws it first: a frozen process does not
    /// die until thawed).
    frozen: AtomicBool,
}

impl Hosted {
    /// A container that runs now (its pid asked of the engine).
    pub async fn new(container: Container) -> Result<Hosted, ImageError> {
        let pid = container.host_pid().await?;
        Ok(Hosted { container, pid, frozen: AtomicBool::new(false) })
    }

    pub fn container(&self) -> &Container {
        &self.container
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Whether its process is alive (a frozen one is).
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }

    /// Freezes (`true`) or thaws its container's processes with the cgroup freezer, as `docker
    /// pause` does; returns what the freezer says now.
    pub fn freeze(&self, frozen: bool) -> Result<String, String> {
        let pid = self.pid.ok_or_else(|| format!("{}: not running", self.container.name()))?;
        let state = freeze(pid, frozen)?;
        self.frozen.store(frozen, Ordering::SeqCst);
        Ok(state)
    }

    /// The freezer's state of its container (`FROZEN`, `THAWED`…), or why it cannot be read.
    pub fn freezer_state(&self) -> Result<String, String> {
        let pid = self.pid.ok_or_else(|| format!("{}: not running", self.container.name()))?;
        let (path, v2) = freezer_of(pid)?;
        read_freezer(&path, v2)
    }

    fn thaw(&self) {
        if self.frozen.swap(false, Ordering::SeqCst) {
            if let Some(pid) = self.pid {
                let _ = freeze(pid, false);
            }
        }
    }

    /// SIGKILL of its process (`docker kill`), waiting until it is gone (bounded).
    pub async fn kill(&mut self) -> Result<(), ImageError> {
        self.thaw();
        self.container.kill().await?;
        self.wait_gone().await;
        Ok(())
    }

    /// SIGTERM, SIGKILL after `grace` (`docker stop`).
    pub async fn stop(&mut self, grace: std::time::Duration) -> Result<(), ImageError> {
        self.thaw();
        self.container.stop(grace).await?;
        self.wait_gone().await;
        // Its log, up to now, where the process runtime's is (also written when it is removed).
        self.container.save_log();
        Ok(())
    }

    /// `docker start` of the same container; its new pid is asked of the engine.
    pub async fn start(&mut self) -> Result<(), ImageError> {
        self.container.start().await?;
        self.pid = self.container.host_pid().await?;
        Ok(())
    }

    async fn wait_gone(&mut self) {
        if let Some(pid) = self.pid {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while pid_alive(pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        self.pid = None;
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.container.log_tail()
    }
}

/// The freezer of `pid`'s cgroup: (its directory, whether it is cgroup v2's `cgroup.freeze`).
fn freezer_of(pid: u32) -> Result<(std::path::PathBuf, bool), String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| format!("pid {pid}: {e}"))?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.split(',').any(|c| c == "freezer") {
            return Ok((std::path::Path::new("/sys/fs/cgroup/freezer").join(path.trim_start_matches('/')), false));
        }
        if controllers.is_empty() && cgroups.lines().count() == 1 {
            return Ok((std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')), true));
        }
    }
    Err(format!("pid {pid}: no freezer cgroup in /proc/{pid}/cgroup"))
}

fn read_freezer(dir: &std::path::Path, v2: bool) -> Result<String, String> {
    let file = dir.join(if v2 { "cgroup.freeze" } else { "freezer.state" });
    let state = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(match (v2, state.trim()) {
        (true, "1") => "FROZEN".into(),
        (true, _) => "THAWED".into(),
        (false, s) => s.to_string(),
    })
}

/// Writes the freezer of `pid`'s cgroup; returns its state after (bounded wait for `FROZEN`).
fn freeze(pid: u32, frozen: bool) -> Result<String, String> {
    let (dir, v2) = freezer_of(pid)?;
    let (file, value) = match (v2, frozen) {
        (true, true) => ("cgroup.freeze", "1"),
        (true, false) => ("cgroup.freeze", "0"),
        (false, true) => ("freezer.state", "FROZEN"),
        (false, false) => ("freezer.state", "THAWED"),
    };
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| format!("{}: {e}", path.display()))?;
    // cgroup v1 goes through FREEZING; a one-process container is frozen within milliseconds.
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let mut state = read_freezer(&dir, v2)?;
    for _ in 0..100 {
        if state == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        state = read_freezer(&dir, v2)?;
    }
    Ok(state)
}

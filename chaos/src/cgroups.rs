//! Resource faults through cgroup v1: a CPU quota (the `cpu` controller: starvation) and a
//! memory limit (the `memory` controller: pressure, then the kernel's OOM killer) on one
//! process of the testbed.
//!
//! Each fault gets a cgroup of its own, a child of the one the process is in now (its "home",
//! from `/proc/PID/cgroup`), named `flashlab-<lab pid>-<n>`. The process is moved in when the
//! fault is applied and moved home when it heals; the cgroup is then removed. What the kernel
//! did is read back from the cgroup itself: `cpu.stat` (`nr_throttled`, `throttled_time`) and
//! `memory.failcnt` / `memory.oom_control` (`oom_kill`).
//!
//! In cgroup v1 a moved process's memory already charged stays with its old cgroup (this
//! kernel refuses `memory.move_charge_at_immigrate`): the limit bounds what it allocates from
//! then on — a process that grows past it meets the OOM killer.
//!
//! A lab killed with -9 cannot move anything home, but its processes die with it and their
//! cgroups are left empty: [`sweep_leftovers`] removes those of labs no longer alive, and the
//! testbed calls it when it starts. Where cgroup v1 is not mounted or not writable (a cgroup v2
//! host, a container without the controllers) the fault is refused with the reason — never
//! faked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where cgroup v1 controllers are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The CFS period of a quota, µs.
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel takes, µs.
const MIN_QUOTA_US: u64 = 1_000;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A cgroup v1 controller the lab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Cpu,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
        }
    }
}

/// A process held in a cgroup of its own, with a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub controller: Controller,
    /// The fault's cgroup directory.
    pub dir: PathBuf,
    /// The cgroup directory the process came from (and goes back to).
    pub home: PathBuf,
    pub pid: u32,
}

/// The cgroup (path under the controller's mount) `pid` is in, from `/proc/PID/cgroup`.
pub fn cgroup_of(pid: u32, controller: Controller) -> Result<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| format!("pid {pid}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == controller.name()).then(|| path.to_string())
        })
        .next()
        .ok_or_else(|| {
            format!(
                "pid {pid} is in no cgroup v1 {} hierarchy (a cgroup v2 host, or the controller is not mounted): resource faults need cgroup v1 {} at {ROOT}/{}",
                controller.name(),
                controller.name(),
                controller.name()
            )
        })
}

fn mount(controller: Controller) -> PathBuf {
    Path::new(ROOT).join(controller.name())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `key value` lines of a cgroup file.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Limit {
    /// Makes the fault's cgroup next to `pid`'s, sets it up with `setup`, moves `pid` in.
    fn hold(
        pid: u32,
        controller: Controller,
        setup: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<Limit, String> {
        let home_rel = cgroup_of(pid, controller)?;
        let home = mount(controller).join(home_rel.trim_start_matches('/'));
        if !home.join("cgroup.procs").is_file() {
            return Err(format!("{} is not a cgroup v1 directory here", home.display()));
        }
        let name = format!("flashlab-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = home.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("creating {}: {e} (cgroup v1 {} not writable?)", dir.display(), controller.name()))?;
        let limit = Limit { controller, dir, home, pid };
        let moved = setup(&limit.dir).and_then(|()| write(&limit.dir.join("cgroup.procs"), &pid.to_string()));
        if let Err(e) = moved {
            let _ = std::fs::remove_dir(&limit.dir);
            return Err(e);
        }
        Ok(limit)
    }

    /// A CPU quota of `cores` (e.g. 0.1: 10 ms of CPU every 100 ms) on `pid`.
    pub fn cpu(pid: u32, cores: f64) -> Result<Limit, String> {
        if !(cores > 0.0 && cores.is_finite()) {
            return Err(format!("{cores} cores: a positive share of a core, e.g. 0.1"));
        }
        let quota = ((cores * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US);
        Limit::hold(pid, Controller::Cpu, |dir| {
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
        })
    }

    /// A memory limit of `bytes` on what `pid` allocates from now on (swap included where the
    /// kernel accounts it).
    pub fn memory(pid: u32, bytes: u64) -> Result<Limit, String> {
        if bytes < 1024 * 1024 {
            return Err(format!("{bytes} bytes: at least 1 MiB"));
        }
        Limit::hold(pid, Controller::Memory, |dir| {
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.is_file() {
                write(&memsw, &bytes.to_string())?;
            }
            Ok(())
        })
    }

    /// Whether the process is in the fault's cgroup now.
    pub fn holds(&self) -> bool {
        read(&self.dir.join("cgroup.procs")).is_ok_and(|t| t.lines().any(|l| l.trim() == self.pid.to_string()))
    }

    /// The limit as the kernel has it: `0.10 cores` or `16.0 MiB`.
    pub fn setting(&self) -> String {
        match self.controller {
            Controller::Cpu => {
                let quota = read(&self.dir.join("cpu.cfs_quota_us")).ok().and_then(|t| t.trim().parse::<f64>().ok());
                let period = read(&self.dir.join("cpu.cfs_period_us")).ok().and_then(|t| t.trim().parse::<f64>().ok());
                match (quota, period) {
                    (Some(q), Some(p)) if p > 0.0 => format!("{:.2} cores", q / p),
                    _ => "quota unreadable".into(),
                }
            }
            Controller::Memory => read(&self.dir.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .map(|b| format!("{:.1} MiB", b / 1048576.0))
                .unwrap_or_else(|| "limit unreadable".into()),
        }
    }

    /// CPU: periods throttled and the time throttled (ms).
    pub fn throttled(&self) -> Option<(u64, f64)> {
        let text = read(&self.dir.join("cpu.stat")).ok()?;
        Some((field(&text, "nr_throttled")?, field(&text, "throttled_time")? as f64 / 1e6))
    }

    /// Memory: times the limit was hit (memory, or memory + swap where that is what bound),
    /// and processes the OOM killer killed in the cgroup.
    pub fn memory_events(&self) -> Option<(u64, u64)> {
        let count = |file: &str| read(&self.dir.join(file)).ok().and_then(|t| t.trim().parse::<u64>().ok());
        let failcnt = count("memory.failcnt")?.max(count("memory.memsw.failcnt").unwrap_or(0));
        let oom = field(&read(&self.dir.join("memory.oom_control")).ok()?, "oom_kill").unwrap_or(0);
        Some((failcnt, oom))
    }

    /// What the kernel did under the limit, for people.
    pub fn effect(&self) -> String {
        match self.controller {
            Controller::Cpu => match self.throttled() {
                Some((n, ms)) => format!("throttled {n} times, {ms:.0} ms"),
                None => "cpu.stat unreadable".into(),
            },
            Controller::Memory => match self.memory_events() {
                Some((fail, oom)) => format!("limit hit {fail} times, {oom} OOM kill(s)"),
                None => "memory counters unreadable".into(),
            },
        }
    }

    /// Whether the limit bit: throttled at least once, or the memory limit reached.
    pub fn bit(&self) -> bool {
        match self.controller {
            Controller::Cpu => self.throttled().is_some_and(|(n, _)| n > 0),
            Controller::Memory => self.memory_events().is_some_and(|(fail, oom)| fail > 0 || oom > 0),
        }
    }

    /// Moves the process home (when it still lives) and removes the cgroup. `Err`: what is
    /// left behind.
    pub fn release(&self) -> Result<(), String> {
        if self.holds() {
            write(&self.home.join("cgroup.procs"), &self.pid.to_string())?;
        }
        // Whatever the process started in the cgroup (nothing here) goes home too.
        if let Ok(text) = read(&self.dir.join("cgroup.procs")) {
            for pid in text.lines().filter(|l| !l.trim().is_empty()) {
                let _ = write(&self.home.join("cgroup.procs"), pid.trim());
            }
        }
        remove(&self.dir)
    }
}

/// `rmdir` a cgroup, retrying briefly while the kernel finishes moving its tasks out.
fn remove(dir: &Path) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(format!("removing {}: {last}", dir.display()))
}

/// Removes the fault cgroups (`flashlab-<pid>-<n>`) of labs that are no longer alive, beside
/// this process's own cgroups; returns what it removed.
pub fn sweep_leftovers() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for controller in [Controller::Cpu, Controller::Memory] {
        let Ok(own) = cgroup_of(std::process::id(), controller) else { continue };
        let parent = mount(controller).join(own.trim_start_matches('/'));
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(lab) = name.strip_prefix("flashlab-").and_then(|r| r.split('-').next()?.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{lab}")).exists() {
                continue;
            }
            if remove(&entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_cgroup_files() {
        let stat = "nr_periods 40\nnr_throttled 12\nthrottled_time 350000000\n";
        assert_eq!(field(stat, "nr_throttled"), Some(12));
        assert_eq!(field(stat, "throttled_time"), Some(350_000_000));
        assert_eq!(field(stat, "nr_throttle"), None);
        assert_eq!(field("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "oom_kill"), Some(1));
    }

    #[test]
    fn bad_limits_are_refused_before_anything_is_made() {
        assert!(Limit::cpu(std::process::id(), 0.0).unwrap_err().contains("positive share"));
        assert!(Limit::cpu(std::process::id(), f64::NAN).is_err());
        assert!(Limit::memory(std::process::id(), 4096).unwrap_err().contains("at least 1 MiB"));
    }
}

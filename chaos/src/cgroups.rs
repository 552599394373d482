//! Resource faults through cgroup v1: a CPU quota (the `cpu` controller: starvation) and a
//! memory limit (the `memory` controller: pressure, then the kernel's OOM killer) on one
//! component of the testbed.
//!
//! - **Memory**: every component the lab starts lives in a memory cgroup of its own from its
//!   first instruction ([`Cgroup`], entered between fork and exec, kept across restarts) — the
//!   way a container does. Its memory is charged there from birth, so a limit set on it later
//!   bounds everything it uses ([`Limit::memory`]), and a restart during the fault starts inside
//!   the limit. (A process moved into a cgroup later leaves its pages charged where they were:
//!   this kernel refuses `memory.move_charge_at_immigrate`, so a limit would never bind.) The
//!   kernel refuses a limit below what the component uses when it cannot reclaim the difference
//!   (anonymous memory, no swap): [`LimitError::InUse`] says how much it uses.
//! - **CPU**: the fault makes a cgroup of its own beside the process's and moves it in
//!   ([`Limit::cpu`]); the component is asked to start there again if it restarts meanwhile.
//!   (Components are not put in CPU cgroups from birth: a cgroup competes for CPU as one
//!   entity, which would change how the lab and the system share the cores in every run.)
//!
//! What the kernel did is read back from the cgroup itself: `cpu.stat` (`nr_throttled`,
//! `throttled_time`) and `memory.failcnt` / `memory.oom_control` (`oom_kill`), counted from
//! when the fault was applied; `memory.max_usage_in_bytes` gives the peak.
//!
//! Cgroups are named `flashlab-<lab pid>-<n>[-<component>]` beside the lab's own. A lab killed
//! with -9 cannot remove them, but its processes die with it and its cgroups are left empty:
//! [`sweep_leftovers`] removes those of labs no longer alive, and the testbed calls it when it
//! starts. Where cgroup v1 is not mounted or not writable (a cgroup v2 host, a container
//! without the controllers) components start without their cgroup and resource faults are
//! refused with the reason — never faked.

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

/// A cgroup the lab made, removed (once empty) when this drops.
#[derive(Debug)]
pub struct Cgroup {
    pub controller: Controller,
    pub dir: PathBuf,
}

impl Cgroup {
    /// A new cgroup beside the lab's own, named after `label` (a component's name).
    pub fn create(controller: Controller, label: &str) -> Result<Cgroup, String> {
        let own = cgroup_of(std::process::id(), controller)?;
        let parent = mount(controller).join(own.trim_start_matches('/'));
        Ok(Cgroup { controller, dir: new_dir(controller, &parent, label)? })
    }

    /// Its `cgroup.procs`: a process that writes `0` there enters it (how a child enters
    /// between fork and exec).
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Moves `pid` in.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.procs(), &pid.to_string())
    }

    /// Whether `pid` is in it now.
    pub fn has(&self, pid: u32) -> bool {
        read(&self.procs()).is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))
    }

    /// Bytes charged now (`memory.usage_in_bytes`).
    pub fn memory_usage(&self) -> Option<u64> {
        read(&self.dir.join("memory.usage_in_bytes")).ok()?.trim().parse().ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.dir) {
            tracing::warn!(error = %e, "cgroup left behind (swept when the next lab starts)");
        }
    }
}

/// Makes `flashlab-<lab pid>-<n>[-<label>]` in `parent`.
fn new_dir(controller: Controller, parent: &Path, label: &str) -> Result<PathBuf, String> {
    if !parent.join("cgroup.procs").is_file() {
        return Err(format!("{} is not a cgroup v1 directory here", parent.display()));
    }
    let label: String = label.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = match label.is_empty() {
        true => format!("flashlab-{}-{n}", std::process::id()),
        false => format!("flashlab-{}-{n}-{label}", std::process::id()),
    };
    let dir = parent.join(name);
    std::fs::create_dir(&dir)
        .map_err(|e| format!("creating {}: {e} (cgroup v1 {} not writable?)", dir.display(), controller.name()))?;
    Ok(dir)
}

/// What the kernel counted in a cgroup; a fault's effect is the difference from when it began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    throttled: u64,
    throttled_ns: u64,
    failcnt: u64,
    oom_kills: u64,
}

impl Counters {
    fn read(controller: Controller, dir: &Path) -> Option<Counters> {
        match controller {
            Controller::Cpu => {
                let text = read(&dir.join("cpu.stat")).ok()?;
                Some(Counters {
                    throttled: field(&text, "nr_throttled")?,
                    throttled_ns: field(&text, "throttled_time")?,
                    ..Counters::default()
                })
            }
            Controller::Memory => {
                let count = |file: &str| read(&dir.join(file)).ok().and_then(|t| t.trim().parse::<u64>().ok());
                Some(Counters {
                    failcnt: count("memory.failcnt")?.max(count("memory.memsw.failcnt").unwrap_or(0)),
                    oom_kills: field(&read(&dir.join("memory.oom_control")).ok()?, "oom_kill").unwrap_or(0),
                    ..Counters::default()
                })
            }
        }
    }
}

/// Why a limit could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The component uses more than the limit and the kernel could not reclaim the difference.
    #[error("it uses {:.1} MiB and the kernel cannot reclaim it down to {:.1} MiB (anonymous memory, no swap): give a limit above what it uses, or restart it into the limit", *.used as f64 / 1048576.0, *.limit as f64 / 1048576.0)]
    InUse { used: u64, limit: u64 },
    #[error("{0}")]
    Other(String),
}

impl From<String> for LimitError {
    fn from(e: String) -> Self {
        LimitError::Other(e)
    }
}

/// The quota and period (µs) of `cores` (0.1: 10 ms every 100 ms), or why it is not one.
pub fn cpu_quota(cores: f64) -> Result<(u64, u64), String> {
    if !(cores > 0.0 && cores.is_finite()) {
        return Err(format!("{cores} cores: a positive share of a core, e.g. 0.1"));
    }
    Ok((((cores * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US), PERIOD_US))
}

/// A resource fault in force: a limit on a cgroup holding one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub controller: Controller,
    /// The cgroup with the limit.
    pub dir: PathBuf,
    /// CPU: the cgroup the process came from and goes back to, the fault's own cgroup being
    /// removed on release. Memory: `None` — the cgroup is the component's own, and release
    /// lifts the limit.
    pub home: Option<PathBuf>,
    pub pid: u32,
    before: Counters,
    /// Set and lifted by the container engine ([`Limit::engine`]): [`Limit::release`]
    /// leaves it alone.
    by_engine: bool,
}

impl Limit {
    /// A CPU quota of `cores` (e.g. 0.1: 10 ms of CPU every 100 ms) on `pid`, in a cgroup made
    /// for the fault beside its own.
    pub fn cpu(pid: u32, cores: f64) -> Result<Limit, String> {
        let (quota, _) = cpu_quota(cores)?;
        let home_rel = cgroup_of(pid, Controller::Cpu)?;
        let home = mount(Controller::Cpu).join(home_rel.trim_start_matches('/'));
        let dir = new_dir(Controller::Cpu, &home, "")?;
        let set = write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())
            .and_then(|()| write(&dir.join("cpu.cfs_quota_us"), &quota.to_string()))
            .and_then(|()| write(&dir.join("cgroup.procs"), &pid.to_string()));
        if let Err(e) = set {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Limit {
            controller: Controller::Cpu,
            dir,
            home: Some(home),
            pid,
            before: Counters::default(),
            by_engine: false,
        })
    }

    /// The limit the container engine sets on `pid`'s container (its own cgroup of
    /// `controller`, read, not written: the engine sets and lifts it), observed like the lab's
    /// own. Its counters count from now.
    pub fn engine(controller: Controller, pid: u32) -> Result<Limit, String> {
        let dir = mount(controller).join(cgroup_of(pid, controller)?.trim_start_matches('/'));
        let before =
            Counters::read(controller, &dir).ok_or_else(|| format!("{}: counters unreadable", dir.display()))?;
        Ok(Limit { controller, dir, home: None, pid, before, by_engine: true })
    }

    /// Memory: the limit the kernel has now, bytes.
    pub fn limit_bytes(&self) -> Option<u64> {
        read(&self.dir.join("memory.limit_in_bytes")).ok()?.trim().parse().ok()
    }

    /// A memory limit of `bytes` (swap included where the kernel accounts it) on `cgroup`, a
    /// component's own memory cgroup, which holds `pid`.
    pub fn memory(cgroup: &Cgroup, pid: u32, bytes: u64) -> Result<Limit, LimitError> {
        if bytes < 1024 * 1024 {
            return Err(format!("{bytes} bytes: at least 1 MiB").into());
        }
        if cgroup.controller != Controller::Memory {
            return Err(format!("{} is not a memory cgroup", cgroup.dir.display()).into());
        }
        let dir = cgroup.dir.clone();
        let before = Counters::read(Controller::Memory, &dir)
            .ok_or_else(|| format!("{}: counters unreadable", dir.display()))?;
        // memory.memsw.limit_in_bytes may never be below memory.limit_in_bytes: lower the
        // memory limit first.
        if let Err(e) = write(&dir.join("memory.limit_in_bytes"), &bytes.to_string()) {
            let used = cgroup.memory_usage().unwrap_or(0);
            return Err(if used > bytes { LimitError::InUse { used, limit: bytes } } else { LimitError::Other(e) });
        }
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.is_file() {
            if let Err(e) = write(&memsw, &bytes.to_string()) {
                lift_memory_limit(&dir);
                return Err(e.into());
            }
        }
        Ok(Limit { controller: Controller::Memory, dir, home: None, pid, before, by_engine: false })
    }

    /// Whether the limit is in force on the process: it is in the cgroup (or gone — the OOM
    /// killer's work) and the kernel has the limit.
    pub fn holds(&self) -> bool {
        let held =
            read(&self.dir.join("cgroup.procs")).is_ok_and(|t| t.lines().any(|l| l.trim() == self.pid.to_string()));
        held && self.limited()
    }

    /// Whether the kernel has the limit on the cgroup, whoever is in it now.
    pub fn limited(&self) -> bool {
        match self.controller {
            Controller::Cpu => read(&self.dir.join("cpu.cfs_quota_us")).is_ok_and(|t| t.trim() != "-1"),
            Controller::Memory => read(&self.dir.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_some_and(|b| b < UNLIMITED_FROM),
        }
    }

    /// The limit as the kernel has it: `0.10 cores` or `16.0 MiB`.
    pub fn setting(&self) -> String {
        match self.controller {
            Controller::Cpu => {
                let quota = read(&self.dir.join("cpu.cfs_quota_us")).ok().and_then(|t| t.trim().parse::<f64>().ok());
                let period = read(&self.dir.join("cpu.cfs_period_us")).ok().and_then(|t| t.trim().parse::<f64>().ok());
                match (quota, period) {
                    (Some(q), Some(_)) if q < 0.0 => "no quota".into(),
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

    /// What the kernel counted since the fault began.
    fn since(&self) -> Option<Counters> {
        let now = Counters::read(self.controller, &self.dir)?;
        Some(Counters {
            throttled: now.throttled.saturating_sub(self.before.throttled),
            throttled_ns: now.throttled_ns.saturating_sub(self.before.throttled_ns),
            failcnt: now.failcnt.saturating_sub(self.before.failcnt),
            oom_kills: now.oom_kills.saturating_sub(self.before.oom_kills),
        })
    }

    /// CPU: periods throttled and the time throttled (ms), since the fault began.
    pub fn throttled(&self) -> Option<(u64, f64)> {
        self.since().map(|c| (c.throttled, c.throttled_ns as f64 / 1e6))
    }

    /// Memory: times the limit was hit (memory, or memory + swap where that is what bound),
    /// and processes the OOM killer killed in the cgroup, since the fault began.
    pub fn memory_events(&self) -> Option<(u64, u64)> {
        self.since().map(|c| (c.failcnt, c.oom_kills))
    }

    /// Memory: the cgroup's peak use, bytes.
    pub fn memory_peak(&self) -> Option<u64> {
        read(&self.dir.join("memory.max_usage_in_bytes")).ok()?.trim().parse().ok()
    }

    /// What the kernel did under the limit, for people.
    pub fn effect(&self) -> String {
        match self.controller {
            Controller::Cpu => match self.throttled() {
                Some((n, ms)) => format!("throttled {n} times, {ms:.0} ms"),
                None => "cpu.stat unreadable".into(),
            },
            Controller::Memory => match self.memory_events() {
                Some((fail, oom)) => {
                    let peak = self.memory_peak().map(|b| format!(", peak {:.1} MiB", b as f64 / 1048576.0));
                    format!("limit hit {fail} times, {oom} OOM kill(s){}", peak.unwrap_or_default())
                }
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

    /// CPU: moves the process home (when it still lives) and removes the fault's cgroup.
    /// Memory: lifts the limit. `Err`: what is left behind.
    pub fn release(&self) -> Result<(), String> {
        if self.by_engine {
            return Err(format!("{}: the container engine's limit, lifted by the engine", self.dir.display()));
        }
        let Some(home) = &self.home else {
            return match lift_memory_limit(&self.dir) {
                true => Ok(()),
                false => Err(format!("{}: the memory limit could not be lifted", self.dir.display())),
            };
        };
        // The process, and whatever it started in the cgroup, go home.
        if let Ok(text) = read(&self.dir.join("cgroup.procs")) {
            for pid in text.lines().filter(|l| !l.trim().is_empty()) {
                let _ = write(&home.join("cgroup.procs"), pid.trim());
            }
        }
        remove(&self.dir)
    }
}

/// `memory.limit_in_bytes` reads at least this when there is no limit (the kernel rounds
/// `-1` to a page below `i64::MAX`).
const UNLIMITED_FROM: u64 = 1 << 62;

/// Lifts a memory cgroup's limits (swap first: it may never be below the memory limit).
fn lift_memory_limit(dir: &Path) -> bool {
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let swap_ok = !memsw.is_file() || write(&memsw, "-1").is_ok();
    swap_ok && write(&dir.join("memory.limit_in_bytes"), "-1").is_ok()
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
        let cgroup = Cgroup { controller: Controller::Memory, dir: PathBuf::from("/nonexistent/flashlab-test") };
        assert!(Limit::memory(&cgroup, std::process::id(), 4096).unwrap_err().to_string().contains("at least 1 MiB"));
        let cgroup = Cgroup { controller: Controller::Cpu, dir: PathBuf::from("/nonexistent/flashlab-test") };
        assert!(Limit::memory(&cgroup, 1, 4 << 20).unwrap_err().to_string().contains("not a memory cgroup"));
    }
}

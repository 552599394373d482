//! What every service says about its own process, for the resource alerts
//! (`monitoring/rules/flashsale.rules.yml`: CPUHigh, MemoryHigh): the `prometheus` crate's
//! process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open fds…)
//! and `flashsale_process_memory_limit_bytes`, the memory the process may use: the smaller of
//! its cgroup's limit (v1 `memory.limit_in_bytes`, v2 `memory.max`) and the machine's RAM. Read
//! at every scrape, so a limit set while the service runs (a memory fault) shows at once.

use std::fs;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Registry};

/// Registers the process collector and the memory limit on `registry`.
pub fn register(registry: &Registry) {
    // Registering two fixed collectors on a fresh registry cannot collide.
    let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
    let _ = registry.register(Box::new(MemoryLimit::new()));
    crate::release::register(registry);
}

/// `flashsale_process_memory_limit_bytes`, computed when gathered.
struct MemoryLimit {
    gauge: IntGauge,
}

impl MemoryLimit {
    fn new() -> MemoryLimit {
        let gauge = IntGauge::new(
            "flashsale_process_memory_limit_bytes",
            "Memory this process may use: the smaller of its cgroup limit and the machine's RAM",
        )
        .expect("valid metric");
        MemoryLimit { gauge }
    }
}

impl Collector for MemoryLimit {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match memory_limit_bytes() {
            Some(limit) => {
                self.gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
                self.gauge.collect()
            }
            // No /proc (not Linux): no figure rather than a wrong one.
            None => Vec::new(),
        }
    }
}

/// The smaller of the cgroup memory limit and MemTotal; `None` when neither can be read.
pub fn memory_limit_bytes() -> Option<u64> {
    let machine = fs::read_to_string("/proc/meminfo").ok().and_then(|s| mem_total_bytes(&s));
    let cgroup = fs::read_to_string("/proc/self/cgroup").ok().and_then(|s| cgroup_limit_bytes(&s));
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit of the cgroup named in `/proc/self/cgroup`, v1 or v2; `None` when unlimited
/// or unreadable.
fn cgroup_limit_bytes(self_cgroup: &str) -> Option<u64> {
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else {
            continue;
        };
        if let Some(limit) = fs::read_to_string(&file).ok().and_then(|s| parse_limit(&s)) {
            return Some(limit);
        }
    }
    None
}

/// `max` (v2) and the v1 "unlimited" value (a page-rounded i64::MAX) are no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < (1 << 62)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        assert_eq!(mem_total_bytes("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24_576_000 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn unlimited_cgroups_are_no_limit() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(536_870_912));
    }

    #[test]
    fn this_process_has_a_limit_no_larger_than_the_machine() {
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
        let machine = mem_total_bytes(&meminfo).unwrap();
        let limit = memory_limit_bytes().unwrap();
        assert!(limit > 0 && limit <= machine, "limit {limit} machine {machine}");
    }

    #[test]
    fn the_registry_exposes_cpu_resident_memory_and_the_limit() {
        let registry = Registry::new();
        register(&registry);
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        for name in
            ["process_cpu_seconds_total", "process_resident_memory_bytes", "flashsale_process_memory_limit_bytes"]
        {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
    }
}

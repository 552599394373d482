//! `processes.jsonl`: what every process of the run used, sampled each second from `/proc` —
//! the system's components, the monitoring's, and the lab itself (`flashlab`: the generator
//! and the fault proxies). Capacity planning reads it to name the component that saturated.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One sample of one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    pub ts_ms: u64,
    /// `redis`, `broker`, `processor[0]`, `gateway[0]`, `payment`, `flashlab`, `prometheus`…
    pub component: String,
    pub pid: u32,
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

/// Reads `processes.jsonl` (empty when absent: a run recorded before it existed).
pub fn read(path: &Path) -> Result<Vec<ProcessSample>, crate::RunDirError> {
    crate::io::read_jsonl_if_present(path)
}

/// Per component: the mean share of one core it used between `from_ms` and `to_ms`, and its
/// largest resident memory there. From the first and last sample of the same process inside
/// the window (a restarted process counts from its new start); a component with fewer than
/// two samples there is left out, never reported as idle.
pub fn usage_between(samples: &[ProcessSample], from_ms: u64, to_ms: u64) -> BTreeMap<String, Usage> {
    let mut by: BTreeMap<(&str, u32), Vec<&ProcessSample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.ts_ms >= from_ms && s.ts_ms <= to_ms) {
        by.entry((s.component.as_str(), s.pid)).or_default().push(s);
    }
    let mut out: BTreeMap<String, (f64, f64, u64)> = BTreeMap::new();
    for ((component, _), list) in by {
        let (first, last) = (list[0], list[list.len() - 1]);
        if last.ts_ms <= first.ts_ms {
            continue;
        }
        let e = out.entry(component.to_string()).or_default();
        e.0 += (last.cpu_s - first.cpu_s).max(0.0);
        e.1 += (last.ts_ms - first.ts_ms) as f64 / 1000.0;
        e.2 = e.2.max(list.iter().map(|s| s.rss_bytes).max().unwrap_or(0));
    }
    out.into_iter()
        .filter(|(_, (_, secs, _))| *secs > 0.0)
        .map(|(c, (cpu, secs, rss))| (c, Usage { cores: cpu / secs, peak_rss_bytes: rss }))
        .collect()
}

/// A component's use over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Mean CPU, in cores (1.0: one core busy all the time).
    pub cores: f64,
    pub peak_rss_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts_ms: u64, component: &str, pid: u32, cpu_s: f64) -> ProcessSample {
        ProcessSample { ts_ms, component: component.into(), pid, cpu_s, rss_bytes: 1000 + ts_ms }
    }

    #[test]
    fn cpu_share_is_the_slope_inside_the_window_and_a_restart_counts_from_its_new_start() {
        let samples = vec![
            s(0, "redis", 1, 0.0),
            s(1000, "redis", 1, 0.5),
            s(3000, "redis", 1, 1.5),
            s(9000, "redis", 1, 9.0), // outside
            s(1000, "processor[0]", 2, 10.0),
            s(2000, "processor[0]", 2, 10.9),
            // restarted: new pid, its CPU counter starts again
            s(2500, "processor[0]", 3, 0.0),
            s(3000, "processor[0]", 3, 0.4),
            s(2000, "gateway[0]", 4, 1.0), // one sample: left out
        ];
        let u = usage_between(&samples, 1000, 3000);
        assert!((u["redis"].cores - 0.5).abs() < 1e-9, "{u:?}");
        assert!((u["processor[0]"].cores - 1.3 / 1.5).abs() < 1e-9, "{u:?}");
        assert_eq!(u["redis"].peak_rss_bytes, 4000);
        assert!(!u.contains_key("gateway[0]"));
    }
}

//! What a process used, from Linux's `/proc`: CPU seconds and resident memory — the
//! generator's own (is the lab the bottleneck?) and the system's processes' (which one
//! saturated first?). Elsewhere, or for a process that is gone, `None`.

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux the lab runs on).
const TICKS_PER_S: f64 = 100.0;

/// A process's use so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident memory now.
    pub rss_bytes: u64,
}

fn proc_dir(pid: Option<u32>) -> String {
    pid.map(|p| format!("/proc/{p}")).unwrap_or_else(|| "/proc/self".into())
}

/// CPU seconds (`/proc/<pid>/stat` fields 14 and 15) of `pid`, or of this process.
pub fn cpu_s(pid: Option<u32>) -> f64 {
    usage(pid).map(|u| u.cpu_s).unwrap_or(0.0)
}

/// CPU and resident memory of `pid` (or of this process); `None` when it cannot be read.
pub fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = proc_dir(pid);
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // Field 3 (state) is index 0 here: utime (14) is 11, stime (15) 12, rss pages (24) 21.
    let cpu_s = (ticks(11)? + ticks(12)?) / TICKS_PER_S;
    let rss_pages = fields.get(21).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Some(Usage { cpu_s, rss_bytes: rss_pages * page_size() })
}

fn page_size() -> u64 {
    // 4 KiB on the machines the lab runs on; read from the kernel where it says otherwise —
    // once: `smaps` is long, and a sampler asks every second.
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(read_page_size)
}

fn read_page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("KernelPageSize:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024))
        })
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory_and_a_gone_one_reads_none() {
        let before = usage(None).expect("/proc/self/stat on Linux");
        // Burn ~0.2 s of CPU: the reading must move.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = usage(None).expect("still readable");
        assert!(after.cpu_s >= before.cpu_s + 0.1, "{before:?} → {after:?}");
        assert!(after.rss_bytes > 1 << 20, "{after:?}");
        assert_eq!(usage(Some(u32::MAX)), None);
    }
}

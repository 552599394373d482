//! `processes.jsonl`: CPU and memory of every process of the run, each second, from `/proc`
//! (Linux; elsewhere the file stays empty) — the system's components and the monitoring's
//! (their pids asked of the testbed on each tick: a restarted component has a new one), and
//! the lab itself as `flashlab` (the generator and the fault proxies share its process).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chaos::Testbed;
use loadgen::procstat;
use rundir::ProcessSample;

/// The name of the lab's own process in the samples.
pub const LAB: &str = "flashlab";

/// Samples every second into `path` until dropped.
pub async fn run(testbed: Arc<tokio::sync::Mutex<Testbed>>, path: &Path) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        // The testbed is shared with the fault timeline: never wait long for it, skip a tick.
        let pids = match tokio::time::timeout(Duration::from_millis(500), testbed.lock()).await {
            Ok(mut bed) => bed.pids(),
            Err(_) => continue,
        };
        let ts_ms = chaos::events::unix_ms();
        let own = (LAB.to_string(), std::process::id());
        for (component, pid) in pids.into_iter().chain(std::iter::once(own)) {
            if let Some(u) = procstat::usage(Some(pid)) {
                let line = ProcessSample { ts_ms, component, pid, cpu_s: u.cpu_s, rss_bytes: u.rss_bytes };
                serde_json::to_writer(&mut file, &line)?;
                file.write_all(b"\n")?;
            }
        }
        file.flush()?;
    }
}

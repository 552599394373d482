//! The container runtime: the testbed's components as containers, started through
//! `testcontainers` on a Docker network of the run's own.
//!
//! - [`images`]: `flashlab images build`, the images made from this machine's programs.
//! - [`upstream`]: other images for a component (`--image redis=redis:7.2`), pulled where a
//!   registry is reachable.
//! - [`bridge`]: lets `testcontainers` talk to an engine older than its client (Debian 12's).
//! - [`hosted`]: one component of the [testbed](crate::testbed) in a container, under the lab's
//!   control as a process is (its pid, signals, the cgroup freezer, kill and start again): the
//!   testbed of the drills on containers.
//! - [`Runtime`]: one run's network, its containers, and their removal — at the end, after
//!   Ctrl-C, and after kill -9 of the lab:
//!   - everything the lab creates carries the labels [`LABEL_RUN`] (the run id) and
//!     [`LABEL_LAB`] (the lab's process id and start time);
//!   - a reaper process, which the kernel signals when the lab dies (`setpriv --pdeathsig`),
//!     removes the run's containers and network when it is signalled;
//!   - every start first removes what labs that are gone left behind, and says so
//!     ([`sweep_leftovers`]).
//!
//! The lab reaches a container only through ports published on 127.0.0.1; the testbed's
//! containers reach each other through the lab's fault proxies, which listen on the host's
//! address on the run's network (see [`crate::testbed`]).

pub mod bridge;
pub mod hosted;
pub mod images;
mod runtime;
pub mod upstream;

pub use runtime::{Container, ContainerSpec, Runtime, RuntimeError, MEMORY_LIFTED};

use std::time::Duration;

/// The run a container or network belongs to.
pub const LABEL_RUN: &str = "dev.flashlab.run";
/// The lab that made it: `PID:START` (its process id and start time in clock ticks since boot,
/// so that a reused process id is not taken for the lab).
pub const LABEL_LAB: &str = "dev.flashlab.lab";
/// Where the engine listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_ENGINE: &str = "/var/run/docker.sock";
/// How long one `docker` command of the lab's may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The engine itself, as `DOCKER_HOST` says: what it said before the lab pointed it at its
/// [bridge](bridge) (for `testcontainers` alone), else the default socket. The `docker` commands
/// of the lab and of its reaper go here: the bridge dies with the lab, the reaper must not.
pub fn engine_host() -> String {
    static ENGINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("unix://{DEFAULT_ENGINE}"))
        })
        .clone()
}

/// This process as [`LABEL_LAB`] names it.
pub fn lab_identity() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

/// Whether the lab `identity` ([`LABEL_LAB`]) still runs.
pub fn lab_alive(identity: &str) -> bool {
    let Some((pid, start)) = identity.split_once(':') else { return false };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    start_time(pid) == Some(start)
}

/// A process's start time (field 22 of `/proc/PID/stat`), `None` when it does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Removes every container and network that a lab which is no longer running left behind;
/// returns what it removed (`container NAME (run RUN)`), for the lab to say.
pub fn sweep_leftovers() -> Result<Vec<String>, images::ImageError> {
    let mut removed = sweep("container", &["ps", "-a"], "{{.Names}}", &["rm", "-f", "-v"])?;
    removed.extend(sweep("network", &["network", "ls"], "{{.Name}}", &["network", "rm"])?);
    Ok(removed)
}

/// Removes (`remove ID`) each `kind` that `list` shows with a [`LABEL_LAB`] of a dead lab.
fn sweep(kind: &str, list: &[&str], name: &str, remove: &[&str]) -> Result<Vec<String>, images::ImageError> {
    let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL_LAB}\"}}}} {{{{.Label \"{LABEL_RUN}\"}}}} {name}");
    let filter = format!("label={LABEL_LAB}");
    let mut query = args(list);
    query.extend(args(&["--filter", &filter, "--format", &format]));
    let mut removed = Vec::new();
    for line in images::docker(&query, None)?.lines() {
        if let [id, lab, run, name] = line.split_whitespace().collect::<Vec<_>>()[..] {
            if !lab_alive(lab) {
                let mut rm = args(remove);
                rm.push(id.to_string());
                images::docker(&rm, None)?;
                removed.push(format!("{kind} {name} (run {run})"));
            }
        }
    }
    Ok(removed)
}

/// Whatever of run `run` is left: its containers' and networks' names.
pub fn left_of(run: &str) -> Result<Vec<String>, images::ImageError> {
    let filter = format!("label={LABEL_RUN}={run}");
    let mut out: Vec<String> =
        images::docker(&args(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]), None)?
            .lines()
            .map(|l| format!("container {l}"))
            .collect();
    out.extend(
        images::docker(&args(&["network", "ls", "--filter", &filter, "--format", "{{.Name}}"]), None)?
            .lines()
            .map(|l| format!("network {l}")),
    );
    Ok(out)
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_lab_is_alive_and_a_made_up_one_is_not() {
        let me = lab_identity();
        assert!(lab_alive(&me), "{me}");
        let (pid, start) = me.split_once(':').unwrap();
        // The same process id with another start time: a reused id, not this lab.
        assert!(!lab_alive(&format!("{pid}:{}", start.parse::<u64>().unwrap() + 1)));
        assert!(!lab_alive("4194999:1"));
        assert!(!lab_alive("garbage"));
    }
}

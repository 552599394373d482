//! Resource faults on real processes through the kernel's cgroup v1: a CPU quota throttles a
//! busy process to its share and is read back from `cpu.stat`; a memory limit on the cgroup of
//! a process that keeps allocating brings the OOM killer, and one below what a process holds is
//! refused with what it holds; both are undone (the process moved home and the fault's cgroup
//! removed; the limit lifted), and a dead lab's leftover cgroup is swept.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaos::cgroups::{cgroup_of, sweep_leftovers, Cgroup, Controller, Limit, LimitError};

/// A child killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds `pid` used so far (utime + stime, at 100 ticks a second).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Cores `pid` used over `span`.
fn cores_over(pid: u32, span: Duration) -> f64 {
    let before = cpu_s(pid);
    std::thread::sleep(span);
    (cpu_s(pid) - before) / span.as_secs_f64()
}

#[test]
fn a_cpu_quota_throttles_a_busy_process_to_its_share_and_is_undone() {
    // Killed when the test ends, and by the kernel when the test process dies.
    let child = Reaped(busy_loop());
    let busy = child.0.id();
    let home = cgroup_of(busy, Controller::Cpu).unwrap();
    let limit = Limit::cpu(busy, 0.1).expect("cgroup v1 cpu is writable here");
    assert!(limit.holds());
    assert_eq!(limit.setting(), "0.10 cores");
    let used = cores_over(busy, Duration::from_millis(1500));
    assert!(used < 0.2, "{used:.2} cores under a 0.1-core quota");
    assert!(limit.bit(), "{}", limit.effect());
    let (periods, ms) = limit.throttled().unwrap();
    assert!(periods > 0 && ms > 0.0, "{}", limit.effect());

    limit.release().unwrap();
    assert!(!limit.dir.exists(), "the fault's cgroup is removed");
    assert_eq!(cgroup_of(busy, Controller::Cpu).unwrap(), home, "moved home");
    // Free again: within 3 s it runs well past the quota (one run measured 0.05 cores over the
    // first second after the release, so a single reading is not the test).
    let free: Vec<f64> = (0..12).map(|_| cores_over(busy, Duration::from_millis(250))).collect();
    eprintln!("cores after the release, each 250 ms: {free:.2?}");
    assert!(free.iter().any(|c| *c > 0.3), "{free:.2?} cores once the quota is gone");
    drop(child);
}

#[test]
fn an_idle_process_under_a_quota_is_never_throttled_so_the_fault_did_not_bite() {
    let child = Reaped(Command::new("sleep").arg("30").spawn().unwrap());
    let limit = Limit::cpu(child.0.id(), 0.05).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!limit.bit(), "{}", limit.effect());
    limit.release().unwrap();
}

#[test]
fn a_memory_limit_on_a_growing_process_brings_the_oom_killer() {
    // It waits for a line, then grows without bound (`tail` keeps the endless line of zeros).
    let mut child = Reaped(
        Command::new("sh")
            .args(["-c", "read go && exec setpriv --pdeathsig KILL tail /dev/zero"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let cgroup = Cgroup::create(Controller::Memory, "grower").expect("cgroup v1 memory is writable here");
    cgroup.add(pid).unwrap();
    let limit = Limit::memory(&cgroup, pid, 32 << 20).unwrap();
    assert!(limit.holds() && limit.setting() == "32.0 MiB", "{}", limit.setting());
    // Only once it is held does it start to grow.
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "not killed within 30 s: {}", limit.effect());
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}: {}", limit.effect());
    // (memory.failcnt may stay 0: the kernel counted the OOM kill, not a failed charge.)
    let (_, oom) = limit.memory_events().unwrap();
    assert!(oom >= 1, "{}", limit.effect());
    assert!(limit.bit());
    limit.release().unwrap();
    let now: u64 = std::fs::read_to_string(cgroup.dir.join("memory.limit_in_bytes")).unwrap().trim().parse().unwrap();
    assert!(now > 1 << 62, "lifted: {now}");
    let dir = cgroup.dir.clone();
    drop(cgroup);
    assert!(!dir.exists(), "an empty cgroup is removed when dropped");
}

#[test]
fn a_memory_limit_below_what_a_process_holds_is_refused_with_what_it_holds() {
    let cgroup = Cgroup::create(Controller::Memory, "holder").unwrap();
    // Enters its cgroup first; then `tail` holds 48 MiB of zeros (no line end yet) while the
    // writer sleeps.
    let child = Reaped(
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo 0 > {} && (head -c 50331648 /dev/zero; sleep 60) | tail", cgroup.procs().display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while cgroup.memory_usage().unwrap() < 48 << 20 {
        assert!(Instant::now() < deadline, "the cgroup never held 48 MiB: {:?}", cgroup.memory_usage());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.0.id();
    assert!(cgroup.has(pid));
    match Limit::memory(&cgroup, pid, 16 << 20) {
        Err(e @ LimitError::InUse { used, .. }) => {
            assert!(used > 48 << 20, "{e}");
            assert!(e.to_string().contains("cannot reclaim"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing was left set: a limit above what it holds is taken.
    let limit = Limit::memory(&cgroup, pid, 256 << 20).unwrap();
    assert!(limit.holds() && !limit.bit(), "{}", limit.effect());
    limit.release().unwrap();
    drop(child);
    // The pipeline's other processes (tail, sleep) are in the cgroup too.
    for pid in std::fs::read_to_string(cgroup.procs()).unwrap().lines() {
        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    }
}

#[test]
fn a_dead_labs_cgroup_is_swept() {
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let own = cgroup_of(std::process::id(), Controller::Cpu).unwrap();
    let parent = std::path::Path::new("/sys/fs/cgroup/cpu").join(own.trim_start_matches('/'));
    let left = parent.join(format!("flashlab-{}-1", gone.id()));
    std::fs::create_dir(&left).unwrap();
    let ours = parent.join(format!("flashlab-{}-999", std::process::id()));
    std::fs::create_dir(&ours).unwrap();
    let removed = sweep_leftovers();
    assert!(removed.contains(&left) && !left.exists(), "{removed:?}");
    assert!(ours.exists(), "a live lab's cgroup stays");
    std::fs::remove_dir(&ours).unwrap();
}

/// A shell spinning on one core, killed by the kernel if the test process dies.
fn busy_loop() -> Child {
    Command::new("setpriv").args(["--pdeathsig", "KILL", "sh", "-c", "while :; do :; done"]).spawn().unwrap()
}

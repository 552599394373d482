//! `flashlab drill` as a user runs it: the shipped drills listed, a bad scenario file refused
//! with its line, an abort condition that stops the faults early, and Ctrl-C mid-drill leaving
//! no child process and no fault behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::processes_in;

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

fn flashlab(args: &[&str]) -> std::process::Output {
    Command::new(FLASHLAB).args(args).output().expect("flashlab runs")
}

#[test]
fn the_shipped_drills_are_listed() {
    let out = flashlab(&["drills"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "flash-sale-spike",
        "ramp-10-to-100",
        "kafka-outage",
        "processor-crash",
        "processor-stall",
        "payment-outage",
        "payment-outage-refund",
        "payment-slow-success",
        "redis-latency",
        "redis-loss-and-restore",
        "rate-limit-storm",
        "rolling-restart",
        "dlq-growth",
        "processor-restart-storm",
        "partition-processor-redis",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing from:\n{text}");
    }
    assert!(!text.contains("INVALID"), "{text}");
}

#[test]
fn a_bad_scenario_is_refused_with_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\ndescription = \"x\"\n[stock]\n\"101\" = 1\n[load]\nphases = \"a:1s@1\"\n[[faults]]\nat = \"1s\"\nkind = \"kill\"\ntarget = \"database\"\n",
    )
    .unwrap();
    let out = flashlab(&["drill", file.to_str().unwrap(), "--out", dir.path().join("run").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:10: faults[0].target") && err.contains("valid: redis, broker"), "{err}");
    let out = flashlab(&["drill", "no-such-drill"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`flashlab drills` lists the drills"));
}

const ABORTING: &str = r#"
name = "abort-test"
description = "Payment latency far past the timeout; the abort condition heals it early."
drain_timeout = "60s"
[env]
RATE_LIMIT_MAX_REQUESTS = "1000"
REDIS_TIMEOUT = "300ms"
[stock]
"101" = 100000
[load]
phases = "a:25s@40"
mix = "buyer=1"
timeout = "1s"
[[faults]]
at = "3s"
for = "60s"
kind = "latency"
target = "redis"
latency = "500ms"
[abort]
max_error_rate = 0.5
window = "3s"
"#;

#[test]
fn an_abort_condition_heals_the_faults_early_and_fails_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("abort.toml");
    std::fs::write(&file, ABORTING).unwrap();
    let run = dir.path().join("run");
    let started = Instant::now();
    let out = flashlab(&["drill", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(120));
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let abort = events.iter().find(|e| e["event"] == "abort").expect("an abort event");
    let stop = events.iter().find(|e| e["event"] == "fault_stop").expect("the fault healed");
    assert_eq!(stop["reason"], "abort condition");
    let fault_start = events.iter().find(|e| e["event"] == "fault_start").unwrap();
    let lasted = stop["ts_ms"].as_u64().unwrap() - fault_start["ts_ms"].as_u64().unwrap();
    assert!(lasted < 20_000, "healed after {lasted} ms, not the fault's 60 s");
    assert!(abort["error_rate"].as_f64().unwrap() > 0.5);
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("verdict.json")).unwrap()).unwrap();
    let row = verdict["checks"].as_array().unwrap().iter().find(|c| c["name"] == "abort condition").unwrap();
    assert_eq!(row["outcome"], "fail");
}

/// The second kill of the broker conflicts with the first, still in force: it cannot land.
const CONFLICTING: &str = r#"
name = "conflict-test"
description = "A fault that cannot be injected: the drill must fail, naming it."
drain_timeout = "30s"
[env]
RATE_LIMIT_MAX_REQUESTS = "1000"
[stock]
"101" = 100000
[load]
phases = "a:8s@20"
mix = "buyer=1"
[[faults]]
at = "2s"
for = "3s"
kind = "latency"
target = "redis"
latency = "20ms"
[[faults]]
at = "3s"
for = "1s"
kind = "latency"
target = "redis"
latency = "30ms"
"#;

#[test]
fn a_fault_that_cannot_be_injected_fails_the_drill_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conflict.toml");
    std::fs::write(&file, CONFLICTING).unwrap();
    let run = dir.path().join("run");
    let out = flashlab(&["drill", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("FAIL") && l.contains("fault refused: latency redis")), "{stdout}");
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("verdict.json")).unwrap()).unwrap();
    let row = verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with("fault refused")))
        .expect("a row for the refused fault");
    assert_eq!(row["outcome"], "fail");
    assert!(row["measured"].as_str().unwrap().contains("already has fault #1"), "{row}");
}

#[test]
fn a_target_the_topology_does_not_have_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.toml");
    std::fs::write(
        &file,
        "name = \"absent\"\ndescription = \"x\"\n[topology]\nprocessors = 2\n[stock]\n\"101\" = 1\n[load]\nphases = \"a:1s@1\"\n[[faults]]\nat = \"1s\"\nkind = \"kill\"\ntarget = \"processor[5]\"\n",
    )
    .unwrap();
    let out = flashlab(&["drill", file.to_str().unwrap(), "--out", dir.path().join("run").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("absent.toml:12: faults[0].target: processor[5]: the topology has processor[0] to processor[1]"),
        "{err}"
    );
}

/// A partition exists on containers only: on processes the drill is refused before anything
/// starts, and `--runtime processes` overrides the shipped drill's `runtime = "containers"`.
#[test]
fn a_partition_on_processes_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out =
        flashlab(&["drill", "partition-processor-redis", "--runtime", "processes", "--out", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partition-processor-redis.toml: the partition at 20s runs on containers only"), "{err}");
    assert!(!run.join("system").exists(), "nothing started");
}

/// `--image`: a component name it does not know, an image on processes, and an image the engine
/// lacks and cannot pull are each refused with what is wrong, exit 2, nothing started.
#[test]
fn an_image_the_lab_cannot_use_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out_dir = run.to_str().unwrap();
    let cases = [
        (vec!["--image", "kafka=apache/kafka:3.9.0"], "unknown component \"kafka\" (flashsale, redis, broker)"),
        (vec!["--image", "redis=redis:7.2", "--runtime", "processes"], "images are for the container runtime"),
        (
            vec!["--image", "redis=flashlab-test/absent:never", "--runtime", "containers"],
            "redis=flashlab-test/absent:never: not on this machine, and the pull failed",
        ),
    ];
    for (extra, said) in cases {
        let mut args = vec!["drill", "kafka-outage", "--scale", "0.3", "--out", out_dir];
        args.extend(extra.iter().copied());
        let out = flashlab(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(said), "{extra:?}: {err}");
        assert!(!run.join("system/redis/redis.log").exists(), "{extra:?}: Redis started");
    }
}

#[test]
fn ctrl_c_mid_drill_heals_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = Command::new(FLASHLAB)
        .args(["drill", "kafka-outage", "--scale", "0.5", "--quiet", "--out"])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the broker is killed (the fault is in force).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap_or_default();
        if events.contains("\"fault_start\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the fault never started: {events}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "interrupted: the drill could not run to its end");
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let stop: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "fault_stop")
        .expect("the fault was healed");
    assert_eq!(stop["reason"], "drill stopped");
    assert!(events.contains("\"system_down\""));
    assert_eq!(processes_in(&run), Vec::<u32>::new(), "no child process left");
}

//! What asynchronous replication can lose in a Redis failover, shown on the real system: the
//! shipped `redis-failover` drill (the replica's replication cut 2 s before the primary dies,
//! Sentinel then promoting that replica) passes with reservations acknowledged only once a
//! replica has them (`REDIS_WAIT_REPLICAS=1`, the drill as shipped — `ci/drills` runs it), and
//! fails on the invariants, naming the orders, with them acknowledged by the primary alone.

use std::process::Command;

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

#[test]
fn without_wait_the_failover_loses_what_the_replica_never_got_and_the_verdict_names_the_orders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("drills/redis-failover.toml")).unwrap();
    assert!(shipped.contains("REDIS_WAIT_REPLICAS = \"1\""), "the shipped drill waits for a replica");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("redis-failover-no-wait.toml");
    std::fs::write(&scenario, shipped.replace("REDIS_WAIT_REPLICAS = \"1\"", "REDIS_WAIT_REPLICAS = \"0\"")).unwrap();
    let run = dir.path().join("run");
    let output = Command::new(FLASHLAB)
        .arg("drill")
        .arg(&scenario)
        .args(["--scale", "0.3", "--quiet", "--out"])
        .arg(&run)
        .output()
        .expect("flashlab drill runs");
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("verdict.json"))
            .unwrap_or_else(|_| panic!("no verdict; stderr:\n{}", String::from_utf8_lossy(&output.stderr))),
    )
    .unwrap();
    let failed: Vec<&serde_json::Value> =
        verdict["checks"].as_array().unwrap().iter().filter(|c| c["outcome"] == "fail").collect();
    let names: Vec<&str> = failed.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(output.status.code(), Some(1), "failed checks: {names:?}");
    // The stock the replica never saw decremented is back, and the orders it never saw decided
    // are named.
    assert!(names.contains(&"stock conservation"), "{names:?}");
    let effects = failed
        .iter()
        .find(|c| c["name"] == "one effect per request_id, no status backwards")
        .unwrap_or_else(|| panic!("no order named; failed: {names:?}"));
    let examples: Vec<&str> = effects["evidence"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    assert!(
        examples.iter().any(|e| e.contains("in Redis, decided COMPLETED")),
        "evidence {examples:?} names no order Redis lost"
    );
}

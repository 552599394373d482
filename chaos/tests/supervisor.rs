//! The supervisor on a real testbed: a killed processor is started again at once with nobody
//! healing the fault; a frozen gateway fails its liveness probe, is taken out of the front's
//! rotation, killed and restarted; a gateway that cannot start (restarted into a memory limit it
//! cannot live in) is restarted with a back-off that doubles, and runs again once the limit is
//! lifted; a component a fault holds down on purpose is left down until the fault heals.
//!
//! Needs the `flashsale` binary next to the test executable (`cargo test --workspace` builds it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::supervisor::{Supervisor, SupervisorConfig};
use chaos::{Action, EventLog, Fault, Injector, Target, Testbed, TestbedConfig};
use serde_json::Value;

/// Fast probes, so the test takes seconds: liveness every 300 ms after 1 s, two failures
/// restart; readiness every 200 ms; back-off 500 ms doubling to 4 s.
fn config() -> SupervisorConfig {
    SupervisorConfig {
        liveness_period: Duration::from_millis(300),
        liveness_initial_delay: Duration::from_secs(1),
        readiness_period: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(500),
        failure_threshold: 2,
        back_off: Duration::from_millis(500),
        back_off_max: Duration::from_secs(4),
        back_off_reset: Duration::from_secs(60),
    }
}

fn events(injector: &Injector) -> Vec<Value> {
    let path = injector.events().path().unwrap();
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn of<'a>(events: &'a [Value], kind: &str, component: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind && e["component"] == component).collect()
}

/// Polls `condition` every 50 ms until it holds; fails the test after `limit`.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pid(testbed: &Arc<tokio::sync::Mutex<Testbed>>, target: Target) -> Option<u32> {
    testbed.lock().await.process(target).and_then(|p| if p.is_running() { p.pid() } else { None })
}

#[tokio::test]
async fn the_supervisor_restarts_what_dies_or_hangs_backs_off_a_crash_loop_and_leaves_held_faults_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bed = TestbedConfig {
        gateways: 2,
        processors: 1,
        flashsale_bin: Some(chaos::components::flashsale_program()),
        ..TestbedConfig::default()
    };
    let testbed = Arc::new(tokio::sync::Mutex::new(Testbed::start(bed).await.expect("testbed starts")));
    let events_log = EventLog::to_file(&dir.path().join("events.jsonl")).unwrap();
    let injector = Injector::new(testbed.clone(), events_log.clone());
    injector.set_supervised(true);
    let supervisor = Supervisor::start(testbed.clone(), injector.clone(), events_log, config()).await;

    // Every service answers the probes' paths.
    for target in [Target::Processor(0), Target::Gateway(0), Target::Payment] {
        let addr = testbed.lock().await.process(target).unwrap().addr();
        for path in ["/healthz", "/readyz"] {
            let answer = chaos::probe::Probe::HttpOk(addr, path).check(Duration::from_secs(2)).await;
            assert!(answer.is_ok(), "{target} {path}: {answer:?}");
        }
    }

    // A kill without a duration: over at once, and the supervisor starts it again.
    let before = pid(&testbed, Target::Processor(0)).await.unwrap();
    let info =
        injector.inject(Fault { target: Target::Processor(0), action: Action::Kill, duration: None }).await.unwrap();
    assert!(info.check.observed.contains("the supervisor brings it back"), "{:?}", info.check);
    assert!(injector.list().is_empty(), "nothing left for the lab to heal");
    let mut after = None;
    for _ in 0..200 {
        after = pid(&testbed, Target::Processor(0)).await;
        if after.is_some_and(|p| p != before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after.is_some_and(|p| p != before), "processor[0] not running again: {after:?}");
    let restarts =
        of(&events(&injector), "supervisor_restart", "processor[0]").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0]["reason"], "exited");
    assert_eq!(restarts[0]["back_off_ms"], 0, "the first restart is at once");
    eventually(Duration::from_secs(5), "processor[0] ready again", || {
        of(&events(&injector), "supervisor_ready", "processor[0]").last().is_some_and(|e| e["ready"] == true)
    })
    .await;

    // A frozen gateway fails liveness twice: out of the rotation, killed, started again.
    let frozen = pid(&testbed, Target::Gateway(1)).await.unwrap();
    injector.inject(Fault { target: Target::Gateway(1), action: Action::Pause, duration: None }).await.unwrap();
    let mut left_rotation = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        left_rotation |= !testbed.lock().await.gateways_in_rotation().contains(&1);
        let now = pid(&testbed, Target::Gateway(1)).await;
        if now.is_some_and(|p| p != frozen) {
            break;
        }
        assert!(Instant::now() < deadline, "gateway[1] not restarted: {:?}", events(&injector));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left_rotation, "the frozen gateway stayed in the front's rotation");
    let all = events(&injector);
    let probes = of(&all, "supervisor_probe", "gateway[1]");
    assert!(probes.len() >= 2, "{probes:?}");
    assert_eq!(of(&all, "supervisor_restart", "gateway[1]").last().unwrap()["reason"], "liveness");
    eventually(Duration::from_secs(5), "gateway[1] back in the rotation", || {
        testbed.try_lock().is_ok_and(|t| t.gateways_in_rotation() == vec![0, 1])
    })
    .await;
    injector.heal_all("test").await;

    // A gateway replaced into 1 MiB cannot start: restarted again and again, each wait longer.
    let info = injector
        .inject(Fault {
            target: Target::Gateway(1),
            action: Action::Memory { bytes: 1 << 20, restart: true },
            duration: Some(Duration::from_secs(5)),
        })
        .await
        .unwrap();
    assert!(info.check.ok && info.check.observed.contains("OOM"), "{:?}", info.check);
    eventually(Duration::from_secs(20), "the memory fault healed", || injector.list().is_empty()).await;
    eventually(Duration::from_secs(15), "gateway[1] running and ready after the limit is lifted", || {
        of(&events(&injector), "supervisor_ready", "gateway[1]").last().is_some_and(|e| e["ready"] == true)
    })
    .await;
    let all = events(&injector);
    let waits: Vec<u64> = of(&all, "supervisor_restart", "gateway[1]")
        .iter()
        .filter(|e| e["ts_ms"].as_u64() >= Some(info.started_ms))
        .map(|e| e["back_off_ms"].as_u64().unwrap())
        .collect();
    assert!(waits.len() >= 3, "{waits:?}");
    assert!(waits.windows(2).all(|w| w[1] >= w[0]) && waits.last() > waits.first(), "back-off grows: {waits:?}");

    // A kill with a duration holds the component down: no restart until the fault heals.
    let info = injector
        .inject(Fault { target: Target::Processor(0), action: Action::Kill, duration: Some(Duration::from_secs(2)) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pid(&testbed, Target::Processor(0)).await, None, "restarted while a fault holds it down");
    let restarts_now = of(&events(&injector), "supervisor_restart", "processor[0]").len();
    eventually(Duration::from_secs(10), "the kill healed", || injector.list().is_empty()).await;
    assert!(pid(&testbed, Target::Processor(0)).await.is_some());
    assert_eq!(
        of(&events(&injector), "supervisor_restart", "processor[0]").len(),
        restarts_now,
        "the lab's heal started it"
    );
    let _ = info;

    drop(supervisor);
    testbed.lock().await.stop_all().await.unwrap();
}

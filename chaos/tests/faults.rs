//! The fault injector on a real testbed: each fault's effect measured on a real connection or
//! process, each heal restoring service, every start and stop recorded with its check.
//!
//! Needs the `flashsale` binary next to the test executable (`cargo test --workspace` builds it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::faults::Directions;
use chaos::injector::FaultError;
use chaos::proxy::Toxic;
use chaos::{Action, EventLog, Fault, Injector, Target, Testbed, TestbedConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn flashsale() -> std::path::PathBuf {
    let bin = chaos::components::flashsale_program();
    assert!(bin.is_file(), "{} missing: build the workspace first (cargo test --workspace)", bin.display());
    bin
}

async fn lab(config: TestbedConfig) -> (Injector, Arc<tokio::sync::Mutex<Testbed>>, tempfile::TempDir) {
    let events_dir = tempfile::tempdir().unwrap();
    let config = TestbedConfig { flashsale_bin: Some(flashsale()), ..config };
    let testbed = Arc::new(tokio::sync::Mutex::new(Testbed::start(config).await.expect("testbed starts")));
    let events = EventLog::to_file(&events_dir.path().join("events.jsonl")).unwrap();
    (Injector::new(testbed.clone(), events), testbed, events_dir)
}

fn fault(target: Target, action: Action, duration: Option<Duration>) -> Fault {
    Fault { target, action, duration }
}

fn network(target: Target, toxic: Toxic) -> Fault {
    fault(target, Action::Network { toxic, directions: Directions::Both, toxicity: 1.0 }, None)
}

/// One Redis `PING` on an open connection: its round trip, or the error (`limit` bounds it).
async fn ping(stream: &mut TcpStream, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let exchange = async {
        stream.write_all(b"PING\r\n").await.map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 7];
        let n = stream.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        match &buf[..n] {
            b"+PONG\r\n" => Ok(started.elapsed()),
            other => Err(format!("answer {:?}", String::from_utf8_lossy(other))),
        }
    };
    tokio::time::timeout(limit, exchange).await.map_err(|_| "timed out".to_string())?
}

/// Every event recorded, by fault id: (starts, stops) with their checks.
fn events(injector: &Injector) -> Vec<Value> {
    let path = injector.events().path().unwrap();
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn stop_of(injector: &Injector, id: u64) -> Option<Value> {
    events(injector).into_iter().find(|e| e["event"] == "fault_stop" && e["id"] == id)
}

/// Waits until fault `id` has healed by itself (bounded).
async fn healed_by_itself(injector: &Injector, id: u64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(stop) = stop_of(injector, id) {
            return stop;
        }
        assert!(Instant::now() < deadline, "fault #{id} not healed within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn network_faults_hit_open_connections_and_heal() {
    let (injector, testbed, _dir) = lab(TestbedConfig { gateways: 0, ..TestbedConfig::default() }).await;
    let redis = testbed.lock().await.redis_addr();
    let mut open = TcpStream::connect(redis).await.unwrap();
    let baseline = ping(&mut open, Duration::from_secs(1)).await.expect("PING through the proxy");
    assert!(baseline < Duration::from_millis(50), "{baseline:?}");

    // Latency 100 ms + 0..=20 ms each way, on a connection opened before the fault.
    let latency = Toxic::Latency { latency: Duration::from_millis(100), jitter: Duration::from_millis(20) };
    let info = injector.inject(network(Target::Redis, latency)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    for _ in 0..10 {
        let rtt = ping(&mut open, Duration::from_secs(2)).await.unwrap();
        // Two legs: 200 ms set, up to 40 ms of jitter; ±10 % around that.
        assert!(rtt >= Duration::from_millis(180) && rtt <= Duration::from_millis(264), "round trip {rtt:?}");
    }
    let report = injector.heal(info.id).await.unwrap();
    assert!(report.check.ok, "{:?}", report.check);
    let rtt = ping(&mut open, Duration::from_secs(1)).await.unwrap();
    assert!(rtt < Duration::from_millis(50), "healed, yet {rtt:?}");

    // Blackhole: the call on the open connection gets no answer (the client's timeout fires).
    let info = injector.inject(network(Target::Redis, Toxic::Blackhole)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    assert_eq!(ping(&mut open, Duration::from_millis(500)).await, Err("timed out".into()));
    injector.heal(info.id).await.unwrap();
    // The blackholed connection lost a PING; a new one works.
    let mut fresh = TcpStream::connect(redis).await.unwrap();
    ping(&mut fresh, Duration::from_secs(1)).await.expect("a new connection after the heal");

    // Reset: the open connection is aborted.
    let info = injector.inject(network(Target::Redis, Toxic::ResetPeer)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let reset = ping(&mut fresh, Duration::from_secs(1)).await.unwrap_err();
    // The RST arrives before or after our write: a reset read, a broken pipe, or an end of stream.
    assert!(["reset", "Broken pipe", "answer \"\""].iter().any(|e| reset.contains(e)), "{reset}");
    injector.heal(info.id).await.unwrap();

    // Down: connections are refused (closed at once); up again after the heal.
    let info = injector.inject(fault(Target::Redis, Action::Down, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    // Closed with a reset as soon as it is accepted: the connect or the first call fails.
    if let Ok(mut refused) = TcpStream::connect(redis).await {
        assert!(ping(&mut refused, Duration::from_secs(1)).await.is_err());
    }
    injector.heal(info.id).await.unwrap();
    let mut again = TcpStream::connect(redis).await.unwrap();
    ping(&mut again, Duration::from_secs(1)).await.expect("up again");

    // A fault with a duration heals by itself, on time.
    let started = Instant::now();
    let info = injector.inject(fault(Target::Redis, Action::Down, Some(Duration::from_millis(300)))).await.unwrap();
    let stop = healed_by_itself(&injector, info.id, Duration::from_secs(10)).await;
    assert_eq!(stop["reason"], "expired");
    assert!(stop["check"]["ok"].as_bool().unwrap(), "{stop}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Every fault has one start and one stop, both checked.
    let all = events(&injector);
    for id in 1..=info.id {
        let count = |kind: &str| all.iter().filter(|e| e["event"] == kind && e["id"] == id).count();
        assert_eq!((count("fault_start"), count("fault_stop")), (1, 1), "fault #{id}: {all:?}");
    }
    assert!(injector.list().is_empty());
}

#[tokio::test]
async fn process_faults_take_effect_and_heal() {
    let (injector, testbed, _dir) = lab(TestbedConfig { gateways: 0, ..TestbedConfig::default() }).await;
    let (redis, kafka) = {
        let bed = testbed.lock().await;
        (bed.redis_addr(), bed.client_probe(Target::Broker).unwrap())
    };
    let pid_of = |target| {
        let testbed = testbed.clone();
        async move { testbed.lock().await.process(target).unwrap().pid() }
    };

    // Kill for 1 s: the pid is gone, then Redis is back (same port, same data) by itself.
    let before = pid_of(Target::Redis).await.unwrap();
    let info = injector.inject(fault(Target::Redis, Action::Kill, Some(Duration::from_secs(1)))).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    assert!(!std::path::Path::new(&format!("/proc/{before}")).exists(), "the killed pid is gone");
    // The proxy accepts, then resets the connection its upstream refused: the connect itself
    // may already see the reset.
    if let Ok(mut conn) = TcpStream::connect(redis).await {
        assert!(ping(&mut conn, Duration::from_millis(500)).await.is_err(), "nothing answers while killed");
    }
    let stop = healed_by_itself(&injector, info.id, Duration::from_secs(30)).await;
    assert!(stop["check"]["ok"].as_bool().unwrap(), "{stop}");
    let mut conn = TcpStream::connect(redis).await.unwrap();
    ping(&mut conn, Duration::from_secs(1)).await.expect("Redis back");
    assert_ne!(pid_of(Target::Redis).await, Some(before));

    // Pause the broker: it accepts nothing; resume: it answers again.
    let info = injector.inject(fault(Target::Broker, Action::Pause, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    assert!(kafka.check(Duration::from_millis(500)).await.is_err(), "a paused broker does not answer");
    // Two process faults on one target conflict.
    let conflict = injector.inject(fault(Target::Broker, Action::Kill, None)).await.unwrap_err();
    assert!(matches!(conflict, FaultError::Conflict { id, .. } if id == info.id), "{conflict}");
    let report = injector.heal(info.id).await.unwrap();
    assert!(report.check.ok, "{:?}", report.check);
    kafka.check(Duration::from_secs(1)).await.expect("broker answers after resume");

    // Restart: instant, a new pid, ready.
    let before = pid_of(Target::Broker).await.unwrap();
    let info = injector.inject(fault(Target::Broker, Action::Restart, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    assert_ne!(pid_of(Target::Broker).await, Some(before));
    assert!(stop_of(&injector, info.id).is_some(), "an instant fault stops at once");

    // Unknown component: a clear error naming what exists.
    let err = injector.inject(fault(Target::Processor(3), Action::Kill, None)).await.unwrap_err().to_string();
    assert!(err.contains("no component processor[3]") && err.contains("redis, broker"), "{err}");
    assert!(injector.list().is_empty());
}

async fn redis_cmd(addr: std::net::SocketAddr, parts: &[&str]) -> String {
    chaos::probe::redis_command(addr, parts, Duration::from_secs(5)).await.unwrap()
}

#[tokio::test]
async fn redis_stall_and_loss_with_restore() {
    let (injector, testbed, dir) = lab(TestbedConfig { gateways: 0, ..TestbedConfig::default() }).await;
    let (direct, env) = {
        let bed = testbed.lock().await;
        (bed.redis_direct_addr(), bed.admin_env())
    };

    // Stall: a server-side CLIENT PAUSE; nobody gets an answer until it ends.
    let info =
        injector.inject(fault(Target::Redis, Action::RedisStall, Some(Duration::from_millis(800)))).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let started = Instant::now();
    assert_eq!(redis_cmd(direct, &["PING"]).await, "+PONG");
    assert!(started.elapsed() >= Duration::from_millis(200), "PING waited for the pause: {:?}", started.elapsed());
    healed_by_itself(&injector, info.id, Duration::from_secs(10)).await;

    // Loss and restore: a backup taken earlier brings the key back.
    assert_eq!(redis_cmd(direct, &["SET", "inventory:101", "42"]).await, "+OK");
    let backup = dir.path().join("backup.jsonl");
    let out = std::process::Command::new(flashsale()).arg("backup").arg(&backup).envs(env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(redis_cmd(direct, &["SET", "inventory:101", "1"]).await, "+OK");
    let loss = Action::RedisLoss { restore: Some(backup) };
    let info = injector.inject(fault(Target::Redis, loss, Some(Duration::from_millis(200)))).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let stop = healed_by_itself(&injector, info.id, Duration::from_secs(60)).await;
    assert!(stop["check"]["ok"].as_bool().unwrap(), "{stop}");
    assert_eq!(redis_cmd(direct, &["GET", "inventory:101"]).await, "$2", "restored from the backup (42, not 1)");

    // Loss without a backup: Redis comes back empty (AOF deleted, not replayed).
    let info = injector.inject(fault(Target::Redis, Action::RedisLoss { restore: None }, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let report = injector.heal(info.id).await.unwrap();
    assert!(report.check.ok, "{:?}", report.check);
    assert_eq!(redis_cmd(direct, &["DBSIZE"]).await, ":0");
}

#[tokio::test]
async fn payment_faults_change_its_behaviour_and_heal_to_the_one_before() {
    let env = vec![("PAYMENT_TIMEOUT".to_string(), "300ms".to_string()), ("LOG_LEVEL".into(), "warn".into())];
    let (injector, testbed, _dir) =
        lab(TestbedConfig { gateways: 0, payment: true, service_env: env, ..TestbedConfig::default() }).await;
    let (url, proxied) = {
        let bed = testbed.lock().await;
        (bed.payment_url().unwrap(), format!("http://{}", bed.proxy(Target::Payment).unwrap().addr()))
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let control = || async { http.get(format!("{url}/control")).send().await.unwrap().json::<Value>().await.unwrap() };
    let before = http
        .put(format!("{url}/control"))
        .json(&serde_json::json!({"latency_ms": 5}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let charge = |id: &str| {
        http.post(format!("{proxied}/charge"))
            .json(&serde_json::json!({"request_id": id, "user_id": "u1", "amount": 1}))
            .timeout(Duration::from_secs(3))
            .send()
    };

    // Timeout: twice the processor's PAYMENT_TIMEOUT.
    let info = injector.inject(fault(Target::Payment, Action::PaymentTimeout { latency: None }, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    assert_eq!(control().await["latency_ms"], 600);
    let started = Instant::now();
    assert_eq!(charge("slow-1").await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    let busy = injector.inject(fault(Target::Payment, Action::PaymentOutage, None)).await.unwrap_err();
    assert!(matches!(busy, FaultError::Conflict { .. }), "one payment behaviour at a time: {busy}");
    injector.heal(info.id).await.unwrap();
    assert_eq!(control().await, before, "the behaviour from before the fault is back");

    // Outage: every charge 503.
    let info = injector.inject(fault(Target::Payment, Action::PaymentOutage, None)).await.unwrap();
    assert_eq!(charge("out-1").await.unwrap().status(), 503);
    injector.heal(info.id).await.unwrap();
    assert_eq!(charge("out-2").await.unwrap().status(), 200);

    // Capture then timeout: the caller gives up, yet the charge is in the ledger.
    let late = Action::PaymentCaptureThenTimeout { latency: Some(Duration::from_secs(2)) };
    let info = injector.inject(fault(Target::Payment, late, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let answer = http
        .post(format!("{proxied}/charge"))
        .json(&serde_json::json!({"request_id": "late-1", "user_id": "u1", "amount": 3}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(answer.is_err_and(|e| e.is_timeout()), "the answer comes too late");
    let ledger: Value = http.get(format!("{url}/ledger")).send().await.unwrap().json().await.unwrap();
    assert!(ledger.to_string().contains("late-1"), "captured anyway: {ledger}");
    injector.heal_all("test over").await;
    assert_eq!(control().await, before);
    assert!(injector.list().is_empty());
}

#[tokio::test]
async fn a_paused_broker_opens_the_gateway_breaker_and_the_heal_closes_it() {
    let env = [
        ("LOG_LEVEL", "warn"),
        ("KAFKA_PRODUCE_TIMEOUT", "1s"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3"),
        // Long enough to see it open, short enough to wait out.
        ("CIRCUIT_BREAKER_BASE_TIMEOUT", "5s"),
        ("CIRCUIT_BREAKER_MAX_TIMEOUT", "10s"),
        ("RATE_LIMIT_MAX_REQUESTS", "1000000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let (injector, testbed, _dir) =
        lab(TestbedConfig { gateways: 1, service_env: env, ..TestbedConfig::default() }).await;
    let base = testbed.lock().await.gateway_url(0);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let buy = |id: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let body = serde_json::json!({"user_id": "u1", "item_id": "101", "amount": 1, "request_id": id});
            http.post(format!("{base}/buy")).json(&body).send().await.unwrap().status().as_u16()
        }
    };
    let breaker = || async {
        let health: Value = http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
        health["circuit_breaker_state"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(buy("before".into()).await, 202);

    let info = injector.inject(fault(Target::Broker, Action::Pause, None)).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let mut statuses = Vec::new();
    let mut state = String::new();
    for i in 0..10 {
        statuses.push(buy(format!("paused-{i}")).await);
        state = breaker().await;
        if state == "open" {
            break;
        }
    }
    assert_eq!(state, "open", "after {statuses:?}");
    // A frozen broker keeps its connections: an order on the wire may be written when it thaws
    // (504, status UNKNOWN); once librdkafka gives the connection up, orders certainly stay out
    // (503). Either way the breaker counts a failure.
    assert!(statuses.iter().all(|&s| s == 503 || s == 504), "{statuses:?}");

    let report = injector.heal(info.id).await.unwrap();
    assert!(report.check.ok, "{:?}", report.check);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        if buy(format!("after-{i}")).await == 202 && breaker().await == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker did not close within 30 s of the heal");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes to Redis on a connection of its own until `stop` (at most `limit`): `SET` of `value`
/// bytes under fresh keys. Errors end it (a killed Redis).
fn redis_writer(addr: std::net::SocketAddr, value: usize, limit: Duration) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        let payload = "x".repeat(value);
        let mut written = 0u64;
        while Instant::now() < deadline {
            let key = format!("load:{written}");
            match chaos::probe::redis_command(addr, &["SET", &key, &payload], Duration::from_secs(2)).await {
                Ok(_) => written += 1,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        written
    })
}

#[tokio::test]
async fn resource_faults_must_bite_and_heal() {
    let (injector, testbed, _dir) = lab(TestbedConfig { gateways: 0, ..TestbedConfig::default() }).await;
    let direct = testbed.lock().await.redis_direct_addr();

    // A quota on an idle Redis never throttles it: the heal says the fault did not land.
    let info = injector.inject(fault(Target::Redis, Action::Cpu { cores: 0.01 }, None)).await.unwrap();
    assert!(info.check.ok && info.check.observed.contains("0.01 cores"), "{:?}", info.check);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = injector.heal(info.id).await.unwrap();
    assert!(!report.check.ok && report.check.observed.contains("never bit"), "{:?}", report.check);

    // Under load the same quota throttles it: commands wait for the next period.
    let load = redis_writer(direct, 100, Duration::from_secs(3));
    let info =
        injector.inject(fault(Target::Redis, Action::Cpu { cores: 0.01 }, Some(Duration::from_secs(2)))).await.unwrap();
    assert!(info.check.ok, "{:?}", info.check);
    let stop = healed_by_itself(&injector, info.id, Duration::from_secs(20)).await;
    assert!(stop["check"]["ok"].as_bool().unwrap(), "{stop}");
    assert!(stop["check"]["observed"].as_str().unwrap().contains("throttled"), "{stop}");
    load.await.unwrap();
    assert_eq!(redis_cmd(direct, &["PING"]).await, "+PONG");

    // Redis lives in a memory cgroup of its own from birth (its limit binds on all it uses).
    let redis_pid = |t: &mut chaos::Testbed| t.pids().into_iter().find(|(c, _)| c == "redis").map(|(_, p)| p).unwrap();
    let pid = redis_pid(&mut *testbed.lock().await);
    let memory_home = chaos::cgroups::cgroup_of(pid, chaos::cgroups::Controller::Memory).unwrap();
    assert!(memory_home.contains("flashlab-") && memory_home.ends_with("-redis"), "{memory_home}");

    // A restart while a quota is in force starts inside the quota, in the same memory cgroup.
    let info = injector.inject(fault(Target::Redis, Action::Cpu { cores: 0.5 }, None)).await.unwrap();
    let quota = info.check.observed.split(" in ").nth(1).unwrap().split(" at ").next().unwrap().to_string();
    injector.inject(fault(Target::Redis, Action::Restart, None)).await.unwrap();
    let restarted = redis_pid(&mut *testbed.lock().await);
    assert_ne!(restarted, pid);
    let cpu_home = chaos::cgroups::cgroup_of(restarted, chaos::cgroups::Controller::Cpu).unwrap();
    assert!(quota.ends_with(&cpu_home), "restarted into {cpu_home}, the quota's cgroup is {quota}");
    assert_eq!(chaos::cgroups::cgroup_of(restarted, chaos::cgroups::Controller::Memory).unwrap(), memory_home);
    injector.heal(info.id).await.unwrap();
    assert!(!std::path::Path::new(&quota).exists(), "the quota's cgroup is removed");

    // A memory limit on a Redis that keeps taking 64 KiB values: the OOM killer ends it, the
    // heal starts it again.
    let pid_before = testbed.lock().await.pids().into_iter().find(|(c, _)| c == "redis").map(|(_, p)| p);
    let info = injector
        .inject(fault(Target::Redis, Action::Memory { bytes: 8 << 20, restart: false }, Some(Duration::from_secs(4))))
        .await
        .unwrap();
    assert!(info.check.ok && info.check.observed.contains("8.0 MiB"), "{:?}", info.check);
    let load = redis_writer(direct, 64 * 1024, Duration::from_secs(3));
    let stop = healed_by_itself(&injector, info.id, Duration::from_secs(60)).await;
    load.await.unwrap();
    let observed = stop["check"]["observed"].as_str().unwrap().to_string();
    assert!(stop["check"]["ok"].as_bool().unwrap(), "{stop}");
    assert!(observed.contains("1 OOM kill") && observed.contains("OOM-killed, started again"), "{observed}");
    let pid_after = testbed.lock().await.pids().into_iter().find(|(c, _)| c == "redis").map(|(_, p)| p);
    assert_ne!(pid_before, pid_after);
    assert_eq!(redis_cmd(direct, &["PING"]).await, "+PONG");
}

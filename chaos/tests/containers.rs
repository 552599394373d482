//! The container runtime on the real Docker engine: the images build from this machine's programs
//! and a second build changes nothing; a Redis container started through `testcontainers` on the
//! run's network answers on 127.0.0.1 only, survives kill -9 and a restart with its data and
//! port, is frozen by pause, and is gone with its network when the run ends — and when the lab
//! is killed with -9 (its reaper), or, with the reaper killed too, at the next start (the sweep);
//! the drills' testbed on containers takes its faults through the injector and heals them. The
//! whole system on containers is tested as a user runs it, in `scenarios/tests/up.rs`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaos::containers::images::{self, Component, Sources};
use chaos::containers::{left_of, ContainerSpec, Runtime};
use chaos::probe::{redis_answer, redis_command, Probe};

/// Set in the child "lab" of the kill -9 tests: the run id it starts.
const CHILD_RUN: &str = "FLASHLAB_TEST_CHILD_RUN";

fn build_images() {
    let sources = Sources::from_machine().expect("the programs the images hold (ci/setup; cargo build)");
    images::build(&sources).expect("images build");
}

fn redis_spec(dir: &std::path::Path) -> ContainerSpec {
    ContainerSpec {
        name: "redis".into(),
        image: Component::Redis.local_image(),
        cmd: [
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--dir",
            "/data",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
        ]
        .map(String::from)
        .to_vec(),
        env: Vec::new(),
        port: 6379,
        host_port: None,
        probe: Probe::RedisPing(([0, 0, 0, 0], 6379).into()),
        ready_timeout: Duration::from_secs(30),
        log_path: dir.join("redis.log"),
        mount: None,
    }
}

fn run_id(what: &str) -> String {
    format!("t{}-{what}", std::process::id())
}

async fn wait_gone(run: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = left_of(run).expect("docker ps");
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_images_build_from_this_machine_and_a_second_build_changes_nothing() {
    let sources = Sources::from_machine().expect("programs");
    let first = images::build(&sources).expect("first build");
    assert_eq!(first.len(), 3);
    let second = images::build(&sources).expect("second build");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.image, b.image, "the same files, the same tag");
        assert!(!b.fresh, "{} rebuilt though nothing changed", b.image);
        assert!(b.bytes > 1_000_000, "{}: {} bytes", b.image, b.bytes);
    }
    // The image runs its program as the non-root user.
    let out = images::docker(
        &["image", "inspect", "--format", "{{.Config.User}} {{.Config.WorkingDir}}", &Component::Redis.local_image()]
            .map(String::from),
        None,
    )
    .unwrap();
    assert_eq!(out.trim(), format!("{0}:{0} /data", images::UID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_container_serves_on_loopback_survives_kill_and_pause_and_goes_with_its_run() {
    build_images();
    let dir = tempfile::tempdir().unwrap();
    let run = run_id("redis");
    let mut runtime = Runtime::start(&run).await.expect("runtime");
    let mut redis = runtime.start_container(redis_spec(dir.path())).await.expect("redis container");
    let addr: SocketAddr = redis.addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    let ask = |parts: &'static [&'static str]| async move { redis_command(addr, parts, Duration::from_secs(2)).await };
    let get = || async move { redis_answer(addr, &["GET", "k"], Duration::from_secs(2)).await };
    assert_eq!(ask(&["SET", "k", "v"]).await.unwrap(), "+OK");

    // Published on 127.0.0.1 only.
    let bindings = images::docker(
        &["inspect", "--format", "{{json .HostConfig.PortBindings}}", redis.name()].map(String::from),
        None,
    )
    .unwrap();
    assert!(bindings.contains("\"HostIp\":\"127.0.0.1\""), "{bindings}");
    // On the run's network, by its name.
    let networks = images::docker(
        &["inspect", "--format", "{{json .NetworkSettings.Networks}}", redis.name()].map(String::from),
        None,
    )
    .unwrap();
    assert!(networks.contains(runtime.network()), "{networks}");

    // kill -9, then the same container again: its data (AOF, fsync always) and its port.
    redis.kill().await.unwrap();
    assert!(ask(&["PING"]).await.is_err(), "answers after kill -9");
    redis.start_again().await.expect("started again");
    assert_eq!(redis.addr(), addr);
    assert_eq!(get().await.unwrap(), "$1\r\nv\r\n");

    // Paused: frozen, no answer; resumed: answers.
    redis.pause().await.unwrap();
    let frozen = redis_command(addr, &["PING"], Duration::from_millis(500)).await;
    assert!(frozen.is_err(), "a paused container answered: {frozen:?}");
    redis.resume().await.unwrap();
    assert_eq!(ask(&["PING"]).await.unwrap(), "+PONG");

    assert!(!left_of(&run).unwrap().is_empty());
    drop(redis);
    assert!(dir.path().join("redis.log").metadata().map(|m| m.len() > 0).unwrap_or(false), "its log was kept");
    runtime.remove_all().unwrap();
    assert_eq!(left_of(&run).unwrap(), Vec::<String>::new());
}

/// Not a test on its own: the "lab" the kill -9 tests start and kill (it waits to be killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the kill -9 tests as their child lab"]
async fn child_lab() {
    let Ok(run) = std::env::var(CHILD_RUN) else { return };
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&run).await.expect("runtime");
    let _redis = runtime.start_container(redis_spec(dir.path())).await.expect("redis");
    println!("ready");
    // Bounded: the parent kills it long before.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Starts the child lab on `run` and waits until its container runs; returns it.
fn start_child_lab(run: &str) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_lab", "--nocapture", "--test-threads=1"])
        .env(CHILD_RUN, run)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90)).expect("the child lab's container ran");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_killed_with_9_leaves_no_container_or_network() {
    build_images();
    let run = run_id("kill9");
    let mut lab = start_child_lab(&run);
    assert_eq!(left_of(&run).unwrap().len(), 2, "a container and a network while it runs");
    lab.kill().unwrap(); // SIGKILL
    lab.wait().unwrap();
    let left = wait_gone(&run, Duration::from_secs(60)).await;
    assert!(left.is_empty(), "left behind by a lab killed with -9: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_reaper_a_dead_labs_leftovers_go_at_the_next_start() {
    build_images();
    let run = run_id("sweep");
    let mut lab = start_child_lab(&run);
    // The reaper first (it would clean up), then the lab: nothing cleans up now.
    let reapers =
        Command::new("pkill").args(["-KILL", "-f", &format!("label=dev.flashlab.run={run}")]).status().unwrap();
    assert!(reapers.success(), "the child lab's reaper was found and killed");
    lab.kill().unwrap();
    lab.wait().unwrap();
    assert_eq!(left_of(&run).unwrap().len(), 2, "left behind, with no reaper");
    // The next start sweeps them.
    let mut next = Runtime::start(&run_id("after-sweep")).await.expect("runtime");
    assert_eq!(left_of(&run).unwrap(), Vec::<String>::new());
    next.remove_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_container_is_cut_off_from_its_peers_and_the_lab_until_healed() {
    build_images();
    let dir = tempfile::tempdir().unwrap();
    let run = run_id("partition");
    let mut runtime = Runtime::start(&run).await.expect("runtime");
    let a = runtime.start_container(redis_spec(dir.path())).await.expect("redis a");
    let mut b_spec = redis_spec(dir.path());
    b_spec.name = "peer".into();
    b_spec.log_path = dir.path().join("peer.log");
    let b = runtime.start_container(b_spec).await.expect("redis b");
    let target = a.name().to_string();
    let ping_a_from_b = || async { b.exec(&[], &["redis-cli", "-h", &target, "-p", "6379", "--no-raw", "ping"]).await };
    // Peers find each other by name on the run's network.
    assert!(ping_a_from_b().await.unwrap().contains("PONG"));

    a.disconnect(runtime.network()).await.unwrap();
    let cut = ping_a_from_b().await;
    assert!(!cut.as_deref().unwrap_or("").contains("PONG"), "the peer still reached it: {cut:?}");
    let lab = redis_command(a.addr(), &["PING"], Duration::from_millis(500)).await;
    assert!(lab.is_err(), "the lab still reached it through its published port: {lab:?}");

    a.connect(runtime.network()).await.unwrap();
    assert!(ping_a_from_b().await.unwrap().contains("PONG"), "healed: found by name again");
    drop((a, b));
    runtime.remove_all().unwrap();
}

/// `curl` of `url` (bounded): the HTTP status, `000` when nothing answered.
fn http_status(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An order through the gateway at `url`, and its state once decided (bounded).
fn order_decided(url: &str, id: &str) -> String {
    let body = format!(r#"{{"user_id":"u-{id}","item_id":"101","amount":1,"request_id":"{id}"}}"#);
    // A gateway whose Redis was just started again may answer the first try 503 or 504 (its
    // connection to the killed Redis times out first).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let accepted =
            http_status(&format!("{url}/buy"), &["-X", "POST", "-H", "Content-Type: application/json", "-d", &body]);
        if accepted == "202" {
            break;
        }
        assert!(Instant::now() < deadline && (accepted == "503" || accepted == "504"), "{id} not accepted: {accepted}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl").args(["-s", "-m", "3", &format!("{url}/orders/{id}")]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        for state in ["COMPLETED", "FAILED", "SOLD_OUT"] {
            if text.contains(state) {
                return state.to_string();
            }
        }
        assert!(Instant::now() < deadline, "{id} undecided: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The drills' testbed on containers in `dir` (a gateway, a processor, payment; Redis with
/// `redis_replicas` replicas), its components from flashlab's images but for `images`.
fn containers_config(
    dir: &std::path::Path,
    redis_replicas: usize,
    images: Vec<(Component, String)>,
) -> chaos::TestbedConfig {
    chaos::TestbedConfig {
        dir: Some(dir.join("system")),
        gateways: 1,
        processors: 1,
        payment: true,
        redis_replicas,
        runtime: chaos::testbed::RuntimeKind::Containers,
        images,
        ..chaos::TestbedConfig::default()
    }
}

/// [`containers_config`] started, 100 of item 101 in stock: it, its run id and its gateway's URL.
async fn system_on_containers(
    dir: &std::path::Path,
    redis_replicas: usize,
    images: Vec<(Component, String)>,
) -> (chaos::Testbed, String, String) {
    let config = containers_config(dir, redis_replicas, images);
    let bed = chaos::Testbed::start(config).await.expect("the testbed on containers");
    let run = bed.network().expect("a network").strip_prefix("flashlab-").unwrap().to_string();
    let url = bed.gateway_url(0);
    let stock = Command::new(bed.flashsale_bin()).args(["stock", "set", "101", "100"]).envs(bed.admin_env()).output();
    assert!(stock.unwrap().status.success(), "stock set through the published ports");
    (bed, run, url)
}

/// The testbed of the drills on containers, faults through the injector: pause is the cgroup
/// freezer; a partition off the network silences the gateway's published port and a partition
/// from Redis sets Redis' proxy for the processor's address only (on payment, which never talks
/// to Redis, it lands on nothing and its check fails); a kill and its heal keep the published
/// port; a CPU quota is set by the engine, kept across a restart, bites and is lifted; a memory
/// limit gets Redis OOM-killed and is lifted, Redis started again; orders flow through the
/// proxies before, during and after; everything goes at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_testbed_on_containers_takes_its_faults_through_the_injector_and_heals_them() {
    use chaos::{Action, EventLog, Fault, Injector, Target};
    let dir = tempfile::tempdir().unwrap();
    let (bed, run, url) = system_on_containers(dir.path(), 0, Vec::new()).await;
    let network = bed.network().expect("a network").to_string();
    assert_eq!(left_of(&run).unwrap().len(), 6, "redis, broker, payment, processor, gateway and their network");
    assert_eq!(order_decided(&url, "before"), "COMPLETED");
    let broker_addr = bed.kafka_direct_addr();
    let bed = std::sync::Arc::new(tokio::sync::Mutex::new(bed));
    let injector = Injector::new(bed.clone(), EventLog::to_file(&dir.path().join("events.jsonl")).unwrap());
    let fault = |target, action| Fault { target, action, duration: None };

    let paused = injector.inject(fault(Target::Processor(0), Action::Pause)).await.unwrap();
    assert!(paused.check.ok && paused.check.observed.contains("freezer FROZEN"), "{:?}", paused.check);
    let thawed = injector.heal(paused.id).await.unwrap();
    assert!(thawed.check.ok && thawed.check.observed.contains("freezer THAWED"), "{:?}", thawed.check);

    let cut = injector.inject(fault(Target::Gateway(0), Action::Partition { from: None })).await.unwrap();
    assert!(cut.check.ok && cut.check.observed.contains(&format!("off {network}")), "{:?}", cut.check);
    assert_eq!(http_status(&format!("{url}/health"), &[]), "000", "the lab reached a gateway cut off the network");
    let back = injector.heal(cut.id).await.unwrap();
    assert!(back.check.ok, "{:?}", back.check);
    assert_eq!(http_status(&format!("{url}/health"), &[]), "200");

    let from_redis =
        injector.inject(fault(Target::Processor(0), Action::Partition { from: Some(Target::Redis) })).await.unwrap();
    assert!(
        from_redis.check.ok
            && from_redis.check.observed.starts_with("redis's proxy holds everything from ")
            && from_redis.check.observed.contains(&format!("(processor[0] on {network})")),
        "{:?}",
        from_redis.check
    );
    let lifted = injector.heal(from_redis.id).await.unwrap();
    assert!(lifted.check.ok, "{:?}", lifted.check);
    // A partition from a peer the component never talks to lands on nothing: payment has no
    // connection to Redis, so its check fails though the proxy took the setting.
    let nothing =
        injector.inject(fault(Target::Payment, Action::Partition { from: Some(Target::Redis) })).await.unwrap();
    assert!(
        !nothing.check.ok && nothing.check.observed.ends_with(": 0 open connection(s) from there"),
        "{:?}",
        nothing.check
    );
    let lifted = injector.heal(nothing.id).await.unwrap();
    assert!(lifted.check.ok, "{:?}", lifted.check);

    let killed = injector.inject(fault(Target::Broker, Action::Kill)).await.unwrap();
    assert!(killed.check.ok && killed.check.observed.contains("gone"), "{:?}", killed.check);
    let started = injector.heal(killed.id).await.unwrap();
    assert!(started.check.ok, "{:?}", started.check);
    assert_eq!(bed.lock().await.kafka_direct_addr(), broker_addr, "the same published port");

    // A CPU quota is the engine's (`docker update`), read back from the kernel, kept across a
    // restart of the container, bitten by an order's work, and lifted.
    let quota_of = |pid: u32| {
        let rel = chaos::cgroups::cgroup_of(pid, chaos::cgroups::Controller::Cpu).unwrap();
        let dir = std::path::Path::new("/sys/fs/cgroup/cpu").join(rel.trim_start_matches('/'));
        std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap().trim().to_string()
    };
    let starved = injector.inject(fault(Target::Processor(0), Action::Cpu { cores: 0.05 })).await.unwrap();
    assert!(starved.check.ok && starved.check.observed.contains("at 0.05 cores"), "{:?}", starved.check);
    let restarted = injector.inject(fault(Target::Processor(0), Action::Restart)).await.unwrap();
    assert!(restarted.check.ok, "{:?}", restarted.check);
    let pid = bed.lock().await.processor(0).pid().expect("the processor runs again");
    assert_eq!(quota_of(pid), "5000", "the quota after the container's restart");
    assert_eq!(order_decided(&url, "starved"), "COMPLETED");
    let fed = injector.heal(starved.id).await.unwrap();
    assert!(fed.check.ok && fed.check.observed.contains("no quota"), "{:?}", fed.check);
    assert!(
        fed.check.observed.starts_with("throttled ") && !fed.check.observed.starts_with("throttled 0 "),
        "{:?}",
        fed.check
    );
    assert_eq!(quota_of(pid), "-1", "the quota lifted");

    // Below Docker's least limit: refused before anything is touched.
    let running = bed.lock().await.processor(0).pid();
    let small = Action::Memory { bytes: 2 << 20, restart: true };
    let refused = injector.inject(fault(Target::Processor(0), small)).await.unwrap_err();
    assert!(refused.to_string().contains("least memory limit is 6 MiB"), "{refused}");
    assert_eq!(bed.lock().await.processor(0).pid(), running, "the processor untouched");

    // A memory limit on a Redis that keeps taking 64 KiB values (128 MiB at most): the OOM
    // killer ends it — the engine says so — and the heal lifts the limit and starts it again.
    let redis = bed.lock().await.redis_direct_addr();
    let limited =
        injector.inject(fault(Target::Redis, Action::Memory { bytes: 16 << 20, restart: false })).await.unwrap();
    assert!(limited.check.ok && limited.check.observed.contains("at 16.0 MiB"), "{:?}", limited.check);
    let value = "x".repeat(64 * 1024);
    let mut written = 0;
    while written < 2048 {
        let key = format!("big-{written}");
        if chaos::probe::redis_command(redis, &["SET", &key, &value], Duration::from_secs(2)).await.is_err() {
            break;
        }
        written += 1;
    }
    assert!(written < 2048, "128 MiB written under a 16 MiB limit");
    let lifted = injector.heal(limited.id).await.unwrap();
    let observed = &lifted.check.observed;
    assert!(lifted.check.ok, "{:?}", lifted.check);
    assert!(observed.contains("OOM-killed (State.OOMKilled)") && observed.contains("started again"), "{observed}");
    assert!(observed.contains("limit lifted to 1048576.0 MiB"), "{observed}");
    assert_eq!(chaos::probe::redis_command(redis, &["PING"], Duration::from_secs(2)).await.as_deref(), Ok("+PONG"));

    assert_eq!(order_decided(&url, "after"), "COMPLETED");
    bed.lock().await.stop_all().await.expect("stops in order");
    drop(injector);
    drop(bed);
    assert_eq!(left_of(&run).unwrap(), Vec::<String>::new(), "nothing left of the run");
    let log = std::fs::read_to_string(dir.path().join("system/processors/processor-0.log")).unwrap_or_default();
    assert!(!log.is_empty(), "the processor's log is kept in its directory");
}

/// Replicated Redis on containers: every node and sentinel a container of the run; the services
/// find the primary through the sentinels by their names on the run's network; a latency on
/// `replication[1]` is keyed on the replica's address on that network and holds back what the
/// replica gets (a key written on the primary is not on the replica at once) while the lab's
/// own reads are not slowed, and it is lifted; the on-call's failover promotes the replica and
/// the services follow it; everything goes at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_redis_on_containers_fails_over_and_its_replication_takes_faults() {
    use chaos::faults::Directions;
    use chaos::proxy::Toxic;
    use chaos::testbed::failover::{manual_failover, Handover};
    use chaos::{Action, EventLog, Fault, Injector, Target};
    let dir = tempfile::tempdir().unwrap();
    let (mut bed, run, url) = system_on_containers(dir.path(), 1, Vec::new()).await;
    let network = bed.network().expect("a network").to_string();
    let left = left_of(&run).unwrap();
    assert_eq!(left.len(), 10, "two Redis, three sentinels, broker, payment, processor, gateway, network: {left:?}");
    let gateway_env = bed.process(Target::Gateway(0)).unwrap().spec().env.clone();
    let sentinels_var = gateway_env.iter().find(|(k, _)| k == "REDIS_SENTINELS").map(|(_, v)| v.clone());
    assert_eq!(
        sentinels_var,
        Some((0..3).map(|i| format!("flashlab-{run}-sentinel-{i}:26379")).collect::<Vec<_>>().join(",")),
        "the services reach the sentinels by name"
    );
    let sentinels: Vec<SocketAddr> = bed
        .admin_env()
        .iter()
        .find(|(k, _)| k == "REDIS_SENTINELS")
        .map(|(_, v)| v.split(',').map(|a| a.parse().unwrap()).collect())
        .expect("the lab reaches the sentinels on 127.0.0.1");
    assert!(sentinels.iter().all(|s| s.ip().is_loopback()), "{sentinels:?}");
    assert_eq!(order_decided(&url, "before"), "COMPLETED");
    let nodes = bed.redis_nodes();
    let (primary, replica) = (nodes[0].1, nodes[1].1);
    let bed = std::sync::Arc::new(tokio::sync::Mutex::new(bed));
    let injector = Injector::new(bed.clone(), EventLog::to_file(&dir.path().join("events.jsonl")).unwrap());

    let toxic = Toxic::Latency { latency: Duration::from_secs(2), jitter: Duration::ZERO };
    let action = Action::Network { toxic, directions: Directions::Both, toxicity: 1.0 };
    let lag = injector.inject(Fault { target: Target::RedisLink(1), action, duration: None }).await.unwrap();
    let from: std::net::IpAddr = lag
        .check
        .observed
        .split("connections from ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(lag.check.ok && !from.is_loopback(), "keyed on the replica's address on {network}: {:?}", lag.check);
    eprintln!("replication[1]: {}", lag.check.observed);
    let replicating = bed.lock().await.proxy(Target::RedisNode(0)).unwrap().open_from(from);
    assert!(replicating > 0, "no connection from {from} to the primary's proxy: not the replica's address");
    let set = redis_command(primary, &["SET", "lagged", "yes"], Duration::from_secs(2)).await;
    assert_eq!(set.as_deref(), Ok("+OK"), "the lab's own write is not slowed");
    let at_once = redis_answer(replica, &["GET", "lagged"], Duration::from_secs(1)).await.unwrap();
    assert!(at_once.starts_with("$-1"), "the replica had the key at once ({at_once:?}): its link was not slowed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !redis_answer(replica, &["GET", "lagged"], Duration::from_secs(1)).await.unwrap().contains("yes") {
        assert!(Instant::now() < deadline, "the key never reached the replica");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lifted = injector.heal(lag.id).await.unwrap();
    assert!(lifted.check.ok && lifted.check.observed.contains(&from.to_string()), "{:?}", lifted.check);

    let failover = manual_failover(&sentinels, &nodes, Duration::from_secs(30), Handover::Coordinated)
        .await
        .expect("the on-call's failover");
    assert_eq!(failover.to, nodes[1].0, "{failover}");
    eprintln!("on containers: {failover}");
    assert_eq!(bed.lock().await.refresh_primary().await, Some(1));
    assert_eq!(order_decided(&url, "after"), "COMPLETED", "the services follow the new primary");

    bed.lock().await.stop_all().await.expect("stops in order");
    drop(injector);
    drop(bed);
    assert_eq!(left_of(&run).unwrap(), Vec::<String>::new(), "nothing left of the run");
    let log = std::fs::read_to_string(dir.path().join("system/redis/sentinels/sentinel-0.log")).unwrap_or_default();
    assert!(log.contains("+switch-master"), "the sentinel's log is kept and names the switch: {log}");
}

/// A deploy on containers: the candidate (here the same binary with another setting) gets an
/// image of its own and runs in a container of its own on the same published port, named by its
/// build info, the release's stopped container gone; an order is decided on it; the rollback
/// puts the release's image back under its first name; a candidate that never gets ready fails
/// the deploy and leaves the release running; both containers' logs are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_on_containers_runs_the_candidates_image_and_its_rollback_the_releases() {
    use chaos::testbed::release::Build;
    use chaos::Target;
    let dir = tempfile::tempdir().unwrap();
    let (mut bed, run, url) = system_on_containers(dir.path(), 0, Vec::new()).await;
    let addr = bed.processor_addr(0);
    let metrics = || {
        let out = Command::new("curl").args(["-s", "-m", "3", &format!("http://{addr}/metrics")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let containers = || left_of(&run).unwrap().into_iter().filter(|c| c.contains("processor")).collect::<Vec<_>>();
    assert_eq!(containers(), [format!("container flashlab-{run}-processor-0")], "before");

    let candidate = Build {
        release: "candidate".into(),
        program: bed.flashsale_bin().to_path_buf(),
        env: vec![("PROCESSOR_MAX_IN_FLIGHT".into(), "7".into())],
    };
    bed.deploy(Target::Processor(0), Some(&candidate)).await.expect("the candidate starts");
    assert_eq!(bed.processor_addr(0), addr, "the same published port");
    assert_eq!(containers(), [format!("container flashlab-{run}-processor-0-candidate")], "the candidate's alone");
    let image = bed.process(Target::Processor(0)).unwrap().spec().program.display().to_string();
    assert!(image.starts_with("flashlab/flashsale-candidate:"), "{image}");
    let page = metrics();
    assert!(page.contains("processor_orders_in_flight_limit 7") && page.contains(r#"release="candidate""#), "{page}");
    assert_eq!(order_decided(&url, "on-candidate"), "COMPLETED");

    bed.deploy(Target::Processor(0), None).await.expect("the rollback");
    assert_eq!(containers(), [format!("container flashlab-{run}-processor-0")], "the release's again");
    let page = metrics();
    assert!(
        page.contains("processor_orders_in_flight_limit 256") && !page.contains(r#"release="candidate""#),
        "{page}"
    );

    // A candidate that exits at once (its Redis setting is not HOST:PORT): the deploy fails and
    // the release runs again in its container.
    let broken =
        Build { release: "broken".into(), env: vec![("REDIS_SENTINELS".into(), "nowhere".into())], ..candidate };
    let failed = bed.deploy(Target::Processor(0), Some(&broken)).await.unwrap_err().to_string();
    assert!(
        failed.contains("exited (exited) before it was ready") && failed.contains("the previous build started again"),
        "{failed}"
    );
    assert_eq!(containers(), [format!("container flashlab-{run}-processor-0")], "the release's, running");
    assert!(bed.deployed().is_empty(), "the testbed says the release runs: {:?}", bed.deployed());
    assert_eq!(order_decided(&url, "after"), "COMPLETED");

    bed.stop().await.expect("stops in order");
    assert_eq!(left_of(&run).unwrap(), Vec::<String>::new(), "nothing left of the run");
    let processors = dir.path().join("system/processors");
    for log in ["processor-0.log", "processor-0-candidate.log", "processor-0-broken.log"] {
        let text = std::fs::read_to_string(processors.join(log)).unwrap_or_default();
        assert!(!text.is_empty(), "{log} kept");
    }
    // The release's first container and the one the rollback started share a log file, each its
    // own section.
    let release = std::fs::read_to_string(processors.join("processor-0.log")).unwrap();
    let second = format!("--- flashlab-{run}-processor-0 ---");
    assert!(release.find(&second).is_some_and(|at| at > 0), "the first container's log was overwritten: {release}");
}

/// Another image for a component (`--image redis=…`): Redis runs from the image the user names
/// — here flashlab's own Redis image under another name, as no registry is reachable on the
/// machine the lab is developed on — and the rest from flashlab's; an order is decided. An image
/// the engine lacks and cannot pull is refused before anything of the run is created, and the
/// error says the pull failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_runs_from_an_image_the_user_names_and_one_that_cannot_be_had_is_refused() {
    build_images();
    let other = format!("flashlab-test/redis-elsewhere:t{}", std::process::id());
    let docker = |args: &[&str]| images::docker(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>(), None);
    docker(&["tag", &Component::Redis.local_image(), &other]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bed, run, url) = system_on_containers(dir.path(), 0, vec![(Component::Redis, other.clone())]).await;
    let image_of =
        |name: &str| docker(&["inspect", "--format", "{{.Config.Image}}", &format!("flashlab-{run}-{name}")]);
    assert_eq!(image_of("redis").unwrap().trim(), other, "Redis from the image named");
    assert!(image_of("broker").unwrap().trim().starts_with("flashlab/broker:"), "the broker from flashlab's");
    assert_eq!(order_decided(&url, "elsewhere"), "COMPLETED");
    bed.stop().await.expect("stops");
    assert_eq!(left_of(&run).unwrap(), Vec::<String>::new());

    let mine = format!("label={}={}", chaos::containers::LABEL_LAB, chaos::containers::lab_identity());
    let networks = || docker(&["network", "ls", "--quiet", "--filter", &mine]).unwrap();
    let before = networks();
    let absent = "flashlab-test/absent:never";
    let config = containers_config(&dir.path().join("second"), 0, vec![(Component::Redis, absent.into())]);
    let refused = chaos::Testbed::start(config).await.unwrap_err().to_string();
    assert!(refused.contains(&format!("redis={absent}: not on this machine, and the pull failed")), "{refused}");
    assert_eq!(networks(), before, "a network was created for a run that could not start");
    docker(&["rmi", &other]).unwrap();
}

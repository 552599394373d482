//! The services' Redis connection with Sentinel, against real processes: a primary, a replica
//! and three sentinels on loopback. The connection finds the primary through the sentinels,
//! and after the primary is killed and Sentinel promotes the replica, calls reach the new
//! primary by themselves — a write succeeds there, within a bound.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chaos::components::{self, SentinelSettings};
use chaos::ports::{free_port, loopback};
use chaos::Supervised;
use flashsale::redis_conn::{Durability, Redis, RedisEndpoint, RedisError};

async fn start(spec: chaos::process::ProcessSpec) -> Supervised {
    Supervised::start(spec).await.expect("starts")
}

/// A primary, its replica and three sentinels on loopback, Sentinel's down-after set to
/// `down_after` (its failover timeout 5 s, or 10 s for a down-after of 30 s and more: no
/// automatic failover then). Kept alive by the returned handles.
struct Set {
    _dir: tempfile::TempDir,
    primary: Supervised,
    replica: Supervised,
    _sentinels: Vec<Supervised>,
    a: SocketAddr,
    b: SocketAddr,
    addrs: Vec<SocketAddr>,
}

async fn sentinel_set(down_after: Duration) -> Set {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let a: SocketAddr = loopback(free_port().unwrap());
    let b: SocketAddr = loopback(free_port().unwrap());
    let primary = start(components::redis_node(0, a, a, None, None, &node_dir("r0"))).await;
    let replica = start(components::redis_node(
        1,
        b,
        b,
        Some(a),
        Some(chaos::testbed::replication::replica_source(1)),
        &node_dir("r1"),
    ))
    .await;
    let failover_timeout = if down_after >= Duration::from_secs(30) { 10 } else { 5 };
    let settings = SentinelSettings {
        master: "flashsale".into(),
        quorum: 2,
        down_after,
        failover_timeout: Duration::from_secs(failover_timeout),
    };
    let mut sentinels = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let addr = loopback(free_port().unwrap());
        let sentinel_dir = node_dir(&format!("s{i}"));
        let spec = components::sentinel(i, addr, a, &settings, &sentinel_dir, &sentinel_dir).unwrap();
        sentinels.push(start(spec).await);
        addrs.push(addr);
    }
    Set { _dir: dir, primary, replica, _sentinels: sentinels, a, b, addrs }
}

fn endpoint(set: &Set) -> RedisEndpoint {
    RedisEndpoint::Sentinel {
        sentinels: set.addrs.iter().map(ToString::to_string).collect(),
        master: "flashsale".into(),
    }
}

#[tokio::test]
async fn calls_follow_the_primary_through_a_sentinel_failover() {
    let mut nodes = sentinel_set(components::SENTINEL_MIN_DOWN_AFTER).await;
    let (a, b) = (nodes.a, nodes.b);
    let endpoint = endpoint(&nodes);
    let redis = Redis::connect_when_up(&endpoint, Duration::from_millis(500), Duration::from_secs(10)).await.unwrap();
    assert_eq!(redis.addr(), a.to_string());
    let set = |v: &'static str| {
        let redis = redis.clone();
        async move {
            redis
                .call(|mut c| async move { redis::cmd("SET").arg("k").arg(v).query_async::<String>(&mut c).await })
                .await
        }
    };
    set("1").await.unwrap();

    // WAIT: a write is acknowledged once the replica has it, refused while the replica is frozen.
    let durable = redis.clone().with_durability(Some(Durability { replicas: 1, timeout: Duration::from_millis(200) }));
    let write = |v: &'static str| {
        let durable = durable.clone();
        async move {
            durable
                .call_durable(
                    |mut c| async move { redis::cmd("SET").arg("d").arg(v).query_async::<String>(&mut c).await },
                )
                .await
        }
    };
    // The replica may still be catching up with the primary at first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while write("1").await.is_err() {
        assert!(Instant::now() < deadline, "a write never reached the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes.replica.pause().unwrap();
    match write("2").await {
        Err(RedisError::NotReplicated { acked: 0, wanted: 1 }) => {}
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    nodes.replica.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while write("3").await.is_err() {
        assert!(Instant::now() < deadline, "writes not replicated again after the thaw");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The primary dies; Sentinel needs down_after (2 s), a vote and the promotion.
    nodes.primary.kill().await.unwrap();
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(30) {
        match set("2").await {
            Ok(_) if redis.addr() == b.to_string() => break,
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(redis.addr(), b.to_string(), "still on {} after {:?}; last: {last:?}", redis.addr(), started.elapsed());
    let took = started.elapsed();
    eprintln!("writes reached the promoted replica {took:?} after the primary died");
    let got: String =
        redis.call(|mut c| async move { redis::cmd("GET").arg("k").query_async(&mut c).await }).await.unwrap();
    assert_eq!(got, "2");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// The on-call's failover (`chaos::testbed::failover`) holds the primary's writes, then makes
/// the old primary a replica: the writes it held are refused `READONLY` — they never ran. A
/// plain call reports the refusal; `call_following` (the gateway's claim) runs the write again
/// on the new primary, so the buyer never sees it.
#[tokio::test]
async fn a_write_held_through_the_on_calls_failover_runs_on_the_new_primary() {
    use chaos::testbed::failover::{manual_failover, Handover};
    // No automatic failover in the test: only the on-call's.
    let nodes = sentinel_set(Duration::from_secs(30)).await;
    let (a, b, addrs) = (nodes.a, nodes.b, nodes.addrs.clone());
    let endpoint = endpoint(&nodes);
    let connect = || Redis::connect_when_up(&endpoint, Duration::from_secs(5), Duration::from_secs(10));
    let (plain, following) = (connect().await.unwrap(), connect().await.unwrap());
    let info = |addr: SocketAddr, section: &'static str| async move {
        chaos::probe::redis_answer(addr, &["INFO", section], Duration::from_secs(1)).await.unwrap_or_default()
    };
    // The replica in sync first: a failover before it is not what is tested here.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !info(b, "replication").await.contains("master_link_status:up") {
        assert!(Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hold the primary's writes the way the failover does, with a write from each connection.
    let paused = chaos::probe::redis_command(a, &["CLIENT", "PAUSE", "20000", "WRITE"], Duration::from_secs(1)).await;
    assert_eq!(paused.as_deref(), Ok("+OK"));
    let set = |key: &'static str| {
        move |mut c: redis::aio::ConnectionManager| async move {
            redis::cmd("SET").arg(key).arg("held").query_async::<String>(&mut c).await
        }
    };
    let plain_write = tokio::spawn(async move { plain.call(set("plain")).await });
    let following_write = tokio::spawn({
        let following = following.clone();
        async move { following.call_following(set("following")).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !info(a, "clients").await.contains("blocked_clients:2") {
        assert!(Instant::now() < deadline, "the two writes were not held: {}", info(a, "clients").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let failover = manual_failover(&addrs, &[], Duration::from_secs(20), Handover::Coordinated).await.unwrap();
    assert_eq!(failover.to, b, "{failover}");
    match plain_write.await.unwrap() {
        Err(RedisError::Redis(e)) if e.code() == Some("READONLY") => {}
        other => panic!("the held write on the plain call: expected READONLY, got {other:?} ({failover})"),
    }
    let written = following_write.await.unwrap();
    assert_eq!(written.as_deref().ok(), Some("OK"), "{written:?} ({failover})");
    assert_eq!(following.addr(), b.to_string());
    let on_b = chaos::probe::redis_answer(b, &["GET", "following"], Duration::from_secs(1)).await.unwrap();
    assert!(on_b.contains("\r\nheld\r\n"), "{on_b:?}");
}

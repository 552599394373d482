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

#[tokio::test]
async fn calls_follow_the_primary_through_a_sentinel_failover() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let a: SocketAddr = loopback(free_port().unwrap());
    let b: SocketAddr = loopback(free_port().unwrap());
    let mut primary = start(components::redis_node(0, a, a, None, &node_dir("r0"))).await;
    let replica = start(components::redis_node(1, b, b, Some(a), &node_dir("r1"))).await;
    let settings = SentinelSettings {
        master: "flashsale".into(),
        quorum: 2,
        down_after: Duration::from_millis(1000),
        failover_timeout: Duration::from_secs(5),
    };
    let mut sentinels = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let addr = loopback(free_port().unwrap());
        let spec = components::sentinel(i, addr, a, &settings, &node_dir(&format!("s{i}"))).unwrap();
        sentinels.push(start(spec).await);
        addrs.push(addr.to_string());
    }
    let endpoint = RedisEndpoint::Sentinel { sentinels: addrs, master: "flashsale".into() };
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
    replica.pause().unwrap();
    match write("2").await {
        Err(RedisError::NotReplicated { acked: 0, wanted: 1 }) => {}
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    replica.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while write("3").await.is_err() {
        assert!(Instant::now() < deadline, "writes not replicated again after the thaw");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The primary dies; Sentinel needs down_after (1 s), a vote and the promotion.
    primary.kill().await.unwrap();
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
    drop(sentinels);
}

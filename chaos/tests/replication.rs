//! A testbed with replicated Redis under Sentinel, for real: the services find the primary
//! through the sentinels; `kill redis` kills the node that is the primary; Sentinel promotes
//! the replica; the gateway, the processor and the admin commands follow it; an order placed
//! after the failover is taken and decided.
//!
//! Needs the `flashsale` binary next to the test executable (`cargo test --workspace` builds it).

use std::time::{Duration, Instant};

use chaos::components::SentinelSettings;
use chaos::{Action, EventLog, Fault, Injector, Target, Testbed, TestbedConfig};

async fn admin(testbed: &Testbed, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(testbed.flashsale_bin()).args(args).envs(testbed.admin_env()).output(),
    )
    .await
    .expect("admin command within 20 s")
    .expect("admin command runs")
}

async fn buy(http: &reqwest::Client, gateway: &str, id: &str) -> u16 {
    let body = serde_json::json!({"user_id": id, "item_id": "101", "amount": 1, "request_id": id});
    match http.post(format!("{gateway}/buy")).json(&body).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn the_services_follow_the_primary_through_a_failover() {
    let config = TestbedConfig {
        processors: 1,
        redis_replicas: 1,
        sentinel: Some(SentinelSettings {
            master: "flashsale".into(),
            quorum: 2,
            down_after: Duration::from_secs(1),
            failover_timeout: Duration::from_secs(5),
        }),
        flashsale_bin: Some(chaos::components::flashsale_program()),
        ..TestbedConfig::default()
    };
    let testbed = Testbed::start(config).await.expect("a replicated testbed starts");
    assert!(testbed.replicated());
    let targets = testbed.targets();
    for t in [Target::RedisNode(0), Target::RedisNode(1), Target::Sentinel(2)] {
        assert!(targets.contains(&t), "{targets:?}");
    }
    let env = testbed.admin_env();
    assert!(env.iter().any(|(k, _)| k == "REDIS_SENTINELS") && !env.iter().any(|(k, _)| k == "REDIS_ADDR"), "{env:?}");
    let out = admin(&testbed, &["stock", "set", "101", "100"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gateway = testbed.gateway_url(0);
    let events = EventLog::in_memory();
    let testbed = std::sync::Arc::new(tokio::sync::Mutex::new(testbed));
    let injector = Injector::new(testbed.clone(), events);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    assert_eq!(buy(&http, &gateway, "before").await, 202);

    // `redis` is the primary: redis[0] now.
    let info = injector.inject(Fault { target: Target::Redis, action: Action::Kill, duration: None }).await.unwrap();
    assert_eq!(info.fault.target, Target::RedisNode(0), "{info:?}");
    assert!(info.description.contains("redis[0]"), "{}", info.description);

    // Sentinel promotes redis[1]; the gateway takes orders on it.
    let started = Instant::now();
    let mut answer = 0;
    while started.elapsed() < Duration::from_secs(30) {
        answer = buy(&http, &gateway, &format!("after-{}", started.elapsed().as_millis())).await;
        if answer == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer, 202, "no order taken within 30 s of the primary's death");
    eprintln!("orders taken again {:?} after the primary died", started.elapsed());
    assert_eq!(testbed.lock().await.refresh_primary().await, Some(1));
    assert_eq!(testbed.lock().await.resolve(Target::Redis), Target::RedisNode(1));

    // The admin commands follow too.
    let out = admin(&*testbed.lock().await, &["stock", "get", "101"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    injector.heal_all("test").await;
    testbed.lock().await.stop_all().await.unwrap();
}

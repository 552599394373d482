//! The generator against the real gateway (Redis and the broker behind the lab's proxies).
//!
//! Needs the `flashsale` binary next to the test executable (`cargo test --workspace` builds it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chaos::faults::Directions;
use chaos::proxy::Toxic;
use chaos::{Action, EventLog, Fault, Injector, Target, Testbed, TestbedConfig};
use loadgen::history::{Attempt, Class, Op};
use loadgen::{Behaviour, Catalogue, LoadConfig, Traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrier_reuses_its_request_id_and_the_gateway_answers_409_or_the_original() {
    let bin = chaos::components::flashsale_program();
    assert!(bin.is_file(), "{} missing: build the workspace first", bin.display());
    let env = [("LOG_LEVEL", "warn"), ("RATE_LIMIT_MAX_REQUESTS", "1000000"), ("KAFKA_PRODUCE_TIMEOUT", "5s")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
    let bed = Testbed::start(TestbedConfig {
        gateways: 1,
        service_env: env,
        flashsale_bin: Some(bin),
        ..TestbedConfig::default()
    })
    .await
    .expect("testbed");
    let target = bed.gateway_url(0);
    let testbed = Arc::new(tokio::sync::Mutex::new(bed));
    let injector = Injector::new(testbed.clone(), EventLog::in_memory());

    // Redis answers the gateway 300 ms late until every arrival's first attempt is over: each
    // (client timeout 200 ms) times out while the gateway goes on and takes the order; the
    // retries after the heal meet an order that exists. The heal follows the load's own clock
    // (arrivals due over 500 ms from its start), not the injection's: the generator's start-up
    // takes its time on a busy machine.
    let latency = Toxic::Latency { latency: Duration::from_millis(150), jitter: Duration::ZERO };
    let fault = Fault {
        target: Target::Redis,
        action: Action::Network { toxic: latency, directions: Directions::Both, toxicity: 1.0 },
        duration: None,
    };
    injector.inject(fault).await.expect("latency on Redis");
    let live = Arc::new(loadgen::Live::default());
    let out = tempfile::tempdir().unwrap();
    let config = LoadConfig {
        target,
        schedule: "retry:500ms@40".parse().unwrap(),
        traffic: Traffic { mix: "retrier=1".parse().unwrap(), catalogue: Catalogue::default(), seed: 3 },
        behaviour: Behaviour {
            timeout: Duration::from_millis(200),
            retries: 6,
            retry_base: Duration::from_millis(100),
            ..Behaviour::default()
        },
        out: out.path().to_path_buf(),
        max_in_flight: 32,
        max_backlog: 1000,
        drain: Duration::from_secs(10),
        progress: false,
        live: Some(live.clone()),
    };
    let heal = async {
        let clock = live.started(Duration::from_secs(60)).await.expect("the load starts");
        tokio::time::sleep_until(clock + Duration::from_millis(1000)).await;
        injector.heal_all("every first attempt is over").await;
    };
    let (summary, ()) = tokio::join!(loadgen::run(config, std::future::pending()), heal);
    let summary = summary.expect("the run completes");
    assert_eq!(summary.phases[0].started, 20);

    let lines: Vec<Attempt> = std::fs::read_to_string(out.path().join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_id: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in lines.iter().filter(|a| a.op == Op::Buy) {
        by_id.entry(&a.request_id).or_default().push(a);
    }
    assert_eq!(by_id.len(), 20);
    let mut finals = BTreeMap::new();
    for (id, attempts) in &by_id {
        // Timed out (usually) or refused with a 5xx by a gateway whose Redis is slow: retried.
        let first = attempts[0];
        let timed_out = first.error.as_deref() == Some("timeout");
        assert!(timed_out || first.status.is_some_and(|s| s >= 500), "{id}: first attempt {first:?}");
        if timed_out {
            assert_eq!(first.class, Class::Info, "a timeout is an unknown outcome");
        }
        assert!(attempts.len() > 1, "{id} was retried");
        let last = attempts.last().unwrap();
        assert!(matches!(last.status, Some(202 | 409)), "{id}: ended with {:?} {:?}", last.status, last.error);
        *finals.entry(last.status.unwrap()).or_insert(0) += 1;
        assert!(attempts.iter().all(|a| a.request_id == *id && a.user == attempts[0].user));
    }
    assert!(finals.get(&409).copied().unwrap_or(0) > 0, "the gateway recognised retried ids: {finals:?}");
    testbed.lock().await.stop_all().await.unwrap();
}

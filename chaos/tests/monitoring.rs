//! Prometheus, Alertmanager and the exporters beside a real testbed: every component scraped,
//! the broker's process found (ours, not another lab's), a deployed candidate scraped with its
//! `release` label and rolled back, an alert evaluated by Prometheus and
//! delivered by Alertmanager to the lab's receiver, and nothing left running after the stop.
//!
//! Needs Debian's prometheus, prometheus-alertmanager, prometheus-redis-exporter and
//! prometheus-process-exporter (ci/setup) and the `flashsale` binary (`cargo test --workspace`).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chaos::monitoring::MonitoringConfig;
use chaos::{Testbed, TestbedConfig};
use serde_json::Value;

fn flashsale() -> std::path::PathBuf {
    let bin = chaos::components::flashsale_program();
    assert!(bin.is_file(), "{} missing: build the workspace first (cargo test --workspace)", bin.display());
    bin
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Polls `check` every 200 ms until it gives `Some`, or panics after `limit` with `what`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn query(prometheus: &str, expr: &str) -> Vec<Value> {
    let url = format!("{prometheus}/api/v1/query");
    let body: Value = reqwest::Client::new()
        .get(url)
        .query(&[("query", expr)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("prometheus answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}/metrics");
    let response = reqwest::Client::new().get(url).timeout(Duration::from_secs(5)).send().await;
    response.expect("/metrics answers").text().await.expect("text")
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_is_scraped_and_the_broker_is_ours() {
    let config = TestbedConfig {
        gateways: 1,
        processors: 1,
        flashsale_bin: Some(flashsale()),
        monitoring: Some(MonitoringConfig::default()),
        ..TestbedConfig::default()
    };
    let mut bed = Testbed::start(config).await.expect("testbed with monitoring starts");
    let monitoring = bed.monitoring().expect("monitoring runs");
    let expected = ["gateway", "processor", "payment", "redis", "broker"];
    let health = eventually(Duration::from_secs(30), "every target up", || async {
        let health = monitoring.target_health().await.ok()?;
        let all_up = expected.iter().all(|job| health.iter().any(|(j, _, h)| j == job && h == "up"));
        all_up.then_some(health)
    })
    .await;
    assert_eq!(health.len(), 5, "one target per component: {health:?}");
    assert!(health.iter().any(|(_, instance, _)| instance == "processor[0]"), "{health:?}");

    // The shipped rules are loaded and their recording rules have data for every component.
    let prometheus = monitoring.prometheus_url();
    let components = eventually(Duration::from_secs(90), "CPU of every component recorded", || {
        let prometheus = prometheus.clone();
        async move {
            let rows = query(&prometheus, "component:cpu_cores:rate1m").await;
            let mut names: Vec<String> =
                rows.iter().filter_map(|r| r["metric"]["component"].as_str().map(str::to_owned)).collect();
            names.sort();
            (names == ["broker", "gateway", "payment", "processor", "redis"]).then_some(names)
        }
    })
    .await;
    assert_eq!(components.len(), 5);
    // Exactly one process in the broker group: this testbed's tansu, not another lab's.
    let procs = query(&prometheus, "namedprocess_namegroup_num_procs{groupname=\"broker\"}").await;
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(procs[0]["value"][1], "1", "{procs:?}");

    // A second processor joins the scrape without a restart of Prometheus.
    bed.start_processor().await.expect("second processor");
    let monitoring = bed.monitoring().unwrap();
    eventually(Duration::from_secs(30), "processor[1] scraped", || async {
        let health = monitoring.target_health().await.ok()?;
        health.iter().any(|(_, i, h)| i == "processor[1]" && h == "up").then_some(())
    })
    .await;

    // A deploy: processor[1] replaced by a candidate (here the same binary with another
    // setting), on the same address, named by its build info and by the scrape's `release`
    // label; then rolled back to what it ran.
    let candidate = chaos::testbed::release::Build {
        release: "candidate".into(),
        program: flashsale(),
        env: vec![("PROCESSOR_MAX_IN_FLIGHT".into(), "7".into())],
    };
    let addr = bed.processor_addr(1);
    bed.deploy(chaos::Target::Processor(1), Some(&candidate)).await.expect("the candidate starts");
    assert_eq!(bed.processor_addr(1), addr, "same address");
    assert_eq!(bed.deployed(), [("processor[1]".to_string(), "candidate".to_string())]);
    let page = metrics(addr).await;
    assert!(page.contains("processor_orders_in_flight_limit 7"), "{page}");
    assert!(page.contains(r#"release="candidate""#), "{page}");
    let monitoring = bed.monitoring().unwrap();
    let prometheus = monitoring.prometheus_url();
    eventually(Duration::from_secs(30), "processor[1] scraped as the candidate", || {
        let prometheus = prometheus.clone();
        async move {
            let rows = query(&prometheus, r#"processor_orders_in_flight_limit{release="candidate"}"#).await;
            (rows.len() == 1 && rows[0]["metric"]["instance"] == "processor[1]" && rows[0]["value"][1] == "7")
                .then_some(())
        }
    })
    .await;
    bed.deploy(chaos::Target::Processor(1), None).await.expect("the rollback");
    assert!(bed.deployed().is_empty());
    let page = metrics(addr).await;
    assert!(page.contains("processor_orders_in_flight_limit 256"), "{page}");
    assert!(!page.contains(r#"release="candidate""#), "{page}");
    let monitoring = bed.monitoring().unwrap();

    let pids = monitoring.pids();
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prometheus", "alertmanager", "redis-exporter", "process-exporter"]);
    bed.stop().await.expect("clean stop");
    for (name, pid) in pids {
        assert!(!pid_alive(pid), "{name} (pid {pid}) outlived the testbed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_evaluated_notified_and_recorded_and_a_silent_rule_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("test.rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: test\n    rules:\n\
         \x20     - alert: AlwaysOn\n        expr: vector(1)\n        for: 6s\n        labels: {severity: critical, component: lab}\n\
         \x20     - alert: NeverOn\n        expr: vector(1) == 2\n        labels: {severity: critical, component: lab}\n",
    )
    .unwrap();
    let am = dir.path().join("am.yml");
    std::fs::write(
        &am,
        "route:\n  receiver: mine\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: mine\n    webhook_configs:\n      - url: http://example.invalid/hook\n        send_resolved: true\n",
    )
    .unwrap();
    let config = TestbedConfig {
        gateways: 0,
        flashsale_bin: Some(flashsale()),
        monitoring: Some(MonitoringConfig { rules: vec![rules], alertmanager_config: Some(am), time_factor: 1.0 }),
        ..TestbedConfig::default()
    };
    let started_ms = now_ms();
    let bed = Testbed::start(config).await.expect("testbed with monitoring starts");
    let monitoring = bed.monitoring().unwrap();
    let written = std::fs::read_to_string(bed.dir().join("monitoring/alertmanager.yml")).unwrap();
    assert!(written.contains(monitoring.receiver_url()) && !written.contains("example.invalid"), "{written}");

    let notification = eventually(Duration::from_secs(40), "AlwaysOn notified to the lab", || async {
        monitoring.notifications().into_iter().find(|n| n.body["alerts"][0]["labels"]["alertname"] == "AlwaysOn")
    })
    .await;
    assert_eq!(notification.body["status"], "firing", "{:?}", notification.body);
    assert!(notification.received_ms >= started_ms);
    // The notification is on disk as it arrived, not only in memory.
    let on_disk = std::fs::read_to_string(bed.dir().join("monitoring/notifications.jsonl")).unwrap();
    assert!(on_disk.contains("AlwaysOn"), "{on_disk}");

    let states = monitoring.alert_states(started_ms, now_ms()).await.expect("ALERTS read");
    let pending: Vec<_> = states.iter().filter(|s| s.alertname == "AlwaysOn" && s.state == "pending").collect();
    let firing: Vec<_> = states.iter().filter(|s| s.alertname == "AlwaysOn" && s.state == "firing").collect();
    assert_eq!((pending.len(), firing.len()), (1, 1), "{states:?}");
    assert!(pending[0].from_ms < firing[0].from_ms, "pending before firing: {states:?}");
    // `for: 6s`: pending for about six evaluations (one a second), then firing.
    let pending_ms = firing[0].from_ms - pending[0].from_ms;
    assert!((4_000..=8_000).contains(&pending_ms), "pending {pending_ms} ms: {states:?}");
    assert!(firing[0].from_ms <= notification.received_ms, "fired before it was notified: {states:?}");
    assert_eq!(firing[0].labels.get("severity").and_then(Value::as_str), Some("critical"));
    assert!(states.iter().all(|s| s.alertname != "NeverOn"), "{states:?}");
    bed.stop().await.expect("clean stop");
}

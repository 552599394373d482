//! The generator measures itself: a generator starved of CPU (the burn knob) shows late
//! arrivals, the same generator unburdened does not. Its own test binary, since the knob is an
//! environment variable of the process.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use loadgen::{ArrivalSchedule, Behaviour, Catalogue, LoadConfig, Traffic};

async fn fast_server() -> std::net::SocketAddr {
    let app = Router::new()
        .route("/buy", post(|| async { (StatusCode::ACCEPTED, r#"{"status":"PENDING"}"#) }))
        .route("/orders/{id}", get(|| async { r#"{"status":"COMPLETED"}"# }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn run(target: std::net::SocketAddr, out: &std::path::Path) -> loadgen::GeneratorHealth {
    let config = LoadConfig {
        target: format!("http://{target}"),
        schedule: "steady:2s@500".parse::<ArrivalSchedule>().unwrap(),
        traffic: Traffic { mix: "buyer=1".parse().unwrap(), catalogue: Catalogue::default(), seed: 3 },
        behaviour: Behaviour { timeout: Duration::from_secs(5), polls: 0, ..Behaviour::default() },
        out: out.to_path_buf(),
        max_in_flight: 32,
        max_backlog: 10_000,
        drain: Duration::from_secs(10),
        progress: false,
        live: None,
    };
    let summary = loadgen::run(config, std::future::pending()).await.expect("the run completes");
    summary.generator.expect("the generator's health is recorded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_generator_is_late_and_says_so() {
    let addr = fast_server().await;
    let out = tempfile::tempdir().unwrap();
    std::env::remove_var(loadgen::run::BURN_ENV);
    let healthy = run(addr, &out.path().join("healthy")).await;
    // 1,000 arrivals, offered on time: at most a few late (a shared machine may stall).
    assert!(healthy.late_arrivals < 50, "{healthy:?}");
    assert!(healthy.process_cpu_s > 0.0 && healthy.wall_s >= 2.0, "{healthy:?}");
    assert_eq!(healthy.max_in_flight, 32);
    // 4 ms of CPU per arrival: the feeder can offer 250 of the 500 per second; by the end of
    // the 2 s it is about a second behind.
    std::env::set_var(loadgen::run::BURN_ENV, "4000");
    let starved = run(addr, &out.path().join("starved")).await;
    std::env::remove_var(loadgen::run::BURN_ENV);
    assert!(starved.late_arrivals > 500, "{starved:?}");
    assert!(starved.feeder_late.max_ms > 500.0, "{starved:?}");
    assert!(starved.feeder_late.p99_ms > 10.0 * healthy.feeder_late.p99_ms.max(1.0), "{starved:?} vs {healthy:?}");
}

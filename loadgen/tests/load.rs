//! The generator against a small purpose-built HTTP server (fast, slow, stalling, failing on
//! purpose; it counts what it receives) and against the real gateway.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use loadgen::history::{Attempt, Class, Op};
use loadgen::{ArrivalSchedule, Behaviour, Catalogue, LoadConfig, LoadSummary, Traffic, UserKind, UserMix};
use serde_json::{json, Value};
use tokio::time::Instant;

/// How the test server behaves.
#[derive(Debug, Clone, Copy, Default)]
struct Behave {
    /// Each answer waits this long.
    delay: Duration,
    /// Requests arriving in `[from, to)` (from the server's start) wait until `to`.
    stall: Option<(Duration, Duration)>,
    /// The first POST of a request_id whose number is divisible by 3 answers 503.
    fail_first_of_every_third: bool,
}

#[derive(Debug, Default)]
struct Seen {
    posts: HashMap<String, u32>,
    gets: HashMap<String, u32>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

async fn server(behave: Behave) -> Server {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let state = (behave, seen.clone(), started);
    type St = (Behave, Arc<Mutex<Seen>>, Instant);
    async fn wait(behave: &Behave, started: Instant) {
        if let Some((from, to)) = behave.stall {
            let now = started.elapsed();
            if now >= from && now < to {
                tokio::time::sleep_until(started + to).await;
            }
        }
        if !behave.delay.is_zero() {
            tokio::time::sleep(behave.delay).await;
        }
    }
    async fn buy(State((behave, seen, started)): State<St>, body: axum::body::Bytes) -> (StatusCode, Json<Value>) {
        wait(&behave, started).await;
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["request_id"].as_str().map(String::from))
            .unwrap_or_else(|| "(invalid)".into());
        let count = {
            let mut seen = seen.lock().unwrap();
            let c = seen.posts.entry(id.clone()).or_default();
            *c += 1;
            *c
        };
        let number: u64 = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(1);
        if behave.fail_first_of_every_third && count == 1 && number % 3 == 0 {
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "try again"})));
        }
        (StatusCode::ACCEPTED, Json(json!({"status": "PENDING", "request_id": id})))
    }
    async fn status(State((_, seen, _)): State<St>, Path(id): Path<String>) -> Json<Value> {
        *seen.lock().unwrap().gets.entry(id.clone()).or_default() += 1;
        Json(json!({"request_id": id, "status": "COMPLETED"}))
    }
    let app = Router::new().route("/buy", post(buy)).route("/orders/{id}", get(status)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, seen }
}

fn config(target: SocketAddr, phases: &str, mix: &str, out: &std::path::Path) -> LoadConfig {
    LoadConfig {
        target: format!("http://{target}"),
        schedule: phases.parse::<ArrivalSchedule>().unwrap(),
        traffic: Traffic { mix: mix.parse::<UserMix>().unwrap(), catalogue: Catalogue::default(), seed: 7 },
        behaviour: Behaviour {
            timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            ..Behaviour::default()
        },
        out: out.to_path_buf(),
        max_in_flight: 64,
        max_backlog: 10_000,
        drain: Duration::from_secs(10),
        progress: false,
        live: None,
    }
}

fn history(out: &std::path::Path) -> Vec<Attempt> {
    std::fs::read_to_string(out.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn run(config: LoadConfig) -> LoadSummary {
    loadgen::run(config, std::future::pending()).await.expect("the run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn achieved_rate_follows_the_schedule_on_a_fast_server() {
    let server = server(Behave::default()).await;
    let out = tempfile::tempdir().unwrap();
    let summary = run(config(server.addr, "steady:4s@400", "buyer=1", out.path())).await;
    let phase = &summary.phases[0];
    assert_eq!((phase.offered, phase.started, phase.dropped, phase.not_started), (1600, 1600, 0, 0));
    // Completions per second (interior seconds) within 2% of 400.
    let intervals: Vec<Value> = std::fs::read_to_string(out.path().join("load-intervals.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(intervals.len() >= 4, "{intervals:?}");
    for interval in &intervals[1..intervals.len() - 1] {
        let count: u64 = interval["outcomes"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert!((392..=408).contains(&count), "a second with {count} completions, not 400 ± 2%");
    }
    assert!(phase.corrected.p99_ms < 50.0, "a fast server: {:?}", phase.corrected);
    assert_eq!(phase.outcomes.get("202"), Some(&1600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_that_cannot_start_are_counted_not_lost() {
    // Two users, 200 ms per answer: 10 orders/s of capacity for 200/s offered.
    let server = server(Behave { delay: Duration::from_millis(200), ..Behave::default() }).await;
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(server.addr, "flood:2s@200", "buyer=1", out.path());
    cfg.max_in_flight = 2;
    cfg.max_backlog = 10;
    cfg.behaviour.polls = 0;
    cfg.drain = Duration::from_secs(2);
    let summary = run(cfg).await;
    let phase = &summary.phases[0];
    assert_eq!(phase.offered, 400);
    assert!(phase.dropped > 300, "{phase:?}");
    assert_eq!(phase.started + phase.dropped + phase.not_started, phase.offered, "{phase:?}");
    let lines = history(out.path());
    let sent = lines.iter().filter(|a| a.op != Op::Unserved).count() as u64;
    assert_eq!(sent, phase.started, "one history line per started order");
    // Every arrival not served is in the history too, as unserved, at its due time.
    let unserved: Vec<_> = lines.iter().filter(|a| a.op == Op::Unserved).collect();
    assert_eq!(unserved.len() as u64, phase.dropped + phase.not_started, "one line per unserved arrival");
    assert!(unserved.iter().all(|a| a.class == Class::Fail && a.status.is_none()));
    assert_eq!(
        unserved.iter().filter(|a| a.error.as_deref() == Some("dropped")).count() as u64,
        phase.dropped,
        "dropped ones say so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_corrected_latency_not_in_service_time() {
    // The server holds everything arriving in [1.5 s, 2.5 s) until 2.5 s. Four users: only the
    // few requests in flight at the stall see it as service time; the ~200 arrivals due during
    // it wait for a free user, and the corrected latency charges them for it.
    let server =
        server(Behave { stall: Some((Duration::from_millis(1500), Duration::from_millis(2500))), ..Behave::default() })
            .await;
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(server.addr, "steady:5s@200", "buyer=1", out.path());
    cfg.max_in_flight = 4;
    cfg.behaviour.polls = 0;
    let summary = run(cfg).await;
    let phase = &summary.phases[0];
    assert_eq!(phase.dropped + phase.not_started, 0);
    assert!(phase.corrected.p99_ms >= 500.0, "the stall is in the corrected p99: {:?}", phase.corrected);
    assert!(phase.service.p99_ms < 100.0, "but not in the service time p99: {:?}", phase.service);
    assert!(phase.service.max_ms >= 500.0, "the requests caught in flight did wait: {:?}", phase.service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_once_and_retriers_reuse_their_request_id() {
    let server = server(Behave { fail_first_of_every_third: true, ..Behave::default() }).await;
    let out = tempfile::tempdir().unwrap();
    let summary = run(config(server.addr, "mix:2s@200", "buyer=50,retrier=30,abuser=10,invalid=10", out.path())).await;
    let lines = history(out.path());
    assert_eq!(lines.len() as u64, summary.history_lines);

    // Every POST and GET the server saw is in the history exactly once, and nothing else is.
    let seen = server.seen.lock().unwrap();
    let mut posts: HashMap<String, u32> = HashMap::new();
    let mut gets: HashMap<String, u32> = HashMap::new();
    for a in &lines {
        let key = if a.kind == UserKind::Invalid { "(invalid)".to_string() } else { a.request_id.clone() };
        match a.op {
            Op::Buy => *posts.entry(key).or_default() += 1,
            Op::Status => *gets.entry(key).or_default() += 1,
            Op::Unserved => panic!("nothing dropped at this rate: {a:?}"),
        }
    }
    // Some garbage bodies still parse with a request_id: count by what the server read.
    let server_posts: u32 = seen.posts.values().sum();
    assert_eq!(server_posts, posts.values().sum::<u32>());
    for (id, n) in &seen.posts {
        if id != "(invalid)" && id != "x" {
            assert_eq!(posts.get(id), Some(n), "{id}");
        }
    }
    assert_eq!(seen.gets, gets);

    // A retrier that got a 503 came back with the same request_id, numbering its attempts.
    let mut by_id: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in lines.iter().filter(|a| a.kind == UserKind::Retrier && a.op == Op::Buy) {
        by_id.entry(&a.request_id).or_default().push(a);
    }
    let retried: Vec<_> = by_id.values().filter(|v| v.len() > 1).collect();
    assert!(!retried.is_empty(), "some retrier met a 503");
    for attempts in retried {
        let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, (1..=attempts.len() as u32).collect::<Vec<_>>());
        assert_eq!(attempts[0].status, Some(503));
        assert_eq!(attempts[0].error, None, "the gateway's JSON 503 is not a maintenance page");
        assert_eq!(attempts.last().unwrap().status, Some(202));
        assert!(attempts[1].intended_us >= attempts[0].done_us, "the retry is planned after the answer");
    }
    // An abuser's burst is back to back: each request is intended when the one before was
    // answered, so its latency does not count the abuser's own earlier requests.
    let mut bursts: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in lines.iter().filter(|a| a.kind == UserKind::Abuser && a.op == Op::Buy) {
        let (order, _) = a.request_id.rsplit_once('-').expect("burst ids are ORDER-K");
        bursts.entry(order).or_default().push(a);
    }
    assert!(!bursts.is_empty(), "some abuser arrived");
    for burst in bursts.values_mut() {
        burst.sort_by_key(|a| a.request_id.rsplit_once('-').unwrap().1.parse::<u32>().unwrap());
        for pair in burst.windows(2) {
            assert_eq!(pair[1].intended_us, pair[0].done_us, "{} follows {}", pair[1].request_id, pair[0].request_id);
        }
    }
    // Buyers do not retry: one POST each.
    assert!(lines.iter().filter(|a| a.kind == UserKind::Buyer && a.op == Op::Buy).all(|a| a.attempt == 1));
}

/// A 503 with an HTML page (the front's maintenance page, no gateway up) is recorded as its own
/// outcome, `maintenance`: failed, with no effect, and counted apart from the gateway's 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_page_is_its_own_outcome() {
    let nobody = chaos::ports::loopback(chaos::ports::free_port().unwrap());
    let front = chaos::proxy::FaultProxy::start(chaos::ports::loopback(0), nobody, 1).await.unwrap();
    front.set_fallback(Some(chaos::maintenance::response()));
    let out = tempfile::tempdir().unwrap();
    let summary = run(config(front.addr(), "down:1s@20", "buyer=100", out.path())).await;
    let buys: Vec<Attempt> = history(out.path()).into_iter().filter(|a| a.op == Op::Buy).collect();
    assert!(buys.len() >= 15, "{} buys", buys.len());
    for a in &buys {
        assert_eq!((a.status, a.error.as_deref(), a.class), (Some(503), Some("maintenance"), Class::Fail), "{a:?}");
        assert_eq!(a.outcome(), "maintenance");
    }
    let outcomes = &summary.total.outcomes;
    assert_eq!(outcomes.get("maintenance").copied(), Some(buys.len() as u64), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_sends_the_same_requests() {
    let server = server(Behave::default()).await;
    let key = |a: &Attempt| (a.request_id.clone(), a.user.clone(), a.item.clone(), a.amount, a.kind, a.attempt, a.op);
    let mut sequences = Vec::new();
    for seed in [11, 11, 12] {
        let out = tempfile::tempdir().unwrap();
        let mut cfg = config(
            server.addr,
            "a:1s@100,b:1s@50..150~poisson",
            "buyer=70,retrier=10,abuser=10,invalid=10",
            out.path(),
        );
        cfg.traffic.seed = seed;
        run(cfg).await;
        let mut lines = history(out.path());
        lines.retain(|a| a.op == Op::Buy);
        let mut keys: Vec<_> = lines.iter().map(key).collect();
        keys.sort();
        sequences.push(keys);
    }
    assert_eq!(sequences[0], sequences[1], "same seed");
    assert_ne!(sequences[0], sequences[2], "another seed");
}

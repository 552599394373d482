//! Helpers for the benchmarks under `ci/`:
//!
//! - `floor`: a bare axum server whose `POST /buy` answers 202 at once — the HTTP floor the
//!   gateway is compared against;
//! - `openloop`: a fixed-rate HTTP/1.1 client (wrk2's model): request *i* is due at
//!   `start + i/rate` whether or not earlier ones have returned; latency is measured from the due
//!   time (coordinated omission corrected) and from the send time (service time). Each request
//!   carries a unique `request_id`. Prints one JSON line of results.
//! - `goose`: raw goose, closed loop — N users each `POST /buy` with a fresh `request_id` as fast
//!   as answers come, nothing recorded beyond goose's own metrics: the reference the lab's
//!   generator (`flashlab load`) is compared against. Prints one JSON line.
//!
//! Load goes to loopback only, and every run is bounded by `--duration`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::StatusCode;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `POST /buy` → 202 with a small JSON body, and nothing else.
    Floor {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Send `POST /buy` at a fixed rate and report latencies.
    Openloop {
        /// Loopback address of the server.
        #[arg(long)]
        addr: SocketAddr,
        /// Requests per second.
        #[arg(long)]
        rate: u64,
        /// Seconds to send for.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Connections (each carries one request at a time).
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Prefix of the request ids, to keep runs apart.
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Raw goose, closed loop: `POST /buy` from N users for S seconds.
    Goose {
        /// e.g. http://127.0.0.1:8080 (loopback only).
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Floor { addr } => floor(addr).await,
            Command::Openloop { addr, rate, duration, connections, prefix } => {
                openloop(addr, rate, Duration::from_secs(duration), connections, &prefix).await
            }
            Command::Goose { host, users, seconds } => raw_goose(&host, users, seconds).await,
        }
    })
}

async fn floor(addr: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/buy",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let _ = body;
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "Order Queued"})))
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

struct Results {
    corrected: Histogram<u64>,
    service: Histogram<u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

async fn openloop(
    addr: SocketAddr,
    rate: u64,
    duration: Duration,
    connections: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("--addr {addr}: load goes to loopback addresses only");
    }
    if rate == 0 || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let total = rate * duration.as_secs();
    let interval_ns = 1_000_000_000 / rate;
    let next = Arc::new(AtomicU64::new(0));
    let results = Arc::new(Mutex::new(Results {
        corrected: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        service: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        statuses: Default::default(),
        errors: 0,
    }));
    let start = Instant::now() + Duration::from_millis(100);
    let hard_stop = start + duration + Duration::from_secs(30);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        let results = results.clone();
        let prefix = prefix.to_string();
        workers.push(tokio::spawn(async move {
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(4096);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= hard_stop {
                    break;
                }
                let due = start + Duration::from_nanos(i * interval_ns);
                tokio::time::sleep_until(due).await;
                let body = format!(
                    r#"{{"user_id":"bu{}","item_id":"101","amount":1,"request_id":"{prefix}-{i}"}}"#,
                    i % 1_000_000
                );
                let request = format!(
                    "POST /buy HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let sent = Instant::now();
                let outcome = tokio::time::timeout(Duration::from_secs(10), exchange(&mut conn, addr, request.as_bytes(), &mut buf)).await;
                let done = Instant::now();
                let mut r = results.lock().unwrap();
                match outcome {
                    Ok(Ok(status)) => {
                        *r.statuses.entry(status).or_default() += 1;
                        let _ = r.corrected.record((done - due).as_micros().max(1) as u64);
                        let _ = r.service.record((done - sent).as_micros().max(1) as u64);
                    }
                    _ => {
                        r.errors += 1;
                        conn = None;
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let r = results.lock().unwrap();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let out = serde_json::json!({
        "rate_target": rate,
        "requests": r.corrected.len() + r.errors,
        "achieved_rate": (r.corrected.len() as f64 / elapsed).round(),
        "statuses": r.statuses,
        "errors": r.errors,
        "corrected_ms": {"p50": ms(&r.corrected, 0.5), "p99": ms(&r.corrected, 0.99), "max": r.corrected.max() as f64 / 1000.0},
        "service_ms": {"p50": ms(&r.service, 0.5), "p99": ms(&r.service, 0.99), "max": r.service.max() as f64 / 1000.0},
    });
    println!("{out}");
    Ok(())
}

/// One request/response on a keep-alive connection (opened on first use). Returns the status.
async fn exchange(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    if conn.is_none() {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        *conn = Some(stream);
    }
    let stream = conn.as_mut().expect("connected above");
    stream.write_all(request).await?;
    buf.clear();
    // Read the head, then Content-Length bytes of body; both bounded in size.
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head.split_whitespace().nth(1).context("no status")?.parse()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim())
        })
        .context("no content-length")?
        .parse()?;
    if length > 1 << 20 {
        bail!("body too large");
    }
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

static GOOSE_COUNTER: AtomicU64 = AtomicU64::new(0);

async fn goose_buy(user: &mut goose::goose::GooseUser) -> goose::goose::TransactionResult {
    let n = GOOSE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({"user_id": format!("g{}", n % 100_000), "item_id": "101", "amount": 1, "request_id": format!("goose-{n}")});
    let _ = user.post_json("/buy", &body).await?;
    Ok(())
}

async fn raw_goose(host: &str, users: usize, seconds: u64) -> anyhow::Result<()> {
    use goose::prelude::*;
    let loopback = ["http://127.", "http://localhost", "http://[::1]"];
    if !loopback.iter().any(|p| host.starts_with(p)) {
        bail!("--host {host}: loopback only");
    }
    let config = goose::config::GooseConfiguration::parse_args_default(&[
        "--host",
        host,
        "--users",
        &users.to_string(),
        "--increase-rate",
        &(users * 10).to_string(),
        "--run-time",
        &format!("{seconds}s"),
        "--quiet",
        "--no-print-metrics",
        "--no-error-summary",
        "--no-telnet",
        "--co-mitigation",
        "disabled",
    ])?;
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario!("buy").register_transaction(transaction!(goose_buy)))
        .execute()
        .await?;
    let requests: usize = metrics.requests.values().map(|r| r.raw_data.counter).sum();
    let duration = metrics.duration.max(1);
    println!(
        "{}",
        serde_json::json!({"requests": requests, "duration_s": duration, "rate": requests as f64 / duration as f64, "users": users})
    );
    Ok(())
}

//! `flashsale payment`: the payment provider stand-in, and the processor's [client].
//!
//! - `POST /charge {request_id, user_id, amount}` — idempotent by `request_id` (the processor
//!   sends `request_id/attempt`): 200 `{"status":"captured"}` (again for a repeat), 409
//!   `{"status":"cancelled"}` for a cancelled key, 500 for a simulated failure (nothing
//!   captured), 503 during an outage (nothing captured).
//! - `POST /charges/{request_id}/cancel` — makes sure the key never captures: 200
//!   `{"status":"cancelled"}`, or `{"status":"captured"}` if it already did. The processor calls
//!   it after a timeout or an error, when it cannot know whether the charge went through. It
//!   answers during an outage (the outage is of the charge API).
//! - `GET /charges/{request_id}`, `GET /ledger` (every capture), `/metrics`, `/health`.
//! - `GET|PUT /control {latency_ms, jitter_ms, failure_rate, outage, capture_then_timeout}` —
//!   the behaviour, changed at run time by the fault injector. `capture_then_timeout` captures
//!   first and answers after the latency: with a latency beyond the processor's
//!   `PAYMENT_TIMEOUT`, the charge succeeds but the answer comes too late.
//!
//! Randomness (jitter, failures) comes from one generator seeded by `PAYMENT_SEED`.

pub mod client;
pub mod ledger;

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{ConfigError, Env};
use crate::order::now_ms;
use ledger::{Charge, ChargeStatus, Ledger};

const SERVICE: &str = "payment";

/// How the provider behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Added before answering a charge.
    pub latency_ms: u64,
    /// Uniform extra latency in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Share of charges that fail with 500 (nothing captured), 0..=1.
    pub failure_rate: f64,
    /// Every charge answers 503 (nothing captured).
    pub outage: bool,
    /// Capture first, then wait the latency before answering.
    pub capture_then_timeout: bool,
}

/// A partial update of [`Behaviour`] (`PUT /control`).
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BehaviourUpdate {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub failure_rate: Option<f64>,
    pub outage: Option<bool>,
    pub capture_then_timeout: Option<bool>,
}

/// The longest latency the control endpoint accepts (every wait is bounded).
pub const MAX_LATENCY_MS: u64 = 600_000;

impl Behaviour {
    fn apply(&mut self, update: BehaviourUpdate) -> Result<(), String> {
        let mut next = *self;
        if let Some(v) = update.latency_ms {
            next.latency_ms = v;
        }
        if let Some(v) = update.jitter_ms {
            next.jitter_ms = v;
        }
        if let Some(v) = update.failure_rate {
            next.failure_rate = v;
        }
        if let Some(v) = update.outage {
            next.outage = v;
        }
        if let Some(v) = update.capture_then_timeout {
            next.capture_then_timeout = v;
        }
        if !(0.0..=1.0).contains(&next.failure_rate) {
            return Err("failure_rate must be between 0 and 1".into());
        }
        if next.latency_ms + next.jitter_ms > MAX_LATENCY_MS {
            return Err(format!("latency_ms + jitter_ms must be at most {MAX_LATENCY_MS}"));
        }
        *self = next;
        Ok(())
    }
}

/// `flashsale payment`'s configuration.
#[derive(Debug, Clone)]
pub struct PaymentConfig {
    /// `PAYMENT_ADDR` (default `0.0.0.0:8090`).
    pub listen: std::net::SocketAddr,
    /// `PAYMENT_LATENCY`, `PAYMENT_JITTER`, `PAYMENT_FAILURE_RATE` — the starting behaviour.
    pub behaviour: Behaviour,
    /// `PAYMENT_SEED`.
    pub seed: u64,
    /// `PAYMENT_LEDGER` (default `payment-ledger.jsonl` in the working directory).
    pub ledger_path: PathBuf,
    pub log_level: String,
}

impl PaymentConfig {
    pub fn from_env(env: &Env<'_>) -> Result<PaymentConfig, ConfigError> {
        let latency = env.duration_or_zero("PAYMENT_LATENCY", Duration::ZERO)?;
        let jitter = env.duration_or_zero("PAYMENT_JITTER", Duration::ZERO)?;
        let failure_rate = env.number("PAYMENT_FAILURE_RATE", 0.0, 0.0, 1.0)?;
        let mut behaviour = Behaviour::default();
        behaviour
            .apply(BehaviourUpdate {
                latency_ms: Some(latency.as_millis() as u64),
                jitter_ms: Some(jitter.as_millis() as u64),
                failure_rate: Some(failure_rate),
                ..Default::default()
            })
            .map_err(|why| ConfigError { var: "PAYMENT_LATENCY", value: format!("{latency:?}"), why })?;
        Ok(PaymentConfig {
            listen: env.socket_addr("PAYMENT_ADDR", "0.0.0.0:8090")?,
            behaviour,
            seed: env.number("PAYMENT_SEED", 1, 0, u64::MAX)?,
            ledger_path: PathBuf::from(env.string("PAYMENT_LEDGER", "payment-ledger.jsonl")),
            log_level: env.log_level()?,
        })
    }
}

#[derive(Debug)]
struct Provider {
    ledger: Mutex<Ledger>,
    behaviour: Mutex<Behaviour>,
    rng: Mutex<StdRng>,
    registry: Registry,
    charges: IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("cannot listen on PAYMENT_ADDR={addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the provider until `shutdown` resolves.
pub async fn run(
    config: PaymentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PaymentError> {
    let ledger = Ledger::open(&config.ledger_path)?;
    let registry = Registry::new();
    let charges = IntCounterVec::new(Opts::new("payment_charges_total", "Charge requests by result"), &["result"])
        .expect("valid metric");
    registry.register(Box::new(charges.clone())).expect("unique metric");
    crate::process_metrics::register(&registry);
    let provider = Arc::new(Provider {
        ledger: Mutex::new(ledger),
        behaviour: Mutex::new(config.behaviour),
        rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
        registry,
        charges,
    });
    let app = Router::new()
        .route("/charge", post(charge))
        .route("/charges/{key}", get(charge_status))
        .route("/charges/{key}/cancel", post(cancel))
        .route("/ledger", get(ledger_all))
        .route("/control", get(control_get).put(control_put))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { Json(json!({"status": "healthy"})) }))
        .route("/healthz", get(|| async { Json(json!({"alive": true})) }))
        .route("/readyz", get(|| async { Json(json!({"ready": true})) }))
        .with_state(provider);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| PaymentError::Bind { addr: config.listen, source })?;
    tracing::info!(service = SERVICE, event = "listening", addr = %config.listen, "Payment provider listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).into_future().await.map_err(PaymentError::Serve)
}

#[derive(Debug, Deserialize)]
struct ChargeRequest {
    request_id: String,
    user_id: String,
    amount: u64,
}

fn status_body(charge: &Charge) -> serde_json::Value {
    json!({ "request_id": charge.request_id, "status": charge.status, "amount": charge.amount })
}

async fn charge(
    State(p): State<Arc<Provider>>,
    body: Result<Json<ChargeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        p.charges.with_label_values(&["bad_request"]).inc();
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "expected {request_id, user_id, amount}"})))
            .into_response();
    };
    let behaviour = *lock(&p.behaviour);
    if behaviour.outage {
        p.charges.with_label_values(&["outage"]).inc();
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "payment provider unavailable"})))
            .into_response();
    }
    let (delay, fail) = {
        let mut rng = lock(&p.rng);
        let jitter = if behaviour.jitter_ms > 0 { rng.gen_range(0..=behaviour.jitter_ms) } else { 0 };
        (Duration::from_millis(behaviour.latency_ms + jitter), rng.gen_bool(behaviour.failure_rate))
    };
    if !behaviour.capture_then_timeout {
        tokio::time::sleep(delay).await;
    }
    if fail {
        p.charges.with_label_values(&["failed"]).inc();
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "simulated payment failure"})))
            .into_response();
    }
    let answer = {
        let mut ledger = lock(&p.ledger);
        match ledger.get(&request.request_id).cloned() {
            Some(existing) if existing.status == ChargeStatus::Cancelled => {
                p.charges.with_label_values(&["cancelled"]).inc();
                (StatusCode::CONFLICT, Json(status_body(&existing)))
            }
            Some(existing) => {
                p.charges.with_label_values(&["repeat"]).inc();
                (StatusCode::OK, Json(status_body(&existing)))
            }
            None => {
                let charge = Charge {
                    request_id: request.request_id,
                    user_id: request.user_id,
                    amount: request.amount,
                    status: ChargeStatus::Captured,
                    at_ms: now_ms(),
                };
                if let Err(e) = ledger.record(charge.clone()) {
                    tracing::error!(service = SERVICE, event = "ledger_write_failed", error = %e, "Ledger write failed");
                    return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "ledger unavailable"})))
                        .into_response();
                }
                p.charges.with_label_values(&["captured"]).inc();
                (StatusCode::OK, Json(status_body(&charge)))
            }
        }
    };
    if behaviour.capture_then_timeout {
        tokio::time::sleep(delay).await;
    }
    answer.into_response()
}

async fn charge_status(State(p): State<Arc<Provider>>, Path(key): Path<String>) -> Response {
    match lock(&p.ledger).get(&key) {
        Some(charge) => Json(status_body(charge)).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such charge"}))).into_response(),
    }
}

async fn cancel(State(p): State<Arc<Provider>>, Path(key): Path<String>) -> Response {
    let mut ledger = lock(&p.ledger);
    if let Some(existing) = ledger.get(&key) {
        return Json(status_body(existing)).into_response();
    }
    let charge =
        Charge { request_id: key, user_id: String::new(), amount: 0, status: ChargeStatus::Cancelled, at_ms: now_ms() };
    match ledger.record(charge.clone()) {
        Ok(()) => Json(status_body(&charge)).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "ledger unavailable"}))).into_response(),
    }
}

async fn ledger_all(State(p): State<Arc<Provider>>) -> Response {
    let ledger = lock(&p.ledger);
    let captures: Vec<&Charge> = ledger.captures().collect();
    Json(json!({ "captures": captures })).into_response()
}

async fn control_get(State(p): State<Arc<Provider>>) -> Response {
    Json(*lock(&p.behaviour)).into_response()
}

async fn control_put(
    State(p): State<Arc<Provider>>,
    body: Result<Json<BehaviourUpdate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let update = match body {
        Ok(Json(update)) => update,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e.body_text()}))).into_response(),
    };
    let mut behaviour = lock(&p.behaviour);
    match behaviour.apply(update) {
        Ok(()) => {
            tracing::info!(service = SERVICE, event = "behaviour_changed", behaviour = ?*behaviour, "Payment behaviour changed");
            Json(*behaviour).into_response()
        }
        Err(why) => (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response(),
    }
}

async fn metrics(State(p): State<Arc<Provider>>) -> Response {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&p.registry.gather(), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

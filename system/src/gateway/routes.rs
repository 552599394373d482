//! The gateway's HTTP API: `POST /buy`, `GET /orders/{request_id}`, `GET /health`, `/healthz`,
//! `/readyz`, `/metrics`. Every answer has a JSON body; no input yields a 5xx except the
//! dependencies' own failures and the [degradation switch](super::degrade) (503).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::breaker::{BreakerState, Ticket};
use super::claim::Claim;
use super::validate::{self, FieldError, OrderRequest};
use super::GatewayState;
use crate::order::{now_ms, OrderMessage};

const SERVICE: &str = "gateway";
/// The request header a client may set to carry its own correlation id.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// The largest `POST /buy` body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON answer with an optional `Retry-After`.
fn answer(status: StatusCode, body: Value, retry_after: Option<Duration>, correlation_id: &str) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(correlation_id) {
        headers.insert(CORRELATION_ID_HEADER, value);
    }
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up, at least 1.
        let secs = wait.as_millis().div_ceil(1000).max(1);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
    }
    response
}

fn error_body(error: &str, correlation_id: &str) -> Value {
    json!({ "error": error, "errors": [], "correlation_id": correlation_id })
}

/// The client's correlation id if it is a sane one, else a new one.
fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get(CORRELATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| validate::is_valid_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /buy`.
pub(super) async fn buy(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    state.metrics.received.inc();
    let correlation_id = correlation_id(&headers);
    let response = match parse(&headers, body, &correlation_id) {
        Err(rejection) => {
            state.metrics.validation_failed.inc();
            rejection
        }
        Ok(order) => match admit(&state, &correlation_id, started) {
            Err(refused) => refused,
            Ok(ticket) => {
                // The order's fate is decided in its own task: a client that hangs up cannot
                // cancel it between the Redis claim and the broker's answer.
                let task = place(state.clone(), order, ticket, correlation_id.clone(), started);
                match tokio::spawn(task).await {
                    Ok(response) => response,
                    Err(_) => answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        error_body("order task failed; retry", &correlation_id),
                        Some(Duration::from_secs(1)),
                        &correlation_id,
                    ),
                }
            }
        },
    };
    state.metrics.request_duration.observe(started.elapsed().as_secs_f64());
    state.metrics.responses.with_label_values(&[response.status().as_str()]).inc();
    response
}

/// Content type, size, JSON and field validation: 415, 413 or 400 with a JSON error.
fn parse(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    correlation_id: &str,
) -> Result<OrderRequest, Response> {
    if !is_json(headers) {
        return Err(answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_body("Content-Type must be application/json", correlation_id),
            None,
            correlation_id,
        ));
    }
    let body = body.map_err(|rejection| {
        let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("body larger than {MAX_BODY_BYTES} bytes")
        } else {
            "could not read the body".to_string()
        };
        answer(status, error_body(&message, correlation_id), None, correlation_id)
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        answer(
            StatusCode::BAD_REQUEST,
            error_body(&format!("malformed JSON: {e}"), correlation_id),
            None,
            correlation_id,
        )
    })?;
    validate::validate(&value).map_err(|errors: Vec<FieldError>| {
        tracing::info!(service = SERVICE, event = "order_invalid", correlation_id, fields = ?errors.iter().map(|e| e.field).collect::<Vec<_>>(), "Order rejected by validation");
        answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "validation failed", "errors": errors, "correlation_id": correlation_id }),
            None,
            correlation_id,
        )
    })
}

/// The global admission limit and the breaker: cheap checks that refuse at once, without Redis,
/// Kafka or a task of their own. `Ok` carries the breaker's ticket for this order.
fn admit(state: &GatewayState, cid: &str, started: Instant) -> Result<Ticket, Response> {
    let global = state.admission.as_ref().map_or(Ok(()), |limit| limit.try_admit(started));
    if let Err(wait) = global.and_then(|()| state.degrade.try_admit(started)) {
        state.metrics.admission_rejected.inc();
        let body = json!({
            "error": "too many orders right now: your order was not taken; queued, retry shortly",
            "errors": [], "correlation_id": cid,
        });
        return Err(answer(StatusCode::SERVICE_UNAVAILABLE, body, Some(wait), cid));
    }
    state.breaker.try_acquire(Instant::now()).map_err(|wait| {
        state.metrics.failed.inc();
        let message = "order queue unavailable (circuit breaker open); retry later";
        answer(StatusCode::SERVICE_UNAVAILABLE, error_body(message, cid), Some(wait), cid)
    })
}

/// Redis claim, then the broker: what happens to an admitted order.
async fn place(
    state: Arc<GatewayState>,
    order: OrderRequest,
    ticket: Ticket,
    correlation_id: String,
    started: Instant,
) -> Response {
    let metrics = &state.metrics;
    let cid = correlation_id.as_str();
    let unavailable = |message: &str, wait: Duration| {
        metrics.failed.inc();
        answer(StatusCode::SERVICE_UNAVAILABLE, error_body(message, cid), Some(wait), cid)
    };

    match state.claims.claim(&order, cid).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::RateLimited { retry_after }) => {
            state.breaker.forget(ticket);
            metrics.rate_limited.inc();
            tracing::info!(service = SERVICE, event = "order_rate_limited", correlation_id = cid, user_id = %order.user_id, "User over the rate limit");
            let body = json!({
                "error": "rate limit exceeded", "errors": [], "correlation_id": cid,
                "retry_after_ms": retry_after.as_millis() as u64,
            });
            return answer(StatusCode::TOO_MANY_REQUESTS, body, Some(retry_after), cid);
        }
        Ok(Claim::Duplicate { status }) => {
            state.breaker.forget(ticket);
            metrics.idempotency_rejected.inc();
            tracing::info!(service = SERVICE, event = "order_duplicate", correlation_id = cid, request_id = %order.request_id, %status, "Duplicate request rejected");
            let body = json!({
                "error": "duplicate request_id", "errors": [], "correlation_id": cid,
                "request_id": order.request_id, "status": status,
            });
            return answer(StatusCode::CONFLICT, body, None, cid);
        }
        Err(e) if e.may_have_run() => {
            // Redis may have run the claim after the wait (a starved or slow Redis).
            state.breaker.forget(ticket);
            tracing::warn!(service = SERVICE, event = "redis_claim_unknown", correlation_id = cid, request_id = %order.request_id, error = %e, "Redis did not answer the claim; it may have run");
            return id_may_stay_taken(&state, &order.request_id, cid);
        }
        Err(e) => {
            state.breaker.forget(ticket);
            tracing::warn!(service = SERVICE, event = "redis_error", correlation_id = cid, error = %e, "Redis unavailable");
            return unavailable("order store unavailable; retry later", Duration::from_secs(1));
        }
    }

    let message = OrderMessage {
        request_id: order.request_id.clone(),
        user_id: order.user_id.clone(),
        item_id: order.item_id.clone(),
        amount: order.amount,
        correlation_id: correlation_id.clone(),
        accepted_at_ms: now_ms(),
        attempt: 1,
    };
    let producing = Instant::now();
    let sent = state.queue.send(&message).await;
    metrics.produce_duration.observe(producing.elapsed().as_secs_f64());
    match sent {
        Ok(queued) => {
            state.breaker.record(ticket, true, Instant::now());
            metrics.successful.inc();
            tracing::info!(
                service = SERVICE, event = "order_queued", correlation_id = cid,
                user_id = %order.user_id, item_id = %order.item_id, request_id = %order.request_id,
                partition = queued.partition, offset = queued.offset,
                processing_time_ms = started.elapsed().as_millis() as u64,
                "Order queued successfully"
            );
            let body = json!({ "status": "Order Queued", "correlation_id": cid, "request_id": order.request_id });
            answer(StatusCode::ACCEPTED, body, None, cid)
        }
        Err(e) => {
            let before = state.breaker.state(Instant::now());
            state.breaker.record(ticket, false, Instant::now());
            log_breaker_change(before, state.breaker.state(Instant::now()));
            if e.outcome_unknown() {
                // It may be queued: not "failed". The buyer is told so, and may retry the same
                // request_id (one effect at most, by the processor).
                tracing::warn!(service = SERVICE, event = "order_queue_unknown", correlation_id = cid, request_id = %order.request_id, error = %e, "Order may or may not be queued");
                if let Err(mark_error) = state.claims.mark_unknown(&order.request_id).await {
                    tracing::error!(service = SERVICE, event = "mark_unknown_failed", correlation_id = cid, request_id = %order.request_id, error = %mark_error, "request_id stays PENDING until its status expires");
                }
                metrics.failed.inc();
                let body = json!({
                    "error": "the order queue did not confirm in time: your order may or may not be placed; check GET /orders/{request_id}, or retry with the same request_id (it is placed at most once)",
                    "errors": [], "correlation_id": cid, "request_id": order.request_id, "status": crate::keys::STATUS_UNKNOWN,
                });
                return answer(StatusCode::GATEWAY_TIMEOUT, body, Some(Duration::from_secs(1)), cid);
            }
            tracing::warn!(service = SERVICE, event = "order_queue_failed", correlation_id = cid, request_id = %order.request_id, error = %e, "Order could not be queued");
            // `bugs::GatewayBurnsIdOn503`: the id stays taken; the client's retry gets a 409.
            let burn = crate::bugs::active(crate::bugs::Bug::GatewayBurnsIdOn503);
            if !burn {
                if let Err(release_error) = state.claims.release(&order.request_id).await {
                    tracing::warn!(service = SERVICE, event = "release_failed", correlation_id = cid, request_id = %order.request_id, error = %release_error, "The request_id could not be given back");
                    return id_may_stay_taken(&state, &order.request_id, cid);
                }
            }
            unavailable("order could not be queued; retry later", Duration::from_secs(1))
        }
    }
}

/// The order was certainly not queued, but Redis did not confirm its claim's fate (the claim, or
/// its release, went unanswered): the `request_id` may stay taken (`PENDING`) for a few seconds,
/// so this is not a 503 ("certainly not taken, free to retry") — a retry could meet a 409. 504
/// with `UNKNOWN`, and the claim marked `UNKNOWN` in the background, after which a retry with the
/// same `request_id` is taken.
fn id_may_stay_taken(state: &GatewayState, request_id: &str, cid: &str) -> Response {
    state.metrics.failed.inc();
    state.claims.mark_unknown_later(request_id.to_string());
    let body = json!({
        "error": "the order store did not answer in time: the order was not placed, but its request_id may stay taken for a few seconds; retry with the same request_id",
        "errors": [], "correlation_id": cid, "request_id": request_id, "status": crate::keys::STATUS_UNKNOWN,
    });
    answer(StatusCode::GATEWAY_TIMEOUT, body, Some(Duration::from_secs(1)), cid)
}

fn log_breaker_change(before: BreakerState, after: BreakerState) {
    if before != after {
        tracing::warn!(
            service = SERVICE,
            event = "circuit_breaker_state",
            from = before.as_str(),
            to = after.as_str(),
            "Circuit breaker changed state"
        );
    }
}

/// `GET /orders/{request_id}`.
pub(super) async fn order_status(State(state): State<Arc<GatewayState>>, Path(request_id): Path<String>) -> Response {
    let cid = uuid::Uuid::new_v4().to_string();
    let chars = request_id.chars().count();
    if chars == 0 || chars > validate::REQUEST_ID_MAX_CHARS {
        return answer(StatusCode::BAD_REQUEST, error_body("request_id must be 1 to 200 characters", &cid), None, &cid);
    }
    if let Some(wait) = state.degrade.shed_status_read() {
        state.metrics.status_reads_shed.inc();
        let message =
            "order status is paused during the promotion: your order's outcome will be sent to you; check again later";
        return answer(StatusCode::SERVICE_UNAVAILABLE, error_body(message, &cid), Some(wait), &cid);
    }
    match state.claims.status(&request_id).await {
        Ok(Some(status)) => answer(StatusCode::OK, json!({ "request_id": request_id, "status": status }), None, &cid),
        Ok(None) => answer(StatusCode::NOT_FOUND, error_body("order not found", &cid), None, &cid),
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            error_body("order store unavailable", &cid),
            Some(Duration::from_secs(1)),
            &cid,
        ),
    }
}

/// `GET /health`: Redis, Kafka and the breaker; 200 when all are well, else 503. `degraded`
/// shows the degradation switch (degraded is healthy).
pub(super) async fn health(State(state): State<Arc<GatewayState>>) -> Response {
    let limit = Duration::from_secs(1);
    let (redis, kafka) = tokio::join!(state.claims.redis().ping(), state.queue.broker_reachable(limit));
    let redis = redis.is_ok();
    let breaker = state.breaker.state(Instant::now());
    state.metrics.breaker_state.set(breaker.metric_value());
    let healthy = redis && kafka && breaker != BreakerState::Open;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "redis": redis,
        "kafka": kafka,
        "circuit_breaker_state": breaker.as_str(),
        "degraded": state.degrade.mode(),
    });
    (status, Json(body)).into_response()
}

/// `GET /healthz`: the process serves.
pub(super) async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "alive" }))).into_response()
}

/// `GET /readyz`: this gateway can take orders now (not draining, Redis answers, breaker not
/// open).
pub(super) async fn readyz(State(state): State<Arc<GatewayState>>) -> Response {
    let draining = state.draining.load(Ordering::Relaxed);
    let redis = state.claims.redis().ping().await.is_ok();
    let breaker = state.breaker.state(Instant::now());
    let ready = !draining && redis && breaker != BreakerState::Open;
    let body =
        json!({ "ready": ready, "draining": draining, "redis": redis, "circuit_breaker_state": breaker.as_str() });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<Arc<GatewayState>>) -> Response {
    state.metrics.breaker_state.set(state.breaker.state(Instant::now()).metric_value());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Any other path.
pub(super) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not found", "errors": [] }))).into_response()
}

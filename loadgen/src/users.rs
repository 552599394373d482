//! What each kind of user does with an order, as a goose transaction.
//!
//! Every goose user runs one long transaction: take the next due arrival from the shared
//! backlog, play its order (a buyer buys and polls, a retrier retries, an abuser bursts, an
//! invalid user sends garbage), record every request, repeat — until the backlog is closed and
//! empty. The number of goose users is the most requests in flight at once.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goose::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::history::{Attempt, Class, Op, Recorder};
use crate::schedule::Arrival;
use crate::traffic::{Order, Traffic, UserKind};

/// How users behave, beyond the order itself.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Each request's own limit.
    pub timeout: Duration,
    /// A buyer's polls of `GET /orders/{id}` after a 202 (fewer if the order is decided).
    pub polls: u32,
    pub poll_interval: Duration,
    /// A retrier's retries after the first attempt.
    pub retries: u32,
    /// The first backoff; each next one doubles, times a jitter in 0.5..1.5.
    pub retry_base: Duration,
    /// Orders in an abuser's burst.
    pub abuse_burst: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            timeout: Duration::from_secs(5),
            polls: 3,
            poll_interval: Duration::from_millis(250),
            retries: 3,
            retry_base: Duration::from_millis(100),
            abuse_burst: 20,
        }
    }
}

/// A buyer's poll of its order, due at `at`.
#[derive(Debug, Clone)]
pub(crate) struct Poll {
    order: Order,
    /// 1 for the first poll.
    number: u32,
    at: Instant,
}

/// Everything the users share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) backlog: flume::Receiver<Arrival>,
    /// Polls due now. A buyer's polls are work items of their own, so that a user is not held
    /// through the poll interval (which would cap the arrival rate at users / session length).
    pub(crate) polls: (flume::Sender<Poll>, flume::Receiver<Poll>),
    pub(crate) traffic: Traffic,
    pub(crate) behaviour: Behaviour,
    pub(crate) recorder: Recorder,
    pub(crate) live: Arc<crate::run::Live>,
    /// The run's clock, set by the feeder once the users are up.
    pub(crate) clock: std::sync::OnceLock<Clock>,
    /// Users that entered their transaction.
    pub(crate) ready: std::sync::atomic::AtomicUsize,
    pub(crate) in_flight: AtomicI64,
    /// Arrivals started, per phase.
    pub(crate) started: Vec<AtomicU64>,
    /// Arrivals left in the backlog at `give_up_at`, per phase.
    pub(crate) not_started: Vec<AtomicU64>,
    pub(crate) errors: AtomicU64,
}

/// When the schedule started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Arrivals are due at `start + due`.
    pub(crate) start: Instant,
    /// `start` as microseconds since the Unix epoch.
    pub(crate) start_unix_us: u64,
    /// After this, arrivals still in the backlog are not started (counted, not sent).
    pub(crate) give_up_at: Instant,
}

impl Shared {
    fn clock(&self) -> Clock {
        // The feeder sets the clock before the first arrival; a fallback keeps this total.
        *self.clock.get_or_init(|| Clock {
            start: Instant::now(),
            start_unix_us: unix_us_now(),
            give_up_at: Instant::now(),
        })
    }

    fn unix_us(&self, at: Instant) -> u64 {
        let clock = self.clock();
        clock.start_unix_us + at.saturating_duration_since(clock.start).as_micros() as u64
    }
}

/// The history record of an arrival that was never sent (`reason`: `dropped`, `not_started`):
/// the order it would have been, due at its time, failed at once.
pub(crate) fn unserved(traffic: &Traffic, clock: &Clock, arrival: &Arrival, reason: &str) -> Attempt {
    let order = traffic.order(arrival);
    let now = unix_us_now();
    Attempt {
        op: Op::Unserved,
        request_id: order.request_id,
        user: order.user_id,
        item: order.item_id,
        amount: order.amount,
        kind: order.kind,
        attempt: 1,
        phase: String::new(),
        phase_index: arrival.phase,
        intended_us: clock.start_unix_us + arrival.due.as_micros() as u64,
        sent_us: now,
        done_us: now,
        status: None,
        error: Some(reason.to_string()),
        order_status: None,
        class: Class::Fail,
    }
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn unix_us_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The transaction every goose user runs once.
pub(crate) fn transaction(shared: Arc<Shared>) -> Transaction {
    Transaction::new(Arc::new(move |user| {
        let shared = shared.clone();
        Box::pin(async move { serve_arrivals(user, &shared).await })
    }))
    .set_name("flash-sale user")
}

/// How often an idle user looks whether the run was stopped.
const IDLE_CHECK: Duration = Duration::from_millis(100);

async fn serve_arrivals(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    // goose logs a warning for every failed request; the history records each one, and under
    // overload the warnings would flood the terminal. (goose sets the level when it starts.)
    log::set_max_level(log::LevelFilter::Error);
    shared.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        // Stopped (Ctrl-C reaches goose's handler, SIGTERM ours; both pull the killswitch):
        // finish nothing new. What is left in the backlog is counted by the runner.
        if goose::is_killswitch_triggered() {
            return Ok(());
        }
        // Arrivals first (their latency counts from the due time), then due polls. Under load
        // an arrival is waiting: take it without arming a timer.
        let next = match shared.backlog.try_recv() {
            Ok(arrival) => Some(arrival),
            Err(flume::TryRecvError::Disconnected) => None,
            Err(flume::TryRecvError::Empty) => tokio::select! {
            biased;
            arrival = shared.backlog.recv_async() => arrival.ok(),
            poll = shared.polls.1.recv_async() => {
                if let Ok(poll) = poll {
                    poll_order(user, shared, poll).await;
                }
                continue;
            }
            () = tokio::time::sleep(IDLE_CHECK) => continue,
            },
        };
        let Some(arrival) = next else {
            // The schedule is over and the backlog empty; polls still due are dropped with
            // the run's end (they are not orders).
            return Ok(());
        };
        let clock = shared.clock();
        if Instant::now() >= clock.give_up_at || goose::is_killswitch_triggered() {
            shared.not_started[arrival.phase].fetch_add(1, Ordering::Relaxed);
            shared.recorder.send(unserved(&shared.traffic, &clock, &arrival, "not_started")).await;
            continue;
        }
        shared.started[arrival.phase].fetch_add(1, Ordering::Relaxed);
        let order = shared.traffic.order(&arrival);
        let due = clock.start + arrival.due;
        match order.kind {
            UserKind::Buyer => buyer(user, shared, &order, due).await,
            UserKind::Retrier => retrier(user, shared, &order, due).await,
            UserKind::Abuser => abuser(user, shared, &order, due).await,
            UserKind::Invalid => invalid(user, shared, &order, due).await,
        }
    }
}

/// What a request came back with.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    body: Option<serde_json::Value>,
    /// The answer's `Retry-After`, in whole seconds.
    retry_after: Option<Duration>,
    sent: Instant,
    done: Instant,
}

/// How a body is sent.
enum Body<'a> {
    Json(BuyBody<'a>),
    /// Sent as `application/json` although it is not JSON.
    Raw(&'static str),
}

async fn send(
    user: &mut GooseUser,
    shared: &Shared,
    method: GooseMethod,
    path: &str,
    body: Option<Body<'_>>,
) -> Answer {
    let name = if method == GooseMethod::Post { "POST /buy" } else { "GET /orders/{id}" };
    let builder = match user.get_request_builder(&method, path) {
        Ok(b) => b.timeout(shared.behaviour.timeout),
        Err(e) => {
            let now = Instant::now();
            return Answer {
                status: None,
                error: Some(format!("request: {e}")),
                body: None,
                retry_after: None,
                sent: now,
                done: now,
            };
        }
    };
    let builder = match body {
        Some(Body::Json(v)) => builder.json(&v),
        Some(Body::Raw(text)) => builder.header("content-type", "application/json").body(text),
        None => builder,
    };
    let request = GooseRequest::builder().method(method).path(path).name(name).set_request_builder(builder).build();
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let sent = Instant::now();
    let result = user.request(request).await;
    let mut answer = match result {
        Err(e) => Answer {
            status: None,
            error: Some(format!("request: {e}")),
            body: None,
            retry_after: None,
            sent,
            done: Instant::now(),
        },
        Ok(goose) => match goose.response {
            Ok(response) => {
                let status = response.status().as_u16();
                let page = status == 503
                    && response
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/html"));
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read the body: the answer is complete when it has arrived (and the
                // connection can be reused).
                let body = match tokio::time::timeout(shared.behaviour.timeout, response.bytes()).await {
                    // Only a poll's answer is read further (the order's status).
                    Ok(Ok(bytes)) if method == GooseMethod::Get => Ok(serde_json::from_slice(&bytes).ok()),
                    Ok(Ok(_)) => Ok(None),
                    Ok(Err(e)) => Err(classify(&e)),
                    Err(_) => Err("timeout".to_string()),
                };
                match body {
                    Ok(body) => Answer {
                        status: Some(status),
                        error: page.then(|| crate::history::MAINTENANCE.to_string()),
                        body,
                        retry_after,
                        sent,
                        done: Instant::now(),
                    },
                    Err(error) => Answer {
                        status: None,
                        error: Some(error),
                        body: None,
                        retry_after: None,
                        sent,
                        done: Instant::now(),
                    },
                }
            }
            Err(e) => Answer {
                status: None,
                error: Some(classify(&e)),
                body: None,
                retry_after: None,
                sent,
                done: Instant::now(),
            },
        },
    };
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    if answer.error.is_some() || answer.status.is_some_and(|s| s >= 500) {
        shared.errors.fetch_add(1, Ordering::Relaxed);
    }
    if answer.done < answer.sent {
        answer.done = answer.sent;
    }
    answer
}

/// A short name for a transport error.
fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        let text = format!("{e:?}").to_lowercase();
        if text.contains("reset") {
            "reset".into()
        } else if text.contains("closed") || text.contains("incomplete") || text.contains("eof") {
            "closed".into()
        } else {
            "error".into()
        }
    }
}

/// The class of a `POST /buy` answer (DESIGN.md): accepted → ok; an answer that guarantees no
/// effect (4xx, 503: the gateway released the id) or a connection that never opened → fail;
/// anything else (a timeout, a reset after sending, another 5xx) → info, unknown.
fn buy_class(answer: &Answer) -> Class {
    match (answer.status, answer.error.as_deref()) {
        (Some(s), _) if (200..300).contains(&s) => Class::Ok,
        (Some(s), _) if (400..500).contains(&s) || s == 503 => Class::Fail,
        (Some(_), _) => Class::Info,
        (None, Some("connect")) => Class::Fail,
        (None, _) => Class::Info,
    }
}

/// `POST /buy`'s body.
#[derive(serde::Serialize)]
struct BuyBody<'a> {
    user_id: &'a str,
    item_id: &'a str,
    amount: u32,
    request_id: &'a str,
}

fn order_body<'a>(order: &'a Order, request_id: &'a str, user_id: &'a str) -> BuyBody<'a> {
    BuyBody { user_id, item_id: &order.item_id, amount: order.amount, request_id }
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    shared: &Shared,
    op: Op,
    order: &Order,
    request_id: &str,
    user_id: &str,
    number: u32,
    intended: Instant,
    answer: &Answer,
    class: Class,
) -> Attempt {
    Attempt {
        op,
        request_id: request_id.to_string(),
        user: user_id.to_string(),
        item: order.item_id.clone(),
        amount: order.amount,
        kind: order.kind,
        attempt: number,
        phase: String::new(),
        phase_index: order.phase,
        intended_us: shared.unix_us(intended),
        sent_us: shared.unix_us(answer.sent),
        done_us: shared.unix_us(answer.done),
        status: answer.status,
        error: answer.error.clone(),
        order_status: answer
            .body
            .as_ref()
            .filter(|_| op == Op::Status)
            .and_then(|b| b.get("status"))
            .and_then(|s| s.as_str())
            .map(String::from),
        class,
    }
}

async fn buy_once(
    user: &mut GooseUser,
    shared: &Shared,
    order: &Order,
    request_id: &str,
    user_id: &str,
    number: u32,
    intended: Instant,
) -> Answer {
    let body = Body::Json(order_body(order, request_id, user_id));
    let answer = send(user, shared, GooseMethod::Post, "/buy", Some(body)).await;
    let class = buy_class(&answer);
    count_live(shared, &answer);
    shared.recorder.send(attempt(shared, Op::Buy, order, request_id, user_id, number, intended, &answer, class)).await;
    answer
}

async fn buyer(user: &mut GooseUser, shared: &Shared, order: &Order, due: Instant) {
    let answer = buy_once(user, shared, order, &order.request_id, &order.user_id, 1, due).await;
    if answer.status == Some(202) {
        schedule_poll(shared, order.clone(), 1, Duration::ZERO);
    }
}

/// The longest `Retry-After` a poller honours.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// Puts poll `number` of `order` in the poll queue after the poll interval, or the server's
/// `retry_after` if longer (at most [`MAX_POLL_WAIT`]), if polls remain.
fn schedule_poll(shared: &Shared, order: Order, number: u32, retry_after: Duration) {
    if number > shared.behaviour.polls {
        return;
    }
    let at = Instant::now() + shared.behaviour.poll_interval.max(retry_after.min(MAX_POLL_WAIT));
    let queue = shared.polls.0.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        // A full queue or an ended run: the poll is skipped (polls are not orders).
        let _ = queue.try_send(Poll { order, number, at });
    });
}

async fn poll_order(user: &mut GooseUser, shared: &Shared, poll: Poll) {
    if goose::is_killswitch_triggered() {
        return;
    }
    let order = &poll.order;
    let path = format!("/orders/{}", order.request_id);
    let answer = send(user, shared, GooseMethod::Get, &path, None).await;
    let class = match answer.status {
        Some(200 | 404) => Class::Ok,
        _ => Class::Info,
    };
    let record =
        attempt(shared, Op::Status, order, &order.request_id, &order.user_id, poll.number, poll.at, &answer, class);
    // Decided: an outcome (COMPLETED, FAILED_…), not PENDING, RESERVED or UNKNOWN.
    let decided = record.order_status.as_deref().is_some_and(|s| s == "COMPLETED" || s.starts_with("FAILED"));
    shared.recorder.send(record).await;
    if !decided {
        // A client told to come back later (503 with Retry-After: a degraded gateway) does.
        let wait = answer.retry_after.filter(|_| answer.status == Some(503)).unwrap_or_default();
        schedule_poll(shared, poll.order, poll.number + 1, wait);
    }
}

async fn retrier(user: &mut GooseUser, shared: &Shared, order: &Order, due: Instant) {
    let mut rng = SmallRng::seed_from_u64(order.seed);
    let mut intended = due;
    for number in 1..=shared.behaviour.retries + 1 {
        let answer = buy_once(user, shared, order, &order.request_id, &order.user_id, number, intended).await;
        let retry = answer.error.is_some() || answer.status.is_some_and(|s| s >= 500);
        if !retry {
            return;
        }
        if goose::is_killswitch_triggered() {
            return; // stopping: no more retries
        }
        let backoff = shared.behaviour.retry_base * 2u32.pow(number - 1);
        intended = Instant::now() + backoff.mul_f64(rng.gen_range(0.5..1.5));
        if number <= shared.behaviour.retries && !sleep_unless_stopped(intended).await {
            return;
        }
    }
}

/// Sleeps until `until`, waking early (and answering `false`) when the run is stopped.
async fn sleep_unless_stopped(until: Instant) -> bool {
    while Instant::now() < until {
        if goose::is_killswitch_triggered() {
            return false;
        }
        tokio::time::sleep_until(until.min(Instant::now() + IDLE_CHECK)).await;
    }
    !goose::is_killswitch_triggered()
}

async fn abuser(user: &mut GooseUser, shared: &Shared, order: &Order, due: Instant) {
    // The burst is one user sending back to back: the first request is due with the arrival,
    // each next one when the one before has been answered. Its latency counts from then, not
    // from the arrival: the abuser's own earlier requests are not a wait the system caused.
    let mut intended = due;
    for k in 0..shared.behaviour.abuse_burst.max(1) {
        if k > 0 && goose::is_killswitch_triggered() {
            return;
        }
        let request_id = format!("{}-{k}", order.request_id);
        intended = buy_once(user, shared, order, &request_id, &order.user_id, 1, intended).await.done;
    }
}

/// Malformed orders, each of which validation must refuse with 400.
const GARBAGE: [&str; 3] = [
    r#"{"user_id":"","item_id":"101","amount":1,"request_id":"x"}"#,
    r#"{"user_id":"u1","item_id":"101","amount":0}"#,
    r#"{"user_id":"u1","item_id":"101","amount":"#,
];

async fn invalid(user: &mut GooseUser, shared: &Shared, order: &Order, due: Instant) {
    let garbage = GARBAGE[(order.seed % GARBAGE.len() as u64) as usize];
    let answer = send(user, shared, GooseMethod::Post, "/buy", Some(Body::Raw(garbage))).await;
    let class = buy_class(&answer);
    count_live(shared, &answer);
    let record = attempt(shared, Op::Buy, order, &order.request_id, &order.user_id, 1, due, &answer, class);
    shared.recorder.send(record).await;
}

fn count_live(shared: &Shared, answer: &Answer) {
    let counter = if crate::run::Live::is_good(answer.status) { &shared.live.good } else { &shared.live.bad };
    counter.fetch_add(1, Ordering::Relaxed);
}

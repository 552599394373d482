//! The Flash Sale Engine: the system under test of flashlab, as its runbook describes it. It
//! knows nothing of the lab.
//!
//! Where an order goes:
//! - [`gateway`]: `POST /buy` — [validated](gateway::validate), admitted
//!   ([global limit](gateway::admission), [circuit breaker](gateway::breaker)), rate-limited and
//!   claimed by `request_id` in Redis ([`gateway::claim`]), [queued](gateway::queue) on the
//!   Kafka topic `orders`; 202 once the broker has it.
//! - [`order`]: the message on `orders`.
//! - [`inventory`]: stock per item (`flashsale stock set|get`).
//!
//! Shared pieces: [`config`] (the runbook's env vars), [`keys`] (Redis key names),
//! [`redis_conn`] (a Redis connection with a limit on every call), [`logging`] (JSON logs),
//! [`shutdown`] (SIGTERM/SIGINT).

pub mod config;
pub mod gateway;
pub mod inventory;
pub mod keys;
pub mod logging;
pub mod order;
pub mod redis_conn;
pub mod shutdown;

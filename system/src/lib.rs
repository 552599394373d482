//! The Flash Sale Engine: the system under test of flashlab, as its runbook describes it. It
//! knows nothing of the lab.
//!
//! Where an order goes:
//! - [`gateway`]: `POST /buy` — [validated](gateway::validate), admitted
//!   ([global limit](gateway::admission), [degradation switch](gateway::degrade),
//!   [circuit breaker](gateway::breaker)), rate-limited and
//!   claimed by `request_id` in Redis ([`gateway::claim`]), [queued](gateway::queue) on the
//!   Kafka topic `orders`; 202 once the broker has it.
//! - [`processor`]: consumes `orders`; [reserves](processor::reservation) stock atomically,
//!   [pays and decides](processor::handle) — `COMPLETED`, `FAILED_SOLD_OUT`, or refund +
//!   dead letter ([once](processor::dead_letter)) + `FAILED_PAYMENT`, or through a provider outage
//!   [defers the payment](processor::deferred) — and [publishes](processor::publish) the outcome; its
//!   [group watchdog](processor::watchdog) and [group repair](processor::group_repair) keep
//!   every partition consumed.
//! - [`payment`]: the payment provider stand-in (`flashsale payment`) and its client.
//! - [`order`]: the messages and topics (`orders`, `orders-dlq`, `order-outcomes`,
//!   `inventory-events`).
//!
//! The runbook's manual procedures, made safe: [`inventory`] (`flashsale stock`), [`dlq`]
//! (`dlq list|replay`), [`reconcile`] (`reconcile [--fix [--processors-stopped]]`: a restore rolled forward), [`backup`] (`backup`/`restore`),
//! [`gateway::degrade`] (`degrade on|off|status`: the promotion's one-click switch).
//!
//! Shared pieces: [`config`] (the runbook's env vars), [`keys`] (Redis key names),
//! [`kafka_stats`] (requests each Kafka client sent, by type, on `/metrics`), [`release`] (which
//! release a service runs: `FLASHSALE_RELEASE`, on `/metrics` and on every outcome),
//! [`redis_conn`] (a Redis connection with a limit on every call, found directly or
//! through Sentinel, optionally waiting for replicas), [`topic_reader`] (read a
//! whole topic), [`logging`] (JSON logs), [`shutdown`] (SIGTERM/SIGINT).

pub mod backup;
pub mod bugs;
pub mod config;
pub mod dlq;
pub mod gateway;
pub mod inventory;
pub mod kafka_stats;
pub mod keys;
pub mod logging;
pub mod order;
pub mod payment;
pub mod process_metrics;
pub mod processor;
pub mod reconcile;
pub mod release;
pub mod redis_conn;
pub mod shutdown;
pub mod topic_reader;

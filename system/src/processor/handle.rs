//! Where an order is paid and decided: one order attempt, from reservation to outcome. Every
//! step is safe to repeat, so a message redelivered after a crash at any point ends the same way:
//!
//! 1. [reserve](super::reservation) (or find the earlier reservation, or the decision);
//! 2. charge the provider under `request_id/attempt`, within `PAYMENT_TIMEOUT`. No clear answer
//!    (timeout, 5xx, connection error) → cancel the key at the provider, which also says
//!    whether the charge had gone through (a timeout can hide a success) — retried until
//!    `PAYMENT_RESOLVE_TIMEOUT`;
//! 3. captured → `COMPLETED`; not captured → dead letter on `orders-dlq` (and `dlq:pending`),
//!    then refund the reservation and mark `FAILED_PAYMENT` — the dead letter first, so a crash
//!    in between is redelivered and the refund still happens; one letter, under a
//!    [lease](super::dead_letter), when two copies of the attempt fail at once. With
//!    `PAYMENT_OUTAGE_MODE=defer` a charge without a clear answer is not resolved here: the order
//!    keeps its units and the payment is [deferred](super::deferred), tried again until it
//!    settles;
//! 4. the decision on `order-outcomes`.
//!
//! The caller commits the offset only after this returns `Ok`.

use std::time::Duration;

use tokio::time::Instant;

use super::dead_letter::{DeadLetters, Letter, LetterError};
use super::deferred::Deferrals;
use super::publish::{Origin, Publisher};
use super::reservation::{Reservations, Reserve};
use super::ProcessorMetrics;
use crate::gateway::queue::QueueError;
use crate::order::{now_ms, Decision, OrderMessage, Outcome};
use crate::payment::client::{ChargeAnswer, PaymentClient};
use crate::payment::ledger::ChargeStatus;
use crate::redis_conn::RedisError;

const SERVICE: &str = "processor";
/// Pause between cancel attempts while the provider does not answer.
const RESOLVE_RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Kafka(#[from] QueueError),
    /// No inventory key for the item: not "sold out" — retried until the stock exists.
    #[error("no inventory for item {0} (lost or never set); not deciding")]
    InventoryMissing(String),
    /// Another copy holds the attempt's dead-letter lease past its bound.
    #[error("{0}")]
    DeadLetterBusy(String),
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Decided(Decision),
    /// The order was decided before; its outcome was published again.
    Duplicate,
    /// The charge had no clear answer and the payment waits, with its units reserved
    /// ([`deferred`](super::deferred)).
    Deferred,
}

#[derive(Debug, Clone)]
pub struct OrderWorker {
    pub(super) reservations: Reservations,
    pub(super) payment: PaymentClient,
    pub(super) publisher: Publisher,
    pub(super) metrics: ProcessorMetrics,
    pub(super) resolve_timeout: Duration,
    /// `PAYMENT_OUTAGE_MODE=defer`: where a charge without a clear answer waits.
    pub(super) deferrals: Option<Deferrals>,
    /// The lease that keeps a failed attempt's dead letter to one.
    pub(super) dead_letters: DeadLetters,
}

impl OrderWorker {
    pub async fn handle(&self, order: &OrderMessage, origin: Origin) -> Result<Handled, StepError> {
        let started = Instant::now();
        let cid = order.correlation_id.as_str();
        match self.reservations.reserve(order).await? {
            Reserve::SoldOut { stock } => {
                self.metrics.inventory.with_label_values(&[&order.item_id]).set(stock);
                self.metrics.sold_out.inc();
                self.decided(order, Decision::FailedSoldOut, Some(stock), started).await
            }
            Reserve::Missing => Err(StepError::InventoryMissing(order.item_id.clone())),
            Reserve::Decided { status, current } => {
                self.metrics.duplicates.inc();
                // Publish the decision again: the earlier run may have crashed before it did.
                let decision = if order.attempt < current {
                    // A later attempt exists only because this one failed on payment.
                    Some(Decision::FailedPayment)
                } else {
                    Decision::parse(&status)
                };
                match decision {
                    Some(decision) => self.publish(order, decision).await?,
                    None => {
                        tracing::warn!(service = SERVICE, event = "order_skipped", correlation_id = cid, request_id = %order.request_id, %status, "Order in an unexpected state; skipped")
                    }
                }
                tracing::info!(service = SERVICE, event = "order_duplicate", correlation_id = cid, request_id = %order.request_id, attempt = order.attempt, %status, "Order already decided");
                Ok(Handled::Duplicate)
            }
            Reserve::Reserved { stock } => {
                self.metrics.inventory.with_label_values(&[&order.item_id]).set(stock);
                self.pay(order, origin, started).await
            }
            Reserve::Resume => self.pay(order, origin, started).await,
        }
    }

    async fn pay(&self, order: &OrderMessage, origin: Origin, started: Instant) -> Result<Handled, StepError> {
        let key = order.payment_key();
        let captured = match self.payment.charge(&key, &order.user_id, order.amount).await {
            ChargeAnswer::Captured => Ok(()),
            ChargeAnswer::KeyCancelled => Err("payment_cancelled"),
            ChargeAnswer::Unknown { reason, detail } => {
                if let Some(deferrals) = &self.deferrals {
                    self.metrics.payments.with_label_values(&["deferred"]).inc();
                    if deferrals.defer(order, origin).await? {
                        // At once, not at the next refresh (every second): the lab's drain reads it.
                        self.metrics.payments_deferred.inc();
                        tracing::warn!(service = SERVICE, event = "payment_deferred", correlation_id = %order.correlation_id, request_id = %order.request_id, reason, %detail, "No clear payment answer; the order keeps its units and the payment is tried again");
                        return Ok(Handled::Deferred);
                    }
                    // No longer RESERVED: another copy of the order decided it meanwhile.
                    self.metrics.duplicates.inc();
                    return Ok(Handled::Duplicate);
                }
                tracing::warn!(service = SERVICE, event = "payment_unknown", correlation_id = %order.correlation_id, request_id = %order.request_id, reason, %detail, "No clear payment answer; resolving");
                self.resolve(&key, reason).await
            }
        };
        self.settle(order, origin, captured, started).await
    }

    /// Decides an attempt whose payment is known: captured → `COMPLETED`; not → dead letter,
    /// refund, `FAILED_PAYMENT` (`reason` the dead letter's).
    pub(super) async fn settle(
        &self,
        order: &OrderMessage,
        origin: Origin,
        captured: Result<(), &'static str>,
        started: Instant,
    ) -> Result<Handled, StepError> {
        match captured {
            Ok(()) => {
                if self.reservations.complete(order).await? {
                    self.decided(order, Decision::Completed, None, started).await
                } else {
                    // Another copy (a redelivery racing this one) completed it first.
                    self.metrics.duplicates.inc();
                    self.publish(order, Decision::Completed).await?;
                    Ok(Handled::Duplicate)
                }
            }
            Err(reason) => {
                // Once, even when another copy of the attempt fails at the same moment.
                let letter = self
                    .dead_letters
                    .write_once(order, || self.publisher.dead_letter(order, reason, origin))
                    .await
                    .map_err(|e| match e {
                        LetterError::Redis(e) => StepError::Redis(e),
                        LetterError::Publish(e) => StepError::Kafka(e),
                        busy @ LetterError::Busy(..) => StepError::DeadLetterBusy(busy.to_string()),
                    })?;
                if let Letter::Decided { status, current } = letter {
                    // Another copy decided the attempt (refunded, with its letter) meanwhile.
                    self.metrics.duplicates.inc();
                    let decision =
                        if order.attempt < current { Some(Decision::FailedPayment) } else { Decision::parse(&status) };
                    if let Some(decision) = decision {
                        self.publish(order, decision).await?;
                    }
                    return Ok(Handled::Duplicate);
                }
                let (status, stock) = self.reservations.refund(order).await?;
                let Some(stock) = stock else {
                    // Refunded by another copy of the order already (or it completed meanwhile:
                    // then its capture stands and the status says so).
                    self.metrics.duplicates.inc();
                    if let Some(decision) = Decision::parse(&status) {
                        self.publish(order, decision).await?;
                    }
                    return Ok(Handled::Duplicate);
                };
                self.metrics.inventory.with_label_values(&[&order.item_id]).set(stock);
                self.metrics.moved_to_dlq.inc();
                tracing::warn!(service = SERVICE, event = "order_dead_lettered", correlation_id = %order.correlation_id, request_id = %order.request_id, reason, "Payment failed; refunded and moved to DLQ");
                self.decided(order, Decision::FailedPayment, None, started).await
            }
        }
    }

    /// Cancels `key` at the provider until it answers (bounded): `Ok` if it had captured,
    /// else the DLQ reason.
    pub(super) async fn resolve(&self, key: &str, reason: &'static str) -> Result<(), &'static str> {
        let deadline = Instant::now() + self.resolve_timeout;
        loop {
            match self.payment.cancel(key).await {
                Ok(ChargeStatus::Captured) => return Ok(()),
                Ok(ChargeStatus::Cancelled) => return Err(reason),
                Err(e) if Instant::now() >= deadline => {
                    tracing::error!(service = SERVICE, event = "payment_unresolved", key, error = %e, "Provider unreachable; treating the charge as not captured (reconcile will tell)");
                    return Err("payment_unresolved");
                }
                Err(_) => tokio::time::sleep(RESOLVE_RETRY).await,
            }
        }
    }

    async fn decided(
        &self,
        order: &OrderMessage,
        decision: Decision,
        stock_seen: Option<i64>,
        started: Instant,
    ) -> Result<Handled, StepError> {
        self.publish_seen(order, decision, stock_seen).await?;
        self.metrics.processed.inc();
        match decision {
            Decision::Completed => {
                self.metrics.success.inc();
                self.metrics.payments.with_label_values(&["captured"]).inc();
            }
            Decision::FailedSoldOut => self.metrics.failed.inc(),
            Decision::FailedPayment => {
                self.metrics.failed.inc();
                self.metrics.payments.with_label_values(&["failed"]).inc();
            }
        }
        let elapsed = started.elapsed();
        self.metrics.duration.observe(elapsed.as_secs_f64());
        let waited_ms = now_ms().saturating_sub(order.accepted_at_ms);
        self.metrics.time_to_decision.observe(waited_ms as f64 / 1000.0);
        tracing::info!(
            service = SERVICE, event = "order_processed", correlation_id = %order.correlation_id,
            request_id = %order.request_id, user_id = %order.user_id, item_id = %order.item_id,
            attempt = order.attempt, outcome = decision.as_str(),
            processing_time_ms = elapsed.as_millis() as u64, "Order processed"
        );
        Ok(Handled::Decided(decision))
    }

    async fn publish(&self, order: &OrderMessage, decision: Decision) -> Result<(), StepError> {
        self.publish_seen(order, decision, None).await
    }

    async fn publish_seen(
        &self,
        order: &OrderMessage,
        decision: Decision,
        stock_seen: Option<i64>,
    ) -> Result<(), StepError> {
        let outcome = Outcome {
            request_id: order.request_id.clone(),
            user_id: order.user_id.clone(),
            item_id: order.item_id.clone(),
            amount: order.amount,
            attempt: order.attempt,
            outcome: decision,
            correlation_id: order.correlation_id.clone(),
            accepted_at_ms: order.accepted_at_ms,
            decided_at_ms: now_ms(),
            stock_seen,
            release: crate::release::name().map(str::to_owned),
        };
        Ok(self.publisher.outcome(&outcome).await?)
    }
}

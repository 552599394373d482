//! A workaround for the broker's group coordinator: tansu 0.6.0 keeps a dead member's partitions.
//!
//! When a member stops heartbeating (kill -9, a frozen VM), tansu notices it on a survivor's
//! heartbeat and answers "rebalance in progress", but its group stays in the formed state (the
//! missed heartbeat is checked twice, and the second check, which would start a new generation,
//! finds nothing left to evict). The survivors rejoin into the *same* generation, with the dead
//! member still leader, and get their old partitions back: the dead member's partitions are
//! consumed by nobody.
//!
//! The symptom is visible from a survivor: a revocation followed by exactly the assignment it
//! had. Then [`GroupRepair`] makes one short-lived *probe* member join the group (a new member
//! does start a new generation in tansu) and leave again: the live members rebalance properly
//! and the orphaned partitions find an owner. The probe commits nothing and processes nothing.
//! At most one probe runs per [`PROBE_INTERVAL`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::Notify;

use crate::order::ORDERS_TOPIC;

/// The least time between two probes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a probe waits for its assignment before it leaves anyway.
const PROBE_WAIT: Duration = Duration::from_secs(15);

/// The processor's consumer context: remembers the last assignment and asks for a probe when a
/// rebalance hands back the very same one.
#[derive(Debug, Default)]
pub struct GroupRepair {
    last: Mutex<Option<BTreeSet<i32>>>,
    needed: Arc<Notify>,
}

impl ClientContext for GroupRepair {
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::kafka_stats::record("processor-consumer", &statistics);
    }
}

impl ConsumerContext for GroupRepair {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else { return };
        let partitions: BTreeSet<i32> = list.elements_for_topic(ORDERS_TOPIC).iter().map(|e| e.partition()).collect();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() == Some(&partitions) {
            tracing::warn!(service = "processor", event = "stale_rebalance", partitions = ?partitions, "Rebalance returned the same assignment; probing the group");
            self.needed.notify_one();
        } else {
            tracing::info!(service = "processor", event = "assigned", partitions = ?partitions, "Partitions assigned");
        }
        *last = Some(partitions);
    }
}

impl GroupRepair {
    /// What [`run_probes`] waits on.
    pub fn probe_requests(&self) -> Arc<Notify> {
        self.needed.clone()
    }
}

/// Runs probes when asked (bounded: one per [`PROBE_INTERVAL`]), until the task is dropped.
pub async fn run_probes(requests: Arc<Notify>, bootstrap: String, group: &'static str) {
    loop {
        requests.notified().await;
        let bootstrap = bootstrap.clone();
        let joined = tokio::task::spawn_blocking(move || probe(&bootstrap, group)).await.unwrap_or(false);
        tracing::info!(service = "processor", event = "group_probe", joined, "Probe member joined and left the group");
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Joins `group` as a new member, waits (bounded) for its assignment, and leaves.
fn probe(bootstrap: &str, group: &str) -> bool {
    let Ok(consumer): Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", "flashsale-processor-probe")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "10000")
        .create()
    else {
        return false;
    };
    if consumer.subscribe(&[ORDERS_TOPIC]).is_err() {
        return false;
    }
    let started = std::time::Instant::now();
    let mut joined = false;
    while started.elapsed() < PROBE_WAIT {
        // Messages fetched here are dropped uncommitted: their owner processes them.
        let _ = consumer.poll(Duration::from_millis(100));
        if consumer.assignment().is_ok_and(|a| a.count() > 0) {
            joined = true;
            break;
        }
    }
    consumer.unsubscribe();
    joined
}

//! The group watchdog: an accepted order is decided within a bound even when the broker's group
//! coordinator leaves a partition of `orders` without a working consumer.
//!
//! tansu 0.6.0 can do that in more ways than [`group_repair`](super::group_repair) recognises
//! from inside one member (a restarted member that never sees a revocation, a rebalance that
//! completes over a stale member list, a probe whose own departure is lost). So instead of
//! recognising causes, each processor watches the effect: every [`CHECK_EVERY`] it reads the
//! group's committed offset and the high watermark of every partition. A partition whose commit
//! point has not moved for [`STALL_AFTER`] while messages wait behind it is *stalled*, and:
//!
//! - stalled and ours with orders in flight → we are working on it (Redis or payment retries):
//!   nothing to repair, here or elsewhere (the other stalls are likely the same outage);
//! - stalled and ours, with nothing of it in flight here → our consumer is not fetching it:
//!   **rejoin** (leave the group and join again as a new member; a new generation follows);
//! - stalled and not ours, while none of ours is stalled with work → nobody consumes it:
//!   **probe** (a short-lived member joins and leaves, which forces a new generation); still
//!   stalled [`STALL_AFTER`] after the probe → **rejoin**.
//!
//! After a remedy the partition's clock starts again, so remedies are at most one per
//! [`STALL_AFTER`] per partition. Bound: a stall is repaired within about
//! `STALL_AFTER + CHECK_EVERY + probe (≤ 15 s) + a rebalance`, i.e. well under a minute; the
//! storm test (`system/tests/processor_storm.rs`) holds every order to 60 s.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio::sync::Notify;

use super::{lock, GroupConsumer, ProcessorMetrics, Shared, SERVICE};
use crate::order::ORDERS_TOPIC;

/// How often the committed offsets are read.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// No commit progress this long, with lag, is a stall. Above the session timeout (10 s), so
/// that a dead member's ordinary eviction and rebalance are given their chance first.
pub const STALL_AFTER: Duration = Duration::from_secs(12);

/// One partition as read from the broker: the group's next offset to consume and the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub partition: i32,
    pub committed: i64,
    pub high: i64,
}

/// What to do about the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    Nothing,
    /// A probe member joins and leaves: a new generation for everybody.
    Probe {
        stalled: Vec<i32>,
    },
    /// This processor leaves the group and joins again.
    Rejoin {
        stalled: Vec<i32>,
    },
}

#[derive(Debug)]
struct Clock {
    committed: i64,
    /// Since when the commit point has stood still with lag (or the last remedy).
    since: Instant,
    /// A probe was asked for this stall.
    probed: bool,
    /// Since when the commit point has stood still with lag, remedies or not: the stall's age
    /// as the alert sees it (`processor_partition_stalled_seconds`).
    still_since: Instant,
}

impl Clock {
    /// A commit point seen moving (or with nothing behind it) at `now`.
    fn fresh(committed: i64, now: Instant) -> Clock {
        Clock { committed, since: now, probed: false, still_since: now }
    }
}

/// The stall detector: fed with readings, answers the remedy. No I/O, so it is unit-tested.
#[derive(Debug, Default)]
pub struct StallTracker {
    clocks: HashMap<i32, Clock>,
}

impl StallTracker {
    /// Forget everything (the readings could not be taken: the broker is away).
    pub fn reset(&mut self) {
        self.clocks.clear();
    }

    /// How long each partition's commit point has stood still with orders behind it, as of
    /// `now` (zero for a partition that moved or has nothing waiting at the last reading).
    pub fn stalled_for(&self, now: Instant) -> Vec<(i32, Duration)> {
        let mut out: Vec<(i32, Duration)> =
            self.clocks.iter().map(|(p, c)| (*p, now.saturating_duration_since(c.still_since))).collect();
        out.sort_unstable();
        out
    }

    /// `ours`: our assignment; `in_flight(p)`: orders of partition `p` being worked on here.
    pub fn observe(
        &mut self,
        now: Instant,
        readings: &[Reading],
        ours: &BTreeSet<i32>,
        in_flight: impl Fn(i32) -> usize,
    ) -> Remedy {
        let mut stalled_ours_idle = Vec::new();
        let mut stalled_ours_busy = false;
        let mut stalled_theirs = Vec::new();
        for r in readings {
            let clock = self.clocks.entry(r.partition).or_insert_with(|| Clock::fresh(r.committed, now));
            if r.committed != clock.committed || r.committed >= r.high {
                *clock = Clock::fresh(r.committed, now);
                continue;
            }
            if now.duration_since(clock.since) < STALL_AFTER {
                continue;
            }
            if ours.contains(&r.partition) {
                if in_flight(r.partition) > 0 {
                    stalled_ours_busy = true;
                } else {
                    stalled_ours_idle.push(r.partition);
                }
            } else {
                stalled_theirs.push(r.partition);
            }
        }
        let restart = |clocks: &mut HashMap<i32, Clock>, partitions: &[i32], probed: bool| {
            for p in partitions {
                if let Some(c) = clocks.get_mut(p) {
                    c.since = now;
                    c.probed = probed;
                }
            }
        };
        // Our own work is stuck (Redis or the provider away): every other stall here is likely
        // the same outage (an idle partition of ours may just wait for a free slot, the others'
        // for their own retries), not a lost partition. A rebalance would only add to it.
        if stalled_ours_busy {
            return Remedy::Nothing;
        }
        if !stalled_ours_idle.is_empty() {
            restart(&mut self.clocks, &stalled_ours_idle, false);
            return Remedy::Rejoin { stalled: stalled_ours_idle };
        }
        if stalled_theirs.is_empty() {
            return Remedy::Nothing;
        }
        let probed_before = stalled_theirs.iter().any(|p| self.clocks.get(p).is_some_and(|c| c.probed));
        if probed_before {
            restart(&mut self.clocks, &stalled_theirs, false);
            Remedy::Rejoin { stalled: stalled_theirs }
        } else {
            restart(&mut self.clocks, &stalled_theirs, true);
            Remedy::Probe { stalled: stalled_theirs }
        }
    }
}

/// The watchdog's loop: reads the group's commit points every
/// [`CHECK_EVERY`] and applies the remedy for a stalled partition.
pub(super) async fn watch_group(
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    probes: Arc<Notify>,
    metrics: ProcessorMetrics,
    partitions: i32,
) {
    let mut tracker = StallTracker::default();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let c = consumer.clone();
        let read = tokio::task::spawn_blocking(move || read_group(&c, partitions)).await;
        let Ok(Some((readings, ours))) = read else {
            // The broker did not answer: nothing is known, every clock starts again (and the
            // gauges say nothing rather than something stale).
            tracker.reset();
            metrics.group_backlog.reset();
            metrics.partition_stalled_seconds.reset();
            continue;
        };
        let now = std::time::Instant::now();
        let remedy = tracker.observe(now, &readings, &ours, |p| lock(&shared.tracker).in_flight_in(p));
        for r in &readings {
            metrics.group_backlog.with_label_values(&[&r.partition.to_string()]).set((r.high - r.committed).max(0));
        }
        for (partition, stalled) in tracker.stalled_for(now) {
            metrics
                .partition_stalled_seconds
                .with_label_values(&[&partition.to_string()])
                .set(stalled.as_secs() as i64);
        }
        match remedy {
            Remedy::Nothing => {}
            Remedy::Probe { stalled } => {
                tracing::warn!(service = SERVICE, event = "partition_stalled", remedy = "probe", ?stalled, ours = ?ours, "Partitions with waiting orders make no progress; probing the group");
                metrics.group_repairs.with_label_values(&["probe"]).inc();
                probes.notify_one();
            }
            Remedy::Rejoin { stalled } => {
                tracing::warn!(service = SERVICE, event = "partition_stalled", remedy = "rejoin", ?stalled, ours = ?ours, "Partitions with waiting orders make no progress; rejoining the group");
                metrics.group_repairs.with_label_values(&["rejoin"]).inc();
                let c = consumer.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    c.unsubscribe();
                    if let Err(e) = c.subscribe(&[ORDERS_TOPIC]) {
                        tracing::error!(service = SERVICE, event = "rejoin_failed", error = %e, "Could not subscribe again");
                    }
                })
                .await;
            }
        }
    }
}

/// The group's commit point and the end of every `orders` partition, and our assignment;
/// `None` when the broker does not answer (each call bounded).
fn read_group(c: &GroupConsumer, partitions: i32) -> Option<(Vec<Reading>, std::collections::BTreeSet<i32>)> {
    let limit = Duration::from_secs(2);
    let ours = c.assignment().ok()?.elements_for_topic(ORDERS_TOPIC).iter().map(|e| e.partition()).collect();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(ORDERS_TOPIC, p);
    }
    let committed = c.committed_offsets(list, limit).ok()?;
    let mut readings = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(ORDERS_TOPIC, p, limit).ok()?;
        // Never committed: consumption starts at the beginning (auto.offset.reset=earliest).
        let committed = committed
            .find_partition(ORDERS_TOPIC, p)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
            .unwrap_or(low);
        readings.push(Reading { partition: p, committed, high });
    }
    Some((readings, ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(partition: i32, committed: i64, high: i64) -> Reading {
        Reading { partition, committed, high }
    }

    fn set(p: &[i32]) -> BTreeSet<i32> {
        p.iter().copied().collect()
    }

    #[test]
    fn progress_or_no_lag_is_never_a_stall() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.observe(t0, &[r(0, 5, 5), r(1, 3, 9)], &set(&[0]), |_| 0), Remedy::Nothing);
        // Partition 1 moves every check: never stalled, however long.
        for i in 1..20u64 {
            let now = t0 + Duration::from_secs(2 * i);
            assert_eq!(t.observe(now, &[r(0, 5, 5), r(1, 3 + i as i64, 100)], &set(&[0]), |_| 0), Remedy::Nothing);
        }
    }

    #[test]
    fn a_stall_ages_through_remedies_and_ends_with_progress() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let stuck = [r(0, 10, 10), r(1, 4, 9)];
        t.observe(t0, &stuck, &set(&[0]), |_| 0);
        assert_eq!(t.observe(t0 + STALL_AFTER, &stuck, &set(&[0]), |_| 0), Remedy::Probe { stalled: vec![1] });
        let later = t0 + STALL_AFTER + Duration::from_secs(4);
        t.observe(later, &stuck, &set(&[0]), |_| 0);
        // The probe restarted the remedy clock, not the stall's age.
        assert_eq!(t.stalled_for(later), vec![(0, Duration::ZERO), (1, STALL_AFTER + Duration::from_secs(4))]);
        let moved = later + Duration::from_secs(2);
        t.observe(moved, &[r(0, 10, 10), r(1, 5, 9)], &set(&[0]), |_| 0);
        assert_eq!(t.stalled_for(moved), vec![(0, Duration::ZERO), (1, Duration::ZERO)]);
    }

    #[test]
    fn a_partition_nobody_consumes_is_probed_then_rejoined() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let readings = [r(0, 10, 10), r(1, 4, 9)];
        assert_eq!(t.observe(t0, &readings, &set(&[0]), |_| 0), Remedy::Nothing);
        assert_eq!(t.observe(t0 + STALL_AFTER / 2, &readings, &set(&[0]), |_| 0), Remedy::Nothing);
        assert_eq!(t.observe(t0 + STALL_AFTER, &readings, &set(&[0]), |_| 0), Remedy::Probe { stalled: vec![1] });
        // The probe did not help: the next remedy, one stall later, is a rejoin.
        let later = t0 + STALL_AFTER + STALL_AFTER / 2;
        assert_eq!(t.observe(later, &readings, &set(&[0]), |_| 0), Remedy::Nothing);
        assert_eq!(t.observe(t0 + STALL_AFTER * 2, &readings, &set(&[0]), |_| 0), Remedy::Rejoin { stalled: vec![1] });
    }

    #[test]
    fn owning_nothing_while_lag_exists_is_repaired() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let readings = [r(0, 1, 3), r(1, 0, 2)];
        t.observe(t0, &readings, &set(&[]), |_| 0);
        assert_eq!(t.observe(t0 + STALL_AFTER, &readings, &set(&[]), |_| 0), Remedy::Probe { stalled: vec![0, 1] });
    }

    #[test]
    fn our_own_idle_stalled_partition_means_rejoin() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let readings = [r(2, 7, 8)];
        t.observe(t0, &readings, &set(&[2]), |_| 0);
        assert_eq!(t.observe(t0 + STALL_AFTER, &readings, &set(&[2]), |_| 0), Remedy::Rejoin { stalled: vec![2] });
    }

    #[test]
    fn work_in_hand_is_not_a_lost_partition() {
        // Redis is away: our partition waits on orders being retried; the other processor's
        // partition waits too. Neither is repaired.
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let readings = [r(0, 7, 8), r(1, 3, 9)];
        t.observe(t0, &readings, &set(&[0]), |_| 1);
        assert_eq!(t.observe(t0 + STALL_AFTER * 3, &readings, &set(&[0]), |p| usize::from(p == 0)), Remedy::Nothing);
    }

    #[test]
    fn an_idle_partition_of_ours_waiting_behind_stuck_work_is_left_alone() {
        // Every slot is taken by partition 0's orders retrying Redis; partition 1 waits for a
        // slot. Not a fetching problem: no rejoin.
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let readings = [r(0, 7, 9), r(1, 3, 9)];
        t.observe(t0, &readings, &set(&[0, 1]), |p| usize::from(p == 0) * 256);
        let later = t0 + STALL_AFTER * 2;
        assert_eq!(t.observe(later, &readings, &set(&[0, 1]), |p| usize::from(p == 0) * 256), Remedy::Nothing);
    }

    #[test]
    fn a_reset_starts_every_clock_again() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let readings = [r(1, 4, 9)];
        t.observe(t0, &readings, &set(&[]), |_| 0);
        t.reset();
        assert_eq!(t.observe(t0 + STALL_AFTER, &readings, &set(&[]), |_| 0), Remedy::Nothing);
    }
}

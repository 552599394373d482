//! In-order offset commits for orders processed concurrently.
//!
//! Orders of one partition are worked on at the same time, but an offset may be committed only
//! when every order before it in the partition is done — otherwise a crash would skip the
//! unfinished ones. [`CommitTracker`] answers "up to where may partition *p* be committed now?".
//!
//! When the consumer is sent back to an earlier offset (a rebalance gave the partition back),
//! the partition starts a new *generation*: orders still in flight from before are finished but
//! no longer move the commit point.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// The highest offset handed out in this generation.
    highest: Option<i64>,
    /// The commit point last returned, to report only advances.
    committed: Option<i64>,
}

/// A handle for one in-flight message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub partition: i32,
    pub offset: i64,
    generation: u64,
}

#[derive(Debug, Default)]
pub struct CommitTracker {
    partitions: HashMap<i32, PartitionState>,
}

impl CommitTracker {
    /// Registers a message as taken.
    pub fn begin(&mut self, partition: i32, offset: i64) -> Slot {
        let state = self.partitions.entry(partition).or_default();
        if state.highest.is_some_and(|h| offset <= h) {
            // Rewound: a new generation; the old in-flight orders no longer count.
            state.generation += 1;
            state.in_flight.clear();
            state.committed = None;
        }
        state.highest = Some(offset);
        state.in_flight.insert(offset);
        Slot { partition, offset, generation: state.generation }
    }

    /// Marks a message done; returns the next offset to commit (the first not yet done) if the
    /// commit point moved forward.
    pub fn finish(&mut self, slot: Slot) -> Option<i64> {
        let state = self.partitions.get_mut(&slot.partition)?;
        if state.generation != slot.generation {
            return None;
        }
        state.in_flight.remove(&slot.offset);
        let point = match state.in_flight.first() {
            Some(&first) => first,
            None => state.highest? + 1,
        };
        if state.committed.is_some_and(|c| c >= point) {
            return None;
        }
        state.committed = Some(point);
        Some(point)
    }

    /// Orders of `partition` still in flight (of its current generation).
    pub fn in_flight_in(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |s| s.in_flight.len())
    }

    /// Orders still in flight, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_only_past_contiguous_done_offsets() {
        let mut t = CommitTracker::default();
        let a = t.begin(0, 10);
        let b = t.begin(0, 11);
        let c = t.begin(0, 12);
        // 10 is still in flight: the commit point may not pass it ("resume at 10").
        assert_eq!(t.finish(b), Some(10));
        assert_eq!(t.finish(a), Some(12));
        assert_eq!(t.finish(c), Some(13));
    }

    #[test]
    fn a_rewind_starts_a_new_generation() {
        let mut t = CommitTracker::default();
        let old = t.begin(0, 20);
        let again = t.begin(0, 15); // redelivered from 15
        assert_eq!(t.finish(old), None, "the old generation does not move the commit point");
        let next = t.begin(0, 16);
        assert_eq!(t.finish(again), Some(16));
        assert_eq!(t.finish(next), Some(17));
    }

    proptest! {
        /// Whatever order messages finish in, a returned commit point never passes an offset
        /// that is not done, and once all are done it is just past the last.
        #[test]
        fn never_commits_past_unfinished(order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = CommitTracker::default();
            let slots: Vec<Slot> = (0..40).map(|o| t.begin(3, o)).collect();
            let mut done = std::collections::HashSet::new();
            let mut last = None;
            for o in order {
                done.insert(o);
                if let Some(point) = t.finish(slots[o as usize]) {
                    prop_assert!((0..point).all(|x| done.contains(&x)), "committed {} with gaps", point);
                    last = Some(point);
                }
            }
            prop_assert_eq!(last, Some(40));
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}

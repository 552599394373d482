//! `flashlab gate` (being built, issue 15): a suite of drills run on a base and a head, each
//! figure compared as a distribution over repeated runs, invariants never statistical.
//!
//! - [`stats`]: the statistics of one figure — Mann–Whitney's exact test, a bootstrap interval
//!   of the difference of medians, and the smallest change that matters.

pub mod stats;

//! `flashlab gate` (being built, issue 15): a suite of drills run on a base and a head, each
//! figure compared as a distribution over repeated runs, invariants never statistical.
//!
//! - [`figures`]: what is compared of one run — availability, latency percentiles, RTO, time
//!   to decision, time to detect, orders decided per second — and the invariants that broke.
//! - [`suite`]: the suite file — drills, scale, runs a side, the smallest changes that matter.
//! - [`run`]: `flashlab gate` and `flashlab baseline update` — the runs, interleaved, and
//!   `gate.json`.
//! - [`compare`]: one drill's figures, base against head, over its runs.
//! - [`stats`]: the statistics of one figure — Mann–Whitney's exact test, a bootstrap interval
//!   of the difference of medians, and the smallest change that matters.

pub mod compare;
pub mod figures;
pub mod run;
pub mod stats;
pub mod suite;

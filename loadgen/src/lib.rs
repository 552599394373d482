//! flashlab's traffic generator: flash-sale users on goose, open arrival schedules, latency
//! measured from the intended send time, and a record of every request.
//!
//! - [`schedule`]: [`ArrivalSchedule`] — named phases (constant, ramp, Poisson) that fix the
//!   offered rate however slow the system gets.
//! - [`traffic`]: the user kinds (buyer, retrier, abuser, invalid), their mix, and the seeded
//!   generator that turns each arrival into an order.
//! - [`users`]: what each kind does, as the goose transaction every goose user runs.
//! - [`history`]: `history.jsonl` (one line per request) and the per-phase and per-second
//!   HdrHistograms of corrected latency and service time.
//! - [`run`]: one run — feeder, goose attack, recorder, progress line, `load-summary.json`.
//! - [`summary`]: the summary table printed at the end.
//! - [`procstat`]: CPU and memory of a process from `/proc` (the generator's own, the system's).

pub mod history;
pub mod procstat;
pub mod run;
pub mod schedule;
pub mod summary;
pub mod traffic;
pub mod users;

pub use run::{run, stop_requested, GeneratorHealth, Live, LoadConfig, LoadError, LoadSummary};
pub use schedule::ArrivalSchedule;
pub use traffic::{Catalogue, Traffic, UserKind, UserMix};
pub use users::Behaviour;

//! flashlab's command line and, as they arrive, its drills.
//!
//! - [`up`]: `flashlab up` — the flash-sale system on loopback until Ctrl-C, with a fault
//!   injector behind a control socket.
//! - [`fault_cli`]: `flashlab fault ...` — inject, list and heal faults in a running `up`.
//! - [`load_cli`]: `flashlab load ...` — flash-sale traffic against a gateway, with a history.
//! - [`scenario`]: the scenario file (TOML): topology, stock, load, fault timeline, SLOs,
//!   invariants, abort conditions, alerts, the release candidate and its canary gate.
//! - [`drill`]: `flashlab drill` — runs a scenario and writes the run directory (its records:
//!   the `rundir` crate); [`drill::checks`] judge it three ways (pass / fail / inconclusive):
//!   [SLOs](drill::checks::slo), [invariants](drill::checks::invariants) before and after a
//!   repair, [faults](drill::checks::faults) that must land, a [release](drill::checks::release)
//!   rolled back in time; the timeline's deploys and the canary gate run in `drill::release`;
//!   [`drill::final_state`] reads what
//!   the system holds (after the drain, and before a repair); [`drill::scrape`] records
//!   `/metrics`; [`drill::procs`] samples every process's CPU and memory.
//! - [`gate`]: the regression gate (being built): [`gate::stats`] judges a figure over
//!   repeated runs of a base and a head.
//! - [`capacity`]: `flashlab capacity` — the highest sustained rate per topology, the knee, the
//!   component that saturates first, the USL fit and the headroom answer; each trial a drill.

pub mod capacity;
pub mod drill;
pub mod gate;
pub mod fault_cli;
pub mod load_cli;
pub mod scenario;
pub mod up;

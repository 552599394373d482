//! What flashlab can start and break.
//!
//! - [`process`]: a supervised child process — started with its output in a log file, waited
//!   on until healthy (bounded), stopped, killed, paused, resumed and restarted with the same
//!   data and ports. A child never outlives the lab: it is killed when its handle drops, and the
//!   kernel kills it when the lab dies (`PR_SET_PDEATHSIG` through `setpriv`).
//! - [`probe`]: readiness checks that speak each component's own protocol (Redis `PING`, Kafka
//!   `ApiVersions`, HTTP `GET`), each with a timeout.
//! - [`proxy`]: the TCP fault proxy — latency, bandwidth, blackhole, reset, slow close, slicer,
//!   data limit, down/up — per direction, applied to open connections too.
//! - [`ports`]: free loopback ports.
//! - [`components`]: how to run each real dependency — `redis-server` and the `tansu` broker — and
//!   the system's own services.
//! - [`testbed`]: [`Testbed`], which brings up Redis, the broker and the flash-sale gateways on
//!   loopback for tests and for the lab, and takes them down again.

pub mod components;
pub mod ports;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod testbed;

pub use process::{ProcessError, Supervised};
pub use testbed::{Testbed, TestbedConfig, TestbedError};

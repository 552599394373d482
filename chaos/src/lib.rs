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
//! - [`maintenance`]: the maintenance page the front proxy answers when no gateway takes a
//!   connection (503, `Retry-After`, HTML).
//! - [`cgroups`]: resource faults through cgroup v1 — a CPU quota on one process and a memory
//!   limit on a component's own memory cgroup (every component lives in one from birth), read
//!   back from the kernel (throttling, the OOM killer), lifted on heal; leftovers of a killed
//!   lab swept at the next start. A container's CPU quota is the engine's (`docker update`),
//!   read back here the same way.
//! - [`faults`]: the fault catalogue — what can be broken ([`faults::Target`]), how
//!   ([`faults::Action`]) and for how long ([`faults::Fault`]).
//! - [`injector`]: the [`Injector`], which applies a fault to a running testbed, checks that it
//!   took effect, heals it on time and records both in the [`events`] log.
//! - [`supervisor`]: Kubernetes-style auto-recovery of the services — restart on exit with
//!   back-off, liveness and readiness probes, a gateway out of the front's rotation while not
//!   ready.
//! - [`control`]: the control socket of `flashlab up`, through which a second shell injects
//!   faults by hand.
//! - [`events`]: `events.jsonl`, what the lab did and when.
//! - [`ports`]: free loopback ports.
//! - [`components`]: how to run each real dependency — `redis-server` and the `tansu` broker — and
//!   the system's own services.
//! - [`testbed`]: [`Testbed`], which brings up Redis, the broker, payment, processors and
//!   gateways on loopback — the first three behind fault proxies — and takes them down again;
//!   with replicas, Redis is a replicated set under three sentinels ([`testbed::replication`])
//!   and the on-call fails it over without losing a write ([`testbed::failover`]);
//!   a gateway or processor can be replaced by another build and put back
//!   ([`testbed::release`]: a canary and its rollback); or the same system with every component
//!   in a container of the run's network (`runtime = containers`, [`testbed::RuntimeKind`]),
//!   replicated Redis and its sentinels included.
//! - [`containers`]: the container runtime — the images (`flashlab images build`), a run's Docker
//!   network and containers started through `testcontainers`, published on 127.0.0.1 only, and
//!   removed at the end or, after kill -9 of the lab, by its reaper or the next start; a
//!   testbed component in a container under the lab's control ([`containers::hosted`]).
//! - [`monitoring`]: Prometheus, Alertmanager and the exporters beside a testbed (rules and
//!   routing from `monitoring/` at the repository root), and the lab's webhook receiver that
//!   records every notification.

pub mod cgroups;
pub mod components;
pub mod containers;
pub mod control;
pub mod events;
pub mod faults;
pub mod injector;
pub mod maintenance;
pub mod monitoring;
pub mod ports;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod supervisor;
pub mod testbed;

pub use events::EventLog;
pub use faults::{Action, Fault, Target};
pub use injector::Injector;
pub use process::{ProcessError, Supervised};
pub use testbed::{Testbed, TestbedConfig, TestbedError};

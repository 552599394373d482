//! The fault catalogue: what can be broken ([`Target`]), how ([`Action`]) and for how long
//! ([`Fault`]). The [`crate::injector`] applies, verifies and heals them.
//!
//! | action | targets | effect | heal |
//! |---|---|---|---|
//! | `kill` | any | SIGKILL | started again, same ports and data |
//! | `terminate` | any | SIGTERM, waits for the exit | started again |
//! | `pause` | any | SIGSTOP (a frozen VM, a GC stall) | SIGCONT |
//! | `restart` | any | SIGTERM then start, same ports and data (instant) | — |
//! | `latency`, `bandwidth`, `blackhole`, `reset_peer`, `slow_close`, `slicer`, `limit_data` | redis, broker, payment | a toxic on the component's [proxy](crate::proxy) | toxic removed |
//! | `down` | redis, broker, payment | the proxy refuses connections and closes open ones | up again |
//! | `payment_timeout` | payment | answers later than the processor waits | behaviour before the fault |
//! | `payment_failures` | payment | a share of charges fail (500) | behaviour before |
//! | `payment_outage` | payment | every charge 503 | behaviour before |
//! | `payment_capture_then_timeout` | payment | charged, but the answer comes too late | behaviour before |
//! | `redis_stall` | redis | `CLIENT PAUSE ALL` server-side (needs a duration) | `CLIENT UNPAUSE` |
//! | `redis_loss` | redis | SIGKILL and its data deleted | started empty, or restored from a backup |
//! | `cpu` | any | a CPU quota (cgroup v1 `cpu`): starvation; it must throttle the process | moved out of the quota |
//! | `memory` | any | a memory limit on what it allocates from then on (cgroup v1 `memory`): pressure, then the OOM killer; it must reach the limit | moved out; started again if the OOM killer took it |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proxy::{Direction, Toxic};

/// The longest a fault may last: one without a duration heals after this at the latest.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(3600);

/// A component of the [`crate::Testbed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// The Redis server; with replicas, the primary (whichever node it is when the fault starts).
    Redis,
    /// With replicas: node N of the set (`redis[0]` is the first primary).
    RedisNode(usize),
    /// With replicas: sentinel N.
    Sentinel(usize),
    /// With replicas: the replication link from the first primary to replica N (`replication[N]`,
    /// a fault proxy of its own: a network fault on it slows or cuts replication alone).
    RedisLink(usize),
    Broker,
    Payment,
    Gateway(usize),
    Processor(usize),
}

impl Target {
    /// Whether the target has a fault proxy in front of it.
    pub fn has_proxy(self) -> bool {
        matches!(self, Target::Redis | Target::RedisNode(_) | Target::RedisLink(_) | Target::Broker | Target::Payment)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Redis => f.write_str("redis"),
            Target::RedisNode(i) => write!(f, "redis[{i}]"),
            Target::Sentinel(i) => write!(f, "sentinel[{i}]"),
            Target::RedisLink(i) => write!(f, "replication[{i}]"),
            Target::Broker => f.write_str("broker"),
            Target::Payment => f.write_str("payment"),
            Target::Gateway(i) => write!(f, "gateway[{i}]"),
            Target::Processor(i) => write!(f, "processor[{i}]"),
        }
    }
}

/// What a target may be called.
pub const TARGET_SYNTAX: &str = "redis, broker, payment, gateway[N], processor[N] (gateway = gateway[0]); with Redis replicas also redis[N], sentinel[N] and replication[N] (the link to replica N; redis alone is then the primary)";

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown target {s:?}; valid: {TARGET_SYNTAX}");
        let (name, index) = match s.split_once('[') {
            Some((name, rest)) => {
                let index = rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()).ok_or_else(bad)?;
                (name, Some(index))
            }
            None => (s, None),
        };
        match (name, index) {
            ("redis", None) => Ok(Target::Redis),
            ("redis", Some(i)) => Ok(Target::RedisNode(i)),
            ("sentinel", Some(i)) => Ok(Target::Sentinel(i)),
            ("replication", Some(i)) => Ok(Target::RedisLink(i)),
            ("broker" | "kafka", None) => Ok(Target::Broker),
            ("payment", None) => Ok(Target::Payment),
            ("gateway", i) => Ok(Target::Gateway(i.unwrap_or(0))),
            ("processor", i) => Ok(Target::Processor(i.unwrap_or(0))),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

/// Which directions of a proxied connection a network fault affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Directions {
    /// Client → component.
    Upstream,
    /// Component → client.
    Downstream,
    /// Both ways.
    #[default]
    Both,
}

impl Directions {
    pub fn each(self) -> &'static [Direction] {
        match self {
            Directions::Upstream => &[Direction::Upstream],
            Directions::Downstream => &[Direction::Downstream],
            Directions::Both => &[Direction::Upstream, Direction::Downstream],
        }
    }
}

impl FromStr for Directions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "up" | "upstream" => Ok(Directions::Upstream),
            "down" | "downstream" => Ok(Directions::Downstream),
            "both" => Ok(Directions::Both),
            _ => Err(format!("unknown direction {s:?}; valid: upstream, downstream, both")),
        }
    }
}

/// How a target is broken. See the module docs for the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kill,
    Terminate,
    Pause,
    Restart,
    /// A toxic on the target's proxy, on a share (`toxicity`, 0..=1) of its connections.
    Network {
        toxic: Toxic,
        directions: Directions,
        toxicity: f64,
    },
    /// The target's proxy refuses connections and closes the open ones.
    Down,
    /// Charges answer after `latency`; `None`: twice the processor's payment timeout.
    PaymentTimeout {
        #[serde(default, with = "option_duration_text")]
        latency: Option<Duration>,
    },
    /// This share of charges fails with 500 (nothing captured).
    PaymentFailures {
        rate: f64,
    },
    /// Every charge answers 503.
    PaymentOutage,
    /// Charges capture, then answer after `latency` (`None`: twice the processor's timeout).
    PaymentCaptureThenTimeout {
        #[serde(default, with = "option_duration_text")]
        latency: Option<Duration>,
    },
    /// `CLIENT PAUSE ALL` for the fault's duration.
    RedisStall,
    /// Redis is killed and its data deleted; when it heals it starts empty, or from `restore`
    /// (a file written by `flashsale backup`).
    RedisLoss {
        restore: Option<PathBuf>,
    },
    /// A CPU quota of `cores` (0.1: 10 ms of CPU every 100 ms) through cgroup v1.
    Cpu {
        cores: f64,
    },
    /// A limit of `bytes` on the component's memory cgroup (all it uses, as a container's
    /// limit); past it the kernel's OOM killer ends the process. With `restart`, the component
    /// is stopped and started again inside the limit (a pod whose limit was lowered), which also
    /// takes limits below what it used before.
    Memory {
        bytes: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// On the container runtime only: the component is cut off. `from: None`: off its run's
    /// network (`docker network disconnect`) — nothing reaches it and it reaches nothing, the lab
    /// through its published port included. `from: Some(peer)` (redis, broker or payment): from
    /// that one peer — the peer's fault proxy holds everything from the component's address on
    /// the network and everything back, on the open connections and new ones (delivered when it
    /// heals, as TCP retransmits after a partition), while its other links work. (On processes every connection comes from 127.0.0.1: nothing tells one
    /// component's apart.)
    Partition {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Target>,
    },
}

/// The largest CPU quota of a starvation fault, cores.
pub const MAX_CPU_CORES: f64 = 64.0;

impl Action {
    /// The action's name in the catalogue, events and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Terminate => "terminate",
            Action::Pause => "pause",
            Action::Restart => "restart",
            Action::Network { toxic, .. } => toxic.name(),
            Action::Down => "down",
            Action::PaymentTimeout { .. } => "payment_timeout",
            Action::PaymentFailures { .. } => "payment_failures",
            Action::PaymentOutage => "payment_outage",
            Action::PaymentCaptureThenTimeout { .. } => "payment_capture_then_timeout",
            Action::RedisStall => "redis_stall",
            Action::RedisLoss { .. } => "redis_loss",
            Action::Cpu { .. } => "cpu",
            Action::Memory { .. } => "memory",
            Action::Partition { .. } => "partition",
        }
    }

    /// Which targets the action applies to, for error messages.
    fn valid_targets(&self) -> &'static str {
        match self {
            Action::Kill
            | Action::Terminate
            | Action::Pause
            | Action::Restart
            | Action::Cpu { .. }
            | Action::Memory { .. } => TARGET_SYNTAX,
            Action::Partition { from: None } => TARGET_SYNTAX,
            Action::Partition { from: Some(_) } => {
                "a gateway, a processor or payment, from redis, broker or payment (a peer behind a fault proxy)"
            }
            Action::Network { .. } | Action::Down => "redis, broker, payment (the components behind a fault proxy)",
            Action::PaymentTimeout { .. }
            | Action::PaymentFailures { .. }
            | Action::PaymentOutage
            | Action::PaymentCaptureThenTimeout { .. } => "payment",
            Action::RedisStall | Action::RedisLoss { .. } => "redis",
        }
    }

    fn applies_to(&self, target: Target) -> bool {
        match self {
            Action::Kill | Action::Terminate | Action::Pause | Action::Restart => true,
            Action::Cpu { .. } | Action::Memory { .. } => true,
            Action::Partition { from: None } => true,
            Action::Partition { from: Some(peer) } => {
                peer.has_proxy()
                    && !matches!(peer, Target::RedisNode(_) | Target::RedisLink(_))
                    && matches!(target, Target::Gateway(_) | Target::Processor(_) | Target::Payment)
                    && target != *peer
            }
            Action::Network { .. } | Action::Down => target.has_proxy(),
            Action::PaymentTimeout { .. }
            | Action::PaymentFailures { .. }
            | Action::PaymentOutage
            | Action::PaymentCaptureThenTimeout { .. } => target == Target::Payment,
            Action::RedisStall | Action::RedisLoss { .. } => target == Target::Redis,
        }
    }

    /// What else cannot be in force on the same target at the same time: faults with the same
    /// key conflict (two latencies on one proxy, two payment behaviours, two process faults).
    pub fn conflict_key(&self) -> String {
        match self {
            Action::Kill | Action::Terminate | Action::Pause | Action::Restart | Action::RedisLoss { .. } => {
                "process".into()
            }
            Action::Network { toxic, .. } => format!("proxy:{}", toxic.name()),
            Action::Down => "proxy:down".into(),
            Action::PaymentTimeout { .. }
            | Action::PaymentFailures { .. }
            | Action::PaymentOutage
            | Action::PaymentCaptureThenTimeout { .. } => "payment".into(),
            Action::RedisStall => "redis_stall".into(),
            Action::Cpu { .. } => "cgroup:cpu".into(),
            Action::Memory { .. } => "cgroup:memory".into(),
            Action::Partition { .. } => "partition".into(),
        }
    }
}

/// One fault: an action on a target, healed after `duration` (or when healed by hand, or when
/// the lab stops; never later than [`MAX_FAULT_DURATION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub target: Target,
    pub action: Action,
    #[serde(default, with = "option_duration_text")]
    pub duration: Option<Duration>,
}

/// A fault that cannot be applied as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFault(pub String);

impl Fault {
    /// Checks what can be checked without a testbed: the target suits the action, rates are
    /// shares, durations are bounded and present where needed.
    pub fn validate(&self) -> Result<(), InvalidFault> {
        let name = self.action.name();
        if !self.action.applies_to(self.target) {
            return Err(InvalidFault(format!(
                "{name} cannot target {}; valid targets: {}",
                self.target,
                self.action.valid_targets()
            )));
        }
        if let Some(d) = self.duration {
            if d.is_zero() || d > MAX_FAULT_DURATION {
                return Err(InvalidFault(format!(
                    "{name}: duration {} must be above 0 and at most {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_FAULT_DURATION)
                )));
            }
        }
        let share = |what: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(InvalidFault(format!("{name}: {what} {v} must be between 0 and 1")))
            }
        };
        match &self.action {
            Action::Network { toxic, toxicity, .. } => {
                share("toxicity", *toxicity)?;
                match toxic {
                    Toxic::Bandwidth { bytes_per_s: 0 } => {
                        return Err(InvalidFault(format!("{name}: the rate must be above 0 (use blackhole)")))
                    }
                    Toxic::Slicer { bytes: 0, .. } => {
                        return Err(InvalidFault(format!("{name}: the piece size must be above 0 bytes")))
                    }
                    Toxic::Latency { latency, jitter } if *latency + *jitter > MAX_FAULT_DURATION => {
                        return Err(InvalidFault(format!("{name}: latency + jitter above 1 h")))
                    }
                    _ => {}
                }
            }
            Action::PaymentFailures { rate } => share("rate", *rate)?,
            Action::Cpu { cores } if !(*cores > 0.0 && *cores <= MAX_CPU_CORES) => {
                return Err(InvalidFault(format!("{name}: {cores} cores must be above 0 and at most {MAX_CPU_CORES}")))
            }
            Action::Memory { bytes, .. } if *bytes < 1024 * 1024 => {
                return Err(InvalidFault(format!("{name}: a limit of {bytes} bytes is below 1 MiB")))
            }
            Action::Restart if self.duration.is_some() => {
                return Err(InvalidFault(
                    "restart is instant and takes no duration; use terminate --for D to keep it down".into(),
                ))
            }
            Action::RedisStall if self.duration.is_none() => {
                return Err(InvalidFault("redis_stall needs a duration (--for D): Redis ends the pause itself".into()))
            }
            _ => {}
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.name(), self.target)?;
        match &self.action {
            Action::Network { toxic, directions, toxicity } => {
                match toxic {
                    Toxic::Latency { latency, jitter } if jitter.is_zero() => write!(f, " {}", text(*latency))?,
                    Toxic::Latency { latency, jitter } => write!(f, " {} ± {}", text(*latency), text(*jitter))?,
                    Toxic::Bandwidth { bytes_per_s } => write!(f, " {bytes_per_s} B/s")?,
                    Toxic::SlowClose { delay } => write!(f, " {}", text(*delay))?,
                    Toxic::Slicer { bytes, delay } => write!(f, " {bytes} B every {}", text(*delay))?,
                    Toxic::LimitData { bytes } => write!(f, " after {bytes} B")?,
                    Toxic::Blackhole | Toxic::ResetPeer => {}
                }
                if *directions != Directions::Both {
                    write!(f, " ({directions:?})")?;
                }
                if *toxicity < 1.0 {
                    write!(f, " on {:.0}% of connections", toxicity * 100.0)?;
                }
            }
            Action::PaymentTimeout { latency: Some(l) } | Action::PaymentCaptureThenTimeout { latency: Some(l) } => {
                write!(f, " {}", text(*l))?
            }
            Action::PaymentFailures { rate } => write!(f, " {:.0}%", rate * 100.0)?,
            Action::RedisLoss { restore: Some(path) } => write!(f, " (restore {})", path.display())?,
            Action::Cpu { cores } => write!(f, " {cores} cores")?,
            Action::Memory { bytes, restart } => {
                write!(f, " {:.1} MiB", *bytes as f64 / 1048576.0)?;
                if *restart {
                    write!(f, " (restarted into it)")?;
                }
            }
            _ => {}
        }
        if let Some(d) = self.duration {
            write!(f, " for {}", text(d))?;
        }
        Ok(())
    }
}

/// Durations as text (`"200ms"`, `"1m 30s"`) in JSON and TOML: `#[serde(with = "duration_text")]`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// [`duration_text`] for an optional duration.
pub mod option_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_text::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse_duration(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

fn text(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Parses a byte count such as `512`, `64K`, `32M`, `32MiB`, `1G` (binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: expected a byte count such as 512, 64K, 32MiB, 1G");
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit.strip_suffix("iB").or_else(|| unit.strip_suffix(['B', 'b'])).unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(multiplier).ok_or_else(bad)
}

/// Parses a duration such as `200ms`, `30s`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}; expected a duration such as 200ms, 30s, 2m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for (text, target) in [
            ("redis", Target::Redis),
            ("broker", Target::Broker),
            ("kafka", Target::Broker),
            ("payment", Target::Payment),
            ("gateway", Target::Gateway(0)),
            ("gateway[2]", Target::Gateway(2)),
            ("processor[1]", Target::Processor(1)),
            ("redis[0]", Target::RedisNode(0)),
            ("sentinel[2]", Target::Sentinel(2)),
            ("replication[1]", Target::RedisLink(1)),
        ] {
            assert_eq!(text.parse::<Target>(), Ok(target), "{text}");
            assert_eq!(target.to_string().parse::<Target>(), Ok(target));
        }
        for bad in ["", "postgres", "gateway[x]", "gateway[1", "sentinel", "replication", "broker[1]"] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.contains("valid: redis, broker, payment"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_partition_cuts_a_service_from_a_peer_behind_a_proxy_or_anything_off_the_network() {
        let partition = |target, from| Fault { target, action: Action::Partition { from }, duration: None };
        for ok in [
            partition(Target::Processor(0), Some(Target::Redis)),
            partition(Target::Gateway(1), Some(Target::Broker)),
            partition(Target::Processor(1), Some(Target::Payment)),
            partition(Target::Payment, Some(Target::Redis)),
            partition(Target::Redis, None),
            partition(Target::Processor(0), None),
        ] {
            assert_eq!(ok.validate(), Ok(()), "{ok:?}");
        }
        for bad in [
            // A peer without a proxy, the component itself, a peer cut from a peer.
            partition(Target::Processor(0), Some(Target::Gateway(0))),
            partition(Target::Redis, Some(Target::Redis)),
            partition(Target::Redis, Some(Target::Broker)),
            partition(Target::Processor(0), Some(Target::RedisNode(1))),
        ] {
            let err = bad.validate().unwrap_err().0;
            assert!(err.starts_with("partition cannot target"), "{bad:?}: {err}");
            assert!(err.contains("from redis, broker or payment"), "{err}");
        }
        // Its own kind of conflict: a partition and a pause of the same component may overlap.
        assert_eq!(Action::Partition { from: None }.conflict_key(), "partition");
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let fault = |target, action, duration| Fault { target, action, duration };
        let latency = Action::Network {
            toxic: Toxic::Latency { latency: Duration::from_millis(200), jitter: Duration::ZERO },
            directions: Directions::Both,
            toxicity: 1.0,
        };
        assert!(fault(Target::Redis, latency.clone(), None).validate().is_ok());
        let err = fault(Target::Gateway(0), latency.clone(), None).validate().unwrap_err().0;
        assert!(err.contains("latency cannot target gateway[0]") && err.contains("redis, broker, payment"), "{err}");
        let err = fault(Target::Broker, Action::PaymentOutage, None).validate().unwrap_err().0;
        assert!(err.contains("valid targets: payment"), "{err}");
        let err = fault(Target::Redis, Action::RedisStall, None).validate().unwrap_err().0;
        assert!(err.contains("needs a duration"), "{err}");
        let err = fault(Target::Redis, Action::Kill, Some(Duration::from_secs(7200))).validate().unwrap_err().0;
        assert!(err.contains("at most 1h"), "{err}");
        let err = fault(Target::Payment, Action::PaymentFailures { rate: 1.5 }, None).validate().unwrap_err().0;
        assert!(err.contains("rate 1.5 must be between 0 and 1"), "{err}");
        let err = fault(Target::Broker, Action::Restart, Some(Duration::from_secs(1))).validate().unwrap_err().0;
        assert!(err.contains("takes no duration"), "{err}");
        let err = fault(Target::Redis, Action::Cpu { cores: 0.0 }, None).validate().unwrap_err().0;
        assert!(err.contains("0 cores must be above 0"), "{err}");
        let err =
            fault(Target::Processor(0), Action::Memory { bytes: 1000, restart: false }, None).validate().unwrap_err().0;
        assert!(err.contains("below 1 MiB"), "{err}");
        assert!(fault(Target::Gateway(1), Action::Cpu { cores: 0.25 }, None).validate().is_ok());
    }

    #[test]
    fn byte_counts_with_binary_units() {
        for (text, n) in
            [("512", 512), ("64K", 65536), ("64KB", 65536), ("32MiB", 32 << 20), ("32M", 32 << 20), ("1G", 1 << 30)]
        {
            assert_eq!(parse_bytes(text), Ok(n), "{text}");
        }
        for bad in ["", "M", "12X", "1.5M", "-3"] {
            assert!(parse_bytes(bad).unwrap_err().contains("expected a byte count"), "{bad}");
        }
    }

    #[test]
    fn a_fault_travels_as_json() {
        let fault = Fault {
            target: Target::Processor(1),
            action: Action::Network {
                toxic: Toxic::Slicer { bytes: 10, delay: Duration::from_millis(5) },
                directions: Directions::Downstream,
                toxicity: 0.5,
            },
            duration: Some(Duration::from_secs(30)),
        };
        let json = serde_json::to_string(&fault).unwrap();
        assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), fault);
    }
}

//! `flashlab fault ...`: inject, list and heal faults by hand in a running `flashlab up`, through
//! its control socket ([`chaos::control`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use chaos::control::{self, Request, Response};
use chaos::faults::{parse_duration, Directions, Target};
use chaos::injector::{Check, FaultInfo};
use chaos::proxy::Toxic;
use chaos::{Action, Fault};
use clap::{Args, Subcommand};

/// `flashlab fault` and its options.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// The control socket of the `flashlab up` to talk to (it prints it).
    #[arg(long, env = "FLASHLAB_CONTROL", default_value_os_t = control::default_socket_path())]
    pub control: PathBuf,
    #[command(subcommand)]
    pub command: FaultCommand,
}

/// How long a fault lasts.
#[derive(Debug, Args)]
pub struct For {
    /// Heal after this long (e.g. 30s, 2m); without it the fault lasts until `flashlab fault
    /// heal`, the lab stops, or 1 h.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
}

/// Options of every network fault.
#[derive(Debug, Args)]
pub struct Network {
    /// upstream (client → component), downstream, or both.
    #[arg(long, default_value = "both", value_parser = str::parse::<Directions>)]
    pub direction: Directions,
    /// Share of connections affected, 0..=1.
    #[arg(long, default_value_t = 1.0)]
    pub toxicity: f64,
    #[command(flatten)]
    pub duration: For,
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// SIGKILL a component; with --for it is started again (same ports and data) after that long.
    Kill {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[command(flatten)]
        duration: For,
    },
    /// SIGTERM a component (it shuts down gracefully); with --for it is started again.
    Terminate {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[command(flatten)]
        duration: For,
    },
    /// SIGSTOP a component (a frozen VM, a GC stall); SIGCONT when it heals.
    Pause {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[command(flatten)]
        duration: For,
    },
    /// Containers only (`flashlab up --runtime containers`): cut a component off the run's
    /// network, or with --from off one peer (redis, broker, payment: that peer's proxy drops
    /// everything from the component's address and back).
    Partition {
        #[arg(value_parser = parse_target)]
        target: Target,
        /// The one peer to cut it from.
        #[arg(long, value_parser = parse_target)]
        from: Option<Target>,
        #[command(flatten)]
        duration: For,
    },
    /// Stop a component gracefully and start it again at once, same ports and data.
    Restart {
        #[arg(value_parser = parse_target)]
        target: Target,
    },
    /// Delay data through the component's proxy (each direction: LATENCY + 0..=jitter).
    Latency {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(value_parser = parse_duration)]
        latency: Duration,
        /// Uniform extra delay on top, 0..=JITTER.
        #[arg(long, value_parser = parse_duration, default_value = "0ms")]
        jitter: Duration,
        #[command(flatten)]
        network: Network,
    },
    /// Limit the bytes per second through the component's proxy, e.g. 64K, 1M.
    Bandwidth {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(value_parser = parse_bytes)]
        rate: u64,
        #[command(flatten)]
        network: Network,
    },
    /// Hold connections open and drop their data.
    Blackhole {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[command(flatten)]
        network: Network,
    },
    /// Abort connections with a TCP reset.
    Reset {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[command(flatten)]
        network: Network,
    },
    /// Delay each close by DELAY.
    SlowClose {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(value_parser = parse_duration)]
        delay: Duration,
        #[command(flatten)]
        network: Network,
    },
    /// Cut data into pieces of at most BYTES, DELAY apart.
    Slicer {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(value_parser = parse_bytes)]
        bytes: u64,
        #[arg(value_parser = parse_duration)]
        delay: Duration,
        #[command(flatten)]
        network: Network,
    },
    /// Close each connection after BYTES in a direction.
    LimitData {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(value_parser = parse_bytes)]
        bytes: u64,
        #[command(flatten)]
        network: Network,
    },
    /// The component's proxy refuses connections and closes the open ones.
    Down {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[command(flatten)]
        duration: For,
    },
    /// Payment provider faults (through its control endpoint).
    Payment {
        #[command(subcommand)]
        fault: PaymentFault,
    },
    /// Starve a component of CPU: a quota of CORES (0.1: 10 ms of CPU every 100 ms) through
    /// cgroup v1; it must throttle the process before it heals.
    Cpu {
        #[arg(value_parser = parse_target)]
        target: Target,
        cores: f64,
        #[command(flatten)]
        duration: For,
    },
    /// Limit a component's memory to LIMIT (e.g. 32MiB) through its cgroup v1: past it the OOM
    /// killer ends it (started again when the fault heals).
    Memory {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(value_parser = parse_bytes)]
        limit: u64,
        /// Stop the component and start it again inside the limit (also below what it uses now).
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        duration: For,
    },
    /// Redis server-side faults.
    Redis {
        #[command(subcommand)]
        fault: RedisFault,
    },
    /// The faults in force.
    List,
    /// Heal fault ID now, or every fault with --all.
    Heal {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        #[arg(long)]
        all: bool,
    },
    /// The components of the running lab.
    Targets,
}

#[derive(Debug, Subcommand)]
pub enum PaymentFault {
    /// Charges answer later than the processor waits (default: twice its PAYMENT_TIMEOUT).
    Timeout {
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        #[command(flatten)]
        duration: For,
    },
    /// A share of charges fails with 500, e.g. 0.5.
    Failures {
        rate: f64,
        #[command(flatten)]
        duration: For,
    },
    /// Every charge answers 503.
    Outage {
        #[command(flatten)]
        duration: For,
    },
    /// Charges are captured but the answer comes too late (default: twice PAYMENT_TIMEOUT).
    CaptureThenTimeout {
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        #[command(flatten)]
        duration: For,
    },
}

#[derive(Debug, Subcommand)]
pub enum RedisFault {
    /// CLIENT PAUSE ALL: Redis answers nobody for the duration (Redis itself ends it).
    Stall {
        #[command(flatten)]
        duration: For,
    },
    /// Kill Redis and delete its data; it comes back empty (after --for), or restored from a
    /// `flashsale backup` file.
    Loss {
        #[arg(long)]
        restore: Option<PathBuf>,
        #[command(flatten)]
        duration: For,
    },
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

/// `1024`, `64K`, `1M` (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    chaos::faults::parse_bytes(s)
}

fn network(target: Target, toxic: Toxic, net: Network) -> Fault {
    Fault {
        target,
        action: Action::Network { toxic, directions: net.direction, toxicity: net.toxicity },
        duration: net.duration.duration,
    }
}

/// The request a command makes.
fn request(command: FaultCommand) -> Request {
    let fault = |target, action, duration: For| Request::Inject(Fault { target, action, duration: duration.duration });
    match command {
        FaultCommand::Kill { target, duration } => fault(target, Action::Kill, duration),
        FaultCommand::Terminate { target, duration } => fault(target, Action::Terminate, duration),
        FaultCommand::Pause { target, duration } => fault(target, Action::Pause, duration),
        FaultCommand::Partition { target, from, duration } => fault(target, Action::Partition { from }, duration),
        FaultCommand::Restart { target } => fault(target, Action::Restart, For { duration: None }),
        FaultCommand::Latency { target, latency, jitter, network: net } => {
            Request::Inject(network(target, Toxic::Latency { latency, jitter }, net))
        }
        FaultCommand::Bandwidth { target, rate, network: net } => {
            Request::Inject(network(target, Toxic::Bandwidth { bytes_per_s: rate }, net))
        }
        FaultCommand::Blackhole { target, network: net } => Request::Inject(network(target, Toxic::Blackhole, net)),
        FaultCommand::Reset { target, network: net } => Request::Inject(network(target, Toxic::ResetPeer, net)),
        FaultCommand::SlowClose { target, delay, network: net } => {
            Request::Inject(network(target, Toxic::SlowClose { delay }, net))
        }
        FaultCommand::Slicer { target, bytes, delay, network: net } => {
            Request::Inject(network(target, Toxic::Slicer { bytes: bytes as usize, delay }, net))
        }
        FaultCommand::LimitData { target, bytes, network: net } => {
            Request::Inject(network(target, Toxic::LimitData { bytes }, net))
        }
        FaultCommand::Down { target, duration } => fault(target, Action::Down, duration),
        FaultCommand::Payment { fault: payment } => {
            let (action, duration) = match payment {
                PaymentFault::Timeout { latency, duration } => (Action::PaymentTimeout { latency }, duration),
                PaymentFault::Failures { rate, duration } => (Action::PaymentFailures { rate }, duration),
                PaymentFault::Outage { duration } => (Action::PaymentOutage, duration),
                PaymentFault::CaptureThenTimeout { latency, duration } => {
                    (Action::PaymentCaptureThenTimeout { latency }, duration)
                }
            };
            fault(Target::Payment, action, duration)
        }
        FaultCommand::Redis { fault: redis } => match redis {
            RedisFault::Stall { duration } => fault(Target::Redis, Action::RedisStall, duration),
            RedisFault::Loss { restore, duration } => {
                let restore = restore.map(|p| std::path::absolute(&p).unwrap_or(p));
                fault(Target::Redis, Action::RedisLoss { restore }, duration)
            }
        },
        FaultCommand::Cpu { target, cores, duration } => fault(target, Action::Cpu { cores }, duration),
        FaultCommand::Memory { target, limit, restart, duration } => {
            fault(target, Action::Memory { bytes: limit, restart }, duration)
        }
        FaultCommand::List => Request::List,
        FaultCommand::Heal { id: Some(id), all: false } => Request::Heal(id),
        FaultCommand::Heal { .. } => Request::HealAll,
        FaultCommand::Targets => Request::Targets,
    }
}

fn show_check(check: &Check) -> String {
    format!("{}: {}", if check.ok { "verified" } else { "NOT VERIFIED" }, check.observed)
}

fn show_fault(info: &FaultInfo) -> String {
    let left_s = info.heals_at_ms.saturating_sub(chaos::events::unix_ms()).div_ceil(1000);
    format!("#{:<3} {}  (heals in {left_s} s)", info.id, info.description)
}

/// Runs `flashlab fault ...`. Ok(true) when everything asked was done and verified.
pub async fn fault(args: FaultArgs) -> anyhow::Result<bool> {
    let request = request(args.command);
    if let Request::Inject(fault) = &request {
        // Checked here too, so that a bad fault is refused before any lab is contacted.
        fault.validate()?;
    }
    let response = control::call(&args.control, &request).await?;
    match response {
        Response::Error(e) => bail!("{e}"),
        Response::Injected(info) => {
            println!("fault #{} {} — {}", info.id, info.description, show_check(&info.check));
            Ok(info.check.ok)
        }
        Response::Faults(faults) => {
            if faults.is_empty() {
                println!("no fault in force");
            }
            for info in &faults {
                println!("{}", show_fault(info));
            }
            Ok(true)
        }
        Response::Healed(reports) => {
            if reports.is_empty() {
                println!("no fault was in force");
            }
            for report in &reports {
                println!("healed #{} {} — {}", report.id, report.description, show_check(&report.check));
            }
            Ok(reports.iter().all(|r| r.check.ok))
        }
        Response::Targets(targets) => {
            println!("{}", targets.iter().map(Target::to_string).collect::<Vec<_>>().join(" "));
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: FaultCommand,
    }

    fn parsed(args: &[&str]) -> Request {
        let cli = Cli::try_parse_from(std::iter::once("fault").chain(args.iter().copied())).unwrap();
        request(cli.command)
    }

    #[test]
    fn resource_faults_from_the_command_line() {
        let Request::Inject(fault) = parsed(&["memory", "processor", "3MiB", "--restart", "--for", "6s"]) else {
            panic!("not an injection")
        };
        assert_eq!(fault.target, Target::Processor(0));
        assert_eq!(fault.action, Action::Memory { bytes: 3 << 20, restart: true });
        assert_eq!(fault.duration, Some(Duration::from_secs(6)));
        let Request::Inject(fault) = parsed(&["memory", "redis", "32MiB"]) else { panic!("not an injection") };
        assert_eq!(fault.action, Action::Memory { bytes: 32 << 20, restart: false });
        let Request::Inject(fault) = parsed(&["cpu", "redis", "0.01"]) else { panic!("not an injection") };
        assert_eq!(fault.action, Action::Cpu { cores: 0.01 });
    }

    #[test]
    fn a_partition_from_the_command_line() {
        let Request::Inject(fault) = parsed(&["partition", "processor[1]", "--from", "redis", "--for", "20s"]) else {
            panic!("not an injection")
        };
        assert_eq!(fault.target, Target::Processor(1));
        assert_eq!(fault.action, Action::Partition { from: Some(Target::Redis) });
        assert_eq!(fault.duration, Some(Duration::from_secs(20)));
        let Request::Inject(fault) = parsed(&["partition", "broker"]) else { panic!("not an injection") };
        assert_eq!(fault.action, Action::Partition { from: None });
    }
}

//! `flashlab`: the lab's command line. Thin: each command is a library function.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scenarios::fault_cli::{fault, FaultArgs};
use scenarios::load_cli::{load, LoadArgs};
use scenarios::up::{parse_stock, up, UpOptions};

#[derive(Parser)]
#[command(name = "flashlab", version, about = "Chaos and load lab for the flash-sale system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole flash-sale system (Redis, broker, payment, processors, gateway) on loopback; stop it on Ctrl-C.
    Up {
        /// Gateway port (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Keep data and logs here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Initial stock, ITEM=QTY; repeat for several items.
        #[arg(long, value_parser = parse_stock)]
        stock: Vec<(String, u64)>,
        /// How many processors.
        #[arg(long, default_value_t = 1)]
        processors: usize,
        /// The control socket `flashlab fault` talks to.
        #[arg(long, env = "FLASHLAB_CONTROL", default_value_os_t = chaos::control::default_socket_path())]
        control: PathBuf,
        /// Seeds the fault proxies' randomness (jitter, toxicity).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Connect the services straight to Redis, the broker and payment, without fault proxies
        /// (to measure the system alone; network faults are then unavailable).
        #[arg(long)]
        no_proxies: bool,
        /// Do not run Prometheus, Alertmanager and the exporters beside the system.
        #[arg(long)]
        no_monitoring: bool,
        /// Alert rule files for Prometheus instead of the shipped ones (repeat for several).
        #[arg(long = "rules", value_name = "FILE")]
        rules: Vec<PathBuf>,
        /// An Alertmanager config instead of the shipped one (its webhook urls are pointed at the lab).
        #[arg(long, value_name = "FILE")]
        alertmanager_config: Option<PathBuf>,
        /// Run the supervisor (Kubernetes-style auto-recovery: restart on exit with back-off,
        /// liveness and readiness probes at the monitoring article's settings, all multiplied
        /// by F, e.g. 0.1 for 1 s liveness periods); a `kill` without `--for` is then healed by
        /// it, not by the lab.
        #[arg(long, value_name = "F", num_args = 0..=1, default_missing_value = "1")]
        supervise: Option<f64>,
        /// Where the components run: `processes` on loopback, or `containers` on a Docker
        /// network of the run's own (docs/runtimes.md).
        #[arg(long, value_enum, default_value_t = Runtime::Processes)]
        runtime: Runtime,
        /// On containers: run COMPONENT (flashsale, redis, broker) from IMAGE instead of the
        /// image flashlab builds, pulled if the engine lacks it (repeat for several;
        /// docs/runtimes.md says which images each component accepts).
        #[arg(long = "image", value_name = "COMPONENT=IMAGE", value_parser = chaos::containers::upstream::parse_choice)]
        images: Vec<(chaos::containers::images::Component, String)>,
    },
    /// Inject, list and heal faults in a running `flashlab up` (from a second shell).
    Fault(FaultArgs),
    /// Flash-sale traffic against a gateway on an open arrival schedule; records every request.
    Load(Box<LoadArgs>),
    /// Run a drill (a shipped one by name, or a scenario file) and print its verdict.
    /// Exit code: 0 pass, 1 an SLO or invariant failed, 2 the drill could not run.
    Drill {
        /// A shipped drill (`flashlab drills` lists them) or a path to a TOML scenario.
        scenario: String,
        /// The run directory (default runs/<name>-<utc time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Shrinks durations and rates by this factor (0 < F ≤ 1), e.g. 0.2 for CI.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// No live view.
        #[arg(long)]
        quiet: bool,
        /// Where the components run (default: the scenario's `[topology] runtime`, else
        /// processes): `processes` on loopback, or `containers` on a Docker network of the run's
        /// own (docs/runtimes.md).
        #[arg(long, value_enum)]
        runtime: Option<Runtime>,
        /// On containers: run COMPONENT (flashsale, redis, broker) from IMAGE instead of the
        /// image flashlab builds, pulled if the engine lacks it (repeat for several).
        #[arg(long = "image", value_name = "COMPONENT=IMAGE", value_parser = chaos::containers::upstream::parse_choice)]
        images: Vec<(chaos::containers::images::Component, String)>,
    },
    /// Capacity planning: the highest rate each topology sustains within the SLOs, the knee,
    /// the component that saturates first, the USL fit over a sweep and, with --peak, the
    /// headroom answer. Exit code: 0 the peak with headroom is met (or, without --peak, a rate
    /// was sustained), 1 it is not, 2 the search could not answer.
    Capacity(Box<CapacityArgs>),
    /// The regression gate: a suite of drills run on a base and a head (two builds, two
    /// configurations, or a stored baseline and a build), every figure compared as a
    /// distribution over the runs; invariants never statistical. Writes gate.json, gate.md,
    /// gate.html, junit.xml. Exit code: 0 nothing regressed, 1 a figure regressed or an
    /// invariant broke, 2 undecided (a figure could not be decided, or a run could not run).
    Gate(Box<GateArgs>),
    /// Stored baselines for `flashlab gate --baseline`.
    Baseline {
        #[command(subcommand)]
        command: BaselineCommand,
    },
    /// List the shipped drills.
    Drills,
    /// Compare a run with a baseline run: SLI deltas, checks newly failing; exit 1 on a
    /// regression past the limit.
    Compare {
        baseline: PathBuf,
        run: PathBuf,
        /// Allowed relative regression of a figure, e.g. 10%.
        #[arg(long, default_value = "10%", value_parser = parse_percent)]
        max_regression: f64,
    },
    /// Render (or re-render) a run directory's report.html, summary.md, junit.xml and plots/
    /// (a capacity search's directory: its report.html, summary.md and plots/).
    Report {
        /// The run directory.
        dir: PathBuf,
    },
    /// The container runtime's images (docs/runtimes.md).
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Run the TCP fault proxy, without faults, from LISTEN to UPSTREAM until Ctrl-C (to
    /// measure its overhead, or to put a component behind it by hand).
    Proxy {
        #[arg(long, value_parser = parse_loopback)]
        listen: std::net::SocketAddr,
        #[arg(long, value_parser = parse_loopback)]
        upstream: std::net::SocketAddr,
    },
}

#[derive(clap::Args)]
struct GateArgs {
    /// The suite file: drills, scale, runs a side (docs/gate.md).
    #[arg(long, value_name = "FILE")]
    suite: PathBuf,
    /// The gate's directory (default runs/gate-<utc time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The base's flashsale binary (default: the lab's own).
    #[arg(long, value_name = "PATH")]
    base_bin: Option<PathBuf>,
    /// The head's flashsale binary (default: the lab's own).
    #[arg(long, value_name = "PATH")]
    head_bin: Option<PathBuf>,
    /// KEY=VALUE lines for the base's services.
    #[arg(long, value_name = "FILE")]
    base_env: Option<PathBuf>,
    /// KEY=VALUE lines for the head's services.
    #[arg(long, value_name = "FILE")]
    head_env: Option<PathBuf>,
    /// Compare the head with a stored baseline (`flashlab baseline update`) instead of running a base.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["base_bin", "base_env"])]
    baseline: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Runtime {
    Processes,
    Containers,
}

impl Runtime {
    fn kind(self) -> chaos::testbed::RuntimeKind {
        match self {
            Runtime::Processes => chaos::testbed::RuntimeKind::Processes,
            Runtime::Containers => chaos::testbed::RuntimeKind::Containers,
        }
    }
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build flashlab/flashsale, flashlab/redis and flashlab/broker from this machine's programs
    /// (no registry, no download); nothing is rebuilt when nothing changed.
    Build,
}

#[derive(Subcommand)]
enum BaselineCommand {
    /// Run a suite on one build and store its runs as the baseline in --out.
    Update {
        #[arg(long, value_name = "FILE")]
        suite: PathBuf,
        /// Where the baseline goes (a new or empty directory).
        #[arg(long)]
        out: PathBuf,
        /// The flashsale binary (default: the lab's own).
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
        /// KEY=VALUE lines for its services.
        #[arg(long, value_name = "FILE")]
        env: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct CapacityArgs {
    /// A capacity file: [slo], [topology], [env], [search], [load] (docs/capacity.md).
    #[arg(long, value_name = "FILE")]
    slo: Option<PathBuf>,
    /// Availability target, e.g. 0.999 (default 0.999).
    #[arg(long)]
    availability: Option<f64>,
    /// Corrected p99 limit of POST /buy, ms (default 1000).
    #[arg(long)]
    p99_ms: Option<f64>,
    /// Accepted → decided p99 limit, ms (default 5000).
    #[arg(long)]
    ttd_p99_ms: Option<f64>,
    /// The topology: gateways=N,processors=N,partitions=N (default 1, 1, 6).
    #[arg(long)]
    topology: Option<String>,
    /// Repeat the search per value and fit the USL: processors=1,2,4 or gateways=1,2.
    #[arg(long)]
    sweep: Option<String>,
    /// Expected peak, orders/s.
    #[arg(long)]
    peak: Option<f64>,
    /// Headroom above the peak.
    #[arg(long, default_value = "30%", value_parser = parse_percent)]
    headroom: f64,
    /// The search's directory (default runs/capacity-<utc time>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First trial's rate, orders/s (default 100).
    #[arg(long)]
    start_rate: Option<f64>,
    /// Highest rate tried, orders/s (default 8000).
    #[arg(long)]
    max_rate: Option<f64>,
    /// Bisection resolution (default 5%).
    #[arg(long, value_parser = parse_percent)]
    resolution: Option<f64>,
    /// Seconds of load per searching trial (default 15).
    #[arg(long)]
    trial_s: Option<f64>,
    /// Seconds of load of the confirmation trial (default 45).
    #[arg(long)]
    confirm_s: Option<f64>,
    /// Extra trials at the answer when trials disagreed (default 2).
    #[arg(long)]
    repeats: Option<u32>,
    /// Time budget of each topology's search, seconds (default 1200).
    #[arg(long)]
    budget_s: Option<f64>,
    /// KEY=VALUE for the services (repeat), e.g. PAYMENT_LATENCY=20ms.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Search a deployment the lab did not start, at its gateway (or front) URL: load only, no
    /// testbed (loopback only unless --allow-remote).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// With --target: allow a target and metrics pages that are not on loopback.
    #[arg(long)]
    allow_remote: bool,
    /// With --target: a /metrics page of the deployment, [NAME=]URL (repeat); the processors'
    /// pages give time to decision and lag, without them no trial can judge.
    #[arg(long = "metrics", value_name = "[NAME=]URL")]
    metrics: Vec<String>,
    /// With --target: the item the trials buy; it needs stock for every arrival (default 101).
    #[arg(long)]
    item: Option<String>,
    /// Where the lab's own system runs for each trial: `processes` on loopback, or `containers`
    /// on a Docker network of the trial's own (docs/runtimes.md).
    #[arg(long, value_enum, default_value_t = Runtime::Processes)]
    runtime: Runtime,
    /// On containers: run COMPONENT (flashsale, redis, broker) from IMAGE in every trial,
    /// pulled if the engine lacks it (repeat for several; docs/runtimes.md).
    #[arg(long = "image", value_name = "COMPONENT=IMAGE", value_parser = chaos::containers::upstream::parse_choice)]
    images: Vec<(chaos::containers::images::Component, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{k:?}: an environment variable name (A-Z, 0-9, _)"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `10%` or `0.1`.
fn parse_percent(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("{s:?}: expected a share such as 10% or 0.1"))?;
    if !(0.0..=10.0).contains(&v) {
        return Err(format!("{s:?}: between 0% and 1000%"));
    }
    Ok(v)
}

fn parse_loopback(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s.parse().map_err(|_| format!("{s:?}: expected IP:PORT, e.g. 127.0.0.1:6380"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!("{s:?}: the lab proxies loopback addresses only"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FLASHLAB_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flashlab: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        match cli.command {
            Command::Up {
                port,
                dir,
                stock,
                processors,
                control,
                seed,
                no_proxies,
                no_monitoring,
                rules,
                alertmanager_config,
                supervise,
                runtime,
                images,
            } => {
                let monitoring = (!no_monitoring).then_some(chaos::monitoring::MonitoringConfig {
                    rules,
                    alertmanager_config,
                    time_factor: 1.0,
                });
                let options = UpOptions {
                    gateway_port: port,
                    dir,
                    stock,
                    processors,
                    control,
                    seed,
                    proxies: !no_proxies,
                    monitoring,
                    supervisor: match supervise {
                        None => None,
                        Some(f) if f > 0.0 && f <= 1.0 => {
                            Some(chaos::supervisor::SupervisorConfig::default().scaled(f))
                        }
                        Some(f) => anyhow::bail!("--supervise {f}: a factor above 0 and at most 1"),
                    },
                    runtime: runtime.kind(),
                    images,
                };
                up(options, stop_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            // 1: done, but the check did not confirm the fault (or the heal) took effect.
            Command::Fault(args) => Ok(if fault(args).await? { ExitCode::SUCCESS } else { ExitCode::from(1) }),
            Command::Drill { scenario, out, seed, scale, quiet, runtime, images } => {
                let options = scenarios::drill::DrillOptions {
                    out,
                    seed,
                    quiet,
                    runtime: runtime.map(Runtime::kind),
                    images,
                    ..scenarios::drill::DrillOptions::new(scenario, scale)
                };
                match scenarios::drill::drill(options, stop_signal()).await {
                    Ok(run) => {
                        print!("{}", scenarios::drill::table(&run));
                        // The report is a view of the run: failing to draw it does not change the verdict.
                        match reports::render(&run.dir) {
                            Ok(r) => println!("report: {}", r.html.display()),
                            Err(e) => eprintln!("flashlab: the report could not be rendered: {e}"),
                        }
                        Ok(if run.verdict.pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Command::Compare { baseline, run, max_regression } => {
                let comparison = reports::compare_runs(&baseline, &run, max_regression)?;
                print!("{}", reports::compare::table(&comparison));
                println!("{}", run.join("compare.html").display());
                Ok(if comparison.regressed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
            }
            Command::Report { dir } if dir.join(rundir::files::CAPACITY).is_file() => {
                let rendered = reports::capacity::render(&dir)?;
                println!("{}", rendered.html.display());
                println!("{}", rendered.markdown.display());
                println!("{} plots in {}", rendered.plots.len(), dir.join("plots").display());
                Ok(ExitCode::SUCCESS)
            }
            Command::Report { dir } => {
                let rendered = reports::render(&dir)?;
                println!("{}", rendered.html.display());
                println!("{}", rendered.markdown.display());
                println!("{}", rendered.junit.display());
                println!("{} plots in {}", rendered.plots.len(), dir.join("plots").display());
                Ok(ExitCode::SUCCESS)
            }
            Command::Capacity(a) => {
                let a = *a;
                let options = scenarios::capacity::CapacityOptions {
                    file: a.slo,
                    availability: a.availability,
                    p99_ms: a.p99_ms,
                    time_to_decision_p99_ms: a.ttd_p99_ms,
                    topology: a.topology,
                    sweep: a.sweep,
                    peak: a.peak,
                    headroom: a.headroom,
                    out: a.out,
                    seed: a.seed,
                    start_rate: a.start_rate,
                    max_rate: a.max_rate,
                    resolution: a.resolution,
                    trial_s: a.trial_s,
                    confirm_s: a.confirm_s,
                    repeats: a.repeats,
                    budget_s: a.budget_s,
                    env: a.env,
                    quiet: a.quiet,
                    target: a.target,
                    allow_remote: a.allow_remote,
                    metrics: a.metrics,
                    item: a.item,
                    runtime: a.runtime.kind(),
                    images: a.images,
                };
                let found = scenarios::capacity::capacity(options, stop_signal()).await?;
                println!("{}", found.run.answer.sentence);
                match reports::capacity::render(&found.dir) {
                    Ok(r) => {
                        println!("report: {}", r.html.display());
                        println!("summary: {}", r.markdown.display());
                    }
                    Err(e) => eprintln!("flashlab: the capacity report could not be rendered: {e}"),
                }
                Ok(ExitCode::from(scenarios::capacity::answer::exit_code(&found.run)))
            }
            Command::Gate(a) => {
                let a = *a;
                let options = scenarios::gate::run::GateOptions {
                    suite: a.suite,
                    out: a.out,
                    base: scenarios::gate::run::SideOptions { bin: a.base_bin, env_file: a.base_env },
                    head: scenarios::gate::run::SideOptions { bin: a.head_bin, env_file: a.head_env },
                    baseline: a.baseline,
                    update_baseline: false,
                    quiet: a.quiet,
                };
                let gated = scenarios::gate::run::gate(options, stop_signal()).await?;
                let rendered = reports::gate::render(&gated.dir)?;
                print!("{}", std::fs::read_to_string(&rendered.markdown).unwrap_or_default());
                println!("report: {}", rendered.html.display());
                Ok(ExitCode::from(match rendered.outcome {
                    rundir::gate::GateOutcome::Pass => 0,
                    rundir::gate::GateOutcome::Fail => 1,
                    rundir::gate::GateOutcome::Undecided => 2,
                }))
            }
            Command::Baseline { command: BaselineCommand::Update { suite, out, bin, env, quiet } } => {
                let options = scenarios::gate::run::GateOptions {
                    suite,
                    out: Some(out),
                    base: scenarios::gate::run::SideOptions { bin, env_file: env },
                    head: scenarios::gate::run::SideOptions::default(),
                    baseline: None,
                    update_baseline: true,
                    quiet,
                };
                let gated = scenarios::gate::run::gate(options, stop_signal()).await?;
                let runs: usize = gated.run.drills.iter().map(|d| d.runs.len()).sum();
                let failed: usize =
                    gated.run.drills.iter().flat_map(|d| &d.runs).filter(|r| r.outcome.is_none()).count();
                println!("baseline: {runs} runs in {} ({failed} could not run)", gated.dir.display());
                Ok(if failed == 0 && !gated.run.interrupted { ExitCode::SUCCESS } else { ExitCode::from(2) })
            }
            Command::Drills => {
                for (name, description) in scenarios::scenario::shipped() {
                    println!("{name:<24} {description}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Load(args) => {
                load(*args, stop_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Images { command: ImagesCommand::Build } => {
                let sources = chaos::containers::images::Sources::from_machine()?;
                let built = tokio::task::spawn_blocking(move || chaos::containers::images::build(&sources)).await??;
                for b in built {
                    println!(
                        "{:<10} {:<40} {:<9} {:>6.1} MB {:>5.1} s",
                        b.component.name(),
                        b.image,
                        if b.fresh { "built" } else { "unchanged" },
                        b.bytes as f64 / 1e6,
                        b.took.as_secs_f64()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Proxy { listen, upstream } => {
                let proxy = chaos::proxy::FaultProxy::start(listen, upstream, 1).await?;
                println!("proxy {} -> {upstream}", proxy.addr());
                stop_signal().await;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flashlab: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

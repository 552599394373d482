//! How to run each component on loopback: the real dependencies (`redis-server`, the `tansu`
//! Kafka broker) and the flash-sale system's own services (the `flashsale` binary).
//!
//! Each function returns a [`ProcessSpec`]; the [`crate::testbed`] picks ports and directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::probe::Probe;
use crate::process::ProcessSpec;

/// `redis-server`'s arguments: on `addr`, data (AOF, `appendfsync everysec`, no snapshots) in
/// `dir`, in the foreground — for a process and for a container alike.
pub fn redis_args(addr: SocketAddr, dir: &str) -> Vec<String> {
    [
        "--port",
        &addr.port().to_string(),
        "--bind",
        &addr.ip().to_string(),
        "--dir",
        dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
    ]
    .map(String::from)
    .to_vec()
}

/// `redis-server` on `addr`, data (AOF, `appendfsync everysec`) in `dir`.
pub fn redis(addr: SocketAddr, dir: &Path) -> ProcessSpec {
    let args = redis_args(addr, &dir.display().to_string());
    ProcessSpec {
        name: "redis".into(),
        program: "redis-server".into(),
        args,
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        log_path: dir.join("redis.log"),
        probe: Probe::RedisPing(addr),
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(10),
    }
}

/// A `redis-server` of a replicated set: `redis_node(i)` on `addr`, data in `dir`, announcing
/// `announce` (the address its clients and the sentinels use: its fault proxy's) and, for a
/// replica, replicating from `primary` (the primary's announced address: replication goes
/// through the proxies too), its replication connection opened from `source` when given (on
/// loopback, an address of its own; in a container its address on the run's network is its
/// own already).
pub fn redis_node(
    index: usize,
    addr: SocketAddr,
    announce: SocketAddr,
    primary: Option<SocketAddr>,
    source: Option<std::net::IpAddr>,
    dir: &Path,
) -> ProcessSpec {
    let mut spec = redis(addr, dir);
    spec.name = format!("redis[{index}]");
    if primary.is_some() {
        // Ready once it holds the primary's data.
        spec.probe = Probe::RedisReplicaSynced(addr);
    }
    spec.log_path = dir.join(format!("redis-{index}.log"));
    spec.args.extend(
        [
            // A full sync at once (Redis 7 waits 5 s for more replicas to share one by default).
            "--repl-diskless-sync-delay".to_string(),
            "0".into(),
            "--replica-announce-ip".into(),
            announce.ip().to_string(),
            "--replica-announce-port".into(),
            announce.port().to_string(),
        ]
        .into_iter()
        .chain(primary.into_iter().flat_map(|p| ["--replicaof".to_string(), p.ip().to_string(), p.port().to_string()]))
        // Its replication connection from an address of its own: a fault can single it out.
        .chain(source.into_iter().flat_map(|ip| ["--bind-source-addr".to_string(), ip.to_string()])),
    );
    spec
}

/// How Redis Sentinel watches the primary.
#[derive(Debug, Clone)]
pub struct SentinelSettings {
    /// The name clients ask for (`REDIS_MASTER_NAME`).
    pub master: String,
    /// Sentinels that must agree the primary is down.
    pub quorum: usize,
    /// `down-after-milliseconds`: no answer this long and a sentinel thinks the primary down.
    pub down_after: Duration,
    /// `failover-timeout`.
    pub failover_timeout: Duration,
}

/// The shortest `down-after-milliseconds` a sentinel gets here. After a failover each sentinel
/// resets its view of the new primary: its ping clock starts again and its connections are
/// closed, to be opened again at most once per second (Sentinel's ping period), counted from its
/// last attempt to reach the dead primary; its timer runs 10 to 19 times a second. So the first
/// answer from a healthy new primary can come ~1.1 s after the switch. With a down-after of
/// 1 s, a sentinel then judges the new primary down, counts the other sentinels' "down"
/// answers about the old one (kept up to 5 s across the switch) as agreement, and fails over
/// again at once (a reset allows that): seen in a clean-clone CI run, where the second failover
/// promoted the old primary that had just been started again. 2 s leaves ~0.9 s above that.
pub const SENTINEL_MIN_DOWN_AFTER: Duration = Duration::from_secs(2);

/// `redis-server --sentinel` number `index` on `addr`, watching `primary` (an address the
/// primary announces), its config file (which Sentinel rewrites) in `dir`; the file is written
/// into `host_dir`, which is `dir` for a process and the directory mounted at `dir` for a
/// container.
pub fn sentinel(
    index: usize,
    addr: SocketAddr,
    primary: SocketAddr,
    settings: &SentinelSettings,
    host_dir: &Path,
    dir: &Path,
) -> std::io::Result<ProcessSpec> {
    if settings.down_after < SENTINEL_MIN_DOWN_AFTER {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "Sentinel's down-after of {:?} is below {:?}: a sentinel could judge the new primary down \
                 right after a failover and fail over again",
                settings.down_after, SENTINEL_MIN_DOWN_AFTER
            ),
        ));
    }
    let file = format!("sentinel-{index}.conf");
    let on_host = host_dir.join(&file);
    let conf = dir.join(&file);
    let name = &settings.master;
    // Rewritten by Sentinel as it learns replicas and failovers: written once, kept across
    // restarts.
    if !on_host.exists() {
        std::fs::write(
            &on_host,
            format!(
                "port {port}\nbind {ip}\ndir {dir}\nprotected-mode no\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {name} {pip} {pport} {quorum}\n\
                 sentinel down-after-milliseconds {name} {down}\n\
                 sentinel failover-timeout {name} {failover}\n\
                 sentinel parallel-syncs {name} 1\n",
                port = addr.port(),
                ip = addr.ip(),
                dir = dir.display(),
                pip = primary.ip(),
                pport = primary.port(),
                quorum = settings.quorum,
                down = settings.down_after.as_millis(),
                failover = settings.failover_timeout.as_millis(),
            ),
        )?;
    }
    Ok(ProcessSpec {
        name: format!("sentinel[{index}]"),
        program: "redis-server".into(),
        args: vec![conf.display().to_string(), "--sentinel".into()],
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        log_path: dir.join(format!("sentinel-{index}.log")),
        probe: Probe::RedisPing(addr),
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(10),
    })
}

/// The `tansu` broker on `addr`, advertising `advertised` (its own address, or a proxy's), with
/// sqlite storage in `dir/broker.db`: it survives `kill -9`. The sqlite path is relative to the
/// working directory — tansu prepends the cwd even to an absolute path.
pub fn broker(addr: SocketAddr, advertised: SocketAddr, dir: &Path) -> ProcessSpec {
    let args = vec![
        "broker".to_string(),
        "--listener-url".into(),
        format!("tcp://{addr}"),
        "--advertised-listener-url".into(),
        format!("tcp://{advertised}"),
        "--storage-engine".into(),
        "sqlite://broker.db".into(),
    ];
    ProcessSpec {
        name: "broker".into(),
        program: tansu_program(),
        args,
        env: vec![("RUST_LOG".into(), std::env::var("FLASHLAB_BROKER_LOG").unwrap_or_else(|_| "warn".into()))],
        cwd: dir.to_path_buf(),
        log_path: dir.join("broker.log"),
        probe: Probe::KafkaApiVersions(addr),
        ready_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
    }
}

/// `tansu` from `$TANSU_BIN`, else `~/.cargo/bin/tansu` when it exists, else the `PATH`.
fn tansu_program() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return path.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cargo_bin = Path::new(&home).join(".cargo/bin/tansu");
        if cargo_bin.exists() {
            return cargo_bin;
        }
    }
    "tansu".into()
}

/// Where the system's services connect.
#[derive(Debug, Clone)]
pub struct SystemAddrs {
    pub redis: SocketAddr,
    /// With replicated Redis: the sentinels (`HOST:PORT`: in a container, their names on the
    /// run's network), which name the primary (then `redis` is not passed on).
    pub sentinels: Vec<String>,
    pub kafka: SocketAddr,
    /// The payment provider, once it runs.
    pub payment: Option<SocketAddr>,
}

impl SystemAddrs {
    /// `REDIS_ADDR`, `KAFKA_ADDR` and `PAYMENT_URL` for a flash-sale service or admin command.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = match self.sentinels.is_empty() {
            true => vec![("REDIS_ADDR".to_string(), self.redis.to_string())],
            false => vec![
                ("REDIS_SENTINELS".to_string(), self.sentinels.join(",")),
                ("REDIS_MASTER_NAME".into(), crate::testbed::replication::MASTER_NAME.into()),
            ],
        };
        env.push(("KAFKA_ADDR".into(), self.kafka.to_string()));
        if let Some(payment) = self.payment {
            env.push(("PAYMENT_URL".into(), format!("http://{payment}")));
        }
        env
    }
}

/// One `flashsale` service: which subcommand, where it listens, how it is probed.
struct Service<'a> {
    flashsale: &'a Path,
    /// `gateway`, `processor`, `payment`.
    command: &'static str,
    /// Its index among its kind (`gateway[1]`), or `None` for a singleton.
    index: Option<usize>,
    /// The variable that sets its listen address, e.g. `GATEWAY_ADDR`.
    addr_var: &'static str,
    addr: SocketAddr,
    probe_path: &'static str,
    /// What it connects to (`None` for the payment provider, which connects to nothing).
    deps: Option<&'a SystemAddrs>,
    env: &'a [(String, String)],
    dir: &'a Path,
    ready_timeout: Duration,
    stop_grace: Duration,
}

impl Service<'_> {
    fn spec(self) -> ProcessSpec {
        let mut env = vec![(self.addr_var.to_string(), self.addr.to_string())];
        env.extend(self.deps.map(SystemAddrs::env).unwrap_or_default());
        env.extend(self.env.iter().cloned());
        let (name, log) = match self.index {
            Some(i) => (format!("{}[{i}]", self.command), format!("{}-{i}.log", self.command)),
            None => (self.command.to_string(), format!("{}.log", self.command)),
        };
        ProcessSpec {
            name,
            program: self.flashsale.to_path_buf(),
            args: vec![self.command.into()],
            env,
            cwd: self.dir.to_path_buf(),
            log_path: self.dir.join(log),
            probe: Probe::HttpOk(self.addr, self.probe_path),
            ready_timeout: self.ready_timeout,
            stop_grace: self.stop_grace,
        }
    }
}

/// `flashsale payment` on `addr`, its ledger in `dir/payment-ledger.jsonl`.
pub fn payment(flashsale: &Path, addr: SocketAddr, env: &[(String, String)], dir: &Path) -> ProcessSpec {
    Service {
        flashsale,
        command: "payment",
        index: None,
        addr_var: "PAYMENT_ADDR",
        addr,
        probe_path: "/health",
        deps: None,
        env,
        dir,
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(10),
    }
    .spec()
}

/// `flashsale processor` number `index`, its metrics and health on `addr`.
pub fn processor(
    index: usize,
    flashsale: &Path,
    addr: SocketAddr,
    deps: &SystemAddrs,
    env: &[(String, String)],
    dir: &Path,
) -> ProcessSpec {
    Service {
        flashsale,
        command: "processor",
        index: Some(index),
        addr_var: "PROCESSOR_METRICS_ADDR",
        addr,
        probe_path: "/health",
        deps: Some(deps),
        env,
        dir,
        ready_timeout: Duration::from_secs(40),
        // The processor finishes the orders in hand for up to 30 s on SIGTERM.
        stop_grace: Duration::from_secs(35),
    }
    .spec()
}

/// `flashsale gateway` on `addr`; `env` overrides its configuration (see docs/system.md).
pub fn gateway(
    index: usize,
    flashsale: &Path,
    addr: SocketAddr,
    deps: &SystemAddrs,
    env: &[(String, String)],
    dir: &Path,
) -> ProcessSpec {
    Service {
        flashsale,
        command: "gateway",
        index: Some(index),
        addr_var: "GATEWAY_ADDR",
        addr,
        probe_path: "/readyz",
        deps: Some(deps),
        env,
        dir,
        ready_timeout: Duration::from_secs(40),
        // The gateway drains in-flight requests for up to 30 s on SIGTERM.
        stop_grace: Duration::from_secs(35),
    }
    .spec()
}

/// The `flashsale` binary: `$FLASHSALE_BIN`, else next to the running executable (and one level
/// up, for test binaries in `target/*/deps/`).
pub fn flashsale_program() -> PathBuf {
    if let Some(path) = std::env::var_os("FLASHSALE_BIN") {
        // Children run in their own directories: a relative path must not depend on that.
        let path = PathBuf::from(path);
        return std::path::absolute(&path).unwrap_or(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("flashsale");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    "flashsale".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_with_a_down_after_below_the_floor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let settings = |down_after| SentinelSettings {
            master: "m".into(),
            quorum: 2,
            down_after,
            failover_timeout: Duration::from_secs(5),
        };
        for short in [Duration::from_secs(1), SENTINEL_MIN_DOWN_AFTER - Duration::from_millis(1)] {
            let err = sentinel(0, addr, addr, &settings(short), dir.path(), dir.path()).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("fail over again"), "{err}");
            assert!(!dir.path().join("sentinel-0.conf").exists(), "nothing written for a refused setting");
        }
        sentinel(0, addr, addr, &settings(SENTINEL_MIN_DOWN_AFTER), dir.path(), dir.path()).unwrap();
        let conf = std::fs::read_to_string(dir.path().join("sentinel-0.conf")).unwrap();
        assert!(conf.contains("sentinel down-after-milliseconds m 2000"), "{conf}");
    }
}

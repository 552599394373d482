//! How to run each component on loopback: the real dependencies (`redis-server`, the `tansu`
//! Kafka broker) and the flash-sale system's own services (the `flashsale` binary).
//!
//! Each function returns a [`ProcessSpec`]; the [`crate::testbed`] picks ports and directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::probe::Probe;
use crate::process::ProcessSpec;

/// `redis-server` on `addr`, data (AOF, `appendfsync everysec`) in `dir`.
pub fn redis(addr: SocketAddr, dir: &Path) -> ProcessSpec {
    let args = [
        "--port",
        &addr.port().to_string(),
        "--bind",
        &addr.ip().to_string(),
        "--dir",
        &dir.display().to_string(),
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
    .to_vec();
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
    pub kafka: SocketAddr,
    /// The payment provider, once it runs.
    pub payment: Option<SocketAddr>,
}

impl SystemAddrs {
    /// `REDIS_ADDR`, `KAFKA_ADDR` and `PAYMENT_URL` for a flash-sale service or admin command.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env =
            vec![("REDIS_ADDR".to_string(), self.redis.to_string()), ("KAFKA_ADDR".into(), self.kafka.to_string())];
        if let Some(payment) = self.payment {
            env.push(("PAYMENT_URL".into(), format!("http://{payment}")));
        }
        env
    }
}

/// `flashsale payment` on `addr`, its ledger in `dir/payment-ledger.jsonl`.
pub fn payment(flashsale: &Path, addr: SocketAddr, env: &[(String, String)], dir: &Path) -> ProcessSpec {
    let mut full_env = vec![("PAYMENT_ADDR".to_string(), addr.to_string())];
    full_env.extend(env.iter().cloned());
    ProcessSpec {
        name: "payment".into(),
        program: flashsale.to_path_buf(),
        args: vec!["payment".into()],
        env: full_env,
        cwd: dir.to_path_buf(),
        log_path: dir.join("payment.log"),
        probe: Probe::HttpOk(addr, "/health"),
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(10),
    }
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
    let mut full_env = vec![("PROCESSOR_METRICS_ADDR".to_string(), addr.to_string())];
    full_env.extend(deps.env());
    full_env.extend(env.iter().cloned());
    ProcessSpec {
        name: format!("processor[{index}]"),
        program: flashsale.to_path_buf(),
        args: vec!["processor".into()],
        env: full_env,
        cwd: dir.to_path_buf(),
        log_path: dir.join(format!("processor-{index}.log")),
        probe: Probe::HttpOk(addr, "/health"),
        ready_timeout: Duration::from_secs(40),
        // The processor finishes the orders in hand for up to 30 s on SIGTERM.
        stop_grace: Duration::from_secs(35),
    }
}

/// `flashsale gateway` on `addr`; `env` overrides its configuration (see the system's README).
pub fn gateway(
    index: usize,
    flashsale: &Path,
    addr: SocketAddr,
    deps: &SystemAddrs,
    env: &[(String, String)],
    dir: &Path,
) -> ProcessSpec {
    let mut full_env = vec![("GATEWAY_ADDR".to_string(), addr.to_string())];
    full_env.extend(deps.env());
    full_env.extend(env.iter().cloned());
    let name = format!("gateway[{index}]");
    ProcessSpec {
        log_path: dir.join(format!("gateway-{index}.log")),
        name,
        program: flashsale.to_path_buf(),
        args: vec!["gateway".into()],
        env: full_env,
        cwd: dir.to_path_buf(),
        probe: Probe::HttpOk(addr, "/readyz"),
        ready_timeout: Duration::from_secs(40),
        // The gateway drains in-flight requests for up to 30 s on SIGTERM.
        stop_grace: Duration::from_secs(35),
    }
}

/// The `flashsale` binary: `$FLASHSALE_BIN`, else next to the running executable (and one level
/// up, for test binaries in `target/*/deps/`).
pub fn flashsale_program() -> PathBuf {
    if let Some(path) = std::env::var_os("FLASHSALE_BIN") {
        return path.into();
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

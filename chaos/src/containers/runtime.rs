//! One run's containers: [`Runtime`] (its network, its reaper) and [`Container`] (one
//! component, started through `testcontainers`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use testcontainers::core::{ContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::time::Instant;

use super::bridge::{ApiVersion, Bridge, BridgeError};
use super::images::{self, ImageError};
use super::{lab_identity, COMMAND_TIMEOUT, LABEL_LAB, LABEL_RUN};
use crate::ports::{free_port, loopback};
use crate::probe::Probe;

/// How often a readiness probe is repeated while waiting.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a container that is not ready yet is asked whether it exited.
const EXIT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Each probe attempt's own limit.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of a container's log an error quotes.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Docker(#[from] ImageError),
    #[error("{name}: {why}")]
    Start { name: String, why: String },
    #[error("{name}: not ready after {waited:?} (last probe: {last}); log tail:\n{log_tail}")]
    NotReady { name: String, waited: Duration, last: String, log_tail: String },
    #[error("{name}: exited ({status}) before it was ready; log tail:\n{log_tail}")]
    Exited { name: String, status: String, log_tail: String },
    #[error("no free port: {0}")]
    NoPort(std::io::Error),
    #[error("the reaper: {0}")]
    Reaper(std::io::Error),
}

/// The bridge every `testcontainers` call of this process goes through, on a thread of its own
/// (it outlives any one caller's runtime), and the engine's version.
fn bridge() -> Result<ApiVersion, RuntimeError> {
    static BRIDGE: OnceLock<Result<(String, ApiVersion), String>> = OnceLock::new();
    let started = BRIDGE.get_or_init(|| {
        // Read before DOCKER_HOST is pointed at the bridge below.
        let host = super::engine_host();
        let engine = match host.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            None => return Err(format!("DOCKER_HOST={host}: the container runtime needs the engine's unix socket")),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("docker-bridge".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => return drop(tx.send(Err(e.to_string()))),
                };
                runtime.block_on(async move {
                    match Bridge::start(&engine).await {
                        Ok(bridge) => {
                            let _ = tx.send(Ok((bridge.docker_host(), bridge.engine())));
                            // Serves until the process ends.
                            std::future::pending::<()>().await;
                            drop(bridge);
                        }
                        Err(e) => drop(tx.send(Err(e.to_string()))),
                    }
                })
            })
            .map_err(|e| e.to_string())?;
        let (host, engine) = rx.recv_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())??;
        // Before the first `testcontainers` client exists: it reads DOCKER_HOST once.
        std::env::set_var("DOCKER_HOST", &host);
        Ok((host, engine))
    });
    match started {
        Ok((_, engine)) => Ok(*engine),
        Err(why) => Err(RuntimeError::Start { name: "docker".into(), why: why.clone() }),
    }
}

/// A run's containers live on its network and go with it. See the module docs.
#[derive(Debug)]
pub struct Runtime {
    run: String,
    network: String,
    /// The host's address on the run's network: where containers reach what the lab serves
    /// (its fault proxies).
    gateway: std::net::IpAddr,
    engine: ApiVersion,
    reaper: Option<std::process::Child>,
}

impl Runtime {
    /// Sweeps leftovers of dead labs (said on stderr), creates the run's network and starts its
    /// reaper.
    pub async fn start(run: &str) -> Result<Runtime, RuntimeError> {
        let engine = bridge()?;
        for gone in tokio::task::spawn_blocking(super::sweep_leftovers)
            .await
            .map_err(|e| RuntimeError::Start { name: "sweep".into(), why: e.to_string() })??
        {
            eprintln!("flashlab: removed {gone}, left by a lab that is gone");
        }
        let network = format!("flashlab-{run}");
        let labels = labels(run);
        let mut create = vec!["network".to_string(), "create".into()];
        for (k, v) in &labels {
            create.push("--label".into());
            create.push(format!("{k}={v}"));
        }
        create.push(network.clone());
        // The reaper first: a lab killed between the two leaves nothing.
        let mut reaper = reaper(run)?;
        let inspect = vec![
            "network".to_string(),
            "inspect".into(),
            "--format".into(),
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}".into(),
            network.clone(),
        ];
        let gateway = async {
            docker_off_thread(create).await?;
            let out = docker_off_thread(inspect).await?;
            out.split_whitespace().find_map(|a| a.parse::<std::net::Ipv4Addr>().ok()).ok_or_else(|| {
                RuntimeError::Start { name: "network".into(), why: format!("no IPv4 gateway in {out:?}") }
            })
        };
        let gateway = match gateway.await {
            Ok(ip) => ip,
            Err(e) => {
                // Whatever failed, nothing of the run stays: not the reaper, not the network.
                let _ = reaper.kill();
                let _ = reaper.wait();
                let _ = remove_run(run);
                return Err(e);
            }
        };
        Ok(Runtime { run: run.to_string(), network, gateway: gateway.into(), engine, reaper: Some(reaper) })
    }

    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The run's Docker network.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The host's address on the run's network: a server of the lab's listening there is
    /// reached by every container of the run (and by the lab itself).
    pub fn gateway_ip(&self) -> std::net::IpAddr {
        self.gateway
    }

    /// The engine's API version (through the bridge).
    pub fn engine(&self) -> ApiVersion {
        self.engine
    }

    /// Starts `spec` and waits until its probe passes on its published port.
    pub async fn start_container(&self, spec: ContainerSpec) -> Result<Container, RuntimeError> {
        let host_port = match spec.host_port {
            Some(port) => port,
            None => free_port().map_err(RuntimeError::NoPort)?,
        };
        let published = loopback(host_port);
        let name = format!("flashlab-{}-{}", self.run, spec.name);
        let (repository, tag) = spec.image.rsplit_once(':').unwrap_or((spec.image.as_str(), "latest"));
        let mut request = GenericImage::new(repository, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_network(self.network.clone())
            .with_container_name(name.clone())
            .with_mapped_port(host_port, ContainerPort::Tcp(spec.port))
            // Published on loopback only.
            .with_host_config_modifier(|host| {
                if let Some(bindings) = host.port_bindings.as_mut() {
                    for binding in bindings.values_mut().flatten().flatten() {
                        binding.host_ip = Some("127.0.0.1".into());
                    }
                }
            })
            .with_cmd(spec.cmd.clone());
        if let Some(dir) = &spec.mount {
            own_for_containers(dir).map_err(|why| RuntimeError::Start { name: name.clone(), why })?;
            request = request.with_mount(Mount::bind_mount(dir.display().to_string(), images::DATA_DIR));
        }
        for (k, v) in labels(&self.run) {
            request = request.with_label(k, v);
        }
        for (k, v) in &spec.env {
            request = request.with_env_var(k, v);
        }
        let inner =
            request.start().await.map_err(|e| RuntimeError::Start { name: name.clone(), why: e.to_string() })?;
        // Another container's log may be there already (a deploy's predecessor): this one's
        // goes after it.
        let log_from = std::fs::metadata(&spec.log_path).map_or(0, |m| m.len());
        let mut container = Container { spec, name, published, log_from, inner: Some(inner) };
        container.wait_ready().await?;
        Ok(container)
    }

    /// Removes the run's containers and network now (they are also removed on drop).
    pub fn remove_all(&mut self) -> Result<(), ImageError> {
        remove_run(&self.run)?;
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        Ok(())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            eprintln!("flashlab: removing run {}'s containers: {e}", self.run);
        }
    }
}

fn labels(run: &str) -> [(String, String); 2] {
    [(LABEL_RUN.to_string(), run.to_string()), (LABEL_LAB.to_string(), lab_identity())]
}

/// `docker rm -f` of every container of `run`, then its network.
fn remove_run(run: &str) -> Result<(), ImageError> {
    let filter = format!("label={LABEL_RUN}={run}");
    let ids = images::docker(&["ps".into(), "-aq".into(), "--filter".into(), filter.clone()], None)?;
    let ids: Vec<String> = ids.lines().map(str::to_string).collect();
    if !ids.is_empty() {
        let mut rm = vec!["rm".to_string(), "-f".into(), "-v".into()];
        rm.extend(ids);
        images::docker(&rm, None)?;
    }
    let nets = images::docker(&["network".into(), "ls".into(), "-q".into(), "--filter".into(), filter], None)?;
    for id in nets.lines() {
        images::docker(&["network".into(), "rm".into(), id.to_string()], None)?;
    }
    Ok(())
}

/// A process that waits for the lab to die (the kernel sends it SIGTERM then:
/// `setpriv --pdeathsig TERM`) and removes the run's containers and network. Killed with
/// SIGKILL at a clean end, when the lab removed them itself.
fn reaper(run: &str) -> Result<std::process::Child, RuntimeError> {
    let timeout = COMMAND_TIMEOUT.as_secs();
    let filter = format!("label={LABEL_RUN}={run}");
    let script = format!(
        "trap 'ids=$(timeout {timeout} docker ps -aq --filter {filter}); [ -n \"$ids\" ] && timeout {timeout} docker rm -f -v $ids; \
         for n in $(timeout {timeout} docker network ls -q --filter {filter}); do timeout {timeout} docker network rm $n; done; exit 0' TERM; \
         while :; do sleep 3600 & wait $!; done"
    );
    std::process::Command::new("setpriv")
        .args(["--pdeathsig", "TERM", "sh", "-c", &script])
        // The engine, not the bridge: the bridge dies with the lab.
        .env("DOCKER_HOST", super::engine_host())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(RuntimeError::Reaper)
}

/// One component to run as a container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The component's name in the run (`redis`, `processor-0`); the container is
    /// `flashlab-RUN-NAME`, also its name on the run's network.
    pub name: String,
    /// `repository:tag`.
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The port it serves on inside its container; published on 127.0.0.1.
    pub port: u16,
    /// The published port; `None` picks a free one.
    pub host_port: Option<u16>,
    /// Passes once it serves: aimed at its port inside the container, run against the
    /// published port.
    pub probe: Probe,
    pub ready_timeout: Duration,
    /// Where its log is written when it is removed.
    pub log_path: PathBuf,
    /// A directory of the host mounted as its data directory (`/data`, its working
    /// directory): what it writes stays on the host, beside the process runtime's. `None`: the
    /// container's own, gone with it.
    pub mount: Option<PathBuf>,
}

/// Gives `dir` and the files in it to the images' user (uid [`images::UID`]), who runs every
/// container: it writes its data there, and rewrites what the lab wrote for it (a sentinel's
/// config).
fn own_for_containers(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| (entry.path(), 0o666));
    for (path, mode) in std::iter::once((dir.to_path_buf(), 0o777)).chain(files) {
        give_to_containers(&path, mode)?;
    }
    Ok(())
}

/// Gives `path` to uid [`images::UID`]; not root, opens it to all (`mode`), as a temporary
/// directory is.
fn give_to_containers(path: &std::path::Path, mode: u32) -> Result<(), String> {
    let uid = nix::unistd::Uid::from_raw(images::UID as u32);
    let gid = nix::unistd::Gid::from_raw(images::UID as u32);
    match nix::unistd::chown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(_) => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: cannot give it to uid {}: {e}", path.display(), images::UID))
        }
    }
}

/// A running component's container. Removed (its log kept) when dropped.
pub struct Container {
    spec: ContainerSpec,
    name: String,
    published: SocketAddr,
    /// Where its section of the log file begins.
    log_from: u64,
    inner: Option<ContainerAsync<GenericImage>>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("name", &self.name).field("published", &self.published).finish()
    }
}

impl Container {
    /// Where the lab reaches it: its port published on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        self.published
    }

    /// Its name on the run's network (and in `docker ps`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `NAME:PORT`, where its peers on the run's network reach `port`.
    pub fn name_port(&self, port: u16) -> String {
        format!("{}:{port}", self.name)
    }

    pub fn id(&self) -> &str {
        self.inner.as_ref().map(|c| c.id()).unwrap_or("")
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let args = ["logs".to_string(), "--tail".into(), LOG_TAIL_LINES.to_string(), self.name.clone()];
        match images::docker_both(&args) {
            Ok(out) => out,
            Err(e) => format!("(no log: {e})"),
        }
    }

    /// Waits until the probe passes (bounded by the spec's `ready_timeout`).
    pub async fn wait_ready(&mut self) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let probe = self.spec.probe.at(self.published);
        let mut last = String::from("not tried");
        let mut checked = Instant::now();
        while started.elapsed() < self.spec.ready_timeout {
            match probe.check(PROBE_ATTEMPT_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            // Once a second: a container whose process ended will not get ready.
            if checked.elapsed() >= EXIT_CHECK_INTERVAL {
                checked = Instant::now();
                let status = self.inspect("{{.State.Status}}").await.unwrap_or_default().trim().to_string();
                if status == "exited" || status == "dead" {
                    return Err(RuntimeError::Exited { name: self.name.clone(), status, log_tail: self.log_tail() });
                }
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        Err(RuntimeError::NotReady {
            name: self.name.clone(),
            waited: started.elapsed(),
            last,
            log_tail: self.log_tail(),
        })
    }

    /// SIGKILL, as `kill -9` of a process.
    pub async fn kill(&self) -> Result<(), ImageError> {
        self.docker(&["kill", "--signal", "KILL"]).await
    }

    /// Starts it again after a kill or stop: the same container, data and published port.
    pub async fn start_again(&mut self) -> Result<(), RuntimeError> {
        self.start().await?;
        self.wait_ready().await
    }

    /// `docker start`, without waiting for it to serve.
    pub async fn start(&self) -> Result<(), ImageError> {
        self.docker(&["start"]).await
    }

    /// The host's pid of its process, while it runs (`None` when it does not).
    pub async fn host_pid(&self) -> Result<Option<u32>, ImageError> {
        let out = self.inspect("{{.State.Pid}}").await?;
        Ok(out.trim().parse::<u32>().ok().filter(|&pid| pid > 0))
    }

    /// Its address on the run's network `network`: where its connections to the lab's servers
    /// come from.
    pub async fn ip_on(&self, network: &str) -> Result<Option<std::net::IpAddr>, ImageError> {
        let out = self
            .inspect(&format!(
                "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
            ))
            .await?;
        Ok(out.trim().parse().ok())
    }

    async fn inspect(&self, format: &str) -> Result<String, ImageError> {
        docker_off_thread(vec!["inspect".to_string(), "--format".into(), format.to_string(), self.name.clone()]).await
    }

    /// SIGTERM, then SIGKILL after `grace` (`docker stop`).
    pub async fn stop(&self, grace: Duration) -> Result<(), ImageError> {
        self.docker(&["stop", "--time", &grace.as_secs().max(1).to_string()]).await
    }

    /// Freezes every process in it (the cgroup freezer).
    pub async fn pause(&self) -> Result<(), ImageError> {
        self.docker(&["pause"]).await
    }

    pub async fn resume(&self) -> Result<(), ImageError> {
        self.docker(&["unpause"]).await
    }

    /// A CPU quota of `quota_us` every `period_us` on it (`docker update --cpu-period P
    /// --cpu-quota Q`), or none (`None`: `--cpu-quota -1`). The engine keeps it across a
    /// restart of the container. (Not `--cpus`: a quota set that way and lifted with
    /// `--cpu-quota -1` is not set again at the container's next start by a later `--cpus`.)
    pub async fn set_cpu_quota(&self, quota: Option<(u64, u64)>) -> Result<(), ImageError> {
        match quota {
            Some((quota_us, period_us)) => {
                let (period, quota) = (period_us.to_string(), quota_us.to_string());
                self.docker(&["update", "--cpu-period", &period, "--cpu-quota", &quota]).await
            }
            None => self.docker(&["update", "--cpu-quota", "-1"]).await,
        }
    }

    /// A memory limit of `bytes`, swap included (`docker update --memory B --memory-swap B`),
    /// or none in effect (`None`: [`MEMORY_LIFTED`] — Docker 20.10 cannot take a limit back:
    /// `-1` is refused, `0` changes nothing). The engine keeps it across a restart.
    pub async fn set_memory_limit(&self, bytes: Option<u64>) -> Result<(), ImageError> {
        let bytes = bytes.unwrap_or(MEMORY_LIFTED).to_string();
        self.docker(&["update", "--memory", &bytes, "--memory-swap", &bytes]).await
    }

    /// Whether the kernel's OOM killer ended its last run (the engine's `State.OOMKilled`).
    pub async fn oom_killed(&self) -> Result<bool, ImageError> {
        Ok(self.inspect("{{.State.OOMKilled}}").await?.trim() == "true")
    }

    /// Cuts it off the run's network `network`: nothing reaches it and it reaches nothing —
    /// the lab through its published port included (a partition). Its processes run on.
    pub async fn disconnect(&self, network: &str) -> Result<(), ImageError> {
        self.docker(&["network", "disconnect", network]).await
    }

    /// Puts it back on `network` (it is found by its name again).
    pub async fn connect(&self, network: &str) -> Result<(), ImageError> {
        self.docker(&["network", "connect", network]).await
    }

    /// `docker exec` of `command` in it, with `env` besides its own (bounded); its output, or
    /// why it failed.
    pub async fn exec(&self, env: &[(String, String)], command: &[&str]) -> Result<String, ImageError> {
        let mut args: Vec<String> = vec!["exec".into()];
        for (k, v) in env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        args.push(self.name.clone());
        args.extend(command.iter().map(|s| s.to_string()));
        docker_off_thread(args).await
    }

    async fn docker(&self, verb: &[&str]) -> Result<(), ImageError> {
        let mut args: Vec<String> = verb.iter().map(|s| s.to_string()).collect();
        args.push(self.name.clone());
        docker_off_thread(args).await.map(drop)
    }

    /// Writes its whole log (stdout and stderr) to the spec's `log_path` (also done on drop):
    /// its own section, after what an earlier container wrote there.
    pub fn save_log(&self) {
        let args = ["logs".to_string(), self.name.clone()];
        if let Ok(out) = images::docker_both(&args) {
            let _ = write_log_section(&self.spec.log_path, self.log_from, &self.name, &out);
        }
    }
}

/// The memory limit that stands for none (1 TiB, above any machine the lab runs on): what a
/// lifted memory fault leaves on a container.
pub const MEMORY_LIFTED: u64 = 1 << 40;

/// A `docker` command (bounded by [`images::docker`]'s timeout) off the async threads.
async fn docker_off_thread(args: Vec<String>) -> Result<String, ImageError> {
    tokio::task::spawn_blocking(move || images::docker(&args, None))
        .await
        .unwrap_or_else(|e| Err(ImageError::Docker { args: "join".into(), why: e.to_string() }))
}

impl Drop for Container {
    fn drop(&mut self) {
        self.save_log();
        // `testcontainers` removes it (in its own drop).
        drop(self.inner.take());
    }
}

/// Writes `text` as `name`'s section of the log at `path`, from byte `from` on (what was there
/// before stays; a section written before is replaced), headed by its name after another's.
fn write_log_section(path: &std::path::Path, from: u64, name: &str, text: &str) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    file.set_len(from)?;
    file.seek(std::io::SeekFrom::Start(from))?;
    if from > 0 {
        writeln!(file, "--- {name} ---")?;
    }
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_containers_log_follows_its_predecessors_and_is_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("processor-0.log");
        super::write_log_section(&path, 0, "first", "one\n").unwrap();
        super::write_log_section(&path, 0, "first", "one\nmore\n").unwrap();
        let from = std::fs::metadata(&path).unwrap().len();
        super::write_log_section(&path, from, "second", "two\n").unwrap();
        super::write_log_section(&path, from, "second", "two\nthree\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "one\nmore\n--- second ---\ntwo\nthree\n");
    }
}

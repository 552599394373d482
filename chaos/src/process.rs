//! Supervised child processes.
//!
//! A [`Supervised`] process is started from a [`ProcessSpec`], with stdout and stderr appended to
//! its log file, and is not handed back until its [`Probe`] passes (bounded by
//! `ready_timeout`). It can be stopped (SIGTERM, then SIGKILL after a grace period), killed,
//! paused and resumed (SIGSTOP/SIGCONT) and restarted with the same arguments — the same ports
//! and data directory.
//!
//! A child never outlives the lab:
//! - dropping the handle kills it;
//! - every child runs under `setpriv --pdeathsig KILL`, so the kernel kills it when the thread
//!   that spawned it dies — also when the lab is killed with SIGKILL and no destructor runs.
//!   Spawn from a long-lived thread (a tokio worker or the main thread, never `spawn_blocking`);
//! - every child gets its own process group, so a Ctrl-C in the lab's terminal reaches the lab
//!   alone, and the lab stops its children in order (gateways before the broker they flush to).
//!
//! Each component lives in a memory cgroup of its own from its first instruction, across
//! restarts (a container's cgroup; see [`crate::cgroups`]), entered before the program is
//! exec'd; a CPU fault adds its cgroup to the ones a restart enters
//! ([`Supervised::enter_on_start`]).
//!
//! On the container runtime a `Supervised` holds a component's container instead
//! ([`Supervised::in_container`], [`crate::containers::hosted`]): the same handle, so the
//! injector, the supervisor and the drills treat both alike. Its resource limits are the
//! engine's ([`crate::injector`]), and a deploy replaces its container with another
//! ([`crate::testbed::release`]): [`Supervised::redeploy`] refuses one.

use std::fs::OpenOptions;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use crate::cgroups::{Cgroup, Controller};
use crate::containers::hosted::Hosted;
use crate::containers::Container;
use crate::ports::{free_port, loopback};
use crate::probe::Probe;

/// How often a readiness probe is repeated while waiting.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Each probe attempt's own limit.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of the log an error message quotes.
const LOG_TAIL_BYTES: u64 = 2_000;

/// The process state letter from `/proc/PID/stat` (`R`, `S`, `T` stopped, `Z` zombie...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && !matches!(process_state(pid), None | Some('Z') | Some('X'))
}

/// Everything needed to start (and restart) one child process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Name in logs and errors, such as `redis` or `gateway[0]`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the lab's own environment.
    pub env: Vec<(String, String)>,
    /// Working directory; the component's data lives here.
    pub cwd: PathBuf,
    /// stdout and stderr are appended here, across restarts.
    pub log_path: PathBuf,
    /// Passes once the process can serve.
    pub probe: Probe,
    pub ready_timeout: Duration,
    /// How long [`Supervised::stop`] waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{name}: cannot start {program}: {source} (is it installed? try ci/setup)")]
    Spawn { name: String, program: String, source: std::io::Error },
    #[error("{name}: cannot open log {path}: {source}")]
    Log { name: String, path: String, source: std::io::Error },
    #[error("{name}: exited with {status} before it was ready; log tail:\n{log_tail}")]
    ExitedEarly { name: String, status: ExitStatus, log_tail: String },
    #[error("{name}: not ready after {waited:?} (last probe: {last}); log tail:\n{log_tail}")]
    NotReady { name: String, waited: Duration, last: String, log_tail: String },
    #[error("{name}: not running")]
    NotRunning { name: String },
    #[error("{name}: signal {signal}: {source}")]
    Signal { name: String, signal: Signal, source: nix::Error },
    #[error("{name}: waiting for exit: {source}")]
    Wait { name: String, source: std::io::Error },
    #[error("no free port: {0}")]
    NoPort(std::io::Error),
    #[error("{name}: its container exited before it was ready; log tail:\n{log_tail}")]
    ContainerExited { name: String, log_tail: String },
    #[error("{name}: {why}")]
    Container { name: String, why: String },
    #[error("{name}: {what} of a component in a container is the testbed's (a container of the build's image)")]
    NotOnContainers { name: String, what: &'static str },
}

/// How many times a component is started on a fresh port when its start fails (another process
/// can take a free port between our check and the child's bind).
const START_ATTEMPTS: usize = 3;

/// Starts `spec_for(addr)` on a free loopback port; when the child exits while starting, again
/// on another port, [`START_ATTEMPTS`] times in all.
pub async fn start_on_free_port(spec_for: impl Fn(SocketAddr) -> ProcessSpec) -> Result<Supervised, ProcessError> {
    let mut attempt = 1;
    loop {
        let addr = loopback(free_port().map_err(ProcessError::NoPort)?);
        match Supervised::start(spec_for(addr)).await {
            Ok(process) => return Ok(process),
            Err(ProcessError::ExitedEarly { name, .. }) if attempt < START_ATTEMPTS => {
                tracing::warn!(%name, %addr, attempt, "exited while starting; trying another port");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Enters the cgroups whose `cgroup.procs` files it is given (writing `0` there moves the
/// writer), then execs the rest of its arguments: run as `sh -c ENTER_CGROUPS sh N PROCS… PROGRAM
/// ARGS…`, so the program is in its cgroups from its first instruction. (The workspace forbids
/// `unsafe`, which a `pre_exec` hook would need.)
const ENTER_CGROUPS: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do echo 0 > "$1" || { echo "flashlab: cannot enter cgroup $1" >&2; exit 126; }; shift; n=$((n-1)); done
exec "$@""#;

/// A child process under the lab's control. See the module docs.
#[derive(Debug)]
pub struct Supervised {
    spec: ProcessSpec,
    // Before the cgroup: the process is killed before its cgroup is removed.
    child: Option<Child>,
    /// The component's own memory cgroup, entered at every start; `Err`: why it has none.
    memory: Result<Cgroup, String>,
    /// More cgroups (`cgroup.procs` files) entered at every start: a CPU fault's, while it lasts.
    also_enter: Vec<PathBuf>,
    /// On the container runtime: its container (`child` stays `None`). See
    /// [`Supervised::in_container`].
    hosted: Option<Hosted>,
}

impl Supervised {
    /// Starts the process and waits until its probe passes.
    pub async fn start(spec: ProcessSpec) -> Result<Self, ProcessError> {
        let memory = Cgroup::create(Controller::Memory, &spec.name);
        if let Err(why) = &memory {
            tracing::warn!(name = %spec.name, %why, "started without a memory cgroup: memory faults are refused");
        }
        let mut process = Supervised { spec, child: None, memory, also_enter: Vec::new(), hosted: None };
        process.spawn_process()?;
        process.wait_ready().await?;
        Ok(process)
    }

    /// A component started in a container (its readiness awaited already), under the lab's
    /// control as a process is: `spec` says how the host sees it — its name, its published
    /// address in the probe, its data directory (mounted in the container) and log. Signals go
    /// to its process from the host, a pause is its cgroup freezer, a kill or stop and a start
    /// go through the engine; its cgroups are the engine's (resource faults are `docker update`
    /// of its limits).
    pub async fn in_container(spec: ProcessSpec, container: Container) -> Result<Self, ProcessError> {
        let name = spec.name.clone();
        let hosted = Hosted::new(container)
            .await
            .map_err(|e| ProcessError::Container { name: name.clone(), why: e.to_string() })?;
        Ok(Supervised {
            spec,
            child: None,
            memory: Err("a component in a container: its memory cgroup is the engine's (docker update)".into()),
            also_enter: Vec::new(),
            hosted: Some(hosted),
        })
    }

    /// Its container, on the container runtime.
    pub fn container(&self) -> Option<&Container> {
        self.hosted.as_ref().map(Hosted::container)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The address it serves on: the one its readiness probe checks.
    pub fn addr(&self) -> SocketAddr {
        self.spec.probe.addr()
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The component's own memory cgroup; `Err`: why it has none.
    pub fn memory_cgroup(&self) -> Result<&Cgroup, String> {
        self.memory.as_ref().map_err(Clone::clone)
    }

    /// From the next start on, the process also enters (`enter`) — or no longer enters — the
    /// cgroup whose `cgroup.procs` is `procs`.
    pub fn enter_on_start(&mut self, procs: PathBuf, enter: bool) {
        self.also_enter.retain(|p| *p != procs);
        if enter {
            self.also_enter.push(procs);
        }
    }

    /// The operating-system pid, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        if let Some(hosted) = &self.hosted {
            return hosted.pid();
        }
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process is alive (a paused process is alive).
    pub fn is_running(&mut self) -> bool {
        if let Some(hosted) = &self.hosted {
            return hosted.is_running();
        }
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts it: a new process, or its container again.
    async fn spawn(&mut self) -> Result<(), ProcessError> {
        if let Some(hosted) = &mut self.hosted {
            let name = self.spec.name.clone();
            return hosted.start().await.map_err(|e| ProcessError::Container { name, why: e.to_string() });
        }
        self.spawn_process()
    }

    fn spawn_process(&mut self) -> Result<(), ProcessError> {
        let spec = &self.spec;
        let log = OpenOptions::new().create(true).append(true).open(&spec.log_path).map_err(|source| {
            ProcessError::Log { name: spec.name.clone(), path: spec.log_path.display().to_string(), source }
        })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::Log {
            name: spec.name.clone(),
            path: spec.log_path.display().to_string(),
            source,
        })?;
        let enter: Vec<PathBuf> =
            self.memory.iter().map(Cgroup::procs).chain(self.also_enter.iter().cloned()).collect();
        let mut command = Command::new(if enter.is_empty() { "setpriv" } else { "sh" });
        if !enter.is_empty() {
            command.arg("-c").arg(ENTER_CGROUPS).arg("sh").arg(enter.len().to_string()).args(&enter).arg("setpriv");
        }
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            name: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        })?;
        tracing::debug!(name = %spec.name, pid = ?child.id(), "started");
        self.child = Some(child);
        Ok(())
    }

    /// Polls the probe until it passes, the process exits, or `ready_timeout` runs out.
    pub async fn wait_ready(&mut self) -> Result<(), ProcessError> {
        let started = Instant::now();
        let deadline = started + self.spec.ready_timeout;
        let mut last;
        loop {
            if let Some(hosted) = &self.hosted {
                if !hosted.is_running() {
                    return Err(ProcessError::ContainerExited {
                        name: self.spec.name.clone(),
                        log_tail: hosted.log_tail(),
                    });
                }
            } else if let Ok(Some(status)) =
                self.child.as_mut().ok_or_else(|| ProcessError::NotRunning { name: self.spec.name.clone() })?.try_wait()
            {
                self.child = None;
                return Err(ProcessError::ExitedEarly {
                    name: self.spec.name.clone(),
                    status,
                    log_tail: self.log_tail(),
                });
            }
            match self.spec.probe.check(PROBE_ATTEMPT_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    name: self.spec.name.clone(),
                    waited: started.elapsed(),
                    last,
                    log_tail: self.log_tail(),
                });
            }
            sleep(PROBE_INTERVAL).await;
        }
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        let pid = self.pid().ok_or_else(|| ProcessError::NotRunning { name: self.spec.name.clone() })?;
        kill(Pid::from_raw(pid as i32), signal).map_err(|source| ProcessError::Signal {
            name: self.spec.name.clone(),
            signal,
            source,
        })
    }

    /// SIGSTOP: the process is frozen (a stalled VM, a long GC pause) but keeps its sockets. In
    /// a container: its cgroup freezer, as `docker pause`.
    pub fn pause(&self) -> Result<(), ProcessError> {
        match &self.hosted {
            Some(hosted) => hosted
                .freeze(true)
                .map(drop)
                .map_err(|why| ProcessError::Container { name: self.spec.name.clone(), why }),
            None => self.signal(Signal::SIGSTOP),
        }
    }

    /// SIGCONT after [`Supervised::pause`] (in a container: the freezer thaws it).
    pub fn resume(&self) -> Result<(), ProcessError> {
        match &self.hosted {
            Some(hosted) => hosted
                .freeze(false)
                .map(drop)
                .map_err(|why| ProcessError::Container { name: self.spec.name.clone(), why }),
            None => self.signal(Signal::SIGCONT),
        }
    }

    /// Whether [`Supervised::pause`] holds it now, and what says so: the process's state
    /// (`T`, stopped) or its container's freezer (`FROZEN`).
    pub fn paused(&self) -> (bool, String) {
        match &self.hosted {
            Some(hosted) => match hosted.freezer_state() {
                Ok(state) => (state == "FROZEN", format!("pid {} freezer {state}", hosted.pid().unwrap_or(0))),
                Err(why) => (false, why),
            },
            None => {
                let pid = self.pid().unwrap_or(0);
                let state = process_state(pid);
                (state == Some('T'), format!("pid {pid} state {:?}", state.unwrap_or('?')))
            }
        }
    }

    /// SIGKILL, then reaps the process. A no-op when it is not running.
    pub async fn kill(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if let Some(hosted) = &mut self.hosted {
            let name = self.spec.name.clone();
            hosted.kill().await.map_err(|e| ProcessError::Container { name, why: e.to_string() })?;
            return Ok(None);
        }
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // SIGKILL also ends a stopped process; no SIGCONT needed.
        let _ = child.start_kill();
        let status =
            child.wait().await.map_err(|source| ProcessError::Wait { name: self.spec.name.clone(), source })?;
        Ok(Some(status))
    }

    /// SIGTERM (resuming a paused process first), then SIGKILL if it has not exited within the
    /// spec's `stop_grace`. Returns the exit status; `None` when it was not running.
    pub async fn stop(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if let Some(hosted) = &mut self.hosted {
            if hosted.is_running() {
                let name = self.spec.name.clone();
                hosted
                    .stop(self.spec.stop_grace)
                    .await
                    .map_err(|e| ProcessError::Container { name, why: e.to_string() })?;
            }
            return Ok(None);
        }
        if !self.is_running() {
            self.child = None;
            return Ok(None);
        }
        let _ = self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM)?;
        let grace = self.spec.stop_grace;
        let child = self.child.as_mut().expect("checked running above");
        match timeout(grace, child.wait()).await {
            Ok(Ok(status)) => {
                self.child = None;
                Ok(Some(status))
            }
            Ok(Err(source)) => Err(ProcessError::Wait { name: self.spec.name.clone(), source }),
            Err(_) => {
                tracing::warn!(name = %self.spec.name, ?grace, "did not stop after SIGTERM; killing");
                self.kill().await
            }
        }
    }

    /// Stops the process (if running) and starts it again with the same spec.
    pub async fn restart(&mut self) -> Result<(), ProcessError> {
        self.stop().await?;
        self.spawn().await?;
        self.wait_ready().await
    }

    /// Stops the process (if running) and starts `spec` in its place — another build or another
    /// configuration of the same service, on the same address (a deploy or its rollback). The
    /// name stays: its cgroups, log and faults are the same component's.
    pub async fn redeploy(&mut self, spec: ProcessSpec) -> Result<(), ProcessError> {
        if self.hosted.is_some() {
            return Err(ProcessError::NotOnContainers { name: self.spec.name.clone(), what: "a deploy" });
        }
        self.stop().await?;
        self.spec = ProcessSpec { name: self.spec.name.clone(), ..spec };
        self.spawn().await?;
        self.wait_ready().await
    }

    /// Starts a process that was stopped or killed, with the same spec.
    pub async fn start_again(&mut self) -> Result<(), ProcessError> {
        if self.is_running() {
            return Ok(());
        }
        self.spawn().await?;
        self.wait_ready().await
    }

    /// The last bytes of the log, for error messages.
    pub fn log_tail(&self) -> String {
        if let Some(hosted) = &self.hosted {
            return hosted.log_tail();
        }
        let Ok(mut file) = std::fs::File::open(&self.spec.log_path) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        use std::io::Seek;
        let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut tail = String::new();
        let _ = file.take(LOG_TAIL_BYTES).read_to_string(&mut tail);
        tail
    }
}

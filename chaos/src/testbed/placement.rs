//! Where the testbed's components run: as processes on loopback (the default), or in containers
//! on the run's Docker network ([`RuntimeKind::Containers`]).
//!
//! A component is described once, by its [`components`](crate::components) function, given the
//! address it listens on and its data directory: for a process a free loopback port and its
//! directory; for a container its port inside (published on 127.0.0.1) and `/data`, where its
//! directory of the host is mounted — the payment ledger, Redis' AOF and the broker's database
//! stay on the host, where the lab reads, deletes and restores them as on processes. Either way
//! it comes back as a [`Supervised`], which the injector, the supervisor and the drill use alike.
//!
//! On containers the services reach Redis, the broker and payment through the lab's fault
//! proxies, which listen on the host's address on the run's network (its gateway); the proxies
//! reach each component through its published port. The lab itself reaches everything through
//! 127.0.0.1 (and the broker's advertised address, its proxy's).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::containers::images::{self, Component, Sources};
use crate::containers::upstream;
use crate::containers::{ContainerSpec, Runtime};
use crate::ports::loopback;
use crate::process::{ProcessSpec, Supervised};

use super::TestbedError;

/// Which runtime a testbed's components run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Processes on loopback ports.
    #[default]
    Processes,
    /// Containers started through `testcontainers` on a Docker network of the run's own.
    Containers,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Processes => "processes",
            RuntimeKind::Containers => "containers",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "processes" => Ok(RuntimeKind::Processes),
            "containers" => Ok(RuntimeKind::Containers),
            other => Err(format!("unknown runtime {other:?} (processes, containers)")),
        }
    }
}

/// The port each component listens on inside its container.
pub(super) mod port {
    pub(crate) const REDIS: u16 = 6379;
    pub(crate) const BROKER: u16 = 9092;
    pub(crate) const PAYMENT: u16 = 8081;
    pub(crate) const PROCESSOR: u16 = 9090;
    pub(crate) const GATEWAY: u16 = 8080;
    pub(crate) const SENTINEL: u16 = 26379;
}

/// Starts components where the testbed runs them. See the module docs.
#[derive(Debug)]
pub(super) enum Placement {
    Processes,
    Containers {
        runtime: Runtime,
        /// The image of each component, by its digest tag (`flashlab/redis:0.1.0-…`).
        images: BTreeMap<&'static str, String>,
    },
}

impl Placement {
    /// Processes; or, on containers, the images built (or found unchanged) from this machine's
    /// programs and `flashsale` — but for the components `chosen` names other images for,
    /// which the engine must have or pull ([`upstream`]) — and the run's network with its
    /// reaper. Nothing of the run is created before every image is there.
    pub(super) async fn new(
        kind: RuntimeKind,
        flashsale: &Path,
        chosen: &[(Component, String)],
    ) -> Result<Placement, TestbedError> {
        match kind {
            RuntimeKind::Processes => Ok(Placement::Processes),
            RuntimeKind::Containers => {
                let own: Vec<Component> =
                    Component::ALL.into_iter().filter(|c| chosen.iter().all(|(o, _)| o != c)).collect();
                let mut sources =
                    Sources::from_machine_for(&own).map_err(|e| TestbedError::Containers(e.to_string()))?;
                sources.flashsale = flashsale.to_path_buf();
                let chosen = chosen.to_vec();
                let built = tokio::task::spawn_blocking(move || {
                    for (component, image) in &chosen {
                        upstream::ensure_present(*component, image)?;
                    }
                    let built = images::build_these(&sources, &own)?;
                    Ok::<_, images::ImageError>(
                        built
                            .into_iter()
                            .map(|b| (b.component.name(), b.image))
                            .chain(chosen.into_iter().map(|(c, image)| (c.name(), image))),
                    )
                })
                .await
                .map_err(|e| TestbedError::Containers(e.to_string()))?
                .map_err(|e| TestbedError::Containers(format!("the images: {e}")))?;
                let images = built.collect();
                let run = format!("{}-{}", std::process::id(), crate::events::unix_ms() % 100_000_000);
                let runtime = Runtime::start(&run).await.map_err(|e| TestbedError::Containers(e.to_string()))?;
                Ok(Placement::Containers { runtime, images })
            }
        }
    }

    pub(super) fn kind(&self) -> RuntimeKind {
        match self {
            Placement::Processes => RuntimeKind::Processes,
            Placement::Containers { .. } => RuntimeKind::Containers,
        }
    }

    /// Where the lab's fault proxies listen: loopback, or the host's address on the run's
    /// network (which its containers reach).
    pub(super) fn proxy_ip(&self) -> IpAddr {
        match self {
            Placement::Processes => loopback(0).ip(),
            Placement::Containers { runtime, .. } => runtime.gateway_ip(),
        }
    }

    /// The run's Docker network, on containers.
    pub(super) fn network(&self) -> Option<&str> {
        match self {
            Placement::Processes => None,
            Placement::Containers { runtime, .. } => Some(runtime.network()),
        }
    }

    /// Starts the component `spec_for(listen address, data directory)` describes, with `dir`
    /// as its data directory on the host: a process on a free loopback port (or `fixed`), or a
    /// container listening on `inside` with `dir` mounted, published on a free port of
    /// 127.0.0.1 (or `fixed`). Returns once its probe passes.
    pub(super) async fn start(
        &self,
        inside: u16,
        fixed: Option<u16>,
        dir: &Path,
        spec_for: impl Fn(SocketAddr, &Path) -> ProcessSpec,
    ) -> Result<Supervised, TestbedError> {
        match self {
            Placement::Processes => Ok(match fixed {
                Some(port) => Supervised::start(spec_for(loopback(port), dir)).await?,
                None => crate::process::start_on_free_port(|addr| spec_for(addr, dir)).await?,
            }),
            Placement::Containers { images, .. } => {
                let spec = spec_for(SocketAddr::from(([0, 0, 0, 0], inside)), Path::new(images::DATA_DIR));
                let component = component_of(&spec.program);
                let image = images
                    .get(component.name())
                    .cloned()
                    .ok_or_else(|| TestbedError::Containers(format!("no image for {}", component.name())))?;
                self.start_container(inside, fixed, dir, spec, image, None).await
            }
        }
    }

    /// On containers: starts `spec` (described for inside its container) from `image`, as
    /// [`Placement::start`] does, named after the spec's component with `suffix` (a deployed
    /// build runs in a container of its own beside its stopped predecessor).
    pub(super) async fn start_container(
        &self,
        inside: u16,
        fixed: Option<u16>,
        dir: &Path,
        spec: ProcessSpec,
        image: String,
        suffix: Option<&str>,
    ) -> Result<Supervised, TestbedError> {
        match self {
            Placement::Processes => Err(TestbedError::Containers("not on the container runtime".into())),
            Placement::Containers { runtime, .. } => {
                // `processor[0]` → `processor-0`: a container's name has no brackets.
                let mut name = spec.name.replace('[', "-").replace(']', "");
                let log_name = match suffix {
                    Some(suffix) => {
                        name = format!("{name}-{suffix}");
                        PathBuf::from(format!("{name}.log"))
                    }
                    None => spec.log_path.file_name().map(PathBuf::from).unwrap_or_else(|| "log".into()),
                };
                let log_path = dir.join(log_name);
                let container = runtime
                    .start_container(ContainerSpec {
                        name,
                        image: image.clone(),
                        cmd: spec.args.clone(),
                        env: spec.env.clone(),
                        port: inside,
                        host_port: fixed,
                        probe: spec.probe.clone(),
                        ready_timeout: spec.ready_timeout,
                        log_path: log_path.clone(),
                        mount: Some(dir.to_path_buf()),
                    })
                    .await
                    .map_err(|e| TestbedError::Containers(e.to_string()))?;
                let host = ProcessSpec {
                    program: PathBuf::from(image),
                    cwd: dir.to_path_buf(),
                    log_path,
                    probe: spec.probe.at(container.addr()),
                    ..spec
                };
                Ok(Supervised::in_container(host, container).await?)
            }
        }
    }
}

/// Which image runs `program`: Redis' and the broker's by their names, `flashsale` (whatever
/// its file is called) otherwise.
fn component_of(program: &Path) -> Component {
    let name = program.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with("redis") {
        Component::Redis
    } else if name.starts_with("tansu") {
        Component::Broker
    } else {
        Component::Flashsale
    }
}

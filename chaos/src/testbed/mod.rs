//! The [`Testbed`]: the flash-sale system and its real dependencies, on loopback.
//!
//! Starts `redis-server` (AOF, `appendfsync everysec`), the `tansu` broker, the payment provider,
//! N processors and N gateways, each on a free port with its data in its own directory, and stops
//! them in dependency order: gateways first (they drain and flush to the broker), then the
//! processors (they finish the orders in hand), then payment, the broker and Redis. Dropping a
//! `Testbed` kills whatever still runs.
//!
//! With `proxies` on (the default), every client of Redis, the broker and the payment provider
//! goes through a [`FaultProxy`]: the services are given the proxies' addresses, and the broker
//! advertises its proxy's address, so Kafka clients stay behind it after the bootstrap. The
//! proxies run on a runtime of their own (one thread), so they keep forwarding whatever the
//! caller's runtime is doing — a test blocked in a synchronous Kafka read included. The lab's
//! own tools ([`Testbed::admin_env`], readiness probes) talk to the components directly, so a
//! network fault never blinds the lab.
//!
//! With `runtime: containers` ([`placement`]), every component runs in a container of the run's
//! Docker network instead, its data directory mounted from the same place; the proxies listen on
//! the host's address on that network.
//!
//! With `redis_replicas`, Redis is a replicated set watched by Sentinel ([`replication`]): the
//! services find the primary through the sentinels (`REDIS_SENTINELS`), the target `redis`
//! means whichever node is the primary when a fault starts, and the lab's own tools ask the
//! sentinels too. The on-call's manual failover pauses the primary's writes until its replicas
//! have them all ([`failover`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::components::{self, SystemAddrs};
use crate::faults::Target;
use crate::monitoring::{Monitoring, MonitoringConfig, MonitoringError, ScrapeTarget};
use crate::ports::loopback;
use crate::probe::Probe;
use crate::process::{ProcessError, Supervised};
use crate::proxy::FaultProxy;

pub mod failover;
mod placement;
pub mod release;
pub mod replication;
pub use placement::RuntimeKind;
use placement::{port, Placement};
use replication::Replication;

/// What to bring up.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Where each component keeps its data and log. `None`: a temporary directory, removed when
    /// the testbed drops.
    pub dir: Option<PathBuf>,
    /// How many gateways.
    pub gateways: usize,
    /// How many processors (they need the payment provider, which then starts too).
    pub processors: usize,
    /// Start the payment provider even without processors.
    pub payment: bool,
    /// Extra environment for every flash-sale service (gateway, processor, payment), e.g.
    /// `CIRCUIT_BREAKER_BASE_TIMEOUT=1s`.
    pub service_env: Vec<(String, String)>,
    /// Port of the first gateway; `None` picks a free one.
    pub gateway_port: Option<u16>,
    /// The `flashsale` binary; `None` uses [`components::flashsale_program`].
    pub flashsale_bin: Option<PathBuf>,
    /// Put Redis, the broker and payment behind fault proxies (see the module docs). Off only to
    /// measure the system without them.
    pub proxies: bool,
    /// Seeds the proxies' randomness (jitter, toxicity draws).
    pub seed: u64,
    /// Run Prometheus, Alertmanager and the exporters beside the system (see
    /// [`crate::monitoring`]); `None`: no monitoring.
    pub monitoring: Option<MonitoringConfig>,
    /// Replicas of Redis, watched by three sentinels ([`replication`]); 0: one Redis, no
    /// Sentinel (the default).
    pub redis_replicas: usize,
    /// Sentinel's settings with replicas; `None`: [`replication::default_settings`].
    pub sentinel: Option<components::SentinelSettings>,
    /// Processes on loopback (the default) or containers ([`placement`]). Containers need the
    /// fault proxies.
    pub runtime: RuntimeKind,
    /// On containers: components run from other images than the ones flashlab builds
    /// (`--image redis=redis:7.2`; [`crate::containers::upstream`]).
    pub images: Vec<(crate::containers::images::Component, String)>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            dir: None,
            gateways: 1,
            processors: 0,
            payment: false,
            service_env: Vec::new(),
            gateway_port: None,
            flashsale_bin: None,
            proxies: true,
            seed: 1,
            monitoring: None,
            redis_replicas: 0,
            sentinel: None,
            runtime: RuntimeKind::Processes,
            images: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("testbed directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("fault proxy: {0}")]
    Proxy(std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("monitoring: {0}")]
    Monitoring(#[from] MonitoringError),
    #[error("deploy: {0}")]
    Deploy(String),
    #[error("containers: {0}")]
    Containers(String),
}

/// The fault proxies and the runtime they run on.
#[derive(Debug)]
struct Proxies {
    redis: FaultProxy,
    broker: FaultProxy,
    payment: Option<FaultProxy>,
    /// With several gateways: one address for clients, spreading connections over the gateways
    /// that accept (a load balancer's part in a rolling restart).
    front: Option<FaultProxy>,
    // Last: the proxies stop before their runtime goes.
    _runtime: ProxyRuntime,
}

#[derive(Debug)]
struct ProxyRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context would panic; this does not wait.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl ProxyRuntime {
    fn new() -> Result<Self, TestbedError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .map_err(TestbedError::Proxy)?;
        Ok(ProxyRuntime(Some(runtime)))
    }

    /// A proxy on `ip` (loopback, or the host's address on the run's network), forwarding
    /// nowhere yet (see [`FaultProxy::set_upstream`]).
    async fn proxy(&self, ip: std::net::IpAddr, seed: u64) -> Result<FaultProxy, TestbedError> {
        let runtime = self.0.as_ref().expect("runtime lives until drop");
        runtime
            .spawn(FaultProxy::start(SocketAddr::new(ip, 0), loopback(0), seed))
            .await
            .map_err(|e| TestbedError::Proxy(std::io::Error::other(e)))?
            .map_err(TestbedError::Proxy)
    }
}

/// A running flash-sale system. See the module docs.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: processes die before their directory is removed.
    monitoring: Option<Monitoring>,
    gateways: Vec<Supervised>,
    processors: Vec<Supervised>,
    payment: Option<Supervised>,
    broker: Supervised,
    /// Before the first Redis: replicas and sentinels stop before the primary they follow.
    replication: Option<Replication>,
    /// The only Redis, or `redis[0]` of a replicated set.
    redis: Supervised,
    proxies: Option<Proxies>,
    /// Which gateways the front proxy sends new connections to (see
    /// [`Testbed::set_gateway_in_rotation`]).
    in_rotation: Vec<bool>,
    root: PathBuf,
    flashsale: PathBuf,
    service_env: Vec<(String, String)>,
    /// Services running another build than the release ([`release`]): by name, the build's
    /// release name and the spec to go back to.
    deployed: std::collections::BTreeMap<String, release::Deployed>,
    /// Processes, or the run's containers (after the components: they go first).
    placement: Placement,
    _temp: Option<tempfile::TempDir>,
}

impl Testbed {
    /// Brings everything up and waits until each component answers its readiness probe.
    pub async fn start(config: TestbedConfig) -> Result<Testbed, TestbedError> {
        // A lab killed with -9 leaves its resource faults' cgroups behind (empty: its processes
        // died with it).
        for dir in crate::cgroups::sweep_leftovers() {
            eprintln!("flashlab: removed {}, left by a lab that is gone", dir.display());
        }
        let (temp, root) = match &config.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("flashlab-")
                    .tempdir()
                    .map_err(|source| TestbedError::Dir { path: "$TMPDIR".into(), source })?;
                let root = temp.path().to_path_buf();
                (Some(temp), root)
            }
        };
        let redis_dir = make_dir(&root.join("redis"))?;
        let broker_dir = make_dir(&root.join("broker"))?;
        let gateway_dir = make_dir(&root.join("gateways"))?;
        make_dir(&root.join("processors"))?;
        let payment_dir = make_dir(&root.join("payment"))?;

        let with_payment = config.payment || config.processors > 0;
        let flashsale = config.flashsale_bin.clone().unwrap_or_else(components::flashsale_program);
        if config.runtime == RuntimeKind::Containers && !config.proxies {
            return Err(TestbedError::Containers("the container runtime runs with the fault proxies".into()));
        }
        if config.runtime == RuntimeKind::Processes && !config.images.is_empty() {
            return Err(TestbedError::Containers(
                "images (--image) are for the container runtime: give --runtime containers".into(),
            ));
        }
        let placement = Placement::new(config.runtime, &flashsale, &config.images).await?;
        let proxy_ip = placement.proxy_ip();
        let proxies = if config.proxies {
            let runtime = ProxyRuntime::new()?;
            let seed = config.seed;
            Some(Proxies {
                redis: runtime.proxy(proxy_ip, seed).await?,
                broker: runtime.proxy(proxy_ip, seed.wrapping_add(1)).await?,
                payment: if with_payment { Some(runtime.proxy(proxy_ip, seed.wrapping_add(2)).await?) } else { None },
                // The lab's own clients' front, on loopback.
                front: if config.gateways > 1 {
                    Some(runtime.proxy(loopback(0).ip(), seed.wrapping_add(3)).await?)
                } else {
                    None
                },
                _runtime: runtime,
            })
        } else {
            None
        };
        let replicated = config.redis_replicas > 0;
        let redis = placement
            .start(port::REDIS, None, &redis_dir, |addr, dir| {
                let announce = match &proxies {
                    Some(p) => {
                        p.redis.set_upstream(addr);
                        p.redis.addr()
                    }
                    None => addr,
                };
                match replicated {
                    true => components::redis_node(0, addr, announce, None, None, dir),
                    false => components::redis(addr, dir),
                }
            })
            .await?;
        if let Some(p) = &proxies {
            // On containers the published port, known once it runs.
            p.redis.set_upstream(redis.addr());
        }
        let replication = if replicated {
            let primary = proxies.as_ref().map_or(redis.addr(), |p| p.redis.addr());
            let mut node_proxies = Vec::new();
            if let Some(p) = &proxies {
                for i in 0..config.redis_replicas {
                    node_proxies.push(p._runtime.proxy(proxy_ip, config.seed.wrapping_add(10 + i as u64)).await?);
                }
            }
            let settings = config.sentinel.clone().unwrap_or_else(replication::default_settings);
            Some(
                Replication::start(&placement, config.redis_replicas, primary, node_proxies, &settings, &redis_dir)
                    .await?,
            )
        } else {
            None
        };
        let broker = placement
            .start(port::BROKER, None, &broker_dir, |addr, dir| match &proxies {
                Some(p) => components::broker(addr, p.broker.addr(), dir),
                None => components::broker(addr, addr, dir),
            })
            .await?;
        if let Some(p) = &proxies {
            p.broker.set_upstream(broker.addr());
        }
        let env = &config.service_env;
        let payment = if with_payment {
            let payment = placement
                .start(port::PAYMENT, None, &payment_dir, |addr, dir| components::payment(&flashsale, addr, env, dir))
                .await?;
            if let Some(proxy) = proxies.as_ref().and_then(|p| p.payment.as_ref()) {
                proxy.set_upstream(payment.addr());
            }
            Some(payment)
        } else {
            None
        };
        let mut testbed = Testbed {
            monitoring: None,
            gateways: Vec::new(),
            processors: Vec::new(),
            payment,
            broker,
            redis,
            replication,
            proxies,
            in_rotation: vec![true; config.gateways],
            root,
            flashsale,
            service_env: config.service_env.clone(),
            deployed: std::collections::BTreeMap::new(),
            placement,
            _temp: temp,
        };
        for _ in 0..config.processors {
            testbed.start_processor().await?;
        }
        let deps = testbed.deps();
        let flashsale = testbed.flashsale.clone();
        for index in 0..config.gateways {
            let fixed = if index == 0 { config.gateway_port } else { None };
            let gateway = testbed
                .placement
                .start(port::GATEWAY, fixed, &gateway_dir, |addr, dir| {
                    components::gateway(index, &flashsale, addr, &deps, env, dir)
                })
                .await?;
            testbed.gateways.push(gateway);
        }
        if let Some(front) = testbed.proxies.as_ref().and_then(|p| p.front.as_ref()) {
            front.set_upstreams(testbed.gateways.iter().map(probe_addr).collect());
            // No gateway takes the connection: the static maintenance page, not a reset.
            front.set_fallback(Some(crate::maintenance::response()));
        }
        if let Some(monitoring) = &config.monitoring {
            let dir = make_dir(&testbed.root.join("monitoring"))?;
            let targets = testbed.scrape_targets();
            // The process exporter finds the broker by an address on its command line: its own
            // on processes; in a container it listens on 0.0.0.0, and what tells this run's
            // broker apart is the address it advertises (its proxy's).
            let broker = match testbed.runtime() {
                RuntimeKind::Processes => testbed.kafka_direct_addr(),
                RuntimeKind::Containers => testbed.kafka_addr(),
            };
            let redis = testbed.redis_direct_addr();
            testbed.monitoring = Some(Monitoring::start(monitoring, &dir, &targets, Some(redis), Some(broker)).await?);
        }
        Ok(testbed)
    }

    /// Where the services connect: through the proxies when there are.
    fn deps(&self) -> SystemAddrs {
        SystemAddrs {
            redis: self.redis_addr(),
            sentinels: self.replication.as_ref().map(Replication::sentinels_for_services).unwrap_or_default(),
            kafka: self.kafka_addr(),
            payment: match self.proxies.as_ref().and_then(|p| p.payment.as_ref()) {
                Some(proxy) => Some(proxy.addr()),
                None => self.payment.as_ref().map(probe_addr),
            },
        }
    }

    /// Where the lab's own tools connect: straight to the components.
    fn direct(&self) -> SystemAddrs {
        SystemAddrs {
            redis: self.redis_direct_addr(),
            // The admin commands follow the primary through the sentinels too (and so reach it
            // through its proxy): an address taken now would be wrong after a failover.
            sentinels: self
                .replication
                .as_ref()
                .map(|r| r.sentinel_addrs().iter().map(SocketAddr::to_string).collect())
                .unwrap_or_default(),
            kafka: self.kafka_direct_addr(),
            payment: self.payment.as_ref().map(probe_addr),
        }
    }

    /// Starts one more processor (it joins the consumer group); returns its index.
    pub async fn start_processor(&mut self) -> Result<usize, TestbedError> {
        let index = self.processors.len();
        let deps = self.deps();
        let dir = self.root.join("processors");
        let processor = self
            .placement
            .start(port::PROCESSOR, None, &dir, |addr, dir| {
                components::processor(index, &self.flashsale, addr, &deps, &self.service_env, dir)
            })
            .await?;
        self.processors.push(processor);
        if let Some(monitoring) = &self.monitoring {
            monitoring.set_targets(&self.scrape_targets())?;
        }
        Ok(index)
    }

    /// What Prometheus scrapes of the system itself: every gateway, processor and payment's own
    /// `/metrics`, at their own addresses.
    fn scrape_targets(&self) -> Vec<ScrapeTarget> {
        let mut targets: Vec<ScrapeTarget> = self
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| ScrapeTarget {
                job: "gateway",
                instance: format!("gateway[{i}]"),
                addr: probe_addr(g),
                release: self.release_of(g.name()),
            })
            .collect();
        targets.extend(self.processors.iter().enumerate().map(|(i, p)| ScrapeTarget {
            job: "processor",
            instance: format!("processor[{i}]"),
            addr: probe_addr(p),
            release: self.release_of(p.name()),
        }));
        if let Some(payment) = &self.payment {
            targets.push(ScrapeTarget {
                job: "payment",
                instance: "payment".into(),
                addr: probe_addr(payment),
                release: None,
            });
        }
        targets
    }

    /// The process id of every component running now (`redis`, `processor[1]`…, then the
    /// monitoring's), for what each one uses (`/proc`). A restarted component has a new one:
    /// ask again rather than keep these.
    pub fn pids(&mut self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for target in self.targets() {
            if let Some(pid) = self.process(target).and_then(|p| p.pid()) {
                out.push((target.to_string(), pid));
            }
        }
        if let Some(m) = &self.monitoring {
            out.extend(m.pids());
        }
        out
    }

    /// Prometheus, Alertmanager and the lab's receiver, when the testbed runs them.
    pub fn monitoring(&self) -> Option<&Monitoring> {
        self.monitoring.as_ref()
    }

    /// Processes or containers.
    pub fn runtime(&self) -> RuntimeKind {
        self.placement.kind()
    }

    /// The run's Docker network, on containers.
    pub fn network(&self) -> Option<&str> {
        self.placement.network()
    }

    /// The directory holding every component's data and log.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Where the system's services reach Redis (the primary, as last named by the sentinels):
    /// its proxy when there is one.
    pub fn redis_addr(&self) -> SocketAddr {
        match self.proxy(Target::Redis) {
            Some(p) => p.addr(),
            None => self.redis_direct_addr(),
        }
    }

    /// Where Redis (the primary, as last named by the sentinels) itself listens.
    pub fn redis_direct_addr(&self) -> SocketAddr {
        probe_addr(self.process_ref(self.resolve(Target::Redis)).unwrap_or(&self.redis))
    }

    /// With replicated Redis, each node as (the address it announces — its proxy's — and where
    /// it listens itself): the lab talks to a node directly, so that a fault on its network
    /// never slows the lab's own commands. Empty without replicas.
    pub fn redis_nodes(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let Some(replication) = &self.replication else { return Vec::new() };
        (0..=replication.replicas.len())
            .filter_map(|i| {
                let process = self.process_ref(Target::RedisNode(i))?;
                let direct = probe_addr(process);
                Some((self.proxy(Target::RedisNode(i)).map_or(direct, FaultProxy::addr), direct))
            })
            .collect()
    }

    /// Whether Redis is a replicated set with Sentinel.
    pub fn replicated(&self) -> bool {
        self.replication.is_some()
    }

    /// `redis` → the node that is the primary (as last named by the sentinels) when Redis is
    /// replicated; any other target as it is.
    pub fn resolve(&self, target: Target) -> Target {
        match (&self.replication, target) {
            (Some(r), Target::Redis) => Target::RedisNode(r.primary),
            _ => target,
        }
    }

    /// Asks the sentinels which node is the primary now and remembers it; returns its index
    /// (`None`: no sentinel answered, or it named no node of this set — the last answer stays).
    pub async fn refresh_primary(&mut self) -> Option<usize> {
        let replication = self.replication.as_ref()?;
        let named = replication::ask_primary(&replication.sentinel_addrs()).await?;
        let node = (0..=replication.replicas.len()).find(|&i| {
            let target = Target::RedisNode(i);
            self.proxy(target).map(FaultProxy::addr) == Some(named)
                || self.process_ref(target).map(Supervised::addr) == Some(named)
        })?;
        if let Some(r) = self.replication.as_mut() {
            r.primary = node;
        }
        Some(node)
    }

    /// Where the system's services reach the broker (the address it advertises): its proxy when
    /// there is one.
    pub fn kafka_addr(&self) -> SocketAddr {
        match &self.proxies {
            Some(p) => p.broker.addr(),
            None => self.kafka_direct_addr(),
        }
    }

    /// Where the broker itself listens.
    pub fn kafka_direct_addr(&self) -> SocketAddr {
        probe_addr(&self.broker)
    }

    /// The fault proxy in front of `target` (a Redis node, the broker or payment), if any.
    pub fn proxy(&self, target: Target) -> Option<&FaultProxy> {
        let proxies = self.proxies.as_ref()?;
        match self.resolve(target) {
            Target::Redis | Target::RedisNode(0) => Some(&proxies.redis),
            Target::RedisNode(i) => self.replication.as_ref()?.proxies.get(i - 1),
            // A link is toxics on every node's proxy: see [`Testbed::link`].
            Target::RedisLink(_) => None,
            Target::Broker => Some(&proxies.broker),
            Target::Payment => proxies.payment.as_ref(),
            Target::Sentinel(_) | Target::Gateway(_) | Target::Processor(_) => None,
        }
    }

    /// `replication[N]`: every Redis node's proxy — a toxic on those proxies for the address
    /// replica N replicates from ([`Testbed::link_source`]) hits its replication whichever node
    /// is the primary. `None` for any other target, or without proxies.
    pub fn link(&self, target: Target) -> Option<Vec<&FaultProxy>> {
        let Target::RedisLink(i) = target else { return None };
        let replication = self.replication.as_ref()?;
        if i == 0 || i > replication.replicas.len() {
            return None;
        }
        let proxies = self.proxies.as_ref()?;
        Some(std::iter::once(&proxies.redis).chain(replication.proxies.iter()).collect())
    }

    /// The address replica N (of `replication[N]`) opens its replication connection from: on
    /// loopback one of its own ([`replication::replica_source`]); in a container its address on
    /// the run's network, asked of the engine now (a container started again may have another).
    /// `Err`: why there is none.
    pub async fn link_source(&self, target: Target) -> Result<std::net::IpAddr, String> {
        let Target::RedisLink(i) = target else { return Err(format!("{target} is not a replication link")) };
        let node = self.process_ref(Target::RedisNode(i)).ok_or_else(|| format!("no replica redis[{i}]"))?;
        match (node.container(), self.network()) {
            (Some(container), Some(network)) => container
                .ip_on(network)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("redis[{i}] has no address on {network}: is it running?")),
            _ => Ok(replication::replica_source(i)),
        }
    }

    /// The process behind `target`, if the testbed has it.
    pub fn process(&mut self, target: Target) -> Option<&mut Supervised> {
        match self.resolve(target) {
            Target::Redis | Target::RedisNode(0) => Some(&mut self.redis),
            Target::RedisNode(i) => self.replication.as_mut()?.replicas.get_mut(i - 1),
            Target::Sentinel(i) => self.replication.as_mut()?.sentinels.get_mut(i),
            Target::RedisLink(_) => None,
            Target::Broker => Some(&mut self.broker),
            Target::Payment => self.payment.as_mut(),
            Target::Gateway(i) => self.gateways.get_mut(i),
            Target::Processor(i) => self.processors.get_mut(i),
        }
    }

    fn process_ref(&self, target: Target) -> Option<&Supervised> {
        match self.resolve(target) {
            Target::Redis | Target::RedisNode(0) => Some(&self.redis),
            Target::RedisNode(i) => self.replication.as_ref()?.replicas.get(i - 1),
            Target::Sentinel(i) => self.replication.as_ref()?.sentinels.get(i),
            Target::RedisLink(_) => None,
            Target::Broker => Some(&self.broker),
            Target::Payment => self.payment.as_ref(),
            Target::Gateway(i) => self.gateways.get(i),
            Target::Processor(i) => self.processors.get(i),
        }
    }

    /// Every component of this testbed, in start order (with replicated Redis each node and
    /// sentinel by its number; `redis` names the primary besides).
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = match &self.replication {
            None => vec![Target::Redis],
            Some(r) => (0..=r.replicas.len())
                .map(Target::RedisNode)
                .chain((0..r.sentinels.len()).map(Target::Sentinel))
                .chain((1..=r.replicas.len()).map(Target::RedisLink))
                .collect(),
        };
        targets.push(Target::Broker);
        if self.payment.is_some() {
            targets.push(Target::Payment);
        }
        targets.extend((0..self.processors.len()).map(Target::Processor));
        targets.extend((0..self.gateways.len()).map(Target::Gateway));
        targets
    }

    /// The readiness probe of `target`, aimed at the address its clients use (through its
    /// proxy when it has one): what a client would see now.
    pub fn client_probe(&self, target: Target) -> Option<Probe> {
        let addr = self.proxy(target).map(FaultProxy::addr);
        let process = self.process_ref(target)?;
        Some(match (process.spec().probe.clone(), addr) {
            (probe, None) => probe,
            (Probe::RedisPing(_) | Probe::RedisReplicaSynced(_), Some(a)) => Probe::RedisPing(a),
            (Probe::KafkaApiVersions(_), Some(a)) => Probe::KafkaApiVersions(a),
            (Probe::HttpOk(_, path), Some(a)) => Probe::HttpOk(a, path),
        })
    }

    pub fn gateway_addr(&self, index: usize) -> SocketAddr {
        probe_addr(&self.gateways[index])
    }

    /// Where clients send orders: the front over every gateway when there are several (and
    /// proxies), else gateway 0.
    pub fn front_url(&self) -> String {
        match self.proxies.as_ref().and_then(|p| p.front.as_ref()) {
            Some(front) => format!("http://{}", front.addr()),
            None => self.gateway_url(0),
        }
    }

    /// `http://127.0.0.1:PORT` of gateway `index`.
    pub fn gateway_url(&self, index: usize) -> String {
        format!("http://{}", self.gateway_addr(index))
    }

    pub fn redis(&mut self) -> &mut Supervised {
        &mut self.redis
    }

    pub fn broker(&mut self) -> &mut Supervised {
        &mut self.broker
    }

    pub fn gateway(&mut self, index: usize) -> &mut Supervised {
        &mut self.gateways[index]
    }

    /// Takes gateway `index` out of the front proxy's rotation (new connections go to the
    /// others) or puts it back — a load balancer acting on readiness. With every gateway out,
    /// all are put back (the front fails open, as most load balancers do). Without a front
    /// (one gateway, or no proxies) nothing changes.
    pub fn set_gateway_in_rotation(&mut self, index: usize, in_rotation: bool) {
        let Some(slot) = self.in_rotation.get_mut(index) else { return };
        *slot = in_rotation;
        let Some(front) = self.proxies.as_ref().and_then(|p| p.front.as_ref()) else { return };
        let mut addrs: Vec<SocketAddr> =
            self.gateways.iter().zip(&self.in_rotation).filter(|(_, r)| **r).map(|(g, _)| probe_addr(g)).collect();
        if addrs.is_empty() {
            addrs = self.gateways.iter().map(probe_addr).collect();
        }
        front.set_upstreams(addrs);
    }

    /// The gateways in the front proxy's rotation.
    pub fn gateways_in_rotation(&self) -> Vec<usize> {
        self.in_rotation.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect()
    }

    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// `http://127.0.0.1:PORT` of the payment provider itself (not its proxy), if it runs: the
    /// lab's control endpoint.
    pub fn payment_url(&self) -> Option<String> {
        self.payment.as_ref().map(|p| format!("http://{}", probe_addr(p)))
    }

    pub fn payment(&mut self) -> Option<&mut Supervised> {
        self.payment.as_mut()
    }

    /// Where processor `index` serves `/metrics` and `/health`.
    pub fn processor_addr(&self, index: usize) -> SocketAddr {
        probe_addr(&self.processors[index])
    }

    pub fn processor(&mut self, index: usize) -> &mut Supervised {
        &mut self.processors[index]
    }

    pub fn processor_count(&self) -> usize {
        self.processors.len()
    }

    /// The environment an admin command (`flashsale stock|dlq|reconcile|backup|restore`) needs
    /// to reach this system — directly, not through the proxies (Kafka clients still follow the
    /// broker's advertised address, its proxy, after the bootstrap).
    pub fn admin_env(&self) -> Vec<(String, String)> {
        self.direct().env()
    }

    /// The extra environment every flash-sale service was started with.
    pub fn service_env(&self) -> &[(String, String)] {
        &self.service_env
    }

    /// The `flashsale` binary the testbed runs.
    pub fn flashsale_bin(&self) -> &Path {
        &self.flashsale
    }

    /// Stops everything gracefully, in dependency order; the first error is returned after every
    /// component was asked to stop.
    pub async fn stop(mut self) -> Result<(), TestbedError> {
        self.stop_all().await
    }

    /// [`Testbed::stop`] for a testbed shared behind a lock; afterwards nothing runs.
    pub async fn stop_all(&mut self) -> Result<(), TestbedError> {
        if let Some(proxies) = &self.proxies {
            // Whatever fault is still set, the shutdown goes through clean connections.
            let replicas = self.replication.iter().flat_map(|r| r.proxies.iter());
            for proxy in [Some(&proxies.redis), Some(&proxies.broker), proxies.payment.as_ref()]
                .into_iter()
                .flatten()
                .chain(replicas)
            {
                proxy.heal();
                proxy.set_down(false);
            }
        }
        let mut first_error: Option<TestbedError> = None;
        // The observers first: Prometheus would page about a system being shut down on purpose.
        if let Some(monitoring) = &mut self.monitoring {
            if let Err(e) = monitoring.stop().await {
                first_error.get_or_insert(e.into());
            }
        }
        for gateway in &mut self.gateways {
            if let Err(e) = gateway.stop().await {
                first_error.get_or_insert(e.into());
            }
        }
        for processor in &mut self.processors {
            if let Err(e) = processor.stop().await {
                first_error.get_or_insert(e.into());
            }
        }
        if let Some(payment) = &mut self.payment {
            if let Err(e) = payment.stop().await {
                first_error.get_or_insert(e.into());
            }
        }
        // The sentinels first (they would fail over a primary being shut down), then the
        // replicas.
        if let Some(replication) = &mut self.replication {
            for process in replication.sentinels.iter_mut().chain(replication.replicas.iter_mut()) {
                if let Err(e) = process.stop().await {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        for process in [&mut self.broker, &mut self.redis] {
            if let Err(e) = process.stop().await {
                first_error.get_or_insert(e.into());
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn make_dir(path: &Path) -> Result<PathBuf, TestbedError> {
    std::fs::create_dir_all(path).map_err(|source| TestbedError::Dir { path: path.display().to_string(), source })?;
    Ok(path.to_path_buf())
}

/// The address a component serves on: the one its readiness probe checks.
fn probe_addr(process: &Supervised) -> SocketAddr {
    process.addr()
}

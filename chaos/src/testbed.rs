//! The [`Testbed`]: the flash-sale system and its real dependencies, on loopback.
//!
//! Starts `redis-server` (AOF, `appendfsync everysec`), the `tansu` broker, the payment provider,
//! N processors and N gateways, each on a free port with its data in its own directory, and stops
//! them in dependency order: gateways first (they drain and flush to the broker), then the
//! processors (they finish the orders in hand), then payment, the broker and Redis. Dropping a
//! `Testbed` kills whatever still runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::components::{self, SystemAddrs};
use crate::ports::{free_port, loopback};
use crate::process::{ProcessError, ProcessSpec, Supervised};

/// How many times a component is started on a fresh port when its start fails (another process
/// can take a free port between our check and the child's bind).
const START_ATTEMPTS: usize = 3;

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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("testbed directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("no free port: {0}")]
    Port(std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// A running flash-sale system. See the module docs.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: processes die before their directory is removed.
    gateways: Vec<Supervised>,
    processors: Vec<Supervised>,
    payment: Option<Supervised>,
    broker: Supervised,
    redis: Supervised,
    root: PathBuf,
    flashsale: PathBuf,
    service_env: Vec<(String, String)>,
    _temp: Option<tempfile::TempDir>,
}

impl Testbed {
    /// Brings everything up and waits until each component answers its readiness probe.
    pub async fn start(config: TestbedConfig) -> Result<Testbed, TestbedError> {
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

        let redis = start_on_free_port(|addr| components::redis(addr, &redis_dir)).await?;
        let broker = start_on_free_port(|addr| components::broker(addr, addr, &broker_dir)).await?;
        let flashsale = config.flashsale_bin.clone().unwrap_or_else(components::flashsale_program);
        let env = &config.service_env;
        let payment = if config.payment || config.processors > 0 {
            Some(start_on_free_port(|addr| components::payment(&flashsale, addr, env, &payment_dir)).await?)
        } else {
            None
        };
        let mut testbed = Testbed {
            gateways: Vec::new(),
            processors: Vec::new(),
            payment,
            broker,
            redis,
            root,
            flashsale,
            service_env: config.service_env.clone(),
            _temp: temp,
        };
        for _ in 0..config.processors {
            testbed.start_processor().await?;
        }
        let deps = testbed.deps();
        let flashsale = testbed.flashsale.clone();
        for index in 0..config.gateways {
            let spec = |addr| components::gateway(index, &flashsale, addr, &deps, env, &gateway_dir);
            let gateway = match (index, config.gateway_port) {
                (0, Some(port)) => Supervised::start(spec(loopback(port))).await?,
                _ => start_on_free_port(spec).await?,
            };
            testbed.gateways.push(gateway);
        }
        Ok(testbed)
    }

    fn deps(&self) -> SystemAddrs {
        SystemAddrs {
            redis: self.redis_addr(),
            kafka: self.kafka_addr(),
            payment: self.payment.as_ref().map(probe_addr),
        }
    }

    /// Starts one more processor (it joins the consumer group); returns its index.
    pub async fn start_processor(&mut self) -> Result<usize, TestbedError> {
        let index = self.processors.len();
        let deps = self.deps();
        let dir = self.root.join("processors");
        let spec = |addr| components::processor(index, &self.flashsale, addr, &deps, &self.service_env, &dir);
        let processor = start_on_free_port(spec).await?;
        self.processors.push(processor);
        Ok(index)
    }

    /// The directory holding every component's data and log.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn redis_addr(&self) -> SocketAddr {
        probe_addr(&self.redis)
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        probe_addr(&self.broker)
    }

    pub fn gateway_addr(&self, index: usize) -> SocketAddr {
        probe_addr(&self.gateways[index])
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

    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// `http://127.0.0.1:PORT` of the payment provider, if it runs.
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
    /// to reach this system.
    pub fn admin_env(&self) -> Vec<(String, String)> {
        self.deps().env()
    }

    /// The `flashsale` binary the testbed runs.
    pub fn flashsale_bin(&self) -> &Path {
        &self.flashsale
    }

    /// Stops everything gracefully, in dependency order; the first error is returned after every
    /// component was asked to stop.
    pub async fn stop(mut self) -> Result<(), TestbedError> {
        let mut first_error = None;
        for gateway in &mut self.gateways {
            if let Err(e) = gateway.stop().await {
                first_error.get_or_insert(e);
            }
        }
        for processor in &mut self.processors {
            if let Err(e) = processor.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(payment) = &mut self.payment {
            if let Err(e) = payment.stop().await {
                first_error.get_or_insert(e);
            }
        }
        for process in [&mut self.broker, &mut self.redis] {
            if let Err(e) = process.stop().await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
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
    match process.spec().probe {
        crate::probe::Probe::RedisPing(addr)
        | crate::probe::Probe::KafkaApiVersions(addr)
        | crate::probe::Probe::HttpOk(addr, _) => addr,
    }
}

async fn start_on_free_port(spec_for: impl Fn(SocketAddr) -> ProcessSpec) -> Result<Supervised, TestbedError> {
    let mut attempt = 1;
    loop {
        let addr = loopback(free_port().map_err(TestbedError::Port)?);
        match Supervised::start(spec_for(addr)).await {
            Ok(process) => return Ok(process),
            Err(ProcessError::ExitedEarly { name, .. }) if attempt < START_ATTEMPTS => {
                tracing::warn!(%name, %addr, attempt, "exited while starting; trying another port");
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

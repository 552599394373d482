//! The flash-sale system on containers: Redis, the broker, the payment provider, N processors and
//! N gateways from the images (`flashlab images build`), on the run's network, each finding the
//! others by name (`flashlab-RUN-redis:6379`, `flashlab-RUN-broker:9092`,
//! `http://flashlab-RUN-payment:8081`); the lab reaches each through its port published on
//! 127.0.0.1. No fault proxies, monitoring or faults yet (docs/runtimes.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::images::Component;
use super::runtime::{Container, ContainerSpec, Runtime, RuntimeError};
use crate::probe::Probe;

const REDIS_PORT: u16 = 6379;
const BROKER_PORT: u16 = 9092;
const PAYMENT_PORT: u16 = 8081;
const PROCESSOR_PORT: u16 = 9090;
const GATEWAY_PORT: u16 = 8080;
/// How long a service may take to finish what it holds on SIGTERM (as on processes).
const SERVICE_GRACE: Duration = Duration::from_secs(35);

/// What to bring up.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// The run id: names the network and every container.
    pub run: String,
    /// Where the containers' logs go when they are removed.
    pub dir: PathBuf,
    pub processors: usize,
    pub gateways: usize,
    /// Extra environment for every flash-sale service.
    pub service_env: Vec<(String, String)>,
    /// The first gateway's published port; `None` picks a free one.
    pub gateway_port: Option<u16>,
}

/// The running system. Dropping it removes every container and the network.
#[derive(Debug)]
pub struct System {
    // Field order is drop order: the services before what they use, the runtime last.
    gateways: Vec<Container>,
    processors: Vec<Container>,
    payment: Container,
    broker: Container,
    redis: Container,
    runtime: Runtime,
}

impl System {
    /// Starts every component in dependency order, each ready (its probe on its published port)
    /// before the next.
    pub async fn start(config: &SystemConfig) -> Result<System, RuntimeError> {
        let runtime = Runtime::start(&config.run).await?;
        let host = |name: &str| format!("flashlab-{}-{name}", config.run);
        let log = |name: &str| config.dir.join(format!("{name}.log"));
        let redis = runtime
            .start_container(ContainerSpec {
                name: "redis".into(),
                image: Component::Redis.local_image(),
                cmd: crate::components::redis_args(
                    SocketAddr::from(([0, 0, 0, 0], REDIS_PORT)),
                    super::images::DATA_DIR,
                ),
                env: Vec::new(),
                port: REDIS_PORT,
                host_port: None,
                probe: Probe::RedisPing,
                ready_timeout: Duration::from_secs(30),
                log_path: log("redis"),
            })
            .await?;
        let broker = runtime
            .start_container(ContainerSpec {
                name: "broker".into(),
                image: Component::Broker.local_image(),
                cmd: vec![
                    "broker".into(),
                    "--listener-url".into(),
                    format!("tcp://0.0.0.0:{BROKER_PORT}"),
                    "--advertised-listener-url".into(),
                    format!("tcp://{}:{BROKER_PORT}", host("broker")),
                    "--storage-engine".into(),
                    "sqlite://broker.db".into(),
                ],
                env: vec![("RUST_LOG".into(), std::env::var("FLASHLAB_BROKER_LOG").unwrap_or_else(|_| "warn".into()))],
                port: BROKER_PORT,
                host_port: None,
                probe: Probe::KafkaApiVersions,
                ready_timeout: Duration::from_secs(30),
                log_path: log("broker"),
            })
            .await?;
        let deps = [
            ("REDIS_ADDR".to_string(), format!("{}:{REDIS_PORT}", host("redis"))),
            ("KAFKA_ADDR".to_string(), format!("{}:{BROKER_PORT}", host("broker"))),
            ("PAYMENT_URL".to_string(), format!("http://{}:{PAYMENT_PORT}", host("payment"))),
        ];
        let service = |name: String, command: &str, addr_var: &str, port: u16, probe: fn(SocketAddr) -> Probe| {
            let mut env = vec![(addr_var.to_string(), format!("0.0.0.0:{port}"))];
            env.extend(deps.iter().cloned());
            env.extend(config.service_env.iter().cloned());
            ContainerSpec {
                log_path: log(&name),
                name,
                image: Component::Flashsale.local_image(),
                cmd: vec![command.into()],
                env,
                port,
                host_port: None,
                probe,
                ready_timeout: Duration::from_secs(60),
            }
        };
        let health = |a| Probe::HttpOk(a, "/health");
        let payment =
            runtime.start_container(service("payment".into(), "payment", "PAYMENT_ADDR", PAYMENT_PORT, health)).await?;
        let mut processors = Vec::new();
        for i in 0..config.processors {
            let spec = service(format!("processor-{i}"), "processor", "PROCESSOR_METRICS_ADDR", PROCESSOR_PORT, health);
            processors.push(runtime.start_container(spec).await?);
        }
        let mut gateways = Vec::new();
        for i in 0..config.gateways {
            let mut spec = service(format!("gateway-{i}"), "gateway", "GATEWAY_ADDR", GATEWAY_PORT, |a| {
                Probe::HttpOk(a, "/readyz")
            });
            if i == 0 {
                spec.host_port = config.gateway_port;
            }
            gateways.push(runtime.start_container(spec).await?);
        }
        Ok(System { gateways, processors, payment, broker, redis, runtime })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn gateway_url(&self, i: usize) -> String {
        format!("http://{}", self.gateways[i].addr())
    }

    pub fn processors(&self) -> &[Container] {
        &self.processors
    }

    pub fn payment(&self) -> &Container {
        &self.payment
    }

    pub fn redis(&self) -> &Container {
        &self.redis
    }

    pub fn broker(&self) -> &Container {
        &self.broker
    }

    /// A `flashsale` admin command (`stock set 101 5`), run in the payment provider's
    /// container, where it finds Redis and the broker by name.
    pub async fn admin(&self, args: &[&str]) -> Result<String, super::images::ImageError> {
        let env = [
            ("REDIS_ADDR".to_string(), self.redis.name_port(REDIS_PORT)),
            ("KAFKA_ADDR".to_string(), self.broker.name_port(BROKER_PORT)),
        ];
        let mut command = vec!["flashsale"];
        command.extend(args);
        self.payment.exec(&env, &command).await
    }

    /// Stops the services in dependency order (gateways drain, processors finish what they
    /// hold), then removes every container and the network; their logs are kept in the run's
    /// directory.
    pub async fn stop(mut self) -> Result<(), RuntimeError> {
        for c in self.gateways.iter().chain(&self.processors).chain([&self.payment]) {
            c.stop(SERVICE_GRACE).await?;
        }
        for c in [&self.broker, &self.redis] {
            c.stop(Duration::from_secs(10)).await?;
        }
        for c in self.gateways.iter().chain(&self.processors).chain([&self.payment, &self.broker, &self.redis]) {
            c.save_log();
        }
        self.gateways.clear();
        self.processors.clear();
        self.runtime.remove_all()?;
        Ok(())
    }
}

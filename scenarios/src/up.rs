//! `flashlab up`: the whole flash-sale system — Redis, the broker, the payment provider, the
//! processors and the gateway, the first three behind fault proxies — until Ctrl-C or SIGTERM,
//! as processes on loopback or (`--runtime containers`) in containers of a Docker network of its
//! own, each component's port published on 127.0.0.1. It owns a fault injector reachable through
//! its control socket (`flashlab fault ...` in a second shell) and records faults in
//! `DIR/events.jsonl`. On the way out every fault in force is healed before the components stop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{bail, Context};
use chaos::control::ControlSocket;
use chaos::{EventLog, Injector, Testbed, TestbedConfig};

/// What `flashlab up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Port of the gateway; 0 picks a free one.
    pub gateway_port: u16,
    /// Where the components keep data and logs; `None`: a temporary directory, removed at exit.
    pub dir: Option<PathBuf>,
    /// Initial stock, `(item, quantity)`.
    pub stock: Vec<(String, u64)>,
    /// How many processors.
    pub processors: usize,
    /// The control socket for `flashlab fault`.
    pub control: PathBuf,
    /// Seeds the fault proxies' randomness.
    pub seed: u64,
    /// Put Redis, the broker and payment behind fault proxies.
    pub proxies: bool,
    /// Run Prometheus, Alertmanager and the exporters (and with which rules and routing).
    pub monitoring: Option<chaos::monitoring::MonitoringConfig>,
    /// Run the supervisor with these settings.
    pub supervisor: Option<chaos::supervisor::SupervisorConfig>,
    /// Processes on loopback or containers.
    pub runtime: chaos::testbed::RuntimeKind,
    /// On containers: components run from other images (`--image redis=redis:7.2`).
    pub images: Vec<(chaos::containers::images::Component, String)>,
}

/// Parses `ITEM=QTY`.
pub fn parse_stock(s: &str) -> Result<(String, u64), String> {
    let (item, qty) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected ITEM=QTY, e.g. 101=100"))?;
    let qty = qty.parse().map_err(|_| format!("{s:?}: quantity must be a whole number ≥ 0"))?;
    Ok((item.to_string(), qty))
}

/// Runs until `stop` resolves, then stops everything in order.
pub async fn up(options: UpOptions, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    if let Some(dir) = &options.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--dir {}", dir.display()))?;
    }
    // Bound first: a second lab on the same socket is refused before anything starts.
    let control = ControlSocket::bind(&options.control).await?;
    let config = TestbedConfig {
        dir: options.dir.clone(),
        gateways: 1,
        processors: options.processors,
        payment: true,
        gateway_port: (options.gateway_port != 0).then_some(options.gateway_port),
        seed: options.seed,
        proxies: options.proxies,
        monitoring: options.monitoring.clone(),
        runtime: options.runtime,
        images: options.images.clone(),
        ..TestbedConfig::default()
    };
    eprintln!(
        "starting redis, broker, payment, {} processor(s) and the gateway{} on {} ...",
        options.processors,
        if options.monitoring.is_some() { ", prometheus, alertmanager and the exporters" } else { "" },
        options.runtime
    );
    let testbed = Testbed::start(config).await.context("bringing up the system")?;
    for (item, qty) in &options.stock {
        set_stock(&testbed, item, *qty).await?;
    }
    let gateway = testbed.gateway_url(0);
    match testbed.network() {
        Some(network) => println!(
            "flash-sale system up on containers (network {network}; data and logs in {}):",
            testbed.dir().display()
        ),
        None => println!("flash-sale system up (data and logs in {}):", testbed.dir().display()),
    }
    println!("  gateway  {gateway}   (/buy /orders/ID /health /metrics)");
    for i in 0..testbed.processor_count() {
        println!("  processor[{i}] http://{}   (/metrics /health)", testbed.processor_addr(i));
    }
    if let Some(url) = testbed.payment_url() {
        println!("  payment  {url}   (/ledger /control /metrics)");
    }
    if options.proxies {
        println!("  redis    {}   (fault proxy; redis itself {})", testbed.redis_addr(), testbed.redis_direct_addr());
        println!("  kafka    {}   (fault proxy; broker itself {})", testbed.kafka_addr(), testbed.kafka_direct_addr());
    } else {
        println!("  redis    {}", testbed.redis_addr());
        println!("  kafka    {}", testbed.kafka_addr());
    }
    if let Some(monitoring) = testbed.monitoring() {
        println!("  prometheus   {}   (/graph /alerts /targets)", monitoring.prometheus_url());
        println!(
            "  alertmanager {}   (notifications also in {})",
            monitoring.alertmanager_url(),
            testbed.dir().join("monitoring/notifications.jsonl").display()
        );
    }
    for (item, qty) in &options.stock {
        println!("  stock    {item} = {qty}");
    }
    println!("take an order:");
    println!(
        "  curl -i -X POST {gateway}/buy -H 'Content-Type: application/json' \\\n    -d '{{\"user_id\":\"u1\",\"item_id\":\"101\",\"amount\":1,\"request_id\":\"order-1\"}}'"
    );
    let env: Vec<String> = testbed.admin_env().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("admin commands (flashsale stock|dlq|reconcile|backup|restore) need:");
    println!("  export {}", env.join(" "));
    let events_path = testbed.dir().join("events.jsonl");
    let events = EventLog::to_file(&events_path).with_context(|| format!("{}", events_path.display()))?;
    let testbed = Arc::new(tokio::sync::Mutex::new(testbed));
    let injector = Injector::new(testbed.clone(), events.clone());
    let supervisor = match &options.supervisor {
        Some(config) => {
            config.validate().map_err(|e| anyhow::anyhow!("supervisor: {e}"))?;
            injector.set_supervised(true);
            println!(
                "supervisor on: services restarted on exit (back-off {:?} doubling to {:?}), liveness every {:?}, readiness every {:?}",
                config.back_off, config.back_off_max, config.liveness_period, config.readiness_period
            );
            Some(chaos::supervisor::Supervisor::start(testbed.clone(), injector.clone(), events, config.clone()).await)
        }
        None => None,
    };
    println!("inject faults from another shell (events in {}):", events_path.display());
    println!("  control  {}", control.path().display());
    println!("  flashlab fault --control {} latency redis 200ms --jitter 50ms --for 60s", control.path().display());
    println!("Ctrl-C heals every fault and stops everything.");
    tokio::select! {
        () = control.serve(injector.clone()) => {}
        () = stop => {}
    }
    // The control socket is closed (its file removed) here: nobody injects while we heal, and
    // the supervisor restarts nothing while the lab stops it.
    drop(supervisor);
    let healed = injector.heal_all("lab stopping").await;
    for report in &healed {
        eprintln!("healed #{} {} ({})", report.id, report.description, report.check.observed);
    }
    eprintln!("stopping: gateway drains, processors finish, then payment, broker, redis ...");
    testbed.lock().await.stop_all().await.context("stopping the system")?;
    eprintln!("stopped.");
    Ok(())
}

/// `flashsale stock set ITEM QTY` against the testbed's Redis.
async fn set_stock(testbed: &Testbed, item: &str, qty: u64) -> anyhow::Result<()> {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(testbed.flashsale_bin())
            .args(["stock", "set", item, &qty.to_string()])
            .envs(testbed.admin_env())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("flashsale stock set: no answer within 10 s")?
    .context("running flashsale stock set")?;
    if !output.status.success() {
        bail!("--stock {item}={qty}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

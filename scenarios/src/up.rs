//! `flashlab up`: Redis, the broker and the gateway on loopback, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use chaos::components::flashsale_program;
use chaos::{Testbed, TestbedConfig};

/// What `flashlab up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Port of the gateway; 0 picks a free one.
    pub gateway_port: u16,
    /// Where the components keep data and logs; `None`: a temporary directory, removed at exit.
    pub dir: Option<PathBuf>,
    /// Initial stock, `(item, quantity)`.
    pub stock: Vec<(String, u64)>,
}

/// Parses `ITEM=QTY`.
pub fn parse_stock(s: &str) -> Result<(String, u64), String> {
    let (item, qty) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ITEM=QTY, e.g. 101=100"))?;
    let qty = qty
        .parse()
        .map_err(|_| format!("{s:?}: quantity must be a whole number ≥ 0"))?;
    Ok((item.to_string(), qty))
}

/// Runs until `stop` resolves, then stops everything in order.
pub async fn up(
    options: UpOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(dir) = &options.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--dir {}", dir.display()))?;
    }
    let config = TestbedConfig {
        dir: options.dir.clone(),
        gateways: 1,
        gateway_port: (options.gateway_port != 0).then_some(options.gateway_port),
        ..TestbedConfig::default()
    };
    eprintln!("starting redis, broker and gateway ...");
    let testbed = Testbed::start(config)
        .await
        .context("bringing up the system")?;
    for (item, qty) in &options.stock {
        set_stock(&testbed, item, *qty).await?;
    }
    let gateway = testbed.gateway_url(0);
    println!(
        "flash-sale system up (data and logs in {}):",
        testbed.dir().display()
    );
    println!("  gateway  {gateway}   (/buy /orders/ID /health /metrics)");
    println!("  redis    {}", testbed.redis_addr());
    println!("  kafka    {}", testbed.kafka_addr());
    for (item, qty) in &options.stock {
        println!("  stock    {item} = {qty}");
    }
    println!("take an order:");
    println!(
        "  curl -i -X POST {gateway}/buy -H 'Content-Type: application/json' \\\n    -d '{{\"user_id\":\"u1\",\"item_id\":\"101\",\"amount\":1,\"request_id\":\"order-1\"}}'"
    );
    println!("Ctrl-C stops everything.");
    stop.await;
    eprintln!("stopping: gateway drains, then broker, then redis ...");
    testbed.stop().await.context("stopping the system")?;
    eprintln!("stopped.");
    Ok(())
}

/// `flashsale stock set ITEM QTY` against the testbed's Redis.
async fn set_stock(testbed: &Testbed, item: &str, qty: u64) -> anyhow::Result<()> {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(flashsale_program())
            .args(["stock", "set", item, &qty.to_string()])
            .env("REDIS_ADDR", testbed.redis_addr().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("flashsale stock set: no answer within 10 s")?
    .context("running flashsale stock set")?;
    if !output.status.success() {
        bail!(
            "--stock {item}={qty}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

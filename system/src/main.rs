//! `flashsale`: the Flash Sale Engine's services and admin commands. Configuration comes from the
//! environment (see the README); arguments only pick what to run.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flashsale::config::{Env, GatewayConfig};
use flashsale::redis_conn::Redis;
use flashsale::{gateway, inventory, logging, shutdown};

#[derive(Parser)]
#[command(name = "flashsale", version, about = "The Flash Sale Engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The HTTP gateway: POST /buy, GET /orders/{id}, /health, /metrics (GATEWAY_ADDR).
    Gateway,
    /// Stock per item in Redis (REDIS_ADDR).
    #[command(subcommand)]
    Stock(StockCommand),
}

#[derive(Subcommand)]
enum StockCommand {
    /// Set the units left of ITEM: `flashsale stock set 101 100`.
    Set { item: String, quantity: u64 },
    /// Print the units left of ITEM: `flashsale stock get 101`.
    Get { item: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flashsale: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flashsale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    match cli.command {
        Command::Gateway => {
            let config = GatewayConfig::from_env(&env).context("configuration")?;
            logging::init(&config.log_level);
            gateway::run(config, shutdown::signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stock(command) => {
            let addr = env.host_ports("REDIS_ADDR", "127.0.0.1:6379")?;
            let timeout = env.duration("REDIS_TIMEOUT", std::time::Duration::from_secs(2))?;
            let redis = Redis::connect(&addr, timeout)
                .await
                .with_context(|| format!("REDIS_ADDR={addr}"))?;
            match command {
                StockCommand::Set { item, quantity } => {
                    inventory::set(&redis, &item, quantity).await?;
                    println!("{item}: {quantity}");
                    Ok(ExitCode::SUCCESS)
                }
                StockCommand::Get { item } => match inventory::get(&redis, &item).await? {
                    Some(quantity) => {
                        println!("{quantity}");
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        eprintln!("{item}: no stock set");
                        Ok(ExitCode::from(3))
                    }
                },
            }
        }
    }
}

//! `flashsale`: the Flash Sale Engine's services and admin commands. Configuration comes from the
//! environment (see docs/system.md); arguments pick what to run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flashsale::config::{Env, GatewayConfig};
use flashsale::gateway::degrade;
use flashsale::order::InventoryChange;
use flashsale::payment::client::PaymentClient;
use flashsale::payment::PaymentConfig;
use flashsale::processor::ProcessorConfig;
use flashsale::redis_conn::Redis;
use flashsale::{backup, dlq, gateway, inventory, logging, payment, processor, reconcile, shutdown};

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
    /// The order processor: consumes `orders`, reserves, pays, decides (PROCESSOR_METRICS_ADDR).
    Processor,
    /// The payment provider stand-in (PAYMENT_ADDR).
    Payment,
    /// Stock per item (REDIS_ADDR; changes are recorded on KAFKA_ADDR).
    #[command(subcommand)]
    Stock(StockCommand),
    /// The dead-letter queue (KAFKA_ADDR, REDIS_ADDR, PAYMENT_URL).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Compare stock and money with the durable records; exit 1 on any mismatch.
    Reconcile {
        /// Rewrite Redis (stock, order states) from the records — after a restore.
        #[arg(long)]
        fix: bool,
        /// With --fix: every processor is stopped (the runbook's "stop services" before a
        /// restore), so orders may wait queued. Refused while the consumer group has a member.
        #[arg(long, requires = "fix")]
        processors_stopped: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every Redis key to PATH (a logical backup).
    Backup { path: PathBuf },
    /// Replace the Redis database with the backup at PATH.
    Restore { path: PathBuf },
    /// The promotion's degradation switch, for every gateway at once (REDIS_ADDR).
    #[command(subcommand)]
    Degrade(DegradeCommand),
}

#[derive(Subcommand)]
enum DegradeCommand {
    /// Shed non-core work: order-status reads answered 503 + Retry-After; with --admit N, each
    /// gateway admits at most N orders/s: `flashsale degrade on --admit 300`.
    On {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        admit: Option<u32>,
    },
    /// Back to normal: `flashsale degrade off`.
    Off,
    /// Print the switch (`--json`: as JSON).
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum StockCommand {
    /// Set the units left of ITEM: `flashsale stock set 101 100`.
    Set { item: String, quantity: u64 },
    /// Restock ITEM by QTY units: `flashsale stock add 101 20`.
    Add { item: String, quantity: u64 },
    /// Print the units left of ITEM: `flashsale stock get 101` (exit 3 if never set).
    Get { item: String },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Size, oldest age and reasons of the pending dead letters, then each entry.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send pending dead letters back through the normal path as their next attempt.
    Replay {
        /// Replay at most N entries, oldest first.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
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
            ExitCode::from(2)
        }
    }
}

struct AdminEnv {
    redis: flashsale::redis_conn::RedisEndpoint,
    kafka_addr: String,
    payment_url: String,
    timeout: Duration,
}

fn admin_env(env: &Env<'_>) -> anyhow::Result<AdminEnv> {
    Ok(AdminEnv {
        redis: flashsale::redis_conn::RedisEndpoint::from_env(env)?,
        kafka_addr: env.host_ports("KAFKA_ADDR", "127.0.0.1:9092")?,
        payment_url: env.string("PAYMENT_URL", "http://127.0.0.1:8090"),
        timeout: env.duration("REDIS_TIMEOUT", Duration::from_secs(2))?,
    })
}

async fn redis(admin: &AdminEnv) -> anyhow::Result<Redis> {
    Redis::connect(&admin.redis, admin.timeout).await.with_context(|| admin.redis.to_string())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    match cli.command {
        Command::Gateway => {
            let config = GatewayConfig::from_env(&env).context("configuration")?;
            logging::init(&config.log_level);
            gateway::run(config, shutdown::signal()).await?;
        }
        Command::Processor => {
            let config = ProcessorConfig::from_env(&env).context("configuration")?;
            logging::init(&config.log_level);
            processor::run(config, shutdown::signal()).await?;
        }
        Command::Payment => {
            let config = PaymentConfig::from_env(&env).context("configuration")?;
            logging::init(&config.log_level);
            payment::run(config, shutdown::signal()).await?;
        }
        Command::Stock(command) => {
            let admin = admin_env(&env)?;
            let redis = redis(&admin).await?;
            match command {
                StockCommand::Set { item, quantity } => {
                    let left =
                        inventory::change(&redis, &admin.kafka_addr, &item, InventoryChange::Set, quantity).await?;
                    println!("{item}: {left}");
                }
                StockCommand::Add { item, quantity } => {
                    let left =
                        inventory::change(&redis, &admin.kafka_addr, &item, InventoryChange::Add, quantity).await?;
                    println!("{item}: {left}");
                }
                StockCommand::Get { item } => match inventory::get(&redis, &item).await? {
                    Some(quantity) => println!("{quantity}"),
                    None => {
                        eprintln!("{item}: no stock set");
                        return Ok(ExitCode::from(3));
                    }
                },
            }
        }
        Command::Dlq(command) => {
            let admin = admin_env(&env)?;
            let redis = redis(&admin).await?;
            match command {
                DlqCommand::List { json } => {
                    let report = dlq::list(&admin.kafka_addr, &redis).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        let age = report.oldest_pending_age_s.map(|s| format!("{s}s")).unwrap_or_else(|| "-".into());
                        println!("pending {}  replayed {}  oldest pending {age}", report.pending, report.replayed);
                        for (reason, n) in &report.reasons {
                            println!("  {reason}: {n}");
                        }
                        for e in &report.entries {
                            println!(
                                "{:<8} {}/{}  item {} x{}  user {}  {}",
                                if e.pending { "pending" } else { "replayed" },
                                e.order.request_id,
                                e.order.attempt,
                                e.order.item_id,
                                e.order.amount,
                                e.order.user_id,
                                e.reason
                            );
                        }
                    }
                }
                DlqCommand::Replay { max } => {
                    let payment = PaymentClient::new(&admin.payment_url, Duration::from_secs(5))?;
                    let report = dlq::replay(&admin.kafka_addr, &redis, &payment, max).await?;
                    println!("replayed {}", report.replayed.len());
                    for (member, why) in &report.skipped {
                        println!("skipped {member}: {why}");
                    }
                }
            }
        }
        Command::Reconcile { fix, processors_stopped, json } => {
            let fix = match (fix, processors_stopped) {
                (false, _) => reconcile::Fix::No,
                (true, false) => reconcile::Fix::Drained,
                (true, true) => reconcile::Fix::ProcessorsStopped,
            };
            let admin = admin_env(&env)?;
            let redis = redis(&admin).await?;
            let payment = PaymentClient::new(&admin.payment_url, Duration::from_secs(10))?;
            let report = reconcile::reconcile(&admin.kafka_addr, &redis, &payment, fix).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", reconcile::render(&report));
            }
            if !(report.stock_ok() && report.money_ok()) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Backup { path } => {
            let admin = admin_env(&env)?;
            let n = backup::backup(&redis(&admin).await?, &path).await?;
            println!("backed up {n} keys to {}", path.display());
        }
        Command::Degrade(command) => {
            let admin = admin_env(&env)?;
            let redis = redis(&admin).await?;
            let mode = match command {
                DegradeCommand::On { admit } => degrade::turn_on(&redis, admit).await?,
                DegradeCommand::Off => {
                    degrade::turn_off(&redis).await?;
                    degrade::Mode::OFF
                }
                DegradeCommand::Status { json: true } => {
                    println!("{}", serde_json::to_string(&degrade::read(&redis).await?)?);
                    return Ok(ExitCode::SUCCESS);
                }
                DegradeCommand::Status { json: false } => degrade::read(&redis).await?,
            };
            println!("degrade {}", mode.describe());
        }
        Command::Restore { path } => {
            let admin = admin_env(&env)?;
            let restored = backup::restore(&redis(&admin).await?, &path).await?;
            let on = match restored.replicas {
                0 => String::new(),
                n => format!(" (on the primary and its {n} replica(s))"),
            };
            println!("restored {} keys from {}{on}", restored.keys, path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

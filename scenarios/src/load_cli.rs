//! `flashlab load ...`: flash-sale traffic against a gateway, with a history of every request.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chaos::faults::parse_duration;
use clap::Args;
use loadgen::{ArrivalSchedule, Behaviour, Catalogue, LoadConfig, Traffic, UserMix};

/// `flashlab load` and its options.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The gateway, e.g. http://127.0.0.1:8080 (loopback only unless --allow-remote).
    #[arg(long)]
    pub target: String,
    /// Phases NAME:DURATION@RATE, @FROM..TO for a linear ramp, ~poisson for Poisson arrivals.
    #[arg(long, default_value = "warm:10s@100,spike:20s@1000,ramp:30s@100..1000", value_parser = parse_phases)]
    pub phases: ArrivalSchedule,
    /// Weights of the user kinds.
    #[arg(long, default_value = "buyer=90,retrier=5,abuser=4,invalid=1", value_parser = str::parse::<UserMix>)]
    pub mix: UserMix,
    /// Seeds items, users, request_ids, kinds, Poisson gaps and retry jitter.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where history.jsonl, load-intervals.jsonl and load-summary.json go.
    #[arg(long, default_value = "runs/load")]
    pub out: PathBuf,
    /// The hot items, comma-separated.
    #[arg(long, default_value = "101", value_delimiter = ',')]
    pub items: Vec<String>,
    /// Distinct buyers.
    #[arg(long, default_value_t = 100_000)]
    pub buyers: u64,
    /// Most requests in flight at once (goose users).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Arrivals that may wait for a free user; beyond, they are dropped and counted.
    #[arg(long, default_value_t = 10_000)]
    pub max_backlog: usize,
    /// Each request's timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// After the last phase, how long started orders may take to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain: Duration,
    /// A buyer's polls of GET /orders/{id} after a 202.
    #[arg(long, default_value_t = 3)]
    pub polls: u32,
    /// A retrier's retries after a timeout or a 5xx.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Orders in an abuser's burst.
    #[arg(long, default_value_t = 20)]
    pub abuse_burst: u32,
    /// Allow a target that is not on loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_phases(s: &str) -> Result<ArrivalSchedule, String> {
    s.parse::<ArrivalSchedule>().map_err(|e| e.0)
}

/// Checks that `url` is `http://HOST[:PORT][/...]` with HOST on loopback (or `--allow-remote`).
pub fn check_target(url: &str, allow_remote: bool) -> Result<String, String> {
    check_url("--target", url, allow_remote)
}

/// [`check_target`] for the option `flag`.
pub fn check_url(flag: &str, url: &str, allow_remote: bool) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{flag} {url:?}: expected http://HOST:PORT"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority),
    };
    if host.is_empty() {
        return Err(format!("{flag} {url:?}: no host"));
    }
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        return Err(format!(
            "{flag} {url:?}: {host} is not a loopback address; pass --allow-remote to load it anyway"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Runs `flashlab load`; prints the summary table.
pub async fn load(args: LoadArgs, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let target = check_target(&args.target, args.allow_remote).map_err(anyhow::Error::msg)?;
    if args.items.iter().any(|i| i.is_empty()) {
        anyhow::bail!("--items: an empty item id");
    }
    let config = LoadConfig {
        target,
        schedule: args.phases,
        traffic: Traffic {
            mix: args.mix,
            catalogue: Catalogue { items: args.items, buyers: args.buyers, ..Catalogue::default() },
            seed: args.seed,
        },
        behaviour: Behaviour {
            timeout: args.timeout,
            polls: args.polls,
            retries: args.retries,
            abuse_burst: args.abuse_burst,
            ..Behaviour::default()
        },
        out: args.out.clone(),
        max_in_flight: args.max_in_flight,
        max_backlog: args.max_backlog,
        drain: args.drain,
        progress: !args.quiet,
        live: None,
    };
    eprintln!(
        "load: {} against {} for {} (seed {}, mix {}), history in {}",
        config.schedule.phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
        config.target,
        humantime::format_duration(config.schedule.duration()),
        config.traffic.seed,
        config.traffic.mix,
        args.out.join("history.jsonl").display()
    );
    let summary = loadgen::run(config, stop).await.context("load run")?;
    print!("{}", loadgen::summary::table(&summary));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_unless_allowed() {
        for ok in ["http://127.0.0.1:8080", "http://localhost:80/", "http://[::1]:8080", "http://127.9.9.9"] {
            assert!(check_target(ok, false).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.1:8080", "http://example.com", "http://[2001:db8::1]:80"] {
            let err = check_target(bad, false).unwrap_err();
            assert!(err.contains("not a loopback address; pass --allow-remote"), "{bad}: {err}");
            assert!(check_target(bad, true).is_ok());
        }
        assert!(check_target("https://127.0.0.1", false).unwrap_err().contains("expected http://"));
        assert!(check_target("http://:80", false).unwrap_err().contains("no host"));
    }
}

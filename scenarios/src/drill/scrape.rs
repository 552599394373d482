//! `metrics.jsonl`: every component's `/metrics`, scraped each second while the drill runs.
//! One line per scrape: `{"ts_ms", "component", "up", "metrics": {"name{labels}": value}}`.
//! Redis has no `/metrics`: its `INFO commandstats` is read on the same tick and recorded as
//! component `redis` with `redis_commands_processed_total` and `redis_command_usec_total`
//! (the server's own time in commands — what saturates when Redis does). With replicated Redis
//! the node read is the primary the sentinels name on that tick, and the two totals continue
//! across a failover (each node's own growth is added; they are never another node's totals).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Each scrape's own limit.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

pub use rundir::metrics::parse_text as parse;

/// The sum of every series of `metric` (any labels); 0 when it has none.
pub fn sum(metrics: &BTreeMap<String, f64>, metric: &str) -> f64 {
    metrics.iter().filter(|(k, _)| k.as_str() == metric || k.starts_with(&format!("{metric}{{"))).map(|(_, v)| v).sum()
}

/// Where a component's metrics are: `http://ADDR/metrics`.
pub fn metrics_url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

/// Where the Redis that serves the writes is.
#[derive(Debug, Clone)]
pub struct RedisSource {
    /// The one Redis, or the first primary of a replicated set.
    pub first: SocketAddr,
    /// With replicated Redis: the sentinels, asked on every tick.
    pub sentinels: Vec<SocketAddr>,
}

/// Scrapes `targets` (name, metrics URL), and Redis at `redis`, every second into `path` until
/// dropped.
pub async fn run(targets: Vec<(String, String)>, redis: Option<RedisSource>, path: &Path) -> std::io::Result<()> {
    run_every(Duration::from_secs(1), targets, redis, path).await
}

/// [`run`] every `period` (at least 200 ms; each scrape's limit is the period, at most
/// [`SCRAPE_TIMEOUT`]).
pub async fn run_every(
    period: Duration,
    targets: Vec<(String, String)>,
    redis: Option<RedisSource>,
    path: &Path,
) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let period = period.max(Duration::from_millis(200));
    let http = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT.min(period)).build().map_err(std::io::Error::other)?;
    let mut tick = tokio::time::interval(period);
    let mut totals = Continuous::default();
    let mut node = redis.as_ref().map(|r| r.first);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let scrapes = futures_join(&http, &targets).await;
        for (name, metrics) in scrapes {
            let up = metrics.is_some();
            let metrics = metrics.unwrap_or_default();
            let line = rundir::Scrape { ts_ms: chaos::events::unix_ms(), component: name, up, metrics };
            serde_json::to_writer(&mut file, &line)?;
            file.write_all(b"\n")?;
        }
        if let (Some(source), Some(addr)) = (&redis, node.as_mut()) {
            if !source.sentinels.is_empty() {
                let named =
                    tokio::time::timeout(SCRAPE_TIMEOUT, chaos::testbed::replication::ask_primary(&source.sentinels))
                        .await;
                if let Ok(Some(primary)) = named {
                    *addr = primary;
                }
            }
            let metrics = redis_info(*addr).await.map(|m| totals.add(*addr, m));
            let line = rundir::Scrape {
                ts_ms: chaos::events::unix_ms(),
                component: "redis".into(),
                up: metrics.is_some(),
                metrics: metrics.unwrap_or_default(),
            };
            serde_json::to_writer(&mut file, &line)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
    }
}

/// Counter totals kept going when the node read changes: each node's growth since it was last
/// read (a node restarted from zero counts from zero) is added; a node read for the first time
/// after another adds nothing (what it counted before was not seen growing).
#[derive(Debug, Default)]
struct Continuous {
    last: BTreeMap<SocketAddr, BTreeMap<String, f64>>,
    totals: BTreeMap<String, f64>,
}

impl Continuous {
    fn add(&mut self, node: SocketAddr, raw: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
        let first_read = self.last.is_empty();
        let before = self.last.insert(node, raw.clone());
        for (name, value) in raw {
            let grown = match before.as_ref().and_then(|b| b.get(&name)) {
                Some(&prev) if value >= prev => value - prev,
                Some(_) => value,
                None if first_read => value,
                None => 0.0,
            };
            *self.totals.entry(name).or_default() += grown;
        }
        self.totals.clone()
    }
}

/// Redis's command totals from `INFO commandstats`, within the scrape's limit.
async fn redis_info(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let ask = async {
        let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("INFO").arg("commandstats").query_async::<String>(&mut conn).await.ok()
    };
    let text = tokio::time::timeout(SCRAPE_TIMEOUT, ask).await.ok()??;
    Some(parse_commandstats(&text))
}

/// `cmdstat_get:calls=10,usec=30,…` lines, summed over the commands.
pub fn parse_commandstats(text: &str) -> BTreeMap<String, f64> {
    let (mut calls, mut usec) = (0.0, 0.0);
    for line in text.lines().filter(|l| l.starts_with("cmdstat_")) {
        let Some((_, fields)) = line.split_once(':') else { continue };
        for field in fields.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => calls += v.trim().parse::<f64>().unwrap_or(0.0),
                Some(("usec", v)) => usec += v.trim().parse::<f64>().unwrap_or(0.0),
                _ => {}
            }
        }
    }
    BTreeMap::from([
        ("redis_commands_processed_total".to_string(), calls),
        ("redis_command_usec_total".to_string(), usec),
    ])
}

async fn futures_join(
    http: &reqwest::Client,
    targets: &[(String, String)],
) -> Vec<(String, Option<BTreeMap<String, f64>>)> {
    let mut handles = Vec::new();
    for (name, url) in targets {
        let http = http.clone();
        let url = url.clone();
        let name = name.clone();
        handles.push(tokio::spawn(async move {
            let text = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.text().await.ok(),
                _ => None,
            };
            (name, text.map(|t| parse(&t)))
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        if let Ok(r) = h.await {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn commandstats_sum_over_the_commands() {
        let text = "# Commandstats\r\ncmdstat_get:calls=10,usec=30,usec_per_call=3.00\r\ncmdstat_evalsha:calls=5,usec=70,usec_per_call=14\r\n";
        let m = super::parse_commandstats(text);
        assert_eq!(m["redis_commands_processed_total"], 15.0);
        assert_eq!(m["redis_command_usec_total"], 100.0);
    }

    #[test]
    fn totals_continue_across_a_failover_and_a_restart() {
        let (a, b): (std::net::SocketAddr, std::net::SocketAddr) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let raw = |v: f64| std::collections::BTreeMap::from([("redis_commands_processed_total".to_string(), v)]);
        let mut c = super::Continuous::default();
        let total = |m: std::collections::BTreeMap<String, f64>| m["redis_commands_processed_total"];
        assert_eq!(total(c.add(a, raw(100.0))), 100.0, "the first read counts whole");
        assert_eq!(total(c.add(a, raw(150.0))), 150.0);
        // The replica promoted: its own count (replicated writes) is not a jump of the total.
        assert_eq!(total(c.add(b, raw(5000.0))), 150.0);
        assert_eq!(total(c.add(b, raw(5020.0))), 170.0);
        // Back to the first node, restarted from zero since.
        assert_eq!(total(c.add(a, raw(7.0))), 177.0);
        assert_eq!(total(c.add(a, raw(9.0))), 179.0);
    }
}

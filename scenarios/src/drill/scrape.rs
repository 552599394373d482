//! `metrics.jsonl`: every component's `/metrics`, scraped each second while the drill runs.
//! One line per scrape: `{"ts_ms", "component", "up", "metrics": {"name{labels}": value}}`.

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

/// Scrapes `targets` (name, address) every second into `path` until dropped.
pub async fn run(targets: Vec<(String, SocketAddr)>, path: &Path) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let http = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build().map_err(std::io::Error::other)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
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
        file.flush()?;
    }
}

async fn futures_join(
    http: &reqwest::Client,
    targets: &[(String, SocketAddr)],
) -> Vec<(String, Option<BTreeMap<String, f64>>)> {
    let mut handles = Vec::new();
    for (name, addr) in targets {
        let http = http.clone();
        let url = format!("http://{addr}/metrics");
        let name = name.clone();
        handles.push(tokio::spawn(async move {
            let text = match http.get(&url).send().await {
                Ok(r) => r.text().await.ok(),
                Err(_) => None,
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

//! `metrics.jsonl`: every component's `/metrics`, scraped each second while the drill runs.
//! One line per scrape: `{"ts_ms", "component", "up", "metrics": {"name{labels}": value}}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Each scrape's own limit.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

/// Parses the Prometheus text format: `name{labels} value` per line, comments skipped.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.trim().parse::<f64>() {
                out.insert(name.trim().to_string(), v);
            }
        }
    }
    out
}

/// The sum of every series of `metric` (any labels).
pub fn sum(metrics: &BTreeMap<String, f64>, metric: &str) -> f64 {
    metrics.iter().filter(|(k, _)| k.as_str() == metric || k.starts_with(&format!("{metric}{{"))).map(|(_, v)| v).sum()
}

/// Scrapes `targets` (name, address) every second into `path` until dropped; keeps the lowest
/// `processor_inventory_level` per item in `lowest`.
pub async fn run(
    targets: Vec<(String, SocketAddr)>,
    path: &Path,
    lowest: std::sync::Arc<std::sync::Mutex<BTreeMap<String, f64>>>,
) -> std::io::Result<()> {
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
            for (series, v) in &metrics {
                if let Some(item) = series
                    .strip_prefix("processor_inventory_level{item_id=\"")
                    .and_then(|rest| rest.strip_suffix("\"}"))
                {
                    let mut lowest = lowest.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = lowest.entry(item.to_string()).or_insert(*v);
                    *entry = entry.min(*v);
                }
            }
            let line =
                serde_json::json!({"ts_ms": chaos::events::unix_ms(), "component": name, "up": up, "metrics": metrics});
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let m = parse("# HELP x\nx_total 3\nlag{partition=\"0\"} 2\nlag{partition=\"1\"} 5\nbad line x\n");
        assert_eq!(m["x_total"], 3.0);
        assert_eq!(sum(&m, "lag"), 7.0);
        assert_eq!(sum(&m, "la"), 0.0);
    }
}

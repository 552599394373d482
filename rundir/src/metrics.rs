//! `metrics.jsonl`: every component's `/metrics`, scraped each second while a drill runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One scrape of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scrape {
    pub ts_ms: u64,
    /// `gateway[0]`, `processor[1]`, `payment`.
    pub component: String,
    /// `false`: the scrape failed (the component was down or did not answer in time); such a
    /// scrape is a gap in every series, never a zero.
    pub up: bool,
    /// `name{labels}` → value.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl Scrape {
    /// The sum of every series of `metric` (any labels); `None` when it has none.
    pub fn sum(&self, metric: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for (k, v) in &self.metrics {
            let series_of = k.as_str() == metric || k.strip_prefix(metric).is_some_and(|rest| rest.starts_with('{'));
            if series_of {
                found = true;
                total += v;
            }
        }
        found.then_some(total)
    }
}

/// Reads `metrics.jsonl` (empty when absent: a run without processes to scrape).
pub fn read(path: &Path) -> Result<Vec<Scrape>, crate::RunDirError> {
    crate::io::read_jsonl_if_present(path)
}

/// Parses the Prometheus text format: `name{labels} value` per line, comments skipped.
pub fn parse_text(text: &str) -> BTreeMap<String, f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format_and_sums_series() {
        let m = parse_text("# HELP x\nx_total 3\nlag{partition=\"0\"} 2\nlag{partition=\"1\"} 5\nbad line x\n");
        assert_eq!(m["x_total"], 3.0);
        let s = Scrape { ts_ms: 0, component: "p".into(), up: true, metrics: m };
        assert_eq!(s.sum("lag"), Some(7.0));
        assert_eq!(s.sum("la"), None);
    }
}

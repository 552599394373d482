//! The configuration files the lab writes for Prometheus, Alertmanager and the process
//! exporter, and the process specs that run them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{
    write, MonitoringConfig, MonitoringError, ScrapeTarget, SCRAPE_INTERVAL, SHIPPED_ALERTMANAGER, SHIPPED_RULES,
};
use crate::probe::Probe;
use crate::process::ProcessSpec;

/// The receiver URL in the shipped routing, rewritten to the lab's webhook.
const SHIPPED_RECEIVER_URL: &str = "http://127.0.0.1:9099/alertmanager";

/// The rule files Prometheus loads, copied into `dir` (the shipped one when none is given).
pub(super) fn rule_files(config: &MonitoringConfig, dir: &Path) -> Result<Vec<PathBuf>, MonitoringError> {
    if config.rules.is_empty() {
        let path = dir.join("flashsale.rules.yml");
        write(&path, &scale_durations(SHIPPED_RULES, config.time_factor))?;
        return Ok(vec![path]);
    }
    let mut out = Vec::new();
    for (i, source) in config.rules.iter().enumerate() {
        let text = std::fs::read_to_string(source)
            .map_err(|e| MonitoringError::Config { path: source.display().to_string(), why: e.to_string() })?;
        let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "rules.yml".into());
        let path = dir.join(format!("{i}-{name}"));
        write(&path, &scale_durations(&text, config.time_factor))?;
        out.push(path);
    }
    Ok(out)
}

/// The Alertmanager config with every webhook `url:` pointed at the lab's receiver.
pub(super) fn alertmanager_config(config: &MonitoringConfig, receiver_url: &str) -> Result<String, MonitoringError> {
    let (path, text) = match &config.alertmanager_config {
        None => ("monitoring/alertmanager.yml".to_owned(), SHIPPED_ALERTMANAGER.to_owned()),
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .map_err(|e| MonitoringError::Config { path: p.display().to_string(), why: e.to_string() })?,
        ),
    };
    let (rewritten, count) = point_webhooks_at(&scale_durations(&text, config.time_factor), receiver_url);
    if count == 0 {
        return Err(MonitoringError::Config {
            path,
            why: format!(
                "no webhook_configs url to point at the lab's receiver (the shipped config uses {SHIPPED_RECEIVER_URL}): \
                 the lab could not see a single notification"
            ),
        });
    }
    Ok(rewritten)
}

/// Replaces the value of every `url:` line inside a `webhook_configs` block; returns the text and
/// how many it replaced.
fn point_webhooks_at(text: &str, receiver_url: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut in_webhooks: Option<usize> = None;
    let mut count = 0;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(block) = in_webhooks {
            if !line.trim().is_empty() && indent <= block && !line.trim_start().starts_with('#') {
                in_webhooks = None;
            }
        }
        if trimmed.starts_with("webhook_configs:") {
            in_webhooks = Some(indent);
        } else if in_webhooks.is_some() && trimmed.starts_with("url:") {
            let prefix = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{prefix}url: {receiver_url}\n"));
            count += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, count)
}

pub(super) fn prometheus_config(rules: &[PathBuf], alertmanager: SocketAddr) -> String {
    let secs = SCRAPE_INTERVAL.as_secs();
    let mut out = format!(
        "# Written by the lab (chaos::monitoring): 1 s scrape and evaluation.\n\
         global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n\
         rule_files:\n"
    );
    for rule in rules {
        out.push_str(&format!("  - {}\n", rule.display()));
    }
    out.push_str(&format!(
        "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n"
    ));
    out.push_str("scrape_configs:\n");
    for job in JOBS {
        out.push_str(&format!("  - job_name: {job}\n    file_sd_configs:\n      - files: ['targets/{job}.json']\n"));
    }
    out
}

const JOBS: [&str; 5] = ["gateway", "processor", "payment", "redis", "broker"];

pub(super) fn write_targets(dir: &Path, targets: &[ScrapeTarget]) -> Result<(), MonitoringError> {
    for job in JOBS {
        let groups: Vec<Value> = targets
            .iter()
            .filter(|t| t.job == job)
            .map(|t| {
                let mut labels = serde_json::json!({"instance": t.instance});
                if let Some(release) = &t.release {
                    labels["release"] = release.clone().into();
                }
                serde_json::json!({"targets": [t.addr.to_string()], "labels": labels})
            })
            .collect();
        let path = dir.join("targets").join(format!("{job}.json"));
        // Written aside and renamed: Prometheus never reads half a file.
        let aside = path.with_extension("json.new");
        write(&aside, &Value::Array(groups).to_string())?;
        std::fs::rename(&aside, &path)
            .map_err(|source| MonitoringError::Io { path: path.display().to_string(), source })?;
    }
    Ok(())
}

/// The broker is the tansu process listening on `broker` (not any other lab's broker).
pub(super) fn process_exporter_config(broker: SocketAddr) -> String {
    let port = broker.port();
    format!("process_names:\n  - name: broker\n    cmdline:\n      - 'tcp://{}:{port}( |$)'\n", broker.ip())
}

pub(super) fn prometheus_spec(addr: SocketAddr, dir: &Path) -> ProcessSpec {
    ProcessSpec {
        name: "prometheus".into(),
        program: "prometheus".into(),
        args: vec![
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
            "--storage.tsdb.retention.time=2d".into(),
            // Firing alerts are re-sent every evaluation, not every minute: an alert dropped
            // before Alertmanager was discovered would otherwise wait a minute to be notified.
            format!("--rules.alert.resend-delay={}s", SCRAPE_INTERVAL.as_secs()),
            format!("--web.listen-address={addr}"),
            "--log.level=warn".into(),
        ],
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        log_path: dir.join("prometheus.log"),
        probe: Probe::HttpOk(addr, "/-/ready"),
        ready_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
    }
}

pub(super) fn alertmanager_spec(addr: SocketAddr, dir: &Path) -> ProcessSpec {
    ProcessSpec {
        name: "alertmanager".into(),
        program: "prometheus-alertmanager".into(),
        args: vec![
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("alertmanager-data").display()),
            format!("--web.listen-address={addr}"),
            // Clustering off: it would listen on 0.0.0.0:9094 and wait for peers.
            "--cluster.listen-address=".into(),
            "--log.level=warn".into(),
        ],
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        log_path: dir.join("alertmanager.log"),
        probe: Probe::HttpOk(addr, "/-/ready"),
        ready_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
    }
}

pub(super) fn redis_exporter_spec(addr: SocketAddr, redis: SocketAddr, dir: &Path) -> ProcessSpec {
    ProcessSpec {
        name: "redis-exporter".into(),
        program: "prometheus-redis-exporter".into(),
        args: vec![format!("-redis.addr=redis://{redis}"), format!("-web.listen-address={addr}")],
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        log_path: dir.join("redis-exporter.log"),
        probe: Probe::HttpOk(addr, "/metrics"),
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(5),
    }
}

pub(super) fn process_exporter_spec(addr: SocketAddr, dir: &Path) -> ProcessSpec {
    ProcessSpec {
        name: "process-exporter".into(),
        program: "prometheus-process-exporter".into(),
        args: vec![
            format!("-config.path={}", dir.join("process-exporter.yml").display()),
            format!("-web.listen-address={addr}"),
            // A restarted broker has a new pid: match names again at every scrape.
            "-recheck".into(),
            "-threads=false".into(),
            "-gather-smaps=false".into(),
        ],
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        log_path: dir.join("process-exporter.log"),
        probe: Probe::HttpOk(addr, "/metrics"),
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(5),
    }
}

/// Rule text with every range selector (`[5m]`) and `for:` duration multiplied by `factor`,
/// each at least [`MIN_SCALED`]; with Alertmanager text, its `group_wait`, `group_interval`,
/// `repeat_interval` and `resolve_timeout` too. A 5-minute window cannot see a 30 s outage: a
/// short drill states a factor (and its report shows it); `factor` 1 leaves the text as written.
/// A threshold that is itself a duration is scaled where its line is marked
/// ([`SCALED_THRESHOLD_MARK`]).
pub fn scale_durations(text: &str, factor: f64) -> String {
    if (factor - 1.0).abs() < f64::EPSILON {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(&scale_line(line, factor));
        out.push('\n');
    }
    out
}

/// The shortest window or wait a scaled rule gets: three evaluations, so a `rate()` always has
/// two samples.
pub const MIN_SCALED: Duration = Duration::from_secs(3);

const SCALED_KEYS: [&str; 5] = ["for:", "group_wait:", "group_interval:", "repeat_interval:", "resolve_timeout:"];

/// A rule line ending in this comment has its threshold (the last number before the comment)
/// scaled as a duration in seconds: `DLQAgeHigh`'s 3600 s cannot be reached in a drill.
pub const SCALED_THRESHOLD_MARK: &str = "# lab: a duration in seconds, scaled";

fn scale_line(line: &str, factor: f64) -> String {
    if let Some(scaled) = scale_threshold(line, factor) {
        return scaled;
    }
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    for key in SCALED_KEYS {
        if let Some(value) = trimmed.strip_prefix(key) {
            if let Some(d) = parse_prom_duration(value.trim()) {
                return format!("{indent}{key} {}", format_secs(scaled(d, factor)));
            }
        }
    }
    // Range selectors: `[5m]`, and both parts of a subquery `[5m:30s]`.
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else { break };
        out.push_str(&rest[..=open]);
        let inside = &rest[open + 1..close];
        let parts: Vec<Option<Duration>> = inside.split(':').map(parse_prom_duration).collect();
        if !parts.is_empty() && parts.iter().all(Option::is_some) {
            let scaled: Vec<String> = parts.into_iter().flatten().map(|d| format_secs(scaled(d, factor))).collect();
            out.push_str(&scaled.join(":"));
        } else {
            out.push_str(inside);
        }
        out.push(']');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The line with its marked threshold scaled (at least [`MIN_SCALED`]: the watchdog's own
/// readings are 2 s apart), or `None` when it is not marked
/// or has no number before the mark.
fn scale_threshold(line: &str, factor: f64) -> Option<String> {
    let before = line.trim_end().strip_suffix(SCALED_THRESHOLD_MARK)?;
    let body = before.trim_end();
    let start = body.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |i| i + 1);
    let seconds: f64 = body[start..].parse().ok()?;
    let scaled = (seconds * factor).round().max(MIN_SCALED.as_secs_f64());
    Some(format!("{}{scaled}{}{SCALED_THRESHOLD_MARK}", &body[..start], &before[body.len()..]))
}

fn scaled(d: Duration, factor: f64) -> Duration {
    if d.is_zero() {
        return d;
    }
    Duration::from_secs_f64(d.as_secs_f64() * factor).max(MIN_SCALED)
}

/// Whole seconds, rounded (Prometheus and Alertmanager both read `42s`).
fn format_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().round() as u64)
}

/// A Prometheus duration of one or more units: `90s`, `5m`, `1h30m`, `500ms`.
fn parse_prom_duration(text: &str) -> Option<Duration> {
    let text = text.trim().trim_matches(|c| c == '"' || c == '\'');
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let unit_end = rest[digits..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |u| digits + u);
        let unit = match &rest[digits..unit_end] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            "y" => Duration::from_secs(365 * 86_400),
            _ => return None,
        };
        total += unit * u32::try_from(number).ok()?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::loopback;

    #[test]
    fn every_webhook_url_is_pointed_at_the_lab_and_nothing_else() {
        let (out, n) = point_webhooks_at(SHIPPED_ALERTMANAGER, "http://127.0.0.1:1/alertmanager");
        assert_eq!(n, 1);
        assert!(out.contains("      - url: http://127.0.0.1:1/alertmanager\n"), "{out}");
        assert!(!out.contains(SHIPPED_RECEIVER_URL));
        let text = "receivers:\n  - name: a\n    webhook_configs:\n      - url: http://x/1\n        send_resolved: true\n      - url: 'http://x/2'\n  - name: b\n    slack_configs:\n      - api_url: http://slack\n";
        let (out, n) = point_webhooks_at(text, "http://lab");
        assert_eq!(n, 2, "{out}");
        assert!(out.contains("api_url: http://slack"), "a slack url is left alone: {out}");
        assert_eq!(point_webhooks_at("route:\n  receiver: x\n", "http://lab").1, 0);
    }

    #[test]
    fn a_config_without_a_webhook_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("am.yml");
        std::fs::write(&path, "route:\n  receiver: x\nreceivers:\n  - name: x\n").unwrap();
        let config = MonitoringConfig { alertmanager_config: Some(path), ..MonitoringConfig::default() };
        let err = alertmanager_config(&config, "http://lab").unwrap_err().to_string();
        assert!(err.contains("am.yml") && err.contains("no webhook_configs url"), "{err}");
    }

    #[test]
    fn the_prometheus_config_scrapes_every_job_from_its_targets_file() {
        let text = prometheus_config(&[PathBuf::from("/r/a.yml")], loopback(9093));
        assert!(text.contains("scrape_interval: 1s") && text.contains("evaluation_interval: 1s"), "{text}");
        assert!(text.contains("  - /r/a.yml\n"), "{text}");
        assert!(text.contains("targets: ['127.0.0.1:9093']"), "{text}");
        for job in JOBS {
            assert!(text.contains(&format!("job_name: {job}\n")), "{job}: {text}");
        }
    }

    #[test]
    fn windows_and_for_are_scaled_and_never_below_three_evaluations() {
        let rule = "        expr: sum(rate(a[5m])) / sum(rate(b[5m])) > 0.05\n        for: 2m\n";
        assert_eq!(
            scale_durations(rule, 0.1),
            "        expr: sum(rate(a[30s])) / sum(rate(b[30s])) > 0.05\n        for: 12s\n"
        );
        assert_eq!(scale_durations("for: 5s\nx[10s]\n", 0.1), "for: 3s\nx[3s]\n", "at least 3 s");
        assert_eq!(scale_durations("for: 0s\n", 0.1), "for: 0s\n", "no wait stays no wait");
        let marked = format!("        expr: max(age_seconds) > 3600  {SCALED_THRESHOLD_MARK}\n");
        assert_eq!(
            scale_durations(&marked, 0.01),
            format!("        expr: max(age_seconds) > 36  {SCALED_THRESHOLD_MARK}\n"),
            "a marked threshold is a duration"
        );
        assert_eq!(scale_durations(&marked, 0.0001), marked.replace("3600", "3"), "at least 3 s");
        assert_eq!(scale_durations("expr: x > 3600\n", 0.01), "expr: x > 3600\n", "an unmarked one is not");
        assert_eq!(scale_durations("max_over_time(x[1h30m:1m])\n", 0.5), "max_over_time(x[2700s:30s])\n");
        assert_eq!(
            scale_durations("label{a=~\"[0-9]\"}[5m]\n", 0.5),
            "label{a=~\"[0-9]\"}[150s]\n",
            "a regex class is no window"
        );
        let am = "  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 3h\n  receiver: lab\n";
        assert_eq!(
            scale_durations(am, 0.1),
            "  group_wait: 3s\n  group_interval: 30s\n  repeat_interval: 1080s\n  receiver: lab\n"
        );
        assert_eq!(scale_durations(rule, 1.0), rule, "as written");
    }

    #[test]
    fn the_shipped_rules_scaled_still_pass_promtool_syntax() {
        // What Prometheus would refuse: a window or `for` that is not a duration.
        let scaled = scale_durations(SHIPPED_RULES, 0.1);
        for line in scaled.lines().filter(|l| l.trim_start().starts_with("for:")) {
            let value = line.trim_start().trim_start_matches("for:").trim();
            assert!(parse_prom_duration(value).is_some(), "{line}");
        }
        assert!(scaled.contains("[30s]") && !scaled.contains("[5m]"), "{scaled}");
    }
}

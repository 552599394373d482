//! Alerts judged in a real drill, with real Prometheus and Alertmanager: an expected alert whose
//! rule can never fire fails the verdict on that alert; a rule that fires in steady state fails
//! it on a false alarm; an alert that does fire passes, with its time to detect and to notify in
//! the verdict's alerts table.

use std::process::Command;

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

/// A 24 s drill: Redis 150 ms slower for 8 s from second 6, with the given alert rules and
/// expectations. Time factor 0.1: the shipped routing's 30 s `group_wait` becomes 3 s (and the
/// rules' 2 s windows and `for` the 3 s least).
fn drill(rules: &str, alerts: &str) -> (i32, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.rules.yml"), rules).unwrap();
    let scenario = format!(
        "name = \"alerts-test\"\ndescription = \"alert checks end to end\"\ndrain_timeout = \"30s\"\n\
         [env]\nRATE_LIMIT_MAX_REQUESTS = \"1000\"\n[stock]\n\"101\" = 100000\n\
         [load]\nphases = \"a:24s@30\"\nmix = \"buyer=1\"\n\
         [[faults]]\nat = \"6s\"\nfor = \"8s\"\nkind = \"latency\"\ntarget = \"redis\"\nlatency = \"150ms\"\n\
         [alerts]\nmonitoring = true\nrules = [\"test.rules.yml\"]\ntime_factor = 0.1\nsettle = \"5s\"\n{alerts}"
    );
    let file = dir.path().join("alerts-test.toml");
    std::fs::write(&file, scenario).unwrap();
    let out_dir = dir.path().join("run");
    let out = Command::new(FLASHLAB)
        .args(["drill", file.to_str().unwrap(), "--quiet", "--out", out_dir.to_str().unwrap()])
        .env("FLASHSALE_BIN", std::path::Path::new(FLASHLAB).with_file_name("flashsale"))
        .output()
        .expect("flashlab runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let verdict =
        std::fs::read_to_string(out_dir.join("verdict.json")).unwrap_or_else(|_| panic!("no verdict: {stdout}"));
    assert!(out_dir.join("alerts.jsonl").is_file(), "alerts.jsonl written: {stdout}");
    (out.status.code().unwrap_or(-1), stdout, serde_json::from_str(&verdict).unwrap())
}

fn check<'a>(verdict: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {}", verdict["checks"]))
}

/// The gateway's p50 over 2 s above 100 ms: true while Redis is 150 ms slow each way.
const SLOW: &str = "      - alert: GatewaySlow\n        expr: histogram_quantile(0.5, sum by (le) (rate(gateway_request_duration_seconds_bucket[2s]))) > 0.1\n        for: 1s\n        labels: {severity: warning, component: gateway}\n";
const NEVER: &str =
    "      - alert: NeverFires\n        expr: vector(1) == 2\n        labels: {severity: critical, component: lab}\n";
const ALWAYS: &str =
    "      - alert: AlwaysFires\n        expr: vector(1)\n        labels: {severity: warning, component: lab}\n";

fn rules(list: &[&str]) -> String {
    format!("groups:\n  - name: test\n    rules:\n{}", list.concat())
}

#[test]
fn an_alert_that_fires_on_time_passes_and_one_that_never_can_fails_the_drill() {
    let expect = "[[alerts.expect]]\nalert = \"GatewaySlow\"\nfires_within = \"8s\"\nnotified_within = \"15s\"\nresolves_within = \"8s\"\n\
                  [[alerts.expect]]\nalert = \"NeverFires\"\nfires_within = \"6s\"\n";
    let (code, out, verdict) = drill(&rules(&[SLOW, NEVER]), expect);
    assert_eq!(code, 1, "{out}");
    assert_eq!(check(&verdict, "rules evaluated")["outcome"], "pass", "{out}");
    let slow = check(&verdict, "GatewaySlow detects fault #1");
    assert_eq!(slow["outcome"], "pass", "{out}");
    assert_eq!(check(&verdict, "GatewaySlow notified for fault #1")["outcome"], "pass", "{out}");
    assert_eq!(check(&verdict, "GatewaySlow resolves after fault #1")["outcome"], "pass", "{out}");
    let never = check(&verdict, "NeverFires detects fault #1");
    assert_eq!((never["outcome"].as_str(), never["measured"].as_str()), (Some("fail"), Some("never fired")), "{out}");
    assert_eq!(check(&verdict, "no false alarms")["outcome"], "pass", "{out}");
    // The alerts table: time to detect and to notify of the one that fired.
    let row = verdict["alerts"].as_array().unwrap().iter().find(|a| a["alert"] == "GatewaySlow").unwrap();
    let (fired, notified) = (row["fired_after_ms"].as_u64().unwrap(), row["notified_after_ms"].as_u64().unwrap());
    assert!(fired <= 8_000 && notified >= fired, "{row}");
}

#[test]
fn a_rule_that_fires_in_steady_state_is_a_false_alarm() {
    let expect = "[[alerts.expect]]\nalert = \"GatewaySlow\"\nfires_within = \"6s\"\n";
    let (code, out, verdict) = drill(&rules(&[SLOW, ALWAYS]), expect);
    assert_eq!(code, 1, "{out}");
    let alarms = check(&verdict, "no false alarms");
    assert_eq!(alarms["outcome"], "fail", "{out}");
    assert!(alarms["evidence"][0].as_str().unwrap().starts_with("AlwaysFires fired at"), "{alarms}");
    assert!(verdict["figures"]["false_alarms"].as_u64().unwrap() >= 1);
}

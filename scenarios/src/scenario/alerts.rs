//! The scenario's `[alerts]` section: whether the drill runs the monitoring (Prometheus,
//! Alertmanager, the exporters), how its rule windows are scaled, and which alerts must fire,
//! be notified and resolve around which fault. Judged by `drill::checks::alerts`.

use std::path::PathBuf;
use std::time::Duration;

use chaos::faults::{duration_text, option_duration_text};
use serde::{Deserialize, Serialize};

/// `[alerts]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Run Prometheus, Alertmanager and the exporters beside the system, write `alerts.jsonl`
    /// and judge the expectations below and false alarms. Default false.
    #[serde(default)]
    pub monitoring: bool,
    /// Rule files instead of the shipped ones, relative to the scenario file (made absolute
    /// when the scenario is read).
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Multiplies every rule window, `for` and Alertmanager wait (1: the rules as written). It
    /// is multiplied by `--scale` too, like every duration of the drill.
    #[serde(default = "one")]
    pub time_factor: f64,
    /// After a fault ends, how long alerts may go on firing before they count as false alarms
    /// (default 60 s, scaled; the resolve windows below are judged on their own).
    #[serde(default = "settle_default", with = "duration_text")]
    pub settle: Duration,
    /// Alerts that may fire during a fault without being expected (shown, not judged).
    #[serde(default)]
    pub may_fire: Vec<String>,
    /// Which severities are alarms: an alert of another severity (`info`) is shown, never a
    /// false alarm. Default `["warning", "critical"]`.
    #[serde(default = "alarm_severities")]
    pub alarms: Vec<String>,
    /// The alerts that must detect the faults.
    #[serde(default)]
    pub expect: Vec<Expectation>,
}

/// `[[alerts.expect]]`: an alert that must detect a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The alert's name in the rules (`CircuitBreakerOpen`).
    pub alert: String,
    /// Which fault, numbered from 1 in timeline order as the drill prints them (`#1`); default:
    /// every fault of the timeline.
    #[serde(default)]
    pub fault: Option<usize>,
    /// Firing within this long of the fault's start (MTTD).
    #[serde(with = "duration_text")]
    pub fires_within: Duration,
    /// A firing notification received by the lab within this long of the fault's start.
    #[serde(default, with = "option_duration_text")]
    pub notified_within: Option<Duration>,
    /// No longer firing within this long of the fault's end.
    #[serde(default, with = "option_duration_text")]
    pub resolves_within: Option<Duration>,
}

fn one() -> f64 {
    1.0
}

fn settle_default() -> Duration {
    Duration::from_secs(60)
}

fn alarm_severities() -> Vec<String> {
    vec!["warning".into(), "critical".into()]
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            monitoring: false,
            rules: Vec::new(),
            time_factor: 1.0,
            settle: settle_default(),
            may_fire: Vec::new(),
            alarms: alarm_severities(),
            expect: Vec::new(),
        }
    }
}

/// The alert names a rule file defines (`- alert: NAME` lines).
pub fn rule_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix("alert:"))
        .map(|name| name.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .collect()
}

impl Alerts {
    /// Checks the section against the rules and the number of faults in the timeline; the error
    /// is `(field, message)`.
    pub fn validate(&self, rules: &str, faults: usize) -> Result<(), (String, String)> {
        if !(self.time_factor > 0.0 && self.time_factor <= 1.0) {
            return Err(("time_factor".into(), format!("{} must be > 0 and ≤ 1", self.time_factor)));
        }
        if !self.expect.is_empty() && !self.monitoring {
            return Err(("monitoring".into(), "alert expectations need `monitoring = true`".into()));
        }
        let names = rule_names(rules);
        let unknown = |name: &str| !names.iter().any(|n| n == name);
        for (i, e) in self.expect.iter().enumerate() {
            if unknown(&e.alert) {
                return Err((
                    format!("expect[{i}].alert"),
                    format!("no rule named {:?}; the rules have: {}", e.alert, names.join(", ")),
                ));
            }
            match e.fault {
                Some(0) => return Err((format!("expect[{i}].fault"), "faults are numbered from 1".into())),
                Some(n) if n > faults => {
                    return Err((format!("expect[{i}].fault"), format!("#{n}: the timeline has {faults} fault(s)")))
                }
                None if faults == 0 => {
                    return Err((format!("expect[{i}].fault"), "the timeline has no fault to detect".into()))
                }
                _ => {}
            }
        }
        for (i, name) in self.may_fire.iter().enumerate() {
            if unknown(name) {
                return Err((
                    format!("may_fire[{i}]"),
                    format!("no rule named {name:?}; the rules have: {}", names.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n      - alert: \"B\"\n        expr: y\n      - record: r\n";

    fn expect(alert: &str, fault: Option<usize>) -> Expectation {
        Expectation {
            alert: alert.into(),
            fault,
            fires_within: Duration::from_secs(10),
            notified_within: None,
            resolves_within: None,
        }
    }

    #[test]
    fn rule_names_are_read_from_the_rule_file() {
        assert_eq!(rule_names(RULES), ["A", "B"]);
        assert!(rule_names(chaos::monitoring::SHIPPED_RULES).contains(&"CircuitBreakerOpen".to_string()));
    }

    #[test]
    fn expectations_name_a_rule_and_a_fault_of_the_timeline() {
        let ok =
            Alerts { monitoring: true, expect: vec![expect("A", Some(2)), expect("B", None)], ..Alerts::default() };
        assert_eq!(ok.validate(RULES, 2), Ok(()));
        let unknown = Alerts { monitoring: true, expect: vec![expect("Nope", None)], ..Alerts::default() };
        let (field, message) = unknown.validate(RULES, 1).unwrap_err();
        assert_eq!(field, "expect[0].alert");
        assert!(message.contains("no rule named \"Nope\"; the rules have: A, B"), "{message}");
        let far = Alerts { monitoring: true, expect: vec![expect("A", Some(3))], ..Alerts::default() };
        assert_eq!(far.validate(RULES, 2).unwrap_err().0, "expect[0].fault");
        let none = Alerts { monitoring: true, expect: vec![expect("A", None)], ..Alerts::default() };
        assert!(none.validate(RULES, 0).unwrap_err().1.contains("no fault"));
        let off = Alerts { expect: vec![expect("A", None)], ..Alerts::default() };
        assert_eq!(off.validate(RULES, 1).unwrap_err().0, "monitoring");
        let factor = Alerts { time_factor: 2.0, ..Alerts::default() };
        assert_eq!(factor.validate(RULES, 1).unwrap_err().0, "time_factor");
    }
}

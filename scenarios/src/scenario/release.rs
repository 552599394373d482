//! The scenario's `[release]` section: the candidate build a `deploy` entry of the timeline puts
//! out (its binary and environment), and the canary gate — a PromQL condition the testbed's
//! Prometheus evaluates, on whose breach the lab rolls the candidate back by itself. Run by
//! `drill::release`, judged by `drill::checks::release`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaos::faults::{duration_text, Target};
use serde::{Deserialize, Serialize};

/// `[release]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The candidate's name: its services run with `FLASHSALE_RELEASE` set to it, Prometheus
    /// scrapes them with the label `release="<name>"`, and every outcome they publish carries
    /// it. Default `candidate`.
    #[serde(default = "candidate")]
    pub name: String,
    /// The candidate's `flashsale` binary. `${VAR}` is read from the lab's environment when the
    /// drill starts (the shipped drills name `${FLASHSALE_BUGS_BIN}`, the build with the known
    /// bugs); a relative path is from the scenario file. Default: the release's own binary —
    /// a candidate that differs by `env` only (a configuration change).
    #[serde(default)]
    pub bin: Option<String>,
    /// Environment the candidate's services get on top of the scenario's `env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The canary gate; absent: nothing watches the candidate (only a `rollback` entry of the
    /// timeline undoes a deploy).
    #[serde(default)]
    pub gate: Option<Gate>,
    /// The scenario file's directory, for a relative `bin` (set when the file is read).
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[release.gate]`: when the candidate is bad.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// PromQL, evaluated by the testbed's Prometheus while a candidate runs: the candidate is
    /// bad while it returns a sample (like an alert rule's `expr`). Select the candidate with
    /// `{release="<name>"}`. Its range selectors (`[20s]`) are scaled with `--scale`, at least
    /// 3 s, like the alert rules'.
    pub query: String,
    /// How long the query must keep returning a sample before the rollback (scaled; default 0:
    /// the first breach).
    #[serde(default, rename = "for", with = "duration_text")]
    pub hold: Duration,
    /// How often the lab asks (default 1 s, Prometheus's scrape interval in the testbed).
    #[serde(default = "every_default", with = "duration_text")]
    pub every: Duration,
}

fn candidate() -> String {
    "candidate".into()
}

fn every_default() -> Duration {
    Duration::from_secs(1)
}

/// What a `deploy` or `rollback` entry replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployTarget {
    /// `processor[N]`, `gateway[N]`: one instance (a canary).
    One(Target),
    /// `processors`: every processor, one after another (a rolling update).
    Processors,
    /// `gateways`: every gateway, one after another.
    Gateways,
    /// `rollback` without a target: every instance running the candidate.
    Deployed,
}

impl DeployTarget {
    /// Parses a `deploy` target.
    pub fn parse(text: &str) -> Result<DeployTarget, String> {
        match text {
            "processors" => Ok(DeployTarget::Processors),
            "gateways" => Ok(DeployTarget::Gateways),
            other => match other.parse::<Target>() {
                Ok(t @ (Target::Processor(_) | Target::Gateway(_))) => Ok(DeployTarget::One(t)),
                _ => Err(format!("{other:?}: a deploy replaces processor[N], gateway[N], processors or gateways")),
            },
        }
    }

    /// The instances it names in a topology of `processors` and `gateways` (`Deployed`: none —
    /// the runner knows which run the candidate).
    pub fn expand(self, processors: usize, gateways: usize) -> Vec<Target> {
        match self {
            DeployTarget::One(t) => vec![t],
            DeployTarget::Processors => (0..processors).map(Target::Processor).collect(),
            DeployTarget::Gateways => (0..gateways).map(Target::Gateway).collect(),
            DeployTarget::Deployed => Vec::new(),
        }
    }
}

impl std::fmt::Display for DeployTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployTarget::One(t) => write!(f, "{t}"),
            DeployTarget::Processors => f.write_str("processors"),
            DeployTarget::Gateways => f.write_str("gateways"),
            DeployTarget::Deployed => f.write_str("every instance of the candidate"),
        }
    }
}

impl Release {
    /// The candidate's binary: `bin` with `${VAR}` read from the environment, from the scenario's
    /// directory when relative; `release` (the testbed's own) when `bin` is not set.
    pub fn program(&self, release: &Path) -> Result<PathBuf, String> {
        let Some(bin) = &self.bin else { return Ok(release.to_path_buf()) };
        let expanded = expand_vars(bin)?;
        let path = PathBuf::from(&expanded);
        let path = if path.is_relative() { self.base.join(path) } else { path };
        if !path.is_file() {
            return Err(format!("release.bin = {bin:?}: {} is not a file", path.display()));
        }
        Ok(std::path::absolute(&path).unwrap_or(path))
    }

    /// Shrinks the gate's windows and hold with the drill (`--scale`).
    pub fn scaled(mut self, factor: f64) -> Release {
        if let Some(gate) = &mut self.gate {
            gate.query = chaos::monitoring::scale_durations(&gate.query, factor).trim_end().to_string();
            gate.hold = Duration::from_secs_f64(gate.hold.as_secs_f64() * factor);
        }
        self
    }

    /// What is wrong with it: `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(("name".into(), format!("{:?}: letters, digits, '-', '_' and '.' only", self.name)));
        }
        if let Some(gate) = &self.gate {
            if gate.query.trim().is_empty() {
                return Err(("gate.query".into(), "an empty query is never breached".into()));
            }
            if gate.every.is_zero() || gate.every > Duration::from_secs(60) {
                return Err(("gate.every".into(), "above 0 and at most 60s".into()));
            }
        }
        if let Some(bin) = &self.bin {
            // Checked now for its syntax; the variables are read when the drill starts.
            if bin.matches("${").count() != bin.matches('}').count() {
                return Err(("bin".into(), format!("{bin:?}: an unclosed ${{…}}")));
            }
        }
        Ok(())
    }
}

/// `${VAR}` replaced by the variable's value; an unset one is an error naming it.
fn expand_vars(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("{text:?}: an unclosed ${{…}}"))?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| {
            if name == "FLASHSALE_BUGS_BIN" {
                format!(
                    "release.bin = {text:?}: FLASHSALE_BUGS_BIN is not set — build flashsale with its known bugs \
                     (ci/build-known-bugs prints the path to set it to)"
                )
            } else {
                format!("release.bin = {text:?}: ${{{name}}} is not set")
            }
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_targets_parse_and_expand() {
        assert_eq!(DeployTarget::parse("processor[1]"), Ok(DeployTarget::One(Target::Processor(1))));
        assert_eq!(DeployTarget::parse("processors").unwrap().expand(3, 1).len(), 3);
        assert_eq!(DeployTarget::parse("gateways").unwrap().expand(3, 2), vec![Target::Gateway(0), Target::Gateway(1)]);
        assert!(DeployTarget::parse("redis").unwrap_err().contains("processor[N]"));
    }

    #[test]
    fn a_binary_named_by_an_unset_variable_is_a_clear_error() {
        let release = Release {
            name: "candidate".into(),
            bin: Some("${FLASHLAB_TEST_SURELY_UNSET}/flashsale".into()),
            env: BTreeMap::new(),
            gate: None,
            base: PathBuf::from("/"),
        };
        let err = release.program(Path::new("/bin/true")).unwrap_err();
        assert!(err.contains("${FLASHLAB_TEST_SURELY_UNSET} is not set"), "{err}");
        let own = Release { bin: None, ..release };
        assert_eq!(own.program(Path::new("/bin/true")).unwrap(), PathBuf::from("/bin/true"));
    }

    #[test]
    fn the_gate_scales_its_windows_and_hold() {
        let release = Release {
            name: "candidate".into(),
            bin: None,
            env: BTreeMap::new(),
            gate: Some(Gate {
                query: r#"rate(processor_payments_total{release="candidate"}[20s]) > 1"#.into(),
                hold: Duration::from_secs(10),
                every: Duration::from_secs(1),
            }),
            base: PathBuf::new(),
        }
        .scaled(0.3);
        let gate = release.gate.unwrap();
        assert_eq!(gate.query, r#"rate(processor_payments_total{release="candidate"}[6s]) > 1"#);
        assert_eq!(gate.hold, Duration::from_secs(3));
    }
}

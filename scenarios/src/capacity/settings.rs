//! What a capacity search is asked: the command's options, a capacity file (`--slo FILE`), and
//! the defaults (docs/capacity.md). Options override the file; the file overrides the defaults.
//!
//! The capacity file (TOML; every table and key optional, unknown keys refused with
//! file:line):
//!
//! ```toml
//! [slo]        # availability, p99_ms, time_to_decision_p99_ms, lag_growth_share, max_dropped
//! [topology]   # gateways, processors, partitions
//! [env]        # the services' environment, e.g. PAYMENT_LATENCY = "20ms"
//! [search]     # start_rate, max_rate, resolution, trial_s, confirm_s, repeats, budget_s
//! [load]       # mix, polls
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use rundir::capacity::{Criteria, Peak, Search};
use serde::Deserialize;

use super::trial::Setup;
use crate::scenario::{find_line, line_of};

/// `flashlab capacity`'s options (`None`: from the file, else the default).
#[derive(Debug, Clone, Default)]
pub struct CapacityOptions {
    pub file: Option<PathBuf>,
    pub availability: Option<f64>,
    pub p99_ms: Option<f64>,
    pub time_to_decision_p99_ms: Option<f64>,
    /// `gateways=1,processors=2,partitions=6` (any of them).
    pub topology: Option<String>,
    /// `processors=1,2,4` or `gateways=1,2`.
    pub sweep: Option<String>,
    pub peak: Option<f64>,
    /// 0.3 for 30 %.
    pub headroom: f64,
    pub out: Option<PathBuf>,
    pub seed: u64,
    pub start_rate: Option<f64>,
    pub max_rate: Option<f64>,
    pub resolution: Option<f64>,
    pub trial_s: Option<f64>,
    pub confirm_s: Option<f64>,
    pub repeats: Option<u32>,
    /// Per topology.
    pub budget_s: Option<f64>,
    /// `KEY=VALUE` for the services.
    pub env: Vec<(String, String)>,
    pub quiet: bool,
    /// `--target URL`: search a deployment the lab did not start (load only).
    pub target: Option<String>,
    /// `--allow-remote`: a target (and metrics pages) off loopback.
    pub allow_remote: bool,
    /// `--metrics [NAME=]URL`: the deployment's `/metrics` pages.
    pub metrics: Vec<String>,
    /// `--item ID`: the item the trials buy (default 101).
    pub item: Option<String>,
    /// `--runtime`: where the lab's own system runs for each trial (default processes).
    pub runtime: chaos::testbed::RuntimeKind,
    /// `--image COMPONENT=IMAGE`: on containers, components from other images.
    pub images: Vec<(chaos::containers::images::Component, String)>,
}

/// The defaults.
pub const AVAILABILITY: f64 = 0.999;
pub const P99_MS: f64 = 1000.0;
pub const TIME_TO_DECISION_P99_MS: f64 = 5000.0;
pub const LAG_GROWTH_SHARE: f64 = 0.02;
pub const START_RATE: f64 = 100.0;
pub const MAX_RATE: f64 = 8000.0;
pub const RESOLUTION: f64 = 0.05;
pub const TRIAL_S: f64 = 15.0;
pub const CONFIRM_S: f64 = 45.0;
pub const REPEATS: u32 = 2;
pub const BUDGET_S: f64 = 1200.0;
pub const MIX: &str = "buyer=100";
pub const POLLS: u32 = 1;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    slo: FileSlo,
    #[serde(default)]
    topology: FileTopology,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    search: FileSearch,
    #[serde(default)]
    load: FileLoad,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSlo {
    availability: Option<f64>,
    p99_ms: Option<f64>,
    time_to_decision_p99_ms: Option<f64>,
    lag_growth_share: Option<f64>,
    max_dropped: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTopology {
    gateways: Option<usize>,
    processors: Option<usize>,
    partitions: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSearch {
    start_rate: Option<f64>,
    max_rate: Option<f64>,
    resolution: Option<f64>,
    trial_s: Option<f64>,
    confirm_s: Option<f64>,
    repeats: Option<u32>,
    budget_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLoad {
    mix: Option<String>,
    polls: Option<u32>,
}

/// The search as it will run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub criteria: Criteria,
    pub search: Search,
    pub peak: Option<Peak>,
    pub seed: u64,
    pub topologies: Vec<Setup>,
    /// The swept parameter (`processors`), when there is a sweep.
    pub sweep: Option<String>,
}

impl Settings {
    pub fn describe(&self) -> String {
        format!(
            "sustainable = availability ≥ {} %, p99 ≤ {} ms, time to decision p99 ≤ {} ms, lag not growing; trials {} s, confirmation {} s, resolution {} %, budget {} s",
            self.criteria.availability * 100.0,
            self.criteria.p99_ms,
            self.criteria.time_to_decision_p99_ms,
            self.search.trial_s,
            self.search.confirm_s,
            self.search.resolution * 100.0,
            self.search.budget_s
        )
    }
}

/// A problem with the options or the file: what, and where.
fn bad(msg: String) -> anyhow::Error {
    anyhow::anyhow!(msg)
}

/// Reads the file (if any), applies the options and checks every value.
pub fn resolve(o: &CapacityOptions) -> anyhow::Result<Settings> {
    let (file, text, path) = match &o.file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| bad(format!("{}: {e}", p.display())))?;
            let file: File = toml::from_str(&text).map_err(|e| {
                let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(1);
                bad(format!("{}:{line}: {}", p.display(), e.message()))
            })?;
            (file, text, p.display().to_string())
        }
        None => (File::default(), String::new(), "options".to_string()),
    };
    // file:line:field for a value from the file; the option's name for one given on the line.
    let at = |key: &str, field: &str, from_file: bool, msg: &str| {
        if from_file {
            bad(format!("{path}:{}: {field}: {msg}", find_line(&text, key)))
        } else {
            bad(format!("--{}: {msg}", field.rsplit('.').next().unwrap_or(field).replace('_', "-")))
        }
    };
    let pick = |opt: Option<f64>, file: Option<f64>, default: f64| (opt.or(file).unwrap_or(default), opt.is_none() && file.is_some());
    let (availability, af) = pick(o.availability, file.slo.availability, AVAILABILITY);
    let (p99_ms, pf) = pick(o.p99_ms, file.slo.p99_ms, P99_MS);
    let (ttd, tf) = pick(o.time_to_decision_p99_ms, file.slo.time_to_decision_p99_ms, TIME_TO_DECISION_P99_MS);
    let (lag_share, lf) = pick(None, file.slo.lag_growth_share, LAG_GROWTH_SHARE);
    if !(0.0..=1.0).contains(&availability) {
        return Err(at("availability", "slo.availability", af, "between 0 and 1, e.g. 0.999"));
    }
    for (key, v, from_file) in [("p99_ms", p99_ms, pf), ("time_to_decision_p99_ms", ttd, tf)] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(at(key, &format!("slo.{key}"), from_file, "a positive number of milliseconds"));
        }
    }
    if !(0.0..=1.0).contains(&lag_share) {
        return Err(at("lag_growth_share", "slo.lag_growth_share", lf, "a share of the rate, 0 to 1"));
    }
    let criteria = Criteria {
        availability,
        p99_ms,
        time_to_decision_p99_ms: ttd,
        lag_growth_share: lag_share,
        max_dropped: file.slo.max_dropped.unwrap_or(0),
    };
    let (start_rate, sf) = pick(o.start_rate, file.search.start_rate, START_RATE);
    let (max_rate, mf) = pick(o.max_rate, file.search.max_rate, MAX_RATE);
    let (resolution, rf) = pick(o.resolution, file.search.resolution, RESOLUTION);
    let (trial_s, trf) = pick(o.trial_s, file.search.trial_s, TRIAL_S);
    let (confirm_s, cf) = pick(o.confirm_s, file.search.confirm_s, CONFIRM_S);
    let (budget_s, bf) = pick(o.budget_s, file.search.budget_s, BUDGET_S);
    let repeats = o.repeats.or(file.search.repeats).unwrap_or(REPEATS);
    if !(start_rate >= 1.0 && start_rate <= 100_000.0) {
        return Err(at("start_rate", "search.start_rate", sf, "orders/s from 1 to 100000"));
    }
    if !(max_rate >= start_rate && max_rate <= 100_000.0) {
        return Err(at("max_rate", "search.max_rate", mf, "orders/s, at least the start rate, at most 100000"));
    }
    if !(0.005..=0.5).contains(&resolution) {
        return Err(at("resolution", "search.resolution", rf, "a share from 0.005 (0.5 %) to 0.5"));
    }
    for (key, v, from_file) in [("trial_s", trial_s, trf), ("confirm_s", confirm_s, cf)] {
        if !(2.0..=3600.0).contains(&v) {
            return Err(at(key, &format!("search.{key}"), from_file, "seconds from 2 to 3600"));
        }
    }
    if !(10.0..=86_400.0).contains(&budget_s) {
        return Err(at("budget_s", "search.budget_s", bf, "seconds from 10 to 86400"));
    }
    if repeats > 10 {
        return Err(at("repeats", "search.repeats", o.repeats.is_none(), "0 to 10"));
    }
    let search = Search { start_rate, max_rate, resolution, trial_s, confirm_s, repeats, budget_s };

    // Topology: file, then --topology.
    let mut base = (
        file.topology.gateways.unwrap_or(1),
        file.topology.processors.unwrap_or(1),
        file.topology.partitions.unwrap_or(6),
    );
    if let Some(spec) = &o.topology {
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("--topology {part:?}: expected KEY=N, e.g. processors=2")))?;
            let n: u32 =
                v.trim().parse().map_err(|_| bad(format!("--topology {part:?}: {v:?} is not a whole number")))?;
            match k.trim() {
                "gateways" => base.0 = n as usize,
                "processors" => base.1 = n as usize,
                "partitions" => base.2 = n,
                other => return Err(bad(format!("--topology: {other:?}: one of gateways, processors, partitions"))),
            }
        }
    }
    let check_topology = |(g, p, parts): (usize, usize, u32)| -> anyhow::Result<()> {
        if !(1..=8).contains(&g) {
            return Err(bad(format!("gateways={g}: 1 to 8")));
        }
        if !(1..=8).contains(&p) {
            return Err(bad(format!("processors={p}: 1 to 8 (a capacity search needs one to decide orders)")));
        }
        if !(1..=64).contains(&parts) {
            return Err(bad(format!("partitions={parts}: 1 to 64")));
        }
        Ok(())
    };
    let mut env = file.env.clone();
    for (k, v) in &o.env {
        env.insert(k.clone(), v.clone());
    }
    let mix = file.load.mix.clone().unwrap_or_else(|| MIX.into());
    mix.parse::<loadgen::UserMix>().map_err(|e| at("mix", "load.mix", true, &e))?;
    let polls = file.load.polls.unwrap_or(POLLS);
    let item = o.item.clone().unwrap_or_else(|| super::trial::ITEM.to_string());
    if item.is_empty() || item.len() > 64 || !item.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(bad(format!("--item {item:?}: 1 to 64 of A-Z a-z 0-9 - _ . :")));
    }
    if o.target.is_some() {
        // The deployment's shape and settings are not the lab's to change.
        for (given, what) in [
            (o.sweep.is_some(), "--sweep"),
            (o.topology.is_some(), "--topology"),
            (!o.env.is_empty(), "--env"),
            (o.runtime != chaos::testbed::RuntimeKind::Processes, "--runtime"),
            (!o.images.is_empty(), "--image"),
            (file.topology.gateways.or(file.topology.processors).is_some() || file.topology.partitions.is_some(), "[topology]"),
            (!file.env.is_empty(), "[env]"),
        ] {
            if given {
                return Err(bad(format!(
                    "{what}: a deployment given with --target runs as it is; the lab starts no system to shape"
                )));
            }
        }
    } else if !o.images.is_empty() && o.runtime != chaos::testbed::RuntimeKind::Containers {
        return Err(bad("--image: images are for the container runtime; give --runtime containers".into()));
    } else if !o.metrics.is_empty() || o.allow_remote || o.item.is_some() {
        return Err(bad("--metrics, --allow-remote and --item go with --target (the lab's own system is scraped and stocked by the lab)".into()));
    }
    let setup = |(g, p, parts): (usize, usize, u32), label: String| Setup {
        label,
        gateways: g,
        processors: p,
        partitions: parts,
        env: env.clone(),
        mix: mix.clone(),
        polls,
        seed: o.seed,
        item: item.clone(),
        runtime: o.runtime,
        images: o.images.clone(),
    };
    let (topologies, sweep) = match &o.sweep {
        None if o.target.is_some() => (vec![setup(base, "target".into())], None),
        None => {
            check_topology(base)?;
            (vec![setup(base, format!("processors={}", base.1))], None)
        }
        Some(spec) => {
            let (k, values) = spec
                .split_once('=')
                .ok_or_else(|| bad(format!("--sweep {spec:?}: expected processors=1,2,4 or gateways=1,2")))?;
            let mut ns = Vec::new();
            for v in values.split(',') {
                let n: usize =
                    v.trim().parse().map_err(|_| bad(format!("--sweep {spec:?}: {v:?} is not a whole number")))?;
                if ns.contains(&n) {
                    return Err(bad(format!("--sweep {spec:?}: {n} twice")));
                }
                ns.push(n);
            }
            ns.sort_unstable();
            let mut out = Vec::new();
            for n in ns {
                let t = match k.trim() {
                    "processors" => (base.0, n, base.2.max(n as u32)),
                    "gateways" => (n, base.1, base.2),
                    other => return Err(bad(format!("--sweep: {other:?}: processors or gateways"))),
                };
                check_topology(t)?;
                out.push(setup(t, format!("{}={n}", k.trim())));
            }
            (out, Some(k.trim().to_string()))
        }
    };
    let peak = match o.peak {
        Some(rate) if rate > 0.0 && rate.is_finite() => {
            if !(0.0..=10.0).contains(&o.headroom) {
                return Err(bad("--headroom: 0 % to 1000 %".into()));
            }
            Some(Peak { rate, headroom: o.headroom })
        }
        Some(rate) => return Err(bad(format!("--peak {rate}: a positive rate in orders/s"))),
        None => None,
    };
    Ok(Settings { criteria, search, peak, seed: o.seed, topologies, sweep })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaos::containers::images::Component;

    fn with_file(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.toml");
        std::fs::write(&path, text).unwrap();
        resolve(&CapacityOptions { file: Some(path), ..CapacityOptions::default() })
    }

    #[test]
    fn defaults_file_and_options_layer() {
        let s = resolve(&CapacityOptions::default()).unwrap();
        assert_eq!(s.criteria.availability, AVAILABILITY);
        assert_eq!(s.search.start_rate, START_RATE);
        assert_eq!(s.topologies.len(), 1);
        let s = with_file("[slo]\np99_ms = 250\n[env]\nPAYMENT_LATENCY = \"20ms\"\n").unwrap();
        assert_eq!(s.criteria.p99_ms, 250.0);
        assert_eq!(s.topologies[0].env["PAYMENT_LATENCY"], "20ms");
        let s = resolve(&CapacityOptions { sweep: Some("processors=4,1,2".into()), ..Default::default() }).unwrap();
        let labels: Vec<&str> = s.topologies.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["processors=1", "processors=2", "processors=4"]);
    }

    #[test]
    fn bad_values_name_the_file_line_and_field() {
        let e = with_file("[slo]\n\navailability = 1.5\n").unwrap_err().to_string();
        assert!(e.ends_with("cap.toml:3: slo.availability: between 0 and 1, e.g. 0.999"), "{e}");
        let e = with_file("[search]\nresolutoin = 0.1\n").unwrap_err().to_string();
        assert!(e.contains("cap.toml:2:") && e.contains("resolutoin"), "{e}");
        let e = resolve(&CapacityOptions { sweep: Some("processors=1,x".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"x\" is not a whole number"), "{e}");
        let e = resolve(&CapacityOptions { resolution: Some(0.9), ..Default::default() }).unwrap_err().to_string();
        assert!(e.starts_with("--resolution:"), "{e}");
    }

    #[test]
    fn images_go_with_the_container_runtime_and_reach_every_trial() {
        let images = vec![(Component::Redis, "redis:7.2".to_string())];
        let e = resolve(&CapacityOptions { images: images.clone(), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("--image: images are for the container runtime"), "{e}");
        let containers = chaos::testbed::RuntimeKind::Containers;
        let s = resolve(&CapacityOptions { images: images.clone(), runtime: containers, ..Default::default() }).unwrap();
        assert!(s.topologies.iter().all(|t| t.images == images), "{:?}", s.topologies);
    }

    #[test]
    fn a_deployment_is_searched_as_it_is() {
        let target = Some("http://127.0.0.1:8080".to_string());
        let s = resolve(&CapacityOptions { target: target.clone(), item: Some("sku-7".into()), ..Default::default() }).unwrap();
        assert_eq!((s.topologies.len(), s.topologies[0].label.as_str(), s.topologies[0].item.as_str()), (1, "target", "sku-7"));
        for o in [
            CapacityOptions { sweep: Some("processors=1,2".into()), ..Default::default() },
            CapacityOptions { env: vec![("PAYMENT_LATENCY".into(), "1ms".into())], ..Default::default() },
            CapacityOptions { runtime: chaos::testbed::RuntimeKind::Containers, ..Default::default() },
            CapacityOptions { images: vec![(Component::Redis, "redis:7.2".into())], ..Default::default() },
        ] {
            let e = resolve(&CapacityOptions { target: target.clone(), ..o }).unwrap_err().to_string();
            assert!(e.contains("runs as it is"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.toml");
        std::fs::write(&path, "[topology]\nprocessors = 2\n").unwrap();
        let e = resolve(&CapacityOptions { target: target.clone(), file: Some(path), ..Default::default() }).unwrap_err();
        assert!(e.to_string().starts_with("[topology]:"), "{e}");
        let e = resolve(&CapacityOptions { metrics: vec!["http://127.0.0.1:9090/metrics".into()], ..Default::default() })
            .unwrap_err();
        assert!(e.to_string().contains("go with --target"), "{e}");
        let e = resolve(&CapacityOptions { target, item: Some("a b".into()), ..Default::default() }).unwrap_err();
        assert!(e.to_string().starts_with("--item"), "{e}");
    }
}

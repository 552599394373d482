//! The gate's suite file (TOML): which drills, at what scale, how many runs a side, and the
//! statistics' settings. Unknown fields and bad values are errors naming the file, the line and
//! the field, as for scenario files.
//!
//! ```toml
//! repetitions = 5          # runs of each drill on each side: the knob that trades time for power
//! scale = 0.3
//!
//! [[drill]]
//! name = "kafka-outage"
//! figures = ["availability", "p99_ms", "rto_s"]   # default: every figure the run has
//! effects = { availability = { absolute = 0.02 } } # this drill's, over the suite's
//!
//! [effects]                # the smallest changes that matter, overriding the defaults
//! p99_ms = { relative = 0.2, absolute = 10 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::figures;
use crate::scenario::{find_line, line_of, ScenarioError};

/// A parsed suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Runs of each drill on each side (default 5; at least 3: below, no test can reach 5 %).
    #[serde(default = "five")]
    pub repetitions: u32,
    /// `--scale` of every run (default 0.3).
    #[serde(default = "point_three")]
    pub scale: f64,
    /// The first run's seed; run i of a drill uses seed + i on both sides (default 1).
    #[serde(default = "one")]
    pub seed: u64,
    /// The test's significance level (default 0.05).
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// The bootstrap interval's confidence (default 0.95).
    #[serde(default = "confidence")]
    pub confidence: f64,
    #[serde(rename = "drill")]
    pub drills: Vec<SuiteDrill>,
    /// Per figure, the smallest change that matters (default: [`figures::FIGURES`]).
    #[serde(default)]
    pub effects: BTreeMap<String, Effect>,
    /// The suite file's directory, for drills named by a relative file (set when read).
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[[drill]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteDrill {
    /// A shipped drill's name or a scenario file (relative to the suite file).
    pub name: String,
    /// Overrides the suite's.
    #[serde(default)]
    pub repetitions: Option<u32>,
    #[serde(default)]
    pub scale: Option<f64>,
    /// The figures judged; default every one the runs have.
    #[serde(default)]
    pub figures: Vec<String>,
    /// Per figure, the smallest change that matters in this drill (overrides the suite's): a
    /// third of kafka-outage's run is an outage, and its availability moves by a point from run
    /// to run where a sale without a fault's does not move at all.
    #[serde(default)]
    pub effects: BTreeMap<String, Effect>,
}

/// `[effects]`: the smallest change that matters of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    /// A share of the base's median.
    #[serde(default)]
    pub relative: f64,
    /// In the figure's unit.
    #[serde(default)]
    pub absolute: f64,
}

fn five() -> u32 {
    5
}
fn point_three() -> f64 {
    0.3
}
fn one() -> u64 {
    1
}
fn alpha() -> f64 {
    0.05
}
fn confidence() -> f64 {
    0.95
}

/// The most runs a side a suite may ask for (a bound on the gate's time).
pub const MAX_REPETITIONS: u32 = 50;

impl Suite {
    /// A drill's runs a side.
    pub fn repetitions_of(&self, d: &SuiteDrill) -> u32 {
        d.repetitions.unwrap_or(self.repetitions)
    }

    /// A drill's scale.
    pub fn scale_of(&self, d: &SuiteDrill) -> f64 {
        d.scale.unwrap_or(self.scale)
    }

    /// The smallest change that matters of `figure` in `drill`: the drill's, else the suite's,
    /// else the default.
    pub fn effect_of(&self, drill: &SuiteDrill, figure: &figures::Figure) -> Effect {
        drill
            .effects
            .get(figure.name)
            .or_else(|| self.effects.get(figure.name))
            .copied()
            .unwrap_or(Effect { relative: figure.min_relative, absolute: figure.min_absolute })
    }

    /// What `drill` names, as `flashlab drill` takes it: a file relative to the suite, or a
    /// shipped drill's name.
    pub fn drill_arg(&self, d: &SuiteDrill) -> String {
        let file = self.base.join(&d.name);
        if d.name.ends_with(".toml") && file.is_file() {
            file.display().to_string()
        } else {
            d.name.clone()
        }
    }
}

/// Reads and checks a suite file.
pub fn load(path: &Path) -> Result<Suite, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
    let mut suite = parse(&text, &path.display().to_string())?;
    suite.base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok(suite)
}

/// Parses and checks suite text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Suite, ScenarioError> {
    let suite: Suite = toml::from_str(text).map_err(|e| {
        let message = e.message().to_string();
        match e.span().map(|s| line_of(text, s.start)) {
            Some(line) => ScenarioError::Parse { path: format!("{path}:{line}"), message },
            None => ScenarioError::Parse { path: path.to_string(), message },
        }
    })?;
    let invalid = |line: usize, field: String, message: String| ScenarioError::Invalid {
        path: path.to_string(),
        line,
        field,
        message,
    };
    let reps = |n: u32| (3..=MAX_REPETITIONS).contains(&n);
    let scale_ok = |f: f64| f > 0.0 && f <= 1.0;
    if !reps(suite.repetitions) {
        let message = format!("{} must be 3 to {MAX_REPETITIONS}", suite.repetitions);
        return Err(invalid(find_line(text, "repetitions"), "repetitions".into(), message));
    }
    if !scale_ok(suite.scale) {
        return Err(invalid(
            find_line(text, "scale"),
            "scale".into(),
            format!("{} must be above 0, at most 1", suite.scale),
        ));
    }
    if !(suite.alpha > 0.0 && suite.alpha < 0.5) {
        return Err(invalid(
            find_line(text, "alpha"),
            "alpha".into(),
            format!("{} must be above 0, below 0.5", suite.alpha),
        ));
    }
    if !(suite.confidence > 0.5 && suite.confidence < 1.0) {
        let message = format!("{} must be above 0.5, below 1", suite.confidence);
        return Err(invalid(find_line(text, "confidence"), "confidence".into(), message));
    }
    if suite.drills.is_empty() {
        return Err(invalid(1, "drill".into(), "at least one [[drill]]".into()));
    }
    for (i, d) in suite.drills.iter().enumerate() {
        let entry = text.lines().enumerate().filter(|(_, l)| l.trim() == "[[drill]]").nth(i).map_or(1, |(n, _)| n + 1);
        let line = |key: &str| {
            text.lines()
                .enumerate()
                .skip(entry)
                .take_while(|(_, l)| !l.trim_start().starts_with('['))
                .find(|(_, l)| l.trim_start().starts_with(key))
                .map_or(entry, |(n, _)| n + 1)
        };
        if let Some(n) = d.repetitions.filter(|n| !reps(*n)) {
            return Err(invalid(
                line("repetitions"),
                format!("drill[{i}].repetitions"),
                format!("{n} must be 3 to {MAX_REPETITIONS}"),
            ));
        }
        if let Some(f) = d.scale.filter(|f| !scale_ok(*f)) {
            return Err(invalid(line("scale"), format!("drill[{i}].scale"), format!("{f} must be above 0, at most 1")));
        }
        for f in &d.figures {
            if figures::figure(f).is_none() {
                return Err(invalid(line("figures"), format!("drill[{i}].figures"), unknown_figure(f)));
            }
        }
        if let Some((field, message)) = bad_effect(&d.effects) {
            return Err(invalid(line("effects"), format!("drill[{i}].effects.{field}"), message));
        }
    }
    if let Some((field, message)) = bad_effect(&suite.effects) {
        return Err(invalid(find_line(text, &field), format!("effects.{field}"), message));
    }
    Ok(suite)
}

/// The first effect of `effects` naming no figure, or one that would flag any change.
fn bad_effect(effects: &BTreeMap<String, Effect>) -> Option<(String, String)> {
    effects.iter().find_map(|(name, e)| {
        if figures::figure(name).is_none() {
            Some((name.clone(), unknown_figure(name)))
        } else if e.relative < 0.0 || e.absolute < 0.0 || e.relative + e.absolute <= 0.0 {
            let why = "relative and absolute at least 0, one of them above: a zero effect flags any change";
            Some((name.clone(), why.into()))
        } else {
            None
        }
    })
}

fn unknown_figure(name: &str) -> String {
    let known: Vec<&str> = figures::FIGURES.iter().map(|f| f.name).collect();
    format!("unknown figure {name:?}; known: {}", known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "repetitions = 4\n\n[[drill]]\nname = \"kafka-outage\"\nfigures = [\"p99_ms\", \"rto_s\"]\n\n\
[[drill]]\nname = \"processor-crash\"\nrepetitions = 6\nscale = 0.5\neffects = { rto_s = { absolute = 3 } }\n\n\
[effects]\np99_ms = { relative = 0.3, absolute = 5 }\n";

    #[test]
    fn a_good_suite_parses_with_defaults_and_overrides() {
        let s = parse(GOOD, "s.toml").unwrap();
        assert_eq!((s.repetitions, s.scale, s.alpha, s.confidence, s.seed), (4, 0.3, 0.05, 0.95, 1));
        assert_eq!((s.repetitions_of(&s.drills[0]), s.scale_of(&s.drills[0])), (4, 0.3));
        assert_eq!((s.repetitions_of(&s.drills[1]), s.scale_of(&s.drills[1])), (6, 0.5));
        let p99 = figures::figure("p99_ms").unwrap();
        assert_eq!(s.effect_of(&s.drills[0], p99), Effect { relative: 0.3, absolute: 5.0 });
        let rto = figures::figure("rto_s").unwrap();
        assert_eq!(s.effect_of(&s.drills[0], rto), Effect { relative: 0.25, absolute: 1.0 }, "the default");
        assert_eq!(s.effect_of(&s.drills[1], rto), Effect { relative: 0.0, absolute: 3.0 }, "the drill's own");
        assert_eq!(s.effect_of(&s.drills[1], p99), Effect { relative: 0.3, absolute: 5.0 }, "the suite's");
    }

    #[test]
    fn bad_suites_name_their_line_and_field() {
        let cases = [
            (GOOD.replace("repetitions = 6", "repetitions = 2"), "s.toml:9: drill[1].repetitions: 2 must be 3 to 50"),
            (GOOD.replace("\"rto_s\"", "\"rto\""), "s.toml:5: drill[0].figures: unknown figure \"rto\""),
            (
                GOOD.replace("relative = 0.3, absolute = 5", "relative = 0, absolute = 0"),
                "s.toml:14: effects.p99_ms: relative and absolute",
            ),
            (
                GOOD.replace("rto_s = { absolute = 3 }", "rto = { absolute = 3 }"),
                "s.toml:11: drill[1].effects.rto: unknown figure",
            ),
            (
                GOOD.replace("rto_s = { absolute = 3 }", "rto_s = { absolute = -1 }"),
                "s.toml:11: drill[1].effects.rto_s: relative and absolute",
            ),
            (GOOD.replace("scale = 0.5", "scale = 2"), "s.toml:10: drill[1].scale: 2 must be above 0"),
            (GOOD.replace("repetitions = 4", "repetitions = 1"), "s.toml:1: repetitions: 1 must be 3 to 50"),
            (GOOD.replace("name = \"kafka-outage\"", "nmae = \"kafka-outage\""), "s.toml:4"),
            ("repetitions = 3\n".to_string(), "missing field `drill`"),
        ];
        for (text, want) in cases {
            let err = parse(&text, "s.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}

//! `flashlab gate` and `flashlab baseline update`: run a suite's drills on two sides and judge
//! every figure as a distribution.
//!
//! A/B (`--base-bin`/`--head-bin`, `--base-env`/`--head-env`): both sides run here, their runs
//! interleaved — base then head for even repetitions, head then base for odd ones — so that
//! whatever else the shared runner does in the meantime falls on both sides alike. Against a
//! stored baseline (`--baseline DIR`), only the head runs and the base's runs are the baseline's;
//! a baseline of another suite, scale, repetitions or seed is refused. Every run is a drill run
//! directory under the gate's (`<drill>/<side>-NN/`), `gate.json` is rewritten after each run
//! (a gate cut short keeps what it measured), and the reports are rendered at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use rundir::gate::{DrillGate, GateRun, GateRunRecord, Machine, Side};

use super::{compare, figures, suite};
use crate::drill::{self, DrillError, DrillOptions};

/// What one side runs.
#[derive(Debug, Clone, Default)]
pub struct SideOptions {
    /// The `flashsale` binary (default: the lab's own).
    pub bin: Option<PathBuf>,
    /// An env file (`KEY=VALUE` lines) for its services.
    pub env_file: Option<PathBuf>,
}

/// How the gate is asked for.
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub suite: PathBuf,
    /// The gate's directory (default `runs/gate-<utc time>`).
    pub out: Option<PathBuf>,
    pub base: SideOptions,
    pub head: SideOptions,
    /// Compare the head with this stored baseline instead of running a base.
    pub baseline: Option<PathBuf>,
    /// Run the base side only and store it as a baseline (`flashlab baseline update`).
    pub update_baseline: bool,
    pub quiet: bool,
}

/// The gate's directory and its record.
#[derive(Debug)]
pub struct Gated {
    pub dir: PathBuf,
    pub run: GateRun,
}

/// Runs the gate. `stop` (Ctrl-C) ends it after the run in progress stops.
pub async fn gate(
    options: GateOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Gated> {
    let suite = suite::load(&options.suite)?;
    let started_ms = chaos::events::unix_ms();
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("gate-{}", drill::utc_stamp(started_ms / 1000))));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{}: exists and is not empty; give another --out or remove it", dir.display());
    }
    let commit = drill::version_of("git", &["rev-parse", "HEAD"]).await;
    let base = side("base", &options.base, &commit)?;
    let head = side("head", &options.head, &commit)?;
    let baseline = match &options.baseline {
        Some(b) => Some(load_baseline(b, &suite, &options.suite)?),
        None => None,
    };
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let mode = match (&baseline, options.update_baseline) {
        (_, true) => "baseline update",
        (Some(_), false) => "baseline",
        (None, false) => "a/b",
    };
    let mut run = GateRun {
        started_unix_ms: started_ms,
        ended_unix_ms: None,
        mode: mode.into(),
        suite: options.suite.display().to_string(),
        alpha: suite.alpha,
        confidence: suite.confidence,
        base: baseline.as_ref().map_or(base.clone(), |(b, _)| b.base.clone()),
        head,
        machine: machine(),
        drills: Vec::new(),
        interrupted: false,
    };
    if let Some((b, _)) = &baseline {
        if b.machine != run.machine && !options.quiet {
            eprintln!(
                "gate: the baseline ran on another machine ({} CPUs, {} MiB) than this one ({} CPUs, {} MiB): its figures may differ for that alone",
                b.machine.cpus, b.machine.memory_mib, run.machine.cpus, run.machine.memory_mib
            );
        }
    }

    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            drill::stop_or_goose(stop).await;
            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }
    let head_side = run.head.clone();
    let sides: Vec<(&str, &Side)> = match mode {
        "baseline update" => vec![("base", &base)],
        "baseline" => vec![("head", &head_side)],
        _ => vec![("base", &base), ("head", &head_side)],
    };
    let total: u32 = suite.drills.iter().map(|d| suite.repetitions_of(d)).sum::<u32>() * sides.len() as u32;
    let mut done = 0u32;
    let gate_started = Instant::now();
    'drills: for (di, d) in suite.drills.iter().enumerate() {
        let reps = suite.repetitions_of(d);
        let mut record = DrillGate {
            drill: d.name.clone(),
            scale: suite.scale_of(d),
            repetitions: reps,
            runs: Vec::new(),
            figures: Vec::new(),
        };
        if let Some((b, bdir)) = &baseline {
            // The stored base's runs, their directories made absolute.
            let stored = b.drills.iter().find(|x| x.drill == d.name).map(|x| x.runs.clone()).unwrap_or_default();
            record.runs.extend(stored.into_iter().filter(|r| r.side == "base").map(|mut r| {
                r.dir = bdir.join(&r.dir).display().to_string();
                r
            }));
        }
        'reps: for rep in 0..reps {
            // Alternate which side goes first, so that drift over time falls on both.
            let mut order = sides.clone();
            if rep % 2 == 1 {
                order.reverse();
            }
            for (label, s) in order {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    run.interrupted = true;
                    break 'drills;
                }
                if !options.quiet {
                    let eta = match done {
                        0 => "ETA after the first run".to_string(),
                        n => {
                            let left = gate_started.elapsed().as_secs_f64() / f64::from(n)
                                * f64::from(total.saturating_sub(n));
                            format!("ETA {:.0} min", left / 60.0)
                        }
                    };
                    eprintln!(
                        "gate: drill {}/{} {}, run {}/{} {label} — {done}/{total} runs done, {eta}",
                        di + 1,
                        suite.drills.len(),
                        d.name,
                        rep + 1,
                        reps
                    );
                }
                let rel = format!("{}/{label}-{rep:02}", d.name.trim_end_matches(".toml").replace('/', "_"));
                let seed = suite.seed + u64::from(rep);
                let drill_options = DrillOptions {
                    out: Some(dir.join(&rel)),
                    seed: Some(seed),
                    quiet: true,
                    flashsale_bin: Some(PathBuf::from(&s.bin)),
                    env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    ..DrillOptions::new(suite.drill_arg(d), suite.scale_of(d))
                };
                let mut rx = stop_rx.clone();
                let one_started = Instant::now();
                let result = drill::drill(drill_options, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
                done += 1;
                let took_ms = one_started.elapsed().as_millis() as u64;
                let mut r = GateRunRecord {
                    side: label.into(),
                    repetition: rep,
                    seed,
                    dir: rel.clone(),
                    outcome: None,
                    error: None,
                    values: BTreeMap::new(),
                    broken_invariants: Vec::new(),
                    took_ms,
                };
                match result {
                    Ok(ran) => match figures::read(&ran.dir) {
                        Ok(f) => {
                            r.outcome = f.outcome;
                            r.values = f.values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                            r.broken_invariants = f.broken_invariants;
                        }
                        Err(e) => r.error = Some(format!("reading the run: {e}")),
                    },
                    Err(DrillError::Interrupted(_)) => {
                        r.error = Some("interrupted".into());
                        record.runs.push(r);
                        run.interrupted = true;
                        run.drills.push(record);
                        break 'drills;
                    }
                    Err(e) => r.error = Some(e.to_string()),
                }
                if !options.quiet {
                    eprintln!("gate:   {}", run_line(&r));
                }
                // Never statistical: one broken invariant decides the drill, and its other runs
                // would only cost time.
                let broken = !r.broken_invariants.is_empty();
                record.runs.push(r);
                record.figures = compare::compare(&suite, d, &record.runs);
                let mut partial = run.clone();
                partial.drills.push(record.clone());
                rundir::gate::write(&dir.join(rundir::files::GATE), &partial)?;
                if broken {
                    if !options.quiet {
                        eprintln!("gate:   an invariant broke: {} fails; its other runs are skipped", d.name);
                    }
                    done += (reps - rep) * sides.len() as u32 - 1;
                    break 'reps;
                }
            }
        }
        if mode == "baseline update" {
            record.figures.clear();
        }
        run.drills.push(record);
    }
    run.ended_unix_ms = Some(chaos::events::unix_ms());
    if mode == "baseline update" {
        run.head = Side::default();
    }
    rundir::gate::write(&dir.join(rundir::files::GATE), &run)?;
    Ok(Gated { dir, run })
}

/// One line per finished run.
fn run_line(r: &GateRunRecord) -> String {
    let outcome = match (&r.outcome, &r.error) {
        (Some(o), _) => o.label().to_string(),
        (None, Some(e)) => format!("COULD NOT RUN: {}", e.lines().next().unwrap_or_default()),
        (None, None) => "?".into(),
    };
    let figures: Vec<String> = r.values.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    format!("{} {} in {:.0} s: {outcome}; {}", r.side, r.dir, r.took_ms as f64 / 1000.0, figures.join(", "))
}

/// A side: its binary (absolute; default the lab's own) and its env file read.
fn side(label: &str, o: &SideOptions, commit: &str) -> anyhow::Result<Side> {
    let bin = o.bin.clone().unwrap_or_else(chaos::components::flashsale_program);
    let bin = std::path::absolute(&bin).unwrap_or(bin);
    let meta = std::fs::metadata(&bin).with_context(|| format!("--{label}-bin {}", bin.display()))?;
    anyhow::ensure!(meta.is_file(), "--{label}-bin {}: not a file", bin.display());
    let modified =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let env = match &o.env_file {
        Some(f) => read_env_file(f)?,
        None => BTreeMap::new(),
    };
    Ok(Side {
        label: label.into(),
        bin: bin.display().to_string(),
        bin_identity: format!("{} bytes, modified {}", meta.len(), modified),
        env,
        commit: commit.into(),
    })
}

/// `KEY=VALUE` per line; blank lines and `#` comments skipped; errors name file:line.
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut env = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!("{}:{}: expected KEY=VALUE, got {line:?}", path.display(), i + 1);
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            bail!("{}:{}: {k:?} is not an environment variable name (A-Z, 0-9, _)", path.display(), i + 1);
        }
        env.insert(k.to_string(), v.trim().trim_matches('"').to_string());
    }
    Ok(env)
}

/// A stored baseline and its directory; refused when it is not of this suite's drills, scales,
/// repetitions and seed.
fn load_baseline(dir: &Path, suite: &suite::Suite, suite_path: &Path) -> anyhow::Result<(GateRun, PathBuf)> {
    let file = dir.join(rundir::files::GATE);
    let b = rundir::gate::read(&file).with_context(|| format!("the baseline {}", dir.display()))?;
    anyhow::ensure!(
        b.mode == "baseline update",
        "{}: not a baseline (mode {:?}); `flashlab baseline update` writes one",
        file.display(),
        b.mode
    );
    let want: Vec<(String, f64, u32)> =
        suite.drills.iter().map(|d| (d.name.clone(), suite.scale_of(d), suite.repetitions_of(d))).collect();
    let have: Vec<(String, f64, u32)> = b.drills.iter().map(|d| (d.drill.clone(), d.scale, d.repetitions)).collect();
    if want != have {
        bail!(
            "the baseline {} was made for other drills, scales or repetitions than {}: it has {have:?}, the suite asks for {want:?}; run `flashlab baseline update` with this suite",
            dir.display(),
            suite_path.display()
        );
    }
    let seeds_differ = b.drills.iter().flat_map(|d| &d.runs).any(|r| r.seed != suite.seed + u64::from(r.repetition));
    anyhow::ensure!(
        !seeds_differ,
        "the baseline {} ran other seeds than the suite's (seed = {})",
        dir.display(),
        suite.seed
    );
    if b.interrupted {
        bail!("the baseline {} was cut short: make it again", dir.display());
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok((b, dir))
}

/// This machine's CPUs, memory and kernel.
fn machine() -> Machine {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    Machine { cpus, memory_mib, kernel }
}

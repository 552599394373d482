//! `flashlab capacity` on the real system: a component slowed on purpose (the payment provider:
//! 50 ms a charge, 4 orders in flight per processor — at most 80 orders/s a processor) is found
//! near its known limit and named, and a second processor raises the answer; a generator
//! starved of CPU makes the trials invalid, never a capacity; a bad capacity file is refused
//! with its line and field.

use std::process::Command;

use rundir::capacity::{CapacityRun, TrialOutcome};

mod common;

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

fn capacity(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, Option<CapacityRun>) {
    let out = Command::new(FLASHLAB)
        .arg("capacity")
        .args(args)
        .arg("--out")
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .expect("flashlab runs");
    let run = rundir::capacity::read(&dir.join("capacity.json")).ok();
    assert!(common::processes_in(dir).is_empty(), "processes left behind in {}", dir.display());
    (out, run)
}

#[test]
fn a_slowed_payment_is_found_near_its_limit_named_and_more_processors_raise_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let (out, run) = capacity(
        &dir,
        &[
            "--sweep", "processors=1,2", "--start-rate", "30", "--max-rate", "400", "--trial-s", "5",
            "--confirm-s", "8", "--resolution", "20%", "--repeats", "0", "--env", "PAYMENT_LATENCY=50ms",
            "--env", "PROCESSOR_MAX_IN_FLIGHT=4", "--peak", "70", "--headroom", "0%", "--quiet",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = run.unwrap_or_else(|| panic!("no capacity.json\n{stdout}\n{stderr}"));
    let limit = 4.0 / 0.050; // orders in flight ÷ seconds a charge: a processor's ceiling
    let answer = |i: usize| run.topologies[i].sustainable.unwrap_or_else(|| panic!("{:#?}", run.topologies[i]));
    let (one, two) = (answer(0), answer(1));
    assert!(one <= limit * 1.05 && one >= limit * 0.5, "1 processor: {one}/s against a ceiling of {limit}/s");
    // Raised by more than the search's noise: a failed confirmation steps down two resolution
    // steps (a run measured 1: 60/s, 2: 83/s where 2 processors decided ~105/s — 1.38×).
    assert!(two >= one * 1.1 && two <= 2.0 * limit * 1.05, "2 processors: {two}/s, 1: {one}/s");
    for t in &run.topologies {
        let b = t.bottleneck.as_ref().unwrap_or_else(|| panic!("{} named nothing", t.label));
        assert_eq!(b.component, "payment", "{}: {b:?}", t.label);
        assert!(t.knee.is_some(), "{}: no knee", t.label);
        for x in t.trials.iter().filter(|x| x.outcome != TrialOutcome::Sustained) {
            assert!(!x.reasons.is_empty(), "{x:#?}");
            eprintln!("{} trial {} at {:.0}/s {:?}: {}", t.label, x.index, x.rate, x.outcome, x.reasons.join("; "));
        }
    }
    // The headroom answer for 70/s: met with the smallest topology that sustained it.
    let answer_line = stdout.lines().find(|l| l.starts_with("sustainable")).unwrap_or_else(|| panic!("{stdout}"));
    match run.topologies.iter().find(|t| t.sustainable.is_some_and(|s| s >= 70.0)) {
        Some(t) => {
            let n = if t.processors == 1 { "1 processor".to_string() } else { format!("{} processors", t.processors) };
            assert!(answer_line.contains(&format!("is met with {n}")), "{answer_line}");
            assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        }
        None => {
            assert!(answer_line.contains("is not"), "{answer_line}");
            assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        }
    }
    assert!(dir.join("report.html").is_file() && dir.join("summary.md").is_file());
    assert!(dir.join("plots/capacity-throughput.png").is_file());
    // Every trial is a drill run with its processes sampled.
    let first = dir.join(&run.topologies[0].trials[0].dir).join("run");
    assert!(std::fs::read_to_string(first.join("processes.jsonl")).unwrap().contains("\"processor[0]\""));
}

#[test]
fn a_generator_starved_of_cpu_makes_the_trials_invalid_not_a_capacity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    // 20 ms of CPU per arrival in the feeder: it cannot offer more than 50 arrivals a second.
    let (out, run) = capacity(
        &dir,
        &["--start-rate", "200", "--trial-s", "5", "--confirm-s", "8", "--quiet"],
        &[("FLASHLAB_GENERATOR_BURN_US", "20000")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = run.expect("capacity.json");
    let t = &run.topologies[0];
    assert_eq!(t.sustainable, None, "{t:#?}");
    assert!(t.generator_bound, "{t:#?}");
    assert!(!t.trials.is_empty());
    for x in &t.trials {
        assert_eq!(x.outcome, TrialOutcome::Invalid, "{x:#?}");
        assert!(x.reasons.iter().any(|r| r.contains("generator kept its schedule")), "{:?}", x.reasons);
    }
    // (goose writes its own lines to stdout too.)
    assert!(stdout.lines().any(|l| l.starts_with("no rate was sustained")), "{stdout}");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_capacity_file_is_refused_with_its_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cap.toml");
    std::fs::write(&file, "[slo]\np99_ms = 500\n\n[search]\nresolution = 2\n").unwrap();
    let out = Command::new(FLASHLAB)
        .args(["capacity", "--slo"])
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("cap"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cap.toml:5: search.resolution:"), "{stderr}");
    assert!(!tmp.path().join("cap").exists(), "nothing is started for a bad file");
}

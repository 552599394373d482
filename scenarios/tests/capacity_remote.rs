//! `flashlab capacity --target URL`: a search against a deployment the lab did not start (here
//! a `flashlab up` in its own process, its payment provider slowed on purpose: 50 ms a charge,
//! 4 orders in flight per processor — at most 80 orders/s). Load only: the answer lands near
//! the known limit and names the payment provider from the deployment's `/metrics` alone;
//! without the processors' pages no trial can judge (never a pass); a page that does not
//! answer is refused before any load is sent.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rundir::capacity::{CapacityRun, TrialOutcome};

mod common;

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

/// A `flashlab up` stopped (SIGTERM: it stops its children in order) when dropped.
struct Deployment {
    child: Child,
    gateway: String,
    processor: String,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn deploy(dir: &Path) -> Deployment {
    let mut child = Command::new(FLASHLAB)
        .args(["up", "--port", "0", "--no-monitoring", "--stock", "101=10000000", "--dir"])
        .arg(dir)
        .arg("--control")
        .arg(dir.join("control.sock"))
        .env("FLASHSALE_BIN", Path::new(FLASHLAB).with_file_name("flashsale"))
        .env("PAYMENT_LATENCY", "50ms")
        .env("PROCESSOR_MAX_IN_FLIGHT", "4")
        .env("RATE_LIMIT_MAX_REQUESTS", "1000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flashlab up starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut gateway, mut processor) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let url = line.split_whitespace().nth(1).map(str::to_string);
            if line.trim_start().starts_with("gateway ") {
                gateway = url;
            } else if line.trim_start().starts_with("processor[0] ") {
                processor = url;
            } else if line.starts_with("take an order:") {
                let _ = tx.send((gateway.take(), processor.take()));
            }
        }
    });
    let (gateway, processor) = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok((Some(g), Some(p))) => (g, p),
        other => {
            let _ = child.kill();
            panic!("flashlab up did not print its gateway and processor: {other:?}");
        }
    };
    Deployment { child, gateway, processor }
}

fn capacity(dir: &Path, args: &[&str]) -> (std::process::Output, Option<CapacityRun>) {
    let out = Command::new(FLASHLAB).arg("capacity").args(args).arg("--out").arg(dir).output().expect("flashlab runs");
    (out, rundir::capacity::read(&dir.join("capacity.json")).ok())
}

#[test]
fn a_deployment_is_searched_with_load_only_and_judged_from_its_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dep = deploy(&tmp.path().join("deployment"));
    let processor_page = format!("{}/metrics", dep.processor);
    let gateway_page = format!("{}/metrics", dep.gateway);

    // A page that does not answer: refused, no load sent, nothing written.
    let (out, run) = capacity(
        &tmp.path().join("refused"),
        &["--target", &dep.gateway, "--metrics", "http://127.0.0.1:9/metrics", "--quiet"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--metrics http://127.0.0.1:9/metrics: no metrics page there"), "{stderr}");
    assert!(run.is_none() && !tmp.path().join("refused").exists());
    // Off loopback without --allow-remote: refused the same way.
    let (out, _) = capacity(&tmp.path().join("remote"), &["--target", "http://10.1.2.3:8080", "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address; pass --allow-remote"));

    // The search, from the gateway's and the processor's pages (named by what they export).
    let dir = tmp.path().join("cap");
    let (out, run) = capacity(
        &dir,
        &[
            "--target",
            &dep.gateway,
            "--metrics",
            &processor_page,
            "--metrics",
            &gateway_page,
            "--start-rate",
            "30",
            "--max-rate",
            "400",
            "--trial-s",
            "5",
            "--confirm-s",
            "8",
            "--resolution",
            "20%",
            "--repeats",
            "0",
            "--peak",
            "30",
            "--headroom",
            "0%",
            "--quiet",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = run.unwrap_or_else(|| panic!("no capacity.json\n{stdout}\n{stderr}"));
    assert_eq!(run.target.as_deref(), Some(dep.gateway.as_str()));
    let t = &run.topologies[0];
    for x in &t.trials {
        eprintln!("trial {} at {:.0}/s {:?}: {}", x.index, x.rate, x.outcome, x.reasons.join("; "));
    }
    let limit = 4.0 / 0.050;
    let found = t.sustainable.unwrap_or_else(|| panic!("{t:#?}"));
    assert!(found <= limit * 1.05 && found >= limit * 0.5, "{found}/s against a ceiling of {limit}/s");
    // Time to decision came from the processor's histogram, lag from its page, CPU from the
    // process collector; nothing from the lab's /proc.
    let judged = t.trials.iter().find(|x| x.outcome == TrialOutcome::Sustained).unwrap();
    assert!(judged.m.time_to_decision_p99_ms.is_some() && judged.m.lag_last.is_some(), "{judged:#?}");
    assert!(judged.m.components.contains_key("processor[0]") && judged.m.components.contains_key("gateway[0]"));
    assert_eq!(judged.m.processor_in_flight_limit, Some(4.0));
    let b = t.bottleneck.as_ref().unwrap_or_else(|| panic!("nothing named: {t:#?}"));
    assert_eq!(b.component, "payment", "{b:?}");
    let sentence = stdout.lines().find(|l| l.starts_with("sustainable")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(sentence.contains(&format!("by the deployment at {}", dep.gateway)), "{sentence}");
    assert!(sentence.contains("is met"), "{sentence}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(dir.join("report.html").is_file());

    // Without the processors' pages: no trial can judge time to decision or lag.
    let (out, run) = capacity(
        &tmp.path().join("blind"),
        &["--target", &dep.gateway, "--start-rate", "20", "--trial-s", "3", "--repeats", "0", "--quiet"],
    );
    let run = run.expect("capacity.json");
    let t = &run.topologies[0];
    assert_eq!(t.sustainable, None, "{t:#?}");
    assert!(!t.trials.is_empty());
    for x in &t.trials {
        assert_eq!(x.outcome, TrialOutcome::Invalid, "{x:#?}");
        assert!(x.reasons.iter().any(|r| r.contains("give the processors' /metrics pages with --metrics")), "{x:#?}");
    }
    assert_eq!(out.status.code(), Some(2));
    assert!(common::processes_in(&tmp.path().join("blind")).is_empty());
}

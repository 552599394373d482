//! `flashlab load` as a user runs it: a clear error for bad flags, and a Ctrl-C or SIGTERM in
//! the middle of a run leaves a complete history (every request the server saw is in it).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

/// A server that answers every POST /buy with 202 and counts them; runs on its own thread.
fn counting_server() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/buy",
                axum::routing::post(move || {
                    let seen = seen.clone();
                    async move {
                        seen.fetch_add(1, Ordering::SeqCst);
                        (axum::http::StatusCode::ACCEPTED, "{}")
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (format!("http://{addr}"), count)
}

fn load(args: &[&str]) -> std::process::Output {
    Command::new(FLASHLAB).arg("load").args(args).output().expect("flashlab load runs")
}

#[test]
fn bad_flags_are_clear_errors() {
    let out = load(&["--target", "http://127.0.0.1:9", "--phases", "warm:10s"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--phases") && err.contains("no '@' before the rate"), "{err}");
    let out = load(&["--target", "http://127.0.0.1:9", "--mix", "shopper=1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mix"));
    let out = load(&["--target", "http://10.1.2.3:8080", "--phases", "a:1s@1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address; pass --allow-remote"), "{err}");
}

fn interrupted_run_keeps_every_request(signal: &str) {
    let (target, served) = counting_server();
    let out = tempfile::tempdir().unwrap();
    let child = Command::new(FLASHLAB)
        .args(["load", "--target", &target, "--phases", "long:60s@300", "--mix", "buyer=1", "--polls", "0", "--quiet"])
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is well under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.load(Ordering::SeqCst) < 300 {
        assert!(Instant::now() < deadline, "no load arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    let status = output.status;
    assert!(started.elapsed() < Duration::from_secs(15), "stopped promptly");
    assert!(status.success(), "{signal}: {status:?}: {}", String::from_utf8_lossy(&output.stderr));

    let history = std::fs::read_to_string(out.path().join("history.jsonl")).unwrap();
    // Sent requests, and the arrivals the stop left unsent (recorded as unserved).
    let sent = history.lines().filter(|l| !l.contains("\"op\":\"unserved\"")).count() as u64;
    let unserved = history.lines().count() as u64 - sent;
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("load-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["total"]["buy_requests"], sent);
    assert_eq!(served.load(Ordering::SeqCst), sent, "every request the server answered is in the history");
    let counted = summary["total"]["dropped"].as_u64().unwrap() + summary["total"]["not_started"].as_u64().unwrap();
    assert_eq!(unserved, counted, "every arrival left unsent is in the history too");
    assert!(history.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "no torn line");
}

#[test]
fn ctrl_c_mid_run_flushes_a_complete_history() {
    interrupted_run_keeps_every_request("-INT");
}

#[test]
fn sigterm_mid_run_flushes_a_complete_history() {
    interrupted_run_keeps_every_request("-TERM");
}

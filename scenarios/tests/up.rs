//! `flashlab up` as a user runs it: it serves orders, takes faults from `flashlab fault` in a
//! second shell, and neither its children nor its faults outlive it — after Ctrl-C or `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::processes_in;

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

/// Starts `flashlab up` in `dir` and returns it once it printed the gateway's URL.
fn start_up(dir: &Path) -> (Child, String) {
    let mut child = Command::new(FLASHLAB)
        .args(["up", "--port", "0", "--stock", "101=5", "--dir"])
        .arg(dir)
        .arg("--control")
        .arg(dir.join("control.sock"))
        .env("FLASHSALE_BIN", Path::new(FLASHLAB).with_file_name("flashsale"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flashlab starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut url = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("gateway  ") {
                url = rest.split_whitespace().next().map(String::from);
            }
            // The last line: the control socket is served from here on.
            if line.starts_with("Ctrl-C") {
                let _ = tx.send(url.take().expect("the gateway line comes first"));
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(120)).expect("flashlab up prints the gateway URL");
    (child, url)
}

fn wait_until_gone(dir: &Path, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_in(dir);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `flashlab fault --control DIR/control.sock ARGS`: (exit code, stdout, stderr).
fn fault(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(FLASHLAB)
        .arg("fault")
        .arg("--control")
        .arg(dir.join("control.sock"))
        .args(args)
        .output()
        .expect("flashlab fault runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

/// Status code and seconds taken of one order.
fn timed_buy(url: &str, request_id: &str) -> (String, f64) {
    let started = Instant::now();
    let status = curl_buy(url, request_id);
    (status, started.elapsed().as_secs_f64())
}

fn curl_buy(url: &str, request_id: &str) -> String {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "-X", "POST", &format!("{url}/buy")])
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(format!(r#"{{"user_id":"u1","item_id":"101","amount":1,"request_id":"{request_id}"}}"#))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn up_serves_orders_and_ctrl_c_stops_every_child() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_up(dir.path());
    assert_eq!(
        processes_in(dir.path()).len(),
        9,
        "redis, broker, payment, processor, gateway, prometheus, alertmanager, redis and process exporters run"
    );
    assert_eq!(curl_buy(&url, "up-1"), "202");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "flashlab up exits 0 after Ctrl-C: {status:?}");
    assert_eq!(wait_until_gone(dir.path(), Duration::from_secs(1)), Vec::<u32>::new());
}

#[test]
fn game_day_faults_from_a_second_shell_and_ctrl_c_heals_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_up(dir.path());
    let (_, fast) = timed_buy(&url, "gd-1");

    let (code, out, err) = fault(dir.path(), &["latency", "redis", "100ms", "--for", "60s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fault #1 latency redis 100ms for 1m — verified"), "{out}");
    let (status, slow) = timed_buy(&url, "gd-2");
    assert_eq!(status, "202");
    assert!(slow >= 0.2 && slow > fast, "an order makes one Redis round trip: 2 × 100 ms, took {slow} s");

    let (code, out, err) = fault(dir.path(), &["pause", "broker"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = fault(dir.path(), &["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("#1   latency redis") && out.contains("#2   pause broker"), "{out}");

    // Asking for what this lab does not have: a clear error naming what it has.
    let (code, _, err) = fault(dir.path(), &["kill", "processor[7]"]);
    assert_eq!(code, 2);
    assert!(err.contains("no component processor[7]") && err.contains("processor[0], gateway[0]"), "{err}");

    // Ctrl-C: every fault healed (and recorded so), then every child stopped.
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let stops: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "fault_stop")
        .collect();
    assert_eq!(stops.len(), 2, "{events}");
    assert!(stops.iter().all(|e| e["reason"] == "lab stopping" && e["check"]["ok"] == true), "{events}");
    assert!(!dir.path().join("control.sock").exists(), "the control socket is removed");
    assert_eq!(wait_until_gone(dir.path(), Duration::from_secs(1)), Vec::<u32>::new());
}

#[test]
fn bad_fault_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap(); // no lab runs here
    let (code, _, err) = fault(dir.path(), &["kill", "postgres"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown target \"postgres\"; valid: redis, broker, payment"), "{err}");
    let (code, _, err) = fault(dir.path(), &["latency", "redis", "10parsecs"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected a duration such as 200ms"), "{err}");
    let (code, _, err) = fault(dir.path(), &["latency", "gateway", "1s"]);
    assert_eq!(code, 2);
    assert!(err.contains("latency cannot target gateway[0]; valid targets: redis, broker, payment"), "{err}");
    let (code, _, err) = fault(dir.path(), &["list"]);
    assert_eq!(code, 2);
    assert!(err.contains("no flashlab up answers on"), "{err}");
}

#[test]
fn children_die_with_a_killed_lab_even_mid_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _url) = start_up(dir.path());
    assert_eq!(processes_in(dir.path()).len(), 9, "the system and its monitoring");
    // A frozen broker and a stalled Redis: SIGKILL still reaches them.
    assert_eq!(fault(dir.path(), &["pause", "broker"]).0, 0);
    assert_eq!(fault(dir.path(), &["redis", "stall", "--for", "5m"]).0, 0);
    child.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
    child.wait().unwrap();
    let left = wait_until_gone(dir.path(), Duration::from_secs(10));
    assert!(left.is_empty(), "children outlived the lab: {left:?}");
}

#[test]
fn up_on_containers_serves_orders_and_ctrl_c_removes_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(FLASHLAB)
        .args(["up", "--runtime", "containers", "--port", "0", "--stock", "101=5", "--dir"])
        .arg(dir.path())
        .env("FLASHSALE_BIN", Path::new(FLASHLAB).with_file_name("flashsale"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flashlab starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut url, mut network) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("gateway  ") {
                url = rest.split_whitespace().next().map(String::from);
            }
            if let Some(rest) = line.split("(network ").nth(1) {
                network = rest.split(';').next().map(String::from);
            }
            if line.starts_with("Ctrl-C") {
                let _ = tx.send((url.take().expect("the gateway line"), network.take().expect("the network")));
            }
        }
    });
    let (url, network) = rx.recv_timeout(Duration::from_secs(180)).expect("flashlab up prints the gateway URL");
    let run = network.strip_prefix("flashlab-").expect("the run's network").to_string();
    assert_eq!(chaos::containers::left_of(&run).unwrap().len(), 6, "five containers and their network");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    assert_eq!(curl_buy(&url, "ct-1"), "202");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl").args(["-s", "-m", "5", &format!("{url}/orders/ct-1")]).output().unwrap();
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if body.contains("COMPLETED") {
            break;
        }
        assert!(Instant::now() < deadline, "the order was not decided on containers: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }

    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "flashlab up exits 0 after Ctrl-C: {status:?}");
    assert_eq!(chaos::containers::left_of(&run).unwrap(), Vec::<String>::new(), "nothing left of the run");
    for log in [
        "redis/redis.log",
        "broker/broker.log",
        "payment/payment.log",
        "processors/processor-0.log",
        "gateways/gateway-0.log",
    ] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
        assert!(!text.is_empty(), "{log}: the container's log is kept in --dir");
    }
    // The payment provider's ledger, written in its container, is on the host (its data mounted).
    let ledger = std::fs::read_to_string(dir.path().join("payment/payment-ledger.jsonl")).unwrap_or_default();
    assert!(ledger.contains("ct-1"), "the ledger in --dir names the order: {ledger}");
}

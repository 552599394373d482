//! `flashlab up` as a user runs it: it serves orders, and its children never outlive it —
//! neither after Ctrl-C nor after `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLASHLAB: &str = env!("CARGO_BIN_EXE_flashlab");

/// Pids of processes whose working directory is inside `dir`.
fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)))
        .filter(|pid| {
            // A zombie is dead already (waiting for its parent to reap it).
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        })
        .collect()
}

/// Starts `flashlab up` in `dir` and returns it once it printed the gateway's URL.
fn start_up(dir: &Path) -> (Child, String) {
    let mut child = Command::new(FLASHLAB)
        .args(["up", "--port", "0", "--stock", "101=5", "--dir"])
        .arg(dir)
        .env("FLASHSALE_BIN", Path::new(FLASHLAB).with_file_name("flashsale"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flashlab starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("gateway  ") {
                let _ = tx.send(url.split_whitespace().next().unwrap().to_string());
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
    assert_eq!(processes_in(dir.path()).len(), 5, "redis, broker, payment, processor and gateway run");
    assert_eq!(curl_buy(&url, "up-1"), "202");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "flashlab up exits 0 after Ctrl-C: {status:?}");
    assert_eq!(wait_until_gone(dir.path(), Duration::from_secs(1)), Vec::<u32>::new());
}

#[test]
fn children_die_with_a_killed_lab() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _url) = start_up(dir.path());
    assert_eq!(processes_in(dir.path()).len(), 5);
    child.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
    child.wait().unwrap();
    let left = wait_until_gone(dir.path(), Duration::from_secs(10));
    assert!(left.is_empty(), "children outlived the lab: {left:?}");
}

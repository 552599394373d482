//! Supervised processes on real `redis-server` and `tansu`: readiness, kill, pause, restart with
//! the same data, and clear errors.

use std::time::Duration;

use chaos::components;
use chaos::ports::{free_port, loopback};
use chaos::probe::Probe;
use chaos::process::{ProcessError, ProcessSpec, Supervised};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one inline Redis command and returns the raw answer.
async fn redis_cmd(addr: std::net::SocketAddr, command: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(format!("{command}\r\n").as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await.expect("answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

#[tokio::test]
async fn redis_keeps_its_data_across_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback(free_port().unwrap());
    let mut redis = Supervised::start(components::redis(addr, dir.path())).await.expect("redis starts");
    assert_eq!(redis_cmd(addr, "SET inventory:101 42").await, "+OK");
    // AOF with appendfsync everysec: a graceful stop writes it out.
    redis.stop().await.expect("stops");
    assert!(!redis.is_running());
    redis.start_again().await.expect("restarts");
    assert_eq!(redis_cmd(addr, "GET inventory:101").await, "$2\r\n42");
    let pid = redis.pid().unwrap();
    redis.kill().await.expect("killed");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || !redis.is_running());
    assert!(Probe::RedisPing(addr).check(Duration::from_millis(300)).await.is_err(), "killed means gone");
}

#[tokio::test]
async fn a_paused_process_stops_answering_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback(free_port().unwrap());
    let mut redis = Supervised::start(components::redis(addr, dir.path())).await.expect("redis starts");
    redis.pause().expect("SIGSTOP");
    assert!(redis.is_running(), "paused is alive");
    let err = Probe::RedisPing(addr).check(Duration::from_millis(300)).await.unwrap_err();
    assert!(err.contains("no answer"), "{err}");
    redis.resume().expect("SIGCONT");
    Probe::RedisPing(addr).check(Duration::from_secs(2)).await.expect("answers again");
    // stop() also works on a paused process (it resumes it to deliver SIGTERM).
    redis.pause().unwrap();
    let status = redis.stop().await.expect("stops").expect("was running");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn broker_answers_api_versions_and_restarts_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback(free_port().unwrap());
    let mut broker = Supervised::start(components::broker(addr, addr, dir.path())).await.expect("broker starts");
    assert!(dir.path().join("broker.db").exists(), "sqlite storage in the data directory");
    broker.kill().await.unwrap();
    assert!(Probe::KafkaApiVersions(addr).check(Duration::from_millis(300)).await.is_err());
    broker.start_again().await.expect("restarts after kill -9");
}

#[tokio::test]
async fn a_process_that_dies_at_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback(free_port().unwrap());
    let mut spec = components::redis(addr, dir.path());
    spec.args.push("--no-such-option".into());
    match Supervised::start(spec).await {
        Err(ProcessError::ExitedEarly { log_tail, .. }) => {
            assert!(log_tail.contains("no-such-option"), "{log_tail}")
        }
        other => panic!("expected ExitedEarly, got {other:?}"),
    }
}

#[tokio::test]
async fn readiness_waits_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // `sleep` never answers a Redis PING on this port.
    let spec = ProcessSpec {
        name: "sleeper".into(),
        program: "sleep".into(),
        args: vec!["30".into()],
        env: vec![],
        cwd: dir.path().to_path_buf(),
        log_path: dir.path().join("sleeper.log"),
        probe: Probe::RedisPing(loopback(free_port().unwrap())),
        ready_timeout: Duration::from_millis(500),
        stop_grace: Duration::from_secs(1),
    };
    let started = std::time::Instant::now();
    match Supervised::start(spec).await {
        Err(ProcessError::NotReady { waited, .. }) => {
            assert!(waited < Duration::from_secs(3), "{waited:?}")
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = components::redis(loopback(free_port().unwrap()), dir.path());
    spec.program = "/nonexistent/redis-server".into();
    let err = Supervised::start(spec).await.unwrap_err();
    // setpriv starts and fails to exec: the error carries its message.
    let text = err.to_string();
    assert!(text.contains("redis") && (text.contains("No such file") || text.contains("exited")), "{text}");
}

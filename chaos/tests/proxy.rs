//! The TCP fault proxy in front of a real `redis-server`: each toxic's effect measured on a real
//! connection, on connections already open, and healed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chaos::components;
use chaos::ports::{free_port, loopback};
use chaos::process::Supervised;
use chaos::proxy::{Direction, FaultProxy, Toxic, ToxicSetting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn redis() -> (tempfile::TempDir, Supervised, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback(free_port().unwrap());
    let redis = Supervised::start(components::redis(addr, dir.path())).await.expect("redis starts");
    (dir, redis, addr)
}

/// `PING` on an open connection; the round trip, or an error.
async fn ping(stream: &mut TcpStream, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    stream.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG") => Ok(started.elapsed()),
        Ok(Ok(n)) => Err(format!("answered {:?}", String::from_utf8_lossy(&buf[..n]))),
    }
}

/// A connection to `to` from the loopback address `ip` (127.0.0.N): a client the proxy tells
/// apart by its address.
async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

fn toxic(toxic: Toxic) -> ToxicSetting {
    ToxicSetting { toxic, toxicity: 1.0, from: None }
}

#[tokio::test]
async fn latency_with_jitter_applies_to_open_connections_and_heals() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 7).await.unwrap();
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    let base = ping(&mut conn, Duration::from_secs(1)).await.unwrap();
    assert!(base < Duration::from_millis(20), "no toxic: {base:?}");

    // Set on a connection that is already open: 200 ms ± 50 ms one way.
    let (latency, jitter) = (Duration::from_millis(200), Duration::from_millis(50));
    proxy.set(Direction::Downstream, toxic(Toxic::Latency { latency, jitter }));
    for _ in 0..10 {
        let rtt = ping(&mut conn, Duration::from_secs(2)).await.unwrap();
        assert!(rtt >= latency.mul_f64(0.9) && rtt <= (latency + jitter).mul_f64(1.1), "{rtt:?}");
    }
    proxy.heal();
    let healed = ping(&mut conn, Duration::from_secs(1)).await.unwrap();
    assert!(healed < Duration::from_millis(20), "healed: {healed:?}");
}

/// Requests pipelined on one connection (a multiplexed Redis client's) are each delayed by the
/// latency from their own arrival — not one behind the other, which would make the tenth wait
/// ten latencies and cap the connection at a few requests a second.
#[tokio::test]
async fn latency_delays_pipelined_requests_each_once() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 7).await.unwrap();
    let latency = Duration::from_millis(200);
    proxy.set(Direction::Downstream, toxic(Toxic::Latency { latency, jitter: Duration::ZERO }));
    let conn = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    const N: usize = 10;
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        for _ in 0..N {
            sent.push(Instant::now());
            write.write_all(b"PING\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (sent, write)
    });
    // "+PONG\r\n" is 7 bytes: the i-th reply is complete at byte 7(i+1).
    let mut arrived = Vec::new();
    let (mut got, mut buf) = (0usize, [0u8; 256]);
    while arrived.len() < N {
        let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf)).await.expect("replies").unwrap();
        assert!(n > 0, "closed");
        got += n;
        while arrived.len() < N && got >= 7 * (arrived.len() + 1) {
            arrived.push(Instant::now());
        }
    }
    let (sent, _write) = sender.await.unwrap();
    let delays: Vec<Duration> = sent.iter().zip(&arrived).map(|(s, a)| a.duration_since(*s)).collect();
    for (i, d) in delays.iter().enumerate() {
        assert!(
            *d >= latency.mul_f64(0.9) && *d <= latency + Duration::from_millis(100),
            "reply {i} took {d:?} (latency {latency:?}); all: {delays:?}"
        );
    }
}

/// With nothing behind it taking connections, a front with a fallback answers the maintenance
/// page to an HTTP client (a POST with a body, as a buyer's); without one the connection fails.
#[tokio::test]
async fn with_no_upstream_up_the_fallback_answers_the_maintenance_page() {
    let nobody = loopback(free_port().unwrap());
    let front = FaultProxy::start(loopback(0), nobody, 1).await.unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let url = format!("http://{}/buy", front.addr());
    let body = serde_json::json!({"user_id": "u", "item_id": "101", "amount": 1, "request_id": "r"});
    assert!(http.post(&url).json(&body).send().await.is_err(), "no fallback: the connection fails");
    assert_eq!(front.fallback_answers(), 0);

    front.set_fallback(Some(chaos::maintenance::response()));
    for _ in 0..3 {
        let answer = http.post(&url).json(&body).send().await.expect("an answer");
        assert_eq!(answer.status().as_u16(), 503);
        assert_eq!(answer.headers()["retry-after"], "30");
        assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(answer.text().await.unwrap().contains("We'll be right back"));
    }
    // Counted once written (the client may have read it a moment before).
    let counted = Instant::now();
    while front.fallback_answers() < 3 && counted.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(front.fallback_answers(), 3);
}

#[tokio::test]
async fn blackhole_makes_a_redis_call_time_out_and_heal_restores_it() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    ping(&mut conn, Duration::from_secs(1)).await.unwrap();
    proxy.set(Direction::Upstream, toxic(Toxic::Blackhole));
    assert_eq!(ping(&mut conn, Duration::from_millis(300)).await, Err("timed out".into()));
    proxy.heal();
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    ping(&mut fresh, Duration::from_secs(1)).await.expect("a new connection works after heal");
}

/// A partition from one peer, as the injector makes it on containers: a stall for one client
/// address holds what it sends (and what comes back) and delivers it, whole, at the heal — the
/// stream never loses bytes — while a client from another address is served; the proxy counts
/// the connections open from each address.
#[tokio::test]
async fn a_stall_for_one_address_holds_its_bytes_until_the_heal_and_spares_the_others() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let from = |ip: [u8; 4]| connect_from(ip, proxy.addr());
    let cut_ip = std::net::IpAddr::from([127, 0, 0, 2]);
    let mut cut = from([127, 0, 0, 2]).await;
    let mut spared = from([127, 0, 0, 3]).await;
    ping(&mut cut, Duration::from_secs(1)).await.unwrap();
    ping(&mut spared, Duration::from_secs(1)).await.unwrap();
    assert_eq!(proxy.open_from(cut_ip), 1);

    let stall = Toxic::Latency { latency: Duration::from_secs(3600), jitter: Duration::ZERO };
    for direction in [Direction::Upstream, Direction::Downstream] {
        proxy.set(direction, ToxicSetting { toxic: stall, toxicity: 1.0, from: Some(cut_ip) });
    }
    cut.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    let waited = tokio::time::timeout(Duration::from_millis(300), cut.read(&mut buf)).await;
    assert!(waited.is_err(), "the stalled client got an answer: {waited:?}");
    let rtt = ping(&mut spared, Duration::from_secs(1)).await.unwrap();
    assert!(rtt < Duration::from_millis(50), "the other address is spared: {rtt:?}");

    for direction in [Direction::Upstream, Direction::Downstream] {
        proxy.remove_from(direction, "latency", Some(cut_ip));
    }
    // What it sent during the stall arrives now, and the stream is whole after it.
    let n =
        tokio::time::timeout(Duration::from_secs(1), cut.read(&mut buf)).await.expect("delivered at the heal").unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    ping(&mut cut, Duration::from_secs(1)).await.expect("the next request on the same connection");
    drop(cut);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while proxy.open_from(cut_ip) != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.open_from(cut_ip), 0, "a closed connection is no longer counted");
    assert_eq!(proxy.open_from(std::net::IpAddr::from([127, 0, 0, 3])), 1);
}

/// Two replicas' links slowed at once (`replication[1]`, `replication[2]`) are two latencies of
/// one proxy, one per address: setting the second keeps the first, and so does a latency for
/// every connection set after both (each connection gets the longest that applies to it).
#[tokio::test]
async fn latencies_for_two_addresses_and_for_everyone_stand_side_by_side() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let from = |ip: [u8; 4]| connect_from(ip, proxy.addr());
    let mut two = from([127, 0, 0, 2]).await;
    let mut three = from([127, 0, 0, 3]).await;
    let mut other = from([127, 0, 0, 4]).await;
    let latency = |ms| Toxic::Latency { latency: Duration::from_millis(ms), jitter: Duration::ZERO };
    for (ip, ms) in [([127, 0, 0, 2], 300), ([127, 0, 0, 3], 150)] {
        let setting = ToxicSetting { toxic: latency(ms), toxicity: 1.0, from: Some(std::net::IpAddr::from(ip)) };
        proxy.set(Direction::Downstream, setting);
    }
    proxy.set(Direction::Downstream, toxic(latency(100)));
    assert_eq!(proxy.toxics(Direction::Downstream).len(), 3, "{:?}", proxy.toxics(Direction::Downstream));
    for (conn, ms) in [(&mut two, 300), (&mut three, 150), (&mut other, 100)] {
        let rtt = ping(conn, Duration::from_secs(2)).await.unwrap();
        let want = Duration::from_millis(ms);
        assert!(rtt >= want.mul_f64(0.9) && rtt < want + Duration::from_millis(100), "want {want:?}, got {rtt:?}");
    }
    // The same scope again replaces its own.
    proxy.set(Direction::Downstream, toxic(latency(0)));
    let rtt = ping(&mut other, Duration::from_secs(1)).await.unwrap();
    assert!(rtt < Duration::from_millis(50), "{rtt:?}");
    assert_eq!(proxy.toxics(Direction::Downstream).len(), 3);
}

#[tokio::test]
async fn reset_peer_closes_open_connections() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    ping(&mut conn, Duration::from_secs(1)).await.unwrap();
    proxy.set(Direction::Downstream, toxic(Toxic::ResetPeer));
    let err = ping(&mut conn, Duration::from_secs(2)).await.unwrap_err();
    assert!(err.contains("reset") || err == "closed", "{err}");
}

#[tokio::test]
async fn down_refuses_and_closes_then_up_accepts() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    ping(&mut open, Duration::from_secs(1)).await.unwrap();
    proxy.set_down(true);
    assert!(ping(&mut open, Duration::from_secs(2)).await.is_err(), "open connections are closed");
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(ping(&mut refused, Duration::from_secs(2)).await.is_err(), "new connections are refused");
    proxy.set_down(false);
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    ping(&mut again, Duration::from_secs(1)).await.expect("up again");
}

#[tokio::test]
async fn limit_data_and_toxicity_affect_the_chosen_share_of_connections() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 42).await.unwrap();
    // Downstream closes after 7 bytes: one "+PONG\r\n", then the connection ends.
    proxy.set(Direction::Downstream, toxic(Toxic::LimitData { bytes: 7 }));
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    ping(&mut conn, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ping(&mut conn, Duration::from_secs(1)).await, Err("closed".into()));
    proxy.heal();
    // Half the connections blackholed: of 40, between 10 and 30 time out (seeded draws).
    proxy.set(Direction::Upstream, ToxicSetting { toxic: Toxic::Blackhole, toxicity: 0.5, from: None });
    let mut timed_out = 0;
    for _ in 0..40 {
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        if ping(&mut c, Duration::from_millis(100)).await.is_err() {
            timed_out += 1;
        }
    }
    assert!((10..=30).contains(&timed_out), "{timed_out} of 40");
}

#[tokio::test]
async fn bandwidth_and_slicer_slow_a_large_transfer() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    // A 100 KB value, read back through a 500 KB/s downstream: at least 0.2 s.
    let value = "x".repeat(100_000);
    conn.write_all(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{value}\r\n", value.len()).as_bytes()).await.unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+OK\r\n");
    proxy.set(Direction::Downstream, toxic(Toxic::Bandwidth { bytes_per_s: 500_000 }));
    let started = Instant::now();
    conn.write_all(b"GET k\r\n").await.unwrap();
    let mut got = 0;
    let mut big = vec![0u8; 200_000];
    while got < 100_000 {
        got += conn.read(&mut big).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(180), "{took:?}");
    proxy.heal();
    // Slicer: 7-byte answer in 1-byte pieces 20 ms apart: ≥ 120 ms.
    proxy.set(Direction::Downstream, toxic(Toxic::Slicer { bytes: 1, delay: Duration::from_millis(20) }));
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    fresh.write_all(b"PING\r\n").await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    while answer.len() < 7 {
        let n = fresh.read(&mut buf).await.unwrap();
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answer, b"+PONG\r\n");
    assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_toxic_from_one_client_address_spares_the_others() {
    let (_dir, _redis, addr) = redis().await;
    let proxy = FaultProxy::start(loopback(0), addr, 1).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // A replica's replication connection, bound to an address of its own.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut replica = socket.connect(proxy.addr()).await.unwrap();
    ping(&mut replica, Duration::from_secs(1)).await.unwrap();
    let from = Some("127.0.0.2".parse().unwrap());
    proxy.set(Direction::Downstream, ToxicSetting { toxic: Toxic::Blackhole, toxicity: 1.0, from });
    assert_eq!(ping(&mut replica, Duration::from_millis(300)).await, Err("timed out".into()));
    ping(&mut client, Duration::from_secs(1)).await.expect("a client from 127.0.0.1 is spared");
    proxy.heal();
}

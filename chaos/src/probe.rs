//! Readiness probes that speak each component's protocol.
//!
//! A TCP connect alone says little (a broker accepts before it can answer), so each probe sends
//! the smallest real request and checks the answer. Every probe is bounded by its `timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How to tell that a component is ready to serve.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Redis answers `PING` with `+PONG` (not `-LOADING` while it replays its AOF).
    RedisPing(SocketAddr),
    /// A Redis replica is in sync with its primary (`master_link_status:up` in `INFO
    /// replication`): a replica that has not synced yet holds nothing to fail over to.
    RedisReplicaSynced(SocketAddr),
    /// A Kafka broker answers an `ApiVersions` request with error code 0.
    KafkaApiVersions(SocketAddr),
    /// An HTTP server answers `GET path` with a 2xx status.
    HttpOk(SocketAddr, &'static str),
}

impl Probe {
    /// The same probe aimed at `addr` (a container's port as published on the host).
    pub fn at(&self, addr: SocketAddr) -> Probe {
        match self {
            Probe::RedisPing(_) => Probe::RedisPing(addr),
            Probe::RedisReplicaSynced(_) => Probe::RedisReplicaSynced(addr),
            Probe::KafkaApiVersions(_) => Probe::KafkaApiVersions(addr),
            Probe::HttpOk(_, path) => Probe::HttpOk(addr, path),
        }
    }

    /// The address it checks.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Probe::RedisPing(addr)
            | Probe::RedisReplicaSynced(addr)
            | Probe::KafkaApiVersions(addr)
            | Probe::HttpOk(addr, _) => *addr,
        }
    }

    /// One attempt, bounded by `limit`. `Ok(())` when the component answered as expected.
    pub async fn check(&self, limit: Duration) -> Result<(), String> {
        match timeout(limit, self.check_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    async fn check_unbounded(&self) -> Result<(), String> {
        match self {
            Probe::RedisPing(addr) => redis_ping(*addr).await,
            Probe::RedisReplicaSynced(addr) => {
                let info = redis_answer(*addr, &["INFO", "replication"], Duration::from_secs(5)).await?;
                match info.contains("master_link_status:up") {
                    true => Ok(()),
                    false => Err("replica not in sync with its primary yet".into()),
                }
            }
            Probe::KafkaApiVersions(addr) => kafka_api_versions(*addr).await,
            Probe::HttpOk(addr, path) => http_ok(*addr, path).await,
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))
}

async fn redis_ping(addr: SocketAddr) -> Result<(), String> {
    let mut stream = connect(addr).await?;
    stream.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&buf[..n]);
    if answer.starts_with("+PONG") {
        Ok(())
    } else {
        Err(format!("redis answered {:?}", answer.trim_end()))
    }
}

/// `ApiVersions` v0: the request every Kafka client sends first.
async fn kafka_api_versions(addr: SocketAddr) -> Result<(), String> {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x0f1a_5b1b;
    let client_id = b"flashlab-probe";
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&API_VERSIONS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes()); // version
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);

    let mut stream = connect(addr).await?;
    stream.write_all(&request).await.map_err(|e| e.to_string())?;
    let size = stream.read_i32().await.map_err(|e| format!("reading size: {e}"))?;
    if !(6..=1 << 20).contains(&size) {
        return Err(format!("implausible ApiVersions response size {size}"));
    }
    let correlation_id = stream.read_i32().await.map_err(|e| e.to_string())?;
    let error_code = stream.read_i16().await.map_err(|e| e.to_string())?;
    if correlation_id != CORRELATION_ID {
        return Err(format!("correlation id {correlation_id} != {CORRELATION_ID}"));
    }
    if error_code != 0 {
        return Err(format!("ApiVersions error code {error_code}"));
    }
    Ok(())
}

async fn http_ok(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 32];
    let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
    let status_line = String::from_utf8_lossy(&buf[..n]);
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path}: no status line")),
    }
}

/// Sends one Redis command and returns the first line of the answer (`+OK`, `:42`, `-ERR ...`),
/// bounded by `limit`.
pub async fn redis_command(addr: SocketAddr, parts: &[&str], limit: Duration) -> Result<String, String> {
    redis_answer(addr, parts, limit).await.map(|a| a.lines().next().unwrap_or_default().to_string())
}

/// Sends one Redis command and returns the answer's text, bounded by `limit`: a bulk string
/// (`INFO`) whole, anything else as read in one go (a short array, such as `SENTINEL
/// get-master-addr-by-name`, fits).
pub async fn redis_answer(addr: SocketAddr, parts: &[&str], limit: Duration) -> Result<String, String> {
    let exchange = async {
        let mut stream = connect(addr).await?;
        let mut request = format!("*{}\r\n", parts.len());
        for part in parts {
            request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("redis closed the connection".to_string());
            }
            answer.extend_from_slice(&buf[..n]);
            if !bulk_incomplete(&answer) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&answer).to_string())
    };
    match timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("{}: no answer within {limit:?}", parts.join(" "))),
    }
}

/// A bulk string reply (`$LEN\r\n…\r\n`) of which fewer than its length have arrived (at
/// most 1 MiB is waited for: the replies read here are a few hundred bytes).
fn bulk_incomplete(answer: &[u8]) -> bool {
    let Some(rest) = answer.strip_prefix(b"$") else { return false };
    let Some(header) = rest.windows(2).position(|w| w == b"\r\n") else { return answer.len() < 32 };
    let Some(len) = std::str::from_utf8(&rest[..header]).ok().and_then(|l| l.parse::<usize>().ok()) else {
        return false;
    };
    answer.len() < (1 + header + 2 + len + 2).min(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::bulk_incomplete;

    #[test]
    fn a_bulk_reply_is_complete_once_its_length_has_arrived() {
        assert!(bulk_incomplete(b"$10\r\nrole:"), "5 of 10 bytes");
        assert!(bulk_incomplete(b"$10\r\nrole:maste"), "the closing CRLF missing");
        assert!(!bulk_incomplete(b"$10\r\nrole:maste\r\n"));
        assert!(bulk_incomplete(b"$1"), "the header itself cut");
        assert!(!bulk_incomplete(b"$-1\r\n"), "a null bulk string");
        assert!(!bulk_incomplete(b"+OK\r\n") && !bulk_incomplete(b"*2\r\n$1\r\na\r\n"), "not a bulk string");
    }
}

//! The maintenance page: what the front proxy answers when no gateway takes a connection — the
//! four-layer article's "static pages: show a maintenance page if the system is down" — as a
//! load balancer's or CDN's static page would: `503 Service Unavailable`, `Retry-After`, HTML,
//! `Connection: close`. Nothing behind the front saw the request, so it had no effect; the
//! generator records such an answer as its own outcome (`maintenance`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The page's `Retry-After`, seconds.
pub const RETRY_AFTER_S: u32 = 30;
/// The page itself.
pub const PAGE: &str = include_str!("maintenance.html");
/// How much of a request head is read before answering anyway.
const HEAD_LIMIT: usize = 16 * 1024;
/// How long the client has to send its request head, and to close after the answer.
const CLIENT_LIMIT: Duration = Duration::from_secs(2);

/// The whole HTTP response.
pub fn response() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\nRetry-After: {RETRY_AFTER_S}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PAGE}",
        PAGE.len()
    )
    .into_bytes()
}

/// Reads the client's request head (up to [`HEAD_LIMIT`], within [`CLIENT_LIMIT`]), answers
/// `response` and closes the write side. Whether the answer was written; then [`linger`].
pub(crate) async fn answer(client: &mut TcpStream, response: &[u8]) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while head.len() < HEAD_LIMIT && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(CLIENT_LIMIT, read_head).await, Ok(true)) {
        return false;
    }
    if client.write_all(response).await.is_err() {
        return false;
    }
    let _ = client.shutdown().await;
    true
}

/// Reads and drops whatever the client still sends (a request body) until it closes or
/// [`CLIENT_LIMIT`] passes: closing with unread data would reset the connection before the
/// client read the answer.
pub(crate) async fn linger(mut client: TcpStream) {
    let mut buf = [0u8; 4096];
    let drain = async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLIENT_LIMIT, drain).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_a_503_with_retry_after_and_its_length() {
        let text = String::from_utf8(super::response()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\nRetry-After: 30\r\n") && head.contains("Content-Type: text/html"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(body.contains("We'll be right back"));
    }
}

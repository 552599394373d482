//! Free loopback ports.
//!
//! The port is found by binding `127.0.0.1:0` and releasing it; another process can take it in
//! between, so callers that start a server on it retry on a bind failure (see
//! [`crate::process::Supervised::start`] callers in [`crate::testbed`]).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

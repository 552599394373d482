//! Replicated Redis in a testbed: the first Redis (`redis[0]`, the primary at the start), N
//! replicas of it (`redis[1]`…) and three sentinels (`sentinel[0..3]`) watching it.
//!
//! Each node is behind a fault proxy of its own and announces the proxy's address
//! (`replica-announce-ip/port`), so the sentinels, the services (`REDIS_SENTINELS`) and the
//! replication links all go through the proxies: a network fault on a node cuts its clients
//! and its replication alike. Replica N opens its replication connection from an address of
//! its own (`bind-source-addr 127.0.0.N+1`): a fault on `replication[N]` is a toxic on every
//! node's proxy limited to connections from that address — replication to that replica slows or
//! stops, whichever node is the primary, and the clients are spared. (A proxy per link would
//! not do: Sentinel points every replica at the primary's announced address.) The sentinels
//! themselves are reached directly; they are processes the lab can kill or freeze. Which node is
//! the primary is asked of the sentinels ([`super::Testbed::refresh_primary`]): after a failover
//! it is another one.
//!
//! On containers the same set runs in the run's network: every node and sentinel a container of
//! the `redis` image (a sentinel is `redis-server CONF --sentinel`, its config written by the lab
//! into the directory mounted as its own); the nodes announce their proxies, which listen on the
//! host's address on that network; a replica's replication comes from its container's address,
//! which singles it out as `127.0.0.N` does on loopback; the sentinels find each other by the
//! addresses they connect from, the services reach them by name (`flashlab-RUN-sentinel-0:26379`)
//! and the lab by their ports published on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::components::{self, SentinelSettings};
use crate::probe::redis_answer;
use crate::process::Supervised;
use crate::proxy::FaultProxy;

use super::placement::{port, Placement, RuntimeKind};

/// How many sentinels watch the set (a majority of them, two, must agree).
pub const SENTINELS: usize = 3;
/// The master name the services ask the sentinels for (`REDIS_MASTER_NAME`).
pub const MASTER_NAME: &str = "flashsale";

/// Sentinel's settings in a testbed, unless the caller says otherwise: the primary is judged
/// down after 5 s without an answer (Sentinel's own default is 30 s; the article asks for an
/// immediate promotion), by two of the three.
pub fn default_settings() -> SentinelSettings {
    SentinelSettings {
        master: MASTER_NAME.into(),
        quorum: 2,
        down_after: Duration::from_secs(5),
        failover_timeout: Duration::from_secs(10),
    }
}

/// The replicas, their proxies, the sentinels and which node is the primary now.
#[derive(Debug)]
pub struct Replication {
    /// Nodes 1…N.
    pub(super) replicas: Vec<Supervised>,
    /// Their fault proxies (none when the testbed runs without proxies).
    pub(super) proxies: Vec<FaultProxy>,
    pub(super) sentinels: Vec<Supervised>,
    /// The node the sentinels named last.
    pub(super) primary: usize,
}

impl Replication {
    /// Starts `replicas` replicas of the primary announced at `primary` and the sentinels, where
    /// `placement` runs components; each replica behind its proxy from `proxies` when there are
    /// proxies.
    pub(super) async fn start(
        placement: &Placement,
        replicas: usize,
        primary: SocketAddr,
        proxies: Vec<FaultProxy>,
        settings: &SentinelSettings,
        dir: &Path,
    ) -> Result<Replication, super::TestbedError> {
        let on_loopback = placement.kind() == RuntimeKind::Processes;
        let mut nodes = Vec::new();
        for i in 1..=replicas {
            let node_dir = super::make_dir(&dir.join(format!("redis-{i}")))?;
            let proxy = proxies.get(i - 1);
            // In a container its address on the run's network is its own already.
            let source = on_loopback.then(|| replica_source(i));
            let node = placement
                .start(port::REDIS, None, &node_dir, |addr, dir| {
                    let announce = match proxy {
                        Some(p) => {
                            p.set_upstream(addr);
                            p.addr()
                        }
                        None => addr,
                    };
                    components::redis_node(i, addr, announce, Some(primary), source, dir)
                })
                .await?;
            if let Some(p) = proxy {
                // On containers the published port, known once it runs.
                p.set_upstream(node.addr());
            }
            nodes.push(node);
        }
        let sentinel_dir = super::make_dir(&dir.join("sentinels"))?;
        let mut sentinels = Vec::new();
        for i in 0..SENTINELS {
            let sentinel = match on_loopback {
                true => start_sentinel(i, primary, settings, &sentinel_dir).await?,
                false => {
                    // Its config written on the host, in the directory mounted as its own.
                    let inside = SocketAddr::from(([0, 0, 0, 0], port::SENTINEL));
                    let data = Path::new(crate::containers::images::DATA_DIR);
                    let spec =
                        components::sentinel(i, inside, primary, settings, &sentinel_dir, data).map_err(|source| {
                            super::TestbedError::Dir { path: sentinel_dir.display().to_string(), source }
                        })?;
                    placement.start(port::SENTINEL, None, &sentinel_dir, |_, _| spec.clone()).await?
                }
            };
            sentinels.push(sentinel);
        }
        Ok(Replication { replicas: nodes, proxies, sentinels, primary: 0 })
    }

    /// The sentinels' addresses (`REDIS_SENTINELS`), where the lab reaches them.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(Supervised::addr).collect()
    }

    /// The sentinels as the services reach them: on loopback where they listen; in containers
    /// by their names on the run's network (a container started again may get another address,
    /// never another name).
    pub(super) fn sentinels_for_services(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| match s.container() {
                Some(container) => container.name_port(port::SENTINEL),
                None => s.addr().to_string(),
            })
            .collect()
    }
}

async fn start_sentinel(
    index: usize,
    primary: SocketAddr,
    settings: &SentinelSettings,
    dir: &Path,
) -> Result<Supervised, super::TestbedError> {
    let mut attempt = 0;
    loop {
        let addr = crate::ports::loopback(crate::ports::free_port().map_err(crate::process::ProcessError::NoPort)?);
        // A config of an earlier attempt names another port: start afresh.
        let _ = std::fs::remove_file(dir.join(format!("sentinel-{index}.conf")));
        let spec = components::sentinel(index, addr, primary, settings, dir, dir)
            .map_err(|source| super::TestbedError::Dir { path: dir.display().to_string(), source })?;
        match Supervised::start(spec).await {
            Ok(s) => return Ok(s),
            Err(crate::process::ProcessError::ExitedEarly { .. }) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The address replica `index` (1…) opens its replication connection from.
pub fn replica_source(index: usize) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, (index + 1).min(254) as u8))
}

/// The primary's announced address, as the first sentinel that answers names it.
pub async fn ask_primary(sentinels: &[SocketAddr]) -> Option<SocketAddr> {
    for sentinel in sentinels {
        let answer =
            redis_answer(*sentinel, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME], Duration::from_secs(1))
                .await;
        if let Some(addr) = answer.ok().as_deref().and_then(address_reply) {
            return Some(addr);
        }
    }
    None
}

/// `HOST:PORT` from a RESP array of two bulk strings (`*2\r\n$9\r\n127.0.0.1\r\n$5\r\n40123\r\n`);
/// `None` for anything else (a null array: no such master; an error).
fn address_reply(text: &str) -> Option<SocketAddr> {
    let parts: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty() && !l.starts_with(['*', '$'])).collect();
    match parts[..] {
        [host, port] => format!("{host}:{port}").parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_is_read_from_sentinels_reply() {
        let reply = "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n40123\r\n";
        assert_eq!(address_reply(reply), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(address_reply("*-1\r\n"), None, "no such master");
        assert_eq!(address_reply("-ERR unknown command\r\n"), None);
        assert_eq!(replica_source(1).to_string(), "127.0.0.2");
    }
}

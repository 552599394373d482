//! The operator's manual failover of replicated Redis (the article's "promote a replica to
//! master immediately"), done so that it loses nothing the primary took.
//!
//! `SENTINEL FAILOVER` alone promotes a replica while the old primary still takes writes: the
//! replica Sentinel picks (from replication offsets it read up to 10 s earlier) may lack what
//! the primary acknowledged, and a write acknowledged by the other replica (`WAIT`) after the
//! promotion is dropped when that replica resyncs from the new primary; a buyer who read a
//! status on the old primary reads an older one on the new (the likely cause of a
//! `redis-primary-slow` failure in CI: orders seen `RESERVED`, then `PENDING`). So the on-call's
//! failover ([`Handover::Coordinated`]) is:
//!
//! 1. `CLIENT PAUSE <limit> WRITE` on the primary: writes wait, reads go on (the pause ends by
//!    itself after `limit`, even if the lab dies);
//! 2. wait — at most [`CATCH_UP_LIMIT`] — until every replica has processed the primary's
//!    whole replication stream (each replica's `slave_repl_offset` ≥ the primary's
//!    `master_repl_offset`), so whichever replica Sentinel picks has every write;
//! 3. `SENTINEL FAILOVER`, until a sentinel names another primary;
//! 4. `REPLICAOF` the new primary on the old one (what Sentinel would do some seconds later),
//!    then `CLIENT UNPAUSE`: the writes that waited are refused `READONLY` — they never ran —
//!    and their clients retry them on the new primary.
//!
//! The lab sends these to each node directly, not through its fault proxy ([`Nodes`]): a
//! slow primary slows its clients, not the on-call. Writes wait about as long as steps 2–4
//! take (a second or two; the failover's output says).
//!
//! [`Handover::Bare`] is step 3 alone, kept to show what it loses (`chaos/tests/replication.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::replication::{ask_primary, MASTER_NAME};
use crate::probe::{redis_answer, redis_command};

/// How long the replicas get to process the paused primary's stream.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);
/// The bound on each command the failover sends.
const CALL: Duration = Duration::from_secs(2);

/// How the primary hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Writes paused, replicas caught up, `SENTINEL FAILOVER`, the old primary made a replica
    /// (the module's steps).
    Coordinated,
    /// `SENTINEL FAILOVER` alone: what the primary took but a replica did not yet have may be lost.
    Bare,
}

/// The Redis nodes as (announced address, where it listens): Sentinel and the replicas name a
/// node by the address it announces (its proxy's), the lab talks to it directly. A node not
/// listed is talked to at the address it is named by.
pub type Nodes = [(SocketAddr, SocketAddr)];

fn direct(nodes: &Nodes, announced: SocketAddr) -> SocketAddr {
    nodes.iter().find(|(a, _)| *a == announced).map_or(announced, |(_, d)| *d)
}

/// What an operator's failover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// The sentinel that took the order.
    pub by: SocketAddr,
    pub took: Duration,
    /// How the replicas caught up with the paused primary ([`Handover::Coordinated`]).
    pub caught_up: Option<CatchUp>,
    /// How long writes waited on the old primary, and how they were let go.
    pub released: Option<String>,
}

impl std::fmt::Display for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "primary {} → {} in {} ms (sentinel {})", self.from, self.to, self.took.as_millis(), self.by)?;
        if let Some(c) = &self.caught_up {
            write!(f, "; {c}")?;
        }
        if let Some(r) = &self.released {
            write!(f, "; {r}")?;
        }
        Ok(())
    }
}

/// The replicas against the paused primary's replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// `master_repl_offset` once writes were paused.
    pub offset: u64,
    pub replicas: usize,
    pub took: Duration,
    /// Replicas still short of `offset` when [`CATCH_UP_LIMIT`] passed (`ADDR: N bytes behind`,
    /// or why it was not read): the failover went on, as the on-call's would.
    pub behind: Vec<String>,
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.behind.is_empty() {
            write!(
                f,
                "writes paused, {} replica(s) at offset {} after {} ms",
                self.replicas,
                self.offset,
                self.took.as_millis()
            )
        } else {
            write!(
                f,
                "writes paused, after {} ms still behind offset {}: {}",
                self.took.as_millis(),
                self.offset,
                self.behind.join(", ")
            )
        }
    }
}

/// The failover (see the module docs), bounded by `limit`: an error says which step failed
/// (the primary refused the pause, no sentinel took the failover, or the primary stayed); a
/// pause it set is lifted before it returns.
pub async fn manual_failover(
    sentinels: &[SocketAddr],
    nodes: &Nodes,
    limit: Duration,
    handover: Handover,
) -> Result<Failover, String> {
    let started = Instant::now();
    let from = ask_primary(sentinels).await.ok_or("no sentinel names a primary")?;
    let primary = direct(nodes, from);
    let caught_up = match handover {
        Handover::Bare => None,
        Handover::Coordinated => {
            let pause = limit.as_millis().to_string();
            match redis_command(primary, &["CLIENT", "PAUSE", &pause, "WRITE"], CALL).await {
                Ok(reply) if reply.starts_with("+OK") => {}
                Ok(reply) => return Err(format!("the primary {from} refused CLIENT PAUSE: {reply}")),
                Err(e) => return Err(format!("CLIENT PAUSE on the primary {from}: {e}")),
            }
            Some(catch_up(primary, nodes, CATCH_UP_LIMIT.min(limit)).await)
        }
    };
    let switched = switch(sentinels, from, started + limit).await;
    let released = match (&caught_up, &switched) {
        (None, _) => None,
        (Some(_), Ok((_, to))) => Some(demote(primary, *to, started).await),
        (Some(_), Err(_)) => Some(unpause(primary, started).await),
    };
    let (by, to) = switched?;
    Ok(Failover { from, to, by, took: started.elapsed(), caught_up, released })
}

/// `SENTINEL FAILOVER` to the first sentinel that takes it, then waits until that sentinel
/// names another primary than `from`. The sentinel and the new primary.
async fn switch(
    sentinels: &[SocketAddr],
    from: SocketAddr,
    deadline: Instant,
) -> Result<(SocketAddr, SocketAddr), String> {
    let mut refusals = Vec::new();
    let mut by = None;
    for sentinel in sentinels {
        match redis_answer(*sentinel, &["SENTINEL", "FAILOVER", MASTER_NAME], Duration::from_secs(1)).await {
            Ok(reply) if reply.starts_with("+OK") => {
                by = Some(*sentinel);
                break;
            }
            Ok(reply) => refusals.push(format!("{sentinel}: {}", reply.trim())),
            Err(e) => refusals.push(format!("{sentinel}: {e}")),
        }
    }
    let by = by.ok_or_else(|| format!("no sentinel took SENTINEL FAILOVER ({})", refusals.join("; ")))?;
    loop {
        if let Some(to) = ask_primary(&[by]).await.filter(|now| *now != from) {
            return Ok((by, to));
        }
        if Instant::now() >= deadline {
            return Err(format!("sentinel {by} took the failover, but still named {from} at the failover's limit"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls each replica of the paused primary until all have processed its whole stream, or
/// `limit`.
async fn catch_up(primary: SocketAddr, nodes: &Nodes, limit: Duration) -> CatchUp {
    let started = Instant::now();
    let mut last =
        CatchUp { offset: 0, replicas: 0, took: Duration::ZERO, behind: vec!["no INFO replication answered".into()] };
    while started.elapsed() < limit {
        if let Ok(info) = redis_answer(primary, &["INFO", "replication"], CALL).await {
            let (offset, replicas) = replicas_of(&info);
            let mut behind = Vec::new();
            for replica in &replicas {
                let read = redis_answer(direct(nodes, *replica), &["INFO", "replication"], CALL).await;
                match read.as_deref().map(processed_offset) {
                    Ok(Some(at)) if at >= offset => {}
                    Ok(Some(at)) => behind.push(format!("{replica}: {} bytes behind", offset - at)),
                    Ok(None) => behind.push(format!("{replica}: no slave_repl_offset")),
                    Err(e) => behind.push(format!("{replica}: {e}")),
                }
            }
            if replicas.is_empty() {
                behind.push("no replica connected".into());
            }
            last = CatchUp { offset, replicas: replicas.len(), took: started.elapsed(), behind };
            if last.behind.is_empty() {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last.took = started.elapsed();
    last
}

/// The old primary made a replica of `to`, then unpaused: the writes that waited are refused.
async fn demote(primary: SocketAddr, to: SocketAddr, started: Instant) -> String {
    let port = to.port().to_string();
    let ip = to.ip().to_string();
    let demoted = match redis_command(primary, &["REPLICAOF", &ip, &port], CALL).await {
        Ok(reply) if reply.starts_with("+OK") => format!("old primary a replica of {to}"),
        Ok(reply) => format!("REPLICAOF {to} on the old primary answered {reply}"),
        Err(e) => format!("REPLICAOF {to} on the old primary: {e}"),
    };
    format!("{demoted}; {}", unpause(primary, started).await)
}

async fn unpause(primary: SocketAddr, started: Instant) -> String {
    match redis_command(primary, &["CLIENT", "UNPAUSE"], CALL).await {
        Ok(reply) if reply.starts_with("+OK") => format!("writes unpaused after {} ms", started.elapsed().as_millis()),
        Ok(reply) => format!("CLIENT UNPAUSE answered {reply} (the pause ends by itself)"),
        Err(e) => format!("CLIENT UNPAUSE: {e} (the pause ends by itself)"),
    }
}

/// A primary's `INFO replication`: its `master_repl_offset` (`u64::MAX` if absent: nothing
/// is caught up with an unknown offset) and its replicas' announced addresses.
fn replicas_of(info: &str) -> (u64, Vec<SocketAddr>) {
    let field = |fields: &str, key: &str| {
        fields.split(',').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('='))).map(str::to_string)
    };
    let offset = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let replicas = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|line| {
            let fields = line.split_once(':')?.1;
            format!("{}:{}", field(fields, "ip")?, field(fields, "port")?).parse().ok()
        })
        .collect();
    (offset, replicas)
}

/// A replica's `INFO replication`: how much of its primary's stream it has processed.
fn processed_offset(info: &str) -> Option<u64> {
    info.lines().find_map(|l| l.strip_prefix("slave_repl_offset:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.1,port=40001,state=online,offset=1200,lag=0\r\n\
        slave1:ip=127.0.0.1,port=40002,state=wait_bgsave,offset=0,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_repl_offset:1200\r\nsecond_repl_offset:-1\r\n";

    #[test]
    fn the_primarys_offset_and_replicas_are_read_from_its_info() {
        let (offset, replicas) = replicas_of(PRIMARY);
        assert_eq!(offset, 1200);
        assert_eq!(replicas, vec!["127.0.0.1:40001".parse().unwrap(), "127.0.0.1:40002".parse().unwrap()]);
        let (offset, replicas) = replicas_of("-ERR unknown\r\n");
        assert_eq!((offset, replicas.len()), (u64::MAX, 0), "an unknown offset is never caught up with");
    }

    #[test]
    fn a_replicas_processed_offset_is_read_from_its_info() {
        let replica =
            "role:slave\r\nmaster_link_status:up\r\nslave_repl_offset:1180\r\nslave_read_repl_offset:1200\r\n";
        assert_eq!(processed_offset(replica), Some(1180));
        assert_eq!(processed_offset(PRIMARY), None);
    }

    #[test]
    fn a_node_is_talked_to_directly_when_its_announced_address_is_known() {
        let nodes = [("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap())];
        assert_eq!(direct(&nodes, "127.0.0.1:5000".parse().unwrap()), "127.0.0.1:6000".parse().unwrap());
        assert_eq!(direct(&nodes, "127.0.0.1:5001".parse().unwrap()), "127.0.0.1:5001".parse().unwrap());
    }
}

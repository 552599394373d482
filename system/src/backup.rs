//! `flashsale backup PATH` / `flashsale restore PATH`: the runbook's Redis backup and restore,
//! done over the Redis protocol so that it works whatever the server's files and persistence
//! (the testbed runs Redis with an AOF, which a copied `dump.rdb` would not replace).
//!
//! A backup is a JSON-lines file: one line per key with its `DUMP` payload and remaining TTL,
//! written to `PATH.tmp` and renamed, so a crash never leaves half a backup under `PATH`.
//! A restore *replaces* the database: `FLUSHDB`, then `RESTORE` of every key. On a primary with
//! replicas it is done only once every replica connected to it has it (`WAIT`, at most
//! [`REPLICA_WAIT`]): a restore only the primary holds would be undone by the next failover.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::redis_conn::{Redis, RedisError};

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;
/// How long a restore waits for the replicas to have it.
pub const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} line {line}: not a flashsale backup line: {why}")]
    Format { path: String, line: usize, why: String },
    #[error(
        "restored {keys} keys on the primary, but only {acked} of its {replicas} replica(s) have them after \
         {waited:?}: a failover now would undo the restore"
    )]
    NotReplicated { keys: usize, acked: usize, replicas: usize, waited: std::time::Duration },
}

/// What a restore wrote, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub keys: usize,
    /// The replicas connected to the primary when the restore ended (each has it).
    pub replicas: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// The key, hex.
    key: String,
    /// Milliseconds to live; 0 = no expiry.
    ttl_ms: i64,
    /// The `DUMP` payload, hex.
    dump: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err("odd hex length".into());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string())).collect()
}

/// Writes every key to `path`; returns how many.
pub async fn backup(redis: &Redis, path: &Path) -> Result<usize, BackupError> {
    let io = |source| BackupError::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    let mut cursor: u64 = 0;
    let mut count = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis
            .call(|mut c| async move {
                redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_COUNT).query_async(&mut c).await
            })
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
            }
            let values: Vec<(Option<Vec<u8>>, i64)> =
                redis.call(|mut c| async move { pipe.query_async(&mut c).await }).await?;
            for (key, (dump, ttl)) in keys.iter().zip(values) {
                let Some(dump) = dump else { continue }; // expired meanwhile
                let entry = Entry { key: hex(key), ttl_ms: ttl.max(0), dump: hex(&dump) };
                serde_json::to_writer(&mut out, &entry).map_err(|e| io(e.into()))?;
                out.write_all(b"\n").map_err(io)?;
                count += 1;
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(count)
}

/// Replaces the database with the backup at `path`, on the primary and its replicas.
pub async fn restore(redis: &Redis, path: &Path) -> Result<Restored, BackupError> {
    let io = |source| BackupError::Io { path: path.display().to_string(), source };
    let reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    // Read and check the whole file before touching the database.
    let mut entries = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        let format = |why: String| BackupError::Format { path: path.display().to_string(), line: index + 1, why };
        let entry: Entry = serde_json::from_str(&line).map_err(|e| format(e.to_string()))?;
        entries.push((unhex(&entry.key).map_err(format)?, entry.ttl_ms, unhex(&entry.dump).map_err(format)?));
    }
    redis.call(|mut c| async move { redis::cmd("FLUSHDB").query_async::<()>(&mut c).await }).await?;
    for chunk in entries.chunks(SCAN_COUNT) {
        let mut pipe = redis::pipe();
        for (key, ttl, dump) in chunk {
            pipe.cmd("RESTORE").arg(key).arg(*ttl).arg(dump).arg("REPLACE").ignore();
        }
        redis.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await?;
    }
    let keys = entries.len();
    let replicas = connected_replicas(redis).await?;
    let started = tokio::time::Instant::now();
    // WAIT on the connection that wrote: the replicas that have every write of it. In steps
    // within the call's own timeout.
    loop {
        let acked: usize = redis
            .call(|mut c| async move { redis::cmd("WAIT").arg(replicas).arg(500).query_async(&mut c).await })
            .await?;
        if acked >= replicas {
            return Ok(Restored { keys, replicas });
        }
        if started.elapsed() >= REPLICA_WAIT {
            return Err(BackupError::NotReplicated { keys, acked, replicas, waited: started.elapsed() });
        }
    }
}

/// `connected_slaves` of the server's `INFO replication`.
async fn connected_replicas(redis: &Redis) -> Result<usize, BackupError> {
    let info: String =
        redis.call(|mut c| async move { redis::cmd("INFO").arg("replication").query_async(&mut c).await }).await?;
    Ok(info.lines().find_map(|l| l.trim().strip_prefix("connected_slaves:")).and_then(|n| n.parse().ok()).unwrap_or(0))
}

//! The Redis connection every service shares: one multiplexed connection that reconnects by
//! itself, with a limit on every call.
//!
//! Redis is found one of two ways ([`RedisEndpoint`]): at one address (`REDIS_ADDR`), or as
//! the primary that Redis Sentinel names (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`). With
//! Sentinel the connection follows a failover by itself: every second, and at once after a call
//! failed in a way a failover explains (the connection broke, `READONLY` from a demoted
//! primary, no answer), the sentinels are asked for the primary (`SENTINEL
//! get-master-addr-by-name`, each bounded); a new address gets a new connection, checked with
//! `ROLE` to be a primary before it replaces the old one. A call in flight during the switch
//! fails and is the caller's to retry, as with any Redis error.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{ConfigError, Env};

/// How often the sentinels are asked for the primary, besides after a failed call.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// `REDIS_ADDR`: one server.
    Direct(String),
    /// `REDIS_SENTINELS` (`HOST:PORT,…`): the primary Sentinel names `master`
    /// (`REDIS_MASTER_NAME`).
    Sentinel { sentinels: Vec<String>, master: String },
}

impl RedisEndpoint {
    /// `REDIS_SENTINELS` when set (with `REDIS_MASTER_NAME`, default `flashsale`), else
    /// `REDIS_ADDR` (default `127.0.0.1:6379`).
    pub fn from_env(env: &Env<'_>) -> Result<RedisEndpoint, ConfigError> {
        let sentinels = env.string("REDIS_SENTINELS", "");
        if sentinels.is_empty() {
            return Ok(RedisEndpoint::Direct(env.host_ports("REDIS_ADDR", "127.0.0.1:6379")?));
        }
        let sentinels = env.host_ports("REDIS_SENTINELS", "")?;
        let master = env.string("REDIS_MASTER_NAME", "flashsale");
        if master.is_empty() || master.contains(char::is_whitespace) {
            return Err(ConfigError { var: "REDIS_MASTER_NAME", value: master, why: "a name without spaces".into() });
        }
        Ok(RedisEndpoint::Sentinel { sentinels: sentinels.split(',').map(String::from).collect(), master })
    }
}

impl std::fmt::Display for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisEndpoint::Direct(addr) => write!(f, "REDIS_ADDR={addr}"),
            RedisEndpoint::Sentinel { sentinels, master } => {
                write!(f, "REDIS_SENTINELS={} (REDIS_MASTER_NAME={master})", sentinels.join(","))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// No answer within the timeout while the connection was being made again (the call before
    /// found it broken): the command was waiting for a connection, not for Redis.
    #[error("redis unreachable: no connection within {0:?}")]
    Unreachable(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no sentinel names a primary for {0}")]
    NoPrimary(String),
    #[error("written on the primary, but {acked} of the {wanted} replica(s) asked for have it (WAIT)")]
    NotReplicated { acked: u32, wanted: u32 },
}

impl RedisError {
    /// Whether the command may have run although no answer came: it timed out on a live
    /// connection, or the connection broke after it was sent. (A refused connection, one still
    /// being made again, an error reply, no primary: it certainly did not write — nearly: a
    /// connection made again in the last instant of the wait could have carried it.)
    pub fn may_have_run(&self) -> bool {
        match self {
            RedisError::Timeout(_) => true,
            RedisError::Unreachable(_) => false,
            RedisError::Redis(e) => {
                e.is_timeout() || e.is_connection_dropped() || (e.is_io_error() && !e.is_connection_refusal())
            }
            RedisError::NoPrimary(_) => false,
            // Written, not yet on the replicas.
            RedisError::NotReplicated { .. } => true,
        }
    }
}

/// A connection to Redis (see [`RedisEndpoint`]) with `timeout` on connecting and on every
/// answer. Cheap to clone: the clones share the connection.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
    /// What [`Redis::call_durable`] waits for.
    durability: Option<Durability>,
}

/// `WAIT` after a write: acknowledged only once `replicas` replicas have it, waiting at most
/// `timeout` (`REDIS_WAIT_REPLICAS`, `REDIS_WAIT_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    pub replicas: u32,
    pub timeout: Duration,
}

impl Durability {
    /// `REDIS_WAIT_REPLICAS` (0: off, the default) and `REDIS_WAIT_TIMEOUT` (100ms), which must
    /// be shorter than `redis_timeout` (the call's own limit).
    pub fn from_env(env: &Env<'_>, redis_timeout: Duration) -> Result<Option<Durability>, ConfigError> {
        let replicas = env.number("REDIS_WAIT_REPLICAS", 0, 0, 16)?;
        let timeout = env.duration("REDIS_WAIT_TIMEOUT", Duration::from_millis(100))?;
        if replicas > 0 && timeout >= redis_timeout {
            return Err(ConfigError {
                var: "REDIS_WAIT_TIMEOUT",
                value: humantime::format_duration(timeout).to_string(),
                why: "must be shorter than REDIS_TIMEOUT".into(),
            });
        }
        Ok((replicas > 0).then_some(Durability { replicas, timeout }))
    }
}

struct Inner {
    /// The primary's address and the connection to it.
    conn: RwLock<(String, ConnectionManager)>,
    timeout: Duration,
    /// With Sentinel: the sentinels and the master's name.
    sentinel: Option<(Vec<String>, String)>,
    /// Asks the watcher to look for the primary now.
    wake: tokio::sync::Notify,
    /// The last call found the connection broken (until a call succeeds).
    broken: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("addr", &self.addr())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

async fn manager(addr: &str, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(2)
        .set_max_delay(200);
    tokio::time::timeout(timeout * 4, client.get_connection_manager_with_config(config))
        .await
        .map_err(|_| RedisError::Timeout(timeout * 4))?
        .map_err(RedisError::from)
}

/// One command on a fresh connection to `addr`, bounded by `timeout`.
async fn ask<T: redis::FromRedisValue>(addr: &str, cmd: &redis::Cmd, timeout: Duration) -> Result<T, RedisError> {
    let exchange = async {
        let client = redis::Client::open(format!("redis://{addr}/"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        cmd.query_async::<T>(&mut conn).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisError::Timeout(timeout)),
    }
}

/// The primary's `HOST:PORT` as the first sentinel that knows it says.
async fn primary_from(sentinels: &[String], master: &str, timeout: Duration) -> Result<String, RedisError> {
    let mut last = RedisError::NoPrimary(master.to_string());
    for sentinel in sentinels {
        let cmd = redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(master).clone();
        match ask::<Option<(String, u16)>>(sentinel, &cmd, timeout).await {
            Ok(Some((host, port))) => return Ok(format!("{host}:{port}")),
            Ok(None) => last = RedisError::NoPrimary(master.to_string()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether the connection is broken (the manager makes it again on the next call).
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Whether a failed call may mean the primary moved: the connection broke or timed out, or
/// the server is a replica now.
fn may_have_moved(e: &RedisError) -> bool {
    match e {
        RedisError::Timeout(_) | RedisError::Unreachable(_) => true,
        RedisError::Redis(e) => broken(e) || e.code() == Some("READONLY"),
        RedisError::NoPrimary(_) | RedisError::NotReplicated { .. } => false,
    }
}

impl Redis {
    /// Connects to `endpoint`. Fails when Redis is not reachable within `timeout`.
    pub async fn connect(endpoint: &RedisEndpoint, timeout: Duration) -> Result<Redis, RedisError> {
        let (addr, sentinel) = match endpoint {
            RedisEndpoint::Direct(addr) => (addr.clone(), None),
            RedisEndpoint::Sentinel { sentinels, master } => {
                (primary_from(sentinels, master, timeout).await?, Some((sentinels.clone(), master.clone())))
            }
        };
        let conn = manager(&addr, timeout).await?;
        let watch = sentinel.is_some();
        let inner = Arc::new(Inner {
            conn: RwLock::new((addr, conn)),
            timeout,
            sentinel,
            wake: tokio::sync::Notify::new(),
            broken: std::sync::atomic::AtomicBool::new(false),
        });
        if watch {
            tokio::spawn(watch_primary(Arc::downgrade(&inner)));
        }
        Ok(Redis { inner, durability: None })
    }

    /// The same connection, whose [`Redis::call_durable`] waits for `durability`.
    pub fn with_durability(mut self, durability: Option<Durability>) -> Redis {
        self.durability = durability;
        self
    }

    /// [`Redis::call`], then — with a durability set — `WAIT` on the same connection: the write
    /// is acknowledged only once enough replicas have it ([`RedisError::NotReplicated`] when
    /// they did not within the wait; the write itself stands on the primary, and the caller's
    /// retry finds it).
    pub async fn call_durable<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let Some(d) = self.durability else { return self.call(f).await };
        let (value, acked) = self
            .call(|c| async move {
                let mut same = c.clone();
                let value = f(c).await?;
                let acked: u32 =
                    redis::cmd("WAIT").arg(d.replicas).arg(d.timeout.as_millis() as u64).query_async(&mut same).await?;
                Ok((value, acked))
            })
            .await?;
        if acked < d.replicas {
            return Err(RedisError::NotReplicated { acked, wanted: d.replicas });
        }
        Ok(value)
    }

    /// The address of the server the calls go to now.
    pub fn addr(&self) -> String {
        self.inner.conn.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Runs `f` on the connection within the timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.inner.conn.read().unwrap_or_else(|p| p.into_inner()).1.clone();
        let reconnecting = self.inner.broken.load(std::sync::atomic::Ordering::Relaxed);
        let result = match tokio::time::timeout(self.inner.timeout, f(conn)).await {
            Ok(result) => result.map_err(RedisError::from),
            Err(_) if reconnecting => Err(RedisError::Unreachable(self.inner.timeout)),
            Err(_) => Err(RedisError::Timeout(self.inner.timeout)),
        };
        match &result {
            Ok(_) => self.inner.broken.store(false, std::sync::atomic::Ordering::Relaxed),
            Err(RedisError::Redis(e)) if broken(e) => {
                self.inner.broken.store(true, std::sync::atomic::Ordering::Relaxed)
            }
            Err(_) => {}
        }
        if let Err(e) = &result {
            if self.inner.sentinel.is_some() && may_have_moved(e) {
                self.inner.wake.notify_one();
            }
        }
        result
    }

    /// [`Redis::call`], run once more when the server refused it as a replica (`READONLY`: it
    /// did not run — a primary demoted by a failover) and the connection follows the new
    /// primary within the timeout. For a write whose caller cannot tell a refusal from a
    /// failure (the gateway's claim): the on-call's failover refuses the writes it held.
    pub async fn call_following<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let before = self.addr();
        match self.call(&f).await {
            Err(RedisError::Redis(e)) if self.inner.sentinel.is_some() && e.code() == Some("READONLY") => {
                // `call` woke the watcher; wait for it to move the connection.
                let deadline = tokio::time::Instant::now() + self.inner.timeout;
                while self.addr() == before && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if self.addr() == before {
                    return Err(RedisError::Redis(e));
                }
                tracing::warn!(event = "redis_retry_on_new_primary", from = %before, to = %self.addr(), "refused by a demoted primary; running it on the new one");
                self.call(f).await
            }
            other => other,
        }
    }

    /// Connects and pings, retrying until `startup` passes: Redis may still be starting.
    pub async fn connect_when_up(
        endpoint: &RedisEndpoint,
        timeout: Duration,
        startup: Duration,
    ) -> Result<Redis, RedisError> {
        let started = tokio::time::Instant::now();
        loop {
            let attempt = match Redis::connect(endpoint, timeout).await {
                Ok(redis) => redis.ping().await.map(|_| redis),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(redis) => return Ok(redis),
                Err(e) if started.elapsed() >= startup => return Err(e),
                Err(e) => {
                    tracing::info!(event = "redis_wait", error = %e, "Redis not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await.map(|_| ())
    }
}

/// With Sentinel: every [`SENTINEL_POLL`], or when a call failed, asks the sentinels for the
/// primary and moves the connection when it changed. Ends when the last [`Redis`] clone drops.
async fn watch_primary(inner: Weak<Inner>) {
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            let _ = tokio::time::timeout(SENTINEL_POLL, inner.wake.notified()).await;
        }
        let Some(inner) = inner.upgrade() else { return };
        let Some((sentinels, master)) = &inner.sentinel else { return };
        let timeout = inner.timeout;
        let current = inner.conn.read().unwrap_or_else(|p| p.into_inner()).0.clone();
        let addr = match primary_from(sentinels, master, timeout).await {
            Ok(addr) if addr != current => addr,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(event = "sentinel_unreachable", error = %e, "no sentinel named the primary");
                continue;
            }
        };
        // Only a server that says it is a primary takes the calls.
        let role = ask::<Vec<redis::Value>>(&addr, &redis::cmd("ROLE"), timeout).await;
        let is_primary =
            matches!(role.as_ref().ok().and_then(|r| r.first()), Some(redis::Value::BulkString(b)) if b == b"master");
        if !is_primary {
            tracing::warn!(event = "sentinel_primary_not_ready", addr = %addr, "sentinel names a server that is not a primary yet");
            continue;
        }
        match manager(&addr, timeout).await {
            Ok(conn) => {
                tracing::warn!(event = "redis_failover", from = %current, to = %addr, "following the new Redis primary");
                *inner.conn.write().unwrap_or_else(|p| p.into_inner()) = (addr, conn);
                inner.broken.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(event = "redis_failover_connect", addr = %addr, error = %e, "cannot reach the new primary yet")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<'static> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_fn(move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_endpoint_is_redis_addr_unless_sentinels_are_named() {
        assert_eq!(RedisEndpoint::from_env(&env(&[])).unwrap(), RedisEndpoint::Direct("127.0.0.1:6379".into()));
        let e = RedisEndpoint::from_env(&env(&[("REDIS_SENTINELS", "127.0.0.1:1,127.0.0.1:2"), ("REDIS_ADDR", "x:1")]));
        assert_eq!(
            e.unwrap(),
            RedisEndpoint::Sentinel {
                sentinels: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
                master: "flashsale".into()
            }
        );
        let bad = RedisEndpoint::from_env(&env(&[("REDIS_SENTINELS", "nowhere")])).unwrap_err();
        assert_eq!(bad.var, "REDIS_SENTINELS");
        let bad = RedisEndpoint::from_env(&env(&[("REDIS_SENTINELS", "127.0.0.1:1"), ("REDIS_MASTER_NAME", "a b")]))
            .unwrap_err();
        assert_eq!(bad.var, "REDIS_MASTER_NAME");
    }

    #[test]
    fn wait_is_off_by_default_and_must_end_before_the_call_does() {
        let limit = Duration::from_millis(500);
        assert_eq!(Durability::from_env(&env(&[]), limit).unwrap(), None);
        assert_eq!(
            Durability::from_env(&env(&[("REDIS_WAIT_REPLICAS", "1")]), limit).unwrap(),
            Some(Durability { replicas: 1, timeout: Duration::from_millis(100) })
        );
        let bad = Durability::from_env(&env(&[("REDIS_WAIT_REPLICAS", "1"), ("REDIS_WAIT_TIMEOUT", "1s")]), limit)
            .unwrap_err();
        assert_eq!(bad.var, "REDIS_WAIT_TIMEOUT");
    }

    #[test]
    fn a_timeout_may_have_written_a_refusal_did_not() {
        assert!(RedisError::Timeout(Duration::from_millis(1)).may_have_run());
        assert!(!RedisError::Unreachable(Duration::from_millis(1)).may_have_run());
        let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!RedisError::Redis(refused).may_have_run());
        let reset = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(RedisError::Redis(reset).may_have_run());
        let reply = redis::RedisError::from((redis::ErrorKind::ResponseError, "ERR", "bad".to_string()));
        assert!(!RedisError::Redis(reply).may_have_run());
        assert!(!RedisError::NoPrimary("flashsale".into()).may_have_run());
    }

    #[test]
    fn a_broken_connection_or_a_demoted_primary_may_mean_a_failover_a_refused_wait_does_not() {
        assert!(may_have_moved(&RedisError::Timeout(Duration::from_millis(1))));
        let readonly = redis::RedisError::from((redis::ErrorKind::ReadOnly, "READONLY", "replica".to_string()));
        assert!(may_have_moved(&RedisError::Redis(readonly)));
        assert!(!may_have_moved(&RedisError::NotReplicated { acked: 0, wanted: 1 }));
    }
}

//! The Redis connection every service shares: one multiplexed connection that reconnects by
//! itself, with a limit on every call.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A connection to `REDIS_ADDR` with `timeout` on connecting and on every answer.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects to `addr` (`host:port`). Fails when Redis is not reachable within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Redis, RedisError> {
        let client = redis::Client::open(format!("redis://{addr}/"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(2)
            .set_max_delay(200);
        let conn = tokio::time::timeout(timeout * 4, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| RedisError::Timeout(timeout * 4))??;
        Ok(Redis { conn, timeout })
    }

    /// Runs `f` on the connection within the timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        }
    }

    /// Connects and pings, retrying until `startup` passes: Redis may still be starting.
    pub async fn connect_when_up(addr: &str, timeout: Duration, startup: Duration) -> Result<Redis, RedisError> {
        let started = tokio::time::Instant::now();
        loop {
            let attempt = match Redis::connect(addr, timeout).await {
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

//! Configuration from the environment, with the runbook's names and defaults.
//!
//! Every variable has a loopback default, so `flashsale gateway` runs on a laptop as it is; a
//! bad value stops startup with a message naming the variable. The configuration table of docs/system.md
//! lists them all.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {why}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub why: String,
}

/// Reads configuration values; [`Env::from_process`] for the real environment, a closure in
/// tests.
pub struct Env<'a> {
    lookup: Box<dyn Fn(&str) -> Option<String> + 'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl<'a> Env<'a> {
    pub fn from_process() -> Env<'static> {
        Env { lookup: Box::new(|name| std::env::var(name).ok()) }
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Env<'a> {
        Env { lookup: Box::new(lookup) }
    }

    fn raw(&self, var: &'static str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    fn parse<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(var) {
            None => Ok(default),
            Some(value) => parse(value.trim()).map_err(|why| ConfigError { var, value: value.clone(), why }),
        }
    }

    pub fn string(&self, var: &'static str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_string())
    }

    pub fn socket_addr(&self, var: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
        let default = default.parse().expect("default addresses are valid");
        self.parse(var, default, |v| {
            v.parse().map_err(|_| "expected HOST:PORT with a numeric host, e.g. 127.0.0.1:6379".into())
        })
    }

    /// `host:port`, where the host may be a name (Kafka bootstrap lists may hold several,
    /// comma-separated).
    pub fn host_ports(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.string(var, default);
        for part in value.split(',') {
            let ok = part.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError { var, value, why: "expected HOST:PORT[,HOST:PORT...]".into() });
            }
        }
        Ok(value)
    }

    /// `LOG_LEVEL`: error, warn, info (default), debug, trace.
    pub fn log_level(&self) -> Result<String, ConfigError> {
        let level = self.string("LOG_LEVEL", "info").to_ascii_lowercase();
        if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            Ok(level)
        } else {
            Err(ConfigError {
                var: "LOG_LEVEL",
                value: level,
                why: "expected one of error, warn, info, debug, trace".into(),
            })
        }
    }

    /// A positive duration such as `500ms`, `30s`, `1m`.
    pub fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse(var, default, |v| {
            let d = parse_duration(v)?;
            if d.is_zero() {
                return Err("must be greater than zero".into());
            }
            Ok(d)
        })
    }

    /// A duration that may be zero (`0`, `0ms`).
    pub fn duration_or_zero(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse(var, default, |v| if v == "0" { Ok(Duration::ZERO) } else { parse_duration(v) })
    }

    pub fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.parse(var, default, |v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".into()),
        })
    }

    pub fn number<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        self.parse(var, default, |v| {
            let n: T = v.parse().map_err(|_| "expected a number".to_string())?;
            if n < min || n > max {
                return Err(format!("must be between {min} and {max}"));
            }
            Ok(n)
        })
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v).map_err(|e| format!("{e}; expected a duration such as 500ms, 30s, 1m"))
}

/// Everything `flashsale gateway` reads from the environment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_ADDR`, where the HTTP API listens.
    pub listen: SocketAddr,
    /// `REDIS_ADDR`, or `REDIS_SENTINELS` and `REDIS_MASTER_NAME`.
    pub redis: crate::redis_conn::RedisEndpoint,
    /// `KAFKA_ADDR`: bootstrap servers.
    pub kafka_addr: String,
    /// `LOG_LEVEL`: error, warn, info, debug, trace.
    pub log_level: String,
    pub breaker: BreakerConfig,
    /// `RATE_LIMIT_MAX_REQUESTS` per user per `RATE_LIMIT_WINDOW`.
    pub rate_limit_max_requests: u32,
    pub rate_limit_window: Duration,
    /// `GLOBAL_RATE_LIMIT`: admitted orders per second for this gateway; 0 = off.
    pub global_rate_limit: u32,
    /// `REDIS_TIMEOUT`: limit of every Redis call.
    pub redis_timeout: Duration,
    /// `KAFKA_PRODUCE_TIMEOUT`: how long an order may wait for the broker's acknowledgement.
    pub kafka_produce_timeout: Duration,
    /// `KAFKA_LINGER`: how long the producer waits to batch orders into one request (0 allowed).
    pub kafka_linger: Duration,
    /// `KAFKA_IDEMPOTENCE`: librdkafka's idempotent producer (see `gateway::queue` for why it is
    /// off by default).
    pub kafka_idempotence: bool,
    /// `STARTUP_TIMEOUT`: how long startup waits for Redis and the broker.
    pub startup_timeout: Duration,
    /// `ORDERS_PARTITIONS`: partitions of the `orders` topic when the gateway creates it.
    pub orders_partitions: i32,
    /// `ORDER_STATUS_TTL`: lifetime of `order_status:<request_id>`.
    pub order_status_ttl: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// `DEGRADE_POLL`: how often the gateway reads the degradation switch from Redis.
    pub degrade_poll: Duration,
    /// `DEGRADE_RETRY_AFTER`: the `Retry-After` of an order-status read shed while degraded.
    pub degrade_retry_after: Duration,
}

/// The circuit breaker around the Kafka producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// `CIRCUIT_BREAKER_FAILURE_THRESHOLD`: consecutive failures that open it.
    pub failure_threshold: u32,
    /// `CIRCUIT_BREAKER_SUCCESS_THRESHOLD`: successes in half-open that close it.
    pub success_threshold: u32,
    /// `CIRCUIT_BREAKER_BASE_TIMEOUT`: first open period; doubles on each reopening.
    pub base_timeout: Duration,
    /// `CIRCUIT_BREAKER_MAX_TIMEOUT`: the longest open period.
    pub max_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            base_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
        }
    }
}

impl GatewayConfig {
    pub fn from_env(env: &Env<'_>) -> Result<GatewayConfig, ConfigError> {
        let defaults = BreakerConfig::default();
        let breaker = BreakerConfig {
            failure_threshold: env.number(
                "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
                defaults.failure_threshold,
                1,
                10_000,
            )?,
            success_threshold: env.number(
                "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
                defaults.success_threshold,
                1,
                10_000,
            )?,
            base_timeout: env.duration("CIRCUIT_BREAKER_BASE_TIMEOUT", defaults.base_timeout)?,
            max_timeout: env.duration("CIRCUIT_BREAKER_MAX_TIMEOUT", defaults.max_timeout)?,
        };
        if breaker.max_timeout < breaker.base_timeout {
            return Err(ConfigError {
                var: "CIRCUIT_BREAKER_MAX_TIMEOUT",
                value: humantime::format_duration(breaker.max_timeout).to_string(),
                why: "must not be shorter than CIRCUIT_BREAKER_BASE_TIMEOUT".into(),
            });
        }
        let log_level = env.log_level()?;
        Ok(GatewayConfig {
            listen: env.socket_addr("GATEWAY_ADDR", "0.0.0.0:8080")?,
            redis: crate::redis_conn::RedisEndpoint::from_env(env)?,
            kafka_addr: env.host_ports("KAFKA_ADDR", "127.0.0.1:9092")?,
            log_level,
            breaker,
            rate_limit_max_requests: env.number("RATE_LIMIT_MAX_REQUESTS", 60, 1, 1_000_000)?,
            rate_limit_window: env.duration("RATE_LIMIT_WINDOW", Duration::from_secs(60))?,
            global_rate_limit: env.number("GLOBAL_RATE_LIMIT", 0, 0, 10_000_000)?,
            redis_timeout: env.duration("REDIS_TIMEOUT", Duration::from_millis(500))?,
            kafka_produce_timeout: env.duration("KAFKA_PRODUCE_TIMEOUT", Duration::from_secs(3))?,
            kafka_linger: env.duration_or_zero("KAFKA_LINGER", Duration::from_millis(5))?,
            kafka_idempotence: env.boolean("KAFKA_IDEMPOTENCE", false)?,
            startup_timeout: env.duration("STARTUP_TIMEOUT", Duration::from_secs(30))?,
            orders_partitions: env.number("ORDERS_PARTITIONS", 6, 1, 1_000)?,
            order_status_ttl: env.duration("ORDER_STATUS_TTL", Duration::from_secs(30 * 60))?,
            shutdown_timeout: env.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            degrade_poll: env.duration("DEGRADE_POLL", Duration::from_secs(1))?,
            degrade_retry_after: env.duration("DEGRADE_RETRY_AFTER", Duration::from_secs(10))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> GatewayConfig {
        try_env(pairs).expect("valid config")
    }

    fn try_env(pairs: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        GatewayConfig::from_env(&Env::from_fn(move |name| {
            pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        }))
    }

    #[test]
    fn defaults_follow_the_runbook() {
        let c = env(&[]);
        assert_eq!(c.breaker, BreakerConfig::default());
        assert_eq!(c.rate_limit_max_requests, 60);
        assert_eq!(c.rate_limit_window, Duration::from_secs(60));
        assert_eq!(c.global_rate_limit, 0);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn runbook_duration_spellings_parse() {
        let c = env(&[("RATE_LIMIT_WINDOW", "1m"), ("CIRCUIT_BREAKER_BASE_TIMEOUT", "500ms")]);
        assert_eq!(c.rate_limit_window, Duration::from_secs(60));
        assert_eq!(c.breaker.base_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("RATE_LIMIT_WINDOW", "soon"),
            ("RATE_LIMIT_WINDOW", "0s"),
            ("RATE_LIMIT_MAX_REQUESTS", "-3"),
            ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "0"),
            ("GATEWAY_ADDR", "localhost"),
            ("REDIS_ADDR", "redis"),
            ("LOG_LEVEL", "loud"),
            ("KAFKA_IDEMPOTENCE", "maybe"),
            ("CIRCUIT_BREAKER_MAX_TIMEOUT", "1s"),
        ] {
            let err = try_env(&[(var, value)]).expect_err(var).to_string();
            assert!(err.starts_with(var), "{err}");
        }
    }
}

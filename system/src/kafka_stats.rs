//! What the Kafka clients cost the broker: every request each client sent, by type, from
//! librdkafka's statistics (emitted every [`INTERVAL_MS`]) —
//! `flashsale_kafka_requests_total{client, request}` on the gateway's and the processor's
//! `/metrics`. `ci/bench-processor` divides it by the orders decided: produces, fetches, commits
//! and metadata requests per order.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::{ClientContext, Statistics};

/// How often librdkafka reports (`statistics.interval.ms`).
pub const INTERVAL_MS: &str = "1000";

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new("flashsale_kafka_requests_total", "Requests sent to the broker, by client and request type"),
        &["client", "request"],
    )
    .expect("valid metric")
});

/// A librdkafka client instance, a broker and a request type.
type Key = (String, String, String);

/// The last totals seen, per [`Key`]: the statistics are totals since the client started, the
/// counter grows by the difference.
static LAST: LazyLock<Mutex<HashMap<Key, i64>>> = LazyLock::new(Default::default);

/// Adds the counter to `registry` (once per registry).
pub fn register(registry: &Registry) {
    // AlreadyReg: this registry has it already.
    let _ = registry.register(Box::new(REQUESTS.clone()));
}

/// Counts what `stats` reports for the client playing `role` (`gateway`, `processor-consumer`…).
pub fn record(role: &str, stats: &Statistics) {
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    for (broker, b) in &stats.brokers {
        for (request, &total) in &b.req {
            let key = (stats.name.clone(), broker.clone(), request.clone());
            let before = last.insert(key, total).unwrap_or(0);
            if total > before {
                REQUESTS.with_label_values(&[role, request]).inc_by((total - before) as u64);
            }
        }
    }
}

/// A client context that only counts requests; for clients with no context of their own.
#[derive(Debug, Clone, Copy)]
pub struct Counted(pub &'static str);

impl ClientContext for Counted {
    fn stats(&self, statistics: Statistics) {
        record(self.0, &statistics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, produces: i64, fetches: i64) -> Statistics {
        let broker = rdkafka::statistics::Broker {
            req: [("Produce".to_string(), produces), ("Fetch".to_string(), fetches)].into_iter().collect(),
            ..Default::default()
        };
        Statistics {
            name: name.into(),
            brokers: [("b1".to_string(), broker)].into_iter().collect(),
            ..Default::default()
        }
    }

    fn count(role: &str, request: &str) -> u64 {
        REQUESTS.with_label_values(&[role, request]).get()
    }

    #[test]
    fn each_report_adds_what_was_sent_since_the_last() {
        record("test-a", &stats("rdkafka#producer-t1", 10, 0));
        record("test-a", &stats("rdkafka#producer-t1", 25, 3));
        // A second client of the same role counts from its own start.
        record("test-a", &stats("rdkafka#producer-t2", 5, 0));
        assert_eq!(count("test-a", "Produce"), 30);
        assert_eq!(count("test-a", "Fetch"), 3);
        let registry = Registry::new();
        register(&registry);
        register(&registry);
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains("flashsale_kafka_requests_total{client=\"test-a\",request=\"Produce\"} 30"), "{text}");
    }
}

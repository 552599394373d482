//! The processor's Prometheus metrics, by the runbook's names, plus consumer lag.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct ProcessorMetrics {
    registry: Registry,
    /// Orders decided (each attempt once; redeliveries of decided orders are not counted).
    pub processed: IntCounter,
    pub success: IntCounter,
    pub failed: IntCounter,
    pub sold_out: IntCounter,
    pub moved_to_dlq: IntCounter,
    /// Redelivered or duplicate messages of orders already decided.
    pub duplicates: IntCounter,
    pub duration: Histogram,
    /// Accepted by the gateway (`accepted_at_ms`) → decided here, per decided attempt: the
    /// time to decision a buyer waits, queue included (what a capacity search against a
    /// deployment reads when it cannot read `order-outcomes`).
    pub time_to_decision: Histogram,
    pub dlq_size: IntGauge,
    pub dlq_oldest_age_seconds: IntGauge,
    pub inventory: IntGaugeVec,
    pub lag: IntGaugeVec,
    /// Every partition of `orders`, owned or not, from the broker: end − the group's commit
    /// point (the group watchdog's reading). Unlike `lag`, it sees a dead member's partitions.
    pub group_backlog: IntGaugeVec,
    /// How long each partition's commit point has stood still with orders behind it.
    pub partition_stalled_seconds: IntGaugeVec,
    pub in_flight: IntGauge,
    /// `PROCESSOR_MAX_IN_FLIGHT`: the most orders in flight at once (set at start).
    pub max_in_flight: IntGauge,
    /// The group watchdog's repairs, by remedy (`probe`, `rejoin`).
    pub group_repairs: IntCounterVec,
    /// Payment attempts decided, by `result`: `captured` (the order completed), `failed`
    /// (declined, timed out or unclear, refunded) or `deferred` (no clear answer, kept to try
    /// again: `PAYMENT_OUTAGE_MODE=defer`): the payment success rate alert reads it.
    pub payments: IntCounterVec,
    /// Deferred payments waiting (`payments:deferred`), every second.
    pub payments_deferred: IntGauge,
    /// Deferred payments settled, by `result`: `captured` (completed late) or `refunded`.
    pub deferred_settled: IntCounterVec,
}

impl ProcessorMetrics {
    pub fn new() -> ProcessorMetrics {
        let registry = Registry::new();
        crate::kafka_stats::register(&registry);
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let group_repairs = IntCounterVec::new(
            Opts::new("processor_group_repairs_total", "Stalled partitions repaired by the group watchdog"),
            &["remedy"],
        )
        .expect("valid metric");
        registry.register(Box::new(group_repairs.clone())).expect("unique metric");
        let payments = IntCounterVec::new(
            Opts::new("processor_payments_total", "Payment attempts decided, by result"),
            &["result"],
        )
        .expect("valid metric");
        registry.register(Box::new(payments.clone())).expect("unique metric");
        // Both series exist from the start: when every payment fails, the success rate is 0,
        // not "no data" (which no alert fires on).
        for result in ["captured", "failed"] {
            payments.with_label_values(&[result]);
        }
        let deferred_settled = IntCounterVec::new(
            Opts::new("processor_deferred_payments_settled_total", "Deferred payments settled, by result"),
            &["result"],
        )
        .expect("valid metric");
        registry.register(Box::new(deferred_settled.clone())).expect("unique metric");
        crate::process_metrics::register(&registry);
        let duration = Histogram::with_opts(
            HistogramOpts::new("processor_order_processing_duration_seconds", "Processing time")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(duration.clone())).expect("unique metric");
        let time_to_decision = Histogram::with_opts(
            HistogramOpts::new("processor_time_to_decision_seconds", "Accepted by the gateway until decided")
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(time_to_decision.clone())).expect("unique metric");
        ProcessorMetrics {
            processed: counter("processor_orders_processed_total", "Total orders processed"),
            success: counter("processor_orders_processed_success_total", "Successfully processed"),
            failed: counter("processor_orders_processed_failed_total", "Failed processing"),
            sold_out: counter("processor_orders_sold_out_total", "Orders rejected due to sold out"),
            moved_to_dlq: counter("processor_orders_moved_to_dlq_total", "Orders moved to DLQ"),
            duplicates: counter("processor_orders_duplicate_total", "Messages of orders already decided"),
            duration,
            time_to_decision,
            dlq_size: gauge("processor_dlq_size", "Current DLQ depth"),
            dlq_oldest_age_seconds: gauge("processor_dlq_oldest_message_age_seconds", "Age of oldest DLQ message"),
            inventory: gauge_vec("processor_inventory_level", "Inventory level per item", "item_id"),
            lag: gauge_vec("processor_consumer_lag", "Messages behind the end of each assigned partition", "partition"),
            in_flight: gauge("processor_orders_in_flight", "Orders being processed now"),
            max_in_flight: gauge("processor_orders_in_flight_limit", "PROCESSOR_MAX_IN_FLIGHT: the most orders in flight"),
            group_backlog: gauge_vec(
                "processor_group_backlog",
                "Messages behind the group's commit point, every partition (from the broker)",
                "partition",
            ),
            partition_stalled_seconds: gauge_vec(
                "processor_partition_stalled_seconds",
                "Seconds the group's commit point of the partition has not moved with messages behind it",
                "partition",
            ),
            group_repairs,
            payments,
            payments_deferred: gauge("processor_payments_deferred", "Deferred payments waiting to be tried again"),
            deferred_settled,
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(4096);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for ProcessorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

//! The gateway's Prometheus metrics, by the runbook's names.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    registry: Registry,
    /// Every `POST /buy`.
    pub received: IntCounter,
    /// Orders the broker acknowledged (202).
    pub successful: IntCounter,
    /// Orders that could not be queued: breaker open, broker or Redis down or slow (503).
    pub failed: IntCounter,
    /// 400, 413, 415.
    pub validation_failed: IntCounter,
    /// 409.
    pub idempotency_rejected: IntCounter,
    /// 429.
    pub rate_limited: IntCounter,
    /// 503 from the global admission limit, or the degraded one (`flashsale degrade on --admit`).
    pub admission_rejected: IntCounter,
    /// 1 while the degradation switch is on.
    pub degraded: IntGauge,
    /// The degraded admission cap, orders/s (0: none).
    pub degrade_admit: IntGauge,
    /// `GET /orders/{id}` answered 503 by the degradation switch.
    pub status_reads_shed: IntCounter,
    pub request_duration: Histogram,
    /// Handing an order to the producer → the broker's answer (or the produce timeout): the
    /// broker's share of the request time.
    pub produce_duration: Histogram,
    pub breaker_state: IntGauge,
    /// Every answer to `POST /buy`, by HTTP status (`code`): the 5xx share the article's
    /// HighErrorRate alert reads.
    pub responses: IntCounterVec,
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let registry = Registry::new();
        crate::kafka_stats::register(&registry);
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let received = counter("gateway_orders_received_total", "Total orders received");
        let successful = counter("gateway_orders_successful_total", "Orders successfully queued");
        let failed = counter("gateway_orders_failed_total", "Orders that failed to queue");
        let validation_failed = counter("gateway_orders_validation_failed_total", "Validation failures");
        let idempotency_rejected = counter("gateway_orders_idempotency_rejected_total", "Duplicate requests rejected");
        let rate_limited = counter("gateway_orders_rate_limited_total", "Requests over the per-user rate limit");
        let admission_rejected = counter(
            "gateway_orders_admission_rejected_total",
            "Orders refused by the global or the degraded admission limit",
        );
        let status_reads_shed =
            counter("gateway_status_reads_shed_total", "Order-status reads refused by the degradation switch");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let degraded = gauge("gateway_degraded", "1 while the degradation switch is on");
        let degrade_admit = gauge("gateway_degrade_admit_per_second", "Orders/s admitted while degraded (0: no cap)");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new("gateway_request_duration_seconds", "Request processing time")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(request_duration.clone())).expect("unique metric");
        let produce_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_produce_duration_seconds",
                "Order handed to the producer until the broker answered",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(produce_duration.clone())).expect("unique metric");
        let breaker_state =
            IntGauge::new("gateway_circuit_breaker_state", "Circuit breaker state (0=closed, 1=open, 2=half-open)")
                .expect("valid metric");
        registry.register(Box::new(breaker_state.clone())).expect("unique metric");
        let responses = IntCounterVec::new(
            Opts::new("gateway_buy_responses_total", "Answers to POST /buy by HTTP status"),
            &["code"],
        )
        .expect("valid metric");
        registry.register(Box::new(responses.clone())).expect("unique metric");
        crate::process_metrics::register(&registry);
        GatewayMetrics {
            registry,
            received,
            successful,
            failed,
            validation_failed,
            idempotency_rejected,
            rate_limited,
            admission_rejected,
            degraded,
            degrade_admit,
            status_reads_shed,
            request_duration,
            produce_duration,
            breaker_state,
            responses,
        }
    }

    /// The degradation switch's mode on the gauges.
    pub fn show_degrade(&self, mode: super::degrade::Mode) {
        self.degraded.set(i64::from(mode.on));
        self.degrade_admit.set(mode.admit_per_s.filter(|_| mode.on).map(i64::from).unwrap_or(0));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(4096);
        // Encoding our own registry's metric families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

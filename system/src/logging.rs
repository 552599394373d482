//! JSON logs in the runbook's shape: one object per line on stdout with `timestamp`, `level`,
//! `message` and the event's own fields at the top level — `service`, `event`,
//! `correlation_id`, `user_id`, `item_id`, `processing_time_ms`. Every log call names its
//! `service` and `event`.

/// Installs the JSON logger at `level` (error, warn, info, debug, trace) for this crate; other
/// crates log warnings and errors only.
/// librdkafka's own log lines (target `librdkafka`) pass through at its level when `KAFKA_DEBUG`
/// names librdkafka debug contexts (e.g. `cgrp,fetch`).
pub fn init(level: &str) {
    let rdkafka = if std::env::var_os("KAFKA_DEBUG").is_some() { ",librdkafka=debug,rdkafka=debug" } else { "" };
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,flashsale={level}{rdkafka}"));
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // Also routes the `log` records of rdkafka into the JSON log. Fails only when a logger is
    // installed already (in tests); that one stays.
    let _ = subscriber.try_init();
}

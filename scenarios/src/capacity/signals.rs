//! A trial's signals from `metrics.jsonl` over the load: orders decided per second, consumer
//! lag and its growth, Redis commands per second and their cost, the broker's produce latency,
//! orders in flight in the processors, the gateway's admission refusals.

use std::collections::BTreeMap;

use rundir::capacity::TrialMeasures;
use rundir::Scrape;

use super::analysis::slope;

/// Fills `m`'s scraped figures from the scrapes between `from` and `to` (ms).
pub fn fill(m: &mut TrialMeasures, scrapes: &[Scrape], from: u64, to: u64) {
    let window: Vec<&Scrape> = scrapes.iter().filter(|s| s.up && s.ts_ms >= from && s.ts_ms <= to).collect();
    let processors = |s: &Scrape| s.component.starts_with("processor");
    let gateways = |s: &Scrape| s.component.starts_with("gateway");
    let redis = |s: &Scrape| s.component == "redis";
    m.decided_rate = growth(&window, processors, "processor_orders_processed_total").map(|(d, t)| d / t.max(1e-3));
    // Lag: per second, summed over the processors; growth over the second half.
    let mut per_second: BTreeMap<u64, f64> = BTreeMap::new();
    for s in window.iter().filter(|s| processors(s)) {
        if let Some(lag) = s.sum("processor_consumer_lag") {
            *per_second.entry(s.ts_ms / 1000).or_default() += lag;
        }
    }
    let half = (from + to) / 2 / 1000;
    let second_half: Vec<(f64, f64)> =
        per_second.iter().filter(|(t, _)| **t >= half).map(|(t, v)| (*t as f64, *v)).collect();
    if second_half.len() >= 3 {
        m.lag_slope_per_s = slope(&second_half);
        m.lag_last = second_half.last().map(|p| p.1);
    }
    if let Some((calls, t)) = growth(&window, redis, "redis_commands_processed_total") {
        m.redis_ops_per_s = Some(calls / t.max(1e-3));
        if let Some((usec, _)) = growth(&window, redis, "redis_command_usec_total") {
            m.redis_usec_per_call = (calls > 0.0).then(|| usec / calls);
        }
    }
    if let (Some((sum, _)), Some((count, _))) = (
        growth(&window, gateways, "gateway_produce_duration_seconds_sum"),
        growth(&window, gateways, "gateway_produce_duration_seconds_count"),
    ) {
        m.produce_ms = (count > 0.0).then(|| sum / count * 1000.0);
    }
    let mut in_flight: BTreeMap<u64, f64> = BTreeMap::new();
    for s in window.iter().filter(|s| processors(s)) {
        if let Some(v) = s.sum("processor_orders_in_flight") {
            *in_flight.entry(s.ts_ms / 1000).or_default() += v;
        }
    }
    if !in_flight.is_empty() {
        m.processor_in_flight = Some(in_flight.values().sum::<f64>() / in_flight.len() as f64);
    }
    m.admission_rejected =
        growth(&window, gateways, "gateway_orders_admission_rejected_total").map(|(d, _)| d as u64).unwrap_or(0);
}

/// A counter's growth over the window, summed over the components `which` picks (each from its
/// first to its last scrape; a reset counts from zero), and the longest span it covers, s.
fn growth(window: &[&Scrape], which: impl Fn(&Scrape) -> bool, metric: &str) -> Option<(f64, f64)> {
    let mut by: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
    for s in window.iter().filter(|s| which(s)) {
        if let Some(v) = s.sum(metric) {
            by.entry(s.component.as_str()).or_default().push((s.ts_ms, v));
        }
    }
    let (mut total, mut span) = (0.0, 0.0f64);
    let mut any = false;
    for points in by.values() {
        if points.len() < 2 {
            continue;
        }
        any = true;
        let mut d = 0.0;
        for w in points.windows(2) {
            d += if w[1].1 >= w[0].1 { w[1].1 - w[0].1 } else { w[1].1 };
        }
        total += d;
        span = span.max((points[points.len() - 1].0 - points[0].0) as f64 / 1000.0);
    }
    any.then_some((total, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(ts_ms: u64, component: &str, metrics: &[(&str, f64)]) -> Scrape {
        Scrape {
            ts_ms,
            component: component.into(),
            up: true,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn rates_lag_growth_and_costs_come_from_the_window_only() {
        let mut scrapes = Vec::new();
        for i in 0..=10u64 {
            let t = 10_000 + i * 1000;
            scrapes.push(scrape(
                t,
                "processor[0]",
                &[
                    ("processor_orders_processed_total", 100.0 * i as f64),
                    ("processor_consumer_lag{partition=\"0\"}", 50.0 * i as f64),
                    ("processor_orders_in_flight", 8.0),
                ],
            ));
            scrapes.push(scrape(
                t,
                "redis",
                &[("redis_commands_processed_total", 1000.0 * i as f64), ("redis_command_usec_total", 2000.0 * i as f64)],
            ));
            scrapes.push(scrape(
                t,
                "gateway[0]",
                &[
                    ("gateway_produce_duration_seconds_sum", 0.5 * i as f64),
                    ("gateway_produce_duration_seconds_count", 100.0 * i as f64),
                ],
            ));
        }
        // Outside the window: ignored.
        scrapes.push(scrape(40_000, "processor[0]", &[("processor_orders_processed_total", 1e9)]));
        let mut m = TrialMeasures::default();
        fill(&mut m, &scrapes, 10_000, 20_000);
        assert_eq!(m.decided_rate, Some(100.0));
        assert!((m.lag_slope_per_s.unwrap() - 50.0).abs() < 1e-6, "{m:?}");
        assert_eq!(m.lag_last, Some(500.0));
        assert_eq!(m.redis_ops_per_s, Some(1000.0));
        assert_eq!(m.redis_usec_per_call, Some(2.0));
        assert!((m.produce_ms.unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(m.processor_in_flight, Some(8.0));
    }
}

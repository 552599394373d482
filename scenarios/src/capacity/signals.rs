//! A trial's signals from `metrics.jsonl` over the load: orders decided per second, consumer
//! lag and its growth, Redis commands per second and their cost, the broker's produce latency,
//! orders in flight in the processors and their limit, orders decided sold out, the gateway's
//! admission refusals; and, for a deployment the lab did not start, what only its `/metrics`
//! can tell: the time to decision from the processors' histogram and each component's CPU and
//! memory from its process collector.

use std::collections::BTreeMap;

use rundir::capacity::TrialMeasures;
use rundir::processes::Usage;
use rundir::Scrape;

use super::analysis::slope;

/// Fills `m`'s scraped figures from the scrapes between `from` and `to` (ms).
pub fn fill(m: &mut TrialMeasures, scrapes: &[Scrape], from: u64, to: u64) {
    let window: Vec<&Scrape> = scrapes.iter().filter(|s| s.up && s.ts_ms >= from && s.ts_ms <= to).collect();
    let processors = |s: &Scrape| s.component.starts_with("processor");
    let gateways = |s: &Scrape| s.component.starts_with("gateway");
    let redis = |s: &Scrape| s.component == "redis";
    m.decided_rate = growth(&window, processors, "processor_orders_processed_total").map(|(d, t)| d / t.max(1e-3));
    // Lag: each processor's own readings over the second half — at least its last three (a
    // short trial scraped each second has two or three there) — its slope and last reading,
    // summed over the processors. Per processor: the scrape period is not a second everywhere,
    // and a tick's readings can straddle one.
    let half_ms = (from + to) / 2;
    let mut lag: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
    for s in window.iter().filter(|s| processors(s)) {
        if let Some(v) = s.sum("processor_consumer_lag") {
            lag.entry(s.component.as_str()).or_default().push((s.ts_ms, v));
        }
    }
    let tails: Vec<Vec<(f64, f64)>> = lag
        .values()
        .map(|v| {
            let in_half = v.iter().filter(|(t, _)| *t >= half_ms).count();
            v[v.len() - in_half.max(3).min(v.len())..].iter().map(|(t, l)| (*t as f64 / 1000.0, *l)).collect()
        })
        .collect();
    // Measured when one processor has three readings; one that got its partitions late (a
    // rebalance) adds its slope from two readings and its last reading from one.
    if tails.iter().any(|v| v.len() >= 3) {
        m.lag_slope_per_s = tails.iter().filter(|v| v.len() >= 2).map(|v| slope(v)).sum();
        m.lag_last = Some(tails.iter().filter_map(|v| v.last().map(|p| p.1)).sum());
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
    // In flight: each processor's own series (a tick's scrapes can straddle a second, and a
    // processor that got its partitions late idles at the start), summed over the processors.
    let mut in_flight: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in window.iter().filter(|s| processors(s)) {
        if let Some(v) = s.sum("processor_orders_in_flight") {
            in_flight.entry(s.component.as_str()).or_default().push(v);
        }
    }
    if !in_flight.is_empty() {
        m.processor_in_flight = Some(in_flight.values().map(|v| v.iter().sum::<f64>() / v.len() as f64).sum());
        m.processor_in_flight_p75 = Some(in_flight.values_mut().map(|v| quantile(v, 0.75)).sum());
    }
    let limits: Vec<f64> = {
        let mut last: BTreeMap<&str, f64> = BTreeMap::new();
        for s in window.iter().filter(|s| processors(s)) {
            if let Some(v) = s.sum("processor_orders_in_flight_limit") {
                last.insert(s.component.as_str(), v);
            }
        }
        last.into_values().collect()
    };
    m.processor_in_flight_limit = (!limits.is_empty()).then(|| limits.iter().sum());
    m.sold_out = growth(&window, processors, "processor_orders_sold_out_total").map(|(d, _)| d as u64);
    m.admission_rejected =
        growth(&window, gateways, "gateway_orders_admission_rejected_total").map(|(d, _)| d as u64).unwrap_or(0);
}

/// Accepted → decided over the window from the processors' `processor_time_to_decision_seconds`
/// histogram (bucket growth summed over the processors): the decisions counted and the p99 in
/// ms, interpolated within its bucket as Prometheus's `histogram_quantile` does. `None`: no
/// processor exported it.
pub fn time_to_decision(scrapes: &[Scrape], from: u64, to: u64) -> Option<(u64, Option<f64>)> {
    const BUCKET: &str = "processor_time_to_decision_seconds_bucket{le=\"";
    let window: Vec<&Scrape> =
        scrapes.iter().filter(|s| s.up && s.ts_ms >= from && s.ts_ms <= to && s.component.starts_with("processor")).collect();
    let mut bounds: Vec<(f64, String)> = Vec::new();
    for s in &window {
        for key in s.metrics.keys().filter(|k| k.starts_with(BUCKET)) {
            let le = key[BUCKET.len()..].trim_end_matches("\"}");
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            if !bounds.iter().any(|(b, _)| *b == bound) {
                bounds.push((bound, key.clone()));
            }
        }
    }
    if bounds.is_empty() {
        return None;
    }
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cumulative: Vec<(f64, f64)> = bounds
        .iter()
        .map(|(b, key)| (*b, growth(&window, |_| true, key).map(|(d, _)| d).unwrap_or(0.0)))
        .collect();
    let count = cumulative.last().map(|c| c.1).unwrap_or(0.0);
    if count < 1.0 {
        return Some((0, None));
    }
    let rank = 0.99 * count;
    let mut below = (0.0, 0.0); // (bound, cumulative) of the bucket before
    for &(bound, c) in &cumulative {
        if c >= rank {
            if bound.is_infinite() {
                // Past the largest finite bound: that bound is all that can be said.
                return Some((count as u64, Some(below.0 * 1000.0)));
            }
            let inside = if c > below.1 { (rank - below.1) / (c - below.1) } else { 1.0 };
            return Some((count as u64, Some((below.0 + (bound - below.0) * inside) * 1000.0)));
        }
        below = (bound, c);
    }
    Some((count as u64, None))
}

/// Each component's CPU (cores) and peak memory over the window from its process collector
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`): a deployment's processes
/// are not the lab's to read from `/proc`.
pub fn usage_from_scrapes(scrapes: &[Scrape], from: u64, to: u64) -> BTreeMap<String, Usage> {
    let window: Vec<&Scrape> = scrapes.iter().filter(|s| s.up && s.ts_ms >= from && s.ts_ms <= to).collect();
    let mut names: Vec<&str> = window.iter().map(|s| s.component.as_str()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let mut out = BTreeMap::new();
    for name in names {
        let Some((cpu_s, span_s)) = growth(&window, |s| s.component == name, "process_cpu_seconds_total") else {
            continue;
        };
        let peak = window
            .iter()
            .filter(|s| s.component == name)
            .filter_map(|s| s.sum("process_resident_memory_bytes"))
            .fold(0.0f64, f64::max);
        out.insert(name.to_string(), Usage { cores: cpu_s / span_s.max(1e-3), peak_rss_bytes: peak as u64 });
    }
    out
}

/// The `q` quantile of `values` (nearest rank); `values` is sorted in place and not empty.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
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
            // A second processor scraped near the next second's edge, idle for its first 3 s.
            scrapes.push(scrape(t + 999, "processor[1]", &[("processor_orders_in_flight", if i < 3 { 0.0 } else { 8.0 })]));
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
        // processor[1]: 10 scrapes in the window, 7 of them at 8.
        assert!((m.processor_in_flight.unwrap() - (8.0 + 5.6)).abs() < 1e-9, "{m:?}");
        assert_eq!(m.processor_in_flight_p75, Some(16.0));
    }

    #[test]
    fn lag_is_read_per_processor_whatever_the_scrape_period() {
        // Two processors scraped every 500 ms, one near the next second's edge: each lags a
        // steady 100, growing by 10 a second. Per-second bins would count a reading twice.
        let mut scrapes = Vec::new();
        for i in 0..=20u64 {
            let t = 10_000 + i * 500;
            let v = 100.0 + 5.0 * i as f64;
            scrapes.push(scrape(t, "processor[0]", &[("processor_consumer_lag{partition=\"0\"}", v)]));
            scrapes.push(scrape(t + 499, "processor[1]", &[("processor_consumer_lag{partition=\"1\"}", v)]));
        }
        let mut m = TrialMeasures::default();
        fill(&mut m, &scrapes, 10_000, 20_000);
        assert!((m.lag_slope_per_s.unwrap() - 20.0).abs() < 1e-6, "{m:?}");
        assert_eq!(m.lag_last, Some(200.0 + 195.0)); // processor[1]'s last reading in the window is at 19,999 ms
        // Two readings in the second half: the last three are read.
        let mut m = TrialMeasures::default();
        fill(&mut m, &scrapes[..24], 10_000, 20_000);
        assert!((m.lag_slope_per_s.unwrap() - 20.0).abs() < 1e-6, "{m:?}");
        // Fewer than three in the whole window: not measured.
        let mut m = TrialMeasures::default();
        fill(&mut m, &scrapes[..4], 10_000, 20_000);
        assert_eq!(m.lag_slope_per_s, None);
        // processor[1] got its partitions late (a rebalance): its two last readings still count
        // (a CI run found two processors' trials "not measured" when every processor needed
        // three).
        let late: Vec<Scrape> = scrapes
            .iter()
            .filter(|s| s.component == "processor[0]" || s.ts_ms >= 19_000)
            .cloned()
            .collect();
        let mut m = TrialMeasures::default();
        fill(&mut m, &late, 10_000, 20_000);
        assert!((m.lag_slope_per_s.unwrap() - 20.0).abs() < 1e-6, "{m:?}");
        assert_eq!(m.lag_last, Some(200.0 + 195.0));
    }

    #[test]
    fn time_to_decision_from_the_histogram_and_cpu_from_the_process_collector() {
        let bucket = |le: &str| format!("processor_time_to_decision_seconds_bucket{{le=\"{le}\"}}");
        let mut scrapes = Vec::new();
        // Two processors, 10 s: each decides 100 orders, 98 within 0.1 s and 2 within 1 s.
        for p in 0..2 {
            for i in 0..=10u64 {
                let n = 10.0 * i as f64;
                let name = format!("processor[{p}]");
                let metrics = [
                    (bucket("0.1"), 9.8 * i as f64),
                    (bucket("1"), n),
                    (bucket("+Inf"), n),
                    ("process_cpu_seconds_total".to_string(), 0.5 * i as f64),
                    ("process_resident_memory_bytes".to_string(), 1000.0 + i as f64),
                    ("processor_orders_in_flight_limit".to_string(), 4.0),
                    ("processor_orders_sold_out_total".to_string(), if i > 8 { 3.0 } else { 0.0 }),
                ];
                let m: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                scrapes.push(scrape(10_000 + i * 1000, &name, &m));
            }
        }
        // 200 decisions; rank 198 = the last of the first bucket (196) + 2 of the next 4.
        let (n, p99) = time_to_decision(&scrapes, 10_000, 20_000).unwrap();
        assert_eq!(n, 200);
        assert!((p99.unwrap() - (100.0 + 900.0 * 0.5)).abs() < 1e-6, "{p99:?}");
        // Nothing decided: counted, no p99; no histogram at all: not measured.
        assert_eq!(time_to_decision(&scrapes, 10_000, 10_500), Some((0, None)));
        assert_eq!(time_to_decision(&scrapes[..0], 0, 1), None);
        let usage = usage_from_scrapes(&scrapes, 10_000, 20_000);
        assert!((usage["processor[1]"].cores - 0.5).abs() < 1e-9, "{usage:?}");
        assert_eq!(usage["processor[1]"].peak_rss_bytes, 1010);
        let mut m = TrialMeasures::default();
        fill(&mut m, &scrapes, 10_000, 20_000);
        assert_eq!(m.processor_in_flight_limit, Some(8.0));
        assert_eq!(m.sold_out, Some(6));
    }
}

//! Delivery figures of one conductor, shared with whoever renders them (the conductor's
//! `/metrics`): events pending and delivered per receiver, failures by kind, the last error,
//! and the latency from the status write to the receiver's answer.

use ferric_model::Sink;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
];

#[derive(Default)]
pub struct LaneStats {
    pub configured: AtomicU64,
    pub pending: AtomicU64,
    pub delivered: AtomicU64,
    pub refused: AtomicU64,
    pub requests: AtomicU64,
    /// 1 while the last request failed as a whole.
    pub failing: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    last_error: Mutex<Option<String>>,
}

impl LaneStats {
    pub fn observe_latency_ms(&self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn failure(&self, kind: &'static str, message: String) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
        self.failing.store(1, Ordering::Relaxed);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A metric of one figure per lane: name, type, help, how to read it.
type Series = (
    &'static str,
    MetricType,
    &'static str,
    fn(&LaneStats) -> u64,
);

#[derive(Default)]
pub struct Stats {
    lanes: [LaneStats; 2],
}

impl Stats {
    pub fn lane(&self, sink: Sink) -> &LaneStats {
        &self.lanes[sink.index()]
    }
}

/// The labels of a lane's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    sink: &'static str,
    kind: &'static str,
}

/// The delivery figures as the conductor's metrics registry reads them at each scrape.
#[derive(Clone)]
pub struct StatsCollector(pub Arc<Stats>);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let simple: [Series; 6] = [
            ("ferric_notify_configured", MetricType::Gauge, "1 when this receiver is configured", |l| l.configured.load(Ordering::Relaxed)),
            ("ferric_notify_events_pending", MetricType::Gauge, "Events of nodes held here not yet finished for this receiver", |l| l.pending.load(Ordering::Relaxed)),
            ("ferric_notify_events_delivered", MetricType::Counter, "Events the receiver accepted", |l| l.delivered.load(Ordering::Relaxed)),
            ("ferric_notify_events_refused", MetricType::Counter, "Events the receiver refused for good (Nova's 404 for an unknown instance), recorded and skipped", |l| l.refused.load(Ordering::Relaxed)),
            ("ferric_notify_requests", MetricType::Counter, "Requests sent to the receiver", |l| l.requests.load(Ordering::Relaxed)),
            ("ferric_notify_failing", MetricType::Gauge, "1 while the last request to the receiver failed as a whole (see the log and ferric_notify_failures)", |l| l.failing.load(Ordering::Relaxed)),
        ];
        for (name, kind, help, get) in simple {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for sink in Sink::ALL {
                let labels = LaneLabels {
                    sink: sink.as_str(),
                };
                let v = get(self.0.lane(sink));
                let series = family.encode_family(&labels)?;
                if matches!(kind, MetricType::Counter) {
                    ConstCounter::new(v).encode(series)?;
                } else {
                    ConstGauge::new(v as i64).encode(series)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "ferric_notify_failures",
            "Requests that failed as a whole, by kind (connect, timeout, auth, not_found, server_error, client_error, garbage)",
            None,
            MetricType::Counter,
        )?;
        for sink in Sink::ALL {
            let failures = self
                .0
                .lane(sink)
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (kind, n) in failures {
                let labels = FailureLabels {
                    sink: sink.as_str(),
                    kind,
                };
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "ferric_notify_delivery_latency_seconds",
            "From the status write that recorded a power change to the receiver's answer",
            None,
            MetricType::Histogram,
        )?;
        for sink in Sink::ALL {
            let l = self.0.lane(sink);
            let labels = LaneLabels {
                sink: sink.as_str(),
            };
            let count = l.latency_count.load(Ordering::Relaxed);
            // Cumulative per bucket already; the encoder wants each bucket's own count.
            let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(BUCKETS.len() + 1);
            let mut below = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                let cum = l.buckets[i].load(Ordering::Relaxed);
                buckets.push((*b, cum.saturating_sub(below)));
                below = cum;
            }
            buckets.push((f64::MAX, count.saturating_sub(below)));
            let sum = l.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_fixed_labels() {
        let s = Arc::new(Stats::default());
        s.lane(Sink::Compute).observe_latency_ms(30);
        s.lane(Sink::Compute).failure("auth", "refused".into());
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(StatsCollector(s.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "ferric_notify_delivery_latency_seconds_bucket{le=\"0.05\",sink=\"compute\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "ferric_notify_delivery_latency_seconds_bucket{le=\"0.025\",sink=\"compute\"} 0"
        ));
        assert!(
            text.contains("ferric_notify_failures_total{sink=\"compute\",kind=\"auth\"} 1"),
            "{text}"
        );
        assert!(text.contains("ferric_notify_failing{sink=\"compute\"} 1"));
        assert_eq!(
            s.lane(Sink::Compute).last_error().as_deref(),
            Some("refused")
        );
    }
}

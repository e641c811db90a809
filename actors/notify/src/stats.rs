//! Delivery figures of one conductor, shared with whoever renders them (the conductor's
//! `/metrics`): events pending and delivered per receiver, failures by kind, the last error,
//! and the latency from the status write to the receiver's answer.

use ferric_model::Sink;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
    &'static str,
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

    /// Prometheus text of these figures, labelled with the conductor's name.
    pub fn render(&self, conductor: &str) -> String {
        let mut out = String::new();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', " ")
        };
        let c = esc(conductor);
        let simple: [Series; 6] = [
            ("ferric_notify_configured", "gauge", "1 when this receiver is configured.", |l| l.configured.load(Ordering::Relaxed)),
            ("ferric_notify_events_pending", "gauge", "Events of nodes held here not yet finished for this receiver.", |l| l.pending.load(Ordering::Relaxed)),
            ("ferric_notify_events_delivered_total", "counter", "Events the receiver accepted.", |l| l.delivered.load(Ordering::Relaxed)),
            ("ferric_notify_events_refused_total", "counter", "Events the receiver refused for good (Nova's 404 for an unknown instance), recorded and skipped.", |l| l.refused.load(Ordering::Relaxed)),
            ("ferric_notify_requests_total", "counter", "Requests sent to the receiver.", |l| l.requests.load(Ordering::Relaxed)),
            ("ferric_notify_failing", "gauge", "1 while the last request to the receiver failed as a whole (see the log and ferric_notify_failures_total).", |l| l.failing.load(Ordering::Relaxed)),
        ];
        for (name, kind, help, get) in simple {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for sink in Sink::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{conductor=\"{c}\",sink=\"{}\"}} {}",
                    sink.as_str(),
                    get(self.lane(sink))
                );
            }
        }
        let name = "ferric_notify_failures_total";
        let _ = writeln!(out, "# HELP {name} Requests that failed as a whole, by kind (connect, timeout, auth, not_found, server_error, client_error, garbage).\n# TYPE {name} counter");
        for sink in Sink::ALL {
            let failures = self
                .lane(sink)
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (kind, n) in failures {
                let _ = writeln!(
                    out,
                    "{name}{{conductor=\"{c}\",sink=\"{}\",kind=\"{kind}\"}} {n}",
                    sink.as_str()
                );
            }
        }
        let name = "ferric_notify_delivery_latency_seconds";
        let _ = writeln!(out, "# HELP {name} From the status write that recorded a power change to the receiver's answer.\n# TYPE {name} histogram");
        for sink in Sink::ALL {
            let l = self.lane(sink);
            let s = sink.as_str();
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{conductor=\"{c}\",sink=\"{s}\",le=\"{b}\"}} {}",
                    l.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = l.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{conductor=\"{c}\",sink=\"{s}\",le=\"+Inf\"}} {count}\n{name}_sum{{conductor=\"{c}\",sink=\"{s}\"}} {}\n{name}_count{{conductor=\"{c}\",sink=\"{s}\"}} {count}",
                l.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_fixed_labels() {
        let s = Stats::default();
        s.lane(Sink::Compute).observe_latency_ms(30);
        s.lane(Sink::Compute).failure("auth", "refused".into());
        let text = s.render("c1");
        assert!(text.contains(
            "ferric_notify_delivery_latency_seconds_bucket{conductor=\"c1\",sink=\"compute\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "ferric_notify_delivery_latency_seconds_bucket{conductor=\"c1\",sink=\"compute\",le=\"0.025\"} 0"
        ));
        assert!(text.contains(
            "ferric_notify_failures_total{conductor=\"c1\",sink=\"compute\",kind=\"auth\"} 1"
        ));
        assert!(text.contains("ferric_notify_failing{conductor=\"c1\",sink=\"compute\"} 1"));
        assert_eq!(
            s.lane(Sink::Compute).last_error().as_deref(),
            Some("refused")
        );
    }
}

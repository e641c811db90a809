//! Metrics of one gateway through prometheus-client, in the OpenMetrics text format: requests
//! by route (the route pattern, so the label set stays fixed), method and status, request
//! latency histograms by route, and gauges computed from the cached copy at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency bucket bounds in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A figure computed at scrape time: (name, help, labels, value). A name ending in `_total`
/// is a counter (as the conductors report it), any other a gauge.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, f64);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The exposition text; `gauges` are computed by the caller.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut registry = Registry::default();
        registry.register(
            "ferric_gateway_requests",
            "API requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "ferric_gateway_request_duration_seconds",
            "API request latency by route",
            self.latency.clone(),
        );
        let owned: Vec<OwnedGauge> = gauges
            .iter()
            .map(|(name, help, labels, value)| OwnedGauge {
                name: name.to_string(),
                help: help.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                value: *value,
            })
            .collect();
        registry.register_collector(Box::new(ScrapeFigures(owned)));
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[derive(Debug)]
struct OwnedGauge {
    name: String,
    help: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The scrape-time figures, one family per name, in the order given.
#[derive(Debug)]
struct ScrapeFigures(Vec<OwnedGauge>);

impl Collector for ScrapeFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut i = 0;
        while i < self.0.len() {
            let first = &self.0[i];
            let counter = first.name.strip_suffix("_total");
            let (name, kind) = match counter {
                Some(base) => (base, MetricType::Counter),
                None => (first.name.as_str(), MetricType::Gauge),
            };
            let help = first.help.trim_end_matches('.');
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            if first.labels.is_empty() {
                // One series without labels.
                encode_value(kind, first.value, family)?;
                i += 1;
                while i < self.0.len() && self.0[i].name == first.name {
                    i += 1;
                }
                continue;
            }
            while i < self.0.len() && self.0[i].name == first.name {
                let g = &self.0[i];
                encode_value(kind, g.value, family.encode_family(&g.labels)?)?;
                i += 1;
            }
        }
        Ok(())
    }
}

/// A whole number as an integer (`3`, not `3.0`), any other as a float.
fn encode_value(
    kind: MetricType,
    v: f64,
    series: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let whole = v.fract() == 0.0 && v.abs() < 9.0e15;
    match (kind, whole) {
        (MetricType::Counter, true) if v >= 0.0 => ConstCounter::new(v as u64).encode(series),
        (MetricType::Counter, _) => ConstCounter::new(v).encode(series),
        (_, true) => ConstGauge::new(v as i64).encode(series),
        (_, false) => ConstGauge::new(v).encode(series),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.record("/v1/nodes", "GET", 200, Duration::from_millis(3));
        m.record("/v1/nodes", "GET", 200, Duration::from_millis(30));
        let text = m.render(&[
            (
                "ferric_nodes",
                "Nodes by provision state.",
                vec![("provision_state", "enroll".to_string())],
                2.0,
            ),
            (
                "ferric_sync_reads_total",
                "Reads.",
                vec![("conductor", "c1".to_string())],
                7.0,
            ),
            ("ferric_conductors_alive", "Live conductors.", vec![], 3.0),
        ]);
        for want in [
            "ferric_gateway_requests_total{route=\"/v1/nodes\",method=\"GET\",status=\"200\"} 2",
            "ferric_gateway_request_duration_seconds_bucket{le=\"0.005\",route=\"/v1/nodes\"} 1",
            "ferric_gateway_request_duration_seconds_count{route=\"/v1/nodes\"} 2",
            "ferric_nodes{provision_state=\"enroll\"} 2",
            "# TYPE ferric_sync_reads counter",
            "ferric_sync_reads_total{conductor=\"c1\"} 7",
            "ferric_conductors_alive 3",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }
}

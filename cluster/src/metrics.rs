//! This process's figures of its etcd work (a conductor's): the lease's keepalive round trip,
//! the time left before the self-fencing deadline, self-fence events, and the batched status
//! writes (size, latency, failures). Process-wide, as one conductor process has one lease and
//! one status writer at a time; the conductor registers them for `/metrics`.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::{LazyLock, Mutex};
use tokio::time::Instant;

pub struct ClusterMetrics {
    pub keepalive_seconds: Histogram,
    pub self_fences: Counter,
    pub deadline: FenceDeadline,
    pub write_batch_size: Histogram,
    pub write_batch_seconds: Histogram,
    pub write_batch_failures: Counter,
    pub writes_fenced: Counter,
}

pub static CLUSTER: LazyLock<ClusterMetrics> = LazyLock::new(|| ClusterMetrics {
    // 1 ms to about 16 s.
    keepalive_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    self_fences: Counter::default(),
    deadline: FenceDeadline::default(),
    // 1 to 128 writes (a batch holds at most `status::BATCH`).
    write_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
    write_batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    write_batch_failures: Counter::default(),
    writes_fenced: Counter::default(),
});

/// The self-fencing deadline of the lease being kept; shown as the seconds left until it at
/// the time of the scrape (negative once passed), and absent while there is no lease.
#[derive(Debug, Default)]
pub struct FenceDeadline(Mutex<Option<Instant>>);

impl FenceDeadline {
    pub fn set(&self, deadline: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    pub fn seconds_left(&self) -> Option<f64> {
        let d = (*self.0.lock().unwrap_or_else(|e| e.into_inner()))?;
        let now = Instant::now();
        Some(if d >= now {
            (d - now).as_secs_f64()
        } else {
            -(now - d).as_secs_f64()
        })
    }
}

impl EncodeMetric for FenceDeadline {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.seconds_left() {
            Some(s) => encoder.encode_gauge(&s),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.seconds_left().is_none()
    }
}

/// Registers this process's etcd figures.
pub fn register(registry: &mut Registry) {
    let m = &*CLUSTER;
    registry.register(
        "ferric_lease_keepalive_seconds",
        "Round trip of the conductor lease's keepalives to etcd",
        m.keepalive_seconds.clone(),
    );
    registry.register(
        "ferric_self_fences",
        "Times this conductor fenced itself (no keepalive acknowledged before its deadline)",
        m.self_fences.clone(),
    );
    registry.register(
        "ferric_fence_deadline_seconds_left",
        "Seconds left before the self-fencing deadline at the time of the scrape",
        Deadline,
    );
    registry.register(
        "ferric_etcd_write_batch_size",
        "Status writes per batched etcd transaction",
        m.write_batch_size.clone(),
    );
    registry.register(
        "ferric_etcd_write_batch_seconds",
        "Latency of batched status write transactions",
        m.write_batch_seconds.clone(),
    );
    registry.register(
        "ferric_etcd_write_batch_failures",
        "Batched status write transactions etcd did not take (every write in it is retried)",
        m.write_batch_failures.clone(),
    );
    registry.register(
        "ferric_etcd_writes_fenced",
        "Status writes refused by their fencing token (another conductor owns the node)",
        m.writes_fenced.clone(),
    );
}

/// The registry's view of the process-wide deadline.
#[derive(Debug)]
struct Deadline;

impl EncodeMetric for Deadline {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        CLUSTER.deadline.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        CLUSTER.deadline.is_empty()
    }
}

//! Where a workload's time goes, on a cluster the bench started itself: the CPU each group of
//! processes used (etcd, the gateway, the conductors, the bench's own client) and etcd's own
//! counters (writes, transactions, watch events, bytes sent), sampled around each timed
//! workload of the suite and divided by its requests. The counters are etcd's (`/metrics`)
//! and the kernel's (`/proc/<pid>/stat`), not Ferric's view of itself.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// etcd's counters a profile reports: (name in the profile, metric, divisor).
const ETCD_COUNTERS: &[(&str, &str, f64)] = &[
    ("puts", "etcd_mvcc_put_total", 1.0),
    ("deletes", "etcd_mvcc_delete_total", 1.0),
    ("txn_calls", "grpc_server_handled_total{method=Txn}", 1.0),
    (
        "range_calls",
        "grpc_server_handled_total{method=Range}",
        1.0,
    ),
    ("proposals", "etcd_server_proposals_committed_total", 1.0),
    ("watch_events", "etcd_debugging_mvcc_events_total", 1.0),
    (
        "sent_kb",
        "etcd_network_client_grpc_sent_bytes_total",
        1024.0,
    ),
];

/// The processes of one cluster, by group, and its etcd.
#[derive(Debug)]
pub struct Profiler {
    groups: Vec<(String, Vec<u32>)>,
    etcd_metrics: String,
    http: reqwest::Client,
}

/// Readings at one moment.
pub struct Sample {
    cpu_s: Vec<f64>,
    etcd: BTreeMap<&'static str, f64>,
}

/// Per request of a workload: CPU milliseconds of each group, and etcd's counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub cpu_ms: BTreeMap<String, f64>,
    pub etcd: BTreeMap<String, f64>,
}

impl Profiler {
    /// `groups`: a name and the pids in it; the bench's own process is added as `client`.
    pub fn new(etcd_url: &str, mut groups: Vec<(String, Vec<u32>)>) -> Profiler {
        groups.push(("client".into(), vec![std::process::id()]));
        Profiler {
            groups,
            etcd_metrics: format!("{}/metrics", etcd_url.trim_end_matches('/')),
            http: reqwest::Client::new(),
        }
    }

    pub async fn sample(&self) -> Sample {
        let cpu_s = self
            .groups
            .iter()
            .map(|(_, pids)| pids.iter().map(|p| crate::bench::cpu_seconds(*p)).sum())
            .collect();
        let text = match self.http.get(&self.etcd_metrics).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read etcd's metrics; the profile shows none");
                String::new()
            }
        };
        Sample {
            cpu_s,
            etcd: etcd_counters(&text),
        }
    }

    /// Waits until etcd has served no transaction, range or write for half a second (at most
    /// `timeout`): a cluster that has just placed its buckets still reads them, and the first
    /// workload would otherwise pay for that (4,096 bucket reads at a 2,000-node enroll on one
    /// conductor, 1.6 etcd transactions per enrolled node where the enrollments made 0.1).
    pub async fn until_quiet(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let busy = |s: &Sample| {
            ["txn_calls", "range_calls", "puts", "deletes"]
                .iter()
                .map(|k| s.etcd.get(k).copied().unwrap_or(0.0))
                .sum::<f64>()
        };
        let mut last = busy(&self.sample().await);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = busy(&self.sample().await);
            if now == last {
                return true;
            }
            last = now;
        }
        false
    }

    /// What happened since `before`, per one of `requests`.
    pub async fn since(&self, before: &Sample, requests: usize) -> Profile {
        let after = self.sample().await;
        let n = requests.max(1) as f64;
        let cpu_ms = self
            .groups
            .iter()
            .zip(after.cpu_s.iter().zip(&before.cpu_s))
            .map(|((name, _), (a, b))| (name.clone(), (a - b) * 1000.0 / n))
            .collect();
        let etcd = ETCD_COUNTERS
            .iter()
            .filter_map(|(name, _, div)| {
                let (a, b) = (after.etcd.get(name)?, before.etcd.get(name)?);
                Some((name.to_string(), (a - b) / div / n))
            })
            .collect();
        Profile { cpu_ms, etcd }
    }
}

/// The counters of [`ETCD_COUNTERS`] in etcd's Prometheus text; gRPC calls are summed over
/// their result codes.
fn etcd_counters(text: &str) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((metric, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        for (name, wanted, _) in ETCD_COUNTERS {
            let hit = match wanted.split_once("{method=") {
                Some((family, method)) => {
                    let method = method.trim_end_matches('}');
                    metric.starts_with(&format!("{family}{{"))
                        && metric.contains(&format!("grpc_method=\"{method}\""))
                        && metric.contains("grpc_service=\"etcdserverpb.KV\"")
                }
                None => metric == *wanted,
            };
            if hit {
                *out.entry(*name).or_insert(0.0) += value;
            }
        }
    }
    out
}

impl Profile {
    /// `  per request: CPU 0.68 ms (etcd 0.31, ...); etcd 3.0 puts, ...`
    pub fn line(&self) -> String {
        let total: f64 = self.cpu_ms.values().sum();
        let cpu: Vec<String> = ["etcd", "gateway", "conductors", "client"]
            .iter()
            .filter_map(|g| Some(format!("{g} {:.3}", self.cpu_ms.get(*g)?)))
            .collect();
        let e = |k: &str| self.etcd.get(k).copied().unwrap_or(f64::NAN);
        format!(
            "  per request: CPU {total:.3} ms ({}); etcd {:.2} puts, {:.2} deletes, {:.2} Txn and {:.2} Range calls, {:.2} proposals, {:.1} watch events, {:.2} KB sent",
            cpu.join(", "),
            e("puts"),
            e("deletes"),
            e("txn_calls"),
            e("range_calls"),
            e("proposals"),
            e("watch_events"),
            e("sent_kb"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_etcds_counters_and_sums_grpc_codes() {
        let text = "\
# HELP etcd_mvcc_put_total Total number of puts seen by this member.
etcd_mvcc_put_total 15334
etcd_debugging_mvcc_events_total 62151
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 9003
grpc_server_handled_total{grpc_code=\"FailedPrecondition\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 4
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"other.KV\",grpc_type=\"unary\"} 99
etcd_network_client_grpc_sent_bytes_total 1.4732222e+07
";
        let c = etcd_counters(text);
        assert_eq!(c["puts"], 15334.0);
        assert_eq!(c["watch_events"], 62151.0);
        assert_eq!(c["txn_calls"], 9005.0);
        assert_eq!(c["range_calls"], 4.0);
        assert_eq!(c["sent_kb"], 14_732_222.0);
        assert!(!c.contains_key("deletes"));
    }
}

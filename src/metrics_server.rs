//! A conductor's `/metrics` (`--metrics-listen`): every figure of this process through one
//! prometheus-client registry, in the OpenMetrics text format, each series labelled with the
//! conductor's name: node actors and reservations (`ferric_node`), the lease and the batched
//! status writes (`ferric_cluster`), BMC commands (`ferric_power`), event delivery
//! (`ferric_notify`).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::Arc;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry of a conductor named `conductor` (`consoles`: its console service's
/// registry, if it serves consoles).
pub fn registry(
    conductor: &str,
    delivery: Arc<ferric_notify::Stats>,
    consoles: Option<ferric_console::registry::ConsoleRegistry>,
) -> Registry {
    let mut r = Registry::with_labels(
        [(
            Cow::Borrowed("conductor"),
            Cow::Owned(conductor.to_string()),
        )]
        .into_iter(),
    );
    ferric_node::metrics::register(&mut r);
    ferric_cluster::metrics::register(&mut r);
    ferric_power::metrics::register(&mut r);
    ferric_sync::metrics::register(&mut r);
    r.register_collector(Box::new(ferric_notify::stats::StatsCollector(delivery)));
    if let Some(consoles) = consoles {
        r.register_collector(Box::new(ConsoleSessions(consoles)));
    }
    r
}

/// The consoles this conductor runs, counted at the scrape.
struct ConsoleSessions(ferric_console::registry::ConsoleRegistry);

impl std::fmt::Debug for ConsoleSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleSessions")
    }
}

impl prometheus_client::collector::Collector for ConsoleSessions {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(self.0.len() as i64);
        let series = encoder.encode_descriptor(
            "ferric_console_sessions",
            "Serial console sessions this conductor runs",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(series)
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
                    Err(_) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics could not be encoded\n",
                    )
                        .into_response(),
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_is_in_one_exposition_labelled_with_the_conductor() {
        let stats = Arc::new(ferric_notify::Stats::default());
        stats
            .lane(ferric_model::Sink::Compute)
            .observe_latency_ms(30);
        ferric_power::metrics::BMC.observe(
            "redfish",
            "power on",
            "ok",
            std::time::Duration::from_millis(12),
        );
        let registry = registry("c1", stats, Some(Default::default()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [
            "ferric_node_actors{conductor=\"c1\"} ",
            "ferric_reservations_held{conductor=\"c1\"} ",
            "# TYPE ferric_lease_keepalive_seconds histogram",
            "ferric_console_sessions{conductor=\"c1\"} 0",
            "ferric_sync_sweeps_total{conductor=\"c1\"} ",
            "ferric_bmc_commands_total{conductor=\"c1\",driver=\"redfish\",command=\"power on\",outcome=\"ok\"} 1",
            "ferric_bmc_command_seconds_bucket{conductor=\"c1\",le=\"0.02\",driver=\"redfish\",command=\"power on\"} 1",
            "ferric_notify_delivery_latency_seconds_bucket{conductor=\"c1\",le=\"0.05\",sink=\"compute\"} 1",
            "ferric_notify_delivery_latency_seconds_bucket{conductor=\"c1\",le=\"0.025\",sink=\"compute\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }
}

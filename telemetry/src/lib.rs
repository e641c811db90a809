//! Logging for every Ferric process, and the optional OpenTelemetry trace export of conductors
//! and gateways.
//!
//! With `--otlp-endpoint` a request can be followed across processes: the gateway's span for an
//! API request (a child of the client's `traceparent` header, when it sends one), its etcd write,
//! the conductor's span for the work that write asked for, and each BMC command of that work. The
//! link from gateway to conductor goes through etcd: the spec write that records a request also
//! records the W3C `traceparent` of the span that wrote it (`NodeSpec::traces`), and the node
//! actor that carries the request out opens its span as a child of that. Redfish commands carry
//! the BMC command span's `traceparent` header too.
//!
//! Without an endpoint nothing of this runs: [`enabled`] is false, the optional spans are not
//! created, no `traceparent` is stored and records keep their older format.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: callers create their optional spans and store trace
/// context only then.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Where and as whom this process exports its spans.
#[derive(Debug, Clone)]
pub struct Export {
    /// An OTLP/gRPC collector (`http://collector:4317`).
    pub endpoint: String,
    /// `service.name`: `ferric-conductor`, `ferric-gateway`.
    pub service: &'static str,
    /// `service.instance.id`: the conductor's or gateway's name.
    pub instance: String,
}

/// Flushes the spans still queued when the process ends (dropped at the end of `main`).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // Bounded: a collector that went away must not hold up a conductor's exit.
            let _ = provider.shutdown_with_timeout(Duration::from_secs(2));
        }
    }
}

/// Spans are sent this often unless `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) says otherwise:
/// sooner than the SDK's 5 s, so that a trace is complete in the collector about when the
/// operation it shows has ended.
const SCHEDULE_DELAY: Duration = Duration::from_secs(1);

/// Installs the process's logging (stderr, filtered by `FERRIC_LOG`, `info` by default) and,
/// given an endpoint, the trace export. Must run inside the Tokio runtime (the gRPC channel
/// lives on it).
pub fn init(export: Option<Export>) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_env("FERRIC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let Some(export) = export else {
        tracing_subscriber::registry().with(fmt).try_init()?;
        return Ok(Guard(None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(export.endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("OTLP exporter for {}: {e}", export.endpoint))?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(SCHEDULE_DELAY);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let resource = Resource::builder()
        .with_service_name(export.service)
        .with_attribute(KeyValue::new(
            "service.instance.id",
            export.instance.clone(),
        ))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ferric");
    // Only Ferric's own spans (not those of the libraries under it), at info and above.
    let spans = EnvFilter::new("ferric=info,ferric_gateway=info,ferric_cluster=info,ferric_node=info,ferric_power=info,ferric_telemetry=info");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_filter(spans);
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %export.endpoint, service = export.service, "exporting traces (OTLP/gRPC)");
    Ok(Guard(Some(provider)))
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), or None when it is not
/// traced.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span (see [`traceparent_of`]).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes the span described by `traceparent` (a W3C header value, possibly from a client or
/// from etcd) the parent of `span`, which must not have been entered yet. A missing or malformed
/// value leaves `span` a root: trace context is advisory and never fails a request.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|_| enabled()) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_traced_when_export_is_off() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent_of(&span), None);
        // Never panics, whatever the value.
        set_parent(&span, Some("garbage"));
        set_parent(&span, None);
    }

    #[test]
    fn a_traceparent_survives_extraction_and_injection() {
        // The propagator alone (no subscriber): what `set_parent` reads is what it writes.
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        assert!(cx.span().span_context().is_valid());
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(out.get("traceparent").map(String::as_str), Some(tp));
        let bad = HashMap::from([("traceparent".to_string(), "00-zz-yy-01".to_string())]);
        let cx = TraceContextPropagator::new().extract(&bad);
        assert!(!cx.span().span_context().is_valid());
    }
}

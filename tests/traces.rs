//! OpenTelemetry trace export: one power request followed from the client through the gateway,
//! its etcd write, the conductor and the BMC. The gateway and the conductor are real `ferric`
//! processes exporting OTLP/gRPC to a collector stand-in served here (the protocol's own
//! generated service); the BMC is `ferric sim`, whose command log records the `traceparent`
//! header each Redfish request carried: an independent record of the last hop.

use ferric_testkit::http::http;
use ferric_testkit::{free_port, Fleet, Gateway, Sim};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attrs: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

fn text(kv: &KeyValue) -> (String, String) {
    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    };
    (kv.key.clone(), v)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .map(text)
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Got {
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        attrs: s.attributes.iter().map(text).collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_power_request_is_one_trace_from_the_client_to_the_bmc() {
    let collector = Collector::default();
    let port = free_port();
    let collector_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(([127, 0, 0, 1], port).into()),
    );
    let endpoint = format!("http://127.0.0.1:{port}");

    let mut fleet = Fleet::new("traces").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 1, &[]).await;
    fleet.start_conductor("c1", &["--lease-ttl", "5", "--otlp-endpoint", &endpoint]);
    let gw = Gateway::start(&fleet, dir.path(), "g1", &["--otlp-endpoint", &endpoint]);
    let info = sim.driver_info(0, "password");
    let id = fleet
        .create_nodes(1, &["--driver", "redfish", "--driver-info", info.as_str()])
        .await
        .remove(0);
    fleet
        .wait_until(Duration::from_secs(30), "the node is owned", async || {
            let owned = fleet.snapshot().await?.holder(&id).is_some();
            owned.then_some(()).ok_or("no owner yet".to_string())
        })
        .await;

    // The client's own trace context: everything below must join its trace.
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let client_span = "eee19b7ec3c1b174";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let path = format!("/v1/nodes/{id}/states/power");
    let r = http(
        gw.port,
        "PUT",
        &path,
        &[
            ("traceparent", traceparent.as_str()),
            ("X-OpenStack-Ironic-API-Version", "1.81"),
        ],
        Some(br#"{"target": "power on"}"#),
    )
    .expect("PUT power");
    fleet.ensure(r.status == 202, || {
        format!("power on: {} {}", r.status, r.body)
    });
    fleet
        .wait_until(
            Duration::from_secs(30),
            "the API shows power on",
            async || {
                let r = http(gw.port, "GET", &format!("/v1/nodes/{id}"), &[], None)
                    .map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
                (v["power_state"] == "power on" && v["target_power_state"].is_null())
                    .then_some(())
                    .ok_or_else(|| r.body.clone())
            },
        )
        .await;

    // Spans are sent in batches (every second); wait, bounded, until the conductor's request
    // span has arrived with at least one BMC command under it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Got> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        let request = spans.iter().find(|s| s.name == "power power on");
        let done = request.is_some_and(|r| {
            spans
                .iter()
                .any(|s| s.parent == r.span_id && s.name.starts_with("bmc "))
                && spans
                    .iter()
                    .any(|s| s.parent == r.span_id && s.name == "etcd status write")
        });
        if done || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let everything = collector.spans.lock().unwrap().clone();
    let show = || {
        everything
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} {} <- {} {:?}",
                    s.service, s.trace_id, s.name, s.span_id, s.parent, s.attrs
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The gateway: a server span under the client's, and the etcd write under that.
    let server = spans
        .iter()
        .find(|s| s.service == "ferric-gateway" && s.name == "PUT /v1/nodes/{node}/states/power");
    fleet.ensure(server.is_some_and(|s| s.parent == client_span), || {
        format!("no gateway span under the client's:\n{}", show())
    });
    let server = server.unwrap();
    fleet.ensure(
        server.attr("http.response.status_code") == Some("202"),
        || format!("gateway span attributes {:?}", server.attrs),
    );
    let write = spans
        .iter()
        .find(|s| s.service == "ferric-gateway" && s.name == "etcd spec write");
    fleet.ensure(write.is_some_and(|w| w.parent == server.span_id), || {
        format!("no etcd write under the gateway's span:\n{}", show())
    });
    let write = write.unwrap();
    fleet.ensure(write.attr("node") == Some(id.as_str()), || {
        format!("etcd write attributes {:?}", write.attrs)
    });

    // The conductor: the request's span is a child of that etcd write (the link went through
    // etcd, in the spec), and its BMC commands are children of it.
    let request = spans
        .iter()
        .find(|s| s.service == "ferric-conductor" && s.name == "power power on");
    fleet.ensure(request.is_some_and(|r| r.parent == write.span_id), || {
        format!("no conductor span under the etcd write:\n{}", show())
    });
    let request = request.unwrap();
    fleet.ensure(request.attr("conductor") == Some("c1"), || {
        format!("request span attributes {:?}", request.attrs)
    });
    let bmc: Vec<&Got> = spans
        .iter()
        .filter(|s| s.service == "ferric-conductor" && s.parent == request.span_id)
        .filter(|s| s.name.starts_with("bmc "))
        .collect();
    fleet.ensure(
        bmc.iter()
            .any(|s| s.attr("command") == Some("power on") && s.attr("outcome") == Some("ok")),
        || format!("no successful BMC power on span:\n{}", show()),
    );
    fleet.ensure(
        bmc.iter().all(|s| s.attr("driver") == Some("redfish")),
        || format!("BMC spans {bmc:?}"),
    );

    // The BMC's own log: the reset it received carried the trace, with the span id of one of
    // the BMC command spans the conductor exported.
    let resets: Vec<Value> = sim
        .commands(0)
        .into_iter()
        .filter(|e| e["method"] == "POST" && e["action"] == "On")
        .collect();
    fleet.ensure(resets.len() == 1, || format!("resets {resets:?}"));
    let tp = resets[0]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    fleet.ensure(
        parts.len() == 4 && parts[1] == trace_id && bmc.iter().any(|s| s.span_id == parts[2]),
        || format!("the BMC received traceparent {tp:?}; BMC spans {bmc:?}"),
    );
    fleet.ensure(resets[0]["client"] == "c1", || {
        format!("reset sent by {}", resets[0]["client"])
    });

    // A request without trace context starts a trace of its own at the gateway, still linked
    // to the conductor through etcd.
    let r = http(
        gw.port,
        "PUT",
        &path,
        &[("X-OpenStack-Ironic-API-Version", "1.81")],
        Some(br#"{"target": "power off"}"#),
    )
    .expect("PUT power off");
    fleet.ensure(r.status == 202, || {
        format!("power off: {} {}", r.status, r.body)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let linked = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let off = spans
            .iter()
            .find(|s| s.service == "ferric-conductor" && s.name == "power power off")
            .cloned();
        let linked = off.and_then(|off| {
            let write = spans.iter().find(|s| s.span_id == off.parent)?;
            let server = spans.iter().find(|s| s.span_id == write.parent)?;
            (server.trace_id == off.trace_id
                && server.parent.is_empty()
                && off.trace_id != trace_id)
                .then_some(())
        });
        if linked.is_some() || Instant::now() > deadline {
            break linked;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    fleet.ensure(linked.is_some(), || {
        let spans = collector.spans.lock().unwrap().clone();
        format!(
            "power off is not one trace rooted at the gateway: {:?}",
            spans
                .iter()
                .map(|s| (&s.service, &s.name, &s.trace_id, &s.span_id, &s.parent))
                .collect::<Vec<_>>()
        )
    });
    collector_task.abort();
}

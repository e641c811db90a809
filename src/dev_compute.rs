//! `ferric dev --compute`: a small stand-in for the compute service (Nova's
//! `os-server-external-events`) and a webhook receiver, in the dev process, printing every power
//! event it receives, so a user can watch notifications arrive. Not a Nova: it accepts any
//! token, answers every event 200, and keeps nothing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where the receiver listens: the URLs to give conductors.
pub struct Receiver {
    pub compute_url: String,
    pub webhook_url: String,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    nova: AtomicU64,
    webhook: AtomicU64,
}

/// Starts the receiver on a free loopback port.
pub async fn start() -> anyhow::Result<Receiver> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v2.1/os-server-external-events", post(nova))
        .route("/webhook", post(webhook))
        .with_state(Arc::new(Counts::default()));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("ferric dev: the compute stand-in stopped: {e}");
        }
    });
    Ok(Receiver {
        compute_url: format!("http://{addr}/v2.1"),
        webhook_url: format!("http://{addr}/webhook"),
        _task: task,
    })
}

/// Nova's answer: every event accepted (`code` 200), echoed back as Nova does.
async fn nova(
    State(counts): State<Arc<Counts>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let version = headers
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let mut out = Vec::new();
    for ev in body["events"].as_array().cloned().unwrap_or_default() {
        let n = counts.nova.fetch_add(1, Ordering::Relaxed) + 1;
        println!(
            "[compute #{n}] {} {} {}  ({version})",
            ev["name"].as_str().unwrap_or("?"),
            ev["server_uuid"].as_str().unwrap_or("?"),
            ev["tag"].as_str().unwrap_or("?"),
        );
        let mut answered = ev.clone();
        answered["code"] = json!(200);
        answered["status"] = json!("completed");
        out.push(answered);
    }
    (StatusCode::OK, Json(json!({ "events": out })))
}

async fn webhook(State(counts): State<Arc<Counts>>, Json(body): Json<Value>) -> StatusCode {
    let events = match &body["events"] {
        Value::Array(a) => a.clone(),
        _ => vec![body.clone()],
    };
    for ev in events {
        let n = counts.webhook.fetch_add(1, Ordering::Relaxed) + 1;
        println!(
            "[webhook #{n}] node {} seq {}: {} -> {} (by {})",
            ev["node"].as_str().unwrap_or("?"),
            ev["seq"],
            ev["previous_power_state"].as_str().unwrap_or("unknown"),
            ev["power_state"].as_str().unwrap_or("unknown"),
            ev["conductor"].as_str().unwrap_or("?"),
        );
    }
    StatusCode::OK
}

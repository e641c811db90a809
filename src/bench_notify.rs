//! `ferric bench notify`: power events from real conductors to a receiver in this process that
//! answers as Nova does and records when each event arrived. Latency: from the event's write (its
//! `at_ms`, the status transaction's time) to its receipt by the webhook. Throughput: a backlog
//! of events built while the receiver refuses (503), drained once it accepts again.

use crate::procs::{self, Etcd, Proc};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ferric_cluster::Cluster;
use ferric_model::{now_ms, NodeId, NodeSpec, PowerTarget};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct NotifyArgs {
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    conductors: usize,
    /// Write each event of the latency run as `node seq written_ms received_ms` to this file.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Receiver {
    refuse: AtomicBool,
    /// (node, seq, written at, received at) of every webhook event.
    hooks: Mutex<Vec<(String, u64, u64, u64)>>,
    /// (instance, tag) of every event Nova's stand-in accepted.
    nova: Mutex<Vec<(String, String)>>,
}

async fn nova(
    State(r): State<Arc<Receiver>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if r.refuse.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    let mut out = Vec::new();
    let mut got = r.nova.lock().unwrap_or_else(|e| e.into_inner());
    for ev in body["events"].as_array().cloned().unwrap_or_default() {
        got.push((
            ev["server_uuid"].as_str().unwrap_or("").to_string(),
            ev["tag"].as_str().unwrap_or("").to_string(),
        ));
        let mut a = ev.clone();
        a["code"] = json!(200);
        a["status"] = json!("completed");
        out.push(a);
    }
    (StatusCode::OK, Json(json!({ "events": out })))
}

async fn hook(State(r): State<Arc<Receiver>>, Json(body): Json<Value>) -> StatusCode {
    if r.refuse.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = now_ms();
    let mut got = r.hooks.lock().unwrap_or_else(|e| e.into_inner());
    for ev in body["events"].as_array().cloned().unwrap_or_default() {
        got.push((
            ev["node"].as_str().unwrap_or("").to_string(),
            ev["seq"].as_u64().unwrap_or(0),
            ev["at_ms"].as_u64().unwrap_or(0),
            now,
        ));
    }
    StatusCode::OK
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until the webhook has received `want` events newer than `since` (by receipt index).
async fn received(
    r: &Receiver,
    from: usize,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = r.hooks.lock().unwrap_or_else(|e| e.into_inner()).len() - from;
        if n >= want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {n} of {want} events arrived within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(dir: &Path, etcd: &Etcd, a: NotifyArgs) -> anyhow::Result<()> {
    let r = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v2.1/os-server-external-events", post(nova))
        .route("/webhook", post(hook))
        .with_state(r.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let prefix = "/bench-notify/";
    let mut cfg = ferric_cluster::EtcdConfig::new(&etcd.url);
    cfg.prefix = prefix.into();
    cfg.timeout = Duration::from_secs(30);
    let cluster = Cluster::connect(&cfg).await?;
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..a.nodes)
        .map(|_| {
            let mut s = NodeSpec::new(NodeId::new_random(), "fake-hardware", now);
            s.instance_uuid = Some(uuid::Uuid::new_v4());
            s
        })
        .collect();
    let ids: Vec<NodeId> = specs.iter().map(|s| s.id).collect();
    for chunk in specs.chunks(4096) {
        for res in cluster.create_nodes(chunk.to_vec()).await? {
            res?;
        }
    }
    let extra: Vec<String> = [
        "--compute-url".to_string(),
        format!("http://{addr}/v2.1"),
        "--compute-token".into(),
        "bench".into(),
        "--notify-url".into(),
        format!("http://{addr}/webhook"),
        "--notify-backoff-max".into(),
        "0.5".into(),
        "--sync-interval".into(),
        "0".into(),
        "--bmc-min-gap-ms".into(),
        "0".into(),
    ]
    .to_vec();
    let procs: Vec<Proc> = (1..=a.conductors)
        .map(|i| procs::conductor(dir, &etcd.url, prefix, &format!("bench-c{i}"), 5.0, &extra))
        .collect::<anyhow::Result<_>>()?;
    crate::bench::until_running(&cluster, a.nodes, None, Duration::from_secs(300)).await?;

    // Latency with a healthy endpoint: every node powered on, each change one event.
    let from = r.hooks.lock().unwrap_or_else(|e| e.into_inner()).len();
    request_all(&cluster, &ids, PowerTarget::On).await?;
    received(&r, from, a.nodes, Duration::from_secs(600)).await?;
    let mut lat: Vec<u64> = r.hooks.lock().unwrap_or_else(|e| e.into_inner())[from..]
        .iter()
        .map(|(_, _, at, got)| got.saturating_sub(*at))
        .collect();
    if let Some(path) = &a.dump {
        let rows: String = r.hooks.lock().unwrap_or_else(|e| e.into_inner())[from..]
            .iter()
            .map(|(n, s, at, got)| format!("{n} {s} {at} {got}\n"))
            .collect();
        std::fs::write(path, rows)?;
    }
    lat.sort_unstable();
    println!(
        "notify latency (status write -> webhook receipt), {} events from {} nodes, healthy endpoint: p50 {} ms, p99 {} ms, max {} ms (target p99 <= 1000 ms)",
        lat.len(),
        a.nodes,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );

    // Throughput: a backlog built while the receiver refuses, then drained.
    r.refuse.store(true, Ordering::Relaxed);
    let from = r.hooks.lock().unwrap_or_else(|e| e.into_inner()).len();
    let nova_from = r.nova.lock().unwrap_or_else(|e| e.into_inner()).len();
    request_all(&cluster, &ids, PowerTarget::Off).await?;
    wait_all_off(&cluster, a.nodes).await?;
    let t0 = Instant::now();
    r.refuse.store(false, Ordering::Relaxed);
    let done = received(&r, from, a.nodes, Duration::from_secs(600)).await?;
    let secs = done.duration_since(t0).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nova_n = r.nova.lock().unwrap_or_else(|e| e.into_inner()).len() - nova_from;
    let hooks = r.hooks.lock().unwrap_or_else(|e| e.into_inner())[from..].to_vec();
    let distinct: HashSet<(String, u64)> =
        hooks.iter().map(|(n, s, _, _)| (n.clone(), *s)).collect();
    println!(
        "notify throughput: a backlog of {} events drained to the webhook in {secs:.2} s = {:.0} events/s ({} to Nova meanwhile, {} re-deliveries) (target >= 10000/s)",
        a.nodes,
        a.nodes as f64 / secs,
        nova_n,
        hooks.len() - distinct.len()
    );
    drop(procs);
    server.abort();
    Ok(())
}

async fn request_all(cluster: &Cluster, ids: &[NodeId], target: PowerTarget) -> anyhow::Result<()> {
    for chunk in ids.chunks(600) {
        for res in cluster
            .request_power_many(chunk, target, None, "bench")
            .await?
        {
            res?;
        }
    }
    Ok(())
}

async fn wait_all_off(cluster: &Cluster, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (views, _) = cluster.list_nodes().await?;
        let off = views
            .iter()
            .filter(|v| v.status.power_state == Some(ferric_model::PowerState::Off))
            .count();
        if off >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {off} of {n} nodes off after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

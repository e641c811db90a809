//! `ferric bench dashboard`: the dashboard's two figures.
//!
//! 1. Time to the first meaningful paint of the overview at N nodes (100,000 by default): a
//!    fresh Chromium page (Debian's, driven by playwright-core: `bench/dashboard-paint.mjs`)
//!    loads `/dashboard/` and the clock stops when the overview shows the fleet's total, the
//!    number the page exists to show (`performance.now()` since navigation start, so the
//!    browser's own start-up is not counted). Several loads; p50 and max.
//! 2. Gateway CPU while D dashboards (50) follow the fleet: each is what an open overview
//!    costs the gateway (the all-nodes event stream, and the summary it re-reads at most every
//!    2 s while events come), played by this process; meanwhile C nodes (5,000) change power,
//!    spread over W seconds. The gateway's CPU (user + system, /proc) over the window, as a
//!    share of one core, with the dashboards and, as the baseline, without them.

use crate::bench_api::{fan_out, ApiCluster};
use crate::procs::Etcd;
use ferric_model::{now_ms, NodeId, NodeName, NodeSpec};
use futures::StreamExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct DashboardArgs {
    #[arg(long, default_value_t = 100_000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 3)]
    pub conductors: usize,
    /// Page loads timed.
    #[arg(long, default_value_t = 5)]
    pub loads: usize,
    /// Dashboards following the fleet during the power changes.
    #[arg(long, default_value_t = 50)]
    pub dashboards: usize,
    /// Nodes whose power changes (each once).
    #[arg(long, default_value_t = 5_000)]
    pub changes: usize,
    /// Seconds the changes are spread over.
    #[arg(long, default_value_t = 50.0)]
    pub window: f64,
    /// Skip the page loads (no browser needed).
    #[arg(long)]
    pub no_paint: bool,
}

/// One dashboard's load on the gateway: the event stream, read to the end of each message,
/// and the summary, re-read at most every 2 s while events arrive (as the page does).
async fn follow(base: String, events: Arc<AtomicU64>, stop: tokio::sync::watch::Receiver<bool>) {
    let client = reqwest::Client::new();
    let Ok(resp) = client
        .get(format!("{base}/v1/ferric/events"))
        .header("X-OpenStack-Ironic-API-Version", "1.95")
        .send()
        .await
    else {
        return;
    };
    let mut body = resp.bytes_stream();
    let mut last_summary = Instant::now();
    let mut pending = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let chunk = tokio::time::timeout(Duration::from_millis(500), body.next()).await;
        match chunk {
            Ok(Some(Ok(bytes))) => {
                let n = bytes.windows(2).filter(|w| w == b"\n\n").count() as u64;
                events.fetch_add(n, Ordering::Relaxed);
                pending |= n > 0;
            }
            Ok(_) => return,
            Err(_) => {}
        }
        if pending && last_summary.elapsed() >= Duration::from_secs(2) {
            pending = false;
            last_summary = Instant::now();
            let _ = client
                .get(format!("{base}/v1/ferric/summary"))
                .header("X-OpenStack-Ironic-API-Version", "1.95")
                .send()
                .await
                .map(|r| r.bytes());
        }
    }
}

/// Changes the power of `ids` (toward `target`) at a steady rate over `window`; returns the
/// gateway's CPU share of one core over that time.
async fn power_wave(
    port: u16,
    gateway_pid: u32,
    ids: Arc<Vec<String>>,
    target: &'static str,
    window: Duration,
) -> anyhow::Result<(f64, Duration)> {
    let n = ids.len();
    let per = window.div_f64(n.max(1) as f64);
    let cpu0 = crate::bench::cpu_seconds(gateway_pid);
    let t0 = Instant::now();
    let start = tokio::time::Instant::now();
    let took = fan_out(port, 8, n, move |i| {
        let id = ids[i].clone();
        async move {
            tokio::time::sleep_until(start + per.mul_f64(i as f64)).await;
            (
                "PUT".to_string(),
                format!("/v1/nodes/{id}/states/power"),
                Some(format!(r#"{{"target": "{target}"}}"#)),
                202,
            )
        }
    })
    .await?;
    let wall = t0.elapsed().max(window);
    let cpu = crate::bench::cpu_seconds(gateway_pid) - cpu0;
    Ok((cpu / wall.as_secs_f64(), took))
}

pub async fn run(dir: &Path, etcd: &Etcd, args: DashboardArgs) -> anyhow::Result<()> {
    let n = args.nodes;
    let api = ApiCluster::start(dir, etcd, "/bench-dashboard/", args.conductors, 5.0, n).await?;
    let base = format!("http://127.0.0.1:{}", api.port);
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..n)
        .map(|i| {
            let mut s = NodeSpec::new(NodeId::new_random(), "fake-hardware", now);
            s.name = NodeName::parse(&format!("bench-{i:06}")).ok();
            s
        })
        .collect();
    let t = Instant::now();
    let ids: Vec<String> = api
        .cluster
        .create_nodes(specs)
        .await?
        .into_iter()
        .map(|r| r.map(|id| id.to_string()).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "dashboard: {} conductors, 1 gateway, {n} fake-hardware nodes (enrolled in {:.1} s)",
        args.conductors,
        t.elapsed().as_secs_f64()
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s: serde_json::Value = client
            .get(format!("{base}/v1/ferric/summary"))
            .header("X-OpenStack-Ironic-API-Version", "1.95")
            .send()
            .await?
            .json()
            .await?;
        if s["nodes"] == n && s["unowned"] == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the fleet did not settle: {s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    if !args.no_paint {
        let script = std::env::current_dir()?.join("bench/dashboard-paint.mjs");
        let modules = std::env::var("FERRIC_NODE_MODULES")
            .unwrap_or_else(|_| "target/node/node_modules".into());
        let out = tokio::process::Command::new("node")
            .arg(&script)
            .env("NODE_PATH", &modules)
            .env("FERRIC_URL", &base)
            .env("NODES", n.to_string())
            .env("LOADS", args.loads.to_string())
            .kill_on_drop(true)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "bench/dashboard-paint.mjs failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        println!(
            "first meaningful paint of the overview at {n} nodes: p50 {:.0} ms, max {:.0} ms over {} loads (first contentful paint p50 {:.0} ms; summary answer {} bytes; target <= 1000 ms)",
            doc["p50_ms"].as_f64().unwrap_or(f64::NAN),
            doc["max_ms"].as_f64().unwrap_or(f64::NAN),
            args.loads,
            doc["fcp_p50_ms"].as_f64().unwrap_or(f64::NAN),
            doc["summary_bytes"]
        );
    }

    let pid = api.gateway.pid();
    let window = Duration::from_secs_f64(args.window);
    let changes = args.changes.min(n);
    let first: Arc<Vec<String>> = Arc::new(ids[..changes].to_vec());
    let (base_cpu, _) = power_wave(api.port, pid, first.clone(), "power on", window).await?;
    println!(
        "baseline: {changes} nodes power on over {:.0} s, no dashboard: gateway {:.1} % of a core",
        args.window,
        base_cpu * 100.0
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let events = Arc::new(AtomicU64::new(0));
    let followers: Vec<_> = (0..args.dashboards)
        .map(|_| tokio::spawn(follow(base.clone(), events.clone(), stop.clone())))
        .collect();
    // Let every stream open before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = events.load(Ordering::Relaxed);
    let (dash_cpu, _) = power_wave(api.port, pid, first, "power off", window).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = events.load(Ordering::Relaxed) - before;
    let _ = stop_tx.send(true);
    for f in followers {
        let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
    }
    println!(
        "{} dashboards following the stream while {changes} nodes power off over {:.0} s: gateway {:.1} % of a core ({:.1} % above the baseline; {} events delivered to the dashboards, {:.0} per dashboard; target <= 20 %)",
        args.dashboards,
        args.window,
        dash_cpu * 100.0,
        (dash_cpu - base_cpu) * 100.0,
        seen,
        seen as f64 / args.dashboards.max(1) as f64
    );
    Ok(())
}

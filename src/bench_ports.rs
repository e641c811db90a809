//! `ferric bench ports`: ports and VIFs through `ferric gateway` at fleet scale. Three
//! conductors and one gateway on a fresh key prefix; N fake-hardware nodes enrolled straight
//! into etcd, then two ports per node created through `POST /v1/ports` by concurrent clients;
//! then `GET /v1/ports?address=<mac>` latency (one keep-alive client, random MACs: served from
//! the gateway copy's MAC index), and a VIF attach then detach on M nodes.

use crate::bench_api::{fan_out, Conn};
use crate::procs::Etcd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct PortsArgs {
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 2)]
    pub ports_per_node: usize,
    #[arg(long, default_value_t = 3)]
    pub conductors: usize,
    /// Concurrent API clients (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Samples of `GET /v1/ports?address=`.
    #[arg(long, default_value_t = 2_000)]
    pub lookups: usize,
    /// Nodes that get a VIF attached and detached.
    #[arg(long, default_value_t = 1_000)]
    pub vif_nodes: usize,
}

fn mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn run(dir: &Path, etcd: &Etcd, args: PortsArgs) -> anyhow::Result<()> {
    let crate::bench_api::ApiCluster {
        cluster,
        conductors: _conductors,
        gateway: _gw,
        port,
    } = crate::bench_api::ApiCluster::start(
        dir,
        etcd,
        "/bench-ports/",
        args.conductors,
        5.0,
        args.nodes,
    )
    .await?;
    let ids = crate::bench::enroll(&cluster, args.nodes).await?;
    let ids: Arc<Vec<String>> = Arc::new(ids.iter().map(|i| i.to_string()).collect());
    let n_ports = args.nodes * args.ports_per_node;
    println!(
        "ports: {} conductors, 1 gateway, {} fake-hardware nodes, {n_ports} ports, {} clients",
        args.conductors, args.nodes, args.clients
    );
    let per = args.ports_per_node;
    let node_ids = ids.clone();
    // The gateway must have loaded the nodes before ports can name them.
    let mut probe = Conn::open(port).await?;
    let last = ids.last().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe
        .request("GET", &format!("/v1/nodes/{last}"), None)
        .await?
        .0
        != 200
    {
        if Instant::now() > deadline {
            anyhow::bail!("gateway did not load the nodes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = fan_out(port, args.clients, n_ports, move |i| {
        let node = node_ids[i / per].clone();
        async move {
            // The first port of each node is PXE-enabled, the others not.
            let body = format!(
                r#"{{"node_uuid": "{node}", "address": "{}", "pxe_enabled": {}}}"#,
                mac(i),
                i % per == 0
            );
            ("POST".to_string(), "/v1/ports".to_string(), Some(body), 201)
        }
    })
    .await?;
    println!(
        "create {n_ports} ports (POST /v1/ports): {:.1} s, {:.0}/s",
        took.as_secs_f64(),
        n_ports as f64 / took.as_secs_f64()
    );

    // Lookups by MAC, one client, a pseudo-random spread over all ports.
    let mut conn = Conn::open(port).await?;
    let mut samples = Vec::with_capacity(args.lookups);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..args.lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % n_ports as u64) as usize;
        let path = format!("/v1/ports?address={}", mac(i));
        let t = Instant::now();
        let (status, body) = conn.request("GET", &path, None).await?;
        samples.push(t.elapsed());
        let found = serde_json::from_slice::<serde_json::Value>(&body)?["ports"]
            .as_array()
            .map_or(0, Vec::len);
        if status != 200 || found != 1 {
            anyhow::bail!("GET {path}: {status}, {found} ports");
        }
    }
    samples.sort();
    println!(
        "GET /v1/ports?address=<mac> over {n_ports} ports, {} samples: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.9),
        pct(&samples, 0.99),
        pct(&samples, 1.0)
    );

    let m = args.vif_nodes.min(args.nodes);
    let vif_ids = ids.clone();
    let attach = fan_out(port, args.clients, m, move |i| {
        let node = vif_ids[i].clone();
        async move {
            (
                "POST".to_string(),
                format!("/v1/nodes/{node}/vifs"),
                Some(format!(r#"{{"id": "bench-vif-{i}"}}"#)),
                204,
            )
        }
    })
    .await?;
    let vif_ids = ids.clone();
    let detach = fan_out(port, args.clients, m, move |i| {
        let node = vif_ids[i].clone();
        async move {
            (
                "DELETE".to_string(),
                format!("/v1/nodes/{node}/vifs/bench-vif-{i}"),
                None,
                204,
            )
        }
    })
    .await?;
    println!(
        "VIF attach then detach on {m} nodes, {} clients: attach {:.2} s, detach {:.2} s, total {:.2} s",
        args.clients,
        attach.as_secs_f64(),
        detach.as_secs_f64(),
        (attach + detach).as_secs_f64()
    );
    Ok(())
}

//! `ferric bench agent`: N `ferric sim` machines whose ramdisk agents work with real conductors
//! through a real gateway. Inspection: every node inspected at once; the time until all are
//! `manageable` with their properties set from the inspection data. Deploy: every node
//! deployed at once (automated cleaning off); the time until all are `active`. Conductor CPU
//! for each phase, as seconds and as a share of a core.

use crate::bench_api::{fan_out, provision_all, until_all, ApiCluster};
use crate::procs::{self, Etcd, Proc};
use ferric_model::ProvisionState;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct AgentArgs {
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    conductors: usize,
    /// Concurrent API clients of this load generator.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The simulated agents' heartbeat interval (and start-up time), in ms.
    #[arg(long, default_value_t = 1_000)]
    agent_interval_ms: u64,
}

fn cpu(procs: &[Proc]) -> f64 {
    procs
        .iter()
        .map(|p| crate::bench::cpu_seconds(p.pid()))
        .sum()
}

pub async fn run(dir: &Path, etcd: &Etcd, a: AgentArgs) -> anyhow::Result<()> {
    let ApiCluster {
        cluster,
        conductors,
        gateway: gw,
        port,
    } = ApiCluster::start(dir, etcd, "/bench-agent/", a.conductors, 5.0, a.nodes).await?;
    let (_sim, sim_url) = procs::sim(dir, a.nodes, &[]).await?;
    let n = a.nodes;
    println!(
        "agent: {} conductors, 1 gateway, {n} ferric sim machines with agents (interval {} ms)",
        a.conductors, a.agent_interval_ms
    );

    // Enroll each machine as a redfish node with its PXE NIC as a port.
    let url = sim_url.clone();
    fan_out(port, a.clients, n, move |i| {
        let info = procs::sim_driver_info(&url, i);
        async move {
            let body = format!(
                r#"{{"driver": "redfish", "name": "agent-{i:06}", "inspect_interface": "agent", "automated_clean": false, "driver_info": {info}}}"#
            );
            ("POST".to_string(), "/v1/nodes".to_string(), Some(body), 201)
        }
    })
    .await?;
    fan_out(port, a.clients, n, |i| async move {
        let [_, x, y, z] = (i as u32).to_be_bytes();
        let body = format!(
            r#"{{"node_ident": "agent-{i:06}", "address": "52:54:00:{x:02x}:{y:02x}:{z:02x}", "pxe_enabled": true}}"#
        );
        ("POST".to_string(), "/v1/ports".to_string(), Some(body), 201)
    })
    .await?;
    let (views, _) = cluster.list_nodes().await?;
    anyhow::ensure!(
        views.len() == n,
        "etcd holds {} nodes, not {n}",
        views.len()
    );
    let mut by_name: Vec<(String, String)> = views
        .iter()
        .map(|v| {
            let name = v
                .spec
                .name
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default();
            (name, v.spec.id.to_string())
        })
        .collect();
    by_name.sort();
    let ids: Arc<Vec<String>> = Arc::new(by_name.iter().map(|(_, id)| id.clone()).collect());
    // The agents: system i is node agent-i.
    let agents = ferric_sim::FleetAgentSpec {
        api_url: format!("http://127.0.0.1:{port}"),
        interval_ms: a.agent_interval_ms,
        token: None,
        stop_after: None,
        fail_after: None,
        nodes: ids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("sim-{i}"), id.clone()))
            .collect(),
    };
    ferric_sim::put_agents(&sim_url, &agents).await?;

    provision_all(port, a.clients, &ids, "manage").await?;
    until_all(
        &cluster,
        ProvisionState::Manageable,
        n,
        Duration::from_secs(600),
        |_| true,
    )
    .await?;

    // Inspection.
    let (cpu0, t0) = (cpu(&conductors), Instant::now());
    provision_all(port, a.clients, &ids, "inspect").await?;
    let done = until_all(
        &cluster,
        ProvisionState::Manageable,
        n,
        Duration::from_secs(1800),
        |v| v.spec.properties.contains("\"cpus\""),
    )
    .await?;
    let (secs, cpu_s) = (
        done.duration_since(t0).as_secs_f64(),
        cpu(&conductors) - cpu0,
    );
    println!(
        "inspect: {n} nodes to manageable with properties in {secs:.2} s ({:.0} nodes/s); conductor CPU {cpu_s:.1} s = {:.0} % of a core over the phase (agent start-up {} ms included)",
        n as f64 / secs,
        100.0 * cpu_s / secs,
        a.agent_interval_ms
    );

    // Deploy (provide skips cleaning: automated_clean is off).
    provision_all(port, a.clients, &ids, "provide").await?;
    until_all(
        &cluster,
        ProvisionState::Available,
        n,
        Duration::from_secs(600),
        |_| true,
    )
    .await?;
    let image = ids.clone();
    fan_out(port, a.clients, n, move |i| {
        let id = image[i].clone();
        async move {
            (
                "PATCH".to_string(),
                format!("/v1/nodes/{id}"),
                Some(
                    r#"[{"op": "add", "path": "/instance_info/image_source", "value": "http://images.invalid/x.qcow2"}]"#
                        .to_string(),
                ),
                200,
            )
        }
    })
    .await?;
    let (cpu0, t0) = (cpu(&conductors), Instant::now());
    provision_all(port, a.clients, &ids, "active").await?;
    let done = until_all(
        &cluster,
        ProvisionState::Active,
        n,
        Duration::from_secs(1800),
        |_| true,
    )
    .await?;
    let (secs, cpu_s) = (
        done.duration_since(t0).as_secs_f64(),
        cpu(&conductors) - cpu0,
    );
    println!(
        "deploy: {n} nodes to active in {secs:.2} s ({:.0} nodes/s); conductor CPU {cpu_s:.1} s = {:.0} % of a core over the phase",
        n as f64 / secs,
        100.0 * cpu_s / secs
    );
    drop(gw);
    drop(conductors);
    Ok(())
}

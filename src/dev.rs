//! `ferric dev`: a whole local cluster in one command: a throwaway etcd, N conductors as
//! separate processes, and enrolled nodes. Ctrl-C stops everything and removes the temp dir.

use crate::procs::{self, Etcd};
use ferric_model::{now_ms, NodeId, NodeName, NodeSpec};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The node of each simulated system, in system order (`sim-0`, `sim-1`, ...).
fn cluster_ids(agents: &ferric_sim::FleetAgentSpec) -> Vec<Option<String>> {
    let n = agents.nodes.len();
    (0..n)
        .map(|i| agents.nodes.get(&format!("sim-{i}")).cloned())
        .collect()
}

#[derive(clap::Args)]
pub struct Args {
    /// Number of conductor processes.
    #[arg(long, default_value_t = 3)]
    conductors: usize,
    /// Number of fake nodes to enroll.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Lease TTL of the conductors, in seconds.
    #[arg(long, default_value_t = 5.0)]
    lease_ttl: f64,
    /// Keep the cluster's files (etcd data, logs) in this directory instead of a temp dir.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Also run a stand-in compute service (Nova's `os-server-external-events`) and a webhook
    /// receiver in this process, give their URLs to the conductors, and print every power event
    /// they receive.
    #[arg(long)]
    compute: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("ferric-dev-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let etcd = Etcd::start(&dir).await?;
    // A simulated fleet of Redfish BMCs, so that power requests make real BMC traffic.
    let (sim, sim_url) = procs::sim(&dir, args.nodes.max(1), &[]).await?;
    let prefix = "/ferric/";
    let receiver = match args.compute {
        true => Some(crate::dev_compute::start().await?),
        false => None,
    };
    let notify: Vec<String> = match &receiver {
        Some(r) => vec![
            "--compute-url".into(),
            r.compute_url.clone(),
            "--compute-token".into(),
            "dev".into(),
            "--notify-url".into(),
            r.webhook_url.clone(),
        ],
        None => Vec::new(),
    };
    let mut conductors = Vec::new();
    for i in 1..=args.conductors {
        conductors.push(procs::conductor(
            &dir,
            &etcd.url,
            prefix,
            &format!("dev-c{i}"),
            args.lease_ttl,
            &notify,
        )?);
    }
    let api_port = procs::free_port()?;
    let gateway = procs::gateway(
        &dir,
        &etcd.url,
        prefix,
        "dev-gateway",
        &format!("127.0.0.1:{api_port}"),
        &[],
    )?;
    let api = format!("http://127.0.0.1:{api_port}");
    let mut cfg = ferric_cluster::EtcdConfig::new(&etcd.url);
    cfg.prefix = prefix.into();
    let cluster = ferric_cluster::Cluster::connect(&cfg).await?;
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..args.nodes)
        .map(|i| {
            let mut s = NodeSpec::new(NodeId::new_random(), "redfish", now);
            s.name = NodeName::parse(&format!("node-{i:05}")).ok();
            s.driver_info = procs::sim_driver_info(&sim_url, i);
            // The simulated machine's serial port is the node's console.
            s.interfaces
                .insert("console_interface".into(), "ferric-sim".into());
            s
        })
        .collect();
    let created = cluster.create_nodes(specs).await?;
    // Each enrolled node's simulated machine runs a deploy agent that heartbeats to the gateway
    // while it runs a PXE boot, so `direct` deploys work.
    let agents = ferric_sim::FleetAgentSpec {
        api_url: api.clone(),
        interval_ms: ferric_sim::DEFAULT_INTERVAL_MS,
        token: None,
        stop_after: None,
        fail_after: None,
        nodes: created
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((format!("sim-{i}"), r.as_ref().ok()?.to_string())))
            .collect(),
    };
    let created = agents.nodes.len();
    ferric_sim::put_agents(&sim_url, &agents).await?;
    // Each node's PXE NIC is its port, as operators enroll machines (Bifrost, Metal3): the
    // ramdisk's lookup and inspection data find the node by it.
    let uuids: Vec<Option<String>> = cluster_ids(&agents);
    crate::bench_api::fan_out(api_port, 8, uuids.len(), move |i| {
        let uuid = uuids[i].clone().unwrap_or_default();
        async move {
            let [_, x, y, z] = (i as u32).to_be_bytes();
            let body = format!(
                r#"{{"node_uuid": "{uuid}", "address": "52:54:00:{x:02x}:{y:02x}:{z:02x}", "pxe_enabled": true}}"#
            );
            ("POST".to_string(), "/v1/ports".to_string(), Some(body), 201)
        }
    })
    .await?;

    let exe = std::env::current_exe()?;
    let exe = exe.display();
    println!("Dashboard: {api}/dashboard/");
    println!("ferric dev: a local cluster is running");
    println!(
        "  etcd        {}  (data and logs in {})",
        etcd.url,
        dir.display()
    );
    for c in &conductors {
        println!(
            "  conductor   {:<10} pid {}  log {}",
            c.name,
            c.pid(),
            c.log.display()
        );
    }
    println!(
        "  gateway     {api}  (Ironic API, no auth)  pid {}  log {}",
        gateway.pid(),
        gateway.log.display()
    );
    println!(
        "  sim         {sim_url}/redfish/v1/Systems  ({} simulated BMCs; every command logged in {})  pid {}",
        args.nodes.max(1),
        dir.join("sim-commands.jsonl").display(),
        sim.pid()
    );
    println!("  nodes       {created} redfish nodes enrolled (node-00000 ... -> sim-0 ...)");
    if let Some(r) = &receiver {
        println!(
            "  compute     {} and webhook {}: every power event they receive is printed here (Nova hears only of nodes with an instance_uuid)",
            r.compute_url, r.webhook_url
        );
    }
    println!(
        "  agents      a PXE boot of a node's machine runs an agent: it posts its inspection data, looks its node up by its port's MAC, heartbeats every {} ms and serves IPA's command API at {sim_url}/agent/<system>",
        ferric_sim::DEFAULT_INTERVAL_MS
    );
    println!();
    println!("Try it:");
    println!("  {exe} ctl --etcd {} conductor list", etcd.url);
    println!("  {exe} ctl --etcd {} node list", etcd.url);
    println!("  {exe} ctl --etcd {} node power node-00000 on", etcd.url);
    println!(
        "  {exe} ctl --etcd {} node power node-00000 soft-off",
        etcd.url
    );
    println!("  {exe} ctl --etcd {} node history node-00000", etcd.url);
    println!("  curl -s {sim_url}/sim/log   # what the BMCs received, and from which conductor");
    println!(
        "  {exe} ctl --etcd {} node provision node-00000 manage",
        etcd.url
    );
    println!(
        "  {exe} ctl --etcd {} node provision node-00000 provide   # cleaning through the simulated agent",
        etcd.url
    );
    println!(
        "  OS_ENDPOINT={api} OS_AUTH_TYPE=none baremetal node inspect node-00000 --wait 60   # from manageable"
    );
    println!(
        "  OS_ENDPOINT={api} OS_AUTH_TYPE=none baremetal node deploy node-00000 --wait 60   # from available, after: baremetal node set node-00000 --instance-info image_source=http://images/os.qcow2"
    );
    println!(
        "  {exe} ctl --etcd {} node console node-00000 on   # then a websocket client on {api}/v1/nodes/node-00000/console/ws",
        etcd.url
    );
    println!("  OS_ENDPOINT={api} OS_AUTH_TYPE=none baremetal node list");
    println!(
        "  kill -9 {}   # then watch its nodes move: conductor list",
        conductors.first().map_or(0, |c| c.pid())
    );
    println!("Ctrl-C stops everything.");

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("stopping conductors ...");
    for c in &conductors {
        c.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for mut c in conductors {
        c.stop(Duration::from_secs(10));
    }
    drop(gateway);
    drop(sim);
    drop(etcd);
    println!("stopped.");
    Ok(())
}

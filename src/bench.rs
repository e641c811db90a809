//! `ferric bench`: measurements against a real etcd and real conductor processes (this binary).
//! Times come from the cluster's record in etcd: reservations, and the number of running node
//! actors each conductor publishes in its membership record.

use crate::procs::{self, Etcd, Proc};
use ferric_cluster::{Cluster, EtcdConfig};
use ferric_model::{now_ms, ConductorRecord, NodeId, NodeSpec};
use futures::{FutureExt, StreamExt};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Keep etcd data and conductor logs in this directory (default: a temp dir, removed).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// SIGKILL one of N conductors and time until all its nodes run on the survivors.
    Failover {
        #[arg(long, default_value_t = 30_000)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        conductors: usize,
        #[arg(long, default_value_t = 2.0)]
        lease_ttl: f64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The Ironic API through `ferric gateway`: enroll, list, manage and provide. With
    /// `--target URL`: the same client against any Ironic-compatible endpoint.
    Api(crate::bench_api::ApiArgs),
    /// The suite of `api --target` against a given Ironic (`--ironic URL`), then against a
    /// Ferric cluster it starts; the ratios as JSON, a table and an SVG chart.
    Compare(crate::bench_compare::CompareArgs),
    /// The dashboard: first meaningful paint of the overview at N nodes (Chromium), and the
    /// gateway's CPU while 50 dashboards follow 5,000 power changes.
    Dashboard(crate::bench_dashboard::DashboardArgs),
    /// Ports and VIFs through the gateway: port creates, lookups by MAC, VIF attach/detach.
    Ports(crate::bench_ports::PortsArgs),
    /// `ferric sim` agents with real conductors: N nodes inspected at once, then deployed at
    /// once; time to all done and conductor CPU.
    Agent(crate::bench_agent::AgentArgs),
    /// Power on N `ferric sim` nodes with 3 conductors; time, conductor CPU, BMC commands/s.
    Power {
        #[arg(long, default_value_t = 5_000)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        conductors: usize,
        /// Per-BMC minimum gaps to compare, in ms.
        #[arg(long, value_delimiter = ',', default_value = "0,500")]
        gaps_ms: Vec<u64>,
    },
    /// Power sync over N `ferric sim` nodes and 3 conductors: sweeps back to back (how long a
    /// whole sweep takes), then at the given interval (conductor CPU as a share of a core).
    Sync {
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        conductors: usize,
        /// Reads in flight per conductor.
        #[arg(long, default_value_t = 64)]
        workers: usize,
        /// Sweeps timed back to back (0: skip that phase).
        #[arg(long, default_value_t = 3)]
        sweeps: u64,
        /// The interval whose CPU cost is measured, in seconds (0: sweeps off, the baseline).
        #[arg(long, default_value_t = 60.0)]
        interval: f64,
        /// How long the CPU is measured at that interval, in seconds.
        #[arg(long, default_value_t = 120.0)]
        measure: f64,
    },
    /// Power events to a Nova stand-in and a webhook in this process: latency from the status
    /// write to receipt, and the drain rate of a backlog.
    Notify(crate::bench_notify::NotifyArgs),
    /// An existing fleet of M nodes and N conductors started on it: cold start, RSS per node,
    /// etcd's size, failover of one conductor, and a power sync sweep.
    Cold(crate::bench_cold::ColdArgs),
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("ferric-bench-").tempdir()?;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    // Against an endpoint given: no etcd of its own (compare starts one for Ferric's turn).
    let cmd = match args.cmd {
        Cmd::Api(a) if a.target.target.is_some() => {
            let opts = a.target.options(a.nodes, a.clients, a.list_samples);
            return crate::bench_target::run(&a.target, opts).await;
        }
        Cmd::Compare(a) => return crate::bench_compare::run(&dir, a).await,
        cmd => cmd,
    };
    let etcd = match &cmd {
        Cmd::Cold(_) => Etcd::start_with(&dir, &crate::bench_cold::ETCD_TUNED).await?,
        _ => Etcd::start(&dir).await?,
    };
    println!("machine: {}", machine());
    match cmd {
        Cmd::Compare(_) => unreachable!("run above"),
        Cmd::Failover {
            nodes,
            conductors,
            lease_ttl,
            runs,
        } => failover(&dir, &etcd, nodes, conductors, lease_ttl, runs).await,
        Cmd::Api(a) => crate::bench_api::run(&dir, &etcd, a).await,
        Cmd::Dashboard(a) => crate::bench_dashboard::run(&dir, &etcd, a).await,
        Cmd::Notify(a) => crate::bench_notify::run(&dir, &etcd, a).await,
        Cmd::Ports(a) => crate::bench_ports::run(&dir, &etcd, a).await,
        Cmd::Agent(a) => crate::bench_agent::run(&dir, &etcd, a).await,
        Cmd::Power {
            nodes,
            conductors,
            gaps_ms,
        } => {
            for gap in gaps_ms {
                let sub = dir.join(format!("gap-{gap}"));
                std::fs::create_dir_all(&sub)?;
                power(&sub, &etcd, nodes, conductors, gap).await?;
            }
            Ok(())
        }
        Cmd::Cold(a) => crate::bench_cold::run(&dir, &etcd, &a).await,
        Cmd::Sync {
            nodes,
            conductors,
            workers,
            sweeps,
            interval,
            measure,
        } => {
            let opts = SyncBench {
                nodes,
                conductors,
                workers,
                sweeps,
                interval,
                measure,
            };
            sync(&dir, &etcd, &opts).await
        }
    }
}

pub(crate) async fn connect(etcd: &Etcd, prefix: &str) -> anyhow::Result<Cluster> {
    let mut cfg = EtcdConfig::new(&etcd.url);
    cfg.prefix = prefix.into();
    cfg.timeout = Duration::from_secs(30);
    Ok(Cluster::connect(&cfg).await?)
}

pub(crate) async fn enroll(cluster: &Cluster, n: usize) -> anyhow::Result<Vec<NodeId>> {
    let t = Instant::now();
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..n)
        .map(|_| NodeSpec::new(NodeId::new_random(), "fake-hardware", now))
        .collect();
    let ids: Vec<NodeId> = specs.iter().map(|s| s.id).collect();
    for chunk in specs.chunks(4096) {
        for r in cluster.create_nodes(chunk.to_vec()).await? {
            r?;
        }
    }
    println!("enrolled {n} nodes in {:.2} s", t.elapsed().as_secs_f64());
    Ok(ids)
}

/// Waits until the live conductors (but `not_by`) report `total` node actors running between
/// them. A conductor counts an actor only after reserving its node and starting it, so the sum
/// reaching the number of nodes means every node is owned once and its actor runs.
pub(crate) async fn until_running(
    cluster: &Cluster,
    total: usize,
    not_by: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    // Watched, not polled: a read every 10 ms was about 80 requests a second to an etcd that a
    // failover already saturates, and the measuring must not slow down what it measures.
    let deadline = tokio::time::Instant::now() + timeout;
    let (rev, mut conductors) = cluster.list_conductors().await?;
    let mut watch = cluster
        .watch_prefix(&cluster.keys().conductors(), rev + 1)
        .await?;
    loop {
        let running: u64 = conductors
            .values()
            .filter(|c| Some(c.name.as_str()) != not_by)
            .map(|c| c.running)
            .sum();
        let gone = not_by.is_none_or(|n| !conductors.contains_key(n));
        if gone && running as usize == total {
            return Ok(Instant::now());
        }
        let events = match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(events) => events.map_err(|e| anyhow::anyhow!("conductor watch lost: {e}"))?,
            Err(_) => {
                anyhow::bail!("only {running} of {total} node actors running after {timeout:?}")
            }
        };
        for ev in events {
            match ev {
                ferric_cluster::WatchEvent::Put { value, .. } => {
                    if let Ok(c) = ferric_model::decode::<ConductorRecord>(&value) {
                        conductors.insert(c.name.clone(), c);
                    }
                }
                ferric_cluster::WatchEvent::Delete { key, .. } => {
                    if let Some(name) = cluster.keys().leaf_of(&key) {
                        conductors.remove(name);
                    }
                }
            }
        }
    }
}

async fn failover(
    dir: &Path,
    etcd: &Etcd,
    nodes: usize,
    n_conductors: usize,
    ttl: f64,
    runs: usize,
) -> anyhow::Result<()> {
    let prefix = "/bench-failover/";
    let cluster = connect(etcd, prefix).await?;
    enroll(&cluster, nodes).await?;
    let names: Vec<String> = (1..=n_conductors).map(|i| format!("bench-c{i}")).collect();
    let mut procs: Vec<Option<Proc>> = names
        .iter()
        .map(|n| procs::conductor(dir, &etcd.url, prefix, n, ttl, &[]).map(Some))
        .collect::<anyhow::Result<_>>()?;
    until_running(&cluster, nodes, None, Duration::from_secs(120)).await?;
    println!("{n_conductors} conductors own {nodes} nodes; TTL {ttl} s");
    let mut times = Vec::new();
    for run in 0..runs {
        let victim = run % n_conductors;
        until_running(&cluster, nodes, None, Duration::from_secs(120)).await?;
        let count = cluster
            .reservation_counts()
            .await?
            .get(&names[victim])
            .copied()
            .unwrap_or(0);
        let mut p = procs[victim].take().expect("running");
        p.signal(Signal::SIGKILL);
        let t0 = Instant::now();
        let _ = p.wait_for_exit(Duration::from_secs(5));
        let done = until_running(
            &cluster,
            nodes,
            Some(&names[victim]),
            Duration::from_secs(120),
        )
        .await?;
        let secs = done.duration_since(t0).as_secs_f64();
        println!(
            "run {}: SIGKILL {} ({count} nodes) -> all re-owned with actors running in {secs:.3} s",
            run + 1,
            names[victim]
        );
        times.push(secs);
        drop(p);
        procs[victim] = Some(procs::conductor(
            dir,
            &etcd.url,
            prefix,
            &names[victim],
            ttl,
            &[],
        )?);
        // Let it take its share back before the next run.
        wait_share(&cluster, &names[victim], nodes / n_conductors / 2).await?;
        until_running(&cluster, nodes, None, Duration::from_secs(120)).await?;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "failover: {nodes} nodes, {n_conductors} conductors, TTL {ttl} s: p50 {p50:.3} s, max {max:.3} s over {runs} runs (target <= TTL + 1 s = {:.1} s)",
        ttl + 1.0
    );
    Ok(())
}

async fn wait_share(cluster: &Cluster, name: &str, at_least: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = cluster.reservation_counts().await?;
        if counts.get(name).copied().unwrap_or(0) >= at_least {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} did not get its share back");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The machine a figure was measured on: cores, memory and the CPU's model.
pub(crate) fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} cores ({model}), {}", num_cpus(), mem_total())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .map_or_else(|| "unknown memory".into(), |m| format!("{m} memory"))
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

async fn power(
    dir: &Path,
    etcd: &Etcd,
    nodes: usize,
    n_conductors: usize,
    gap_ms: u64,
) -> anyhow::Result<()> {
    let prefix = format!("/bench-power-{gap_ms}/");
    let cluster = connect(etcd, &prefix).await?;
    let (sim, sim_url) = procs::sim(dir, nodes, &[]).await?;
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..nodes)
        .map(|i| {
            let mut s = NodeSpec::new(NodeId::new_random(), "redfish", now);
            s.driver_info = procs::sim_driver_info(&sim_url, i);
            s
        })
        .collect();
    let ids: Vec<NodeId> = specs.iter().map(|s| s.id).collect();
    for chunk in specs.chunks(4096) {
        for r in cluster.create_nodes(chunk.to_vec()).await? {
            r?;
        }
    }
    let extra = vec!["--bmc-min-gap-ms".to_string(), gap_ms.to_string()];
    let procs: Vec<Proc> = (1..=n_conductors)
        .map(|i| procs::conductor(dir, &etcd.url, &prefix, &format!("bench-c{i}"), 5.0, &extra))
        .collect::<anyhow::Result<_>>()?;
    until_running(&cluster, nodes, None, Duration::from_secs(120)).await?;
    let cpu0: Vec<f64> = procs.iter().map(|p| cpu_seconds(p.pid())).collect();
    let from = cluster.revision().await? + 1;
    let mut watch = cluster
        .watch_prefix(&cluster.keys().statuses(), from)
        .await?;
    let t0 = Instant::now();
    // Requests go in through the same bulk cluster function `ctl node power all on` uses.
    let requests = futures::stream::iter(ids.chunks(600).map(|c| c.to_vec()).collect::<Vec<_>>())
        .map(|chunk| {
            let c = cluster.clone();
            async move {
                c.request_power_many(&chunk, ferric_model::PowerTarget::On, None, "bench")
                    .await
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .map(|r| (r, Instant::now()));
    let counting = async {
        let mut on: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        while on.len() < nodes {
            for ev in watch.next().await? {
                if let ferric_cluster::WatchEvent::Put { key, value, .. } = ev {
                    let Some(id) = cluster.keys().node_id_of(&key) else {
                        continue;
                    };
                    if let Ok(st) = ferric_model::decode::<ferric_model::NodeStatus>(&value) {
                        if st.power_seq_done >= 1
                            && st.power_state == Some(ferric_model::PowerState::On)
                        {
                            on.insert(id);
                        }
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(Instant::now())
    };
    let ((results, accepted_at), done) = tokio::join!(
        requests,
        tokio::time::timeout(Duration::from_secs(300), counting)
    );
    let accepted = accepted_at.duration_since(t0);
    for r in results {
        for one in r? {
            one?;
        }
    }
    let done = done.map_err(|_| anyhow::anyhow!("not all nodes powered on within 300 s"))??;
    let secs = done.duration_since(t0).as_secs_f64();
    let cpu: f64 = procs
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| cpu_seconds(p.pid()) - c0)
        .sum();
    // BMC commands per conductor from the simulator's own log.
    let log = std::fs::read_to_string(dir.join("sim-commands.jsonl")).unwrap_or_default();
    let mut per: HashMap<String, (usize, u64, u64)> = HashMap::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let client = v["client"].as_str().unwrap_or("?").to_string();
        let t = v["unix_ms"].as_u64().unwrap_or(0);
        let e = per.entry(client).or_insert((0, u64::MAX, 0));
        e.0 += 1;
        e.1 = e.1.min(t);
        e.2 = e.2.max(t);
    }
    println!(
        "power on {nodes} sim nodes, {n_conductors} conductors, per-BMC gap {gap_ms} ms: all on after {secs:.2} s (requests accepted in {:.2} s); conductor CPU {cpu:.2} s in total",
        accepted.as_secs_f64()
    );
    let mut names: Vec<_> = per.keys().cloned().collect();
    names.sort();
    for name in names {
        let (n, first, last) = per[&name];
        let span = (last.saturating_sub(first)).max(1) as f64 / 1000.0;
        println!(
            "  {name}: {n} BMC commands, {:.0} commands/s over {span:.2} s",
            n as f64 / span
        );
    }
    drop(procs);
    drop(sim);
    Ok(())
}

struct SyncBench {
    nodes: usize,
    conductors: usize,
    workers: usize,
    sweeps: u64,
    interval: f64,
    measure: f64,
}

/// Enrolls `nodes` redfish nodes on the simulator, starts conductors with `sync_args`, and
/// manages every node (enrolled nodes are not synced) once all actors run.
async fn sync_fleet(
    dir: &Path,
    etcd: &Etcd,
    prefix: &str,
    o: &SyncBench,
    sim_url: &str,
    sync_args: &[String],
) -> anyhow::Result<(Cluster, Vec<Proc>)> {
    let cluster = connect(etcd, prefix).await?;
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..o.nodes)
        .map(|i| {
            let mut s = NodeSpec::new(NodeId::new_random(), "redfish", now);
            s.driver_info = procs::sim_driver_info(sim_url, i);
            s
        })
        .collect();
    let ids: Vec<NodeId> = specs.iter().map(|s| s.id).collect();
    for chunk in specs.chunks(4096) {
        for r in cluster.create_nodes(chunk.to_vec()).await? {
            r?;
        }
    }
    let mut extra = vec!["--bmc-min-gap-ms".to_string(), "0".to_string()];
    extra.extend_from_slice(sync_args);
    let procs: Vec<Proc> = (1..=o.conductors)
        .map(|i| procs::conductor(dir, &etcd.url, prefix, &format!("bench-c{i}"), 5.0, &extra))
        .collect::<anyhow::Result<_>>()?;
    until_running(&cluster, o.nodes, None, Duration::from_secs(300)).await?;
    let t = Instant::now();
    for chunk in ids.chunks(600) {
        for r in cluster
            .update_specs(chunk, |_, spec| {
                spec.provision_request = Some(ferric_model::ProvisionRequest {
                    seq: spec.next_provision_seq(),
                    verb: ferric_model::Verb::Manage,
                    maintenance_ok: false,
                    args: String::new(),
                    requested_by: "bench".into(),
                    requested_at_ms: now_ms(),
                });
                Ok(())
            })
            .await?
        {
            r?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (views, _) = cluster.list_nodes().await?;
        let managed = views
            .iter()
            .filter(|v| v.status.provision_state == ferric_model::ProvisionState::Manageable)
            .count();
        if managed == o.nodes {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {managed} of {} nodes managed after 600 s", o.nodes);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "{} redfish sim nodes enrolled, owned by {} conductors and managed ({:.1} s)",
        o.nodes,
        o.conductors,
        t.elapsed().as_secs_f64()
    );
    Ok((cluster, procs))
}

/// The conductors' power sync reports (from their membership records).
async fn sync_reports(
    cluster: &Cluster,
) -> anyhow::Result<Vec<(String, ferric_model::SyncReport)>> {
    let (_, conductors) = cluster.list_conductors().await?;
    let mut out: Vec<_> = conductors.into_iter().map(|(n, c)| (n, c.sync)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Sweeps back to back until each conductor finished `o.sweeps` more; prints the last ones.
async fn back_to_back_sweeps(
    dir: &Path,
    etcd: &Etcd,
    o: &SyncBench,
    sim_url: &str,
    back_to_back: &[String],
) -> anyhow::Result<()> {
    let (cluster, procs) =
        sync_fleet(dir, etcd, "/bench-sync-b2b/", o, sim_url, back_to_back).await?;
    let start = sync_reports(&cluster).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let now = sync_reports(&cluster).await?;
        let done = now
            .iter()
            .zip(&start)
            .all(|((_, n), (_, s))| n.sweeps >= s.sweeps + o.sweeps);
        if done {
            for (name, r) in &now {
                println!(
                    "  {name}: last sweep {} nodes in {:.2} s ({:.0} reads/s), {} reads, {} failed",
                    r.last_sweep_nodes,
                    r.last_sweep_ms as f64 / 1000.0,
                    r.last_sweep_nodes as f64 / (r.last_sweep_ms.max(1) as f64 / 1000.0),
                    r.reads,
                    r.failed_reads
                );
            }
            let worst = now.iter().map(|(_, r)| r.last_sweep_ms).max().unwrap_or(0);
            println!(
                "sync back to back: {} nodes over {} conductors, a whole sweep in {:.2} s (the slowest conductor's last sweep; target <= 10 s)",
                o.nodes,
                o.conductors,
                worst as f64 / 1000.0
            );
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("{} sweeps did not finish within 1800 s", o.sweeps);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(procs);
    Ok(())
}

async fn sync(dir: &Path, etcd: &Etcd, o: &SyncBench) -> anyhow::Result<()> {
    let (sim, sim_url) = procs::sim(dir, o.nodes, &[]).await?;
    // Back to back: an interval of 1 ms, so each sweep starts as soon as the last one ended.
    let back_to_back = [
        "--sync-interval".to_string(),
        "0.001".to_string(),
        "--sync-workers".to_string(),
        o.workers.to_string(),
    ];
    if o.sweeps > 0 {
        back_to_back_sweeps(dir, etcd, o, &sim_url, &back_to_back).await?;
    }
    // At the interval: CPU of each conductor over `measure` seconds, after one whole interval
    // so that start-up and managing are not counted.
    let at_interval = [
        "--sync-interval".to_string(),
        o.interval.to_string(),
        "--sync-workers".to_string(),
        o.workers.to_string(),
    ];
    let (cluster, procs) = sync_fleet(
        dir,
        etcd,
        "/bench-sync-interval/",
        o,
        &sim_url,
        &at_interval,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs_f64(o.interval)).await;
    let before = sync_reports(&cluster).await?;
    let cpu0: Vec<f64> = procs.iter().map(|p| cpu_seconds(p.pid())).collect();
    tokio::time::sleep(Duration::from_secs_f64(o.measure)).await;
    let after = sync_reports(&cluster).await?;
    for (i, p) in procs.iter().enumerate() {
        let cpu = cpu_seconds(p.pid()) - cpu0[i];
        let reads = after
            .get(i)
            .zip(before.get(i))
            .map_or(0, |((_, a), (_, b))| a.reads - b.reads);
        println!(
            "  bench-c{}: {:.1} % of a core at a {} s interval ({cpu:.2} s CPU in {} s, {reads} reads)",
            i + 1,
            100.0 * cpu / o.measure,
            o.interval,
            o.measure
        );
    }
    drop(procs);
    drop(sim);
    Ok(())
}

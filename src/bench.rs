//! `ferric bench`: measurements against a real etcd and real conductor processes (this binary).
//! Times come from the cluster's record in etcd: reservations, and the number of running node
//! actors each conductor publishes in its membership record.

use crate::procs::{self, Etcd, Proc};
use ferric_cluster::{Cluster, EtcdConfig};
use ferric_model::{now_ms, NodeId, NodeSpec};
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
    /// Start N conductors on M enrolled nodes and time until all are owned; report RSS.
    Cold {
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        conductors: usize,
        #[arg(long, default_value_t = 5.0)]
        lease_ttl: f64,
    },
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
    let etcd = Etcd::start(&dir).await?;
    println!("machine: {} cores, {}", num_cpus(), mem_total());
    match args.cmd {
        Cmd::Failover {
            nodes,
            conductors,
            lease_ttl,
            runs,
        } => failover(&dir, &etcd, nodes, conductors, lease_ttl, runs).await,
        Cmd::Cold {
            nodes,
            conductors,
            lease_ttl,
        } => cold(&dir, &etcd, nodes, conductors, lease_ttl).await,
    }
}

async fn connect(etcd: &Etcd, prefix: &str) -> anyhow::Result<Cluster> {
    let mut cfg = EtcdConfig::new(&etcd.url);
    cfg.prefix = prefix.into();
    cfg.timeout = Duration::from_secs(30);
    Ok(Cluster::connect(&cfg).await?)
}

async fn enroll(cluster: &Cluster, n: usize) -> anyhow::Result<Vec<NodeId>> {
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
async fn until_running(
    cluster: &Cluster,
    total: usize,
    not_by: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, conductors) = cluster.list_conductors().await?;
        let running: u64 = conductors
            .values()
            .filter(|c| Some(c.name.as_str()) != not_by)
            .map(|c| c.running)
            .sum();
        let gone = not_by.is_none_or(|n| !conductors.contains_key(n));
        if gone && running as usize == total {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {running} of {total} node actors running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Who holds each node's reservation.
async fn holders(cluster: &Cluster) -> anyhow::Result<HashMap<NodeId, String>> {
    let (_, res) = cluster.list_reservations().await?;
    Ok(res.into_iter().map(|(id, h, _)| (id, h)).collect())
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
        let count = holders(&cluster)
            .await?
            .values()
            .filter(|h| **h == names[victim])
            .count();
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

async fn cold(
    dir: &Path,
    etcd: &Etcd,
    nodes: usize,
    n_conductors: usize,
    ttl: f64,
) -> anyhow::Result<()> {
    // An idle conductor on an empty prefix gives the baseline RSS.
    let idle = procs::conductor(dir, &etcd.url, "/bench-idle/", "bench-idle", ttl, &[])?;
    let prefix = "/bench-cold/";
    let cluster = connect(etcd, prefix).await?;
    enroll(&cluster, nodes).await?;
    let t0 = Instant::now();
    let procs: Vec<Proc> = (1..=n_conductors)
        .map(|i| procs::conductor(dir, &etcd.url, prefix, &format!("bench-c{i}"), ttl, &[]))
        .collect::<anyhow::Result<_>>()?;
    let done = until_running(&cluster, nodes, None, Duration::from_secs(300)).await?;
    println!(
        "cold start: {n_conductors} conductors own {nodes} nodes with actors running after {:.2} s (target <= 10 s for 100k)",
        done.duration_since(t0).as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = idle.rss_bytes().unwrap_or(0);
    let counts = cluster.reservation_counts().await?;
    for p in &procs {
        let rss = p.rss_bytes().unwrap_or(0);
        let owned = counts.get(&p.name).copied().unwrap_or(0).max(1);
        println!(
            "{}: owns {owned} nodes, RSS {:.1} MiB: {:.2} KiB per node ({:.2} KiB per node above an idle conductor's {:.1} MiB)",
            p.name,
            rss as f64 / 1048576.0,
            rss as f64 / 1024.0 / owned as f64,
            rss.saturating_sub(baseline) as f64 / 1024.0 / owned as f64,
            baseline as f64 / 1048576.0
        );
    }
    Ok(())
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

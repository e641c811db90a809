//! `ferric bench cold`: a fleet that already exists (every node `available` and powered off,
//! as after years in service) and a cluster of conductors started on it from nothing. It
//! reports what issue 17 asks of the million-node run:
//!
//! - cold start: from the conductors' start until every node is owned once with its actor
//!   running (the sum of the conductors' published counts, as `until_running` reads it);
//! - memory: each conductor's RSS per node it owns (and the actors its `/metrics` counts), and
//!   etcd's RSS and database size;
//! - failover: SIGKILL of one conductor, until its nodes run on the others, over `--failovers`
//!   kills (the victim restarts and takes its share back between kills);
//! - power sync: the conductors sweep at `--sync-interval` all along (Ironic's 60 s by default);
//!   from the end of the failovers until each has finished a whole sweep more, the slowest
//!   conductor's last sweep, the reads, and the conductors' CPU.
//!
//! It reads only the conductors' membership records while timing (ten records, not a million
//! reservations), so that the measuring does not load etcd.

use crate::bench::{connect, cpu_seconds, until_running};
use crate::procs::{self, Etcd, Proc};
use ferric_cluster::Cluster;
use ferric_model::{
    encode, now_ms, NodeId, NodeSpec, NodeStatus, PowerState, ProvisionState, SyncReport,
};
use futures::StreamExt;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// etcd's flags for a large fleet, within what its docs allow (bench/MILLION.md): raft entries
/// kept in memory capped at 10,000 (3.6's default) instead of 100,000, and the freelist as a
/// map (3.5's default), which stays fast on a large database.
pub const ETCD_TUNED: [&str; 4] = [
    "--snapshot-count",
    "10000",
    "--experimental-backend-bbolt-freelist-type",
    "map",
];

#[derive(clap::Args, Debug, Clone)]
pub struct ColdArgs {
    #[arg(long, default_value_t = 100_000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 3)]
    pub conductors: usize,
    #[arg(long, default_value_t = 5.0)]
    pub lease_ttl: f64,
    /// Conductors SIGKILLed one after the other once all nodes run (0: none).
    #[arg(long, default_value_t = 3)]
    pub failovers: usize,
    /// The conductors' power sync interval (`--sync-interval`; Ironic's default is 60 s). 0
    /// turns sweeps off and skips the sync phase.
    #[arg(long, default_value_t = 60.0)]
    pub sync_interval: f64,
    /// Power sync reads in flight per conductor (`--sync-workers`).
    #[arg(long, default_value_t = 16)]
    pub sync_workers: usize,
    /// Run the conductors with `--keep-idle-actors` (an actor per node at all times; by
    /// default nodes at rest are parked), to compare.
    #[arg(long)]
    pub keep_idle_actors: bool,
    /// Run the conductors with `--no-warm-standby` (a takeover reads specs and statuses), to
    /// compare.
    #[arg(long)]
    pub no_warm_standby: bool,
    /// Run the conductors with `--no-standby-statuses` (the standby keeps specs only; a
    /// takeover reads statuses), to compare.
    #[arg(long)]
    pub no_standby_statuses: bool,
}

/// A bound that grows with the fleet: at least two minutes, plus a millisecond per node.
fn bound(nodes: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(nodes as u64)
}

pub async fn run(dir: &Path, etcd: &Etcd, a: &ColdArgs) -> anyhow::Result<()> {
    println!("etcd flags beyond the defaults: {}", ETCD_TUNED.join(" "));
    // An idle conductor on an empty prefix gives the baseline RSS.
    let idle = procs::conductor(
        dir,
        &etcd.url,
        "/bench-idle/",
        "bench-idle",
        a.lease_ttl,
        &[],
    )?;
    let prefix = "/bench-cold/";
    let cluster = connect(etcd, prefix).await?;
    enroll_available(&cluster, etcd, a.nodes).await?;
    etcd_figures(&cluster, etcd, "after enrolling").await?;
    let names: Vec<String> = (1..=a.conductors).map(|i| format!("bench-c{i}")).collect();
    let ports: Vec<u16> = names
        .iter()
        .map(|_| procs::free_port())
        .collect::<anyhow::Result<_>>()?;
    // Sweeps run all along, as in production: the first sweep of a session lists the nodes it
    // runs then (few, at a cold start), so reads begin in earnest one interval later.
    let mut conductor_args = vec![
        "--sync-interval".to_string(),
        a.sync_interval.to_string(),
        "--sync-workers".to_string(),
        a.sync_workers.to_string(),
    ];
    if a.keep_idle_actors {
        conductor_args.push("--keep-idle-actors".to_string());
    }
    if a.no_warm_standby {
        conductor_args.push("--no-warm-standby".to_string());
    }
    if a.no_standby_statuses {
        conductor_args.push("--no-standby-statuses".to_string());
    }
    let start = |i: usize, extra: &[String]| -> anyhow::Result<Proc> {
        let mut args = vec![
            "--metrics-listen".to_string(),
            format!("127.0.0.1:{}", ports[i]),
        ];
        args.extend_from_slice(extra);
        procs::conductor(dir, &etcd.url, prefix, &names[i], a.lease_ttl, &args)
    };
    let t0 = Instant::now();
    let mut procs: Vec<Option<Proc>> = (0..a.conductors)
        .map(|i| start(i, &conductor_args).map(Some))
        .collect::<anyhow::Result<_>>()?;
    let cpu0 = cpu_seconds(std::process::id());
    let done = until_running(&cluster, a.nodes, None, bound(a.nodes)).await?;
    // Nodes run once all are owned, by however many conductors came up: a conductor that did
    // not start would make this a run of fewer conductors than the figures say.
    let (_, members) = cluster.list_conductors().await?;
    if members.len() != a.conductors {
        anyhow::bail!(
            "{} of {} conductors are live after the cold start (their logs are in {})",
            members.len(),
            a.conductors,
            dir.display()
        );
    }
    println!(
        "cold start: {} conductors own {} nodes with actors running after {:.2} s (aim: <= 10 s for 100k, <= 60 s for 1M)",
        a.conductors,
        a.nodes,
        done.duration_since(t0).as_secs_f64()
    );
    println!(
        "  (this benchmark's own CPU while waiting: {:.2} s)",
        cpu_seconds(std::process::id()) - cpu0
    );
    let t = Instant::now();
    let (buckets, specs, statuses) =
        standby_ready(&procs, &ports, !a.no_warm_standby, bound(a.nodes)).await?;
    println!(
        "warm standby: {buckets} buckets ({specs} specs, {statuses} statuses) read by their runners-up {:.2} s after the cold start",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    memory(&cluster, &procs, &ports, idle.rss_bytes().unwrap_or(0)).await?;
    etcd_figures(&cluster, etcd, "with every node owned").await?;

    if a.failovers > 0 {
        let mut times = Vec::new();
        for run in 0..a.failovers {
            let victim = run % a.conductors;
            let owned = running_of(&cluster).await?;
            let count = owned.get(&names[victim]).copied().unwrap_or(0);
            // A failover of a settled cluster: the runners-up have read the specs they keep.
            let t = Instant::now();
            standby_ready(&procs, &ports, !a.no_warm_standby, bound(a.nodes)).await?;
            if run > 0 {
                println!(
                    "  (warm standby ready again {:.2} s later)",
                    t.elapsed().as_secs_f64()
                );
            }
            let mut p = procs[victim].take().expect("running");
            p.signal(Signal::SIGKILL);
            let t = Instant::now();
            let _ = p.wait_for_exit(Duration::from_secs(5));
            let done =
                until_running(&cluster, a.nodes, Some(&names[victim]), bound(a.nodes)).await?;
            let secs = done.duration_since(t).as_secs_f64();
            println!(
                "failover {}: SIGKILL {} ({count} nodes) -> all re-owned with actors running in {secs:.3} s",
                run + 1,
                names[victim]
            );
            times.push(secs);
            drop(p);
            procs[victim] = Some(start(victim, &conductor_args)?);
            // Its share back before the next kill.
            let share = (a.nodes / a.conductors / 2) as u64;
            wait_until(&cluster, bound(a.nodes), |owned| {
                owned.get(&names[victim]).copied().unwrap_or(0) >= share
            })
            .await?;
            until_running(&cluster, a.nodes, None, bound(a.nodes)).await?;
        }
        times.sort_by(|x, y| x.total_cmp(y));
        println!(
            "failover: {} nodes, {} conductors, TTL {} s: p50 {:.3} s, max {:.3} s over {} kills (aim: <= TTL + 1 s = {:.1} s)",
            a.nodes,
            a.conductors,
            a.lease_ttl,
            times[times.len() / 2],
            times[times.len() - 1],
            times.len(),
            a.lease_ttl + 1.0
        );
    }

    if a.sync_interval > 0.0 {
        // Sweeps ran since the start at the interval; measure from now until every conductor
        // finished one whole sweep that started after this point (two more sweeps each).
        let at_start = sync_reports(&cluster).await?;
        let live: Vec<&Proc> = procs.iter().flatten().collect();
        let cpu0: Vec<f64> = live.iter().map(|p| cpu_seconds(p.pid())).collect();
        let t = Instant::now();
        let deadline = t + Duration::from_secs_f64(a.sync_interval * 3.0) + bound(a.nodes) * 2;
        let last = loop {
            let now = sync_reports(&cluster).await?;
            let done = names.iter().all(|n| {
                let before = at_start.get(n).map_or(0, |r| r.sweeps);
                now.get(n).is_some_and(|r| r.sweeps >= before + 2)
            });
            if done {
                break now;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the conductors did not finish two sweeps each in time");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let secs = t.elapsed().as_secs_f64();
        let cpu: f64 = live
            .iter()
            .zip(&cpu0)
            .map(|(p, c0)| cpu_seconds(p.pid()) - c0)
            .sum();
        let (mut swept, mut slowest, mut failed, mut reads) = (0, 0, 0, 0);
        for n in &names {
            let (r, r0) = (&last[n], &at_start[n]);
            swept += r.last_sweep_nodes;
            slowest = slowest.max(r.last_sweep_ms);
            failed += r.failed_reads - r0.failed_reads;
            reads += r.reads - r0.reads;
        }
        println!(
            "power sync at a {} s interval ({} reads in flight per conductor): a whole sweep of {swept} nodes in {:.2} s (the slowest conductor's last sweep); {reads} reads, {failed} failed, over {secs:.1} s; conductors' CPU {:.0} % of a core in all",
            a.sync_interval,
            a.sync_workers,
            slowest as f64 / 1000.0,
            100.0 * cpu / secs
        );
        memory(&cluster, &procs, &ports, idle.rss_bytes().unwrap_or(0)).await?;
        etcd_figures(&cluster, etcd, "after the sweeps").await?;
    }
    drop(idle);
    Ok(())
}

/// Writes `n` fake-hardware nodes and their status records as an existing fleet would have
/// them: `available`, powered off, owned by nobody (the conductors take them over). Batches go
/// four at a time.
async fn enroll_available(cluster: &Cluster, etcd: &Etcd, n: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    let now = now_ms();
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId::new_random()).collect();
    let specs: Vec<Vec<NodeSpec>> = ids
        .chunks(4096)
        .map(|c| {
            c.iter()
                .map(|id| NodeSpec::new(*id, "fake-hardware", now))
                .collect()
        })
        .collect();
    let created: Vec<_> = futures::stream::iter(specs)
        .map(|chunk| cluster.create_nodes(chunk))
        .buffer_unordered(4)
        .collect()
        .await;
    for batch in created {
        for r in batch? {
            r?;
        }
    }
    let status = NodeStatus {
        provision_state: ProvisionState::Available,
        power_state: Some(PowerState::Off),
        updated_at_ms: now,
        ..NodeStatus::default()
    };
    let value = encode(&status);
    let client = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
    let keys = cluster.keys();
    let txns: Vec<Vec<etcd_client::TxnOp>> = ids
        .chunks(120)
        .map(|c| {
            c.iter()
                .map(|id| etcd_client::TxnOp::put(keys.status(id), value.clone(), None))
                .collect()
        })
        .collect();
    let written: Vec<_> = futures::stream::iter(txns)
        .map(|ops| {
            let mut kv = client.kv_client();
            async move { kv.txn(etcd_client::Txn::new().and_then(ops)).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for w in written {
        w?;
    }
    println!(
        "enrolled {n} nodes, available and powered off, in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each conductor's RSS per node it owns, from /proc, and its actors from its `/metrics`.
async fn memory(
    cluster: &Cluster,
    procs: &[Option<Proc>],
    ports: &[u16],
    baseline: u64,
) -> anyhow::Result<()> {
    let owned = running_of(cluster).await?;
    let (mut rss_all, mut nodes_all) = (0u64, 0u64);
    for (p, port) in procs.iter().flatten().zip(ports) {
        let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await?
            .text()
            .await?;
        let actors = metric(&body, "ferric_node_actors").unwrap_or(-1.0);
        let parked = metric(&body, "ferric_node_parked").unwrap_or(-1.0);
        let rss = p.rss_bytes().unwrap_or(0);
        let n = owned.get(&p.name).copied().unwrap_or(0);
        rss_all += rss;
        nodes_all += n;
        println!(
            "{}: owns {n} nodes ({actors} served in its /metrics, {parked} of them parked), RSS {:.1} MiB: {:.2} KiB per node ({:.2} KiB above an idle conductor's {:.1} MiB)",
            p.name,
            rss as f64 / 1048576.0,
            rss as f64 / 1024.0 / n.max(1) as f64,
            rss.saturating_sub(baseline) as f64 / 1024.0 / n.max(1) as f64,
            baseline as f64 / 1048576.0
        );
    }
    println!(
        "conductors in all: RSS {:.2} GiB for {nodes_all} nodes, {:.2} KiB per node (aim: <= 8 KiB)",
        rss_all as f64 / 1073741824.0,
        rss_all as f64 / 1024.0 / nodes_all.max(1) as f64
    );
    Ok(())
}

/// Waits until every live conductor's warm standby has read the specs and statuses of all the
/// buckets it keeps; then the buckets, specs and statuses kept in all.
async fn standby_ready(
    procs: &[Option<Proc>],
    ports: &[u16],
    enabled: bool,
    timeout: Duration,
) -> anyhow::Result<(u64, u64, u64)> {
    if !enabled || procs.iter().flatten().count() < 2 {
        return Ok((0, 0, 0)); // nobody to follow
    }
    let deadline = Instant::now() + timeout;
    loop {
        let (mut kept, mut ready, mut specs, mut statuses) = (0.0, 0.0, 0.0, 0.0);
        for (_, port) in procs.iter().zip(ports).filter(|(p, _)| p.is_some()) {
            let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await?
                .text()
                .await?;
            kept += metric(&body, "ferric_standby_buckets").unwrap_or(0.0);
            ready += metric(&body, "ferric_standby_ready_buckets").unwrap_or(0.0);
            specs += metric(&body, "ferric_standby_specs").unwrap_or(0.0);
            statuses += metric(&body, "ferric_standby_statuses").unwrap_or(0.0);
        }
        if kept > 0.0 && ready >= kept {
            return Ok((kept as u64, specs as u64, statuses as u64));
        }
        if Instant::now() > deadline {
            anyhow::bail!("the warm standby read {ready} of {kept} buckets in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// etcd's RSS (from /proc) and database size (from its status: the file, and the part in use).
async fn etcd_figures(cluster: &Cluster, etcd: &Etcd, when: &str) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
    let st = client.status().await?;
    let keys = client
        .get(
            "",
            Some(
                etcd_client::GetOptions::new()
                    .with_from_key()
                    .with_count_only(),
            ),
        )
        .await?
        .count();
    println!(
        "etcd {when}: RSS {:.2} GiB, database {:.2} GiB ({:.2} GiB in use), {keys} keys, revision {}",
        etcd.proc.rss_bytes().unwrap_or(0) as f64 / 1073741824.0,
        st.db_size() as f64 / 1073741824.0,
        st.raft_used_db_size() as f64 / 1073741824.0,
        cluster.revision().await?
    );
    Ok(())
}

/// Nodes each live conductor runs, from the conductors' records.
async fn running_of(cluster: &Cluster) -> anyhow::Result<HashMap<String, u64>> {
    let (_, conductors) = cluster.list_conductors().await?;
    Ok(conductors
        .into_values()
        .map(|c| (c.name, c.running))
        .collect())
}

async fn wait_until(
    cluster: &Cluster,
    timeout: Duration,
    done: impl Fn(&HashMap<String, u64>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&running_of(cluster).await?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the conductors' counts did not settle within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sync_reports(cluster: &Cluster) -> anyhow::Result<HashMap<String, SyncReport>> {
    let (_, conductors) = cluster.list_conductors().await?;
    Ok(conductors.into_values().map(|c| (c.name, c.sync)).collect())
}

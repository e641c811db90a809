//! The inner run of `ferric chaos`, inside the driver host's namespace: starts etcd, the
//! simulated fleet, conductors and gateways on their lab hosts, enrolls the nodes, runs the
//! workload, injects the scheduled faults one after another, checks the invariants after each
//! and at the end, and writes the report.

use super::etcd3::Etcd3;
use super::history::{History, HistoryRecorder};
use super::invariants::{self, Violation};
use super::lab::{Lab, LabProc};
use super::report::{FaultRecord, Report};
use super::schedule::{self, Fault, Step};
use super::workload::{self, Api, Plan, Records, Shared};
use super::Args;
use anyhow::Context;
use ferric_model::{decode, now_ms, NodeId, NodeName, NodeSpec, ReservationRecord};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PREFIX: &str = "/chaos/";
pub const ETCD_HOSTS: [&str; 3] = ["e1", "e2", "e3"];
pub const CONDUCTOR_HOSTS: [&str; 3] = ["c1", "c2", "c3"];
pub const GATEWAY_HOSTS: [&str; 2] = ["g1", "g2"];
pub const SIM_HOST: &str = "bmc";
pub const DRIVER_HOST: &str = "drv";
const SIM_PORT: u16 = 8000;
const API_PORT: u16 = 6385;

/// Every lab host, in the order the lab creates them.
pub fn hosts() -> Vec<String> {
    ETCD_HOSTS
        .iter()
        .chain(CONDUCTOR_HOSTS.iter())
        .chain(GATEWAY_HOSTS.iter())
        .chain([SIM_HOST, DRIVER_HOST].iter())
        .map(|s| s.to_string())
        .collect()
}

/// A Ferric process on a lab host (the same executable), which can be killed, frozen and
/// started again with the same arguments.
struct Service {
    name: String,
    host: String,
    args: Vec<String>,
    dir: PathBuf,
    proc: Option<LabProc>,
}

impl Service {
    fn new(name: &str, host: &str, args: Vec<String>, dir: &Path) -> Service {
        Service {
            name: name.to_string(),
            host: host.to_string(),
            args,
            dir: dir.to_path_buf(),
            proc: None,
        }
    }

    fn start(&mut self, lab: &Lab) -> anyhow::Result<()> {
        match &mut self.proc {
            Some(p) => p.restart(),
            None => {
                let log = self.dir.join(format!("{}.log", self.name));
                let p = lab.spawn(
                    &self.host,
                    &self.name,
                    std::env::current_exe()?,
                    self.args.clone(),
                    log,
                )?;
                self.proc = Some(p);
                Ok(())
            }
        }
    }

    fn signal(&mut self, sig: Signal) {
        if let Some(p) = &mut self.proc {
            p.signal(sig);
        }
    }

    fn kill(&mut self) {
        if let Some(p) = &mut self.proc {
            p.kill();
        }
    }

    /// Still running (not exited; a frozen process runs)?
    fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    fn stop(&mut self) {
        if let Some(p) = &mut self.proc {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// The cluster under test.
struct Cluster {
    lab: Lab,
    etcd: Etcd3,
    kv: etcd_client::Client,
    sim: Service,
    conductors: Vec<Service>,
    gateways: Vec<Service>,
    ttl: Duration,
}

impl Cluster {
    /// Owners now: node -> conductor (its own reservation's holder; none while it is handed on
    /// and not reserved yet; otherwise its bucket's holder), read at one revision.
    async fn owners(&mut self) -> anyhow::Result<HashMap<String, String>> {
        use etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
        let ks = ferric_cluster::Keyspace::new(PREFIX);
        let range = |prefix: String, keys_only: bool| {
            let mut o = GetOptions::new().with_prefix();
            if keys_only {
                o = o.with_keys_only();
            }
            TxnOp::get(prefix, Some(o))
        };
        let txn = Txn::new().and_then([
            range(ks.nodes(), true),
            range(ks.buckets(), false),
            range(ks.delegations(), true),
            range(ks.reservations(), false),
        ]);
        // etcd may be electing a leader or have lost the member this client used: try again.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let got = tokio::time::timeout(
                Duration::from_secs(2),
                self.kv
                    .kv_client()
                    .max_decoding_message_size(256 << 20)
                    .txn(txn.clone()),
            )
            .await;
            match got {
                Ok(Ok(r)) => break r,
                Ok(Err(e)) if attempt >= 10 => return Err(e.into()),
                Err(_) if attempt >= 10 => {
                    anyhow::bail!("etcd did not answer a read in 2 s, 10 times")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let mut ranges = resp.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().to_vec(),
            _ => Vec::new(),
        });
        let mut next = || ranges.next().unwrap_or_default();
        let (nodes, buckets, delegations, reservations) = (next(), next(), next(), next());
        let leaf = |kv: &etcd_client::KeyValue| ks.leaf_of(kv.key()).map(str::to_string);
        let holder = |kv: &etcd_client::KeyValue| {
            decode::<ReservationRecord>(kv.value())
                .ok()
                .map(|r| r.conductor)
        };
        let bucket_of: HashMap<String, String> = buckets
            .iter()
            .filter_map(|kv| Some((leaf(kv)?, holder(kv)?)))
            .collect();
        let handed: std::collections::HashSet<String> =
            delegations.iter().filter_map(leaf).collect();
        let reserved: HashMap<String, String> = reservations
            .iter()
            .filter_map(|kv| Some((leaf(kv)?, holder(kv)?)))
            .collect();
        let mut out = HashMap::new();
        for node in nodes.iter().filter_map(leaf) {
            let owner = match reserved.get(&node) {
                Some(h) => Some(h.clone()),
                None if handed.contains(&node) => None,
                None => node.get(..3).and_then(|b| bucket_of.get(b)).cloned(),
            };
            if let Some(owner) = owner {
                out.insert(node, owner);
            }
        }
        Ok(out)
    }

    /// Waits until every node is reserved by a live conductor (`live`: conductor names);
    /// returns how long that took, or None at the bound.
    async fn wait_owned(
        &mut self,
        nodes: &[String],
        avoid: Option<&str>,
        limit: Duration,
    ) -> Option<Duration> {
        // Each node counts once it was seen with another owner: a recovered victim that takes
        // some back later does not undo that they failed over.
        let start = Instant::now();
        let mut pending: std::collections::HashSet<&String> = nodes.iter().collect();
        while start.elapsed() < limit {
            if let Ok(owners) = self.owners().await {
                pending.retain(|n| {
                    owners
                        .get(*n)
                        .is_none_or(|c| avoid.is_some_and(|a| a == c.as_str()))
                });
                if pending.is_empty() {
                    return Some(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits until the cluster is settled: every node owned, every running conductor owning
    /// some (when there are enough nodes), and no owner changing for a second. Returns how long
    /// that took, or None at the bound.
    async fn settle(&mut self, nodes: &[String], limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut last: Option<HashMap<String, String>> = None;
        let mut stable_since = Instant::now();
        while start.elapsed() < limit {
            let running: Vec<String> = self
                .conductors
                .iter_mut()
                .filter_map(|c| c.running().then(|| c.name.clone()))
                .collect();
            if let Ok(owners) = self.owners().await {
                let all = nodes.iter().all(|n| owners.contains_key(n));
                let spread = nodes.len() < 4 * running.len()
                    || running.iter().all(|c| owners.values().any(|o| o == c));
                if all && spread {
                    if last.as_ref() == Some(&owners) {
                        if stable_since.elapsed() >= Duration::from_secs(1) {
                            return Some(start.elapsed());
                        }
                    } else {
                        stable_since = Instant::now();
                        last = Some(owners);
                    }
                } else {
                    last = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn etcd_hosts(&self) -> Vec<&str> {
        ETCD_HOSTS.to_vec()
    }
}

/// Starts everything, runs the schedule, checks, and writes the report. Returns the report.
pub async fn inner(args: &Args, dir: &Path) -> anyhow::Result<Report> {
    let lab = Lab::load(&dir.join("lab.json")).context("reading the lab description")?;
    let seed = args.seed.unwrap_or(0);
    let ttl = Duration::from_secs_f64(args.lease_ttl);
    println!("ferric chaos: seed {seed} (replay with --seed {seed})");
    let etcd = Etcd3::start(&lab, &ETCD_HOSTS, dir, super::etcd3::EtcdTiming::default())
        .await
        .context("starting the 3-member etcd cluster")?;
    let endpoints = etcd.endpoints();
    let kv = etcd_client::Client::connect(endpoints.clone(), None).await?;
    let etcd_arg = endpoints.join(",");
    println!("  etcd        {etcd_arg}");

    // The simulated fleet on its own host: every command it gets is logged with its sender.
    let sim_ip = lab.ip(SIM_HOST);
    let sim_url = format!("http://{sim_ip}:{SIM_PORT}");
    let sim_log = dir.join("sim-commands.jsonl");
    let mut sim = Service::new(
        "sim",
        SIM_HOST,
        vec![
            "sim".into(),
            "--listen".into(),
            format!("{sim_ip}:{SIM_PORT}"),
            "--systems".into(),
            args.nodes.to_string(),
            "--log".into(),
            sim_log.display().to_string(),
            "--graceful-shutdown-secs".into(),
            "1".into(),
        ],
        dir,
    );
    sim.start(&lab)?;
    wait_tcp(&format!("{sim_ip}:{SIM_PORT}"), Duration::from_secs(20))
        .await
        .context("ferric sim did not start")?;

    let records: Shared = Arc::new(Mutex::new(Records::default()));
    let drv_ip = lab.ip(DRIVER_HOST);
    let webhook =
        workload::webhook(std::net::SocketAddr::new(drv_ip.into(), 0), records.clone()).await?;

    let mut conductors = Vec::new();
    for (i, host) in CONDUCTOR_HOSTS.iter().enumerate() {
        let ip = lab.ip(host);
        let name = format!("c{}", i + 1);
        let mut a = role_args("conductor", &etcd_arg, &name);
        a.extend([
            "--lease-ttl".into(),
            args.lease_ttl.to_string(),
            "--address".into(),
            format!("{ip}:0"),
            "--console-listen".into(),
            format!("{ip}:0"),
            "--runtime-dir".into(),
            dir.join(format!("run-{name}")).display().to_string(),
            "--notify-url".into(),
            webhook.clone(),
            "--notify-backoff-max".into(),
            "2".into(),
        ]);
        let mut s = Service::new(&name, host, a, dir);
        s.start(&lab)?;
        conductors.push(s);
    }
    let mut gateways = Vec::new();
    let mut urls = Vec::new();
    for (i, host) in GATEWAY_HOSTS.iter().enumerate() {
        let ip = lab.ip(host);
        let name = format!("g{}", i + 1);
        let mut a = role_args("gateway", &etcd_arg, &name);
        a.extend([
            "--listen".into(),
            format!("{ip}:{API_PORT}"),
            "--allow-insecure-noauth".into(),
        ]);
        let mut s = Service::new(&name, host, a, dir);
        s.start(&lab)?;
        gateways.push(s);
        urls.push(format!("http://{ip}:{API_PORT}"));
    }
    for u in &urls {
        wait_tcp(u.trim_start_matches("http://"), Duration::from_secs(30))
            .await
            .with_context(|| format!("the gateway at {u} did not start"))?;
    }
    println!("  gateways    {}", urls.join(" "));
    println!("  sim         {sim_url} (log {})", sim_log.display());

    let mut cl = Cluster {
        lab,
        etcd,
        kv,
        sim,
        conductors,
        gateways,
        ttl,
    };
    let mut recorder = History::start(endpoints.clone(), PREFIX).await?;

    // Enroll: redfish nodes on the simulated fleet, fake deploy, no automated cleaning (the
    // workload's provision cycle needs no agent), the sim's serial port as console.
    let ids = enroll(&endpoints, &sim_url, args.nodes).await?;
    let system_of: HashMap<String, String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("sim-{i}")))
        .collect();
    let limit = Duration::from_secs(60 + args.nodes as u64 / 500);
    cl.wait_owned(&ids, None, limit)
        .await
        .with_context(|| format!("the enrolled nodes were not all owned within {limit:?}"))?;
    println!("  nodes       {} enrolled and owned", ids.len());

    let api = Api::new(urls.clone());
    let n = ids.len();
    let n_console = args.consoles.min(n / 4);
    let busy = args.busy_nodes.min(n - n_console);
    let n_power = (busy * 2 / 3).max(1);
    let n_prov = busy.saturating_sub(n_power).max(1);
    let console: Vec<String> = ids[..n_console].to_vec();
    let power: Vec<String> = ids[n_console..(n_console + n_power).min(n)].to_vec();
    let provision: Vec<String> =
        ids[(n_console + n_power).min(n)..(n_console + n_power + n_prov).min(n)].to_vec();
    prepare_consoles(&api, &console).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let plan = Plan {
        power,
        provision,
        console: console.clone(),
        readers: 2,
        finish_wait: Duration::from_secs(60),
    };
    let (stop_watching_tx, stop_watching_rx) = tokio::sync::watch::channel(false);
    let running = workload::start(
        api.clone(),
        plan,
        seed,
        records.clone(),
        stop_rx,
        stop_watching_rx,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let soak_until = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let steps = schedule::plan(
        seed,
        if soak_until.is_some() {
            100_000
        } else {
            args.steps
        },
        &args.fault_kinds(),
        CONDUCTOR_HOSTS.len(),
        GATEWAY_HOSTS.len(),
        ttl,
    );
    let mut faults = Vec::new();
    let mut violations: Vec<(Option<usize>, Violation)> = Vec::new();
    let mut done_steps = 0;
    for (i, step) in steps.iter().enumerate() {
        if soak_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        done_steps = i + 1;
        println!("[{i:>3}] {}", step.fault);
        let rec = inject(&mut cl, step).await;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                println!("      the fault could not be injected or healed: {e:#}");
                return Err(e);
            }
        };
        println!("      {}", rec.summary());
        faults.push(rec);
        // Between faults: every node owned again by a live conductor, then the checks that
        // hold at any time.
        if cl.settle(&ids, Duration::from_secs(45)).await.is_none() {
            violations.push((
                Some(i),
                Violation::new(
                    'd',
                    None,
                    "the cluster did not settle (every node owned, owners steady) within 45 s after the fault was healed".into(),
                ),
            ));
        }
        let found = interim_checks(&recorder, &read_sim_log(&sim_log), &system_of).await;
        for v in found {
            println!("      VIOLATION {v}");
            violations.push((Some(i), v));
        }
    }

    // Let the workload's last requests finish, then stop it and let the cluster quiesce.
    let _ = stop_tx.send(true);
    for t in running.workers {
        let _ = tokio::time::timeout(Duration::from_secs(70), t).await;
    }
    let quiet = quiesce(&api, &ids, Duration::from_secs(90)).await;
    // The last events reach the readers and the webhook; the viewers stop with them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watched_until = now_ms();
    let _ = stop_watching_tx.send(true);
    for t in running.watchers {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let (found, read) = final_checks(
        &mut cl,
        &recorder,
        &sim_log,
        &system_of,
        &records,
        &faults,
        watched_until,
        &ids,
    )
    .await;
    for v in found {
        println!("  VIOLATION {v}");
        violations.push((None, v));
    }
    if let Some(stuck) = quiet {
        violations.push((
            None,
            Violation::new('f', None, format!("the cluster did not quiesce: {stuck}")),
        ));
    }
    let gaps = recorder.gaps();
    let rewatches = recorder.rewatches();
    recorder.stop().await;
    let mut report = Report::new(
        args,
        seed,
        &steps[..done_steps],
        faults,
        violations,
        &records.lock().unwrap(),
        ttl,
    );
    report.set_recorder(gaps, rewatches);
    report.checked = read;
    for s in cl.conductors.iter_mut().chain(cl.gateways.iter_mut()) {
        s.stop();
    }
    cl.sim.stop();
    for i in 0..cl.etcd.len() {
        cl.etcd.stop(i);
    }
    Ok(report)
}

/// The arguments every conductor and gateway of the run starts with.
fn role_args(role: &str, etcd: &str, name: &str) -> Vec<String> {
    [role, "--etcd", etcd, "--prefix", PREFIX, "--name", name]
        .map(String::from)
        .to_vec()
}

/// Enrolls `count` redfish nodes on the simulated fleet; returns their uuids in system order.
async fn enroll(endpoints: &[String], sim_url: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut cfg = ferric_cluster::EtcdConfig::new(&endpoints.join(","));
    cfg.endpoints = endpoints.to_vec();
    cfg.prefix = PREFIX.into();
    let cluster = ferric_cluster::Cluster::connect(&cfg).await?;
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..count)
        .map(|i| {
            let mut s = NodeSpec::new(NodeId::new_random(), "redfish", now);
            s.name = NodeName::parse(&format!("chaos-{i:05}")).ok();
            s.driver_info = crate::procs::sim_driver_info(sim_url, i);
            s.interfaces
                .insert("console_interface".into(), "ferric-sim".into());
            s.interfaces
                .insert("deploy_interface".into(), "fake".into());
            s.automated_clean = Some(false);
            s
        })
        .collect();
    let created = cluster.create_nodes(specs).await?;
    created
        .into_iter()
        .map(|r| {
            r.map(|id| id.to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect()
}

/// Powers the console nodes on and enables their consoles.
async fn prepare_consoles(api: &Api, nodes: &[String]) -> anyhow::Result<()> {
    use serde_json::json;
    for id in nodes {
        let put = |path: String, body: serde_json::Value| {
            let api = api.clone();
            async move {
                for _ in 0..50 {
                    if let workload::Answer::Got { status: 202, .. } =
                        api.send(reqwest::Method::PUT, &path, Some(&body)).await
                    {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                anyhow::bail!("{path} was not accepted")
            }
        };
        put(
            format!("/v1/nodes/{id}/states/power"),
            json!({"target": "power on"}),
        )
        .await?;
        put(
            format!("/v1/nodes/{id}/states/console"),
            json!({"enabled": true}),
        )
        .await?;
    }
    for id in nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(doc) = api.node(id).await {
                if doc["power_state"] == "power on" && doc["console_enabled"] == true {
                    break;
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("console node {id} was not on with its console enabled in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Injects one fault, holds it, heals it, and measures what the cluster did.
async fn inject(cl: &mut Cluster, step: &Step) -> anyhow::Result<FaultRecord> {
    let started_ms = now_ms();
    let t0 = Instant::now();
    let mut rec = FaultRecord::new(step, started_ms);
    let victim_nodes = |owners: &HashMap<String, String>, name: &str| -> Vec<String> {
        owners
            .iter()
            .filter(|(_, c)| c.as_str() == name)
            .map(|(n, _)| n.clone())
            .collect()
    };
    match step.fault {
        Fault::KillConductor { conductor }
        | Fault::FreezeConductor { conductor }
        | Fault::CutConductorEtcd { conductor } => {
            let name = cl.conductors[conductor].name.clone();
            let owners = cl.owners().await.unwrap_or_default();
            let moved = victim_nodes(&owners, &name);
            rec.nodes = moved.len();
            match step.fault {
                Fault::KillConductor { .. } => cl.conductors[conductor].kill(),
                Fault::FreezeConductor { .. } => cl.conductors[conductor].signal(Signal::SIGSTOP),
                _ => {
                    let host = cl.conductors[conductor].host.clone();
                    cl.lab.cut(&host, &cl.etcd_hosts())?;
                }
            }
            let limit = step.hold.max(cl.ttl * 3) + Duration::from_secs(20);
            rec.failover = cl.wait_owned(&moved, Some(&name), limit).await;
            let left = step.hold.saturating_sub(t0.elapsed());
            tokio::time::sleep(left).await;
            match step.fault {
                Fault::KillConductor { .. } => {}
                Fault::FreezeConductor { .. } => cl.conductors[conductor].signal(Signal::SIGCONT),
                _ => {
                    let host = cl.conductors[conductor].host.clone();
                    cl.lab.heal(&host, &cl.etcd_hosts())?;
                }
            }
            rec.healed_ms = Some(now_ms());
            // A conductor that fenced itself may have exited; a killed one is started again.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !cl.conductors[conductor].running() {
                rec.restarted = true;
                let lab = &cl.lab;
                cl.conductors[conductor].start(lab)?;
            }
        }
        Fault::CutGateway { gateway } => {
            let host = cl.gateways[gateway].host.clone();
            cl.lab.link_down(&host)?;
            tokio::time::sleep(step.hold).await;
            cl.lab.link_up(&host)?;
            rec.healed_ms = Some(now_ms());
        }
        Fault::KillGateway { gateway } => {
            cl.gateways[gateway].kill();
            tokio::time::sleep(step.hold).await;
            let lab = &cl.lab;
            cl.gateways[gateway].start(lab)?;
            rec.healed_ms = Some(now_ms());
            rec.restarted = true;
        }
        Fault::KillEtcdLeader | Fault::StopEtcdMember { .. } => {
            let before = cl.owners().await.unwrap_or_default();
            let member = match step.fault {
                Fault::StopEtcdMember { member } => member,
                _ => cl
                    .etcd
                    .leader()
                    .await
                    .context("no etcd leader before the kill")?,
            };
            rec.member = Some(member);
            if step.fault == Fault::KillEtcdLeader {
                cl.etcd.kill(member);
            } else {
                cl.etcd.stop(member);
            }
            rec.writes_resumed = cl.etcd.wait_leader(Duration::from_secs(30)).await;
            let left = step.hold.saturating_sub(t0.elapsed());
            tokio::time::sleep(left).await;
            rec.nodes_lost = lost_nodes(cl, &before).await;
            cl.etcd.restart(member)?;
            rec.healed_ms = Some(now_ms());
        }
        Fault::SlowEtcdDisk { member } => {
            let before = cl.owners().await.unwrap_or_default();
            rec.member = Some(member);
            cl.etcd
                .slow_disk(member, Duration::from_millis(200), step.hold)
                .await?;
            rec.nodes_lost = lost_nodes(cl, &before).await;
            rec.healed_ms = Some(now_ms());
        }
    }
    rec.ended_ms = now_ms();
    Ok(rec)
}

/// Nodes whose owner changed since `before` (a conductor lost them) while no conductor was
/// faulted: the etcd fault alone moved them.
async fn lost_nodes(cl: &mut Cluster, before: &HashMap<String, String>) -> Option<usize> {
    let now = cl.owners().await.ok()?;
    Some(
        before
            .iter()
            .filter(|(n, c)| now.get(*n) != Some(*c))
            .count(),
    )
}

/// Checks that hold at any time: (a) so far, and (d).
/// `log`: the BMC log, read just before. The history is taken once it has caught up with
/// etcd, so every reservation a logged command depends on is in it.
async fn interim_checks(
    recorder: &HistoryRecorder,
    log: &[ferric_sim::LogEntry],
    system_of: &HashMap<String, String>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    if !recorder.catch_up(Duration::from_secs(120)).await {
        out.push(Violation::new(
            'a',
            None,
            "the history recorder did not catch up with etcd within 120 s: the check would be unfounded".into(),
        ));
        return out;
    }
    let changes = recorder.changes();
    out.extend(invariants::check_bmc_ownership(log, &changes, system_of));
    // The checker's own read may meet a member that was just killed: that is not the
    // cluster's fault, so it tries again (bounded) before saying it could not look.
    let mut snap = recorder.lease_snapshot().await;
    for _ in 0..10 {
        if snap.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        snap = recorder.lease_snapshot().await;
    }
    match snap {
        Ok(snap) => out.extend(invariants::check_reservation_leases(&snap)),
        Err(e) => out.push(Violation::new(
            'd',
            None,
            format!("could not read the leases: {e:#}"),
        )),
    }
    out
}

/// The final checks, once the workload stopped and the cluster is quiet: every invariant over
/// the whole run, and how much they read.
#[allow(clippy::too_many_arguments)]
async fn final_checks(
    cl: &mut Cluster,
    recorder: &HistoryRecorder,
    sim_log: &Path,
    system_of: &HashMap<String, String>,
    records: &Shared,
    faults: &[FaultRecord],
    watched_until: u64,
    ids: &[String],
) -> (Vec<Violation>, super::report::Checked) {
    let log = read_sim_log(sim_log);
    let mut out = interim_checks(recorder, &log, system_of).await;
    let changes = recorder.changes();
    let end_ms = now_ms();
    let ttl_ms = cl.ttl.as_millis() as u64;
    let finals = match final_nodes(cl, ids).await {
        Ok(f) => f,
        Err(e) => {
            out.push(Violation::new(
                'b',
                None,
                format!("could not read the final records: {e:#}"),
            ));
            Vec::new()
        }
    };
    let r = records.lock().unwrap();
    let accepted: Vec<invariants::AcceptedRequest> = r
        .requests
        .iter()
        .filter_map(|q| {
            Some(invariants::AcceptedRequest {
                node: q.node.clone(),
                kind: match q.kind {
                    "power" => invariants::RequestKind::Power,
                    _ => invariants::RequestKind::Provision,
                },
                what: match q.target.as_str() {
                    "active" => "deploy".to_string(),
                    "deleted" => "undeploy".to_string(),
                    t => t.to_string(),
                },
                accepted_unix_ms: q.sent_ms,
                status: q.status?,
            })
        })
        .collect();
    out.extend(invariants::check_requests(&accepted, &changes, &finals));
    let stream: Vec<invariants::StreamItem> = r
        .stream
        .iter()
        .map(|e| invariants::StreamItem {
            reader: format!("r{}", e.reader),
            node: e.node.clone(),
            seq: e.seq,
            received_unix_ms: e.at_ms,
        })
        .collect();
    let webhook: Vec<invariants::ComputeItem> = r
        .webhook
        .iter()
        .map(|e| invariants::ComputeItem {
            node: e.node.clone(),
            seq: e.seq,
            received_unix_ms: e.at_ms,
            acked: true,
        })
        .collect();
    out.extend(invariants::check_events(
        &stream,
        &webhook,
        ferric_model::Sink::Webhook,
        &changes,
    ));
    // A fault holds for at most 2 × TTL; a failover adds TTL and the takeover.
    let slack_ms = 3 * ttl_ms + 10_000;
    out.extend(invariants::check_transient_states(
        &changes,
        &invariants::TransientLimits {
            provision_ms: 60_000,
            per_state: Vec::new(),
            power_op_ms: 30_000,
            slack_ms,
            end_unix_ms: end_ms,
        },
    ));
    let fault_starts: Vec<u64> = faults.iter().map(|f| f.started_ms).collect();
    let gaps = console_gaps(&r.echoes, &fault_starts, watched_until);
    out.extend(invariants::check_consoles(
        &log,
        &changes,
        system_of,
        &gaps,
        invariants::ConsoleLimits {
            close_grace_ms: ttl_ms + 5_000,
            serve_within_ms: ttl_ms + 8_000,
            end_unix_ms: watched_until,
        },
    ));
    let read = checked(&log, &changes);
    (out, read)
}

/// How much the final checks looked at.
fn checked(
    log: &[ferric_sim::LogEntry],
    changes: &[super::history::Change],
) -> super::report::Checked {
    use super::history::ChangeKind;
    let keys = super::history::kept(&ferric_cluster::Keyspace::new(PREFIX));
    let conductors: std::collections::HashSet<&str> =
        CONDUCTOR_HOSTS.to_vec().into_iter().collect();
    let by_conductor =
        |e: &&ferric_sim::LogEntry| e.client.as_deref().is_some_and(|c| conductors.contains(c));
    let puts = |prefix: &str| {
        changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Put && !c.initial && c.key.starts_with(prefix))
            .count()
    };
    super::report::Checked {
        bmc_commands: log
            .iter()
            .filter(|e| e.op == ferric_sim::LogOp::Redfish)
            .filter(by_conductor)
            .count(),
        reservations_created: changes
            .iter()
            .filter(|c| {
                c.kind == ChangeKind::Put
                    && (c.key.starts_with(&keys.reservations) || c.key.starts_with(&keys.buckets))
                    && c.revision == c.create_revision
            })
            .count(),
        history_entries: puts(
            &keys
                .history
                .split('/')
                .next()
                .map(|k| format!("{k}/"))
                .unwrap_or_default(),
        ),
        outbox_events: puts(&keys.events),
        console_sessions: log
            .iter()
            .filter(|e| e.op == ferric_sim::LogOp::SerialOpen && e.status == Some(101))
            .filter(by_conductor)
            .count(),
        changes: changes.len(),
    }
}

/// The console outages the viewers saw: every interval longer than 3 s (viewers type once a
/// second) between two echoes of a node, and the time since a node's last echo at the end. An
/// outage is timed from its start, or from the last fault that began during it (a second fault
/// restarts the clock: two etcd leader kills 8 s apart made one outage of 12 s, each fault's
/// part well within the limit).
fn console_gaps(
    echoes: &[workload::Echo],
    fault_starts: &[u64],
    end_ms: u64,
) -> Vec<invariants::ConsoleGap> {
    let since = |a: u64, b: u64| -> u64 {
        fault_starts
            .iter()
            .copied()
            .filter(|&f| f > a && f < b)
            .max()
            .unwrap_or(a)
    };
    let mut per_node: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in echoes {
        per_node.entry(e.node.as_str()).or_default().push(e.at_ms);
    }
    let mut out = Vec::new();
    for (node, mut times) in per_node {
        times.sort_unstable();
        for w in times.windows(2) {
            if w[1] - w[0] > 3_000 {
                out.push(invariants::ConsoleGap {
                    node: node.to_string(),
                    fault_unix_ms: since(w[0], w[1]),
                    first_output_after_ms: Some(w[1]),
                });
            }
        }
        if let Some(&last) = times.last() {
            if end_ms.saturating_sub(last) > 3_000 {
                out.push(invariants::ConsoleGap {
                    node: node.to_string(),
                    fault_unix_ms: since(last, end_ms),
                    first_output_after_ms: None,
                });
            }
        }
    }
    out
}

/// Every node's final spec and status, read from etcd.
async fn final_nodes(
    cl: &mut Cluster,
    ids: &[String],
) -> anyhow::Result<Vec<invariants::FinalNode>> {
    let mut out = Vec::new();
    for id in ids {
        let keys = ferric_cluster::Keyspace::new(PREFIX);
        let spec = cl.kv.get(format!("{}{id}", keys.nodes()), None).await?;
        let status = cl.kv.get(format!("{}{id}", keys.statuses()), None).await?;
        let Some(spec) = spec.kvs().first() else {
            anyhow::bail!("node {id} has no spec in etcd");
        };
        let spec: NodeSpec = decode(spec.value())?;
        // A node no owner had reason to write yet has no status: enroll, power unknown.
        let status: ferric_model::NodeStatus = match status.kvs().first() {
            Some(kv) => decode(kv.value())?,
            None => ferric_model::NodeStatus::default(),
        };
        out.push(invariants::FinalNode::of(&spec, &status));
    }
    Ok(out)
}

/// Waits until no node has a target state left; None when quiet, else which are not.
async fn quiesce(api: &Api, ids: &[String], limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut busy = BTreeMap::new();
        for id in ids {
            match api.node(id).await {
                Some(doc) => {
                    if !doc["target_power_state"].is_null()
                        || !doc["target_provision_state"].is_null()
                    {
                        busy.insert(
                            id.clone(),
                            format!(
                                "{} -> {} / {} -> {}",
                                doc["power_state"],
                                doc["target_power_state"],
                                doc["provision_state"],
                                doc["target_provision_state"]
                            ),
                        );
                    }
                }
                None => {
                    busy.insert(id.clone(), "not readable through the API".into());
                }
            }
        }
        if busy.is_empty() {
            return None;
        }
        if Instant::now() > deadline {
            return Some(format!("{busy:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The simulated fleet's log file, every entry (a torn last line is skipped).
pub fn read_sim_log(path: &Path) -> Vec<ferric_sim::LogEntry> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn wait_tcp(addr: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(at_ms: u64) -> workload::Echo {
        workload::Echo {
            node: "n".into(),
            marker: at_ms,
            at_ms,
        }
    }

    #[test]
    fn an_outage_is_timed_from_the_last_fault_that_began_in_it() {
        let echoes: Vec<_> = [1_000, 2_000, 14_000, 15_000].map(echo).into();
        // One fault inside: the outage counts from its last echo.
        let g = console_gaps(&echoes, &[1_500], 15_500);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].fault_unix_ms, 2_000);
        assert_eq!(g[0].first_output_after_ms, Some(14_000));
        // A second fault during the outage restarts the clock.
        let g = console_gaps(&echoes, &[1_500, 9_000], 15_500);
        assert_eq!(g[0].fault_unix_ms, 9_000);
        // A console that never echoes again is an outage until the end.
        let g = console_gaps(&echoes, &[], 30_000);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].first_output_after_ms, None);
    }
}

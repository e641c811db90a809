//! `ferric chaos`: a cluster of test hosts in network namespaces (a 3-member etcd cluster, three
//! conductors, two gateways, a simulated fleet and a driver host running the workload, a compute
//! stand-in and the recorders), a seeded fault schedule against it, and the invariants of
//! DESIGN.md checked after each fault and at the end from independent records only (the
//! simulated BMCs' log, etcd's revision history, what the API answered).
//!
//! Two processes: the outer one (in the host's namespace) builds the lab (`lab`), adds the
//! blackhole route for its subnet, runs the inner one inside the driver host's namespace
//! (`ip netns exec`), and removes everything when the inner one ends, fails or the outer one is
//! told to stop. The outer process never sends traffic to a lab address; every client of a lab
//! host (workload, recorders, checks) runs inside the driver namespace.
//!
//! Modules:
//! - `lab`: namespaces, bridge, addresses, link faults, processes started in a host, clean-up.
//! - `etcd3`: the 3-member etcd cluster on three lab hosts: leader, kill, stop and restart, slow disk.
//! - `history`: the recorder of etcd's revision history (every change under the prefix with the
//!   time it was seen) and of leases.
//! - `lab_selftest`: the hidden `ferric chaos-lab-selftest`, which proves `lab` and `etcd3` on
//!   this machine (tests/chaos_lab.rs).
//! - `invariants`: the checks (a) to (f) over the records, pure functions with unit tests.
//! - `workload`, `schedule`, `run`, `report`: the workload through the API, the seeded fault
//!   schedule, the inner run, and the report.

pub mod etcd3;
pub mod history;
pub mod invariants;
pub mod lab;
pub mod lab_selftest;
pub mod report;
pub mod run;
pub mod schedule;
pub mod workload;

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Seed of the fault schedule and the workload; random (and printed) when not given. The
    /// same seed and options replay the same faults.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults to inject, one after another (the first ones cover every kind asked for).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Run faults one after another for this many seconds (a soak) instead of --steps.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Nodes in the simulated fleet.
    #[arg(long, default_value_t = 60)]
    pub nodes: usize,
    /// Nodes with a console viewer (powered on, console enabled, never power-toggled).
    #[arg(long, default_value_t = 3)]
    pub consoles: usize,
    /// Nodes the workload drives (two thirds power toggles, one third provision verbs); the
    /// rest of the fleet only has to change owners when conductors fail.
    #[arg(long, default_value_t = 36)]
    pub busy_nodes: usize,
    /// Lease TTL of the conductors, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub lease_ttl: f64,
    /// Fault kinds to draw from, comma separated (default: all): kill_conductor,
    /// freeze_conductor, cut_conductor_etcd, cut_gateway, kill_gateway, kill_etcd_leader,
    /// stop_etcd_member, slow_etcd_disk.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Keep the run's files (etcd data, logs, the BMC log, the report) here instead of a temp
    /// directory that is removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the JSON report here (also kept as report.json in --dir).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The inner run, inside the driver host's namespace (set by the outer run).
    #[arg(long, hide = true)]
    pub inner: bool,
    /// Only remove what runs that were killed left behind (their namespaces, processes and
    /// routes), then exit.
    #[arg(long)]
    pub sweep: bool,
}

impl Args {
    pub fn fault_kinds(&self) -> Vec<&'static str> {
        if self.faults.is_empty() {
            return schedule::Fault::KINDS.to_vec();
        }
        schedule::Fault::KINDS
            .iter()
            .copied()
            .filter(|k| self.faults.iter().any(|f| f == k))
            .collect()
    }

    /// The arguments of the inner run.
    fn inner_args(&self, seed: u64, dir: &std::path::Path) -> Vec<String> {
        let mut a = vec![
            "chaos".to_string(),
            "--inner".into(),
            "--seed".into(),
            seed.to_string(),
            "--steps".into(),
            self.steps.to_string(),
            "--nodes".into(),
            self.nodes.to_string(),
            "--consoles".into(),
            self.consoles.to_string(),
            "--busy-nodes".into(),
            self.busy_nodes.to_string(),
            "--lease-ttl".into(),
            self.lease_ttl.to_string(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        if let Some(d) = self.duration {
            a.push("--duration".into());
            a.push(d.to_string());
        }
        if !self.faults.is_empty() {
            a.push("--faults".into());
            a.push(self.faults.join(","));
        }
        a
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.inner {
        let dir = args.dir.clone().context("--inner needs --dir")?;
        let report = run::inner(&args, &dir).await?;
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(dir.join("report.json"), &text)?;
        report.print();
        if !report.ok() {
            anyhow::bail!(
                "{} invariant violations, {} gaps in the history (see {})",
                report.violations.len(),
                report.checks.recorder_gaps.len(),
                dir.join("report.json").display()
            );
        }
        return Ok(());
    }
    if args.sweep {
        lab::Lab::sweep_stale();
        return Ok(());
    }
    for k in &args.faults {
        anyhow::ensure!(
            schedule::Fault::KINDS.contains(&k.as_str()),
            "unknown fault kind {k:?}; known: {}",
            schedule::Fault::KINDS.join(", ")
        );
    }
    anyhow::ensure!(args.nodes >= 4, "--nodes must be at least 4");
    anyhow::ensure!(
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))),
        "ferric chaos builds network namespaces and must run as root"
    );
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    lab::Lab::sweep_stale();
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            tmp = tempfile::Builder::new().prefix("ferric-chaos-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    println!("ferric chaos: seed {seed}; files in {}", dir.display());
    let mut lab = lab::Lab::create(
        &lab::LabSpec {
            hosts: run::hosts(),
        },
        &dir,
    )
    .context("building the lab's network namespaces")?;
    let outcome = outer(&args, seed, &dir, &lab).await;
    for e in lab.destroy() {
        eprintln!("ferric chaos: clean-up: {e}");
    }
    if let (Some(to), Ok(text)) = (
        &args.report,
        std::fs::read_to_string(dir.join("report.json")),
    ) {
        std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    }
    outcome
}

/// Runs the inner run in the driver host's namespace and waits for it, or for SIGINT/SIGTERM.
async fn outer(
    args: &Args,
    seed: u64,
    dir: &std::path::Path,
    lab: &lab::Lab,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let exe = std::env::current_exe()?;
    let mut std_cmd = lab.command(run::DRIVER_HOST, &exe);
    std_cmd.args(args.inner_args(seed, dir));
    // The inner run and, through it, every process of the lab die with this one.
    crate::sys::die_with_parent(&mut std_cmd);
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().context("starting the inner run")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let status = tokio::select! {
        s = child.wait() => s?,
        _ = term.recv() => { let _ = child.start_kill(); anyhow::bail!("stopped by SIGTERM") }
        _ = int.recv() => { let _ = child.start_kill(); anyhow::bail!("stopped by SIGINT") }
    };
    anyhow::ensure!(
        status.success(),
        "the chaos run failed ({status}); files in {}",
        dir.display()
    );
    Ok(())
}

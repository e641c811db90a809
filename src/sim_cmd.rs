//! `ferric sim`: the command-line face of `ferric-sim`, a simulated fleet of Redfish BMCs in one
//! process. Parses flags, binds, prints where it listens, serves until SIGTERM or SIGINT. Each
//! system also has a deploy agent (configured with `--agents` or `PUT /sim/agents`, it heartbeats
//! while the system runs a PXE boot) and a serial console websocket.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use ferric_sim::{Behaviour, FleetAgentSpec, SimConfig, SimState};
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on. Loopback by default; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:8000", env = "FERRIC_SIM_LISTEN")]
    listen: SocketAddr,
    /// Number of simulated systems; their ids are <id-prefix>0 .. <id-prefix>N-1.
    #[arg(long, default_value_t = 100, env = "FERRIC_SIM_SYSTEMS")]
    systems: usize,
    /// Prefix of the system ids.
    #[arg(long, default_value = "sim-", env = "FERRIC_SIM_ID_PREFIX")]
    id_prefix: String,
    /// HTTP Basic user every BMC accepts.
    #[arg(long, default_value = "admin", env = "FERRIC_SIM_USERNAME")]
    username: String,
    /// HTTP Basic password every BMC accepts.
    #[arg(
        long,
        default_value = "password",
        env = "FERRIC_SIM_PASSWORD",
        hide_env_values = true
    )]
    password: String,
    /// Append every Redfish request that reaches a system to this file, one JSON object per line,
    /// written before the request is answered.
    #[arg(long, env = "FERRIC_SIM_LOG")]
    log: Option<PathBuf>,
    /// How many of the newest log entries `GET /sim/log` can return (the --log file keeps all).
    #[arg(long, default_value_t = ferric_sim::DEFAULT_LOG_MEMORY_ENTRIES, env = "FERRIC_SIM_LOG_MEMORY")]
    log_memory: usize,
    /// Seconds the simulated OS takes to complete a graceful shutdown or restart.
    #[arg(long, default_value_t = 3.0, env = "FERRIC_SIM_GRACEFUL_SHUTDOWN_SECS")]
    graceful_shutdown_secs: f64,
    /// Graceful shutdowns never complete (the OS hangs); overrides --graceful-shutdown-secs.
    #[arg(long, env = "FERRIC_SIM_GRACEFUL_NEVER")]
    graceful_never: bool,
    /// Delay added to every Redfish answer.
    #[arg(long, default_value_t = 0, env = "FERRIC_SIM_LATENCY_MS")]
    latency_ms: u64,
    /// Fraction (0 to 1) of Redfish requests to a system answered 500, without effect.
    #[arg(long, default_value_t = 0.0, env = "FERRIC_SIM_FAILURE_RATE")]
    failure_rate: f64,
    /// Seed of the failure draws; random (and printed) when not given.
    #[arg(long, env = "FERRIC_SIM_SEED")]
    seed: Option<u64>,
    /// Configure deploy agents at start from this JSON file, the body of `PUT /sim/agents`:
    /// {"api_url": "http://127.0.0.1:6385", "interval_ms": 1000, "nodes": {"sim-0": "<node uuid>"}}
    /// (optional: "token", "stop_after", "fail_after"). An agent heartbeats to
    /// <api_url>/v1/heartbeat/<node> while its system runs a PXE boot.
    #[arg(long, env = "FERRIC_SIM_AGENTS")]
    agents: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(random_seed);
    let cfg = SimConfig {
        systems: args.systems,
        id_prefix: args.id_prefix,
        username: args.username,
        password: args.password,
        log_path: args.log,
        log_memory_entries: args.log_memory,
        behaviour: Behaviour {
            graceful_shutdown_secs: (!args.graceful_never).then_some(args.graceful_shutdown_secs),
            latency_ms: args.latency_ms,
            failure_rate: args.failure_rate,
            unreachable: false,
        },
        seed,
    };
    let (n, first, last) = (
        cfg.systems,
        cfg.system_id(0),
        cfg.system_id(cfg.systems.saturating_sub(1)),
    );
    let state = SimState::new(cfg).context("cannot start the simulator")?;
    if let Some(path) = &args.agents {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let spec: FleetAgentSpec = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not an agents body", path.display()))?;
        state
            .configure_agents(&spec)
            .with_context(|| format!("invalid agents in {}", path.display()))?;
    }
    // Before announcing the address: a signal sent right after the line is read must stop us.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        // Tests parse the first line; keep its shape.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "ferric sim: {n} systems at http://{addr}/redfish/v1/Systems/<id>"
        )?;
        if n > 0 {
            writeln!(
                out,
                "ferric sim: ids {first} to {last}, seed {seed}, control API at http://{addr}/sim/"
            )?;
            writeln!(
                out,
                "ferric sim: serial consoles at ws://{addr}/sim/systems/<id>/serial"
            )?;
        }
        out.flush()?;
    }
    ferric_sim::serve_state(listener, state, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
    .await;
    Ok(())
}

/// A seed that differs between runs; printed so a run can be replayed with `--seed`.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

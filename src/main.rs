//! The `ferric` binary: one executable for every role. A thin main: parse the command line, set
//! up logging, hand over to the role.

/// jemalloc instead of glibc's malloc. In a profile of 20,000 enrollments (`perf record` of every
/// process on the machine) glibc's malloc, free and `malloc_consolidate` were about a quarter of
/// the gateway's and conductors' CPU; with jemalloc their CPU per request fell by about a fifth
/// (against etcd's, as a measure of the machine's speed of the moment), and memory per node stayed
/// within 5 %. mimalloc saved a little less CPU and cost 35 % more memory per node.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod bench;
mod bench_agent;
mod bench_api;
mod bench_cold;
mod bench_compare;
mod bench_dashboard;
mod bench_notify;
mod bench_ports;
mod bench_profile;
mod bench_target;
mod chaos;
mod check;
mod conductor_cmd;
mod config_file;
mod ctl;
mod dev;
mod dev_compute;
mod gateway_cmd;
mod metrics_server;
mod procs;
mod sim_cmd;
mod sys;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferric",
    version,
    about = "A conductor cluster for bare-metal fleets"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run a conductor: owns a share of the nodes and reconciles them.
    Conductor(Box<conductor_cmd::Args>),
    /// Administer a cluster: nodes and conductors.
    Ctl(ctl::Args),
    /// Run a whole local cluster (etcd, conductors, nodes) until Ctrl-C.
    Dev(dev::Args),
    /// Benchmarks against real etcd and conductor processes.
    Bench(bench::Args),
    /// Serve OpenStack Ironic's REST API (and Ferric's extensions) over the cluster.
    Gateway(Box<gateway_cmd::Args>),
    /// Serve a simulated fleet of Redfish BMCs (for dev, tests and benchmarks) until Ctrl-C.
    Sim(sim_cmd::Args),
    /// Check a config file: both roles' options, and the etcd cluster it names (version,
    /// members, leader, access to the prefix).
    Check(check::Args),
    /// Chaos: a multi-host cluster in network namespaces under a seeded fault schedule, with
    /// every invariant checked from independent records (root only).
    Chaos(chaos::Args),
    /// Build a chaos lab (network namespaces, a 3-member etcd), exercise its faults, remove it.
    #[command(hide = true)]
    ChaosLabSelftest(chaos::lab_selftest::Args),
}

fn main() -> std::process::ExitCode {
    use clap::CommandFactory;
    // `--config FILE` of a conductor or gateway: its options join the command line's.
    let argv = match config_file::expand(std::env::args_os().collect(), &Cli::command()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let export = match &cli.cmd {
        Cmd::Conductor(a) => a.otlp_endpoint.as_ref().map(|e| ferric_telemetry::Export {
            endpoint: e.clone(),
            service: "ferric-conductor",
            instance: a.name.clone(),
        }),
        Cmd::Gateway(a) => a.otlp_endpoint.as_ref().map(|e| ferric_telemetry::Export {
            endpoint: e.clone(),
            service: "ferric-gateway",
            instance: a
                .name
                .clone()
                .unwrap_or_else(|| format!("gateway@{}", a.listen)),
        }),
        _ => None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the trace exporter's gRPC channel lives on it.
    let telemetry = match rt.block_on(async { ferric_telemetry::init(export) }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Conductor(args) => conductor_cmd::run(*args).await,
            Cmd::Ctl(args) => ctl::run(args).await,
            Cmd::Dev(args) => dev::run(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Gateway(args) => gateway_cmd::run(*args).await,
            Cmd::Sim(args) => sim_cmd::run(args).await,
            Cmd::Check(args) => check::run(args).await,
            Cmd::Chaos(args) => chaos::run(args).await,
            Cmd::ChaosLabSelftest(args) => chaos::lab_selftest::run(args).await,
        }
    });
    // Flushes the queued spans while the runtime still runs.
    drop(telemetry);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A reader that went away (`ferric ctl node list | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

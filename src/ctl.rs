//! `ferric ctl`: administration through the same `cluster` functions the gateway uses. One
//! module per subcommand: [`node`], [`conductor`], [`remediation`], [`sync`]; this file holds the shared
//! etcd flags and the dispatch.

/// println! that returns the error instead of panicking (a closed pipe ends `ctl` quietly).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

mod conductor;
mod events;
mod node;
mod remediation;
mod repair;
mod sync;

use ferric_cluster::{Cluster, EtcdConfig};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach etcd (shared by every role).
#[derive(clap::Args, Clone, Debug)]
pub struct EtcdArgs {
    /// etcd endpoints, comma separated.
    #[arg(
        long = "etcd",
        env = "FERRIC_ETCD",
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: String,
    /// Key prefix of this Ferric cluster in etcd.
    #[arg(long, env = "FERRIC_PREFIX", default_value = "/ferric/")]
    pub prefix: String,
    #[arg(long, env = "FERRIC_ETCD_USER")]
    pub etcd_user: Option<String>,
    #[arg(long, env = "FERRIC_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// CA certificate (PEM) to verify etcd's TLS certificate.
    #[arg(long, env = "FERRIC_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd mutual TLS.
    #[arg(long, env = "FERRIC_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, env = "FERRIC_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// Timeout of connecting and of each etcd request, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub etcd_timeout: f64,
}

impl EtcdArgs {
    pub fn config(&self) -> EtcdConfig {
        let mut cfg = EtcdConfig::new(&self.endpoints);
        cfg.prefix = self.prefix.clone();
        cfg.user = self.etcd_user.clone();
        cfg.password = self.etcd_password.clone();
        cfg.ca_cert = self.etcd_ca.clone();
        cfg.client_cert = self.etcd_cert.clone();
        cfg.client_key = self.etcd_key.clone();
        cfg.timeout = Duration::from_secs_f64(self.etcd_timeout.clamp(0.1, 300.0));
        cfg
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Nodes.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Conductors.
    #[command(subcommand)]
    Conductor(conductor::ConductorCmd),
    /// The remediation policy: what conductors do by themselves to nodes in maintenance with a
    /// fault (off unless a rule is set).
    #[command(subcommand)]
    Remediation(remediation::RemediationCmd),
    /// Power sync: what conductors do when a node's hardware is not in the last requested
    /// power state.
    #[command(subcommand)]
    Sync(sync::SyncCmd),
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.etcd.config()).await?;
    match args.cmd {
        Cmd::Node(cmd) => node::run(&cluster, cmd).await,
        Cmd::Conductor(cmd) => conductor::run(&cluster, cmd).await,
        Cmd::Remediation(cmd) => remediation::run(&cluster, cmd).await,
        Cmd::Sync(cmd) => sync::run(&cluster, cmd).await,
    }
}

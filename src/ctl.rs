//! `ferric ctl`: administration through the same `cluster` functions the gateway uses.

use anyhow::Context;
use ferric_cluster::{Cluster, EtcdConfig, NodeView};
use ferric_model::{now_ms, NodeId, NodeName, NodeSpec, PowerTarget, Verb};
use serde_json::{json, Value};
use std::io::Write;
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
    Node(NodeCmd),
    /// Conductors.
    #[command(subcommand)]
    Conductor(ConductorCmd),
}

#[derive(clap::Subcommand)]
enum NodeCmd {
    /// Enroll one node, or --count N nodes (names get a -N suffix).
    Create {
        #[arg(long, default_value = "fake-hardware")]
        driver: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value = "")]
        conductor_group: String,
    },
    /// List nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one node.
    Show {
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Request a power action.
    Power {
        node: String,
        /// on | off
        action: String,
    },
    /// Request a provision verb.
    Provision {
        node: String,
        /// manage | provide
        verb: String,
    },
}

#[derive(clap::Subcommand)]
enum ConductorCmd {
    /// Live conductors and the number of nodes each owns.
    List {
        #[arg(long)]
        json: bool,
    },
}

const WHO: &str = "ctl";

/// println! that returns the error instead of panicking (a closed pipe ends `ctl` quietly).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.etcd.config()).await?;
    match args.cmd {
        Cmd::Node(cmd) => node(&cluster, cmd).await,
        Cmd::Conductor(ConductorCmd::List { json }) => conductor_list(&cluster, json).await,
    }
}

async fn node(cluster: &Cluster, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Create {
            driver,
            name,
            count,
            conductor_group,
        } => {
            if count == 0 {
                anyhow::bail!("--count must be at least 1");
            }
            let now = now_ms();
            let mut specs = Vec::with_capacity(count);
            for i in 0..count {
                let mut spec = NodeSpec::new(NodeId::new_random(), &driver, now);
                spec.conductor_group = conductor_group.clone();
                if let Some(base) = &name {
                    let n = if count == 1 {
                        base.clone()
                    } else {
                        format!("{base}-{i}")
                    };
                    spec.name =
                        Some(NodeName::parse(&n).with_context(|| format!("invalid name {n:?}"))?);
                }
                specs.push(spec);
            }
            let mut failed = 0;
            for result in cluster.create_nodes(specs).await? {
                match result {
                    Ok(id) => out!("{id}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {count} nodes were not created");
            }
            Ok(())
        }
        NodeCmd::List { json } => {
            let (views, corrupt) = cluster.list_nodes().await?;
            if json {
                let list: Vec<Value> = views.iter().map(node_json).collect();
                out!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                out!(
                    "{:<36}  {:<20}  {:<10}  {:<16}  {:<11}  conductor",
                    "uuid",
                    "name",
                    "power",
                    "provision",
                    "maintenance"
                );
                for v in &views {
                    out!(
                        "{:<36}  {:<20}  {:<10}  {:<16}  {:<11}  {}",
                        v.spec.id,
                        v.spec.name.as_ref().map_or("", |n| n.as_str()),
                        v.status.power_state.map_or("None", |p| p.as_str()),
                        v.status.provision_state.as_str(),
                        v.spec.maintenance,
                        v.reservation.as_deref().unwrap_or("-"),
                    );
                }
            }
            for (key, e) in corrupt {
                eprintln!("warning: unreadable node record at {key}: {e}");
            }
            Ok(())
        }
        NodeCmd::Show { node, json } => {
            let view = cluster.get_node(&node).await?;
            let v = node_json(&view);
            if json {
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Value::Object(map) = v {
                for (k, v) in map {
                    out!(
                        "{k:<24} {}",
                        if v.is_string() {
                            v.as_str().unwrap_or("").to_string()
                        } else {
                            v.to_string()
                        }
                    );
                }
            }
            Ok(())
        }
        NodeCmd::Power { node, action } => {
            let target = match action.as_str() {
                "on" => PowerTarget::On,
                "off" => PowerTarget::Off,
                other => anyhow::bail!("unknown power action {other:?} (expected on or off)"),
            };
            let view = cluster.request_power(&node, target, None, WHO).await?;
            out!("requested {} for node {}", target.as_str(), view.spec.id);
            Ok(())
        }
        NodeCmd::Provision { node, verb } => {
            let verb = match Verb::parse(&verb) {
                Some(v @ (Verb::Manage | Verb::Provide)) => v,
                _ => anyhow::bail!("unknown provision verb {verb:?} (expected manage or provide)"),
            };
            let view = cluster
                .request_provision(&node, verb, false, "", WHO)
                .await?;
            out!("requested {} for node {}", verb.as_str(), view.spec.id);
            Ok(())
        }
    }
}

async fn conductor_list(cluster: &Cluster, json: bool) -> anyhow::Result<()> {
    let (_, conductors) = cluster.list_conductors().await?;
    let counts = cluster.reservation_counts().await?;
    let list: Vec<Value> = conductors
        .values()
        .map(|c| {
            json!({
                "name": c.name,
                "alive": true,
                "drivers": c.drivers,
                "conductor_group": c.conductor_group,
                "version": c.version,
                "lease_id": c.lease_id,
                "nodes": counts.get(&c.name).copied().unwrap_or(0),
                "running": c.running,
            })
        })
        .collect();
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        out!(
            "{:<24}  {:>8}  {:>8}  {:<16}  drivers",
            "name",
            "nodes",
            "running",
            "group"
        );
        for c in conductors.values() {
            out!(
                "{:<24}  {:>8}  {:>8}  {:<16}  {}",
                c.name,
                counts.get(&c.name).copied().unwrap_or(0),
                c.running,
                c.conductor_group,
                c.drivers.join(",")
            );
        }
    }
    Ok(())
}

/// A node in Ironic's field names and spellings.
pub fn node_json(v: &NodeView) -> Value {
    let s = &v.spec;
    let st = &v.status;
    json!({
        "uuid": s.id.to_string(),
        "name": s.name.as_ref().map(|n| n.as_str()),
        "driver": s.driver,
        "conductor_group": s.conductor_group,
        "power_state": st.power_state.map(|p| p.as_str()),
        "target_power_state": st.target_power_state.map(|p| p.as_str()),
        "provision_state": st.provision_state.as_str(),
        "target_provision_state": st.target_provision_state.map(|p| p.as_str()),
        "last_error": st.last_error.clone().or_else(|| v.status_error.clone()),
        "maintenance": s.maintenance,
        "maintenance_reason": s.maintenance_reason,
        "fault": st.fault,
        "reservation": v.reservation,
        "conductor": v.reservation,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms.max(st.updated_at_ms),
    })
}

//! `ferric ctl`: administration through the same `cluster` functions the gateway uses.

use anyhow::Context;
use ferric_cluster::{Cluster, EtcdConfig, NodeView};
use ferric_model::{
    now_ms, BootDevice, NodeId, NodeName, NodeSpec, PowerTarget, SoftOffPolicy, Verb,
};
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
    /// The remediation policy: what conductors do by themselves to nodes in maintenance with a
    /// fault (off unless a rule is set).
    #[command(subcommand)]
    Remediation(RemediationCmd),
}

#[derive(clap::Subcommand)]
enum RemediationCmd {
    /// The current policy.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Adds or replaces the rule for one fault, and sets the cluster-wide rate limit.
    Set {
        /// The fault: "clean failure", "power failure", "service failure", "rescue abort failure".
        #[arg(long)]
        fault: String,
        /// "clean" (manage, provide; back to available if cleaning passes) or "power-check"
        /// (read the power state; leave maintenance if that works).
        #[arg(long, default_value = "clean")]
        action: String,
        /// Attempts per fault episode (an episode ends when the node leaves maintenance).
        #[arg(long, default_value_t = 1)]
        attempts: u32,
        /// At most this many attempts start per window, across the cluster.
        #[arg(long, default_value_t = 10)]
        max_per_window: u32,
        #[arg(long, default_value_t = 60)]
        window_secs: u32,
    },
    /// Removes the rule for one fault, or every rule (remediation off).
    Off {
        #[arg(long)]
        fault: Option<String>,
    },
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
        /// Ironic's driver_info as a JSON object; with --count, `{n}` is replaced by the node's
        /// index, zero-padded to 5 digits (e.g. a `ferric sim` system id `sim-{n}`).
        #[arg(long, default_value = "{}")]
        driver_info: String,
        /// What a soft power off timeout means: error (default) or hard-off.
        #[arg(long, default_value = "error")]
        soft_off_policy: String,
        /// Refuse power off (reboot becomes a reset).
        #[arg(long)]
        disable_power_off: bool,
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
    /// Request a power action (of one node, a comma-separated list, or `all`).
    Power {
        node: String,
        /// on | off | soft-off | reboot | soft-reboot
        action: String,
        /// Seconds the operation may take (soft: until the OS has shut down).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Set the boot device.
    BootDevice {
        node: String,
        /// pxe | disk | bios | cdrom
        device: String,
        #[arg(long)]
        persistent: bool,
    },
    /// Put a node into maintenance (on, with a reason) or take it out (off: clears the reason,
    /// and the owner clears the fault).
    Maintenance {
        node: String,
        /// on | off
        state: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable or disable the node's serial console (the owner opens one session to the BMC;
    /// viewers connect through the gateway's `/v1/nodes/<id>/console/ws`).
    Console {
        /// A node, or a comma-separated list of nodes.
        node: String,
        /// on | off
        state: String,
    },
    /// The node's history: who asked for what, when, and how it ended.
    History {
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Request a provision verb.
    Provision {
        node: String,
        /// manage | provide | clean | inspect | deploy (active) | rebuild | undeploy (deleted) |
        /// abort | adopt | rescue | unrescue | unhold | service
        verb: String,
        /// Run manual cleaning although the node is in maintenance (Ferric extension).
        #[arg(long)]
        maintenance_ok: bool,
    },
}

#[derive(clap::Subcommand)]
enum ConductorCmd {
    /// Live conductors and the number of nodes each owns.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Force a live but misbehaving conductor out: revoke its lease (its nodes move on at once;
    /// it stops every actor, sends no BMC command and exits). Recorded with who and why.
    Evict {
        name: String,
        #[arg(long, default_value = "evicted by an operator")]
        reason: String,
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
        Cmd::Remediation(cmd) => remediation(&cluster, cmd).await,
        Cmd::Conductor(ConductorCmd::Evict { name, reason }) => {
            let by = format!(
                "ctl ({})",
                std::env::var("USER").unwrap_or_else(|_| "unknown user".into())
            );
            let rec = cluster.evict_conductor(&name, &by, &reason).await?;
            writeln!(
                std::io::stdout().lock(),
                "evicted conductor {name} (lease {}); its nodes are being taken over",
                rec.lease_id
            )?;
            Ok(())
        }
    }
}

async fn remediation(cluster: &Cluster, cmd: RemediationCmd) -> anyhow::Result<()> {
    use ferric_model::{faults, RemediationAction, RemediationRule};
    let mut policy = cluster.remediation_policy().await?;
    match cmd {
        RemediationCmd::Show { json } => {
            if json {
                let rules: Vec<Value> = policy
                    .rules
                    .iter()
                    .map(|r| json!({"fault": r.fault, "action": r.action.as_str(), "attempts": r.attempts}))
                    .collect();
                let doc = json!({
                    "rules": rules,
                    "max_per_window": policy.max_per_window,
                    "window_secs": policy.window_secs,
                });
                out!("{}", serde_json::to_string_pretty(&doc)?);
            } else if policy.rules.is_empty() {
                out!("remediation is off (no rules)");
            } else {
                out!(
                    "at most {} attempts per {} s across the cluster",
                    policy.max_per_window,
                    policy.window_secs
                );
                for r in &policy.rules {
                    out!(
                        "{:<22} {:<12} {} attempt(s)",
                        r.fault,
                        r.action.as_str(),
                        r.attempts
                    );
                }
            }
            return Ok(());
        }
        RemediationCmd::Set {
            fault,
            action,
            attempts,
            max_per_window,
            window_secs,
        } => {
            if !faults::ALL.contains(&fault.as_str()) {
                anyhow::bail!(
                    "unknown fault {fault:?} (expected one of: {})",
                    faults::ALL.join(", ")
                );
            }
            let Some(action) = RemediationAction::parse(&action) else {
                anyhow::bail!("unknown action {action:?} (expected clean or power-check)");
            };
            policy.rules.retain(|r| r.fault != fault);
            policy.rules.push(RemediationRule {
                fault,
                action,
                attempts,
            });
            policy.max_per_window = max_per_window;
            policy.window_secs = window_secs;
        }
        RemediationCmd::Off { fault: Some(f) } => policy.rules.retain(|r| r.fault != f),
        RemediationCmd::Off { fault: None } => policy.rules.clear(),
    }
    cluster.set_remediation_policy(&policy).await?;
    out!("remediation policy saved: {} rule(s)", policy.rules.len());
    Ok(())
}

async fn node(cluster: &Cluster, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Create {
            driver,
            name,
            count,
            conductor_group,
            driver_info,
            soft_off_policy,
            disable_power_off,
        } => {
            if count == 0 {
                anyhow::bail!("--count must be at least 1");
            }
            let policy = match soft_off_policy.as_str() {
                "error" => SoftOffPolicy::Error,
                "hard-off" => SoftOffPolicy::HardOff,
                other => anyhow::bail!(
                    "unknown --soft-off-policy {other:?} (expected error or hard-off)"
                ),
            };
            let now = now_ms();
            let mut specs = Vec::with_capacity(count);
            for i in 0..count {
                let mut spec = NodeSpec::new(NodeId::new_random(), &driver, now);
                spec.conductor_group = conductor_group.clone();
                spec.soft_off_policy = policy;
                spec.disable_power_off = disable_power_off;
                let info_text = driver_info.replace("{n}", &format!("{i:05}"));
                let info: Value = serde_json::from_str(&info_text)
                    .with_context(|| format!("--driver-info is not JSON: {info_text}"))?;
                ferric_power::validate_driver_info(&driver, &info).map_err(|e| {
                    anyhow::anyhow!("invalid driver_info for driver {driver:?}: {e}")
                })?;
                spec.driver_info = info.to_string();
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
        NodeCmd::Power {
            node,
            action,
            timeout,
        } => {
            let target = match action.as_str() {
                "on" | "off" | "soft-off" | "reboot" | "soft-reboot" => {
                    PowerTarget::parse(&action).expect("listed")
                }
                other => anyhow::bail!(
                    "unknown power action {other:?} (expected on, off, soft-off, reboot or soft-reboot)"
                ),
            };
            if timeout == Some(0) {
                anyhow::bail!("--timeout must be at least 1 second");
            }
            if node == "all" || node.contains(',') {
                let ids: Vec<NodeId> = if node == "all" {
                    cluster
                        .list_nodes()
                        .await?
                        .0
                        .iter()
                        .map(|v| v.spec.id)
                        .collect()
                } else {
                    let mut ids = Vec::new();
                    for n in node.split(',').filter(|n| !n.is_empty()) {
                        ids.push(cluster.resolve(n).await?);
                    }
                    ids
                };
                let results = cluster
                    .request_power_many(&ids, target, timeout, WHO)
                    .await?;
                let failed: Vec<String> = ids
                    .iter()
                    .zip(&results)
                    .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
                    .collect();
                out!(
                    "requested {} for {} nodes",
                    target.as_str(),
                    ids.len() - failed.len()
                );
                for f in &failed {
                    eprintln!("error: {f}");
                }
                if !failed.is_empty() {
                    anyhow::bail!("{} of {} requests refused", failed.len(), ids.len());
                }
                return Ok(());
            }
            let view = cluster.request_power(&node, target, timeout, WHO).await?;
            out!("requested {} for node {}", target.as_str(), view.spec.id);
            Ok(())
        }
        NodeCmd::BootDevice {
            node,
            device,
            persistent,
        } => {
            let dev = BootDevice::parse(&device).with_context(|| {
                format!("unknown boot device {device:?} (expected pxe, disk, bios or cdrom)")
            })?;
            let view = cluster
                .request_boot_device(&node, dev, persistent, WHO)
                .await?;
            out!(
                "requested boot device {} for node {}",
                dev.as_str(),
                view.spec.id
            );
            Ok(())
        }
        NodeCmd::Maintenance {
            node,
            state,
            reason,
        } => {
            let on = match state.as_str() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!("unknown maintenance state {other:?} (expected on or off)"),
            };
            let view = cluster
                .update_spec(&node, |_, spec| {
                    spec.maintenance = on;
                    spec.maintenance_reason = if on { reason.clone() } else { None };
                    Ok(())
                })
                .await?;
            out!(
                "node {} maintenance {}",
                view.spec.id,
                if on { "on" } else { "off" }
            );
            Ok(())
        }
        NodeCmd::Console { node, state } => {
            let on = match state.as_str() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!("unknown console state {other:?} (expected on or off)"),
            };
            for n in node.split(',').filter(|n| !n.is_empty()) {
                let view = cluster
                    .update_spec(n, |_, spec| {
                        spec.console_enabled = on;
                        Ok(())
                    })
                    .await?;
                out!(
                    "node {} console {}",
                    view.spec.id,
                    if on { "on" } else { "off" }
                );
            }
            Ok(())
        }
        NodeCmd::History { node, json } => {
            let history = cluster.node_history(&node).await?;
            if json {
                let list: Vec<Value> = history
                    .entries
                    .iter()
                    .map(|e| {
                        json!({
                            "created_at_ms": e.at_ms,
                            "event_type": e.kind,
                            "event": e.action,
                            "user": e.requested_by,
                            "conductor": e.conductor,
                            "severity": e.severity,
                            "result": e.result,
                        })
                    })
                    .collect();
                out!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for e in &history.entries {
                    out!(
                        "{}  {:<5}  {:<12}  {:<40}  by {:<12} on {:<12}  {}",
                        e.at_ms,
                        e.severity,
                        e.kind,
                        e.action,
                        e.requested_by,
                        e.conductor,
                        e.result
                    );
                }
            }
            Ok(())
        }
        NodeCmd::Provision {
            node,
            verb,
            maintenance_ok,
        } => {
            let verb = Verb::parse(&verb).with_context(|| {
                let all: Vec<&str> = Verb::ALL.iter().map(|v| v.as_str()).collect();
                format!(
                    "unknown provision verb {verb:?} (expected one of: {})",
                    all.join(", ")
                )
            })?;
            if maintenance_ok && verb != Verb::Clean {
                anyhow::bail!("--maintenance-ok is only valid with the clean verb");
            }
            let view = cluster
                .request_provision(&node, verb, maintenance_ok, "", WHO)
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

/// driver_info with every secret replaced by `******` (secrets never leave Ferric); an
/// unreadable one shows as why it is unreadable (the error text holds no secret).
fn masked(driver_info: &str) -> Value {
    match ferric_model::DriverInfo::parse(driver_info) {
        Ok(info) => Value::Object(info.masked()),
        Err(e) => Value::String(format!("<invalid driver_info: {e}>")),
    }
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
        "driver_info": masked(&s.driver_info),
        "boot_device": st.boot_device.map(|b| b.as_str()),
        "disable_power_off": s.disable_power_off,
        "soft_off_policy": match s.soft_off_policy { SoftOffPolicy::Error => "error", SoftOffPolicy::HardOff => "hard-off" },
        "power_operation": st.power_op.as_ref().map(|op| json!({
            "target": op.target.as_str(),
            "started_at_ms": op.started_at_ms,
            "deadline_ms": op.deadline_ms,
            "soft_sent": op.soft_sent,
        })),
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms.max(st.updated_at_ms),
    })
}

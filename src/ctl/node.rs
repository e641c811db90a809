//! `ferric ctl node`: enroll, list, show, and request actions of nodes; and a node in Ironic's
//! field names for `--json`.

use anyhow::Context;
use ferric_cluster::{Cluster, NodeView};
use ferric_model::{
    now_ms, BootDevice, NodeId, NodeName, NodeSpec, PowerTarget, SoftOffPolicy, Verb,
};
use serde_json::{json, Value};
use std::io::Write;

/// Who a request came from, in the node's history.
const WHO: &str = "ctl";

#[derive(clap::Subcommand)]
pub(super) enum NodeCmd {
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
        /// Ironic's driver_info as a JSON object; `{index}` is replaced by the node's index from
        /// 0, as `ferric sim` numbers its systems (`/redfish/v1/Systems/sim-{index}`) and as
        /// `--name` numbers names.
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
    /// The node's power events (the outbox) and how far each was delivered: to the compute
    /// service (Nova) and to the webhook, with the receiver's code and time, `pending`, or
    /// `not applicable` (no instance, or a state that is not on or off).
    Events {
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// A node's raw records in etcd and which cannot be decoded; with --delete or --spec-file,
    /// the repair the API offers too (for a node whose spec or status cannot be read).
    Repair(super::repair::RepairArgs),
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

pub(super) async fn run(cluster: &Cluster, cmd: NodeCmd) -> anyhow::Result<()> {
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
                let info_text = numbered(&driver_info, i);
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
        NodeCmd::Repair(args) => super::repair::run(cluster, args).await,
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
                eprintln!(
                    "warning: unreadable node record at {key}: {e} (`ferric ctl node repair <uuid>` shows it and repairs it)"
                );
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
            let view = cluster
                .request_power(None, &node, target, timeout, WHO)
                .await?;
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
                .request_boot_device(None, &node, dev, persistent, WHO)
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
        NodeCmd::Events { node, json } => super::events::run(cluster, &node, json).await,
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
                .request_provision(None, &node, verb, maintenance_ok, "", WHO)
                .await?;
            out!("requested {} for node {}", verb.as_str(), view.spec.id);
            Ok(())
        }
    }
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

/// A `--driver-info` template for node `i` of a batch: `{index}` becomes `i`, unpadded, as the
/// simulator's system ids (`sim-0`, `sim-1`, ...) are. (`{n}` too, its first spelling: clap's
/// help shows `{n}` as a line break, so the help names `{index}`.)
fn numbered(template: &str, i: usize) -> String {
    let i = i.to_string();
    template.replace("{index}", &i).replace("{n}", &i)
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn numbers_match_the_simulators_system_ids() {
        let t = r#"{"redfish_system_id": "/redfish/v1/Systems/sim-{index}"}"#;
        assert_eq!(
            numbered(&t.replace("{index}", "{n}"), 0),
            r#"{"redfish_system_id": "/redfish/v1/Systems/sim-0"}"#
        );
        assert_eq!(
            numbered(t, 0),
            r#"{"redfish_system_id": "/redfish/v1/Systems/sim-0"}"#
        );
        assert_eq!(
            numbered(t, 12),
            r#"{"redfish_system_id": "/redfish/v1/Systems/sim-12"}"#
        );
        assert_eq!(numbered("{}", 3), "{}");
    }
}

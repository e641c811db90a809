//! `ferric ctl conductor`: the live conductors, and evicting one.

use ferric_cluster::Cluster;
use serde_json::{json, Value};
use std::io::Write;

#[derive(clap::Subcommand)]
pub(super) enum ConductorCmd {
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

pub(super) async fn run(cluster: &Cluster, cmd: ConductorCmd) -> anyhow::Result<()> {
    match cmd {
        ConductorCmd::List { json } => list(cluster, json).await,
        ConductorCmd::Evict { name, reason } => {
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

async fn list(cluster: &Cluster, json: bool) -> anyhow::Result<()> {
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

//! `ferric ctl sync`: show and change the cluster's power sync policy (`config/sync`).

use ferric_cluster::{Cluster, ClusterError};
use ferric_model::{SyncConfig, SyncPolicy};
use serde_json::json;
use std::io::Write;

#[derive(clap::Subcommand)]
pub(super) enum SyncCmd {
    /// The current policy.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Sets the policy every conductor's sweeps follow (a node's `driver_info`
    /// `ferric_power_sync` overrides it): `observe` records what the hardware says and never
    /// pushes; `enforce` restores the last requested power state after two sweeps in a row and
    /// the grace period, never cutting power after a soft power off nor powering off a
    /// `disable_power_off` node.
    Set {
        #[arg(long)]
        policy: String,
    },
}

pub(super) async fn run(cluster: &Cluster, cmd: SyncCmd) -> anyhow::Result<()> {
    match cmd {
        SyncCmd::Show { json } => {
            let (config, note) = match cluster.sync_config().await {
                Ok(c) => (c, None),
                Err(e @ ClusterError::Corrupt { .. }) => (
                    SyncConfig::default(),
                    Some(format!(
                        "{e}; conductors use the defaults until it is set again"
                    )),
                ),
                Err(e) => return Err(e.into()),
            };
            if json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"policy": config.policy.as_str(), "error": note})
                    )?
                );
            } else {
                out!("power sync policy: {}", config.policy);
                if let Some(note) = note {
                    out!("warning: {note}");
                }
            }
        }
        SyncCmd::Set { policy } => {
            let policy = SyncPolicy::parse(&policy).map_err(anyhow::Error::msg)?;
            cluster.set_sync_config(&SyncConfig { policy }).await?;
            out!("power sync policy set: {policy}");
        }
    }
    Ok(())
}

//! `ferric ctl sync`: show and change the cluster's settings in `config/sync`: the power sync
//! policy, and the default of nodes' `automated_clean` (Ironic's `[conductor] automated_clean`).

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
    ///
    /// `--automated-clean false` makes `provide` and tear down skip cleaning for nodes whose
    /// own `automated_clean` is unset (Ironic's `[conductor] automated_clean`; default true).
    Set {
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        automated_clean: Option<bool>,
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
                    serde_json::to_string_pretty(&json!({
                        "policy": config.policy.as_str(),
                        "automated_clean": config.automated_clean,
                        "error": note
                    }))?
                );
            } else {
                out!("power sync policy: {}", config.policy);
                out!("automated clean (default): {}", config.automated_clean);
                if let Some(note) = note {
                    out!("warning: {note}");
                }
            }
        }
        SyncCmd::Set {
            policy,
            automated_clean,
        } => {
            if policy.is_none() && automated_clean.is_none() {
                anyhow::bail!("nothing to set: give --policy and/or --automated-clean");
            }
            let mut config = cluster.sync_config().await.unwrap_or_default();
            if let Some(p) = policy {
                config.policy = SyncPolicy::parse(&p).map_err(anyhow::Error::msg)?;
                out!("power sync policy set: {}", config.policy);
            }
            if let Some(a) = automated_clean {
                config.automated_clean = a;
                out!("automated clean (default) set: {a}");
            }
            cluster.set_sync_config(&config).await?;
        }
    }
    Ok(())
}

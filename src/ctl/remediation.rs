//! `ferric ctl remediation`: show and change the cluster's remediation policy.

use ferric_cluster::Cluster;
use ferric_model::{faults, RemediationAction, RemediationRule};
use serde_json::{json, Value};
use std::io::Write;

#[derive(clap::Subcommand)]
pub(super) enum RemediationCmd {
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

pub(super) async fn run(cluster: &Cluster, cmd: RemediationCmd) -> anyhow::Result<()> {
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

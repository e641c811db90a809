//! Caching the node's BIOS settings in etcd (`bios/<uuid>`), as Ironic caches them: when the
//! node is verified (`manage`) and when cleaning ends, never on an API read. A driver or
//! machine without BIOS settings, or a node whose `bios_interface` is `no-bios`, leaves the
//! cache as it is; a failed read is logged and never
//! fails the operation it follows (Ironic's `node_cache_bios_settings` does not either).

use super::power::power_actor;
use super::{NodeMsg, NodeState};
use crate::error::NodeError;
use ferric_cluster::ClusterError;
use ferric_model::{now_ms, BiosRecord};
use ferric_power::power_actor::BIOS_TIMEOUTS;
use ferric_power::PowerMsg;
use ractor::ActorRef;
use std::time::Duration;

/// Whether the node's BIOS interface reads settings: only then does verification or the end of
/// cleaning cache them (`no-bios`, the default as in Ironic's default configuration, does
/// nothing).
pub(super) fn reads_bios(state: &NodeState) -> bool {
    state.spec.as_deref().and_then(|s| s.interface("bios")) == Some("redfish")
}

/// Reads the settings through the power actor and writes them, fenced. Only a fenced write is
/// an error (someone else owns the node).
pub(super) async fn cache_bios(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<(), NodeError> {
    if !state.may_command() || state.unserved().is_some() {
        // A caretaker never talks to the BMC.
        return Ok(());
    }
    if !reads_bios(state) {
        return Ok(());
    }
    let node = state.id;
    let power = match power_actor(myself, state).await {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(%node, %error, "cannot cache BIOS settings");
            return Ok(());
        }
    };
    let bmc = &state.ctx.bmc;
    let timeout = bmc.command_timeout * BIOS_TIMEOUTS + bmc.min_gap + Duration::from_secs(1);
    let settings = match ractor::call_t!(power, PowerMsg::Bios, timeout.as_millis() as u64) {
        Ok(Ok(Some(settings))) => settings,
        Ok(Ok(None)) => {
            tracing::debug!(%node, "no BIOS settings to cache for this driver or machine");
            return Ok(());
        }
        Ok(Err(error)) => {
            tracing::warn!(%node, %error, "caching of BIOS settings failed");
            return Ok(());
        }
        Err(error) => {
            tracing::warn!(%node, %error, "caching of BIOS settings failed: no answer from the power actor");
            return Ok(());
        }
    };
    let previous = match state.ctx.store.read_bios(node).await {
        Ok(p) => p,
        // An unreadable cache is replaced by the fresh reading.
        Err(ClusterError::Corrupt { key, source }) => {
            tracing::warn!(%node, %key, error = %source, "replacing an unreadable BIOS cache");
            None
        }
        Err(error) => {
            tracing::warn!(%node, %error, "caching of BIOS settings failed");
            return Ok(());
        }
    };
    let record = BiosRecord::merge(previous.as_ref(), settings, now_ms(), &state.ctx.me);
    match state.ctx.store.write_bios(node, state.token, &record).await {
        Ok(()) => {
            tracing::info!(%node, settings = record.settings.len(), "cached BIOS settings");
            Ok(())
        }
        Err(ClusterError::Fenced(_)) => Err(NodeError::Fenced(node)),
        Err(error) => {
            tracing::warn!(%node, %error, "caching of BIOS settings failed");
            Ok(())
        }
    }
}

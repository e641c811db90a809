//! What a node actor reads from and writes to etcd, as a small trait: the conductor gives its
//! actors the etcd implementation (`EtcdStore`), and the actor's unit tests an in-memory one.
//! Every write here is fenced by the node's reservation (its create revision is the token).

use ferric_cluster::remediation::Slot;
use ferric_cluster::{Cluster, ClusterError, NodeView, StatusWriter};
use ferric_model::{
    now_ms, AgentTokenRecord, BiosRecord, EventRecord, FenceToken, HeartbeatRecord, HistoryEntry,
    NodeId, NodeSpec, NodeStatus, ProvisionRequest, RemediationPolicy, Verb,
};
use futures::future::BoxFuture;
use std::sync::Arc;

/// A change the owning conductor makes to a node's spec (the only spec writes a conductor
/// makes; see DESIGN.md's keyspace). Pure: `apply` is what every store runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecChange {
    /// Maintenance on because of a fault, unless it already is (an operator's reason stays).
    MaintenanceForFault(String),
    /// Maintenance on with this reason (a failed remediation says why in the reason).
    Maintenance(String),
    /// Maintenance off (a remediation succeeded).
    LeaveMaintenance,
    /// Remediation asks for a provision verb, unless a provision request is already pending.
    Provision(Verb),
}

impl SpecChange {
    pub fn apply(&self, view: &NodeView, spec: &mut NodeSpec) {
        match self {
            SpecChange::MaintenanceForFault(reason) => {
                if !view.spec.maintenance {
                    spec.maintenance = true;
                    spec.maintenance_reason = Some(reason.clone());
                }
            }
            SpecChange::Maintenance(reason) => {
                spec.maintenance = true;
                spec.maintenance_reason = Some(reason.clone());
            }
            SpecChange::LeaveMaintenance => {
                spec.maintenance = false;
                spec.maintenance_reason = None;
            }
            SpecChange::Provision(verb) => {
                if view.spec.pending_provision(&view.status).is_some() {
                    return;
                }
                spec.provision_request = Some(ProvisionRequest {
                    seq: spec.next_provision_seq(),
                    verb: *verb,
                    maintenance_ok: true,
                    args: String::new(),
                    requested_by: "remediation".into(),
                    requested_at_ms: now_ms(),
                });
            }
        }
    }
}

pub trait NodeStore: Send + Sync + 'static {
    /// The node's spec, status and reservation holder.
    fn read_node(&self, id: NodeId) -> BoxFuture<'_, Result<NodeView, ClusterError>>;

    /// The agent's last heartbeat and the revision it was written at.
    fn last_heartbeat(
        &self,
        id: NodeId,
    ) -> BoxFuture<'_, Result<Option<(HeartbeatRecord, i64)>, ClusterError>>;

    /// A fenced status write, with a history entry and an outbox event in the same
    /// transaction. `ClusterError::Fenced` when `token` is no longer the reservation's.
    fn write_status<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        status: &'a NodeStatus,
        history: Option<&'a HistoryEntry>,
        event: Option<&'a EventRecord>,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// A fenced compare-and-swap of the spec; the new view on success.
    fn update_spec<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        change: &'a SpecChange,
    ) -> BoxFuture<'a, Result<NodeView, ClusterError>>;

    /// A slot of the cluster-wide remediation rate limit.
    fn take_remediation_slot<'a>(
        &'a self,
        policy: &'a RemediationPolicy,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Slot, ClusterError>>;

    /// Deletes the node's agent token (fenced).
    fn wipe_agent_token(
        &self,
        id: NodeId,
        token: FenceToken,
    ) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// The node's cached BIOS settings.
    fn read_bios(&self, id: NodeId) -> BoxFuture<'_, Result<Option<BiosRecord>, ClusterError>>;

    /// The record of the agent token a lookup issued for the node's current boot.
    fn agent_token(
        &self,
        id: NodeId,
    ) -> BoxFuture<'_, Result<Option<AgentTokenRecord>, ClusterError>>;

    /// A fenced write of the node's cached BIOS settings.
    fn write_bios<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        record: &'a BiosRecord,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;
}

/// The store of a conductor session: etcd, with status writes batched by the session's writer.
pub struct EtcdStore {
    pub cluster: Cluster,
    pub writer: StatusWriter,
    /// Told of every outbox event written (the conductor's event deliverer).
    pub events: Option<Arc<dyn crate::conductor::OwnershipHook>>,
}

impl NodeStore for EtcdStore {
    fn read_node(&self, id: NodeId) -> BoxFuture<'_, Result<NodeView, ClusterError>> {
        Box::pin(async move { self.cluster.get_node(&id.to_string()).await })
    }

    fn last_heartbeat(
        &self,
        id: NodeId,
    ) -> BoxFuture<'_, Result<Option<(HeartbeatRecord, i64)>, ClusterError>> {
        Box::pin(async move { self.cluster.last_heartbeat_rev(&id).await })
    }

    fn write_status<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        status: &'a NodeStatus,
        history: Option<&'a HistoryEntry>,
        event: Option<&'a EventRecord>,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            self.writer
                .write_with(id, token, status, history, event)
                .await?;
            // Only a write etcd confirmed: an unconfirmed one stays with the actor, which
            // writes the same event again until etcd confirms it (`effects::flush`), or is
            // fenced, and then the next owner reads the node's events from etcd.
            if let (Some(event), Some(hook)) = (event, &self.events) {
                hook.event_written(id, token, event);
            }
            Ok(())
        })
    }

    fn update_spec<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        change: &'a SpecChange,
    ) -> BoxFuture<'a, Result<NodeView, ClusterError>> {
        Box::pin(async move {
            self.cluster
                .update_spec_fenced(&id, token, |view, spec| {
                    change.apply(view, spec);
                    Ok(())
                })
                .await
        })
    }

    fn take_remediation_slot<'a>(
        &'a self,
        policy: &'a RemediationPolicy,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Slot, ClusterError>> {
        Box::pin(self.cluster.take_remediation_slot(policy, now_ms))
    }

    fn read_bios(&self, id: NodeId) -> BoxFuture<'_, Result<Option<BiosRecord>, ClusterError>> {
        Box::pin(async move { self.cluster.node_bios(&id).await })
    }

    fn agent_token(
        &self,
        id: NodeId,
    ) -> BoxFuture<'_, Result<Option<AgentTokenRecord>, ClusterError>> {
        Box::pin(async move { self.cluster.agent_token(&id).await })
    }

    fn wipe_agent_token(
        &self,
        id: NodeId,
        token: FenceToken,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move { self.cluster.wipe_agent_token(&id, token).await })
    }

    fn write_bios<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        record: &'a BiosRecord,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.cluster.write_bios(&id, token, record).await })
    }
}

#[cfg(test)]
pub(crate) mod memory;

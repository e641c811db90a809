//! An in-memory `NodeStore` for unit tests of node actors: one node's records, fenced like
//! etcd's (a write with a token other than the reservation's is refused), with the spec
//! changes the node's owner makes delivered back to it as the conductor's watch would.

use super::{NodeStore, SpecChange};
use crate::node_actor::NodeMsg;
use ferric_cluster::remediation::Slot;
use ferric_cluster::{ClusterError, NodeView};
use ferric_model::HeartbeatRecord;
use ferric_model::{
    AgentTokenRecord, BiosRecord, EventRecord, FenceToken, HistoryEntry, NodeId, NodeSpec,
    NodeStatus, ProvisionState, RemediationPolicy,
};
use futures::future::BoxFuture;
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::Mutex;

pub(crate) struct MemStore {
    inner: Mutex<Inner>,
}

/// The records of the one node, as etcd would hold them.
pub(crate) struct Inner {
    pub(crate) rev: i64,
    pub(crate) spec: NodeSpec,
    pub(crate) spec_rev: i64,
    pub(crate) status: Option<NodeStatus>,
    /// Set to make the status record read as corrupt (until a status is written).
    pub(crate) status_error: Option<String>,
    /// Set to make the spec record read as corrupt (until the spec changes).
    pub(crate) spec_error: Option<String>,
    /// The reservation's create revision (the token a write must carry); None: not reserved.
    pub(crate) reservation: Option<FenceToken>,
    pub(crate) history: Vec<HistoryEntry>,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) heartbeat: Option<(HeartbeatRecord, i64)>,
    pub(crate) bios: Option<BiosRecord>,
    /// The agent token record a lookup issued (the gateway's).
    pub(crate) agent_token: Option<AgentTokenRecord>,
    /// Agent token wipes done (the store keeps no token; the gateway issues them).
    pub(crate) token_wipes: u32,
    /// The next this many requests fail as if etcd were unreachable.
    pub(crate) unavailable: u32,
    /// The next this many reads of the node fail as if etcd were unreachable.
    pub(crate) reads_failing: u32,
    /// Status writes attempted (refused ones too).
    pub(crate) writes_tried: u32,
    /// Every status written, in order: its provision state and whether the spec was in
    /// maintenance when it was written (what a client reading both at that moment saw).
    pub(crate) written: Vec<(ProvisionState, bool)>,
    /// Answers to remediation slot requests, in order; granted when empty.
    pub(crate) slots: VecDeque<Slot>,
    /// The actor that gets `NodeMsg::Spec` after every spec change (the conductor's watch).
    pub(crate) watcher: Option<ActorRef<NodeMsg>>,
}

impl MemStore {
    pub(crate) fn new(spec: NodeSpec, status: Option<NodeStatus>, token: FenceToken) -> Self {
        MemStore {
            inner: Mutex::new(Inner {
                rev: 10,
                spec,
                spec_rev: 10,
                status,
                status_error: None,
                spec_error: None,
                reservation: Some(token),
                history: Vec::new(),
                events: Vec::new(),
                heartbeat: None,
                bios: None,
                agent_token: None,
                token_wipes: 0,
                unavailable: 0,
                reads_failing: 0,
                writes_tried: 0,
                written: Vec::new(),
                slots: VecDeque::new(),
                watcher: None,
            }),
        }
    }

    /// Reads or changes the records under the lock.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// A user's change of the spec (the gateway's compare-and-swap), then the watch event.
    pub(crate) fn user_change(&self, f: impl FnOnce(&mut NodeSpec)) {
        let (spec, rev, watcher) = self.with(|i| {
            f(&mut i.spec);
            i.spec_error = None;
            i.rev += 1;
            i.spec_rev = i.rev;
            (i.spec.clone(), i.rev, i.watcher.clone())
        });
        if let Some(w) = watcher {
            let _ = w.send_message(NodeMsg::Spec(Box::new(spec), rev));
        }
    }

    /// An agent's heartbeat (the gateway's write), then the watch event.
    pub(crate) fn heartbeat(&self, hb: HeartbeatRecord) {
        let (rev, watcher) = self.with(|i| {
            i.rev += 1;
            i.heartbeat = Some((hb.clone(), i.rev));
            (i.rev, i.watcher.clone())
        });
        if let Some(w) = watcher {
            let _ = w.send_message(NodeMsg::Heartbeat(Box::new(hb), rev));
        }
    }

    fn view(i: &Inner) -> NodeView {
        NodeView {
            spec: i.spec.clone(),
            spec_rev: i.spec_rev,
            status: i.status.clone().unwrap_or_default(),
            status_error: i.status_error.clone(),
            reservation: i.reservation.map(|_| "holder".to_string()),
        }
    }

    fn read(i: &Inner, id: NodeId) -> Result<NodeView, ClusterError> {
        match &i.spec_error {
            Some(reason) => Err(ClusterError::Corrupt {
                key: format!("nodes/{id}"),
                source: ferric_model::CodecError::Corrupt {
                    kind: "node spec",
                    version: 1,
                    reason: reason.clone(),
                },
            }),
            None => Ok(Self::view(i)),
        }
    }

    fn refuse(i: &mut Inner, id: NodeId, token: FenceToken) -> Result<(), ClusterError> {
        if i.unavailable > 0 {
            i.unavailable -= 1;
            return Err(ClusterError::Unreachable {
                endpoints: "memory".into(),
                reason: "told to fail".into(),
            });
        }
        if i.reservation != Some(token) {
            return Err(ClusterError::Fenced(id.to_string()));
        }
        Ok(())
    }
}

impl NodeStore for MemStore {
    fn read_node(&self, id: NodeId) -> BoxFuture<'_, Result<NodeView, ClusterError>> {
        let view = self.with(|i| {
            if i.reads_failing > 0 {
                i.reads_failing -= 1;
                return Err(ClusterError::Unreachable {
                    endpoints: "memory".into(),
                    reason: "told to fail".into(),
                });
            }
            Self::read(i, id)
        });
        Box::pin(async move { view })
    }

    fn last_heartbeat(
        &self,
        _id: NodeId,
    ) -> BoxFuture<'_, Result<Option<(HeartbeatRecord, i64)>, ClusterError>> {
        let hb = self.with(|i| i.heartbeat.clone());
        Box::pin(async move { Ok(hb) })
    }

    fn write_status<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        status: &'a NodeStatus,
        history: Option<&'a HistoryEntry>,
        event: Option<&'a EventRecord>,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        let result = self.with(|i| {
            i.writes_tried += 1;
            Self::refuse(i, id, token)?;
            i.rev += 1;
            i.status = Some(status.clone());
            i.written.push((status.provision_state, i.spec.maintenance));
            i.status_error = None;
            i.history.extend(history.cloned());
            i.events.extend(event.cloned());
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn update_spec<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        change: &'a SpecChange,
    ) -> BoxFuture<'a, Result<NodeView, ClusterError>> {
        let result = self.with(|i| -> Result<_, ClusterError> {
            Self::refuse(i, id, token)?;
            let view = Self::view(i);
            let mut spec = i.spec.clone();
            change.apply(&view, &mut spec);
            i.spec = spec;
            i.rev += 1;
            i.spec_rev = i.rev;
            Ok((Self::view(i), i.watcher.clone()))
        });
        Box::pin(async move {
            let (view, watcher) = result?;
            if let Some(w) = watcher {
                let _ = w.send_message(NodeMsg::Spec(Box::new(view.spec.clone()), view.spec_rev));
            }
            Ok(view)
        })
    }

    fn take_remediation_slot<'a>(
        &'a self,
        _policy: &'a RemediationPolicy,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Slot, ClusterError>> {
        let slot = self.with(|i| i.slots.pop_front().unwrap_or(Slot::Granted));
        Box::pin(async move { Ok(slot) })
    }

    fn wipe_agent_token(
        &self,
        id: NodeId,
        token: FenceToken,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        let result = self.with(|i| {
            Self::refuse(i, id, token)?;
            i.token_wipes += 1;
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn read_bios(&self, _id: NodeId) -> BoxFuture<'_, Result<Option<BiosRecord>, ClusterError>> {
        let bios = self.with(|i| i.bios.clone());
        Box::pin(async move { Ok(bios) })
    }

    fn agent_token(
        &self,
        _id: NodeId,
    ) -> BoxFuture<'_, Result<Option<AgentTokenRecord>, ClusterError>> {
        let issued = self.with(|i| i.agent_token.clone());
        Box::pin(async move { Ok(issued) })
    }

    fn write_bios<'a>(
        &'a self,
        id: NodeId,
        token: FenceToken,
        record: &'a BiosRecord,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        let result = self.with(|i| {
            Self::refuse(i, id, token)?;
            i.rev += 1;
            i.bios = Some(record.clone());
            Ok(())
        });
        Box::pin(async move { result })
    }
}

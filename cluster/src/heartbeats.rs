//! Agent heartbeats (`POST /v1/heartbeat/{node}`): the last one of each node, recorded in
//! `heartbeats/<uuid>` (no lease). Recording is all the API does; the provisioning work that
//! acts on heartbeats reads them from here. The record itself is `ferric_model`'s.

use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ferric_model::{encode, AgentTokenRecord, FenceToken, HeartbeatRecord, NodeId};

impl Cluster {
    /// The agent token record of the node's current ramdisk boot, if one was issued.
    pub async fn agent_token(&self, id: &NodeId) -> Result<Option<AgentTokenRecord>, ClusterError> {
        let key = self.keys().agent_token(id);
        Ok(self.get_record(key).await?.map(|(r, _)| r))
    }

    /// Stores a freshly issued token's record unless one exists already (one token per boot,
    /// whichever gateway issues it first): true when this one was stored. `NodeNotFound` for a
    /// deleted node.
    pub async fn issue_agent_token(
        &self,
        id: &NodeId,
        rec: &AgentTokenRecord,
    ) -> Result<bool, ClusterError> {
        let key = self.keys().agent_token(id);
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(self.keys().node(id), CompareOp::NotEqual, 0),
            ])
            .and_then([TxnOp::put(key, encode(rec), None)])
            .or_else([TxnOp::get(self.keys().node(id), None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            return Ok(true);
        }
        let node_exists = resp.op_responses().into_iter().any(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => !g.kvs().is_empty(),
            _ => false,
        });
        if node_exists {
            Ok(false)
        } else {
            Err(ClusterError::NodeNotFound(id.to_string()))
        }
    }

    /// Deletes the node's agent token, fenced by its reservation (the node's owner does this
    /// when it boots the ramdisk again and when the agent's work ends).
    pub async fn wipe_agent_token(
        &self,
        id: &NodeId,
        token: FenceToken,
    ) -> Result<(), ClusterError> {
        let txn = Txn::new()
            .when(self.fence_compares(id, token))
            .and_then([TxnOp::delete(self.keys().agent_token(id), None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Fenced(id.to_string()))
        }
    }

    /// `heartbeats/<uuid>`.
    pub fn heartbeat_key(&self, id: &NodeId) -> String {
        self.keys().heartbeat(id)
    }

    /// `heartbeats/`, watched by conductors.
    pub fn heartbeats_prefix(&self) -> String {
        self.keys().heartbeats()
    }

    /// Records a heartbeat if the node exists; returns the revision of the write.
    pub async fn record_heartbeat(
        &self,
        id: &NodeId,
        rec: &HeartbeatRecord,
    ) -> Result<i64, ClusterError> {
        let txn = Txn::new()
            // A deleted node gets no heartbeat key back from a late agent.
            .when([Compare::create_revision(
                self.keys().node(id),
                CompareOp::NotEqual,
                0,
            )])
            .and_then([TxnOp::put(self.heartbeat_key(id), encode(rec), None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(resp.header().map_or(0, |h| h.revision()))
        } else {
            Err(ClusterError::NodeNotFound(id.to_string()))
        }
    }

    /// The last recorded heartbeat of a node, if any.
    pub async fn last_heartbeat(
        &self,
        id: &NodeId,
    ) -> Result<Option<HeartbeatRecord>, ClusterError> {
        Ok(self.last_heartbeat_rev(id).await?.map(|(rec, _)| rec))
    }

    /// The last recorded heartbeat of a node with the revision it was written at.
    pub async fn last_heartbeat_rev(
        &self,
        id: &NodeId,
    ) -> Result<Option<(HeartbeatRecord, i64)>, ClusterError> {
        self.get_record(self.heartbeat_key(id)).await
    }

    /// Removes a node's heartbeat record (after the node itself was deleted).
    pub async fn delete_heartbeat(&self, id: &NodeId) -> Result<(), ClusterError> {
        self.kv()
            .delete(self.heartbeat_key(id), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

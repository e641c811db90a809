//! Agent heartbeats (`POST /v1/heartbeat/{node}`): the last one of each node, recorded in
//! `heartbeats/<uuid>` (no lease). Recording is all the API does; the provisioning work that
//! acts on heartbeats reads them from here.

use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ferric_model::{decode, encode, NodeId, Record};
use serde::{Deserialize, Serialize};

/// The last heartbeat of a node's agent, as the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    pub at_ms: u64,
    pub callback_url: String,
    pub agent_version: Option<String>,
    /// Kept for the provisioning work to check; never returned by the API.
    pub agent_token: Option<String>,
    pub agent_verify_ca: Option<String>,
    pub agent_status: Option<String>,
    pub agent_status_message: Option<String>,
    /// The gateway that recorded it.
    pub recorded_by: String,
}

impl Record for HeartbeatRecord {
    const KIND: &'static str = "heartbeat";
    const VERSION: u8 = 1;
}

impl Cluster {
    /// `heartbeats/<uuid>`.
    pub fn heartbeat_key(&self, id: &NodeId) -> String {
        format!("{}heartbeats/{id}", self.keys().prefix())
    }

    /// `heartbeats/`, watched by conductors.
    pub fn heartbeats_prefix(&self) -> String {
        format!("{}heartbeats/", self.keys().prefix())
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
        let key = self.heartbeat_key(id);
        let resp = self
            .kv()
            .get(key.clone(), None)
            .await
            .map_err(|e| self.err(e))?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => decode(kv.value())
                .map(|rec| Some((rec, kv.mod_revision())))
                .map_err(|source| ClusterError::Corrupt { key, source }),
        }
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

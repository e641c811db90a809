//! Agent heartbeats (`POST /v1/heartbeat/{node}`): the last one of each node, recorded in
//! `heartbeats/<uuid>` (no lease). Recording is all the API does; the provisioning work that
//! acts on heartbeats reads them from here. The record itself is `ferric_model`'s.

use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ferric_model::{decode, encode, HeartbeatRecord, NodeId};

impl Cluster {
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

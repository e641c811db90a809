//! A node's cached BIOS settings (`bios/<uuid>`): written by the node's owner, fenced like its
//! status, read by the gateway on request, deleted with the node. And its inspection data
//! (`inventory/<uuid>`), written by the gateway that received it.

use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ferric_model::{encode, BiosRecord, FenceToken, InventoryRecord, NodeId};

impl Cluster {
    /// The node's cached settings, None when none were ever cached. An unreadable record is
    /// `ClusterError::Corrupt`.
    pub async fn node_bios(&self, id: &NodeId) -> Result<Option<BiosRecord>, ClusterError> {
        let key = self.keys().bios(id);
        Ok(self.get_record(key).await?.map(|(r, _)| r))
    }

    /// Writes the node's settings if `token` still holds its reservation and the node exists.
    /// `ClusterError::Fenced` otherwise.
    pub async fn write_bios(
        &self,
        id: &NodeId,
        token: FenceToken,
        record: &BiosRecord,
    ) -> Result<(), ClusterError> {
        // fenced: only the owner of the node writes what it read from the BMC.
        let mut when = self.fence_compares(id, token);
        when.push(Compare::create_revision(
            self.keys().node(id),
            CompareOp::NotEqual,
            0,
        ));
        let txn = Txn::new().when(when).and_then([TxnOp::put(
            self.keys().bios(id),
            encode(record),
            None,
        )]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Fenced(id.to_string()))
        }
    }

    /// The node's inspection data, None when none was received.
    pub async fn node_inventory(
        &self,
        id: &NodeId,
    ) -> Result<Option<InventoryRecord>, ClusterError> {
        let key = self.keys().inventory(id);
        Ok(self.get_record(key).await?.map(|(r, _)| r))
    }

    /// Stores a node's inspection data if the node exists (`NodeNotFound` otherwise); the
    /// revision of the write.
    pub async fn write_inventory(
        &self,
        id: &NodeId,
        record: &InventoryRecord,
    ) -> Result<i64, ClusterError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.keys().node(id),
                CompareOp::NotEqual,
                0,
            )])
            .and_then([TxnOp::put(self.keys().inventory(id), encode(record), None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(resp.header().map_or(0, |h| h.revision()))
        } else {
            Err(ClusterError::NodeNotFound(id.to_string()))
        }
    }
}

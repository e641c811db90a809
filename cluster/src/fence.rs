//! The compares that fence a node's writes: only the node's current owner gets them through.
//!
//! A node is owned through one of two keys (DESIGN.md, "Placement"; [`FenceToken`]):
//! - its bucket's key `buckets/<bucket>`, for every node whose bucket's holder runs it: the
//!   bucket key's `create_revision` is the token, and the node has no reservation of its own
//!   (a delegate's reservation would make it the delegate's);
//! - its own `reservations/<uuid>`, for a node the bucket's holder handed on to a delegate: the
//!   reservation's `create_revision` is the token.
//!
//! Either way etcd refuses a write from anyone but the one owner. Every fenced write of the
//! cluster crate takes its compares from here.

use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp};
use ferric_model::{Bucket, FenceToken, NodeId};

impl Cluster {
    /// The compares that hold exactly while `token` owns `id`.
    pub fn fence_compares(&self, id: &NodeId, token: FenceToken) -> Vec<Compare> {
        let reservation = self.keys().reservation(id);
        if token.is_bucket() {
            vec![
                Compare::create_revision(
                    self.keys().bucket(Bucket::of(id)),
                    CompareOp::Equal,
                    token.revision(),
                ),
                Compare::create_revision(reservation, CompareOp::Equal, 0),
            ]
        } else {
            vec![Compare::create_revision(
                reservation,
                CompareOp::Equal,
                token.revision(),
            )]
        }
    }

    /// Whether `token` still owns `id` (one read of the key or keys its fence compares).
    pub async fn owns(&self, id: &NodeId, token: FenceToken) -> Result<bool, ClusterError> {
        let resp = self
            .kv()
            .txn(
                etcd_client::Txn::new()
                    .when(self.fence_compares(id, token))
                    .and_then([]),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp.succeeded())
    }
}

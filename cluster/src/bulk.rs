//! Intent for many nodes at once (a rack powered on, a fleet managed): the same checks and
//! compare-and-swap as the one-node functions, in batches of 60 nodes per round trip. Each node
//! succeeds or fails on its own; a node changed concurrently is retried through the one-node
//! path.

use crate::nodes::{power_change, NodeView};
use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use ferric_model::{decode, encode, now_ms, NodeId, NodeSpec, NodeStatus, PowerTarget};

/// Nodes per batch: the read Txn holds two gets per node (128 ops at most).
const CHUNK: usize = 60;

impl Cluster {
    /// Applies `change` to the spec of every node in `ids`; results in input order.
    pub async fn update_specs<F>(
        &self,
        ids: &[NodeId],
        change: F,
    ) -> Result<Vec<Result<(), ClusterError>>, ClusterError>
    where
        F: Fn(&NodeView, &mut NodeSpec) -> Result<(), ClusterError>,
    {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let reads: Vec<TxnOp> = chunk
                .iter()
                .flat_map(|id| {
                    [
                        TxnOp::get(self.keys().node(id), None),
                        TxnOp::get(self.keys().status(id), None),
                    ]
                })
                .collect();
            let resp = self.txn_all(reads).await?;
            let ops = resp.op_responses();
            let mut results: Vec<Option<Result<(), ClusterError>>> =
                Vec::with_capacity(chunk.len());
            let mut writes = Vec::new();
            let mut slots = Vec::new();
            for (i, id) in chunk.iter().enumerate() {
                let first = |j: usize| match ops.get(j) {
                    Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
                    _ => None,
                };
                let Some(spec_kv) = first(2 * i) else {
                    results.push(Some(Err(ClusterError::NodeNotFound(id.to_string()))));
                    continue;
                };
                let spec = match decode::<NodeSpec>(spec_kv.value()) {
                    Ok(s) => s,
                    Err(source) => {
                        results.push(Some(Err(ClusterError::Corrupt {
                            key: self.keys().node(id),
                            source,
                        })));
                        continue;
                    }
                };
                let (status, status_error) =
                    match first(2 * i + 1).map(|kv| decode::<NodeStatus>(kv.value())) {
                        None => (NodeStatus::default(), None),
                        Some(Ok(s)) => (s, None),
                        Some(Err(e)) => (NodeStatus::default(), Some(e.to_string())),
                    };
                let view = NodeView {
                    spec: spec.clone(),
                    spec_rev: spec_kv.mod_revision(),
                    status,
                    status_error,
                    reservation: None,
                };
                let mut next = spec;
                match change(&view, &mut next) {
                    Err(e) => results.push(Some(Err(e))),
                    Ok(()) => {
                        next.updated_at_ms = now_ms();
                        let key = self.keys().node(id);
                        writes.push(TxnOp::txn(
                            Txn::new()
                                .when([Compare::mod_revision(
                                    key.clone(),
                                    CompareOp::Equal,
                                    view.spec_rev,
                                )])
                                .and_then([TxnOp::put(key, encode(&next), None)]),
                        ));
                        slots.push(i);
                        results.push(None);
                    }
                }
            }
            if !writes.is_empty() {
                let resp = self.txn_all(writes).await?;
                for (slot, op) in slots.into_iter().zip(resp.op_responses()) {
                    let ok = matches!(op, TxnOpResponse::Txn(t) if t.succeeded());
                    results[slot] = Some(if ok {
                        Ok(())
                    } else {
                        // Changed between our read and write: the one-node path retries.
                        self.update_spec(&chunk[slot].to_string(), &change)
                            .await
                            .map(|_| ())
                    });
                }
            }
            out.extend(results.into_iter().map(|r| r.unwrap_or(Ok(()))));
        }
        Ok(out)
    }

    /// `request_power` for many nodes.
    pub async fn request_power_many(
        &self,
        ids: &[NodeId],
        target: PowerTarget,
        timeout_s: Option<u32>,
        requested_by: &str,
    ) -> Result<Vec<Result<(), ClusterError>>, ClusterError> {
        self.update_specs(ids, power_change(target, timeout_s, requested_by))
            .await
    }
}

//! Reservations: `reservations/<uuid>` on the holder's lease, the ownership of a node its
//! bucket's holder handed on (`buckets`), acquired and released in batched transactions. Each batch is one etcd Txn holding one nested Txn per node (etcd allows 128 ops
//! per Txn, counting nested ones), so one round trip reserves up to 120 nodes and reads their spec and status.

use crate::{get_prefix, Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use ferric_model::{
    decode, encode, now_ms, CodecError, FenceToken, NodeId, NodeSpec, NodeStatus, ReservationRecord,
};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Nodes per batched Txn. etcd checks a nested Txn against the budget left by its parent
/// (`max-txn-ops` minus the parent's op count), so N nested Txns of up to 3 ops each need
/// N + 3 <= 128.
pub const BATCH: usize = 120;

/// A node this conductor now owns, with the records read in the same transaction.
#[derive(Debug)]
pub struct Acquired {
    pub id: NodeId,
    pub token: FenceToken,
    pub spec: Result<NodeSpec, CodecError>,
    pub spec_rev: i64,
    /// None: no status written yet (a node nobody has touched).
    pub status: Option<Result<NodeStatus, CodecError>>,
}

#[derive(Debug)]
pub enum AcquireOutcome {
    Acquired(Box<Acquired>),
    /// Someone holds it (possibly a previous run of ourselves whose lease has not expired, or
    /// this very lease when an earlier reply was lost: compare `lease`).
    Held {
        holder: Option<String>,
        lease: i64,
        create_rev: i64,
        /// The revision at which the Txn saw it held.
        seen_at: i64,
    },
    /// The node no longer exists.
    Gone,
    /// The node's delegation does not name this conductor (any more).
    NotDelegated,
}

impl Cluster {
    /// Tries to reserve `ids` on `lease` for `conductor`, each only while its delegation names
    /// `conductor`. Outcomes come back in input order.
    pub async fn acquire(
        &self,
        ids: &[NodeId],
        lease: i64,
        conductor: &str,
    ) -> Result<Vec<(NodeId, AcquireOutcome)>, ClusterError> {
        let value = encode(&ReservationRecord {
            conductor: conductor.to_string(),
            acquired_at_ms: now_ms(),
        });
        let delegated = encode(&ferric_model::DelegationRecord {
            conductor: conductor.to_string(),
        });
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let inner: Vec<TxnOp> = chunk
                .iter()
                .map(|id| {
                    let res = self.keys().reservation(id);
                    let node = self.keys().node(id);
                    TxnOp::txn(
                        Txn::new()
                            .when([
                                Compare::create_revision(res.clone(), CompareOp::Equal, 0),
                                Compare::create_revision(node.clone(), CompareOp::NotEqual, 0),
                                Compare::value(
                                    self.keys().delegation(id),
                                    CompareOp::Equal,
                                    delegated.clone(),
                                ),
                            ])
                            .and_then([
                                TxnOp::put(
                                    res.clone(),
                                    value.clone(),
                                    Some(PutOptions::new().with_lease(lease)),
                                ),
                                TxnOp::get(node, None),
                                TxnOp::get(self.keys().status(id), None),
                            ])
                            .or_else([
                                TxnOp::get(res, None),
                                TxnOp::get(self.keys().node(id), None),
                            ]),
                    )
                })
                .collect();
            let resp = self.txn_all(inner).await?;
            // All puts of one Txn share its revision, which is each new key's create_revision.
            let revision = resp.header().map_or(0, |h| h.revision());
            for (id, op) in chunk.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Txn(t) = op else {
                    return Err(ClusterError::Internal(
                        "unexpected etcd txn response".into(),
                    ));
                };
                let ops = t.op_responses();
                let outcome = if t.succeeded() {
                    let (spec, spec_rev) = match ops.get(1) {
                        Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty() => {
                            let kv = &g.kvs()[0];
                            (decode::<NodeSpec>(kv.value()), kv.mod_revision())
                        }
                        _ => (Err(CodecError::Empty { kind: "node spec" }), 0),
                    };
                    let status = match ops.get(2) {
                        Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty() => {
                            Some(decode::<NodeStatus>(g.kvs()[0].value()))
                        }
                        _ => None,
                    };
                    AcquireOutcome::Acquired(Box::new(Acquired {
                        id: *id,
                        token: FenceToken(revision),
                        spec,
                        spec_rev,
                        status,
                    }))
                } else {
                    let node_exists =
                        matches!(ops.get(1), Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty());
                    match ops.first() {
                        _ if !node_exists => AcquireOutcome::Gone,
                        Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty() => {
                            let kv = &g.kvs()[0];
                            AcquireOutcome::Held {
                                holder: decode::<ReservationRecord>(kv.value())
                                    .ok()
                                    .map(|r| r.conductor),
                                lease: kv.lease(),
                                create_rev: kv.create_revision(),
                                seen_at: revision,
                            }
                        }
                        _ => AcquireOutcome::NotDelegated,
                    }
                };
                out.push((*id, outcome));
            }
        }
        Ok(out)
    }

    /// Releases reservations this conductor holds. A reservation whose token no longer matches
    /// (it expired and someone else took it) is left alone. Returns how many were released.
    pub async fn release(&self, held: &[(NodeId, FenceToken)]) -> Result<usize, ClusterError> {
        let keys = held
            .iter()
            .map(|(id, token)| (self.keys().reservation(id), token.0))
            .collect();
        self.release_keys(keys).await
    }

    /// Deletes each key whose create revision is still the given one (a holder letting go of
    /// what it holds: reservations, bucket keys), in batched transactions; how many it deleted.
    pub(crate) async fn release_keys(
        &self,
        held: Vec<(String, i64)>,
    ) -> Result<usize, ClusterError> {
        let mut released = 0;
        for chunk in held.chunks(BATCH) {
            let inner: Vec<TxnOp> = chunk
                .iter()
                .map(|(key, create_rev)| {
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::create_revision(
                                key.clone(),
                                CompareOp::Equal,
                                *create_rev,
                            )])
                            .and_then([TxnOp::delete(key.clone(), None)]),
                    )
                })
                .collect();
            let resp = self.txn_all(inner).await?;
            released += resp
                .op_responses()
                .iter()
                .filter(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded()))
                .count();
        }
        Ok(released)
    }

    /// Every reservation: (node, holder, fencing token), and the revision of the read.
    #[allow(clippy::type_complexity)]
    pub async fn list_reservations(
        &self,
    ) -> Result<(i64, Vec<(NodeId, String, FenceToken)>), ClusterError> {
        let (rev, kvs) = get_prefix(self, &self.keys().reservations(), None, false).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let Some(id) = self.keys().node_id_of(kv.key()) else {
                continue;
            };
            let holder = decode::<ReservationRecord>(kv.value())
                .map(|r| r.conductor)
                .unwrap_or_else(|e| format!("<unreadable: {e}>"));
            out.push((id, holder, FenceToken(kv.create_revision())));
        }
        Ok((rev, out))
    }
}

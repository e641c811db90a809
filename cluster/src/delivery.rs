//! The etcd side of event delivery: reading a node's events with its cursor (one revision),
//! fenced cursor writes (batched, one nested Txn per node as status writes are), fenced
//! compaction of finished events, the race guard's read, and re-send requests.

use crate::{
    for_each_in_prefix, get_prefix, prefix_end, reservations::BATCH, Cluster, ClusterError,
};
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use ferric_model::{
    decode, encode, now_ms, CodecError, DeliveryCursor, EventRecord, FenceToken, NodeId,
    ResendRecord,
};
use std::collections::{HashMap, HashSet};

/// A node's events and cursor, read at one revision.
#[derive(Debug)]
pub struct NodeEvents {
    /// None: never written (nothing delivered yet). An unreadable cursor is an error here.
    pub cursor: Option<Result<DeliveryCursor, CodecError>>,
    /// In sequence order; an unreadable event is kept with its key's sequence number.
    pub events: Vec<(u64, Result<EventRecord, CodecError>)>,
    pub revision: i64,
}

/// Nodes per Txn in [`Cluster::few_nodes_events`]: two reads each, within etcd's 128 ops.
pub const EVENT_READS_PER_TXN: usize = 60;

impl Cluster {
    /// `(node, seq)` of an `events/<uuid>/<seq>` key.
    pub fn event_of(&self, key: &[u8]) -> Option<(NodeId, u64)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.keys().events())?;
        let (id, seq) = rest.split_once('/')?;
        Some((id.parse().ok()?, seq.parse().ok()?))
    }

    /// A node's events and its delivery cursor, at one revision.
    pub async fn node_events(&self, id: &NodeId) -> Result<NodeEvents, ClusterError> {
        let mut read = self.few_nodes_events(std::slice::from_ref(id)).await?;
        match read.pop() {
            Some((_, events)) => Ok(events),
            None => Err(ClusterError::Internal(
                "node_events: unexpected transaction answer".into(),
            )),
        }
    }

    /// The events and cursors of a few nodes, each node's at one revision: one Txn of two reads
    /// per node for up to [`EVENT_READS_PER_TXN`] nodes (a conductor that takes new nodes a
    /// few at a time reads them together, not one round trip each). In the order of `ids`.
    pub async fn few_nodes_events(
        &self,
        ids: &[NodeId],
    ) -> Result<Vec<(NodeId, NodeEvents)>, ClusterError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(EVENT_READS_PER_TXN) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .flat_map(|id| {
                    let prefix = self.keys().node_events(id);
                    let end = prefix_end(prefix.as_bytes());
                    [
                        TxnOp::get(self.keys().delivery(id), None),
                        TxnOp::get(prefix, Some(GetOptions::new().with_range(end))),
                    ]
                })
                .collect();
            let resp = self.txn_all(ops).await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut ranges = resp.op_responses().into_iter().filter_map(|op| match op {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            });
            for id in chunk {
                let (Some(cursor), Some(events)) = (ranges.next(), ranges.next()) else {
                    return Err(ClusterError::Internal(
                        "few_nodes_events: unexpected transaction answer".into(),
                    ));
                };
                let cursor = cursor
                    .kvs()
                    .first()
                    .map(|kv| decode::<DeliveryCursor>(kv.value()));
                let events = events
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        let (_, seq) = self.event_of(kv.key())?;
                        Some((seq, decode::<EventRecord>(kv.value())))
                    })
                    .collect();
                out.push((
                    *id,
                    NodeEvents {
                        cursor,
                        events,
                        revision,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// The events and cursors of many nodes at one revision, in two paged reads of the whole
    /// `delivery/` and `events/` prefixes instead of one read per node: what a conductor that
    /// just took over thousands of nodes (start-up, failover) needs before it can deliver.
    /// Nodes not in `ids` are skipped as they are read; each asked-for node is in the answer.
    pub async fn nodes_events(
        &self,
        ids: &HashSet<NodeId>,
    ) -> Result<HashMap<NodeId, NodeEvents>, ClusterError> {
        Ok(self.nodes_events_scanned(ids).await?.0)
    }

    /// [`Cluster::nodes_events`], and how many keys the two reads went through (the whole
    /// prefixes, whatever `ids` holds): what the deliverer weighs a bulk read by.
    pub async fn nodes_events_scanned(
        &self,
        ids: &HashSet<NodeId>,
    ) -> Result<(HashMap<NodeId, NodeEvents>, usize), ClusterError> {
        let mut scanned = 0usize;
        let mut out: HashMap<NodeId, NodeEvents> = ids
            .iter()
            .map(|id| {
                let empty = NodeEvents {
                    cursor: None,
                    events: Vec::new(),
                    revision: 0,
                };
                (*id, empty)
            })
            .collect();
        let delivery_prefix = format!("{}delivery/", self.keys().prefix());
        let rev = for_each_in_prefix(self, &delivery_prefix, None, false, |kv| {
            scanned += 1;
            let Some(id) = self.keys().node_id_of(kv.key()) else {
                return;
            };
            if let Some(n) = out.get_mut(&id) {
                n.cursor = Some(decode::<DeliveryCursor>(kv.value()));
            }
        })
        .await?;
        for_each_in_prefix(self, &self.keys().events(), Some(rev), false, |kv| {
            scanned += 1;
            let Some((id, seq)) = self.event_of(kv.key()) else {
                return;
            };
            if let Some(n) = out.get_mut(&id) {
                n.events.push((seq, decode::<EventRecord>(kv.value())));
            }
        })
        .await?;
        for n in out.values_mut() {
            n.revision = rev;
        }
        Ok((out, scanned))
    }

    /// The race guard's read: a node's cursor and its last event (highest seq), at one revision.
    pub async fn last_event(
        &self,
        id: &NodeId,
    ) -> Result<(Option<DeliveryCursor>, Option<EventRecord>), ClusterError> {
        let prefix = self.keys().node_events(id);
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys().delivery(id), None),
            TxnOp::get(
                prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(prefix.as_bytes()))
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1),
                ),
            ),
        ]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        let mut ranges = resp.op_responses().into_iter().filter_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(cursor), Some(last)) = (ranges.next(), ranges.next()) else {
            return Err(ClusterError::Internal(
                "last_event: unexpected transaction answer".into(),
            ));
        };
        // An unreadable record reads as absent here (the guard then lets the request through);
        // `ctl node repair` and the deliverer report it.
        let read = |key: &[u8], what: &str| {
            tracing::error!(key = %String::from_utf8_lossy(key), "unreadable {what}");
        };
        let cursor =
            cursor
                .kvs()
                .first()
                .and_then(|kv| match decode::<DeliveryCursor>(kv.value()) {
                    Ok(c) => Some(c),
                    Err(_) => {
                        read(kv.key(), "delivery cursor");
                        None
                    }
                });
        let last = last
            .kvs()
            .first()
            .and_then(|kv| match decode::<EventRecord>(kv.value()) {
                Ok(e) => Some(e),
                Err(_) => {
                    read(kv.key(), "event");
                    None
                }
            });
        Ok((cursor, last))
    }

    /// Fenced cursor writes, batched: `true` per node when written, `false` when the writer no
    /// longer holds the node (its token is stale) or the node was deleted.
    pub async fn write_cursors(
        &self,
        batch: &[(FenceToken, DeliveryCursor)],
    ) -> Result<Vec<bool>, ClusterError> {
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(BATCH) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(token, cursor)| {
                    let id = cursor.node;
                    // fenced: a stale owner must never move the cursor (the new owner
                    // resumes from it; moving it would skip events).
                    let mut when = self.fence_compares(&id, *token);
                    when.push(Compare::create_revision(
                        self.keys().node(&id),
                        CompareOp::NotEqual,
                        0,
                    ));
                    TxnOp::txn(Txn::new().when(when).and_then([TxnOp::put(
                        self.keys().delivery(&id),
                        encode(cursor),
                        None,
                    )]))
                })
                .collect();
            let resp = self.txn_all(ops).await?;
            out.extend(
                resp.op_responses()
                    .iter()
                    .map(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded())),
            );
        }
        Ok(out)
    }

    /// Deletes a node's events with `seq <= up_to` (fenced: only the owner compacts, and only
    /// what it knows every receiver has finished). False when fenced.
    pub async fn compact_events(
        &self,
        id: &NodeId,
        token: FenceToken,
        up_to: u64,
    ) -> Result<bool, ClusterError> {
        let from = self.keys().event(id, 0);
        let to = self.keys().event(id, up_to.saturating_add(1));
        let txn = Txn::new()
            .when(self.fence_compares(id, token))
            .and_then([TxnOp::delete(
                from,
                Some(DeleteOptions::new().with_range(to)),
            )]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        Ok(resp.succeeded())
    }

    /// Asks the node's owner to re-send its pending events now (the race guard refused a power
    /// request of the compute service because of event `seq`).
    pub async fn request_resend(
        &self,
        id: &NodeId,
        seq: u64,
        by: &str,
    ) -> Result<(), ClusterError> {
        let rec = ResendRecord {
            seq,
            by: by.to_string(),
            at_ms: now_ms(),
        };
        self.kv()
            .put(self.keys().resend(id), encode(&rec), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every delivery cursor (for `ctl` and tests): node -> cursor or why it is unreadable.
    pub async fn delivery_cursors(
        &self,
    ) -> Result<Vec<(Vec<u8>, Result<DeliveryCursor, CodecError>)>, ClusterError> {
        let (_, kvs) = get_prefix(self, &self.keys().deliveries(), None, false).await?;
        Ok(kvs
            .into_iter()
            .map(|kv| (kv.key().to_vec(), decode::<DeliveryCursor>(kv.value())))
            .collect())
    }
}

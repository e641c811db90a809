//! Fenced status writes. A status write is a Txn that compares the reservation's
//! `create_revision` with the writer's fencing token: a stale owner (its lease expired and
//! someone else reserved the node) fails and must stop at once.
//!
//! [`StatusWriter`] batches writes from many node actors into one Txn (one nested Txn per node,
//! each with its own compare), so a takeover of 10,000 nodes costs about 80 round trips, not
//! 10,000. Callers must not have two writes for the same node in flight (a node actor awaits each
//! write), otherwise two batches could reorder them.

use crate::batch_gate::BatchGate;
use crate::{reservations::BATCH, Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use ferric_model::{
    encode, EventRecord, FenceToken, HistoryEntry, NodeHistory, NodeId, NodeStatus,
};
use tokio::sync::{mpsc, oneshot};

impl Cluster {
    fn fenced_put(&self, id: &NodeId, token: FenceToken, value: Vec<u8>, extra: Vec<TxnOp>) -> Txn {
        let mut ops = vec![TxnOp::put(self.keys().status(id), value, None)];
        ops.extend(extra);
        // fenced: only the node's current owner may write the status.
        let mut when = self.fence_compares(id, token);
        // A deleted node gets no status back from a late write.
        when.push(Compare::create_revision(
            self.keys().node(id),
            CompareOp::NotEqual,
            0,
        ));
        Txn::new().when(when).and_then(ops)
    }

    /// The operations that go with a status write: a history entry (and the deletion of the
    /// one `NodeHistory::CAP` places older) and an outbox event. Their sequence numbers are the
    /// status's `history_seq` and the event's `seq`.
    fn extras(
        &self,
        id: &NodeId,
        status: &NodeStatus,
        history: Option<&HistoryEntry>,
        event: Option<&EventRecord>,
    ) -> Vec<TxnOp> {
        let mut ops = Vec::new();
        if let Some(entry) = history {
            let seq = status.history_seq;
            ops.push(TxnOp::put(
                self.keys().history_entry(id, seq),
                encode(entry),
                None,
            ));
            if seq > NodeHistory::CAP as u64 {
                ops.push(TxnOp::delete(
                    self.keys().history_entry(id, seq - NodeHistory::CAP as u64),
                    None,
                ));
            }
        }
        if let Some(ev) = event {
            ops.push(TxnOp::put(self.keys().event(id, ev.seq), encode(ev), None));
        }
        ops
    }

    /// One fenced status write, unbatched.
    pub async fn write_status(
        &self,
        id: &NodeId,
        token: FenceToken,
        status: &NodeStatus,
    ) -> Result<(), ClusterError> {
        let resp = self
            .kv()
            .txn(self.fenced_put(id, token, encode(status), Vec::new()))
            .await
            .map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Fenced(id.to_string()))
        }
    }
}

struct Write {
    id: NodeId,
    token: FenceToken,
    value: Vec<u8>,
    extra: Vec<TxnOp>,
    reply: oneshot::Sender<Result<(), ClusterError>>,
}

/// Batches fenced status writes of one conductor.
#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::Sender<Write>,
    cluster: Cluster,
}

impl StatusWriter {
    /// `parallel`: how many batches may be in flight at once.
    pub fn spawn(cluster: Cluster, parallel: usize) -> Self {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        tokio::spawn(run(cluster.clone(), rx, BatchGate::new(parallel)));
        StatusWriter { tx, cluster }
    }

    pub async fn write(
        &self,
        id: NodeId,
        token: FenceToken,
        status: &NodeStatus,
    ) -> Result<(), ClusterError> {
        self.write_with(id, token, status, None, None).await
    }

    /// A fenced status write with a history entry and/or an outbox event in the same
    /// transaction: a power change and its event are never separated.
    pub async fn write_with(
        &self,
        id: NodeId,
        token: FenceToken,
        status: &NodeStatus,
        history: Option<&HistoryEntry>,
        event: Option<&EventRecord>,
    ) -> Result<(), ClusterError> {
        let (reply, rx) = oneshot::channel();
        let write = Write {
            id,
            token,
            value: encode(status),
            extra: self.cluster.extras(&id, status, history, event),
            reply,
        };
        let closed = || ClusterError::ShuttingDown("the status writer");
        self.tx.send(write).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<Write>, gate: BatchGate) {
    while let Some((batch, pass)) = gate.next(&mut rx, BATCH).await {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            flush(&cluster, batch).await;
            drop(pass);
        });
    }
}

async fn flush(cluster: &Cluster, batch: Vec<Write>) {
    let ops: Vec<TxnOp> = batch
        .iter()
        .map(|w| TxnOp::txn(cluster.fenced_put(&w.id, w.token, w.value.clone(), w.extra.clone())))
        .collect();
    let m = &crate::metrics::CLUSTER;
    m.write_batch_size.observe(batch.len() as f64);
    let sent = std::time::Instant::now();
    let result = cluster.kv().txn(Txn::new().and_then(ops)).await;
    m.write_batch_seconds.observe(sent.elapsed().as_secs_f64());
    match result {
        Ok(resp) => {
            for (w, op) in batch.into_iter().zip(resp.op_responses()) {
                let ok = matches!(op, TxnOpResponse::Txn(t) if t.succeeded());
                if !ok {
                    m.writes_fenced.inc();
                }
                let _ = w.reply.send(if ok {
                    Ok(())
                } else {
                    Err(ClusterError::Fenced(w.id.to_string()))
                });
            }
        }
        Err(e) => {
            m.write_batch_failures.inc();
            let msg = e.to_string();
            for w in batch {
                let _ = w.reply.send(Err(ClusterError::Unreachable {
                    endpoints: cluster.endpoints().to_string(),
                    reason: msg.clone(),
                }));
            }
        }
    }
}

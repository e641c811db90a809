//! Group commit of spec compare-and-swaps: concurrent writes of different nodes' specs (the
//! gateway's power, provision and maintenance requests) share one etcd transaction, each
//! still conditional on its own node's revision. A transaction of nested transactions, one per
//! write, is one raft entry and one request for what would be up to [`BATCH`]; each nested one
//! succeeds or fails on its own compare, as it would alone.
//!
//! etcd refuses a transaction that writes one key twice, so two writes of the same node never
//! share a batch: the later one waits for the next.

use crate::batch_gate::BatchGate;
use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use std::collections::{HashSet, VecDeque};
use tokio::sync::{mpsc, oneshot};

/// Writes per transaction at most (etcd's `--max-txn-ops` is 128 by default).
const BATCH: usize = 120;
/// Transactions in flight at once.
const PARALLEL: usize = 4;

/// The answer to one compare-and-swap: the new revision, or None when the spec's revision was
/// not the one expected (someone wrote it since).
type Reply = oneshot::Sender<Result<Option<i64>, ClusterError>>;

struct Cas {
    key: String,
    rev: i64,
    value: Vec<u8>,
    reply: Reply,
}

#[derive(Clone)]
pub struct SpecWriter {
    tx: mpsc::Sender<Cas>,
}

impl SpecWriter {
    pub fn spawn(cluster: Cluster) -> SpecWriter {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        tokio::spawn(run(cluster, rx));
        SpecWriter { tx }
    }

    /// Puts `value` at `key` if the key's mod revision is `rev`.
    pub async fn cas(
        &self,
        key: String,
        rev: i64,
        value: Vec<u8>,
    ) -> Result<Option<i64>, ClusterError> {
        let (reply, rx) = oneshot::channel();
        let gone = || ClusterError::ShuttingDown("the spec writer");
        self.tx
            .send(Cas {
                key,
                rev,
                value,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<Cas>) {
    let gate = BatchGate::new(PARALLEL);
    // Writes of a node that already had one in the batch being gathered.
    let mut later: VecDeque<Cas> = VecDeque::new();
    loop {
        let first = match later.pop_front() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        // Wait for leave first, so that writes arriving meanwhile join this batch.
        let waiting = later.len() + rx.len() + 1;
        let Some(mut pass) = gate.enter(|| waiting >= BATCH).await else {
            return;
        };
        let mut keys = HashSet::from([first.key.clone()]);
        let mut batch = vec![first];
        let mut held = VecDeque::new();
        while batch.len() < BATCH {
            let next = match later.pop_front() {
                Some(c) => c,
                None => match rx.try_recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
            };
            if keys.insert(next.key.clone()) {
                batch.push(next);
            } else {
                held.push_back(next);
            }
        }
        held.extend(later.drain(..));
        later = held;
        if batch.len() == BATCH {
            pass.full();
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            flush(&cluster, batch).await;
            drop(pass);
        });
    }
}

async fn flush(cluster: &Cluster, batch: Vec<Cas>) {
    let ops: Vec<TxnOp> = batch
        .iter()
        .map(|c| {
            TxnOp::txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        c.key.clone(),
                        CompareOp::Equal,
                        c.rev,
                    )])
                    .and_then([TxnOp::put(c.key.clone(), c.value.clone(), None)]),
            )
        })
        .collect();
    match cluster.kv().txn(Txn::new().and_then(ops)).await {
        Ok(resp) => {
            let rev = resp.header().map_or(0, |h| h.revision());
            for (c, op) in batch.into_iter().zip(resp.op_responses()) {
                let ok = matches!(op, TxnOpResponse::Txn(t) if t.succeeded());
                let _ = c.reply.send(Ok(ok.then_some(rev)));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for c in batch {
                let _ = c.reply.send(Err(ClusterError::Unreachable {
                    endpoints: cluster.endpoints().to_string(),
                    reason: msg.clone(),
                }));
            }
        }
    }
}

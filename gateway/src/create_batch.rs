//! Group commit of enrollments: concurrent `POST /v1/nodes` requests share `create_nodes`
//! transactions (up to 120 nodes each, each node still created only if its uuid and name are
//! free), so that many clients enrolling at once cost a few etcd round trips, not one each.

use ferric_cluster::batch_gate::BatchGate;
use ferric_cluster::{Cluster, ClusterError};
use ferric_model::{NodeId, NodeSpec};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<NodeId, ClusterError>>;

/// Batches in flight at once.
const PARALLEL: usize = 4;
const BATCH: usize = 120;

#[derive(Clone)]
pub struct Creator {
    tx: mpsc::Sender<(NodeSpec, Reply)>,
}

impl Creator {
    pub fn spawn(cluster: Cluster) -> Creator {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        tokio::spawn(run(cluster, rx));
        Creator { tx }
    }

    pub async fn create(&self, spec: NodeSpec) -> Result<NodeId, ClusterError> {
        let (reply, rx) = oneshot::channel();
        let gone = || ClusterError::ShuttingDown("the gateway");
        self.tx.send((spec, reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<(NodeSpec, Reply)>) {
    let gate = BatchGate::new(PARALLEL);
    while let Some((batch, pass)) = gate.next(&mut rx, BATCH).await {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let (specs, replies): (Vec<NodeSpec>, Vec<Reply>) = batch.into_iter().unzip();
            match cluster.create_nodes(specs).await {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(ClusterError::Unreachable {
                            endpoints: cluster.endpoints().to_string(),
                            reason: msg.clone(),
                        }));
                    }
                }
            }
            drop(pass);
        });
    }
}

//! Errors of a node actor's work, sorted by what happens next (see `node_actor/effects.rs`'s
//! error policy): a fenced write stops the actor; an unavailable etcd is retried with backoff.

use ferric_cluster::ClusterError;
use ferric_model::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Another conductor holds the node's reservation now: this actor must stop at once.
    #[error("fenced: another conductor owns node {0}")]
    Fenced(NodeId),
    /// etcd did not take or answer a request; the work is retried later.
    #[error("node {node}: etcd unavailable: {source}")]
    Unavailable {
        node: NodeId,
        #[source]
        source: ClusterError,
    },
}

/// Why a conductor stopped serving for good.
#[derive(Debug, thiserror::Error)]
pub enum ConductorError {
    /// `ferric ctl conductor evict`: this incarnation must not come back by itself.
    #[error("conductor {conductor} was evicted by {by}: {reason}")]
    Evicted {
        conductor: String,
        by: String,
        reason: String,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl NodeError {
    /// Sorts a cluster error met while working on `node`.
    pub fn from_cluster(node: NodeId, e: ClusterError) -> Self {
        match e {
            ClusterError::Fenced(_) => NodeError::Fenced(node),
            source => NodeError::Unavailable { node, source },
        }
    }
}

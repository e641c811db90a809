//! Errors of the cluster layer, in terms a user of `ctl` or the API can act on.

use ferric_model::provision::InvalidTransition;
use ferric_model::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    #[error("etcd at {endpoints} failed: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("node {0} could not be found")]
    NodeNotFound(String),
    #[error("a node with name {0} already exists")]
    NameTaken(String),
    #[error("a node with uuid {0} already exists")]
    NodeExists(String),
    #[error(transparent)]
    InvalidState(#[from] InvalidTransition),
    #[error("node {node} is busy: {what}")]
    Busy { node: String, what: String },
    #[error("node {0} was changed concurrently too many times; try again")]
    Conflict(String),
    #[error("record at {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: CodecError,
    },
    #[error("fenced: this conductor no longer owns node {0}")]
    Fenced(String),
    /// The request itself is refused (a rule it breaks, a name that does not exist): the
    /// caller has to change it. Its message is meant for the caller.
    #[error("{0}")]
    Invalid(String),
    /// The component that would carry the request out (named here) is stopping; retrying
    /// against another gateway or later may help.
    #[error("{0} is shutting down")]
    ShuttingDown(&'static str),
    /// Something etcd or a record should never show (a transaction answer of the wrong shape,
    /// a key that vanished while read under a lease): a bug or an outside writer. The detail is
    /// for the log, not for a client.
    #[error("internal error: {0}")]
    Internal(String),
    /// This process's own configuration cannot be used (a TLS file that cannot be read).
    #[error("{0}")]
    Config(String),
}

impl ClusterError {
    pub(crate) fn from_etcd(endpoints: &str, e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let unreachable = match &e {
            E::TransportError(_) | E::IoError(_) => true,
            E::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            _ => false,
        };
        if unreachable {
            ClusterError::Unreachable {
                endpoints: endpoints.to_string(),
                reason: e.to_string(),
            }
        } else {
            ClusterError::Etcd {
                endpoints: endpoints.to_string(),
                source: e,
            }
        }
    }

    /// True when retrying later may help (etcd down or slow), as opposed to a refused request
    /// or a stopping component.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClusterError::Unreachable { .. } | ClusterError::Etcd { .. }
        )
    }
}

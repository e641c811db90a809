//! What `ferric check` reports of the etcd cluster a config points at: its version, its
//! members and leader, and whether this client may read Ferric's prefix.

use crate::{Cluster, ClusterError};

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
    pub leader: bool,
}

/// The facts of the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdFacts {
    /// The version of the member that answered.
    pub version: String,
    pub members: Vec<Member>,
    /// Keys under the prefix (counted, not read), as this client's credentials allow.
    pub keys_under_prefix: i64,
}

impl Cluster {
    /// Asks etcd for its version, members and leader, and counts the keys under the prefix
    /// (which fails with etcd's "permission denied" when the user's role cannot read it).
    pub async fn etcd_facts(&self) -> Result<EtcdFacts, ClusterError> {
        let status = self
            .client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| self.err(e))?;
        let list = self
            .client
            .cluster_client()
            .member_list()
            .await
            .map_err(|e| self.err(e))?;
        let members = list
            .members()
            .iter()
            .map(|m| Member {
                id: m.id(),
                name: m.name().to_string(),
                client_urls: m.client_urls().to_vec(),
                leader: m.id() == status.leader(),
            })
            .collect();
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let count = self
            .kv()
            .get(self.keys().prefix().as_bytes(), Some(opts))
            .await
            .map_err(|e| self.err(e))?
            .count();
        Ok(EtcdFacts {
            version: status.version().to_string(),
            members,
            keys_under_prefix: count,
        })
    }
}

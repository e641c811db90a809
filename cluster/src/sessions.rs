//! Dashboard sessions (`dashboard/sessions/<sha256 hex of the session id>`): each on a lease of
//! its own lifetime, so etcd ends it even if no gateway ever looks at it again. The record is
//! `ferric_model::SessionRecord`; the id never reaches etcd, only its digest.

use crate::{Cluster, ClusterError};
use etcd_client::PutOptions;
use ferric_model::{encode, SessionRecord};

impl Cluster {
    fn session_key(&self, digest: &str) -> String {
        format!("{}dashboard/sessions/{digest}", self.keys().prefix())
    }

    /// Stores a new session under the digest of its id, on a lease that ends with it.
    pub async fn put_session(
        &self,
        digest: &str,
        record: &SessionRecord,
        ttl_s: i64,
    ) -> Result<(), ClusterError> {
        let lease = self
            .lease_client()
            .grant(ttl_s.max(1), None)
            .await
            .map_err(|e| self.err(e))?;
        self.kv()
            .put(
                self.session_key(digest),
                encode(record),
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The session stored under `digest`, if it exists (expiry is the caller's to check: the
    /// lease ends it a moment after `expires_at_ms`).
    pub async fn session(&self, digest: &str) -> Result<Option<SessionRecord>, ClusterError> {
        Ok(self
            .get_record(self.session_key(digest))
            .await?
            .map(|(r, _)| r))
    }

    /// Ends a session (sign-out). Its lease expires on its own.
    pub async fn delete_session(&self, digest: &str) -> Result<(), ClusterError> {
        self.kv()
            .delete(self.session_key(digest), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

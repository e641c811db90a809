//! Conductor membership: `conductors/<name>` on the conductor's lease.

use crate::{get_prefix, Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ferric_model::{decode, encode, now_ms, ConductorRecord, EvictionRecord};
use std::collections::BTreeMap;
use std::time::Duration;

impl Cluster {
    /// Registers a conductor on its lease. A record of the same name on another lease (a
    /// previous incarnation killed less than a TTL ago, or a second process misconfigured with the
    /// same name) is waited out for up to `wait`; it is never overwritten.
    pub async fn register_conductor(
        &self,
        rec: &ConductorRecord,
        wait: Duration,
    ) -> Result<(), ClusterError> {
        let key = self.keys().conductor(&rec.name);
        let deadline = tokio::time::Instant::now() + wait;
        let mut logged = false;
        loop {
            // Leased keys are written inside a Txn: a plain leased put slows down as keys pile up
            // on the lease in etcd 3.4.23 (etcd #15993).
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    encode(rec),
                    Some(PutOptions::new().with_lease(rec.lease_id)),
                )]);
            let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
            if resp.succeeded() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Invalid(format!(
                    "another live conductor is registered as {:?}; choose another --name",
                    rec.name
                )));
            }
            if !logged {
                tracing::warn!(conductor = %rec.name, "a conductor of this name is still registered (previous run?); waiting for its lease to expire");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Rewrites this conductor's own membership record (still on its lease); refused when the
    /// record is no longer on that lease.
    pub async fn update_conductor(&self, rec: &ConductorRecord) -> Result<bool, ClusterError> {
        let key = self.keys().conductor(&rec.name);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, rec.lease_id)])
            .and_then([TxnOp::put(
                key,
                encode(rec),
                Some(PutOptions::new().with_lease(rec.lease_id)),
            )]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        Ok(resp.succeeded())
    }

    /// Live conductors by name, and the revision of the read. Unreadable records are logged and
    /// skipped: a conductor we cannot read cannot be given nodes.
    pub async fn list_conductors(
        &self,
    ) -> Result<(i64, BTreeMap<String, ConductorRecord>), ClusterError> {
        let (rev, kvs) = get_prefix(self, &self.keys().conductors(), None, false).await?;
        let mut out = BTreeMap::new();
        for kv in kvs {
            match decode::<ConductorRecord>(kv.value()) {
                Ok(rec) => {
                    out.insert(rec.name.clone(), rec);
                }
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable conductor record")
                }
            }
        }
        Ok((rev, out))
    }

    /// Number of nodes each conductor owns (through buckets and reservations).
    pub async fn reservation_counts(&self) -> Result<BTreeMap<String, usize>, ClusterError> {
        let (rev, nodes) = crate::get_prefix(self, &self.keys().nodes(), None, true).await?;
        let owners = self.owners(Some(rev)).await?;
        let mut counts = BTreeMap::new();
        for kv in nodes {
            let Some(id) = self.keys().node_id_of(kv.key()) else {
                continue;
            };
            if let Some(holder) = owners.holder(&id) {
                *counts.entry(holder.to_string()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Forcibly ends a live conductor's membership: records who evicted it and why
    /// (`evictions/<name>`), then revokes its lease, so its reservations and consoles vanish in
    /// one revision and it self-fences when its next keepalive is refused, then exits.
    pub async fn evict_conductor(
        &self,
        name: &str,
        by: &str,
        reason: &str,
    ) -> Result<ConductorRecord, ClusterError> {
        let (_, all) = self.list_conductors().await?;
        let rec = all
            .get(name)
            .cloned()
            .ok_or_else(|| ClusterError::Invalid(format!("no live conductor named {name:?}")))?;
        let eviction = EvictionRecord {
            conductor: name.to_string(),
            lease_id: rec.lease_id,
            by: by.to_string(),
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.kv()
            .put(self.keys().eviction(name), encode(&eviction), None)
            .await
            .map_err(|e| self.err(e))?;
        self.revoke_lease(rec.lease_id).await?;
        Ok(rec)
    }

    /// The eviction of `name`'s incarnation on `lease`, if there was one.
    pub async fn eviction_of(
        &self,
        name: &str,
        lease: i64,
    ) -> Result<Option<EvictionRecord>, ClusterError> {
        let resp = self
            .kv()
            .get(self.keys().eviction(name), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| decode::<EvictionRecord>(kv.value()).ok())
            .filter(|e| e.lease_id == lease))
    }
}

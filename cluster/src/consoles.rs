//! The etcd I/O of console records and the console secret (the records are `ferric_model`'s).
//!
//! - `consoles/<uuid>`: the live console session of a node, written by the conductor that runs
//!   it, on that conductor's lease (a dead conductor's records vanish with its lease) and fenced
//!   by the node's reservation (a conductor that lost the node cannot write one).
//! - `config/console-secret`: the cluster-wide secret the gateway presents to conductors'
//!   console servers (`Authorization: Bearer <secret>`), created once by whichever process needs
//!   it first, with a compare-create transaction, and never changed afterwards.

use crate::{get_prefix, Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use ferric_model::{
    decode, encode, now_ms, ConsoleRecord, ConsoleSecretRecord, FenceToken, NodeId,
};

impl Cluster {
    /// `consoles/<uuid>`.
    pub fn console_key(&self, id: &NodeId) -> String {
        self.keys().console(id)
    }

    /// `config/console-secret`.
    pub fn console_secret_key(&self) -> String {
        self.keys().console_secret()
    }

    /// Writes (creates or replaces) the console record of a node on `lease`, only while this
    /// conductor still holds the node's reservation with fencing token `token`.
    pub async fn put_console(
        &self,
        id: &NodeId,
        token: FenceToken,
        lease: i64,
        rec: &ConsoleRecord,
    ) -> Result<(), ClusterError> {
        // fenced: a conductor that lost the node must not advertise a console for it.
        // Leased keys are written inside a Txn (etcd #15993, see membership.rs).
        let txn = Txn::new()
            .when(self.fence_compares(id, token))
            .and_then([TxnOp::put(
                self.console_key(id),
                encode(rec),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Fenced(id.to_string()))
        }
    }

    /// Deletes the console record of a node if it is still on `lease` (a newer owner's record is
    /// left alone). Returns whether a record was deleted.
    pub async fn delete_console(&self, id: &NodeId, lease: i64) -> Result<bool, ClusterError> {
        let key = self.console_key(id);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key, None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        Ok(resp.succeeded())
    }

    /// The console record of a node, if its console runs somewhere.
    pub async fn get_console(&self, id: &NodeId) -> Result<Option<ConsoleRecord>, ClusterError> {
        Ok(self.get_record(self.console_key(id)).await?.map(|(r, _)| r))
    }

    /// Every console record (unreadable ones are skipped with a warning).
    pub async fn list_consoles(&self) -> Result<Vec<(NodeId, ConsoleRecord)>, ClusterError> {
        let (_, kvs) = get_prefix(self, &self.keys().consoles(), None, false).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let Some(id) = self.keys().node_id_of(kv.key()) else {
                continue;
            };
            match decode::<ConsoleRecord>(kv.value()) {
                Ok(rec) => out.push((id, rec)),
                Err(e) => tracing::warn!(node = %id, error = %e, "unreadable console record"),
            }
        }
        Ok(out)
    }

    /// The cluster-wide console secret, created on first use. Every caller, concurrent or
    /// later, gets the same value: the first compare-create wins and the others read it.
    pub async fn console_secret(&self) -> Result<String, ClusterError> {
        let key = self.console_secret_key();
        let fresh = ConsoleSecretRecord {
            secret: new_secret(),
            created_at_ms: now_ms(),
        };
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), encode(&fresh), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        if resp.succeeded() {
            tracing::info!("console secret created");
            return Ok(fresh.secret);
        }
        let existing = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let bytes = existing.ok_or_else(|| {
            ClusterError::Internal(format!("{key} vanished while it was being read"))
        })?;
        let rec: ConsoleSecretRecord =
            decode(&bytes).map_err(|source| ClusterError::Corrupt { key, source })?;
        Ok(rec.secret)
    }
}

/// 244 random bits (two v4 uuids, from the OS's generator) as 64 hex digits.
fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_secrets_differ() {
        let rec = ConsoleRecord {
            conductor: "c1".into(),
            address: "127.0.0.1:4000".into(),
            interface: "ipmitool".into(),
            pid: Some(42),
            started_at_ms: 1,
            active_since_ms: Some(2),
            state: "active".into(),
            last_error: None,
            session: "ipmitool -I lanplus -H h -p 623 -U u sol activate".into(),
        };
        assert_eq!(decode::<ConsoleRecord>(&encode(&rec)).unwrap(), rec);
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}

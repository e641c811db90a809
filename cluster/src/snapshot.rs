//! A conductor's consistent view of the cluster at one revision: live conductors, every node's
//! placement inputs (driver and conductor group), and every reservation. A conductor reads it
//! once per session (and after a watch is lost), then follows the watches from `revision + 1`.

use crate::buckets::HeldReservation;
use crate::{for_each_in_prefix, get_prefix, Cluster, ClusterError};
use ferric_model::{decode, Bucket, ConductorRecord, NodeId, NodeSpec};

pub struct SnapshotNode {
    pub id: NodeId,
    /// (driver, conductor group), or why the spec cannot be read.
    pub placement: Result<(String, String), String>,
    /// The spec's `mod_revision` at the snapshot: after a lost watch, a running node actor that
    /// has an older spec re-reads it (the watch restarts after the snapshot, so a change made
    /// while it was down reaches the actor only this way).
    pub mod_rev: i64,
}

pub struct Snapshot {
    pub revision: i64,
    pub conductors: Vec<ConductorRecord>,
    pub nodes: Vec<SnapshotNode>,
    pub reservations: Vec<HeldReservation>,
}

/// What a conductor reads at the start of a session (and after a watch is lost), at one
/// revision: live conductors, every bucket key, every delegation and every reservation. Not
/// the nodes: each conductor reads only the nodes of the buckets it acquires
/// (`Cluster::read_bucket`), so the fleet is read once in all, not once per conductor.
pub struct OwnershipSnapshot {
    pub revision: i64,
    pub conductors: Vec<ConductorRecord>,
    /// (bucket, create revision, lease)
    pub buckets: Vec<(Bucket, i64, i64)>,
    /// (node, delegate or the record's decode error)
    pub delegations: Vec<(NodeId, Result<String, String>)>,
    pub reservations: Vec<HeldReservation>,
}

impl Cluster {
    pub async fn ownership_snapshot(&self) -> Result<OwnershipSnapshot, ClusterError> {
        let (revision, conductor_kvs) =
            get_prefix(self, &self.keys().conductors(), None, false).await?;
        let keys = self.keys();
        let (_, bucket_kvs) = get_prefix(self, &keys.buckets(), Some(revision), false).await?;
        let buckets = bucket_kvs
            .iter()
            .filter_map(|kv| {
                let b = Bucket::parse(keys.leaf_of(kv.key())?)?;
                Some((b, kv.create_revision(), kv.lease()))
            })
            .collect();
        let (_, delegations) = self.list_delegations(Some(revision)).await?;
        let reservations = self.reservations_at(revision).await?;
        Ok(OwnershipSnapshot {
            revision,
            conductors: conductors_of(&conductor_kvs),
            buckets,
            delegations,
            reservations,
        })
    }

    /// Every node's placement inputs and every reservation at one revision (conductors read
    /// only their buckets now; this is the fleet-wide read, kept for tools and its test of the
    /// large-prefix reader).
    pub async fn snapshot(&self) -> Result<Snapshot, ClusterError> {
        let (revision, conductor_kvs) =
            get_prefix(self, &self.keys().conductors(), None, false).await?;
        let keys = self.keys();
        let mut nodes = Vec::new();
        for_each_in_prefix(self, &keys.nodes(), Some(revision), false, |kv| {
            if let Some(id) = keys.node_id_of(kv.key()) {
                nodes.push(SnapshotNode {
                    id,
                    placement: placement_of(kv.value()),
                    mod_rev: kv.mod_revision(),
                });
            }
        })
        .await?;
        let reservations = self.reservations_at(revision).await?;
        Ok(Snapshot {
            revision,
            conductors: conductors_of(&conductor_kvs),
            nodes,
            reservations,
        })
    }
}

impl Cluster {
    /// Every reservation at `revision`.
    async fn reservations_at(&self, revision: i64) -> Result<Vec<HeldReservation>, ClusterError> {
        let keys = self.keys();
        let mut reservations = Vec::new();
        for_each_in_prefix(self, &keys.reservations(), Some(revision), false, |kv| {
            if let Some(id) = keys.node_id_of(kv.key()) {
                reservations.push(HeldReservation::of(id, &kv));
            }
        })
        .await?;
        Ok(reservations)
    }
}

/// The readable conductor records (an unreadable one is logged and left out).
fn conductors_of(kvs: &[etcd_client::KeyValue]) -> Vec<ConductorRecord> {
    kvs.iter()
        .filter_map(|kv| match decode::<ConductorRecord>(kv.value()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable conductor record");
                None
            }
        })
        .collect()
}

/// The placement inputs of a spec record, or the decode error as text.
pub fn placement_of(value: &[u8]) -> Result<(String, String), String> {
    decode::<NodeSpec>(value)
        .map(|s| (s.driver, s.conductor_group))
        .map_err(|e| e.to_string())
}

//! A conductor's consistent view of the cluster at one revision: live conductors, every node's
//! placement inputs (driver and conductor group), and every reservation. A conductor reads it
//! once per session (and after a watch is lost), then follows the watches from `revision + 1`.

use crate::{for_each_in_prefix, get_prefix, Cluster, ClusterError};
use ferric_model::{decode, ConductorRecord, NodeId, NodeSpec, ReservationRecord};

pub struct SnapshotNode {
    pub id: NodeId,
    /// (driver, conductor group), or why the spec cannot be read.
    pub placement: Result<(String, String), String>,
    /// The spec's `mod_revision` at the snapshot: after a lost watch, a running node actor that
    /// has an older spec re-reads it (the watch restarts after the snapshot, so a change made
    /// while it was down reaches the actor only this way).
    pub mod_rev: i64,
}

pub struct SnapshotReservation {
    pub id: NodeId,
    pub holder: Option<String>,
    pub create_rev: i64,
    pub lease: i64,
}

pub struct Snapshot {
    pub revision: i64,
    pub conductors: Vec<ConductorRecord>,
    pub nodes: Vec<SnapshotNode>,
    pub reservations: Vec<SnapshotReservation>,
}

impl Cluster {
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
        let mut reservations = Vec::new();
        for_each_in_prefix(self, &keys.reservations(), Some(revision), false, |kv| {
            if let Some(id) = keys.node_id_of(kv.key()) {
                reservations.push(SnapshotReservation {
                    id,
                    holder: decode::<ReservationRecord>(kv.value())
                        .ok()
                        .map(|r| r.conductor),
                    create_rev: kv.create_revision(),
                    lease: kv.lease(),
                });
            }
        })
        .await?;
        let conductors = conductor_kvs
            .iter()
            .filter_map(|kv| match decode::<ConductorRecord>(kv.value()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable conductor record");
                    None
                }
            })
            .collect();
        Ok(Snapshot {
            revision,
            conductors,
            nodes,
            reservations,
        })
    }
}

/// The placement inputs of a spec record, or the decode error as text.
pub fn placement_of(value: &[u8]) -> Result<(String, String), String> {
    decode::<NodeSpec>(value)
        .map(|s| (s.driver, s.conductor_group))
        .map_err(|e| e.to_string())
}

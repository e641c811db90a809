//! Records that belong to a node (ports, port groups, volume connectors and targets) and their
//! uniqueness indexes in etcd. Every write is one transaction that checks the node exists,
//! compares the record's revision, and claims the index entries it needs (`index/...`, created
//! only if absent), so uniqueness holds across any number of gateways. An index entry whose
//! record is gone (left by a record that could not be decoded when its node was deleted) is
//! taken over, compared on its own revision.

use crate::{get_prefix, Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp, TxnOpResponse};
use ferric_model::{
    decode, NodeId, PortRecord, PortgroupRecord, VolumeConnectorRecord, VolumeTargetRecord,
};
use std::collections::HashMap;

pub const PORTS: &str = "ports";
pub const PORTGROUPS: &str = "portgroups";
pub const CONNECTORS: &str = "volume-connectors";
pub const TARGETS: &str = "volume-targets";

/// An index entry a record holds: its key in etcd, and what it guards (for the 409 message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    pub key: String,
    pub what: Unique,
}

/// What a uniqueness index guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unique {
    PortMac(String),
    PortName(String),
    PortgroupMac(String),
    PortgroupName(String),
    Vif(String),
    Connector { kind: String, id: String },
    BootIndex(u32),
    VolumeId(String),
}

impl crate::Keyspace {
    fn idx(&self, what: &str, value: &str, u: Unique) -> IndexKey {
        IndexKey {
            key: self.index(what, value),
            what: u,
        }
    }

    pub fn port_indexes(&self, p: &PortRecord) -> Vec<IndexKey> {
        let mut out = vec![self.idx("port-mac", &p.address, Unique::PortMac(p.address.clone()))];
        if let Some(n) = &p.name {
            out.push(self.idx("port-name", n, Unique::PortName(n.clone())));
        }
        if let Some(v) = ferric_model::port::attached_vif(&p.internal_info, "{}") {
            out.push(self.idx("vif", &v, Unique::Vif(v.clone())));
        }
        out
    }

    pub fn portgroup_indexes(&self, g: &PortgroupRecord) -> Vec<IndexKey> {
        let mut out = Vec::new();
        if let Some(a) = &g.address {
            out.push(self.idx("portgroup-mac", a, Unique::PortgroupMac(a.clone())));
        }
        if let Some(n) = &g.name {
            out.push(self.idx("portgroup-name", n, Unique::PortgroupName(n.clone())));
        }
        if let Some(v) = ferric_model::port::attached_vif(&g.internal_info, "{}") {
            out.push(self.idx("vif", &v, Unique::Vif(v.clone())));
        }
        out
    }

    pub fn connector_indexes(&self, c: &VolumeConnectorRecord) -> Vec<IndexKey> {
        vec![self.idx(
            "volume-connector",
            &format!("{}/{}", c.kind, c.connector_id),
            Unique::Connector {
                kind: c.kind.clone(),
                id: c.connector_id.clone(),
            },
        )]
    }

    pub fn target_indexes(&self, t: &VolumeTargetRecord) -> Vec<IndexKey> {
        vec![
            self.idx(
                "volume-boot-index",
                &format!("{}/{}", t.node, t.boot_index),
                Unique::BootIndex(t.boot_index),
            ),
            self.idx(
                "volume-id",
                &format!("{}/{}", t.node, t.volume_id),
                Unique::VolumeId(t.volume_id.clone()),
            ),
        ]
    }

    /// The index entries of a stored record of `kind` (none when it cannot be decoded).
    pub fn indexes_of(&self, kind: &str, bytes: &[u8]) -> Vec<IndexKey> {
        match kind {
            PORTS => decode::<PortRecord>(bytes).map(|r| self.port_indexes(&r)),
            PORTGROUPS => decode::<PortgroupRecord>(bytes).map(|r| self.portgroup_indexes(&r)),
            CONNECTORS => {
                decode::<VolumeConnectorRecord>(bytes).map(|r| self.connector_indexes(&r))
            }
            TARGETS => decode::<VolumeTargetRecord>(bytes).map(|r| self.target_indexes(&r)),
            _ => Ok(Vec::new()),
        }
        .unwrap_or_default()
    }
}

/// One change of a child record.
#[derive(Debug, Clone)]
pub struct ChildWrite {
    /// The node the record belongs to (after the write); it must exist.
    pub node: NodeId,
    pub key: String,
    /// `None`: delete the record.
    pub value: Option<Vec<u8>>,
    /// `None`: create (the key must be absent); `Some(rev)`: the record (at `moved_from` when
    /// it moves to another node) must still be at this mod revision.
    pub expect: Option<i64>,
    pub moved_from: Option<String>,
    /// Index entries the record holds after the write; `before`: those it held.
    pub after: Vec<IndexKey>,
    pub before: Vec<IndexKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutcome {
    /// Written at this revision.
    Done(i64),
    /// An index entry is held by another record.
    Taken(Unique),
    /// The record changed (or, for a create, exists) since it was read.
    Changed,
    /// The node is gone.
    NodeGone,
}

impl Cluster {
    /// Applies one change of a child record (see [`ChildWrite`]).
    pub async fn write_child(&self, w: &ChildWrite) -> Result<ChildOutcome, ClusterError> {
        let cur_key = w.moved_from.clone().unwrap_or_else(|| w.key.clone());
        // Orphaned index entries found on a failed attempt, by key: their mod revision.
        let mut orphans: HashMap<String, i64> = HashMap::new();
        for _ in 0..4 {
            let node_key = self.keys().node(&w.node);
            let mut when = Vec::new();
            let mut then = Vec::new();
            let mut otherwise = vec![
                TxnOp::get(node_key.clone(), None),
                TxnOp::get(cur_key.clone(), None),
            ];
            if w.value.is_some() {
                // A record never outlives its node: a node's delete removes its children.
                when.push(Compare::version(node_key, CompareOp::Greater, 0));
            }
            match w.expect {
                None => when.push(Compare::create_revision(w.key.clone(), CompareOp::Equal, 0)),
                Some(rev) => when.push(Compare::mod_revision(
                    cur_key.clone(),
                    CompareOp::Equal,
                    rev,
                )),
            }
            if let Some(old) = &w.moved_from {
                when.push(Compare::create_revision(w.key.clone(), CompareOp::Equal, 0));
                then.push(TxnOp::delete(old.clone(), None));
            }
            match &w.value {
                Some(v) => then.push(TxnOp::put(w.key.clone(), v.clone(), None)),
                None => then.push(TxnOp::delete(w.key.clone(), None)),
            }
            let held: Vec<&String> = w.before.iter().map(|i| &i.key).collect();
            let mut claimed = Vec::new();
            for i in &w.after {
                if held.contains(&&i.key) {
                    if w.moved_from.is_some() {
                        // Still held, now by the record's new key.
                        when.push(Compare::value(
                            i.key.clone(),
                            CompareOp::Equal,
                            cur_key.clone(),
                        ));
                        then.push(TxnOp::put(i.key.clone(), w.key.clone(), None));
                    }
                    continue;
                }
                match orphans.get(&i.key) {
                    Some(rev) => {
                        when.push(Compare::mod_revision(i.key.clone(), CompareOp::Equal, *rev))
                    }
                    None => when.push(Compare::create_revision(i.key.clone(), CompareOp::Equal, 0)),
                }
                then.push(TxnOp::put(i.key.clone(), w.key.clone(), None));
                otherwise.push(TxnOp::get(i.key.clone(), None));
                claimed.push(i);
            }
            let keep: Vec<&String> = w.after.iter().map(|i| &i.key).collect();
            for i in &w.before {
                if !keep.contains(&&i.key) || w.value.is_none() {
                    // Only if it is still this record's (it is never anyone else's, but an
                    // admin may have repaired it by hand).
                    then.push(TxnOp::txn(
                        Txn::new()
                            .when([Compare::value(
                                i.key.clone(),
                                CompareOp::Equal,
                                cur_key.clone(),
                            )])
                            .and_then([TxnOp::delete(i.key.clone(), None)]),
                    ));
                }
            }
            let resp = self
                .kv()
                .txn(Txn::new().when(when).and_then(then).or_else(otherwise))
                .await
                .map_err(|e| self.err(e))?;
            if resp.succeeded() {
                return Ok(ChildOutcome::Done(
                    resp.header().map_or(0, |h| h.revision()),
                ));
            }
            let gets: Vec<Option<etcd_client::KeyValue>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                    _ => None,
                })
                .collect();
            if w.value.is_some() && gets.first().is_none_or(|g| g.is_none()) {
                return Ok(ChildOutcome::NodeGone);
            }
            let cur = gets.get(1).cloned().flatten();
            let changed = match w.expect {
                None => cur.is_some(),
                Some(rev) => cur.as_ref().map(|kv| kv.mod_revision()) != Some(rev),
            };
            if changed {
                return Ok(ChildOutcome::Changed);
            }
            let mut retry = false;
            for (i, got) in claimed.iter().zip(gets.iter().skip(2)) {
                let Some(kv) = got else { continue };
                let holder = String::from_utf8_lossy(kv.value()).to_string();
                if holder == w.key || holder == cur_key {
                    continue;
                }
                let held = self
                    .kv()
                    .get(holder.clone(), None)
                    .await
                    .map_err(|e| self.err(e))?;
                if held.kvs().is_empty() {
                    tracing::warn!(index = %i.key, record = %holder, "taking over an index entry whose record is gone");
                    orphans.insert(i.key.clone(), kv.mod_revision());
                    retry = true;
                } else {
                    return Ok(ChildOutcome::Taken(i.what.clone()));
                }
            }
            if !retry {
                // A moved record's kept entry changed, or a race with a concurrent claim.
                return Ok(ChildOutcome::Changed);
            }
        }
        Ok(ChildOutcome::Changed)
    }

    /// The operations that delete every child record of a node and their index entries, for
    /// the node's own delete transaction.
    pub(crate) async fn node_children_ops(&self, id: &NodeId) -> Result<Vec<TxnOp>, ClusterError> {
        let mut ops = Vec::new();
        for kind in crate::keyspace::CHILD_KINDS {
            let prefix = self.keys().node_children(kind, id);
            let (_, kvs) = get_prefix(self, &prefix, None, false).await?;
            for kv in &kvs {
                let record_key = String::from_utf8_lossy(kv.key()).to_string();
                for i in self.keys().indexes_of(kind, kv.value()) {
                    ops.push(TxnOp::txn(
                        Txn::new()
                            .when([Compare::value(
                                i.key.clone(),
                                CompareOp::Equal,
                                record_key.clone(),
                            )])
                            .and_then([TxnOp::delete(i.key, None)]),
                    ));
                }
            }
            ops.push(TxnOp::delete(
                prefix,
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        Ok(ops)
    }
}

//! Nodes whose records cannot be decoded: read them raw, keep what can be read, delete them,
//! or replace their spec. A corrupt record must never make a node vanish: the gateway shows
//! it with the error, and the API and `ferric ctl node repair` can delete it (freeing its
//! name) or write a new, valid spec over it. Every write is a compare-and-swap on the
//! revisions read here, so a concurrent repair or change is never lost.

use crate::{get_prefix, Cluster, ClusterError, NodeView};
use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp, TxnOpResponse};
use ferric_model::{
    decode, encode, now_ms, BootDevice, BootDeviceRequest, CodecError, NodeId, NodeName, NodeSpec,
    NodeStatus, PowerRequest, PowerTarget, ProvisionRequest, Verb,
};

/// One key as read from etcd.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_rev: i64,
}

impl RawRecord {
    fn of(kv: &etcd_client::KeyValue) -> Self {
        RawRecord {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            mod_rev: kv.mod_revision(),
        }
    }
}

/// What can still be read of a spec that does not decode: its leading fields (postcard
/// writes fields in order, so a record damaged past them still yields them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecParts {
    pub name: Option<NodeName>,
    pub driver: Option<String>,
}

/// The readable leading fields of the spec record of node `id`; nothing when the record is
/// of an unknown format or names another node (then even the leading fields are not trusted).
pub fn spec_parts(id: &NodeId, bytes: &[u8]) -> SpecParts {
    let Some((&version, body)) = bytes.split_first() else {
        return SpecParts::default();
    };
    // Every format so far (1, and 2 which appended fields) starts with the same fields.
    if version == 0 || version > <NodeSpec as ferric_model::Record>::VERSION {
        return SpecParts::default();
    }
    if let Ok(((rid, name, driver), _)) =
        postcard::take_from_bytes::<(NodeId, Option<NodeName>, String)>(body)
    {
        if rid == *id {
            return SpecParts {
                name,
                driver: Some(driver).filter(|d| !d.is_empty()),
            };
        }
    }
    if let Ok(((rid, name), _)) = postcard::take_from_bytes::<(NodeId, Option<NodeName>)>(body) {
        if rid == *id {
            return SpecParts { name, driver: None };
        }
    }
    SpecParts::default()
}

/// Decodes a spec record that must belong to node `id`.
pub fn decode_spec(id: &NodeId, bytes: &[u8]) -> Result<NodeSpec, CodecError> {
    let spec = decode::<NodeSpec>(bytes)?;
    if spec.id != *id {
        return Err(CodecError::Corrupt {
            kind: "node spec",
            version: bytes.first().copied().unwrap_or(0),
            reason: format!("it names another node ({})", spec.id),
        });
    }
    Ok(spec)
}

/// Every record of one node, raw, as read in one transaction (plus the name index entries
/// that point at it).
#[derive(Debug, Clone)]
pub struct NodeRecords {
    pub id: NodeId,
    pub spec: Option<RawRecord>,
    pub status: Option<RawRecord>,
    pub reservation: Option<RawRecord>,
    /// `delegations/<uuid>`: the bucket's holder handed the node on (README, "How ownership
    /// works").
    pub delegation: Option<RawRecord>,
    /// The key of the node's bucket (`buckets/<bucket>`), whose holder owns the node unless it
    /// is handed on.
    pub bucket: Option<RawRecord>,
    pub console: Option<RawRecord>,
    /// `names/<name>` entries whose value is this node's uuid.
    pub names: Vec<RawRecord>,
    /// Keys of the node's history entries.
    pub history: Vec<RawRecord>,
}

impl NodeRecords {
    /// The decoded spec, `None` if there is no spec record.
    pub fn spec(&self) -> Option<Result<NodeSpec, CodecError>> {
        self.spec.as_ref().map(|r| decode_spec(&self.id, &r.value))
    }

    /// The decoded status (the default if none yet), and why it cannot be read.
    pub fn status(&self) -> (NodeStatus, Option<String>) {
        match self.status.as_ref().map(|r| decode::<NodeStatus>(&r.value)) {
            None => (NodeStatus::default(), None),
            Some(Ok(s)) => (s, None),
            Some(Err(e)) => (NodeStatus::default(), Some(e.to_string())),
        }
    }

    /// The node's name: the spec's, or (when the spec cannot be read) the index's.
    pub fn name(&self) -> Option<String> {
        match self.spec() {
            Some(Ok(spec)) => spec.name.map(|n| n.as_str().to_string()),
            _ => self
                .spec
                .as_ref()
                .and_then(|r| spec_parts(&self.id, &r.value).name)
                .map(|n| n.as_str().to_string())
                .or_else(|| self.names.first().map(|r| self.name_of(r))),
        }
    }

    fn name_of(&self, r: &RawRecord) -> String {
        r.key
            .rsplit_once("names/")
            .map_or("", |(_, n)| n)
            .to_string()
    }

    /// The node as readers see it. When the spec cannot be read, the spec is a stand-in built
    /// from what can be read (no maintenance, no instance, no requests), so that checks on the
    /// status (Ironic's delete rule) still apply; `spec_rev` is the record's revision.
    pub fn view(&self) -> Option<NodeView> {
        let raw = self.spec.as_ref()?;
        let spec = match self.spec()? {
            Ok(spec) => spec,
            Err(_) => self.stand_in(),
        };
        let (status, status_error) = self.status();
        fn value(r: &Option<RawRecord>) -> Option<&[u8]> {
            r.as_ref().map(|r| r.value.as_slice())
        }
        let reservation = crate::buckets::node_holder(
            value(&self.reservation),
            value(&self.delegation),
            value(&self.bucket),
        );
        Some(NodeView {
            spec,
            spec_rev: raw.mod_rev,
            status,
            status_error,
            reservation,
        })
    }

    /// A spec built from what can be read of an unreadable one.
    pub fn stand_in(&self) -> NodeSpec {
        let parts = self
            .spec
            .as_ref()
            .map(|r| spec_parts(&self.id, &r.value))
            .unwrap_or_default();
        let mut spec = NodeSpec::new(self.id, parts.driver.as_deref().unwrap_or(""), 0);
        spec.name = self.name().and_then(|n| NodeName::parse(&n).ok());
        spec
    }
}

/// Makes a replacement spec continue the request sequences the owner has already carried out
/// (from a readable `status`): the owner takes a request as new only when its sequence is
/// above what it has done, so a replacement that restarted at 1 would have its requests
/// ignored. The carried-over requests are marked done (their sequence equals the status's).
pub fn continue_sequences(spec: &mut NodeSpec, old: Option<&NodeSpec>, status: &NodeStatus) {
    if let Some(old) = old {
        spec.power_request = old.power_request.clone();
        spec.provision_request = old.provision_request.clone();
        spec.boot_device_request = old.boot_device_request.clone();
        return;
    }
    let by = "ferric repair (sequence carried over)".to_string();
    let at = now_ms();
    if status.power_seq_done > 0 {
        spec.power_request = Some(PowerRequest {
            seq: status.power_seq_done,
            target: PowerTarget::On,
            timeout_s: None,
            requested_by: by.clone(),
            requested_at_ms: at,
        });
    }
    if status.provision_seq_done > 0 {
        spec.provision_request = Some(ProvisionRequest {
            seq: status.provision_seq_done,
            verb: Verb::Manage,
            maintenance_ok: false,
            args: String::new(),
            requested_by: by.clone(),
            requested_at_ms: at,
        });
    }
    if status.boot_seq_done > 0 {
        spec.boot_device_request = Some(BootDeviceRequest {
            seq: status.boot_seq_done,
            device: BootDevice::Disk,
            persistent: false,
            requested_by: by,
            requested_at_ms: at,
        });
    }
}

impl Cluster {
    /// Every record of a node, raw. `id_or_name` is a uuid or a name in the name index; the
    /// index entries pointing at the node are found through its spec's name, or, when the
    /// spec cannot be read, by scanning the index (a repair is rare).
    pub async fn node_records(&self, id_or_name: &str) -> Result<NodeRecords, ClusterError> {
        let id = self.resolve(id_or_name).await?;
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys().node(&id), None),
            TxnOp::get(self.keys().status(&id), None),
            TxnOp::get(self.keys().reservation(&id), None),
            TxnOp::get(self.keys().console(&id), None),
            TxnOp::get(self.keys().delegation(&id), None),
            TxnOp::get(self.keys().bucket(ferric_model::Bucket::of(&id)), None),
            TxnOp::get(
                self.keys().history(&id),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            ),
        ]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        let ops = resp.op_responses();
        let all = |i: usize| -> Vec<RawRecord> {
            match ops.get(i) {
                Some(TxnOpResponse::Get(g)) => g.kvs().iter().map(RawRecord::of).collect(),
                _ => Vec::new(),
            }
        };
        let first = |i: usize| all(i).into_iter().next();
        let mut records = NodeRecords {
            id,
            spec: first(0),
            status: first(1),
            reservation: first(2),
            console: first(3),
            delegation: first(4),
            bucket: first(5),
            names: Vec::new(),
            history: all(6),
        };
        let id_text = id.to_string();
        let mut candidates: Vec<String> = Vec::new();
        if id_or_name.parse::<NodeId>().is_err() {
            candidates.push(id_or_name.to_string());
        }
        match records.spec() {
            Some(Ok(spec)) => candidates.extend(spec.name.map(|n| n.as_str().to_string())),
            Some(Err(_)) => {
                let bytes = records.spec.as_ref().map_or(&[][..], |r| &r.value);
                let parts = spec_parts(&id, bytes);
                candidates.extend(parts.name.map(|n| n.as_str().to_string()));
            }
            None => {}
        }
        let readable = matches!(records.spec(), Some(Ok(_)));
        if candidates.is_empty() && !readable {
            let (_, kvs) = get_prefix(
                self,
                &format!("{}names/", self.keys().prefix()),
                None,
                false,
            )
            .await?;
            records.names = kvs
                .iter()
                .filter(|kv| kv.value() == id_text.as_bytes())
                .map(RawRecord::of)
                .collect();
        } else {
            for name in candidates {
                let resp = self
                    .kv()
                    .get(self.keys().name(&name), None)
                    .await
                    .map_err(|e| self.err(e))?;
                if let Some(kv) = resp
                    .kvs()
                    .first()
                    .filter(|kv| kv.value() == id_text.as_bytes())
                {
                    if !records.names.iter().any(|r| r.key.as_bytes() == kv.key()) {
                        records.names.push(RawRecord::of(kv));
                    }
                }
            }
        }
        Ok(records)
    }

    /// Deletes a node whose spec may not be readable: spec, status, history, BIOS cache, inspection data, agent token and the name
    /// index entries pointing at it, in one transaction that compares every revision read, so
    /// a concurrent repair wins or this fails with a conflict. `check` sees the node as
    /// [`NodeRecords::view`] shows it and may refuse.
    pub async fn delete_node_records<F>(
        &self,
        id_or_name: &str,
        check: F,
    ) -> Result<NodeId, ClusterError>
    where
        F: Fn(&NodeRecords, &NodeView) -> Result<(), ClusterError>,
    {
        let records = self.node_records(id_or_name).await?;
        let view = records
            .view()
            .ok_or_else(|| ClusterError::NodeNotFound(id_or_name.to_string()))?;
        check(&records, &view)?;
        let id = records.id;
        let key = self.keys().node(&id);
        let mut when = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            view.spec_rev,
        )];
        let mut ops = vec![
            TxnOp::delete(key, None),
            TxnOp::delete(self.keys().status(&id), None),
            // A node handed on goes with its delegation (its delegate then lets it go).
            TxnOp::delete(self.keys().delegation(&id), None),
            TxnOp::delete(self.keys().bios(&id), None),
            TxnOp::delete(self.keys().inventory(&id), None),
            TxnOp::delete(self.keys().agent_token(&id), None),
            TxnOp::delete(
                self.keys().history(&id),
                Some(DeleteOptions::new().with_prefix()),
            ),
        ];
        for name in &records.names {
            when.push(Compare::mod_revision(
                name.key.clone(),
                CompareOp::Equal,
                name.mod_rev,
            ));
            ops.push(TxnOp::delete(name.key.clone(), None));
        }
        // Its ports, port groups and volume records go with it, with their index entries (a
        // child created meanwhile is removed by the prefix delete; its index entry, if left,
        // is taken over by the next claim, see `children`).
        ops.extend(self.node_children_ops(&id).await?);
        let resp = self
            .kv()
            .txn(Txn::new().when(when).and_then(ops))
            .await
            .map_err(|e| self.err(e))?;
        if resp.succeeded() {
            Ok(id)
        } else {
            Err(ClusterError::Conflict(id_or_name.to_string()))
        }
    }

    /// Replaces a node's spec, readable or not, with the one `build` makes from its records
    /// (same uuid; the name index follows a new name). Compare-and-swap on the spec's and the
    /// old name entries' revisions, retried on concurrent changes like
    /// [`Cluster::update_node`]. A new name must be free.
    pub async fn replace_spec<F, E>(&self, id_or_name: &str, mut build: F) -> Result<NodeView, E>
    where
        F: FnMut(&NodeRecords) -> Result<NodeSpec, E>,
        E: From<ClusterError>,
    {
        for _ in 0..16 {
            let records = self.node_records(id_or_name).await?;
            let Some(raw) = records.spec.clone() else {
                return Err(ClusterError::NodeNotFound(id_or_name.to_string()).into());
            };
            let mut spec = build(&records)?;
            if spec.id != records.id {
                return Err(
                    ClusterError::Invalid("the uuid of a node cannot change".into()).into(),
                );
            }
            spec.updated_at_ms = now_ms();
            let key = self.keys().node(&records.id);
            let mut when = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                raw.mod_rev,
            )];
            let mut then = vec![TxnOp::put(key, encode(&spec), None)];
            let mut otherwise = vec![];
            let new_key = spec.name.as_ref().map(|n| self.keys().name(n.as_str()));
            for old in &records.names {
                when.push(Compare::mod_revision(
                    old.key.clone(),
                    CompareOp::Equal,
                    old.mod_rev,
                ));
                if Some(&old.key) != new_key.as_ref() {
                    then.push(TxnOp::delete(old.key.clone(), None));
                }
            }
            if let Some(new_key) = &new_key {
                if !records.names.iter().any(|r| &r.key == new_key) {
                    when.push(Compare::create_revision(
                        new_key.clone(),
                        CompareOp::Equal,
                        0,
                    ));
                    then.push(TxnOp::put(new_key.clone(), records.id.to_string(), None));
                    otherwise.push(TxnOp::get(new_key.clone(), None));
                }
            }
            let resp = self
                .kv()
                .txn(Txn::new().when(when).and_then(then).or_else(otherwise))
                .await
                .map_err(|e| self.err(e))?;
            if resp.succeeded() {
                let (status, status_error) = records.status();
                return Ok(NodeView {
                    spec,
                    spec_rev: resp.header().map_or(0, |h| h.revision()),
                    status,
                    status_error,
                    reservation: records.view().and_then(|v| v.reservation),
                });
            }
            let name_taken = matches!(resp.op_responses().first(), Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty());
            if let (true, Some(new)) = (name_taken, &spec.name) {
                return Err(ClusterError::NameTaken(new.to_string()).into());
            }
        }
        Err(ClusterError::Conflict(id_or_name.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        let mut s = NodeSpec::new(NodeId::new_random(), "ipmi", 5);
        s.name = Some(NodeName::parse("rack1-07").unwrap());
        s
    }

    #[test]
    fn leading_fields_of_a_damaged_spec_are_read() {
        let s = spec();
        let mut bytes = encode(&s);
        // Damage everything after the driver: the record no longer decodes.
        let cut = bytes.len() - 4;
        bytes.truncate(cut);
        assert!(decode::<NodeSpec>(&bytes).is_err());
        let parts = spec_parts(&s.id, &bytes);
        assert_eq!(parts.name.as_ref().map(|n| n.as_str()), Some("rack1-07"));
        assert_eq!(parts.driver.as_deref(), Some("ipmi"));
    }

    #[test]
    fn garbage_and_other_nodes_yield_nothing() {
        let s = spec();
        assert_eq!(spec_parts(&s.id, b"garbage"), SpecParts::default());
        assert_eq!(spec_parts(&s.id, b""), SpecParts::default());
        assert_eq!(
            spec_parts(&NodeId::new_random(), &encode(&s)),
            SpecParts::default()
        );
        assert!(decode_spec(&NodeId::new_random(), &encode(&s)).is_err());
    }

    #[test]
    fn a_replacement_continues_the_owners_sequences() {
        let status = NodeStatus {
            power_seq_done: 7,
            provision_seq_done: 3,
            ..Default::default()
        };
        let mut new = spec();
        continue_sequences(&mut new, None, &status);
        assert_eq!(new.next_power_seq(), 8);
        assert_eq!(new.next_provision_seq(), 4);
        assert_eq!(new.next_boot_seq(), 1);
        // Nothing carried over is pending.
        assert!(new.pending_power(&status).is_none());
        assert!(new.pending_provision(&status).is_none());
    }
}

//! The gateway copy's part for records that belong to a node (ports, port groups, volume
//! connectors and targets): each kind in a [`ChildIndex`] with its lookups kept as records
//! change (by uuid, by node, in creation order, by MAC address and by name), so a lookup by
//! MAC is a hash lookup, never a scan. A record that cannot be decoded is logged and left out;
//! the rest are served.

use ferric_model::{
    decode, NodeId, PortRecord, PortgroupRecord, Record, VolumeConnectorRecord, VolumeTargetRecord,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// What the copy needs to know of a child record.
pub trait Child: Record + Clone + Send + Sync + 'static {
    fn uuid(&self) -> Uuid;
    fn node(&self) -> NodeId;
    fn created_at_ms(&self) -> u64;
    fn address(&self) -> Option<&str> {
        None
    }
    fn name(&self) -> Option<&str> {
        None
    }
    /// The VIF attached to it (ports and port groups).
    fn vif(&self) -> Option<String> {
        None
    }
}

impl Child for PortRecord {
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn node(&self) -> NodeId {
        self.node
    }
    fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }
    fn address(&self) -> Option<&str> {
        Some(&self.address)
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn vif(&self) -> Option<String> {
        ferric_model::port::attached_vif(&self.internal_info, &self.extra)
    }
}

impl Child for PortgroupRecord {
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn node(&self) -> NodeId {
        self.node
    }
    fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }
    fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn vif(&self) -> Option<String> {
        ferric_model::port::attached_vif(&self.internal_info, &self.extra)
    }
}

impl Child for VolumeConnectorRecord {
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn node(&self) -> NodeId {
        self.node
    }
    fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }
}

impl Child for VolumeTargetRecord {
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn node(&self) -> NodeId {
        self.node
    }
    fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }
}

/// One record as stored, with its etcd key and mod revision (the compare-and-swap token).
#[derive(Debug)]
pub struct Entry<T> {
    pub record: T,
    pub key: String,
    pub rev: i64,
}

#[derive(Debug)]
pub struct ChildIndex<T> {
    pub by_uuid: HashMap<Uuid, Arc<Entry<T>>>,
    pub by_created: BTreeSet<(u64, Uuid)>,
    pub by_node: HashMap<NodeId, BTreeSet<(u64, Uuid)>>,
    pub by_address: HashMap<String, Uuid>,
    pub by_name: HashMap<String, Uuid>,
    pub by_vif: HashMap<String, Uuid>,
    /// Records that could not be decoded (key: error), kept for `/healthz`-like reporting.
    pub unreadable: HashMap<String, String>,
}

impl<T> Default for ChildIndex<T> {
    fn default() -> Self {
        ChildIndex {
            by_uuid: HashMap::new(),
            by_created: BTreeSet::new(),
            by_node: HashMap::new(),
            by_address: HashMap::new(),
            by_name: HashMap::new(),
            by_vif: HashMap::new(),
            unreadable: HashMap::new(),
        }
    }
}

impl<T> Clone for ChildIndex<T> {
    fn clone(&self) -> Self {
        ChildIndex {
            by_uuid: self.by_uuid.clone(),
            by_created: self.by_created.clone(),
            by_node: self.by_node.clone(),
            by_address: self.by_address.clone(),
            by_name: self.by_name.clone(),
            by_vif: self.by_vif.clone(),
            unreadable: self.unreadable.clone(),
        }
    }
}

impl<T: Child> ChildIndex<T> {
    pub fn get(&self, uuid: &Uuid) -> Option<Arc<Entry<T>>> {
        self.by_uuid.get(uuid).cloned()
    }

    /// By uuid, or by name for kinds that have one.
    pub fn lookup(&self, ident: &str) -> Option<Arc<Entry<T>>> {
        match ident.parse::<Uuid>() {
            Ok(u) => self.get(&u),
            Err(_) => self.by_name.get(ident).and_then(|u| self.get(u)),
        }
    }

    pub fn by_mac(&self, mac: &str) -> Option<Arc<Entry<T>>> {
        self.by_address.get(mac).and_then(|u| self.get(u))
    }

    /// A node's records in creation order.
    pub fn of_node(&self, node: &NodeId) -> Vec<Arc<Entry<T>>> {
        self.by_node
            .get(node)
            .map(|s| s.iter().filter_map(|(_, u)| self.get(u)).collect())
            .unwrap_or_default()
    }

    fn remove(&mut self, uuid: &Uuid) {
        let Some(old) = self.by_uuid.remove(uuid) else {
            return;
        };
        let r = &old.record;
        let k = (r.created_at_ms(), *uuid);
        self.by_created.remove(&k);
        if let Some(s) = self.by_node.get_mut(&r.node()) {
            s.remove(&k);
            if s.is_empty() {
                self.by_node.remove(&r.node());
            }
        }
        let drop_from = |map: &mut HashMap<String, Uuid>, key: Option<String>| {
            if let Some(key) = key {
                if map.get(&key) == Some(uuid) {
                    map.remove(&key);
                }
            }
        };
        drop_from(&mut self.by_address, r.address().map(str::to_string));
        drop_from(&mut self.by_name, r.name().map(str::to_string));
        drop_from(&mut self.by_vif, r.vif());
    }

    fn insert(&mut self, entry: Entry<T>) {
        let uuid = entry.record.uuid();
        self.remove(&uuid);
        let r = &entry.record;
        let k = (r.created_at_ms(), uuid);
        self.by_created.insert(k);
        self.by_node.entry(r.node()).or_default().insert(k);
        if let Some(a) = r.address() {
            self.by_address.insert(a.to_string(), uuid);
        }
        if let Some(n) = r.name() {
            self.by_name.insert(n.to_string(), uuid);
        }
        if let Some(v) = r.vif() {
            self.by_vif.insert(v, uuid);
        }
        self.by_uuid.insert(uuid, Arc::new(entry));
    }

    /// A put or delete of `key` (whose leaf is `<node>/<uuid>`).
    pub fn apply(&mut self, key: &str, leaf: &str, value: Option<&[u8]>, rev: i64) {
        let Some(uuid) = leaf
            .split_once('/')
            .and_then(|(_, u)| u.parse::<Uuid>().ok())
        else {
            return;
        };
        self.unreadable.remove(key);
        match value.map(decode::<T>) {
            None => self.remove(&uuid),
            Some(Ok(record)) if record.uuid() == uuid => self.insert(Entry {
                record,
                key: key.to_string(),
                rev,
            }),
            Some(Ok(_)) => {
                tracing::error!(%key, "a {} record names another uuid than its key; left out", T::KIND);
                self.unreadable
                    .insert(key.into(), "uuid differs from its key".into());
                self.remove(&uuid);
            }
            Some(Err(e)) => {
                // Never hides the rest and never stops the copy: logged and left out.
                tracing::error!(%key, error = %e, "unreadable {} record; left out", T::KIND);
                self.unreadable.insert(key.into(), e.to_string());
                self.remove(&uuid);
            }
        }
    }
}

/// Every child kind of the copy.
#[derive(Debug, Default, Clone)]
pub struct Children {
    pub ports: ChildIndex<PortRecord>,
    pub portgroups: ChildIndex<PortgroupRecord>,
    pub connectors: ChildIndex<VolumeConnectorRecord>,
    pub targets: ChildIndex<VolumeTargetRecord>,
}

impl Children {
    /// Applies a change under one of the child prefixes; false if `kind` is not one.
    pub fn apply(
        &mut self,
        kind: &str,
        key: &str,
        leaf: &str,
        value: Option<&[u8]>,
        rev: i64,
    ) -> bool {
        use ferric_cluster::children::{CONNECTORS, PORTGROUPS, PORTS, TARGETS};
        match kind {
            PORTS => self.ports.apply(key, leaf, value, rev),
            PORTGROUPS => self.portgroups.apply(key, leaf, value, rev),
            CONNECTORS => self.connectors.apply(key, leaf, value, rev),
            TARGETS => self.targets.apply(key, leaf, value, rev),
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_model::encode;

    fn port(n: u128, node: NodeId, mac: &str) -> PortRecord {
        PortRecord {
            uuid: Uuid::from_u128(n),
            node,
            address: mac.into(),
            portgroup: None,
            pxe_enabled: true,
            local_link_connection: "{}".into(),
            physical_network: None,
            extra: "{}".into(),
            internal_info: "{}".into(),
            is_smartnic: false,
            name: None,
            created_at_ms: n as u64,
            updated_at_ms: None,
        }
    }

    #[test]
    fn the_index_follows_changes_and_skips_garbage() {
        let node = NodeId::new_random();
        let mut c = Children::default();
        let key = |n: u128| format!("/f/ports/{node}/{}", Uuid::from_u128(n));
        let leaf = |n: u128| format!("{node}/{}", Uuid::from_u128(n));
        let a = port(1, node, "52:54:00:00:00:01");
        c.apply("ports", &key(1), &leaf(1), Some(&encode(&a)), 2);
        c.apply(
            "ports",
            &key(2),
            &leaf(2),
            Some(&encode(&port(2, node, "52:54:00:00:00:02"))),
            3,
        );
        assert_eq!(c.ports.by_mac("52:54:00:00:00:01").unwrap().record, a);
        // Address change moves the index entry.
        let mut a2 = a.clone();
        a2.address = "52:54:00:00:00:09".into();
        c.apply("ports", &key(1), &leaf(1), Some(&encode(&a2)), 4);
        assert!(c.ports.by_mac("52:54:00:00:00:01").is_none());
        assert_eq!(c.ports.by_mac("52:54:00:00:00:09").unwrap().rev, 4);
        // Garbage: logged and left out, the rest stays.
        c.apply("ports", &key(1), &leaf(1), Some(b"\x01garbage"), 5);
        assert!(c.ports.get(&Uuid::from_u128(1)).is_none());
        assert!(c.ports.by_mac("52:54:00:00:00:09").is_none());
        assert_eq!(c.ports.of_node(&node).len(), 1);
        assert_eq!(c.ports.unreadable.len(), 1);
        c.apply("ports", &key(2), &leaf(2), None, 6);
        assert!(c.ports.of_node(&node).is_empty() && c.ports.by_address.is_empty());
    }
}

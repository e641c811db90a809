//! The etcd keyspace: every key Ferric writes lives under one prefix (default `/ferric/`).

use ferric_model::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace::new("/ferric/")
    }
}

impl Keyspace {
    /// `prefix` is normalised to end in exactly one `/`.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.trim_end_matches('/').to_string();
        prefix.push('/');
        Keyspace { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }
    pub fn node(&self, id: &NodeId) -> String {
        format!("{}nodes/{id}", self.prefix)
    }
    pub fn statuses(&self) -> String {
        format!("{}status/", self.prefix)
    }
    pub fn status(&self, id: &NodeId) -> String {
        format!("{}status/{id}", self.prefix)
    }
    pub fn name(&self, name: &str) -> String {
        format!("{}names/{name}", self.prefix)
    }
    pub fn reservations(&self) -> String {
        format!("{}reservations/", self.prefix)
    }
    pub fn reservation(&self, id: &NodeId) -> String {
        format!("{}reservations/{id}", self.prefix)
    }
    pub fn conductors(&self) -> String {
        format!("{}conductors/", self.prefix)
    }
    pub fn conductor(&self, name: &str) -> String {
        format!("{}conductors/{name}", self.prefix)
    }
    pub fn eviction(&self, name: &str) -> String {
        format!("{}evictions/{name}", self.prefix)
    }
    pub fn consoles(&self) -> String {
        format!("{}consoles/", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events/", self.prefix)
    }
    /// `events/<uuid>/<seq>`, the seq zero-padded so that keys sort in order.
    pub fn event(&self, id: &NodeId, seq: u64) -> String {
        format!("{}events/{id}/{seq:020}", self.prefix)
    }
    /// All history entries of a node.
    pub fn history(&self, id: &NodeId) -> String {
        format!("{}history/{id}/", self.prefix)
    }
    /// One history entry, the seq zero-padded so that keys sort in order.
    pub fn history_entry(&self, id: &NodeId, seq: u64) -> String {
        format!("{}history/{id}/{seq:020}", self.prefix)
    }

    /// The node id at the end of a `nodes/`, `status/`, `reservations/` or `consoles/` key.
    pub fn node_id_of(&self, key: &[u8]) -> Option<NodeId> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.prefix)?;
        let (_, id) = rest.split_once('/')?;
        id.parse().ok()
    }

    /// The last path element of a key (a conductor name under `conductors/`).
    pub fn leaf_of<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        let key = std::str::from_utf8(key).ok()?;
        key.strip_prefix(self.prefix.as_str())?
            .split_once('/')
            .map(|(_, leaf)| leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix_and_parse_back() {
        let ks = Keyspace::new("/test//");
        assert_eq!(ks.prefix(), "/test/");
        let id = NodeId::new_random();
        assert_eq!(ks.node(&id), format!("/test/nodes/{id}"));
        assert_eq!(ks.node_id_of(ks.reservation(&id).as_bytes()), Some(id));
        assert_eq!(ks.node_id_of(b"/other/nodes/x"), None);
        assert_eq!(ks.leaf_of(ks.conductor("c1").as_bytes()), Some("c1"));
        assert_eq!(Keyspace::new("ferric").prefix(), "ferric/");
    }
}

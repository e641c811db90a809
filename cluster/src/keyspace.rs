//! The etcd keyspace: every key Ferric writes lives under one prefix (default `/ferric/`).

use ferric_model::{Bucket, NodeId};

/// The kinds of records that belong to a node and go with it (see [`Keyspace::child`]).
pub const CHILD_KINDS: &[&str] = &["ports", "portgroups", "volume-connectors", "volume-targets"];

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
    /// Bucket keys: `buckets/<bucket>` names the conductor that owns the bucket's nodes (all
    /// but those it hands on), on that conductor's lease.
    pub fn buckets(&self) -> String {
        format!("{}buckets/", self.prefix)
    }
    pub fn bucket(&self, b: Bucket) -> String {
        format!("{}buckets/{b}", self.prefix)
    }
    /// Hand-overs: `delegations/<uuid>` names the conductor a bucket's holder hands the node
    /// on to (it does not serve the node's driver or group). No lease: the holder's death must
    /// not disturb the delegate.
    pub fn delegations(&self) -> String {
        format!("{}delegations/", self.prefix)
    }
    pub fn delegation(&self, id: &NodeId) -> String {
        format!("{}delegations/{id}", self.prefix)
    }
    /// The range of one bucket's keys under a per-node prefix (`nodes()`, `statuses()`, ...).
    pub fn bucket_range(&self, per_node_prefix: &str, b: Bucket) -> String {
        format!("{per_node_prefix}{b}")
    }
    /// A bucket's status marker, `status/<bucket>`: put (on the holder's lease) by every
    /// acquisition of the bucket, in the same transaction. It sorts within the bucket's status
    /// range but names no node (a uuid is longer), so readers of statuses pass over it; a watch
    /// of the range sees its put after every status written before the acquisition.
    pub fn status_marker(&self, b: Bucket) -> String {
        self.bucket_range(&self.statuses(), b)
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
    /// A node's live console session, on the running conductor's lease.
    pub fn console(&self, id: &NodeId) -> String {
        format!("{}consoles/{id}", self.prefix)
    }
    /// Agent heartbeats, watched by conductors.
    pub fn heartbeats(&self) -> String {
        format!("{}heartbeats/", self.prefix)
    }
    /// The last heartbeat of a node's agent (no lease).
    pub fn heartbeat(&self, id: &NodeId) -> String {
        format!("{}heartbeats/{id}", self.prefix)
    }
    /// Cluster-wide settings, watched by conductors.
    pub fn config(&self) -> String {
        format!("{}config/", self.prefix)
    }
    /// The cluster-wide console secret, created once.
    pub fn console_secret(&self) -> String {
        format!("{}config/console-secret", self.prefix)
    }
    /// The remediation policy.
    pub fn remediation_policy(&self) -> String {
        format!("{}config/remediation", self.prefix)
    }
    /// The power sync settings (`SyncConfig`).
    pub fn sync_config(&self) -> String {
        format!("{}config/sync", self.prefix)
    }
    /// The remediation rate limit's current window (not under `config/`: it changes often
    /// and conductors need not watch it).
    pub fn remediation_budget(&self) -> String {
        format!("{}remediation/budget", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events/", self.prefix)
    }
    /// `events/<uuid>/<seq>`, the seq zero-padded so that keys sort in order.
    pub fn event(&self, id: &NodeId, seq: u64) -> String {
        format!("{}events/{id}/{seq:020}", self.prefix)
    }
    /// `events/<uuid>/`: all outbox events of a node.
    pub fn node_events(&self, id: &NodeId) -> String {
        format!("{}events/{id}/", self.prefix)
    }
    pub fn deliveries(&self) -> String {
        format!("{}delivery/", self.prefix)
    }
    /// The delivery cursor of a node's events (no lease; fenced like the status).
    pub fn delivery(&self, id: &NodeId) -> String {
        format!("{}delivery/{id}", self.prefix)
    }
    pub fn resends(&self) -> String {
        format!("{}resend/", self.prefix)
    }
    /// A gateway's request to re-send a node's pending events now (watched by conductors).
    pub fn resend(&self, id: &NodeId) -> String {
        format!("{}resend/{id}", self.prefix)
    }
    /// A node's cached BIOS settings (no lease; fenced like the status).
    pub fn bios(&self, id: &NodeId) -> String {
        format!("{}bios/{id}", self.prefix)
    }
    /// The agent token of a node's current ramdisk boot (its hash; see `AgentTokenRecord`).
    pub fn agent_token(&self, id: &NodeId) -> String {
        format!("{}agent-tokens/{id}", self.prefix)
    }
    /// A node's inspection data (no lease; written by the gateway that received it).
    pub fn inventory(&self, id: &NodeId) -> String {
        format!("{}inventory/{id}", self.prefix)
    }
    /// All history entries of a node.
    pub fn history(&self, id: &NodeId) -> String {
        format!("{}history/{id}/", self.prefix)
    }
    /// One history entry, the seq zero-padded so that keys sort in order.
    pub fn history_entry(&self, id: &NodeId, seq: u64) -> String {
        format!("{}history/{id}/{seq:020}", self.prefix)
    }

    /// A node's ports, port groups, volume connectors or volume targets: `<kind>/<node>/<uuid>`
    /// (`kind` is one of [`CHILD_KINDS`]), so that a node's delete removes them by prefix.
    pub fn children(&self, kind: &str) -> String {
        format!("{}{kind}/", self.prefix)
    }
    pub fn node_children(&self, kind: &str, node: &NodeId) -> String {
        format!("{}{kind}/{node}/", self.prefix)
    }
    pub fn child(&self, kind: &str, node: &NodeId, uuid: &uuid::Uuid) -> String {
        format!("{}{kind}/{node}/{uuid}", self.prefix)
    }
    /// A uniqueness index entry (`index/<what>/<value>`, value: the key of the record holding
    /// it): port and port group MACs and names, attached VIFs, volume connector ids, volume
    /// targets' boot indexes and volume ids per node. Claimed in the record's own transaction
    /// with a compare on its create revision, so two gateways cannot both take one value.
    pub fn index(&self, what: &str, value: &str) -> String {
        let mut v = String::with_capacity(value.len());
        for b in value.bytes() {
            if b == b'/' || b == b'%' {
                v.push_str(&format!("%{b:02X}"));
            } else {
                v.push(b as char);
            }
        }
        format!("{}index/{what}/{v}", self.prefix)
    }

    /// The node id at the end of a `nodes/`, `status/`, `reservations/`, `consoles/` or
    /// `heartbeats/` key.
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

    #[test]
    fn every_key_kind_has_its_place() {
        let ks = Keyspace::default();
        let id: NodeId = "6f1c3a52-8d9e-4b8a-9a77-0e5f4c1d2b3a".parse().unwrap();
        let node_keys = [
            (ks.node(&id), ks.nodes(), "/ferric/nodes/"),
            (ks.status(&id), ks.statuses(), "/ferric/status/"),
            (
                ks.reservation(&id),
                ks.reservations(),
                "/ferric/reservations/",
            ),
            (ks.console(&id), ks.consoles(), "/ferric/consoles/"),
            (ks.delegation(&id), ks.delegations(), "/ferric/delegations/"),
            (ks.heartbeat(&id), ks.heartbeats(), "/ferric/heartbeats/"),
            (ks.delivery(&id), ks.deliveries(), "/ferric/delivery/"),
            (ks.resend(&id), ks.resends(), "/ferric/resend/"),
            (
                ks.bios(&id),
                format!("{}bios/", ks.prefix()),
                "/ferric/bios/",
            ),
        ];
        for (key, prefix, want) in node_keys {
            assert_eq!(prefix, want);
            assert_eq!(key, format!("{want}{id}"));
            assert_eq!(ks.node_id_of(key.as_bytes()), Some(id), "{key}");
        }
        let b = ferric_model::Bucket::of(&id);
        assert_eq!(ks.bucket(b), "/ferric/buckets/6f1");
        assert!(ks.bucket(b).starts_with(&ks.buckets()));
        assert_eq!(ks.leaf_of(ks.bucket(b).as_bytes()), Some("6f1"));
        for prefix in [
            ks.nodes(),
            ks.statuses(),
            ks.delegations(),
            ks.reservations(),
        ] {
            let range = ks.bucket_range(&prefix, b);
            assert_eq!(range, format!("{prefix}6f1"));
            assert!(format!("{prefix}{id}").starts_with(&range));
        }
        assert_eq!(ks.config(), "/ferric/config/");
        for key in [ks.console_secret(), ks.remediation_policy()] {
            assert!(key.starts_with(&ks.config()), "{key}");
        }
        assert_eq!(ks.console_secret(), "/ferric/config/console-secret");
        assert_eq!(ks.remediation_policy(), "/ferric/config/remediation");
        assert_eq!(ks.remediation_budget(), "/ferric/remediation/budget");
        assert!(!ks.remediation_budget().starts_with(&ks.config()));
        assert_eq!(
            ks.event(&id, 7),
            format!("/ferric/events/{id}/00000000000000000007")
        );
        assert!(ks.history_entry(&id, 1).starts_with(&ks.history(&id)));
        assert!(ks.event(&id, 1).starts_with(&ks.node_events(&id)));
        let port = uuid::Uuid::from_u128(7);
        assert_eq!(
            ks.child("ports", &id, &port),
            format!("/ferric/ports/{id}/{port}")
        );
        assert!(ks
            .child("ports", &id, &port)
            .starts_with(&ks.node_children("ports", &id)));
        assert_eq!(
            ks.index("port-mac", "52:54:00:12:34:56"),
            "/ferric/index/port-mac/52:54:00:12:34:56"
        );
        assert_eq!(ks.index("vol", "a/b%"), "/ferric/index/vol/a%2Fb%25");
    }
}

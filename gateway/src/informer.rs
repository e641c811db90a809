//! The gateway's watch-fed copy of the cluster (like a Kubernetes informer): every node spec,
//! status, bucket, delegation and reservation and every live conductor, read at one revision and then kept current
//! by one watch on the cluster's whole key prefix from `revision + 1`. One watch (not one per
//! prefix) keeps every change in etcd's order, so the copy is always the cluster as it was at
//! exactly `revision`. A lost or compacted watch means a fresh read (relist).
//!
//! Reads are served from here; writes go to etcd and then wait until this copy has seen them.

use ferric_cluster::feed::FeedKv;
use ferric_cluster::repair::{decode_spec, spec_parts, SpecParts};
use ferric_cluster::{Cluster, NodeView, WatchEvent, WatchLost};
use ferric_model::{
    decode, Bucket, ConductorRecord, NodeId, NodeSpec, NodeStatus, ProvisionState,
    ReservationRecord,
};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::watch;

/// A node's spec with its JSON fields parsed once (and secrets masked once) per change.
#[derive(Debug)]
pub struct SpecEntry {
    /// The spec; for an unreadable record, a stand-in with what could be read (uuid, and name
    /// and driver when the record's leading fields or the name index give them).
    pub spec: NodeSpec,
    /// Why the spec record cannot be decoded, phrased for an admin with what to do; the node
    /// is still shown, with this in `last_error`, and can be deleted or have its spec replaced.
    pub unreadable: Option<Arc<str>>,
    /// The decoder's own error, when the spec record cannot be decoded.
    pub decode_error: Option<Arc<str>>,
    pub rev: i64,
    pub driver_info: Box<RawValue>,
    pub driver_info_masked: Box<RawValue>,
    pub properties: Box<RawValue>,
    pub extra: Box<RawValue>,
    pub instance_info: Box<RawValue>,
    pub instance_info_masked: Box<RawValue>,
    pub network_data: Box<RawValue>,
    /// The node's last full rendering (see [`crate::node_json::NodeList`]), with what it was
    /// rendered from: a list of details serves most nodes as these bytes, rendered once per
    /// change of the node instead of once per request.
    pub rendered: std::sync::Mutex<Option<Rendered>>,
}

/// One cached rendering of a node: valid while the request renders the same way (`render`)
/// and the node has the same status entry (the same `Arc`, kept alive here so that its address
/// cannot be reused) and holder.
#[derive(Debug)]
pub struct Rendered {
    pub render: u64,
    pub status: Option<Arc<StatusEntry>>,
    pub holder: Option<Arc<str>>,
    pub json: Arc<Box<RawValue>>,
}

impl SpecEntry {
    pub fn new(spec: NodeSpec, rev: i64) -> Self {
        let driver_info = json_object(&spec.driver_info);
        let instance_info = json_object(&spec.instance_info);
        SpecEntry {
            driver_info_masked: masked(&driver_info, false),
            instance_info_masked: masked(&instance_info, true),
            driver_info: raw(&driver_info),
            instance_info: raw(&instance_info),
            properties: raw(&json_object(&spec.properties)),
            extra: raw(&json_object(&spec.extra)),
            network_data: raw(&json_object(&spec.network_data)),
            spec,
            unreadable: None,
            decode_error: None,
            rev,
            rendered: std::sync::Mutex::new(None),
        }
    }

    /// The entry of a spec record that cannot be decoded.
    pub fn unreadable(id: NodeId, parts: SpecParts, error: &str, rev: i64) -> Self {
        let mut spec = NodeSpec::new(id, parts.driver.as_deref().unwrap_or(""), 0);
        spec.updated_at_ms = 0;
        spec.name = parts.name;
        let message = unreadable_spec_message(&id, spec.name.as_ref().map(|n| n.as_str()), error);
        let mut entry = SpecEntry::new(spec, rev);
        entry.unreadable = Some(Arc::from(message));
        entry.decode_error = Some(Arc::from(error));
        entry
    }

    /// What the spec entry's stand-in knows, to rebuild it (with a name found later).
    fn parts(&self) -> SpecParts {
        SpecParts {
            name: self.spec.name.clone(),
            driver: Some(self.spec.driver.clone()).filter(|d| !d.is_empty()),
        }
    }
}

/// A node's status as last written by its owner (or why it cannot be read).
#[derive(Debug)]
pub struct StatusEntry {
    pub status: NodeStatus,
    pub error: Option<String>,
}

/// One node as readers see it.
#[derive(Debug, Clone)]
pub struct NodeRef {
    pub spec: Arc<SpecEntry>,
    pub status: Option<Arc<StatusEntry>>,
    /// The conductor holding the node's reservation.
    pub holder: Option<Arc<str>>,
}

impl NodeRef {
    /// A node as read straight from etcd (inside a compare-and-swap).
    pub fn from_view(view: &NodeView) -> Self {
        NodeRef {
            spec: Arc::new(SpecEntry::new(view.spec.clone(), view.spec_rev)),
            status: Some(Arc::new(StatusEntry {
                status: view.status.clone(),
                error: view.status_error.clone(),
            })),
            holder: view.reservation.as_deref().map(Arc::from),
        }
    }

    pub fn id(&self) -> NodeId {
        self.spec.spec.id
    }

    pub fn status(&self) -> &NodeStatus {
        static DEFAULT: std::sync::OnceLock<NodeStatus> = std::sync::OnceLock::new();
        match &self.status {
            Some(s) => &s.status,
            None => DEFAULT.get_or_init(NodeStatus::default),
        }
    }

    /// Why a record of the node cannot be read: the spec's first, then the status's (each
    /// already phrased for an admin, with what to do).
    pub fn status_error(&self) -> Option<&str> {
        self.spec
            .unreadable
            .as_deref()
            .or_else(|| self.status.as_ref().and_then(|s| s.error.as_deref()))
    }

    /// The node as `cluster` views it, for a write that starts from this copy (None when the
    /// spec record cannot be read: such a write reads etcd).
    pub fn view(&self) -> Option<ferric_cluster::NodeView> {
        if self.spec_unreadable() {
            return None;
        }
        Some(ferric_cluster::NodeView {
            spec: self.spec.spec.clone(),
            spec_rev: self.spec.rev,
            status: self.status().clone(),
            status_error: self.status.as_ref().and_then(|s| s.error.clone()),
            reservation: self.holder.as_deref().map(str::to_string),
        })
    }

    /// Whether the spec record cannot be decoded (the spec here is a stand-in).
    pub fn spec_unreadable(&self) -> bool {
        self.spec.unreadable.is_some()
    }
}

/// `last_error` of a node whose spec record cannot be decoded.
pub fn unreadable_spec_message(id: &NodeId, name: Option<&str>, error: &str) -> String {
    let uuid = id.to_string();
    let ident = name.unwrap_or(&uuid);
    format!(
        "The spec record of node {id} in etcd cannot be read ({error}); no conductor acts on this node and only what is shown could be read. Delete it (`baremetal node delete {ident}`, which frees its name) or replace its spec: PATCH with at least the driver (`baremetal node set {ident} --driver ...`) or PUT /v1/nodes/{id} with a full node body. `ferric ctl node repair {id}` shows the raw records."
    )
}

/// `last_error` of a node whose status record cannot be decoded.
pub fn unreadable_status_message(id: &NodeId, error: &str) -> String {
    format!(
        "The status record of node {id} in etcd cannot be read ({error}); its power and provision state are unknown until its conductor writes a new one. `ferric ctl node repair {id}` shows the raw records; the node can be deleted."
    )
}

/// The copy itself.
#[derive(Debug, Default, Clone)]
pub struct CacheState {
    pub revision: i64,
    pub specs: HashMap<NodeId, Arc<SpecEntry>>,
    pub statuses: HashMap<NodeId, Arc<StatusEntry>>,
    /// Holders of per-node reservations (nodes handed on by their bucket's holder).
    pub holders: HashMap<NodeId, Arc<str>>,
    /// Holders of buckets: they own their buckets' nodes but those handed on.
    pub buckets: HashMap<Bucket, Arc<str>>,
    /// Nodes with a delegation (handed on by their bucket's holder).
    pub delegated: HashSet<NodeId>,
    pub conductors: BTreeMap<String, ConductorRecord>,
    /// What `conductors` serve, rebuilt when one of their records changes.
    pub live_drivers: Arc<crate::node_input::LiveDrivers>,
    /// Creation order (Ironic's default sort is its row id, i.e. creation order).
    pub by_created: BTreeSet<(u64, NodeId)>,
    pub names: HashMap<String, NodeId>,
    /// Nodes per provision state (of those with a status), kept as statuses change: the
    /// cluster-wide caps on concurrent deploys and cleans read it on every such request.
    pub provision_counts: HashMap<ProvisionState, usize>,
    /// Ports, port groups, volume connectors and targets, with their lookups.
    pub children: crate::child_cache::Children,
}

impl CacheState {
    pub fn node(&self, id: &NodeId) -> Option<NodeRef> {
        let spec = self.specs.get(id)?;
        Some(NodeRef {
            spec: spec.clone(),
            status: self.statuses.get(id).cloned(),
            holder: self.holder(id),
        })
    }

    /// Rebuilds `live_drivers` from `conductors`, keeping the shared copy when nothing in it
    /// changed (conductors rewrite their records to report running actors and sync counters).
    fn refresh_live_drivers(&mut self) {
        let mut live = crate::node_input::LiveDrivers::default();
        for c in self.conductors.values() {
            for d in &c.drivers {
                live.served.push((d.clone(), c.conductor_group.clone()));
            }
            live.hardware.extend(crate::drivers::hardware_of(c));
        }
        if *self.live_drivers != live {
            self.live_drivers = Arc::new(live);
        }
    }

    /// Who owns `id` (DESIGN.md, "Placement"): the holder of its own reservation; nobody while
    /// it is handed on and not reserved yet; otherwise the holder of its bucket.
    pub fn holder(&self, id: &NodeId) -> Option<Arc<str>> {
        if let Some(h) = self.holders.get(id) {
            return Some(h.clone());
        }
        if self.delegated.contains(id) {
            return None;
        }
        self.buckets.get(&Bucket::of(id)).cloned()
    }

    /// A node by uuid or unique name.
    pub fn lookup(&self, ident: &str) -> Option<NodeRef> {
        match ident.parse::<NodeId>() {
            Ok(id) => self.node(&id),
            Err(_) => self.names.get(ident).and_then(|id| self.node(id)),
        }
    }

    /// Whether a live conductor serves `driver` in `group` (placement would give it a node).
    pub fn served(&self, driver: &str, group: &str) -> bool {
        self.conductors.values().any(|c| c.serves(driver, group))
    }

    /// Whether any conductor is alive (one holds every node, as its owner or caretaker).
    pub fn any_conductor(&self) -> bool {
        !self.conductors.is_empty()
    }

    /// Nodes each conductor holds.
    pub fn holder_counts(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in self.specs.keys() {
            let holder = match self.holders.get(id) {
                Some(h) => Some(&**h),
                None if self.delegated.contains(id) => None,
                None => self.buckets.get(&Bucket::of(id)).map(|h| &**h),
            };
            if let Some(h) = holder {
                *counts.entry(h).or_insert(0) += 1;
            }
        }
        counts
    }

    fn put_spec(&mut self, spec: NodeSpec, rev: i64) {
        self.put_entry(SpecEntry::new(spec, rev));
    }

    fn put_entry(&mut self, entry: SpecEntry) {
        let id = entry.spec.id;
        let spec = &entry.spec;
        if let Some(old) = self.specs.get(&id) {
            self.by_created.remove(&(old.spec.created_at_ms, id));
            if let Some(name) = &old.spec.name {
                if self.names.get(name.as_str()) == Some(&id) {
                    self.names.remove(name.as_str());
                }
            }
        }
        self.by_created.insert((spec.created_at_ms, id));
        if let Some(name) = &spec.name {
            self.names.insert(name.as_str().to_string(), id);
        }
        self.specs.insert(id, Arc::new(entry));
    }

    /// A spec record that cannot be decoded: the node stays, with what can be read. Its name
    /// comes from the record's leading fields, else from the copy's previous spec, else from
    /// the name index (`names/` is read after `nodes/`, see [`CacheState::apply`]).
    fn put_unreadable(&mut self, id: NodeId, bytes: &[u8], error: &str, rev: i64) {
        let mut parts = spec_parts(&id, bytes);
        if let Some(old) = self.specs.get(&id) {
            if parts.name.is_none() {
                parts.name = old.spec.name.clone();
            }
            if parts.driver.is_none() {
                parts.driver = Some(old.spec.driver.clone()).filter(|d| !d.is_empty());
            }
        }
        self.put_entry(SpecEntry::unreadable(id, parts, error, rev));
    }

    fn delete_spec(&mut self, id: &NodeId) {
        if let Some(old) = self.specs.remove(id) {
            self.by_created.remove(&(old.spec.created_at_ms, *id));
            if let Some(name) = &old.spec.name {
                if self.names.get(name.as_str()) == Some(id) {
                    self.names.remove(name.as_str());
                }
            }
        }
    }

    fn apply(&mut self, prefix: &str, key: &[u8], value: Option<&[u8]>, rev: i64) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        let Some(rest) = key.strip_prefix(prefix) else {
            return;
        };
        let Some((kind, leaf)) = rest.split_once('/') else {
            return;
        };
        if self.children.apply(kind, key, leaf, value, rev) {
            return;
        }
        match kind {
            "nodes" => {
                let Ok(id) = leaf.parse::<NodeId>() else {
                    return;
                };
                match value {
                    None => self.delete_spec(&id),
                    Some(bytes) => match decode_spec(&id, bytes) {
                        Ok(spec) => self.put_spec(spec, rev),
                        Err(e) => {
                            // Shown with the error in `last_error`, never left out.
                            tracing::error!(%key, error = %e, "unreadable node spec");
                            self.put_unreadable(id, bytes, &e.to_string(), rev);
                        }
                    },
                }
            }
            "names" => {
                // Only a node whose spec cannot be read takes its name from the index (a
                // readable spec carries its own, and the index moves with it).
                let Some(id) = value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<NodeId>().ok())
                else {
                    return;
                };
                let Some(entry) = self.specs.get(&id) else {
                    return;
                };
                if entry.unreadable.is_none() || entry.spec.name.is_some() {
                    return;
                }
                let Ok(name) = ferric_model::NodeName::parse(leaf) else {
                    return;
                };
                let mut parts = entry.parts();
                parts.name = Some(name);
                let rev = entry.rev;
                let error = entry.decode_error.clone().unwrap_or_else(|| Arc::from(""));
                self.put_entry(SpecEntry::unreadable(id, parts, &error, rev));
            }
            "status" => {
                let Ok(id) = leaf.parse::<NodeId>() else {
                    return;
                };
                if let Some(old) = self.statuses.get(&id) {
                    let state = old.status.provision_state;
                    if let Some(n) = self.provision_counts.get_mut(&state) {
                        *n = n.saturating_sub(1);
                    }
                }
                match value {
                    None => {
                        self.statuses.remove(&id);
                    }
                    Some(v) => {
                        let entry = match decode::<NodeStatus>(v) {
                            Ok(status) => StatusEntry {
                                status,
                                error: None,
                            },
                            Err(e) => {
                                tracing::error!(%key, error = %e, "unreadable node status");
                                StatusEntry {
                                    status: NodeStatus::default(),
                                    error: Some(unreadable_status_message(&id, &e.to_string())),
                                }
                            }
                        };
                        *self
                            .provision_counts
                            .entry(entry.status.provision_state)
                            .or_insert(0) += 1;
                        self.statuses.insert(id, Arc::new(entry));
                    }
                }
            }
            "reservations" => {
                let Ok(id) = leaf.parse::<NodeId>() else {
                    return;
                };
                match value.map(decode::<ReservationRecord>) {
                    Some(Ok(r)) => {
                        self.holders.insert(id, Arc::from(r.conductor.as_str()));
                    }
                    Some(Err(e)) => {
                        tracing::error!(%key, error = %e, "unreadable reservation");
                        self.holders.remove(&id);
                    }
                    None => {
                        self.holders.remove(&id);
                    }
                }
            }
            "buckets" => {
                let Some(b) = Bucket::parse(leaf) else {
                    return;
                };
                match value.map(decode::<ReservationRecord>) {
                    Some(Ok(r)) => {
                        self.buckets.insert(b, Arc::from(r.conductor.as_str()));
                    }
                    Some(Err(e)) => {
                        tracing::error!(%key, error = %e, "unreadable bucket record");
                        self.buckets.remove(&b);
                    }
                    None => {
                        self.buckets.remove(&b);
                    }
                }
            }
            "delegations" => {
                let Ok(id) = leaf.parse::<NodeId>() else {
                    return;
                };
                if value.is_some() {
                    self.delegated.insert(id);
                } else {
                    self.delegated.remove(&id);
                }
            }
            "conductors" => {
                match value.map(decode::<ConductorRecord>) {
                    Some(Ok(c)) => {
                        self.conductors.insert(leaf.to_string(), c);
                    }
                    Some(Err(e)) => {
                        tracing::error!(%key, error = %e, "unreadable conductor record");
                        self.conductors.remove(leaf);
                    }
                    None => {
                        self.conductors.remove(leaf);
                    }
                }
                self.refresh_live_drivers();
            }
            _ => {}
        }
    }
}

/// Shared between the informer task and the request handlers.
pub struct Informer {
    state: RwLock<CacheState>,
    rev_tx: watch::Sender<i64>,
    /// Why the copy is not current, when it is not (shown by `/healthz`).
    problem: Mutex<Option<String>>,
    prefix: String,
}

impl std::fmt::Debug for Informer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("revision", &*self.rev_tx.borrow())
            .finish()
    }
}

/// How long a read waits for the copy to catch up before answering 503.
pub const CATCH_UP: Duration = Duration::from_secs(10);

impl Informer {
    /// Starts following the cluster; the task ends when `stop` turns true.
    /// `hub`: the event streams' hub, fed from this watch.
    pub fn start(
        cluster: Cluster,
        stop: watch::Receiver<bool>,
        hub: Arc<crate::event_hub::Hub>,
    ) -> Arc<Informer> {
        let (rev_tx, _) = watch::channel(0);
        let informer = Arc::new(Informer {
            state: RwLock::new(CacheState::default()),
            rev_tx,
            problem: Mutex::new(Some("not loaded yet".into())),
            prefix: cluster.keys().prefix().to_string(),
        });
        tokio::spawn(run(cluster, informer.clone(), hub, stop));
        informer
    }

    /// The copy, read-locked: take what is needed (entries are `Arc`s) and let go before any
    /// `.await`, so the watch is never held up for long.
    pub fn read(&self) -> RwLockReadGuard<'_, CacheState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revision(&self) -> i64 {
        *self.rev_tx.borrow()
    }

    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_problem(&self, p: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Waits (bounded) until the copy has reached `rev`; false on timeout.
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits (bounded) until `pred` holds on the copy; false on timeout.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&CacheState) -> bool) -> bool {
        let mut rx = self.rev_tx.subscribe();
        let wait = async {
            loop {
                if pred(&self.read()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The informer stopped; nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn install(&self, revision: i64, kvs: Vec<FeedKv>) {
        let mut fresh = CacheState::default();
        for kv in &kvs {
            fresh.apply(&self.prefix, &kv.key, Some(&kv.value), kv.mod_rev);
        }
        fresh.revision = revision;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.rev_tx.send_replace(revision);
    }

    fn apply_batch(&self, events: &[WatchEvent], revision: i64) {
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for ev in events {
                match ev {
                    WatchEvent::Put {
                        key,
                        value,
                        mod_rev,
                        ..
                    } => state.apply(&self.prefix, key, Some(value), *mod_rev),
                    WatchEvent::Delete { key, mod_rev } => {
                        state.apply(&self.prefix, key, None, *mod_rev)
                    }
                }
            }
            state.revision = state.revision.max(revision);
        }
        self.rev_tx.send_if_modified(|r| {
            if revision > *r {
                *r = revision;
                true
            } else {
                false
            }
        });
    }
}

async fn run(
    cluster: Cluster,
    informer: Arc<Informer>,
    hub: Arc<crate::event_hub::Hub>,
    mut stop: watch::Receiver<bool>,
) {
    let keys = cluster.keys().clone();
    // `names/` after `nodes/`: a spec that cannot be read takes its name from the index.
    let prefixes = [
        keys.nodes(),
        keys.statuses(),
        keys.reservations(),
        keys.buckets(),
        keys.delegations(),
        keys.conductors(),
        format!("{}names/", keys.prefix()),
        keys.children(ferric_cluster::children::PORTS),
        keys.children(ferric_cluster::children::PORTGROUPS),
        keys.children(ferric_cluster::children::CONNECTORS),
        keys.children(ferric_cluster::children::TARGETS),
    ];
    let mut backoff = Duration::from_millis(100);
    // Where the watch goes on from; None: read the copy anew first (at start, after the watch
    // fell behind compaction, and when etcd is behind the copy, as after a restore).
    let mut from: Option<i64> = None;
    let mut why = "loaded";
    // The watch ended: before watching again from `from`, check that etcd is not behind it.
    let mut check_behind = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let start = match from {
            Some(rev) => rev,
            None => {
                let listed = tokio::select! {
                    r = cluster.read_prefixes(&prefixes) => r,
                    _ = stop.changed() => return,
                };
                match listed {
                    Ok((revision, kvs)) => {
                        let n = kvs.len();
                        informer.install(revision, kvs);
                        hub.reloaded(revision, why);
                        tracing::info!(revision, records = n, "gateway copy loaded");
                        revision + 1
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the cluster; retrying");
                        let problem = format!("cannot read the cluster: {e}");
                        if !wait_to_retry(&informer, problem, &mut backoff, &mut stop).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        from = Some(start);
        if check_behind {
            // A watch from a revision etcd has not reached (it was restored from a backup)
            // would wait for it and miss everything until then: read the copy anew instead.
            match cluster.revision().await {
                Ok(now) if now < start - 1 => {
                    tracing::warn!(
                        revision = now,
                        copy = start - 1,
                        "etcd is behind the gateway's copy (restored?); reloading"
                    );
                    from = None;
                    why = "etcd went back in time";
                    check_behind = false;
                    continue;
                }
                Ok(_) => check_behind = false,
                Err(e) => {
                    let problem = format!("cannot watch the cluster: {e}");
                    if !wait_to_retry(&informer, problem, &mut backoff, &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let mut watch = match cluster.watch_prefix(keys.prefix(), start).await {
            Ok(w) => w,
            Err(e) => {
                let problem = format!("cannot watch the cluster: {e}");
                if !wait_to_retry(&informer, problem, &mut backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        informer.set_problem(None);
        backoff = Duration::from_millis(100);
        let lost = loop {
            let next = tokio::select! {
                n = watch.next() => n,
                _ = stop.changed() => return,
            };
            match next {
                Ok(events) => {
                    informer.apply_batch(&events, watch.revision);
                    hub.feed(&informer.prefix, &events, watch.revision);
                }
                Err(lost) => break lost,
            }
        };
        informer.set_problem(Some(format!("watching again: {lost}")));
        match &lost {
            WatchLost::Compacted(rev) => {
                tracing::warn!(
                    compacted = rev,
                    "gateway watch fell behind compaction; reloading"
                );
                from = None;
                why = "compacted";
            }
            WatchLost::Ended(reason) => {
                // Go on from where the copy is: it stays served meanwhile, and the event
                // streams fed from this watch lose nothing.
                tracing::warn!(%reason, "gateway watch ended; watching again from where it was");
                from = Some(watch.revision + 1);
                check_behind = true;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Says what is wrong (the copy's `problem`), waits `backoff` and doubles it (at most 5 s).
/// False: the gateway is stopping.
async fn wait_to_retry(
    informer: &Informer,
    problem: String,
    backoff: &mut Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    informer.set_problem(Some(problem));
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => return false,
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    true
}

/// The JSON object stored in a spec field; anything that is not an object reads as `{}` (the
/// gateway only ever writes objects; `ctl` writes `{}`).
fn json_object(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::Object(Default::default()),
    }
}

fn raw(v: &serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| empty_object())
}

pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("{} is JSON")
}

fn masked(v: &serde_json::Value, instance: bool) -> Box<RawValue> {
    let mut v = v.clone();
    crate::secrets::mask(&mut v);
    if instance {
        crate::secrets::mask_instance_info(&mut v);
    }
    raw(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_json::Render;
    use crate::version::ApiVersion;
    use ferric_model::{encode, NodeName};

    const P: &str = "/t/";

    fn spec(name: &str) -> NodeSpec {
        let mut s = NodeSpec::new(NodeId::new_random(), "ipmi", 1_700_000_000_000);
        s.name = Some(NodeName::parse(name).unwrap());
        s
    }

    fn put(c: &mut CacheState, key: String, value: &[u8], rev: i64) {
        c.apply(P, key.as_bytes(), Some(value), rev);
    }

    #[test]
    fn an_unreadable_spec_keeps_the_node_its_name_and_says_why() {
        let mut c = CacheState::default();
        let (a, b) = (spec("a"), spec("b"));
        put(&mut c, format!("{P}nodes/{}", a.id), &encode(&a), 2);
        put(&mut c, format!("{P}nodes/{}", b.id), &encode(&b), 3);
        // Garbage over a known spec: the copy keeps the name and driver it knew.
        put(&mut c, format!("{P}nodes/{}", a.id), b"garbage", 4);
        let n = c.lookup("a").expect("still found by name");
        assert_eq!(n.id(), a.id);
        assert!(n.spec_unreadable());
        assert_eq!(n.spec.spec.driver, "ipmi");
        assert!(n.status_error().unwrap().contains("spec record"));
        assert_eq!(c.specs.len(), 2, "nothing else hidden");
        assert!(c.lookup("b").is_some_and(|n| !n.spec_unreadable()));

        // Loaded while already unreadable: the name comes from the index, read after nodes/.
        let mut fresh = CacheState::default();
        put(&mut fresh, format!("{P}nodes/{}", a.id), b"garbage", 4);
        assert!(fresh.lookup("a").is_none());
        put(
            &mut fresh,
            format!("{P}names/a"),
            a.id.to_string().as_bytes(),
            2,
        );
        let n = fresh.lookup("a").expect("named by the index");
        assert_eq!(n.spec.spec.name.as_ref().map(|n| n.as_str()), Some("a"));
        assert!(n
            .status_error()
            .unwrap()
            .contains("baremetal node delete a"));
        // A spec that names another node is not trusted either.
        put(&mut fresh, format!("{P}nodes/{}", a.id), &encode(&b), 5);
        assert!(fresh.node(&a.id).unwrap().spec_unreadable());
        // Repaired: readable again, error gone; deleted: gone, name free.
        put(&mut fresh, format!("{P}nodes/{}", a.id), &encode(&a), 6);
        assert!(!fresh.lookup("a").unwrap().spec_unreadable());
        fresh.apply(P, format!("{P}nodes/{}", a.id).as_bytes(), None, 7);
        assert!(fresh.lookup("a").is_none() && fresh.names.is_empty());
    }

    #[test]
    fn an_unreadable_spec_or_status_renders_with_the_error() {
        let mut c = CacheState::default();
        let a = spec("a");
        put(&mut c, format!("{P}nodes/{}", a.id), b"\x01garbage", 2);
        put(
            &mut c,
            format!("{P}names/a"),
            a.id.to_string().as_bytes(),
            2,
        );
        let b = spec("b");
        put(&mut c, format!("{P}nodes/{}", b.id), &encode(&b), 3);
        put(&mut c, format!("{P}status/{}", b.id), b"garbage", 4);
        let render = Render::full(ApiVersion::latest(), "http://x");
        let doc = serde_json::to_value(render.node(&c.node(&a.id).unwrap())).unwrap();
        assert_eq!(doc["uuid"], a.id.to_string());
        assert_eq!(doc["name"], "a");
        assert_eq!(doc["created_at"], serde_json::Value::Null);
        let err = doc["last_error"].as_str().unwrap();
        assert!(
            err.contains("spec record") && err.contains("PUT /v1/nodes/"),
            "{err}"
        );
        let doc = serde_json::to_value(render.node(&c.node(&b.id).unwrap())).unwrap();
        assert!(doc["last_error"]
            .as_str()
            .unwrap()
            .contains("status record"));
        assert_eq!(doc["name"], "b");
        assert_eq!(c.provision_counts.values().sum::<usize>(), 1);
    }
}

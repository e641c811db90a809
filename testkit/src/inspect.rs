//! Independent inspection of what the processes under test wrote to etcd: the keys under a
//! prefix at one revision ([`Snapshot`]), the whole revision history ([`History`]) and the
//! fencing invariant checked on it.

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use ferric_model::{
    decode, CodecError, ConductorRecord, DelegationRecord, NodeSpec, NodeStatus, ReservationRecord,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest etcd response the inspection client accepts (a full read of a few thousand records
/// is a few MB; the client default of 4 MiB is too tight for history reads).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// One key as etcd holds it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_rev: i64,
    pub mod_rev: i64,
    pub lease: i64,
}

/// Every key under a prefix at one revision, split by kind and keyed by the last path element
/// (a node uuid, or a conductor or node name).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub nodes: BTreeMap<String, Kv>,
    pub statuses: BTreeMap<String, Kv>,
    /// Buckets' status markers (`status/<bucket>`, put by each acquisition), by bucket.
    pub status_markers: BTreeMap<String, Kv>,
    pub reservations: BTreeMap<String, Kv>,
    /// Bucket keys, by the bucket's three hex digits.
    pub buckets: BTreeMap<String, Kv>,
    pub delegations: BTreeMap<String, Kv>,
    pub conductors: BTreeMap<String, Kv>,
    pub names: BTreeMap<String, Kv>,
    pub other: Vec<Kv>,
}

impl Snapshot {
    /// The node's status as written; None before its owner first wrote one.
    pub fn status(&self, id: &str) -> Option<Result<NodeStatus, CodecError>> {
        self.statuses
            .get(id)
            .map(|kv| decode::<NodeStatus>(&kv.value))
    }

    /// The readable status of a node, or why there is none (for polling loops).
    pub fn status_ok(&self, id: &str) -> Result<NodeStatus, String> {
        match self.status(id) {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(format!("unreadable status: {e}")),
            None => Err("no status yet".into()),
        }
    }

    pub fn spec(&self, id: &str) -> Option<Result<NodeSpec, CodecError>> {
        self.nodes.get(id).map(|kv| decode::<NodeSpec>(&kv.value))
    }

    /// Who owns a node, and its fence as status records keep it: the holder of its own
    /// reservation (the reservation's create_revision) if it has one; nobody while a delegation
    /// hands it on and the delegate has not reserved it yet; otherwise the holder of its bucket
    /// (the bucket key's create_revision, negated: `FenceToken::bucket`).
    pub fn holder(&self, id: &str) -> Option<(String, i64)> {
        if let Some(kv) = self.reservations.get(id) {
            return Some((record_holder(&kv.value), kv.create_rev));
        }
        if self.delegations.contains_key(id) {
            return None;
        }
        let kv = self.buckets.get(id.get(..3)?)?;
        Some((record_holder(&kv.value), -kv.create_rev))
    }

    /// Whom a node's delegation names, if it has one.
    pub fn delegate(&self, id: &str) -> Option<String> {
        self.delegations.get(id).map(|kv| {
            decode::<DelegationRecord>(&kv.value)
                .map(|d| d.conductor)
                .unwrap_or_else(|e| format!("<unreadable delegation: {e}>"))
        })
    }

    pub fn conductor(&self, name: &str) -> Option<ConductorRecord> {
        self.conductors
            .get(name)
            .and_then(|kv| decode::<ConductorRecord>(&kv.value).ok())
    }

    /// Nodes owned, by conductor ([`Snapshot::holder`]).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for id in self.nodes.keys() {
            if let Some((holder, _)) = self.holder(id) {
                *out.entry(holder).or_insert(0) += 1;
            }
        }
        out
    }

    /// Nodes owned by `conductor`.
    pub fn held_by(&self, conductor: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|id| self.holder(id).is_some_and(|(h, _)| h == conductor))
            .cloned()
            .collect()
    }

    /// Whether one node is settled: reserved by one of `live`. (A new owner writes the status
    /// only when it has something to record, so a status may still carry an earlier owner; that
    /// every status write came from the holder of the time is checked on the history.)
    pub fn node_problem(&self, id: &str, live: &[&str]) -> Option<String> {
        let Some((holder, _)) = self.holder(id) else {
            return Some(match self.delegate(id) {
                Some(to) => format!("node {id}: handed on to {to:?}, not reserved by it yet"),
                None => format!("node {id}: its bucket is held by nobody"),
            });
        };
        if !live.contains(&holder.as_str()) {
            return Some(format!(
                "node {id}: reserved by {holder:?}, not a live conductor {live:?}"
            ));
        }
        match self.status(id) {
            Some(Err(e)) => Some(format!("node {id}: unreadable status: {e}")),
            _ => None,
        }
    }

    /// Every node is reserved by a live conductor, every live conductor is registered and
    /// reports as many running node actors as it holds reservations (it counts an actor only
    /// once the actor has started).
    pub fn check_settled(&self, live: &[&str]) -> Result<(), String> {
        let mut problems: Vec<String> = Vec::new();
        let counts = self.counts();
        for name in live {
            match self.conductor(name) {
                None => problems.push(format!("conductor {name} is not registered")),
                Some(rec) => {
                    let held = counts.get(*name).copied().unwrap_or(0) as u64;
                    if rec.running != held {
                        problems.push(format!(
                            "conductor {name} reports {} node actors running but holds {held} reservations",
                            rec.running
                        ));
                    }
                }
            }
        }
        if self.nodes.is_empty() {
            problems.push("no nodes".into());
        }
        for id in self.nodes.keys() {
            if let Some(p) = self.node_problem(id, live) {
                problems.push(p);
            }
        }
        for id in self.reservations.keys() {
            if !self.nodes.contains_key(id) {
                problems.push(format!("reservation for node {id}, which does not exist"));
            }
        }
        for id in self.delegations.keys() {
            if !self.nodes.contains_key(id) {
                problems.push(format!("delegation of node {id}, which does not exist"));
            }
        }
        summarize(problems, self.revision)
    }
}

/// The conductor a reservation or bucket record names.
fn record_holder(value: &[u8]) -> String {
    decode::<ReservationRecord>(value)
        .map(|r| r.conductor)
        .unwrap_or_else(|e| format!("<unreadable reservation: {e}>"))
}

fn summarize(problems: Vec<String>, revision: i64) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} problems at revision {revision}:", problems.len());
    for p in problems.iter().take(8) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > 8 {
        msg.push_str("\n  ...");
    }
    Err(msg)
}

/// One event of etcd's history.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    pub put: bool,
    pub value: Vec<u8>,
    /// For puts; 0 for deletes.
    pub create_rev: i64,
}

/// Every event of the whole keyspace from revision 1 to `revision`.
#[derive(Debug, Clone)]
pub struct History {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// One lifetime of a reservation key, split where its value changes.
#[derive(Debug, Clone)]
struct Held {
    create_rev: i64,
    holder: String,
    from: i64,
    /// Revision of the delete or overwrite that ended it; None while it lasts.
    until: Option<i64>,
}

impl History {
    /// Events of keys under `prefix`.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events
            .iter()
            .filter(move |e| e.key.starts_with(prefix))
    }

    /// The lifetimes of every key under `key_prefix` (reservations or buckets), by leaf; a
    /// key that passes from one holder to another without a delete is a violation.
    fn spans<'a>(
        &'a self,
        key_prefix: &str,
        violations: &mut Vec<String>,
    ) -> BTreeMap<&'a str, Vec<Held>> {
        let mut held: BTreeMap<&str, Vec<Held>> = BTreeMap::new();
        for e in self.events.iter().filter(|e| e.key.starts_with(key_prefix)) {
            let id = &e.key[key_prefix.len()..];
            let spans = held.entry(id).or_default();
            let holder = e.put.then(|| {
                decode::<ReservationRecord>(&e.value)
                    .map(|r| r.conductor)
                    .unwrap_or_else(|err| format!("<unreadable reservation: {err}>"))
            });
            if let Some(last) = spans.last_mut() {
                if last.until.is_none() {
                    last.until = Some(e.revision);
                    if holder.as_ref().is_some_and(|h| *h != last.holder) {
                        violations.push(format!(
                            "rev {}: reservation of {id} passed from {} to {} without a delete",
                            e.revision,
                            last.holder,
                            holder.as_deref().unwrap_or_default()
                        ));
                    }
                }
            }
            if let Some(holder) = holder {
                spans.push(Held {
                    create_rev: e.create_rev,
                    holder,
                    from: e.revision,
                    until: None,
                });
            }
        }
        held
    }

    /// The invariants behind fencing: a reservation or bucket key never passes from one holder
    /// to another without being deleted first (no node ever has two owners), and every status
    /// put with (owner X, fence F) happened at a revision where X owned the node with fence F:
    /// for F > 0, the node's reservation existed with create_revision F and holder X; for
    /// F < 0, the node's bucket key existed with create_revision -F and holder X, and the node
    /// had no reservation. Returns the violations (empty when the invariants hold) and the
    /// number of status puts checked.
    pub fn fencing_violations(&self, prefix: &str) -> (Vec<String>, usize) {
        let status_prefix = format!("{prefix}status/");
        let mut violations = Vec::new();
        let held = self.spans(&format!("{prefix}reservations/"), &mut violations);
        let buckets = self.spans(&format!("{prefix}buckets/"), &mut violations);
        let during = |h: &Held, rev: i64| h.from <= rev && h.until.is_none_or(|u| rev < u);
        let mut checked = 0;
        for e in self.under(&status_prefix).filter(|e| e.put) {
            let id = &e.key[status_prefix.len()..];
            if id.len() == 3 {
                // A bucket's status marker: put by the bucket's acquisition, in its transaction.
                let holder = decode::<ReservationRecord>(&e.value).map(|r| r.conductor);
                let acquired = buckets.get(id).is_some_and(|spans| {
                    spans.iter().any(|h| {
                        h.from == e.revision
                            && h.create_rev == e.revision
                            && holder.as_ref().is_ok_and(|c| *c == h.holder)
                    })
                });
                if !acquired {
                    violations.push(format!(
                        "rev {}: status marker of bucket {id} ({holder:?}) put outside the bucket's acquisition",
                        e.revision
                    ));
                }
                continue;
            }
            checked += 1;
            let status = match decode::<NodeStatus>(&e.value) {
                Ok(s) => s,
                Err(err) => {
                    violations.push(format!(
                        "rev {}: unreadable status put for {id}: {err}",
                        e.revision
                    ));
                    continue;
                }
            };
            let Some(owner) = status.owner.as_deref() else {
                violations.push(format!(
                    "rev {}: status of {id} written without owner (fence {})",
                    e.revision, status.fence
                ));
                continue;
            };
            let ok = if status.fence < 0 {
                let reserved = held
                    .get(id)
                    .is_some_and(|spans| spans.iter().any(|h| during(h, e.revision)));
                !reserved
                    && id
                        .get(..3)
                        .and_then(|b| buckets.get(b))
                        .is_some_and(|spans| {
                            spans.iter().any(|h| {
                                h.create_rev == -status.fence
                                    && h.holder == owner
                                    && during(h, e.revision)
                            })
                        })
            } else {
                held.get(id).is_some_and(|spans| {
                    spans.iter().any(|h| {
                        h.create_rev == status.fence && h.holder == owner && during(h, e.revision)
                    })
                })
            };
            if !ok {
                let mut spans: Vec<String> = held
                    .get(id)
                    .map(|s| {
                        s.iter()
                            .map(|h| {
                                format!(
                                    "{} fence {} revs {}..{}",
                                    h.holder,
                                    h.create_rev,
                                    h.from,
                                    h.until.map_or("now".into(), |u| u.to_string())
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(b) = id.get(..3).and_then(|b| buckets.get(b)) {
                    spans.extend(b.iter().map(|h| {
                        format!(
                            "bucket: {} fence -{} revs {}..{}",
                            h.holder,
                            h.create_rev,
                            h.from,
                            h.until.map_or("now".into(), |u| u.to_string())
                        )
                    }));
                }
                violations.push(format!(
                    "rev {}: status of {id} written by {owner} with fence {}, but the reservation was: [{}]",
                    e.revision,
                    status.fence,
                    spans.join("; ")
                ));
            }
        }
        (violations, checked)
    }

    /// The revision of the first delete of `key` after revision `after`.
    pub fn first_delete_after(&self, key: &str, after: i64) -> Option<i64> {
        self.events
            .iter()
            .find(|e| !e.put && e.revision > after && e.key == key)
            .map(|e| e.revision)
    }
}

/// An etcd-client connection for looking at what the processes under test wrote.
#[derive(Clone)]
pub struct Inspect {
    client: Client,
    pub prefix: String,
}

impl Inspect {
    pub async fn connect(url: &str, prefix: &str) -> Result<Inspect, String> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(20));
        let client =
            tokio::time::timeout(Duration::from_secs(10), Client::connect([url], Some(opts)))
                .await
                .map_err(|_| format!("connecting to etcd at {url} timed out"))?
                .map_err(|e| format!("cannot connect to etcd at {url}: {e}"))?;
        Ok(Inspect {
            client,
            prefix: prefix.to_string(),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// All keys under the prefix at one revision.
    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let (revision, kvs) = self.get_prefix(&self.prefix).await?;
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in kvs {
            let rest = &kv.key[self.prefix.len()..];
            let (kind, leaf) = rest.split_once('/').unwrap_or(("", rest));
            let leaf = leaf.to_string();
            match kind {
                "nodes" => {
                    snap.nodes.insert(leaf, kv);
                }
                "status" if leaf.len() == 3 => {
                    snap.status_markers.insert(leaf, kv);
                }
                "status" => {
                    snap.statuses.insert(leaf, kv);
                }
                "reservations" => {
                    snap.reservations.insert(leaf, kv);
                }
                "buckets" => {
                    snap.buckets.insert(leaf, kv);
                }
                "delegations" => {
                    snap.delegations.insert(leaf, kv);
                }
                "conductors" => {
                    snap.conductors.insert(leaf, kv);
                }
                "names" => {
                    snap.names.insert(leaf, kv);
                }
                _ => snap.other.push(kv),
            }
        }
        Ok(snap)
    }

    /// All keys under `prefix` (one read; the revision of the read).
    pub async fn get_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), String> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut resp = kv
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("etcd get {prefix}: {e}"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(|kv| Kv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                create_rev: kv.create_revision(),
                mod_rev: kv.mod_revision(),
                lease: kv.lease(),
            })
            .collect();
        Ok((revision, kvs))
    }

    /// The current revision of the store.
    pub async fn revision(&self) -> Result<i64, String> {
        let resp = self
            .client
            .kv_client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| format!("etcd get revision: {e}"))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// The whole history of the keyspace up to the current revision, read with a watch from
    /// revision 1 (etcd keeps it until compaction, and nothing compacts in these tests).
    ///
    /// The test owns this etcd, so every revision after 1 changed at least one key: watching all
    /// keys, the history is complete once an event of the current revision has arrived.
    pub async fn history(&self) -> Result<History, String> {
        let revision = self.revision().await?;
        let mut events = Vec::new();
        if revision <= 1 {
            return Ok(History { revision, events });
        }
        let mut watch = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut stream = watch
            .watch(
                "",
                Some(WatchOptions::new().with_all_keys().with_start_revision(1)),
            )
            .await
            .map_err(|e| format!("etcd watch from revision 1: {e}"))?;
        let read = async {
            loop {
                let resp = stream
                    .message()
                    .await
                    .map_err(|e| format!("history watch failed: {e}"))?
                    .ok_or("history watch closed by etcd")?;
                if resp.compact_revision() > 0 {
                    return Err(format!(
                        "history compacted at revision {}",
                        resp.compact_revision()
                    ));
                }
                if resp.canceled() {
                    return Err(format!("history watch canceled: {}", resp.cancel_reason()));
                }
                let mut done = false;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    if kv.mod_revision() > revision {
                        done = true;
                        continue;
                    }
                    done |= kv.mod_revision() == revision;
                    let put = matches!(ev.event_type(), EventType::Put);
                    events.push(Event {
                        revision: kv.mod_revision(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        put,
                        value: kv.value().to_vec(),
                        create_rev: if put { kv.create_revision() } else { 0 },
                    });
                }
                // etcd never splits one revision's events over two watch responses.
                if done {
                    return Ok::<(), String>(());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| format!("reading history up to revision {revision} took over 60 s"))??;
        Ok(History { revision, events })
    }
}

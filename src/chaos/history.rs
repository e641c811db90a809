//! The recorder of etcd's revision history: every change under the prefix, in revision order,
//! with the time it was seen, and snapshots of the live leases. It is one of the independent
//! records the invariants are checked against (`super::invariants`): it never asks a conductor
//! anything, only etcd.
//!
//! It starts with a read of the kinds the checks decode (so that reservations and conductors that
//! exist before it starts are known), then watches the whole prefix from the next revision with
//! `prev_kv`. It survives the loss of etcd members: the client knows every endpoint, the watch
//! requires a leader (a member cut off from the quorum cancels it instead of going silent), a
//! watch that ends or stalls is re-opened from the last revision seen + 1, and a revision range
//! that etcd compacted away before the recorder saw it is recorded as a [`Gap`], never skipped
//! silently.

// The runner (`run`) is the user; until it lands only the tests call some of this.

use anyhow::Context as _;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions};
use ferric_cluster::Keyspace;
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The largest answer the recorder takes (a watch response carries a whole transaction: an
/// enrollment of thousands of nodes is one; tonic's default of 4 MiB made the recorder re-watch
/// the same revision for ever at 30,000 nodes).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A put or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Put,
    Delete,
}

/// One change of one key, as etcd's history has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The revision of the change (for a put, the key's new mod revision; for a delete, the
    /// revision of the delete). For an entry of the initial read, the key's mod revision.
    pub revision: i64,
    /// For a put, equal to `revision`; for a delete, the deleted value's last mod revision (from
    /// `prev_kv`, 0 when etcd did not send it).
    pub mod_revision: i64,
    /// The key's create revision: for a put, the current one (the reservation's fencing token);
    /// for a delete, the deleted key's (from `prev_kv`, 0 when unknown).
    pub create_revision: i64,
    /// The key without the prefix (`reservations/<uuid>`, `conductors/<name>`, ...).
    pub key: String,
    pub kind: ChangeKind,
    /// The lease the key was on: the put's, or for a delete the deleted value's (0: none or
    /// unknown).
    pub lease: i64,
    /// The value (for a delete, the deleted value), only for the kinds the checks decode
    /// ([`kept`]): `None` for the others (node specs are large and not needed).
    pub value: Option<Vec<u8>>,
    /// When the recorder received it, in milliseconds since the Unix epoch. It is never earlier
    /// than the commit, and later by the watch's lag (more while etcd is disrupted).
    pub seen_unix_ms: u64,
    /// From the initial read, not from the watch: the key existed when the recorder started.
    pub initial: bool,
}

/// Revisions the recorder did not see: etcd compacted them before the watch was re-opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// First revision not seen.
    pub from_revision: i64,
    /// Last revision not seen (the compaction revision - 1).
    pub to_revision: i64,
    pub seen_unix_ms: u64,
    pub reason: String,
}

/// The live leases, and each reservation's and conductor's lease, read close together for
/// invariant (d).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeaseSnapshot {
    pub at_unix_ms: u64,
    /// The revision the reservations and conductors were read at.
    pub revision: i64,
    /// Leases live before the read of the keys and after it (either counts: see
    /// `invariants::check_reservation_leases`).
    pub leases_before: Vec<i64>,
    pub leases_after: Vec<i64>,
    /// Node uuid (or `bucket <bucket>`), holding conductor (empty when undecodable), lease.
    pub reservations: Vec<(String, String, i64)>,
    /// Conductor name, the lease its key is on.
    pub conductors: Vec<(String, i64)>,
}

/// The key prefixes (relative to the keyspace's prefix) whose values the checks decode.
pub struct Kept {
    pub reservations: String,
    pub buckets: String,
    /// Kept for their kind and revision; the checks do not decode them.
    pub delegations: String,
    /// Not kept (specs are large): named so that the checks can tell node ids from keys.
    pub nodes: String,
    pub conductors: String,
    pub statuses: String,
    pub history: String,
    pub events: String,
}

/// The relative prefixes of the kept kinds, from the keyspace (one place for key names).
pub fn kept(ks: &Keyspace) -> Kept {
    let rel = |s: String| s[ks.prefix().len()..].to_string();
    Kept {
        reservations: rel(ks.reservations()),
        buckets: rel(ks.buckets()),
        delegations: rel(ks.delegations()),
        nodes: rel(ks.nodes()),
        conductors: rel(ks.conductors()),
        statuses: rel(ks.statuses()),
        history: rel(ks.history(&ferric_model::NodeId(uuid::Uuid::nil()))),
        events: rel(ks.events()),
    }
}

impl Kept {
    /// `history/<uuid>/` for the nil uuid is built by the keyspace; the kind is its first part.
    fn history_kind(&self) -> &str {
        self.history.split('/').next().unwrap_or("history")
    }

    pub fn keeps(&self, rel_key: &str) -> bool {
        rel_key.starts_with(&self.reservations)
            || rel_key.starts_with(&self.buckets)
            || rel_key.starts_with(&self.delegations)
            || rel_key.starts_with(&self.conductors)
            || rel_key.starts_with(&self.statuses)
            || rel_key.starts_with(&self.events)
            || rel_key
                .strip_prefix(self.history_kind())
                .is_some_and(|r| r.starts_with('/'))
    }

    fn prefixes(&self) -> Vec<String> {
        vec![
            self.reservations.clone(),
            self.buckets.clone(),
            self.delegations.clone(),
            self.conductors.clone(),
            self.statuses.clone(),
            format!("{}/", self.history_kind()),
            self.events.clone(),
        ]
    }
}

#[derive(Default)]
struct Recorded {
    changes: Vec<Change>,
    gaps: Vec<Gap>,
    /// The last revision seen (the initial read's revision before any event).
    revision: i64,
    /// Watch (re)starts after the first, with why.
    rewatches: Vec<String>,
}

/// Starts recorders.
pub struct History;

pub struct HistoryRecorder {
    client: Client,
    ks: Keyspace,
    shared: Arc<Mutex<Recorded>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Without news from the watch for this long while etcd's newest revision under the prefix is
/// past what the watch delivered, the watch is taken as stalled and re-opened.
// Long: a watch that catches up from an old revision under a loaded etcd is quiet for seconds
// (etcd syncs unsynced watchers in batches); at 3 s the recorder re-watched the same revision
// for ever at 30,000 nodes. A dead connection is found by the HTTP/2 pings, a member without a
// leader cancels the watch: this only catches what those miss.
const STALL: Duration = Duration::from_secs(30);
/// Bound on one unary request (reads, lease lists): a request to a dead member fails over.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The system's wall clock, the one the sim stamps its log with (never a test clock).
fn now_ms() -> u64 {
    ferric_model::clock::system_ms()
}

impl History {
    /// Connects to every endpoint, reads the kept kinds, and watches the whole prefix from the
    /// next revision on, until [`HistoryRecorder::stop`].
    pub async fn start(endpoints: Vec<String>, prefix: &str) -> anyhow::Result<HistoryRecorder> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            // HTTP/2 pings: a connection to a frozen or cut-off member fails instead of hanging.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member without a leader cancels the watch rather than going silent.
            .with_require_leader(true);
        let client = Client::connect(&endpoints, Some(opts))
            .await
            .with_context(|| format!("connecting to etcd at {endpoints:?}"))?;
        let ks = Keyspace::new(prefix);
        let kept = kept(&ks);
        let shared = Arc::new(Mutex::new(Recorded::default()));
        let revision = initial_read(&client, &ks, &kept, &shared).await?;
        lock(&shared).revision = revision;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(record(
            client.clone(),
            ks.clone(),
            kept,
            shared.clone(),
            stopped,
        ));
        Ok(HistoryRecorder {
            client,
            ks,
            shared,
            stop,
            task: Some(task),
        })
    }
}

fn lock(m: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads every kept kind at one revision and records the keys as initial puts; returns the
/// revision.
async fn initial_read(
    client: &Client,
    ks: &Keyspace,
    kept: &Kept,
    shared: &Mutex<Recorded>,
) -> anyhow::Result<i64> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let mut at: Option<i64> = None;
    let mut out = Vec::new();
    for rel in kept.prefixes() {
        let mut opts = GetOptions::new().with_prefix();
        if let Some(rev) = at {
            opts = opts.with_revision(rev);
        }
        let key = format!("{}{rel}", ks.prefix());
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key.clone(), Some(opts)))
            .await
            .with_context(|| format!("reading {key}: timed out"))?
            .with_context(|| format!("reading {key}"))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        at.get_or_insert(rev);
        let seen = now_ms();
        for kv in resp.kvs() {
            if let Some(c) = put_of(ks, kept, kv, seen, true) {
                out.push(c);
            }
        }
    }
    out.sort_by_key(|c| c.revision);
    lock(shared).changes.extend(out);
    Ok(at.unwrap_or(0))
}

fn rel_key(ks: &Keyspace, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(ks.prefix()).map(str::to_string)
}

fn put_of(ks: &Keyspace, kept: &Kept, kv: &KeyValue, seen: u64, initial: bool) -> Option<Change> {
    let key = rel_key(ks, kv.key())?;
    let value = kept.keeps(&key).then(|| kv.value().to_vec());
    Some(Change {
        revision: kv.mod_revision(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
        key,
        kind: ChangeKind::Put,
        lease: kv.lease(),
        value,
        seen_unix_ms: seen,
        initial,
    })
}

/// The watch loop: (re)opens the watch from the last revision + 1 until told to stop.
async fn record(
    client: Client,
    ks: Keyspace,
    kept: Kept,
    shared: Arc<Mutex<Recorded>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stopped.borrow() {
            return;
        }
        let from = lock(&shared).revision + 1;
        let ended = tokio::select! {
            _ = stopped.changed() => return,
            e = watch_from(&client, &ks, &kept, &shared, from) => e,
        };
        tracing::warn!(from, reason = %ended, "history watch ended; re-watching");
        lock(&shared)
            .rewatches
            .push(format!("{} at revision {from}: {ended}", now_ms()));
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One watch from revision `from`; returns why it ended (it never ends otherwise).
async fn watch_from(
    client: &Client,
    ks: &Keyspace,
    kept: &Kept,
    shared: &Mutex<Recorded>,
    from: i64,
) -> String {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(from);
    let mut wc = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut stream = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        wc.watch(ks.prefix().to_string(), Some(opts)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return format!("cannot open the watch: {e}"),
        Err(_) => return "opening the watch timed out".to_string(),
    };
    let mut stall = tokio::time::interval(STALL);
    stall.tick().await;
    let mut last_news = tokio::time::Instant::now();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return "closed by etcd".to_string(),
                    Err(e) => return format!("watch error: {e}"),
                };
                last_news = tokio::time::Instant::now();
                if resp.compact_revision() > 0 {
                    // Revisions from `from` to the compaction are gone: record the gap and go on
                    // from the compaction revision (the oldest etcd still has).
                    let compact = resp.compact_revision();
                    let mut r = lock(shared);
                    let first = r.revision + 1;
                    r.gaps.push(Gap {
                        from_revision: first,
                        to_revision: compact - 1,
                        seen_unix_ms: now_ms(),
                        reason: format!("etcd compacted up to revision {compact} before the recorder saw it"),
                    });
                    r.revision = r.revision.max(compact - 1);
                    return format!("compacted at {compact}");
                }
                if resp.canceled() {
                    return format!("canceled: {}", resp.cancel_reason());
                }
                let seen = now_ms();
                let mut out = Vec::with_capacity(resp.events().len());
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let change = match ev.event_type() {
                        EventType::Put => put_of(ks, kept, kv, seen, false),
                        EventType::Delete => rel_key(ks, kv.key()).map(|key| {
                            let prev = ev.prev_kv();
                            let value = if kept.keeps(&key) {
                                prev.map(|p| p.value().to_vec())
                            } else {
                                None
                            };
                            Change {
                                revision: kv.mod_revision(),
                                mod_revision: prev.map_or(0, |p| p.mod_revision()),
                                create_revision: prev.map_or(0, |p| p.create_revision()),
                                key,
                                kind: ChangeKind::Delete,
                                lease: prev.map_or(0, |p| p.lease()),
                                value,
                                seen_unix_ms: seen,
                                initial: false,
                            }
                        }),
                    };
                    if let Some(c) = change {
                        out.push(c);
                    }
                }
                let mut r = lock(shared);
                let mut top = r.revision;
                for c in out {
                    // A re-opened watch can repeat nothing before `from`; keep it exact anyway.
                    if c.revision > r.revision {
                        top = top.max(c.revision);
                        r.changes.push(c);
                    }
                }
                r.revision = top;
                // No progress notifications: the created response's header revision is etcd's
                // current one, not how far this watch has delivered, and is not taken as such.
            }
            _ = stall.tick() => {
                if last_news.elapsed() < STALL {
                    continue;
                }
                // Quiet: is etcd's newest change under the prefix past what we have?
                match newest_revision(client, ks).await {
                    Ok(newest) if newest > lock(shared).revision => {
                        return format!("stalled: etcd has revision {newest} under the prefix");
                    }
                    Ok(_) => last_news = tokio::time::Instant::now(),
                    Err(e) => tracing::debug!(error = %e, "history: cannot read the newest revision"),
                }
            }
        }
    }
}

/// The highest mod revision of a key under the prefix (deletes are not counted: a stall that
/// only hides deletes is found by the next put).
async fn newest_revision(client: &Client, ks: &Keyspace) -> anyhow::Result<i64> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let opts = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(
            etcd_client::SortTarget::Mod,
            etcd_client::SortOrder::Descend,
        )
        .with_limit(1);
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(ks.prefix().to_string(), Some(opts)))
        .await
        .context("timed out")??;
    Ok(resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
}

impl HistoryRecorder {
    /// Every change recorded so far, in revision order.
    pub fn changes(&self) -> Vec<Change> {
        lock(&self.shared).changes.clone()
    }

    /// Revision ranges the recorder could not see (compacted before it re-watched).
    pub fn gaps(&self) -> Vec<Gap> {
        lock(&self.shared).gaps.clone()
    }

    /// Why the watch was re-opened, with when (for the report).
    pub fn rewatches(&self) -> Vec<String> {
        lock(&self.shared).rewatches.clone()
    }

    /// Waits (up to `limit`) until the recorder has seen every change under the prefix that
    /// etcd has now, so that a check compares the BMC log read before this call with a history
    /// that is not behind it (a lagging recorder made commands look ownerless). False when it
    /// did not catch up in time or etcd could not be asked.
    pub async fn catch_up(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        // The member this client asks may be the one just stopped: ask again, bounded.
        let newest = loop {
            match newest_revision(&self.client, &self.ks).await {
                Ok(n) => break n,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(_) => return false,
            }
        };
        while lock(&self.shared).revision < newest {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Live leases, then every reservation and conductor key with its lease (one revision), then
    /// live leases again (invariant (d)).
    pub async fn lease_snapshot(&self) -> anyhow::Result<LeaseSnapshot> {
        let mut client = self.client.clone();
        let leases = |resp: etcd_client::LeaseLeasesResponse| -> Vec<i64> {
            let mut v: Vec<i64> = resp.leases().iter().map(|l| l.id()).collect();
            v.sort_unstable();
            v
        };
        let before = tokio::time::timeout(REQUEST_TIMEOUT, client.leases())
            .await
            .context("listing leases: timed out")?
            .context("listing leases")?;
        let at_unix_ms = now_ms();
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let resv = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(
                self.ks.reservations(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await
        .context("reading reservations: timed out")?
        .context("reading reservations")?;
        let revision = resv.header().map_or(0, |h| h.revision());
        let cond = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(
                self.ks.conductors(),
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            ),
        )
        .await
        .context("reading conductors: timed out")?
        .context("reading conductors")?;
        let buckets = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(
                self.ks.buckets(),
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            ),
        )
        .await
        .context("reading buckets: timed out")?
        .context("reading buckets")?;
        let after = tokio::time::timeout(REQUEST_TIMEOUT, client.leases())
            .await
            .context("listing leases: timed out")?
            .context("listing leases")?;
        let bucket_keys = buckets.kvs().iter().map(|kv| (kv, "bucket "));
        let reservations = resv
            .kvs()
            .iter()
            .map(|kv| (kv, ""))
            .chain(bucket_keys)
            .filter_map(|(kv, kind)| {
                let node = format!("{kind}{}", self.ks.leaf_of(kv.key())?);
                let holder = ferric_model::decode::<ferric_model::ReservationRecord>(kv.value())
                    .map(|r| r.conductor)
                    .unwrap_or_default();
                Some((node, holder, kv.lease()))
            })
            .collect();
        let conductors = cond
            .kvs()
            .iter()
            .filter_map(|kv| Some((self.ks.leaf_of(kv.key())?.to_string(), kv.lease())))
            .collect();
        Ok(LeaseSnapshot {
            at_unix_ms,
            revision,
            leases_before: leases(before),
            leases_after: leases(after),
            reservations,
            conductors,
        })
    }

    /// Stops the watch and waits for it to end; what was recorded stays readable.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HistoryRecorder {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_kinds_come_from_the_keyspace() {
        let ks = Keyspace::new("/ferric/");
        let k = kept(&ks);
        assert_eq!(k.reservations, "reservations/");
        assert_eq!(k.conductors, "conductors/");
        assert_eq!(k.statuses, "status/");
        assert_eq!(k.events, "events/");
        let id = "6f1c3a52-8d9e-4b8a-9a77-0e5f4c1d2b3a";
        for key in [
            format!("reservations/{id}"),
            "buckets/6f1".to_string(),
            format!("delegations/{id}"),
            "conductors/c1".to_string(),
            format!("status/{id}"),
            format!("history/{id}/00000000000000000001"),
            format!("events/{id}/00000000000000000001"),
        ] {
            assert!(k.keeps(&key), "{key}");
        }
        for key in [
            format!("nodes/{id}"),
            format!("heartbeats/{id}"),
            "historyx/1".to_string(),
            "config/sync".to_string(),
        ] {
            assert!(!k.keeps(&key), "{key}");
        }
        assert!(k.prefixes().contains(&"history/".to_string()));
    }
}

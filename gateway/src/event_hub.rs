//! One etcd watch for every event stream of this gateway (`/v1/ferric/events`): the hub reads
//! each change once, describes it once (the JSON a stream sends), keeps the newest
//! [`RING_EVENTS`] in a ring and hands them to every stream. Fifty dashboards following a busy
//! fleet then cost fifty writes of ready text per change, not fifty watches each decoding and
//! rendering every change.
//!
//! A stream starts at a revision: from the hub's ring when the ring reaches back that far (a
//! reconnect with `Last-Event-ID` after a short outage), live from the broadcast otherwise;
//! older resume points get a watch of their own (the caller's fallback). Ring and broadcast
//! are fed under one lock, so a subscriber sees every change after its start exactly once. A
//! subscriber that falls behind the broadcast is ended; its client reconnects with its last id.

use crate::extensions::describe;
use axum::body::Bytes;
use ferric_cluster::{Cluster, WatchEvent, WatchLost};
use ferric_model::NodeId;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Changes kept for streams that resume.
pub const RING_EVENTS: usize = 20_000;
/// Batches a slow subscriber may fall behind before it is ended.
const CHANNEL: usize = 4096;

/// One change as streams send it.
#[derive(Debug)]
pub struct Rendered {
    pub rev: i64,
    pub node: Option<NodeId>,
    /// The event's JSON text.
    pub data: Arc<str>,
    /// Last change of its revision: the stream sends the revision as the event's id.
    pub last_of_rev: bool,
}

/// The changes of one watch answer, and their server-sent-events text as a stream of every
/// node sends it (rendered once; each such stream writes the same bytes).
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Rendered>,
    pub frames: Bytes,
}

impl Batch {
    fn new(events: Vec<Rendered>) -> Batch {
        let mut text = String::new();
        for r in &events {
            frame(&mut text, r, r.last_of_rev);
        }
        Batch {
            events,
            frames: Bytes::from(text),
        }
    }

    pub fn last_rev(&self) -> Option<i64> {
        self.events.last().map(|r| r.rev)
    }
}

/// Appends one change's server-sent event (`event: node`, its JSON, and the revision as `id`
/// when `with_id`).
pub fn frame(out: &mut String, r: &Rendered, with_id: bool) {
    out.push_str("event: node\ndata: ");
    out.push_str(&r.data);
    if with_id {
        out.push_str("\nid: ");
        out.push_str(&r.rev.to_string());
    }
    out.push_str("\n\n");
}

/// What the hub hands out.
#[derive(Debug, Clone)]
pub enum Item {
    Changes(Arc<Batch>),
    /// The hub lost its place (etcd compacted past it): every stream ends with `reset`.
    Reset(Arc<str>),
}

struct State {
    /// The watch runs.
    started: bool,
    /// Every change up to this revision has been handed out (0: not known yet).
    position: i64,
    /// The ring holds every change after this revision.
    ring_from: i64,
    ring: VecDeque<Arc<Batch>>,
    ring_len: usize,
}

pub struct Hub {
    state: Mutex<State>,
    tx: broadcast::Sender<Item>,
}

/// A stream's start: the changes from the ring, then the live ones.
pub struct Subscription {
    pub backlog: Vec<Arc<Batch>>,
    pub live: broadcast::Receiver<Item>,
    /// The revision the stream starts after.
    pub after: i64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            state: Mutex::new(State {
                started: false,
                position: 0,
                ring_from: 0,
                ring: VecDeque::new(),
                ring_len: 0,
            }),
            tx: broadcast::channel(CHANNEL).0,
        }
    }
}

impl Hub {
    /// A subscription to the changes after revision `after` (None: from now), or None when the
    /// ring does not reach back that far (the caller watches on its own).
    pub async fn subscribe(
        self: &Arc<Self>,
        cluster: &Cluster,
        after: Option<i64>,
    ) -> Result<Option<Subscription>, ferric_cluster::ClusterError> {
        let start = {
            let s = self.state.lock().unwrap();
            (!s.started).then_some(())
        };
        if start.is_some() {
            let rev = cluster.revision().await?;
            let mut s = self.state.lock().unwrap();
            if !s.started {
                s.started = true;
                s.position = rev;
                s.ring_from = rev;
                tokio::spawn(run(self.clone(), cluster.clone(), rev + 1));
            }
        }
        let s = self.state.lock().unwrap();
        let after = after.unwrap_or(s.position);
        if after < s.ring_from {
            return Ok(None);
        }
        let backlog = s
            .ring
            .iter()
            .filter(|b| b.last_rev().is_some_and(|rev| rev > after))
            .cloned()
            .collect();
        Ok(Some(Subscription {
            backlog,
            live: self.tx.subscribe(),
            after,
        }))
    }

    fn publish(&self, batch: Vec<Rendered>, upto: i64) {
        let mut s = self.state.lock().unwrap();
        s.position = s.position.max(upto);
        if batch.is_empty() {
            return;
        }
        let batch = Arc::new(Batch::new(batch));
        s.ring_len += batch.events.len();
        s.ring.push_back(batch.clone());
        while s.ring_len > RING_EVENTS {
            let Some(old) = s.ring.pop_front() else { break };
            s.ring_len -= old.events.len();
            if let Some(last) = old.last_rev() {
                s.ring_from = s.ring_from.max(last);
            }
        }
        // No receiver is not an error: streams come and go.
        let _ = self.tx.send(Item::Changes(batch));
    }

    fn reset(&self, why: &str, rev: i64) {
        let mut s = self.state.lock().unwrap();
        s.ring.clear();
        s.ring_len = 0;
        s.position = rev;
        s.ring_from = rev;
        let _ = self.tx.send(Item::Reset(Arc::from(why)));
    }
}

/// The hub's watch: renders every change once and publishes it; re-watches from where it was
/// after a lost watch, and resets everyone when etcd compacted past that point.
async fn run(hub: Arc<Hub>, cluster: Cluster, mut from: i64) {
    let prefix = cluster.keys().prefix().to_string();
    loop {
        let mut watch = match cluster.watch_prefix(&prefix, from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "event hub cannot watch; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match watch.next().await {
                Ok(events) => {
                    let upto = events
                        .iter()
                        .map(|e| match e {
                            WatchEvent::Put { mod_rev, .. }
                            | WatchEvent::Delete { mod_rev, .. } => *mod_rev,
                        })
                        .max()
                        .unwrap_or(from - 1);
                    let described: Vec<(i64, Option<NodeId>, String)> = events
                        .iter()
                        .filter_map(|e| describe(&prefix, e))
                        .map(|(rev, id, doc)| (rev, id, doc.to_string()))
                        .collect();
                    let n = described.len();
                    let batch = described
                        .iter()
                        .enumerate()
                        .map(|(i, (rev, node, data))| Rendered {
                            rev: *rev,
                            node: *node,
                            data: Arc::from(data.as_str()),
                            last_of_rev: i + 1 == n || described[i + 1].0 != *rev,
                        })
                        .collect();
                    hub.publish(batch, upto);
                    from = upto + 1;
                }
                Err(WatchLost::Compacted(rev)) => {
                    tracing::warn!(
                        compacted = rev,
                        "event hub fell behind compaction; streams reset"
                    );
                    let now = cluster.revision().await.unwrap_or(rev);
                    hub.reset("compacted", now);
                    from = now + 1;
                    break;
                }
                Err(WatchLost::Ended(why)) => {
                    tracing::warn!(%why, "event hub watch ended; re-watching");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

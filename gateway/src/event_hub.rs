//! Every event stream of this gateway (`/v1/ferric/events`) is fed from the watch the gateway
//! already has: the one that keeps its copy of the cluster (`informer`). The hub takes each
//! change from it once the first stream opened, describes it once (the JSON a stream sends),
//! keeps the newest [`RING_EVENTS`] in a ring and hands them to every stream. Fifty dashboards
//! following a busy fleet then cost fifty writes of ready text per change, not fifty watches
//! each decoding and rendering every change; and the first one costs etcd no second watch of
//! the whole prefix (which had etcd encode and send every change of the fleet twice to each
//! gateway while a stream was open).
//!
//! A stream starts at a revision: from the hub's ring when the ring reaches back that far (a
//! reconnect with `Last-Event-ID` after a short outage), live from the broadcast otherwise;
//! older resume points get a watch of their own (the caller's fallback). Ring and broadcast
//! are fed under one lock, so a subscriber sees every change after its start exactly once. A
//! subscriber that falls behind the broadcast is ended; its client reconnects with its last id.

use crate::extensions::describe;
use axum::body::Bytes;
use ferric_cluster::WatchEvent;
use ferric_model::NodeId;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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
    /// A stream opened: changes are taken from the copy's watch.
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
    /// ring does not reach back that far, or the gateway's copy is not loaded yet (`copy_at`
    /// 0): the caller then watches on its own. `copy_at`: the revision the copy has reached,
    /// which is where the hub starts when this is its first stream.
    pub fn subscribe(&self, after: Option<i64>, copy_at: i64) -> Option<Subscription> {
        let mut s = self.state.lock().unwrap();
        if !s.started {
            if copy_at == 0 {
                return None;
            }
            s.started = true;
            s.position = copy_at;
            s.ring_from = copy_at;
        }
        let after = after.unwrap_or(s.position);
        if after < s.ring_from {
            return None;
        }
        let backlog = s
            .ring
            .iter()
            .filter(|b| b.last_rev().is_some_and(|rev| rev > after))
            .cloned()
            .collect();
        Some(Subscription {
            backlog,
            live: self.tx.subscribe(),
            after,
        })
    }

    /// One answer of the copy's watch (`upto`: the revision it reached), after the copy applied
    /// it. Nothing is done until a stream opened; changes at or before the hub's position (the
    /// copy's revision when the first stream opened) are not news.
    pub fn feed(&self, prefix: &str, events: &[WatchEvent], upto: i64) {
        let position = {
            let s = self.state.lock().unwrap();
            if !s.started {
                return;
            }
            s.position
        };
        let described: Vec<(i64, Option<NodeId>, String)> = events
            .iter()
            .filter_map(|e| describe(prefix, e))
            .filter(|(rev, _, _)| *rev > position)
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
        self.publish(batch, upto);
    }

    /// The copy was read anew at `revision` (its watch fell behind compaction, or etcd went
    /// back in time, as after a restore from a backup). The changes between the hub's position
    /// and that revision were never seen: every stream ends with `reset` (its client reads the
    /// nodes again and follows from then).
    pub fn reloaded(&self, revision: i64, why: &str) {
        let started_behind = {
            let s = self.state.lock().unwrap();
            s.started && s.position != revision
        };
        if started_behind {
            tracing::warn!(
                revision,
                why,
                "event streams reset: the gateway's copy was read anew"
            );
            self.reset(why, revision);
        }
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

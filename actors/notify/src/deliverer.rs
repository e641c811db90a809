//! The deliverer: one task per conductor process that sends the power events of the nodes this
//! conductor holds to each configured receiver, in order per node, at least once.
//!
//! It learns what it holds from the session ([`Notifier::owned`] / [`Notifier::released`], never
//! blocking) and reads each held node's events and cursor once. New events come from the node
//! actors of the same process ([`Notifier::written`], after etcd confirmed the status write that
//! carried the event), not from a watch of `events/`: only the owner delivers a node's events,
//! so no other conductor needs to receive them. A write etcd did not confirm is written again
//! by its actor until it is (the same event, same sequence number), or the actor is fenced and
//! the next owner reads the node's events from etcd.
//!
//! Per receiver ("lane"), requests carry many events across nodes (a node's events in
//! order, a node in at most one request at a time); results move the node's cursor in memory
//! and the cursor is written fenced, batched. A request that fails as a whole backs the lane
//! off (capped, jittered); an event the receiver refuses for good (Nova's 404) is recorded and
//! skipped; an event with a retryable per-event code backs off its node only. Nothing here is
//! awaited by node actors: a slow, failing or hanging receiver only delays delivery.
//!
//! Finished events (every configured receiver is past them) are compacted after the retention.

use crate::auth::Authenticator;
use crate::stats::Stats;
use crate::wire::{self, SendError};
use ferric_cluster::{Cluster, ClusterError, NodeEvents, PrefixWatch, WatchEvent, WatchLost};
use ferric_model::{
    decode, now_ms, DeliveryCursor, DeliveryResult, EventRecord, FenceToken, NodeId, Outcome,
    ResendRecord, Sink,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Grouped reads of a few newly held nodes' events in flight at once; nodes queued while they
/// run join the next read.
const FEW_LOADS: usize = 4;

/// A receiver: where to send, and how to authenticate.
pub struct Endpoint {
    pub url: String,
    pub auth: Authenticator,
}

pub struct NotifyConfig {
    pub conductor: String,
    /// Nova's compute endpoint (`http://nova:8774/v2.1`); events go to
    /// `<url>/os-server-external-events`.
    pub compute: Option<Endpoint>,
    /// A generic JSON webhook (the whole URL).
    pub webhook: Option<Endpoint>,
    /// Bound on one HTTP request (a hanging receiver costs at most this, per request).
    pub timeout: Duration,
    /// Cap of the retry backoff after failed requests.
    pub backoff_max: Duration,
    /// Finished events are deleted this long after they were written.
    pub retention: Duration,
    /// Events per request at most.
    pub batch_max: usize,
    /// Requests in flight per receiver at most.
    pub in_flight: usize,
    /// From this many nodes to read at once (start-up, a failover), one paged read of the
    /// whole event and cursor prefixes is cheaper than grouped reads of those nodes.
    pub bulk_load_min: usize,
}

impl NotifyConfig {
    pub fn new(conductor: &str) -> Self {
        NotifyConfig {
            conductor: conductor.to_string(),
            compute: None,
            webhook: None,
            timeout: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            batch_max: 500,
            in_flight: 4,
            bulk_load_min: 64,
        }
    }
}

enum Ctl {
    /// `fresh`: the node was created after this conductor held its fence, so etcd has no
    /// events or cursor of it to read.
    Owned(NodeId, FenceToken, bool),
    Released(NodeId, FenceToken),
    ReleasedAll,
    Written(NodeId, FenceToken, EventRecord),
}

/// The session's handle on the deliverer. Calls never block.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Ctl>,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    /// This conductor now holds `id` with fencing token `token` (its node actor started).
    pub fn owned(&self, id: NodeId, token: FenceToken) {
        let _ = self.tx.send(Ctl::Owned(id, token, false));
    }
    /// `owned` for a node created after this conductor held its fence (a node enrolled into
    /// a bucket held here): only its owner writes its events, so there are none in etcd yet
    /// and none are read (a Txn per one to a few enrolled nodes, most of enroll's etcd reads).
    pub fn owned_fresh(&self, id: NodeId, token: FenceToken) {
        let _ = self.tx.send(Ctl::Owned(id, token, true));
    }
    /// This conductor no longer holds `id` under `token` (its node actor stopped).
    pub fn released(&self, id: NodeId, token: FenceToken) {
        let _ = self.tx.send(Ctl::Released(id, token));
    }
    /// The session ended: nothing is held any more.
    pub fn released_all(&self) {
        let _ = self.tx.send(Ctl::ReleasedAll);
    }
    /// The node's actor wrote `event` under `token`, and etcd confirmed it.
    pub fn written(&self, id: NodeId, token: FenceToken, event: EventRecord) {
        let _ = self.tx.send(Ctl::Written(id, token, event));
    }
}

/// Starts the deliverer; it runs until `shutdown` turns true.
pub fn spawn(cluster: Cluster, cfg: NotifyConfig, shutdown: watch::Receiver<bool>) -> Notifier {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(Stats::default());
    for sink in Sink::ALL {
        let on = match sink {
            Sink::Compute => cfg.compute.is_some(),
            Sink::Webhook => cfg.webhook.is_some(),
        };
        stats
            .lane(sink)
            .configured
            .store(u64::from(on), std::sync::atomic::Ordering::Relaxed);
    }
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .build()
        .expect("an HTTP client (TLS backend)");
    for (sink, ep) in [(Sink::Compute, &cfg.compute), (Sink::Webhook, &cfg.webhook)] {
        if let Some(ep) = ep {
            tracing::info!(sink = sink.as_str(), url = %ep.url, auth = %ep.auth.describe(), "power events will be delivered");
        }
    }
    let (inputs_tx, inputs) = mpsc::channel(1024);
    let d = Deliverer {
        cluster,
        shared: Arc::new(Shared { cfg, client }),
        stats: stats.clone(),
        nodes: HashMap::new(),
        lanes: [Lane::new(), Lane::new()],
        inputs_tx,
        few_loading: 0,
        to_load: HashMap::new(),
        bulk_loading: false,
        bulk_scanned: None,
        unflushed: BTreeSet::new(),
        writes_in_flight: 0,
        watch_tasks: Vec::new(),
        watch_broken: false,
    };
    tokio::spawn(d.run(rx, inputs, shutdown));
    Notifier { tx, stats }
}

struct Shared {
    cfg: NotifyConfig,
    client: reqwest::Client,
}

impl Shared {
    fn endpoint(&self, sink: Sink) -> Option<&Endpoint> {
        match sink {
            Sink::Compute => self.cfg.compute.as_ref(),
            Sink::Webhook => self.cfg.webhook.as_ref(),
        }
    }
}

/// One node's part of a request.
struct Part {
    id: NodeId,
    token: FenceToken,
    events: Vec<Arc<EventRecord>>,
}

enum Input {
    Watch(WatchKind, Result<Vec<WatchEvent>, WatchLost>),
    /// A grouped read of a few nodes: the nodes asked for, and their events and cursors in
    /// the same order.
    LoadedFew(
        Vec<(NodeId, FenceToken)>,
        Result<Vec<(NodeId, NodeEvents)>, ClusterError>,
    ),
    /// A bulk load: the nodes asked for, and their events and cursors, and the keys the read
    /// went through.
    LoadedMany(
        Vec<(NodeId, FenceToken)>,
        Result<(HashMap<NodeId, NodeEvents>, usize), ClusterError>,
    ),
    Sent(Sink, Vec<Part>, Result<Vec<Option<Outcome>>, SendError>),
    Written(
        Vec<(NodeId, FenceToken, u64)>,
        Result<Vec<bool>, ClusterError>,
    ),
    Compacted(NodeId, FenceToken, u64, Result<bool, ClusterError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchKind {
    Resend,
}

#[derive(Default)]
struct NodeLane {
    in_flight: bool,
    /// Backoff of this node alone (a retryable per-event code).
    not_before: Option<Instant>,
    failures: u32,
    /// Requests the head event has been in.
    attempts: u32,
}

struct NodeQ {
    token: FenceToken,
    loaded: bool,
    /// Events not yet finished by every configured receiver.
    events: BTreeMap<u64, Arc<EventRecord>>,
    /// Finished events not yet compacted: (seq, written at).
    finished: VecDeque<(u64, u64)>,
    cursor: DeliveryCursor,
    lanes: [NodeLane; 2],
    /// Cursor generations: changed in memory / written to etcd.
    dirty: u64,
    written: u64,
    writing: bool,
    compacting: bool,
}

struct Lane {
    in_flight: usize,
    failures: u32,
    not_before: Option<Instant>,
    /// Nodes with an event this receiver has not finished.
    pending: BTreeSet<NodeId>,
    /// Where the next batch starts looking (fairness across nodes).
    rotor: Option<NodeId>,
    /// The failure last logged, to log changes rather than every retry.
    last_logged: Option<(&'static str, Instant)>,
}

impl Lane {
    fn new() -> Self {
        Lane {
            in_flight: 0,
            failures: 0,
            not_before: None,
            pending: BTreeSet::new(),
            rotor: None,
            last_logged: None,
        }
    }
}

struct Deliverer {
    cluster: Cluster,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    /// Boxed: a held node's queue is about 300 bytes, and the table keeps up to twice as many
    /// slots as nodes (heaptrack at 30,000 nodes: 0.95 KB per node at its peak with the queues
    /// inline; a conductor's RSS per node 10.84 KiB before, 10.59 to 10.78 after).
    nodes: HashMap<NodeId, Box<NodeQ>>,
    lanes: [Lane; 2],
    inputs_tx: mpsc::Sender<Input>,
    /// Grouped reads of a few nodes' events in flight (see [`Deliverer::start_loads`]).
    few_loading: usize,
    /// Nodes whose cursor moved since it was last written (flushed by
    /// [`Deliverer::flush_cursors`] without a scan of every node).
    unflushed: BTreeSet<NodeId>,
    /// Nodes whose events and cursor are to be read (see [`Deliverer::start_loads`]).
    to_load: HashMap<NodeId, FenceToken>,
    bulk_loading: bool,
    /// Keys the last bulk read went through (None: no bulk read yet).
    bulk_scanned: Option<usize>,
    writes_in_flight: usize,
    watch_tasks: Vec<tokio::task::JoinHandle<()>>,
    watch_broken: bool,
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        for t in &self.watch_tasks {
            t.abort();
        }
    }
}

/// Whether one bulk read (the whole `delivery/` and `events/` prefixes) is the cheaper way to
/// read `queued` nodes' events: from `min` nodes on, unless the last bulk read went through more
/// than eight keys per queued node. A bulk read costs what the whole fleet's cursors and events
/// weigh, grouped reads what the queued nodes' do: at a million nodes with notifications on, a
/// survivor of a failover taking its share a few thousand at a time would otherwise read every
/// node's cursor and retained events again for each few thousand. Grouped reads cost etcd more
/// per key (a range per node), hence eight and not two keys per node.
fn bulk_pays(queued: usize, min: usize, last_scanned: Option<usize>) -> bool {
    queued >= min && last_scanned.is_none_or(|scanned| queued.saturating_mul(8) >= scanned)
}

/// The retry delay after `failures` failed attempts: doubling from 100 ms, capped, with up to
/// a quarter of jitter so that many conductors do not retry in step.
pub fn backoff(failures: u32, cap: Duration, jitter_seed: u64) -> Duration {
    let base =
        Duration::from_millis(100).saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let d = base.min(cap);
    let jitter = d.as_millis() as u64 / 4;
    let j = if jitter == 0 { 0 } else { jitter_seed % jitter };
    (d - Duration::from_millis(jitter)) + Duration::from_millis(j)
}

pub(crate) fn transport_error(url: &str, e: reqwest::Error) -> SendError {
    crate::auth::send_error(ferric_keystone::transport_error(url, e))
}

impl Deliverer {
    fn enabled(&self, sink: Sink) -> bool {
        self.shared.endpoint(sink).is_some()
    }

    async fn run(
        mut self,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        mut inputs: mpsc::Receiver<Input>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.start_watches().await;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let compaction_every = (self.shared.cfg.retention / 4)
            .clamp(Duration::from_millis(500), Duration::from_secs(60));
        let mut compaction = tokio::time::interval(compaction_every);
        compaction.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                Some(c) = ctl.recv() => self.on_ctl(c),
                Some(i) = inputs.recv() => self.on_input(i),
                _ = tick.tick() => {
                    if self.watch_broken {
                        self.start_watches().await;
                    }
                    self.publish_pending();
                }
                _ = compaction.tick() => self.compact(),
            }
            // Take what else is waiting before sending, so that bursts make full requests.
            for _ in 0..1024 {
                match ctl.try_recv() {
                    Ok(c) => self.on_ctl(c),
                    Err(_) => break,
                }
            }
            for _ in 0..1024 {
                match inputs.try_recv() {
                    Ok(i) => self.on_input(i),
                    Err(_) => break,
                }
            }
            self.start_loads();
            self.dispatch();
            self.flush_cursors();
        }
    }

    async fn start_watches(&mut self) {
        for t in self.watch_tasks.drain(..) {
            t.abort();
        }
        let from = match self.cluster.revision().await {
            Ok(r) => r + 1,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch events yet; retrying");
                self.watch_broken = true;
                return;
            }
        };
        for (kind, prefix) in [(WatchKind::Resend, self.cluster.keys().resends())] {
            match self.cluster.watch_prefix(&prefix, from).await {
                Ok(w) => {
                    self.watch_tasks
                        .push(tokio::spawn(forward(kind, w, self.inputs_tx.clone())))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch events yet; retrying");
                    self.watch_broken = true;
                    return;
                }
            }
        }
        self.watch_broken = false;
        // What was written before the watch started is read again, node by node.
        let held: Vec<(NodeId, FenceToken)> =
            self.nodes.iter().map(|(id, n)| (*id, n.token)).collect();
        for (id, token) in held {
            self.load(id, token);
        }
    }

    fn on_ctl(&mut self, c: Ctl) {
        match c {
            Ctl::Owned(id, token, fresh) => {
                if self.nodes.get(&id).is_some_and(|n| n.token == token) {
                    return;
                }
                self.forget(id);
                self.nodes.insert(
                    id,
                    Box::new(NodeQ {
                        token,
                        loaded: false,
                        events: BTreeMap::new(),
                        finished: VecDeque::new(),
                        cursor: DeliveryCursor::new(id),
                        lanes: Default::default(),
                        dirty: 0,
                        written: 0,
                        writing: false,
                        compacting: false,
                    }),
                );
                if fresh {
                    let nothing = NodeEvents {
                        cursor: None,
                        events: Vec::new(),
                        revision: 0,
                    };
                    self.on_loaded(id, token, Ok(nothing));
                } else {
                    self.load(id, token);
                }
            }
            Ctl::Released(id, token) => {
                if self.nodes.get(&id).is_some_and(|n| n.token == token) {
                    self.forget(id);
                }
            }
            Ctl::ReleasedAll => {
                let all: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in all {
                    self.forget(id);
                }
            }
            Ctl::Written(id, token, event) => {
                // A node not (or no longer, or not yet) held under this token: whoever holds
                // it next reads its events from etcd, this one included.
                let Some(n) = self.nodes.get_mut(&id).filter(|n| n.token == token) else {
                    return;
                };
                n.events.entry(event.seq).or_insert_with(|| Arc::new(event));
                self.refresh(id);
            }
        }
    }

    fn forget(&mut self, id: NodeId) {
        self.to_load.remove(&id);
        self.unflushed.remove(&id);
        if self.nodes.remove(&id).is_some() {
            for lane in &mut self.lanes {
                lane.pending.remove(&id);
            }
        }
    }

    /// Queues a read of the node's events and cursor; until it is done the node sends nothing
    /// (its cursor says where to resume).
    fn load(&mut self, id: NodeId, token: FenceToken) {
        self.to_load.insert(id, token);
    }

    /// Starts the queued reads: one bulk read of the whole prefixes when many are queued, else
    /// one grouped read of the queued nodes while fewer than [`FEW_LOADS`] are in flight (nodes
    /// queued meanwhile join the next one, so a conductor taking new nodes a few at a time
    /// does not read them one round trip each).
    fn start_loads(&mut self) {
        if self.to_load.is_empty() || self.bulk_loading {
            return;
        }
        let bulk = bulk_pays(
            self.to_load.len(),
            self.shared.cfg.bulk_load_min,
            self.bulk_scanned,
        );
        if !bulk && self.few_loading >= FEW_LOADS {
            return;
        }
        let queued: Vec<(NodeId, FenceToken)> = self.to_load.drain().collect();
        let cluster = self.cluster.clone();
        let tx = self.inputs_tx.clone();
        if !bulk {
            self.few_loading += 1;
            tokio::spawn(async move {
                let ids: Vec<NodeId> = queued.iter().map(|(id, _)| *id).collect();
                let result = cluster.few_nodes_events(&ids).await;
                if result.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let _ = tx.send(Input::LoadedFew(queued, result)).await;
            });
            return;
        }
        self.bulk_loading = true;
        tracing::info!(
            nodes = queued.len(),
            "reading the events of newly held nodes in one bulk read"
        );
        tokio::spawn(async move {
            let ids = queued.iter().map(|(id, _)| *id).collect();
            let result = cluster.nodes_events_scanned(&ids).await;
            if result.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _ = tx.send(Input::LoadedMany(queued, result)).await;
        });
    }

    /// A read that failed: the nodes still held here are read again.
    fn load_again(&mut self, asked: Vec<(NodeId, FenceToken)>, e: ClusterError) {
        tracing::warn!(nodes = asked.len(), error = %e, "cannot read the nodes' events; retrying");
        for (id, token) in asked {
            if self.nodes.get(&id).is_some_and(|n| n.token == token) {
                self.load(id, token);
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Watch(_, Err(lost)) => {
                tracing::warn!(error = %lost, "event watch lost; following again");
                self.watch_broken = true;
            }
            Input::Watch(WatchKind::Resend, Ok(batch)) => {
                for ev in batch {
                    let WatchEvent::Put { key, value, .. } = ev else {
                        continue;
                    };
                    let Some(id) = self.cluster.keys().node_id_of(&key) else {
                        continue;
                    };
                    self.resend(id, decode::<ResendRecord>(&value).ok());
                }
            }
            Input::LoadedFew(asked, result) => {
                self.few_loading -= 1;
                match result {
                    Ok(found) if found.len() == asked.len() => {
                        for ((id, token), (_, events)) in asked.into_iter().zip(found) {
                            self.on_loaded(id, token, Ok(events));
                        }
                    }
                    Ok(_) => self.load_again(
                        asked,
                        ClusterError::Internal("a node missing from the grouped read".into()),
                    ),
                    Err(e) => self.load_again(asked, e),
                }
            }
            Input::LoadedMany(asked, result) => {
                self.bulk_loading = false;
                match result {
                    Ok((mut found, scanned)) => {
                        self.bulk_scanned = Some(scanned);
                        for (id, token) in asked {
                            let events = found.remove(&id).ok_or_else(|| {
                                ClusterError::Internal("missing from the bulk read".into())
                            });
                            self.on_loaded(id, token, events);
                        }
                    }
                    Err(e) => self.load_again(asked, e),
                }
            }
            Input::Sent(sink, parts, result) => self.on_sent(sink, parts, result),
            Input::Written(batch, result) => self.on_written(batch, result),
            Input::Compacted(id, token, up_to, result) => {
                let Some(n) = self.nodes.get_mut(&id).filter(|n| n.token == token) else {
                    return;
                };
                n.compacting = false;
                match result {
                    Ok(true) => {
                        while n.finished.front().is_some_and(|(s, _)| *s <= up_to) {
                            n.finished.pop_front();
                        }
                    }
                    Ok(false) => {
                        tracing::info!(node = %id, "no longer held here (fenced); its events are left to the new owner");
                        self.forget(id);
                    }
                    Err(e) => {
                        tracing::warn!(node = %id, error = %e, "compacting events failed; retrying later")
                    }
                }
            }
        }
    }

    fn on_loaded(
        &mut self,
        id: NodeId,
        token: FenceToken,
        result: Result<NodeEvents, ClusterError>,
    ) {
        if self.nodes.get(&id).is_none_or(|n| n.token != token) {
            return;
        }
        let loaded = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(node = %id, error = %e, "cannot read the node's events; retrying");
                self.load(id, token);
                return;
            }
        };
        let cursor = match loaded.cursor {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // Starting over re-sends what was delivered (at least once), never skips.
                tracing::error!(node = %id, error = %e, "unreadable delivery cursor; delivering the node's events from the start");
                DeliveryCursor::new(id)
            }
            None => DeliveryCursor::new(id),
        };
        for (seq, ev) in loaded.events {
            match ev {
                Ok(ev) => {
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.events.entry(seq).or_insert_with(|| Arc::new(ev));
                    }
                }
                Err(e) => {
                    tracing::error!(node = %id, seq, error = %e, "unreadable event skipped");
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.finished.push_back((seq, 0));
                    }
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            // A reload (after a lost watch) keeps what this owner already moved in memory.
            let mut c = cursor;
            for sink in Sink::ALL {
                let mem = n.cursor.lane(sink);
                if mem.done > c.lane(sink).done {
                    *c.lane_mut(sink) = mem.clone();
                }
            }
            n.cursor = c;
            n.loaded = true;
        }
        self.refresh(id);
    }

    /// Moves a node's lanes past events not meant for them, files finished events for
    /// compaction and updates which lanes have work for the node.
    fn refresh(&mut self, id: NodeId) {
        let enabled = [self.enabled(Sink::Compute), self.enabled(Sink::Webhook)];
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if !n.loaded {
            return;
        }
        let mut min_done = u64::MAX;
        for sink in Sink::ALL {
            let lane = &mut self.lanes[sink.index()];
            if !enabled[sink.index()] {
                continue;
            }
            let done = n.cursor.lane(sink).done;
            let mut skip_to = done;
            for (seq, ev) in n.events.range(done + 1..) {
                if sink.applies_to(ev) {
                    break;
                }
                skip_to = *seq;
            }
            if skip_to != done {
                n.cursor.lane_mut(sink).done = skip_to;
                n.dirty += 1;
                self.unflushed.insert(id);
            }
            let has_work = n.events.range(skip_to + 1..).next().is_some();
            if has_work {
                lane.pending.insert(id);
            } else {
                lane.pending.remove(&id);
            }
            min_done = min_done.min(skip_to);
        }
        while let Some((&seq, ev)) = n.events.first_key_value() {
            if seq > min_done {
                break;
            }
            n.finished.push_back((seq, ev.at_ms));
            n.events.pop_first();
        }
    }

    /// The race guard asked for the node's pending events to go out now.
    fn resend(&mut self, id: NodeId, rec: Option<ResendRecord>) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let lane = &mut n.lanes[Sink::Compute.index()];
        lane.not_before = None;
        lane.failures = 0;
        self.lanes[Sink::Compute.index()].not_before = None;
        tracing::info!(node = %id, seq = rec.map(|r| r.seq), "re-sending the node's pending events now (a power request of the compute service was refused)");
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        for sink in Sink::ALL {
            if !self.enabled(sink) {
                continue;
            }
            loop {
                let lane = &self.lanes[sink.index()];
                if lane.in_flight >= self.shared.cfg.in_flight.max(1)
                    || lane.not_before.is_some_and(|t| t > now)
                    || lane.pending.is_empty()
                {
                    break;
                }
                let parts = self.batch(sink, now);
                if parts.is_empty() {
                    break;
                }
                self.lanes[sink.index()].in_flight += 1;
                self.send(sink, parts);
            }
        }
    }

    /// Up to `batch_max` events across nodes, each node's in order, nodes not in flight.
    fn batch(&mut self, sink: Sink, now: Instant) -> Vec<Part> {
        let max = self.shared.cfg.batch_max.max(1);
        let lane = &mut self.lanes[sink.index()];
        let start = lane.rotor;
        let order: Vec<NodeId> = match start {
            Some(r) => lane
                .pending
                .range(r..)
                .chain(lane.pending.range(..r))
                .copied()
                .collect(),
            None => lane.pending.iter().copied().collect(),
        };
        let mut parts = Vec::new();
        let mut count = 0;
        for id in order {
            if count >= max {
                lane.rotor = Some(id);
                break;
            }
            let Some(n) = self.nodes.get_mut(&id) else {
                continue;
            };
            let nl = &mut n.lanes[sink.index()];
            if nl.in_flight || nl.not_before.is_some_and(|t| t > now) {
                continue;
            }
            let done = n.cursor.lane(sink).done;
            let events: Vec<Arc<EventRecord>> = n
                .events
                .range(done + 1..)
                .map(|(_, e)| e.clone())
                .filter(|e| sink.applies_to(e))
                .take(max - count)
                .collect();
            if events.is_empty() {
                continue;
            }
            count += events.len();
            nl.in_flight = true;
            nl.attempts += 1;
            parts.push(Part {
                id,
                token: n.token,
                events,
            });
        }
        parts
    }

    fn send(&self, sink: Sink, parts: Vec<Part>) {
        let shared = self.shared.clone();
        let tx = self.inputs_tx.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            stats
                .lane(sink)
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = post(&shared, sink, &parts).await;
            let _ = tx.send(Input::Sent(sink, parts, result)).await;
        });
    }

    fn on_sent(
        &mut self,
        sink: Sink,
        parts: Vec<Part>,
        result: Result<Vec<Option<Outcome>>, SendError>,
    ) {
        let now = Instant::now();
        let stats = self.stats.clone();
        let lstats = stats.lane(sink);
        let lane = &mut self.lanes[sink.index()];
        lane.in_flight = lane.in_flight.saturating_sub(1);
        let outcomes = match result {
            Ok(o) => {
                if lane.failures > 0 {
                    tracing::info!(
                        sink = sink.as_str(),
                        after_failures = lane.failures,
                        "event delivery works again"
                    );
                }
                lane.failures = 0;
                lane.not_before = None;
                lane.last_logged = None;
                lstats
                    .failing
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                o
            }
            Err(e) => {
                lane.failures += 1;
                let delay = backoff(lane.failures, self.shared.cfg.backoff_max, now_ms());
                lane.not_before = Some(now + delay);
                let kind = e.kind();
                let repeat = lane
                    .last_logged
                    .is_some_and(|(k, at)| k == kind && at.elapsed() < Duration::from_secs(30));
                if !repeat {
                    lane.last_logged = Some((kind, now));
                    let events: usize = parts.iter().map(|p| p.events.len()).sum();
                    if matches!(kind, "auth" | "not_found" | "client_error") {
                        tracing::error!(sink = sink.as_str(), kind, error = %e, events, retry_ms = delay.as_millis() as u64, "event delivery failed: check the receiver's URL and credentials");
                    } else {
                        tracing::warn!(sink = sink.as_str(), kind, error = %e, events, retry_ms = delay.as_millis() as u64, "event delivery failed; retrying");
                    }
                }
                lstats.failure(kind, e.to_string());
                for p in &parts {
                    if let Some(n) = self.nodes.get_mut(&p.id).filter(|n| n.token == p.token) {
                        n.lanes[sink.index()].in_flight = false;
                    }
                }
                return;
            }
        };
        let now_wall = now_ms();
        let mut i = 0;
        for p in parts {
            let results = &outcomes[i..i + p.events.len()];
            i += p.events.len();
            let Some(n) = self.nodes.get_mut(&p.id).filter(|n| n.token == p.token) else {
                continue;
            };
            let nl = &mut n.lanes[sink.index()];
            nl.in_flight = false;
            let attempts = nl.attempts;
            let mut retry = false;
            for (ev, outcome) in p.events.iter().zip(results) {
                match outcome {
                    Some(o) => {
                        n.cursor.lane_mut(sink).record(DeliveryResult {
                            seq: ev.seq,
                            outcome: *o,
                            at_ms: now_wall,
                            attempts,
                        });
                        match o {
                            Outcome::Delivered { .. } => {
                                lstats
                                    .delivered
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                lstats.observe_latency_ms(now_wall.saturating_sub(ev.at_ms));
                            }
                            Outcome::Refused { code } => {
                                lstats
                                    .refused
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::warn!(node = %p.id, seq = ev.seq, sink = sink.as_str(), code, instance = ?ev.instance_uuid, "the receiver refused the event; recorded and skipped");
                            }
                        }
                        n.dirty += 1;
                        self.unflushed.insert(p.id);
                    }
                    None => {
                        retry = true;
                        break;
                    }
                }
            }
            let nl = &mut n.lanes[sink.index()];
            if retry {
                nl.failures += 1;
                nl.not_before = Some(
                    now + backoff(
                        nl.failures,
                        self.shared.cfg.backoff_max,
                        now_wall ^ p.id.as_bytes()[0] as u64,
                    ),
                );
            } else {
                nl.failures = 0;
                nl.not_before = None;
                nl.attempts = 0;
            }
            self.refresh(p.id);
        }
    }

    fn flush_cursors(&mut self) {
        if self.writes_in_flight >= 2 || self.unflushed.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut meta = Vec::new();
        let mut taken = Vec::new();
        for id in &self.unflushed {
            let Some(n) = self.nodes.get_mut(id) else {
                taken.push(*id);
                continue;
            };
            if n.dirty <= n.written {
                taken.push(*id);
                continue;
            }
            // Still writing, or not loaded: it stays, for a later flush.
            if !n.writing && n.loaded {
                taken.push(*id);
                n.writing = true;
                n.cursor.conductor = self.shared.cfg.conductor.clone();
                n.cursor.fence = n.token.0;
                n.cursor.updated_at_ms = now_ms();
                batch.push((n.token, n.cursor.clone()));
                meta.push((*id, n.token, n.dirty));
                if batch.len() >= 1000 {
                    break;
                }
            }
        }
        for id in taken {
            self.unflushed.remove(&id);
        }
        if batch.is_empty() {
            return;
        }
        self.writes_in_flight += 1;
        let cluster = self.cluster.clone();
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            let result = cluster.write_cursors(&batch).await;
            let _ = tx.send(Input::Written(meta, result)).await;
        });
    }

    fn on_written(
        &mut self,
        batch: Vec<(NodeId, FenceToken, u64)>,
        result: Result<Vec<bool>, ClusterError>,
    ) {
        self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
        match result {
            Ok(oks) => {
                for ((id, token, gen), ok) in batch.into_iter().zip(oks) {
                    let Some(n) = self.nodes.get_mut(&id).filter(|n| n.token == token) else {
                        continue;
                    };
                    n.writing = false;
                    if ok {
                        n.written = n.written.max(gen);
                        if n.dirty > n.written {
                            self.unflushed.insert(id);
                        }
                    } else {
                        // fenced: someone else holds the node now; it resumes from the cursor
                        // as last written (re-sending what we sent since: at least once).
                        tracing::info!(node = %id, "delivery cursor fenced: the node is no longer held here");
                        self.forget(id);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count = batch.len(), "writing delivery cursors failed; retrying");
                for (id, token, _) in batch {
                    if let Some(n) = self.nodes.get_mut(&id).filter(|n| n.token == token) {
                        n.writing = false;
                        self.unflushed.insert(id);
                    }
                }
            }
        }
    }

    fn compact(&mut self) {
        let cutoff = now_ms().saturating_sub(self.shared.cfg.retention.as_millis() as u64);
        let mut started = 0;
        for (id, n) in self.nodes.iter_mut() {
            if started >= 64 {
                break;
            }
            if n.compacting || n.writing || n.dirty > n.written {
                // Never compact past a cursor that is not written yet.
                continue;
            }
            let up_to = n
                .finished
                .iter()
                .take_while(|(_, at)| *at <= cutoff)
                .map(|(s, _)| *s)
                .last();
            let Some(up_to) = up_to else { continue };
            n.compacting = true;
            started += 1;
            let (cluster, tx, id, token) =
                (self.cluster.clone(), self.inputs_tx.clone(), *id, n.token);
            tokio::spawn(async move {
                let result = cluster.compact_events(&id, token, up_to).await;
                let _ = tx.send(Input::Compacted(id, token, up_to, result)).await;
            });
        }
    }

    fn publish_pending(&self) {
        for sink in Sink::ALL {
            if !self.enabled(sink) {
                continue;
            }
            let pending: usize = self.lanes[sink.index()]
                .pending
                .iter()
                .filter_map(|id| self.nodes.get(id))
                .map(|n| {
                    let done = n.cursor.lane(sink).done;
                    n.events
                        .range(done + 1..)
                        .filter(|(_, e)| sink.applies_to(e))
                        .count()
                })
                .sum();
            self.stats
                .lane(sink)
                .pending
                .store(pending as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One request to one receiver; the outcome per event, in the order of `parts`.
async fn post(
    shared: &Shared,
    sink: Sink,
    parts: &[Part],
) -> Result<Vec<Option<Outcome>>, SendError> {
    let ep = shared
        .endpoint(sink)
        .expect("only configured receivers are sent to");
    let events: Vec<&EventRecord> = parts
        .iter()
        .flat_map(|p| p.events.iter().map(|e| &**e))
        .collect();
    let (url, body) = match sink {
        Sink::Compute => (
            format!("{}/os-server-external-events", ep.url.trim_end_matches('/')),
            wire::nova_body(&events),
        ),
        Sink::Webhook => (ep.url.clone(), wire::webhook_body(&events)),
    };
    let mut renewed = false;
    loop {
        let mut req = shared.client.post(&url).json(&body);
        if sink == Sink::Compute {
            req = req.header(wire::NOVA_VERSION_HEADER.0, wire::NOVA_VERSION_HEADER.1);
        }
        let req = ep.auth.apply(&shared.client, req).await?;
        let resp = req
            .send()
            .await
            .map_err(|e| timeout_ms(transport_error(&url, e), shared.cfg.timeout))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| timeout_ms(transport_error(&url, e), shared.cfg.timeout))?;
        if status == 401 && !renewed && ep.auth.renew_after_401().await {
            // The token expired or was revoked early: get a new one and send again, once.
            renewed = true;
            continue;
        }
        return match sink {
            Sink::Compute => wire::nova_outcomes(&url, status, &bytes, &events),
            Sink::Webhook => wire::webhook_outcomes(&url, status, &bytes, events.len()),
        };
    }
}

fn timeout_ms(e: SendError, timeout: Duration) -> SendError {
    match e {
        SendError::Timeout { url, .. } => SendError::Timeout {
            url,
            timeout_ms: timeout.as_millis() as u64,
        },
        other => other,
    }
}

async fn forward(kind: WatchKind, mut watch: PrefixWatch, tx: mpsc::Sender<Input>) {
    loop {
        let batch = watch.next().await;
        let stop = batch.is_err();
        if tx.send(Input::Watch(kind, batch)).await.is_err() || stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_read_is_chosen_only_while_it_reads_little_more_than_asked() {
        // Too few nodes: grouped reads, whatever the fleet.
        assert!(!bulk_pays(63, 64, None));
        // The first time many are queued (a start-up): bulk.
        assert!(bulk_pays(64, 64, None));
        // An empty outbox (the last bulk read found nothing): bulk stays cheap.
        assert!(bulk_pays(64, 64, Some(0)));
        // 3,840 nodes queued after a bulk read of a million keys: grouped reads.
        assert!(!bulk_pays(3_840, 64, Some(1_000_000)));
        // 200,000 queued against a million keys: bulk again.
        assert!(bulk_pays(200_000, 64, Some(1_000_000)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let cap = Duration::from_secs(2);
        for seed in [0u64, 7, 12345, u64::MAX] {
            let d1 = backoff(1, cap, seed);
            assert!(
                d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d3 = backoff(3, cap, seed);
            assert!(
                d3 >= Duration::from_millis(300) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            let d30 = backoff(30, cap, seed);
            assert!(d30 >= Duration::from_millis(1500) && d30 <= cap, "{d30:?}");
        }
    }
}

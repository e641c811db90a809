//! A conductor's membership session: lease, registration, the watches of `conductors/`,
//! `nodes/` and `reservations/`, rendezvous placement, and batched reservation of the nodes this
//! conductor should own. One session lives as long as one lease; when the lease is lost (self
//! fenced, expired, revoked) every node actor is stopped and a new session starts with a new
//! lease once etcd answers again.
//!
//! Ownership hand-off never has two owners: a conductor that loses a node to placement stops the
//! node's actor (after its in-flight operation) and only then deletes the reservation; the new
//! owner reserves it with "create if absent" and only then starts its actor.

use crate::node_actor::{real_bmcs, Consoles, Initial, NodeArgs, NodeCtx, NodeMsg};
use crate::store::EtcdStore;
use crate::supervisor::{NodeEvent, SupervisorMsg, REASON_FENCED};
use ferric_cluster::heartbeats::HeartbeatRecord;
use ferric_cluster::placement::owner_of;
use ferric_cluster::snapshot::placement_of;
use ferric_cluster::{
    AcquireOutcome, Cluster, ClusterError, LeaseKeeper, LeaseState, PrefixWatch, StatusWriter,
    WatchEvent, WatchLost,
};
use ferric_model::{
    decode, now_ms, ConductorRecord, FenceToken, NodeId, NodeSpec, RemediationPolicy,
};
use ractor::ActorRef;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct ConductorConfig {
    pub name: String,
    pub ttl: Duration,
    pub drivers: Vec<String>,
    pub conductor_group: String,
    pub address: String,
    pub console_address: String,
    /// Reservation batches in flight at once.
    pub acquire_parallel: usize,
    /// Settings shared by every BMC driver of this conductor (timeouts, per-BMC gap).
    pub bmc: Arc<ferric_power::BmcSettings>,
    /// How long wait states wait for the agent by default.
    pub callback_timeout: Duration,
    /// The conductor's console service (None: no consoles here).
    pub consoles: Option<Arc<ferric_console::ConsoleContext>>,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    Shutdown,
    Lost(String),
    Failed(ClusterError),
}

/// Runs a conductor until `shutdown` turns true. On shutdown the node actors are stopped (each
/// after its in-flight operation) and the lease is revoked, which hands every node over at once.
pub async fn run(
    cluster: Cluster,
    cfg: ConductorConfig,
    supervisor: ActorRef<SupervisorMsg>,
    mut node_events: mpsc::UnboundedReceiver<NodeEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    let writer = StatusWriter::spawn(cluster.clone(), 4);
    let mut previous_lease: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let mut session = Session::new(&cluster, &cfg, &supervisor, &writer);
        let end = session
            .run(&mut node_events, &mut shutdown, &mut previous_lease)
            .await;
        // Whatever ended the session, no actor of it may keep running.
        stop_all(&supervisor, &mut node_events).await;
        let lease = session.lease.take();
        let session_started = session.ctx.is_some();
        drop(session);
        match end {
            End::Shutdown => {
                if let Some(lease) = lease {
                    lease.stop();
                    match cluster.revoke_lease(lease.id).await {
                        Ok(()) => {
                            tracing::info!(lease = lease.id, "lease revoked: all nodes handed over")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not revoke the lease; it expires by itself")
                        }
                    }
                }
                return Ok(());
            }
            End::Lost(why) => {
                failures = 0;
                if let Some(lease) = &lease {
                    // An explicit eviction is final for this incarnation: stay down.
                    if let Ok(Some(ev)) = cluster.eviction_of(&cfg.name, lease.id).await {
                        lease.stop();
                        tracing::error!(
                            conductor = %cfg.name,
                            by = %ev.by,
                            reason = %ev.reason,
                            at_ms = ev.at_ms,
                            "evicted: every node actor stopped and no BMC command will be sent; exiting"
                        );
                        return Err(ClusterError::Invalid(format!(
                            "conductor {} was evicted by {}: {}",
                            cfg.name, ev.by, ev.reason
                        )));
                    }
                }
                tracing::error!(
                    why,
                    "session lost; every node actor stopped; rejoining with a new lease"
                );
                if let Some(lease) = lease {
                    lease.stop();
                    previous_lease = Some(lease.id);
                }
            }
            End::Failed(e) => {
                failures += 1;
                if session_started {
                    tracing::error!(error = %e, "session ended, self-fenced: every node actor stopped; rejoining with a new lease");
                }
                if let Some(lease) = lease {
                    lease.stop();
                    previous_lease = Some(lease.id);
                }
                let wait = Duration::from_millis(200 * u64::from(failures.min(10)));
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "cannot start a session");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

async fn stop_all(
    supervisor: &ActorRef<SupervisorMsg>,
    node_events: &mut mpsc::UnboundedReceiver<NodeEvent>,
) {
    match ractor::call_t!(supervisor, SupervisorMsg::StopAll, 30_000) {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "node actors did not all stop in time"),
    }
    // Their stop reports belong to the old session.
    while node_events.try_recv().is_ok() {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conductors,
    Nodes,
    Reservations,
    Heartbeats,
    Config,
}

enum Input {
    Watch(Kind, Result<Vec<WatchEvent>, WatchLost>),
    Acquired(
        Vec<NodeId>,
        Result<Vec<(NodeId, AcquireOutcome)>, ClusterError>,
    ),
    Released(Vec<(NodeId, FenceToken)>, Result<usize, ClusterError>),
    Reported(u64, Result<bool, ClusterError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Asked to stop; `release` says whether the reservation is deleted afterwards.
    Stopping {
        release: bool,
    },
}

struct Mine {
    token: FenceToken,
    phase: Phase,
    /// The supervisor reported the actor running.
    started: bool,
}

/// Placement inputs of one node, interned (100k nodes share a handful of drivers and groups).
#[derive(Clone, Copy)]
struct Place {
    /// u32::MAX: the spec is unreadable; placed over all conductors so its owner reports it.
    driver: u32,
    group: u32,
}

const UNREADABLE: u32 = u32::MAX;

/// After registering, a conductor waits this long (at most, and never more than a quarter of
/// its TTL) before reserving anything, and restarts the wait when another conductor joins
/// meanwhile. Conductors started together then see each other before placing, instead of the
/// first one reserving every node and handing two thirds of them over a moment later.
const JOIN_GRACE: Duration = Duration::from_millis(400);

struct Session<'a> {
    cluster: &'a Cluster,
    cfg: &'a ConductorConfig,
    sup: &'a ActorRef<SupervisorMsg>,
    writer: &'a StatusWriter,
    lease: Option<LeaseKeeper>,
    ctx: Option<Arc<NodeCtx>>,
    members: BTreeMap<String, ConductorRecord>,
    interned: Vec<String>,
    intern_ix: HashMap<String, u32>,
    nodes: HashMap<NodeId, Place>,
    /// Reservations held by anyone but this session, with the revision they were seen at: a
    /// delete at a later revision frees them.
    others: HashMap<NodeId, i64>,
    /// The newest revision delivered by the reservations watch.
    reservations_seen: i64,
    mine: HashMap<NodeId, Mine>,
    acquiring: HashSet<NodeId>,
    acquire_queue: VecDeque<Vec<NodeId>>,
    acquire_in_flight: usize,
    releasing: Vec<(NodeId, FenceToken)>,
    dirty_all: bool,
    dirty: HashSet<NodeId>,
    /// A watch was lost and re-reading failed; retried until it works or the lease fences us.
    resync_pending: bool,
    /// No reservations before this instant (see `JOIN_GRACE`).
    hold_until: Option<Instant>,
    /// This conductor's membership record, for reporting `running`.
    record: Option<ConductorRecord>,
    running: u64,
    reported: u64,
    report_in_flight: bool,
    last_report: Instant,
    inputs_tx: mpsc::Sender<Input>,
    inputs: mpsc::Receiver<Input>,
    watch_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The remediation policy (`config/remediation`), shared with the node actors.
    policy: watch::Sender<Arc<RemediationPolicy>>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        for t in &self.watch_tasks {
            t.abort();
        }
    }
}

impl<'a> Session<'a> {
    fn new(
        cluster: &'a Cluster,
        cfg: &'a ConductorConfig,
        sup: &'a ActorRef<SupervisorMsg>,
        writer: &'a StatusWriter,
    ) -> Self {
        let (inputs_tx, inputs) = mpsc::channel(1024);
        Session {
            cluster,
            cfg,
            sup,
            writer,
            lease: None,
            ctx: None,
            members: BTreeMap::new(),
            interned: Vec::new(),
            intern_ix: HashMap::new(),
            nodes: HashMap::new(),
            others: HashMap::new(),
            reservations_seen: 0,
            mine: HashMap::new(),
            acquiring: HashSet::new(),
            acquire_queue: VecDeque::new(),
            acquire_in_flight: 0,
            releasing: Vec::new(),
            dirty_all: true,
            dirty: HashSet::new(),
            resync_pending: false,
            hold_until: None,
            record: None,
            running: 0,
            reported: 0,
            report_in_flight: false,
            last_report: Instant::now(),
            inputs_tx,
            inputs,
            watch_tasks: Vec::new(),
            policy: watch::Sender::new(Arc::new(RemediationPolicy::default())),
        }
    }

    async fn run(
        &mut self,
        node_events: &mut mpsc::UnboundedReceiver<NodeEvent>,
        shutdown: &mut watch::Receiver<bool>,
        previous_lease: &mut Option<i64>,
    ) -> End {
        if let Err(e) = self.start(previous_lease).await {
            return End::Failed(e);
        }
        let lease = self.lease.as_ref().expect("started");
        let mut lease_rx = lease.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return End::Shutdown;
            }
            let deadline = match *lease_rx.borrow() {
                LeaseState::Alive { deadline } => deadline,
                LeaseState::Fenced => {
                    return End::Lost(
                        "self-fenced: lease keepalives not acknowledged in time".into(),
                    )
                }
                LeaseState::Expired => return End::Lost("lease expired or was revoked".into()),
            };
            tokio::select! {
                _ = shutdown.changed() => return End::Shutdown,
                _ = lease_rx.changed() => continue,
                _ = tokio::time::sleep_until(deadline) => {
                    // The keeper may be late to say so; the clock decides.
                    if matches!(*lease_rx.borrow(), LeaseState::Alive { deadline: d } if d <= Instant::now()) {
                        return End::Lost("self-fenced: deadline passed without an acknowledged keepalive".into());
                    }
                    continue;
                }
                Some(ev) = node_events.recv() => self.on_node_event(ev),
                Some(input) = self.inputs.recv() => {
                    if let Err(end) = self.on_input(input).await {
                        return end;
                    }
                }
                _ = tick.tick() => self.dirty_all = true,
                _ = tokio::time::sleep(Duration::from_millis(500)), if self.resync_pending => {
                    self.try_resync().await;
                }
                _ = tokio::time::sleep_until(self.hold_until.unwrap_or_else(Instant::now)), if self.hold_until.is_some() => {
                    if self.hold_until.is_some_and(|t| t <= Instant::now()) {
                        self.hold_until = None;
                        self.dirty_all = true;
                    }
                }
            }
            // Take everything else that is already waiting before deciding, so that a burst of
            // watch events produces one placement pass and full batches.
            for _ in 0..256 {
                match node_events.try_recv() {
                    Ok(ev) => self.on_node_event(ev),
                    Err(_) => break,
                }
            }
            for _ in 0..256 {
                match self.inputs.try_recv() {
                    Ok(input) => {
                        if let Err(end) = self.on_input(input).await {
                            return end;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.place();
            self.pump();
            self.report();
        }
    }

    /// Publishes how many node actors run here in the membership record: at once when every
    /// reserved node runs (the moment a failover or start-up is complete), at most every 250 ms
    /// while a wave is in progress.
    fn report(&mut self) {
        if self.running == self.reported || self.report_in_flight {
            return;
        }
        let steady = self.running as usize == self.mine.len()
            && self.acquire_queue.is_empty()
            && self.acquire_in_flight == 0;
        if !steady && self.last_report.elapsed() < Duration::from_millis(250) {
            return;
        }
        let Some(mut rec) = self.record.clone() else {
            return;
        };
        rec.running = self.running;
        self.report_in_flight = true;
        self.last_report = Instant::now();
        let cluster = self.cluster.clone();
        let tx = self.inputs_tx.clone();
        let running = self.running;
        tokio::spawn(async move {
            let result = cluster.update_conductor(&rec).await;
            let _ = tx.send(Input::Reported(running, result)).await;
        });
    }

    async fn start(&mut self, previous_lease: &mut Option<i64>) -> Result<(), ClusterError> {
        if let Some(old) = *previous_lease {
            // After an outage etcd may have restored our old lease; end it so the old
            // reservations vanish and placement starts from a clean slate.
            self.cluster.revoke_lease(old).await?;
            *previous_lease = None;
        }
        let lease = LeaseKeeper::grant(self.cluster, self.cfg.ttl).await?;
        let record = ConductorRecord {
            name: self.cfg.name.clone(),
            address: self.cfg.address.clone(),
            console_address: self.cfg.console_address.clone(),
            drivers: self.cfg.drivers.clone(),
            conductor_group: self.cfg.conductor_group.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: now_ms(),
            lease_id: lease.id,
            running: 0,
        };
        self.ctx = Some(Arc::new(NodeCtx {
            me: self.cfg.name.clone(),
            store: Arc::new(EtcdStore {
                cluster: self.cluster.clone(),
                writer: self.writer.clone(),
            }),
            fence: lease.fence(),
            bmc: self.cfg.bmc.clone(),
            connect: real_bmcs(),
            callback_timeout_ms: self.cfg.callback_timeout.as_millis() as u64,
            remediation: self.policy.subscribe(),
            consoles: self.cfg.consoles.clone().map(|ctx| Consoles {
                ctx,
                records: Some((self.cluster.clone(), lease.id)),
            }),
        }));
        self.lease = Some(lease);
        self.cluster
            .register_conductor(&record, self.cfg.ttl * 3 + Duration::from_secs(2))
            .await?;
        tracing::info!(conductor = %self.cfg.name, lease = record.lease_id, "registered");
        self.record = Some(record);
        self.resync().await?;
        // The grace runs from the end of the snapshot read (which takes a second or more at
        // 100k nodes), so that conductors that registered meanwhile are seen before placing.
        self.hold_until = Some(Instant::now() + self.join_grace());
        Ok(())
    }

    /// Reads the snapshot and (re)starts the watches from just after it.
    async fn resync(&mut self) -> Result<(), ClusterError> {
        for t in self.watch_tasks.drain(..) {
            t.abort();
        }
        let snap = self.cluster.snapshot().await?;
        match self.cluster.remediation_policy().await {
            Ok(p) => self.set_policy(p),
            Err(e) => {
                tracing::error!(error = %e, "the remediation policy is unreadable; remediation is off")
            }
        }
        let lease_id = self.lease.as_ref().map_or(0, |l| l.id);
        self.members = snap
            .conductors
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        self.nodes.clear();
        for n in snap.nodes {
            let place = self.place_of(n.placement);
            self.nodes.insert(n.id, place);
        }
        self.others.clear();
        let mut seen_mine = HashSet::new();
        for r in snap.reservations {
            match self.mine.get(&r.id) {
                Some(m) if m.token.0 == r.create_rev => {
                    seen_mine.insert(r.id);
                }
                _ if r.lease == lease_id => self.adopt(r.id, FenceToken(r.create_rev)),
                _ => {
                    self.others.insert(r.id, r.create_rev);
                }
            }
        }
        // Reservations we thought we held that are gone: stop those actors, nothing to release.
        let lost: Vec<NodeId> = self
            .mine
            .keys()
            .filter(|id| !seen_mine.contains(id))
            .copied()
            .collect();
        for id in lost {
            self.lost(id);
        }
        let from = snap.revision + 1;
        self.reservations_seen = snap.revision;
        for (kind, prefix) in [
            (Kind::Conductors, self.cluster.keys().conductors()),
            (Kind::Nodes, self.cluster.keys().nodes()),
            (Kind::Reservations, self.cluster.keys().reservations()),
            (Kind::Heartbeats, self.cluster.heartbeats_prefix()),
            (
                Kind::Config,
                format!("{}config/", self.cluster.keys().prefix()),
            ),
        ] {
            let watch = self.cluster.watch_prefix(&prefix, from).await?;
            self.watch_tasks.push(tokio::spawn(forward_watch(
                kind,
                watch,
                self.inputs_tx.clone(),
            )));
        }
        self.dirty_all = true;
        tracing::info!(
            revision = snap.revision,
            conductors = self.members.len(),
            nodes = self.nodes.len(),
            "cluster snapshot read"
        );
        Ok(())
    }

    /// Re-reads the cluster after a lost watch. While etcd is unreachable the node actors keep
    /// running until the lease's self-fencing deadline, which ends the session if etcd does not
    /// come back in time: a short etcd blip does not stop every node.
    async fn try_resync(&mut self) {
        for t in self.watch_tasks.drain(..) {
            t.abort();
        }
        match self.resync().await {
            Ok(()) => self.resync_pending = false,
            Err(e) => {
                if !self.resync_pending {
                    tracing::warn!(error = %e, "cannot re-read the cluster; retrying until the lease deadline");
                }
                self.resync_pending = true;
            }
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&ix) = self.intern_ix.get(s) {
            return ix;
        }
        let ix = self.interned.len() as u32;
        self.interned.push(s.to_string());
        self.intern_ix.insert(s.to_string(), ix);
        ix
    }

    fn place_of(&mut self, placement: Result<(String, String), String>) -> Place {
        match placement {
            Ok((driver, group)) => Place {
                driver: self.intern(&driver),
                group: self.intern(&group),
            },
            Err(_) => Place {
                driver: UNREADABLE,
                group: UNREADABLE,
            },
        }
    }

    fn wants(&self, id: &NodeId) -> bool {
        let Some(place) = self.nodes.get(id) else {
            return false;
        };
        let eligible = self.members.values().filter(|c| {
            place.driver == UNREADABLE
                || c.serves(
                    &self.interned[place.driver as usize],
                    &self.interned[place.group as usize],
                )
        });
        owner_of(id, eligible.map(|c| c.name.as_str())) == Some(self.cfg.name.as_str())
    }

    fn join_grace(&self) -> Duration {
        JOIN_GRACE.min(self.cfg.ttl / 4)
    }

    /// Decides which nodes to reserve and which to give up.
    fn place(&mut self) {
        if self.hold_until.is_some() {
            return;
        }
        let ids: Vec<NodeId> = if std::mem::take(&mut self.dirty_all) {
            self.dirty.clear();
            self.nodes.keys().chain(self.mine.keys()).copied().collect()
        } else {
            self.dirty.drain().collect()
        };
        let mut to_stop = Vec::new();
        let mut to_acquire = Vec::new();
        for id in ids {
            let want = self.wants(&id);
            match self.mine.get_mut(&id) {
                Some(m) if m.phase == Phase::Running && !want => {
                    m.phase = Phase::Stopping { release: true };
                    to_stop.push(id);
                }
                Some(_) => {}
                None => {
                    if want && !self.others.contains_key(&id) && self.acquiring.insert(id) {
                        to_acquire.push(id);
                    }
                }
            }
        }
        if !to_stop.is_empty() {
            tracing::info!(
                count = to_stop.len(),
                "handing nodes over to their new owners"
            );
            let _ = self.sup.cast(SupervisorMsg::Stop(to_stop));
        }
        for chunk in to_acquire.chunks(ferric_cluster::reservations::BATCH) {
            self.acquire_queue.push_back(chunk.to_vec());
        }
    }

    /// Starts queued reservation batches and releases.
    fn pump(&mut self) {
        let lease = self.lease.as_ref().map_or(0, |l| l.id);
        while self.acquire_in_flight < self.cfg.acquire_parallel.max(1) {
            let Some(batch) = self.acquire_queue.pop_front() else {
                break;
            };
            self.acquire_in_flight += 1;
            let cluster = self.cluster.clone();
            let name = self.cfg.name.clone();
            let tx = self.inputs_tx.clone();
            tokio::spawn(async move {
                let result = cluster.acquire(&batch, lease, &name).await;
                let _ = tx.send(Input::Acquired(batch, result)).await;
            });
        }
        if !self.releasing.is_empty() {
            let batch = std::mem::take(&mut self.releasing);
            let cluster = self.cluster.clone();
            let tx = self.inputs_tx.clone();
            tokio::spawn(async move {
                let result = cluster.release(&batch).await;
                let _ = tx.send(Input::Released(batch, result)).await;
            });
        }
    }

    fn start_actor(&mut self, id: NodeId, token: FenceToken, initial: Option<Initial>) {
        let Some(ctx) = self.ctx.clone() else { return };
        self.mine.insert(
            id,
            Mine {
                token,
                phase: Phase::Running,
                started: false,
            },
        );
        let _ = self.sup.cast(SupervisorMsg::Start(Box::new(NodeArgs {
            id,
            token,
            initial,
            ctx,
            stopping: Arc::new(AtomicBool::new(false)),
        })));
        // Placement may have moved on while the reservation was in flight.
        self.dirty.insert(id);
    }

    /// A reservation on our lease that we did not know about (a batch whose reply was lost).
    fn adopt(&mut self, id: NodeId, token: FenceToken) {
        tracing::info!(node = %id, fence = token.0, "adopting a reservation made by this session");
        self.others.remove(&id);
        self.start_actor(id, token, None);
    }

    /// Our reservation of `id` is gone (deleted from outside, or our lease ended).
    fn lost(&mut self, id: NodeId) {
        if let Some(m) = self.mine.get_mut(&id) {
            if m.phase == Phase::Running {
                tracing::warn!(node = %id, fence = m.token.0, "reservation lost; stopping the node actor");
                let _ = self.sup.cast(SupervisorMsg::Stop(vec![id]));
            }
            m.phase = Phase::Stopping { release: false };
        }
        self.dirty.insert(id);
    }

    fn on_node_event(&mut self, ev: NodeEvent) {
        let (id, token, reason) = match ev {
            NodeEvent::Started { id, token } => {
                if let Some(m) = self.mine.get_mut(&id) {
                    if m.token == token && !m.started {
                        m.started = true;
                        self.running += 1;
                    }
                }
                return;
            }
            NodeEvent::Stopped { id, token, reason } => (id, token, reason),
        };
        let Some(m) = self.mine.get(&id) else { return };
        if m.token != token {
            return;
        }
        let was_started = m.started;
        match m.phase {
            Phase::Stopping { release: true } => self.releasing.push((id, token)),
            Phase::Stopping { release: false } => {}
            Phase::Running if reason == REASON_FENCED => {}
            Phase::Running => {
                // Gave up after crashes: keep the reservation so that no other conductor is
                // dragged into the same crash loop; the status says why.
                tracing::error!(node = %id, reason, "node actor ended on its own; keeping the reservation");
                if let Some(m) = self.mine.get_mut(&id) {
                    if std::mem::take(&mut m.started) {
                        self.running -= 1;
                    }
                }
                return;
            }
        }
        self.mine.remove(&id);
        if was_started {
            self.running -= 1;
        }
        self.dirty.insert(id);
    }

    async fn on_input(&mut self, input: Input) -> Result<(), End> {
        match input {
            Input::Acquired(batch, result) => {
                self.acquire_in_flight -= 1;
                if self.acquire_in_flight == 0 && self.acquire_queue.is_empty() {
                    tracing::info!(
                        owned = self.mine.len() + batch.len(),
                        "reservation wave done"
                    );
                }
                match result {
                    Ok(outcomes) => {
                        for (id, outcome) in outcomes {
                            self.acquiring.remove(&id);
                            match outcome {
                                AcquireOutcome::Acquired(a) => {
                                    self.others.remove(&id);
                                    let a = *a;
                                    self.start_actor(
                                        id,
                                        a.token,
                                        Some(Initial {
                                            spec: a.spec,
                                            spec_rev: a.spec_rev,
                                            status: a.status,
                                        }),
                                    );
                                }
                                AcquireOutcome::Held {
                                    lease,
                                    create_rev,
                                    seen_at,
                                    ..
                                } => {
                                    let ours = self.lease.as_ref().is_some_and(|l| l.id == lease);
                                    if ours {
                                        if !self.mine.contains_key(&id) {
                                            // An earlier batch committed but its reply was lost.
                                            self.adopt(id, FenceToken(create_rev));
                                        }
                                    } else if self.others.contains_key(&id) {
                                        // The watch already told us; it will tell us of the delete.
                                    } else if self.reservations_seen < seen_at {
                                        // The watch has yet to deliver everything after the
                                        // Txn, including any delete: wait for it.
                                        self.others.insert(id, seen_at);
                                    } else {
                                        // The watch is past the Txn and shows the key gone
                                        // again: the reply is stale, try again.
                                        self.dirty.insert(id);
                                    }
                                }
                                AcquireOutcome::Gone => {
                                    self.nodes.remove(&id);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, count = batch.len(), "reservation batch failed; retrying on the next pass");
                        for id in batch {
                            self.acquiring.remove(&id);
                        }
                    }
                }
            }
            Input::Reported(running, result) => {
                self.report_in_flight = false;
                match result {
                    Ok(true) => self.reported = running,
                    Ok(false) => {
                        return Err(End::Lost(
                            "membership record is no longer on this conductor's lease".into(),
                        ))
                    }
                    Err(e) => tracing::warn!(error = %e, "could not report running actors"),
                }
            }
            Input::Released(batch, result) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, count = batch.len(), "releasing reservations failed; retrying");
                    self.releasing.extend(batch);
                }
            }
            Input::Watch(kind, Err(lost)) => {
                tracing::warn!(?kind, error = %lost, "watch lost; re-reading the cluster");
                self.try_resync().await;
            }
            Input::Watch(kind, Ok(events)) => {
                for ev in events {
                    match kind {
                        Kind::Conductors => self.on_conductor(ev)?,
                        Kind::Nodes => self.on_node(ev),
                        Kind::Reservations => self.on_reservation(ev),
                        Kind::Heartbeats => self.on_heartbeat(ev),
                        Kind::Config => self.on_config(ev),
                    }
                }
            }
        }
        Ok(())
    }

    fn on_conductor(&mut self, ev: WatchEvent) -> Result<(), End> {
        match ev {
            WatchEvent::Put { key, value, .. } => match decode::<ConductorRecord>(&value) {
                Ok(rec) => {
                    // A conductor rewrites its record to report its running actors; only a
                    // new member or a change of what it serves moves nodes.
                    let placement_changed = self.members.get(&rec.name).is_none_or(|old| {
                        old.lease_id != rec.lease_id
                            || old.drivers != rec.drivers
                            || old.conductor_group != rec.conductor_group
                    });
                    if placement_changed {
                        tracing::info!(conductor = %rec.name, "conductor joined");
                        if self.hold_until.is_some() {
                            self.hold_until = Some(Instant::now() + self.join_grace());
                        }
                        self.dirty_all = true;
                    }
                    self.members.insert(rec.name.clone(), rec);
                }
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(&key), error = %e, "unreadable conductor record")
                }
            },
            WatchEvent::Delete { key, .. } => {
                let Some(name) = self.cluster.keys().leaf_of(&key).map(str::to_string) else {
                    return Ok(());
                };
                if name == self.cfg.name {
                    // Fence every actor now (each checks before its next BMC command), not
                    // after the supervisor got round to stopping them.
                    if let Some(lease) = &self.lease {
                        lease.stop();
                    }
                    return Err(End::Lost(
                        "this conductor's membership record was deleted (lease revoked or expired)"
                            .into(),
                    ));
                }
                tracing::info!(conductor = %name, "conductor left");
                self.members.remove(&name);
                self.dirty_all = true;
            }
        }
        Ok(())
    }

    fn on_node(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put {
                key,
                value,
                mod_rev,
                ..
            } => {
                let Some(id) = self.cluster.keys().node_id_of(&key) else {
                    return;
                };
                let place = self.place_of(placement_of(&value));
                self.nodes.insert(id, place);
                if self
                    .mine
                    .get(&id)
                    .is_some_and(|m| m.phase == Phase::Running)
                {
                    let msg = match decode::<NodeSpec>(&value) {
                        Ok(spec) => NodeMsg::Spec(Box::new(spec), mod_rev),
                        Err(e) => NodeMsg::SpecUnreadable(e.to_string(), mod_rev),
                    };
                    let _ = self.sup.cast(SupervisorMsg::Forward(id, msg));
                }
                self.dirty.insert(id);
            }
            WatchEvent::Delete { key, .. } => {
                let Some(id) = self.cluster.keys().node_id_of(&key) else {
                    return;
                };
                self.nodes.remove(&id);
                self.dirty.insert(id);
            }
        }
    }

    /// An agent heartbeat recorded by a gateway: to the node's actor, if it runs here.
    fn on_heartbeat(&mut self, ev: WatchEvent) {
        let WatchEvent::Put {
            key,
            value,
            mod_rev,
            ..
        } = ev
        else {
            return;
        };
        let Some(id) = self.cluster.keys().node_id_of(&key) else {
            return;
        };
        if !self
            .mine
            .get(&id)
            .is_some_and(|m| m.phase == Phase::Running)
        {
            return;
        }
        match decode::<HeartbeatRecord>(&value) {
            Ok(hb) => {
                let _ = self.sup.cast(SupervisorMsg::Forward(
                    id,
                    NodeMsg::Heartbeat(Box::new(hb), mod_rev),
                ));
            }
            Err(e) => tracing::warn!(node = %id, error = %e, "unreadable heartbeat record ignored"),
        }
    }

    fn on_config(&mut self, ev: WatchEvent) {
        let policy_key = self.cluster.remediation_policy_key();
        match ev {
            WatchEvent::Put { key, value, .. } if key == policy_key.as_bytes() => {
                match decode::<RemediationPolicy>(&value) {
                    Ok(p) => self.set_policy(p),
                    Err(e) => {
                        tracing::error!(error = %e, "the new remediation policy is unreadable; remediation is off");
                        self.set_policy(RemediationPolicy::default());
                    }
                }
            }
            WatchEvent::Delete { key, .. } if key == policy_key.as_bytes() => {
                self.set_policy(RemediationPolicy::default())
            }
            _ => {}
        }
    }

    /// A new policy: every node actor here looks at remediation again.
    fn set_policy(&mut self, policy: RemediationPolicy) {
        if **self.policy.borrow() == policy {
            return;
        }
        tracing::info!(rules = policy.rules.len(), "remediation policy");
        self.policy.send_replace(Arc::new(policy));
        for (id, m) in &self.mine {
            if m.phase == Phase::Running {
                let _ = self
                    .sup
                    .cast(SupervisorMsg::Forward(*id, NodeMsg::Remediate));
            }
        }
    }

    fn on_reservation(&mut self, ev: WatchEvent) {
        let lease_id = self.lease.as_ref().map_or(0, |l| l.id);
        let rev = match &ev {
            WatchEvent::Put { mod_rev, .. } | WatchEvent::Delete { mod_rev, .. } => *mod_rev,
        };
        self.reservations_seen = self.reservations_seen.max(rev);
        match ev {
            WatchEvent::Put {
                key,
                create_rev,
                lease,
                ..
            } => {
                let Some(id) = self.cluster.keys().node_id_of(&key) else {
                    return;
                };
                if self.mine.get(&id).is_some_and(|m| m.token.0 == create_rev) {
                    return;
                }
                if lease == lease_id {
                    // Our own batch: its reply (with the records read in the same Txn) is on its
                    // way, or was lost, in which case the retry finds it held by our lease.
                    if !self.mine.contains_key(&id) && !self.acquiring.contains(&id) {
                        self.adopt(id, FenceToken(create_rev));
                    }
                    return;
                }
                self.others.insert(id, create_rev);
            }
            WatchEvent::Delete { key, mod_rev } => {
                let Some(id) = self.cluster.keys().node_id_of(&key) else {
                    return;
                };
                if self.mine.get(&id).is_some_and(|m| mod_rev > m.token.0) {
                    self.lost(id);
                }
                if self.others.get(&id).is_some_and(|rev| mod_rev >= *rev) {
                    self.others.remove(&id);
                }
                self.dirty.insert(id);
            }
        }
    }
}

async fn forward_watch(kind: Kind, mut watch: PrefixWatch, tx: mpsc::Sender<Input>) {
    loop {
        let batch = watch.next().await;
        let stop = batch.is_err();
        if tx.send(Input::Watch(kind, batch)).await.is_err() || stop {
            return;
        }
    }
}

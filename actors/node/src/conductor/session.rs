//! One membership session, as long as one lease: registration, the snapshot read and the
//! watches of `conductors/`, `nodes/`, `buckets/`, `delegations/`, `reservations/`,
//! `heartbeats/` and `config/`, and the event loop that turns what etcd and the supervisor say
//! into inputs of the three ownership tables and executes their effects. Decisions live in the
//! tables:
//! - `buckets` (an [`Ownership`] of buckets): which buckets this conductor holds;
//! - `bnodes` ([`BucketNodes`]): the nodes of those buckets, run here or handed on;
//! - `delegated` (an [`Ownership`] of nodes): the nodes other buckets' holders handed on to
//!   this conductor, each on a reservation of its own.

use super::bucket_nodes::{BucketNodes, NodeEffect};
use super::ownership::{
    join_grace, older_members, Acquire, AllBuckets, Delegations, Effect, HeldKey, Ownership,
    Reservation,
};
use super::reads::{Batch, QueuedRead, ReadKind, ReadQueue};
use super::standby::{OpenWatch, Standby};
use super::ConductorConfig;
use crate::decide::sync::SyncSettings;
use crate::node_actor::{real_bmcs, Consoles, Initial, NodeArgs, NodeCtx, NodeMsg, SyncCtx};
use crate::store::EtcdStore;
use crate::supervisor::{NodeEvent, SupervisorMsg};
use ferric_cluster::buckets::{BucketOutcome, BucketRecords, BucketRest, Delegate, RawRecords};
use ferric_cluster::snapshot::placement_of;
use ferric_cluster::{
    AcquireOutcome, BucketNews, BucketWatchEvents, BucketWatches, Cluster, ClusterError,
    LeaseKeeper, LeaseState, OwnershipSnapshot, PrefixWatch, StatusWriter, WatchEvent, WatchLost,
};
use ferric_model::HeartbeatRecord;
use ferric_model::{
    decode, now_ms, Bucket, ConductorRecord, DelegationRecord, FenceToken, NodeId, NodeSpec,
    RemediationPolicy, SyncConfig, SyncReport,
};
use ractor::ActorRef;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long the nodes of a failed reservation batch wait before they are tried again.
const RETRY_FAILED_BATCH: Duration = Duration::from_secs(1);

/// Reads of the warm standby's specs in flight at once (they give way to takeover reads), each
/// of as many buckets as a takeover read.
const STANDBY_FILLS_IN_FLIGHT: usize = 2;
/// How long after a membership change the standby waits before it reads (a third of it after
/// this conductor's own last takeover read). A million nodes' takeover reads take about 2 s on
/// two cores; the standby's reads after a failover are about twice as many keys, and running
/// them meanwhile made the failover's reads as slow as reading the specs too.
const STANDBY_QUIET: Duration = Duration::from_secs(3);
/// How long a takeover waits for the standby's status watch to deliver its acquisition before
/// it reads the statuses instead. A watch delivers or ends; this covers one that etcd refused to
/// create without saying which (an answer with no watch id), and a watch stalled for long.
const MARKER_WAIT: Duration = Duration::from_secs(3);
/// The least time between two reports of running actors, but for the one that completes a wave.
const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// Bucket reads sent since none was pending: logged as one line when the last answers.
#[derive(Debug)]
struct ReadWave {
    since: Instant,
    buckets: usize,
    nodes: usize,
}

/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
    Shutdown,
    Lost(String),
    Failed(ClusterError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conductors,
    Nodes,
    Buckets,
    Delegations,
    Reservations,
    Heartbeats,
    Config,
}

type BucketResult = Result<Vec<(Bucket, BucketOutcome)>, ClusterError>;

enum Input {
    Watch(Kind, Result<Vec<WatchEvent>, WatchLost>),
    Acquired(
        Vec<NodeId>,
        Result<Vec<(NodeId, AcquireOutcome)>, ClusterError>,
    ),
    Released(Vec<(NodeId, FenceToken)>, Result<usize, ClusterError>),
    /// The nodes of a failed reservation batch, a moment later: try them again.
    Retry(Vec<NodeId>),
    BucketsAcquired(Vec<Bucket>, BucketResult),
    BucketsReleased(Vec<(Bucket, FenceToken)>, Result<usize, ClusterError>),
    RetryBuckets(Vec<Bucket>),
    /// Buckets' records, one per read of the batch.
    BucketsRead(Vec<QueuedRead>, Result<Vec<BucketRecords>, ClusterError>),
    /// Buckets' statuses (`true`; `false`: the standby has them), delegations and
    /// reservations, for a takeover with the specs of the warm standby.
    BucketRestsRead(Vec<QueuedRead>, bool, Result<Vec<BucketRest>, ClusterError>),
    /// Read buckets again, a moment after a failed read.
    RetryReads(Vec<QueuedRead>),
    /// A takeover has waited [`MARKER_WAIT`] for its bucket's status marker.
    MarkerLate(Bucket, FenceToken),
    /// A warm standby's read of buckets' specs and statuses.
    StandbyFilled(
        Vec<Bucket>,
        Result<(i64, Vec<(RawRecords, RawRecords)>), ClusterError>,
    ),
    /// News of the warm standby's status watches.
    StatusNews(Result<BucketNews, WatchLost>),
    Delegated(Vec<Delegate>, Result<(i64, Vec<bool>), ClusterError>),
    Reported(u64, SyncReport, Result<bool, ClusterError>),
    /// The sweeper asks for the nodes to read in its next sweep.
    SweepList(tokio::sync::oneshot::Sender<Vec<NodeId>>),
}

pub(super) struct Session<'a> {
    cluster: &'a Cluster,
    cfg: &'a ConductorConfig,
    sup: &'a ActorRef<SupervisorMsg>,
    writer: &'a StatusWriter,
    pub(super) lease: Option<LeaseKeeper>,
    ctx: Option<Arc<NodeCtx>>,
    /// The buckets this conductor holds.
    buckets: Ownership<Bucket, AllBuckets>,
    /// The nodes of those buckets.
    bnodes: BucketNodes,
    /// The nodes handed on to this conductor.
    delegated: Ownership<NodeId, Delegations>,
    /// Live members of an older build (see [`older_members`]): while there are any, this
    /// conductor holds nothing.
    older: Vec<String>,
    /// What bucket reads found of nodes not started yet, for their actors.
    initials: HashMap<NodeId, Initial>,
    /// Nodes created after this conductor held their bucket, with the bucket's token then: only
    /// this conductor can have written anything of theirs under it, so when they start under
    /// the same token the deliverer has no events to read (`OwnershipHook::owned_fresh`).
    fresh: HashMap<NodeId, FenceToken>,
    /// Bucket reads waiting to be sent, in batches.
    read_queue: ReadQueue,
    /// The specs of the buckets this conductor would take over if their holder died.
    standby: Standby,
    /// The members the standby's buckets were chosen among.
    standby_members: Vec<String>,
    /// Standby reads wait until then: a while after membership changed, when other conductors
    /// may be reading the buckets they took (a standby read then only slows their takeovers).
    standby_quiet_from: Instant,
    /// The standby's status watches (one stream, opened with the first), and those to open.
    status_watches: Option<BucketWatches>,
    watch_opens: Vec<OpenWatch>,
    /// Takeovers whose delegations and reservations are read, waiting for the standby's status
    /// watch to deliver their acquisition (the bucket's marker).
    awaiting: HashMap<Bucket, (FenceToken, BucketRest)>,
    /// Buckets taken over with the standby's specs: the revision their statuses were read
    /// at. A node created at or below it (and after the specs' revision) may have a status
    /// the old holder wrote, so it does not start as freshly enrolled.
    status_revs: HashMap<Bucket, i64>,
    /// Bucket reads sent and not answered yet, and the wave they belong to (logged when the
    /// last answers: how long taking buckets took to read, which is most of a takeover).
    reads_pending: usize,
    read_wave: Option<ReadWave>,
    /// Spec changes of nodes whose reservation is in flight (see [`LateSpecs`]).
    late_specs: LateSpecs,
    /// A watch was lost and re-reading failed: when to try again (until it works or the lease
    /// fences us). An instant, not a fresh sleep per loop: the loop wakes for every input, and
    /// a 500 ms sleep created anew each time never fired on a busy conductor, which then stayed
    /// blind to membership and specs for good (found by `ferric chaos`).
    resync_at: Option<Instant>,
    /// The last keepalive acknowledged is older than a few keepalive intervals: etcd is
    /// loaded, and this conductor's reservations go one batch at a time.
    strained: bool,
    /// etcd refused or did not answer the last keepalive: no new reservation batches.
    behind: bool,
    /// This conductor's membership record, for reporting `running`.
    record: Option<ConductorRecord>,
    reported: u64,
    reported_sync: SyncReport,
    report_in_flight: bool,
    last_report: Instant,
    /// Whether the last report was made while actors were still starting (a wave in progress).
    reported_unsteady: bool,
    /// A report held back by the interval between reports is due then.
    report_at: Option<Instant>,
    inputs_tx: mpsc::Sender<Input>,
    inputs: mpsc::Receiver<Input>,
    watch_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The remediation policy (`config/remediation`), shared with the node actors.
    policy: watch::Sender<Arc<RemediationPolicy>>,
    /// The power sync settings (`config/sync`), shared with the node actors.
    sync_config: watch::Sender<Arc<SyncConfig>>,
    /// This session's power sync sweeps.
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        for t in &self.watch_tasks {
            t.abort();
        }
        if let Some(t) = &self.sweeper {
            t.abort();
        }
    }
}

impl<'a> Session<'a> {
    pub(super) fn new(
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
            buckets: Ownership::new(
                &cfg.name,
                join_grace(cfg.ttl),
                cfg.acquire_parallel,
                ferric_cluster::reservations::BATCH,
            ),
            bnodes: BucketNodes::new(&cfg.name),
            older: Vec::new(),
            delegated: Ownership::new(
                &cfg.name,
                join_grace(cfg.ttl),
                cfg.acquire_parallel,
                ferric_cluster::reservations::BATCH,
            ),
            initials: HashMap::new(),
            fresh: HashMap::new(),
            read_queue: ReadQueue::default(),
            standby: if cfg.standby_statuses {
                Standby::default()
            } else {
                Standby::specs_only()
            },
            standby_members: Vec::new(),
            standby_quiet_from: Instant::now(),
            status_watches: None,
            watch_opens: Vec::new(),
            awaiting: HashMap::new(),
            status_revs: HashMap::new(),
            reads_pending: 0,
            read_wave: None,
            late_specs: LateSpecs::default(),
            resync_at: None,
            strained: false,
            behind: false,
            record: None,
            reported: 0,
            reported_sync: SyncReport::default(),
            report_in_flight: false,
            last_report: Instant::now(),
            reported_unsteady: false,
            report_at: None,
            inputs_tx,
            inputs,
            watch_tasks: Vec::new(),
            policy: watch::Sender::new(Arc::new(RemediationPolicy::default())),
            sync_config: watch::Sender::new(Arc::new(SyncConfig::default())),
            sweeper: None,
        }
    }

    /// Whether the session got as far as granting a lease and building the node actors' context.
    pub(super) fn started(&self) -> bool {
        self.ctx.is_some()
    }

    pub(super) async fn run(
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
        let mut behind_rx = lease.behind();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
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
            let hold_until = self.buckets.hold_until();
            tokio::select! {
                _ = shutdown.changed() => return End::Shutdown,
                _ = lease_rx.changed() => continue,
                // Read below, before every decision (a busy loop may not come here for a while).
                Ok(()) = behind_rx.changed() => {}
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
                _ = tick.tick() => {
                    ticks += 1;
                    self.buckets.sweep_tick(ticks);
                    self.delegated.sweep_tick(ticks);
                }
                _ = tokio::time::sleep_until(self.resync_at.unwrap_or_else(Instant::now)), if self.resync_at.is_some() => {
                    self.try_resync().await;
                }
                _ = tokio::time::sleep_until(self.report_at.unwrap_or_else(Instant::now)), if self.report_at.is_some() => {}
                _ = tokio::time::sleep_until(hold_until.unwrap_or_else(Instant::now)), if hold_until.is_some() => {
                    self.buckets.grace_elapsed(Instant::now());
                    self.delegated.grace_elapsed(Instant::now());
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
            let behind = *behind_rx.borrow_and_update();
            if behind != self.behind {
                self.behind = behind;
                if behind {
                    tracing::warn!("etcd refused or did not answer a keepalive: no new reservation batches until it answers one");
                }
                let fx = self.buckets.set_etcd_behind(behind);
                self.execute_buckets(fx);
                let fx = self.delegated.set_etcd_behind(behind);
                self.execute(fx, &mut HashMap::new());
            }
            let strained = etcd_strained(&lease_rx.borrow(), self.cfg.ttl, Instant::now());
            if strained != self.strained {
                self.strained = strained;
                if strained {
                    tracing::warn!(
                        "keepalives are slow to be acknowledged: acquiring one batch at a time"
                    );
                }
                let fx = self.buckets.set_etcd_strained(strained);
                self.execute_buckets(fx);
                let fx = self.delegated.set_etcd_strained(strained);
                self.execute(fx, &mut HashMap::new());
            }
            let fx = self.buckets.decide();
            self.execute_buckets(fx);
            let fx = self.bnodes.decide();
            self.execute_nodes(fx);
            let fx = self.delegated.decide();
            self.execute(fx, &mut HashMap::new());
            self.send_reads();
            self.fill_standby();
            self.flush_status_watches().await;
            self.report();
        }
    }

    /// Runs `work` on its own task and hands its answer to the event loop.
    fn spawn_input(&self, work: impl std::future::Future<Output = Input> + Send + 'static) {
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(work.await).await;
        });
    }

    /// Hands `input` to the loop a moment from now (a failed etcd call tried again without
    /// asking an unreachable etcd in a tight loop).
    fn later(&self, input: Input) {
        self.spawn_input(async move {
            tokio::time::sleep(RETRY_FAILED_BATCH).await;
            input
        });
    }

    /// Carries out the bucket table's effects.
    fn execute_buckets(&mut self, fx: Vec<Effect<Bucket>>) {
        let lease = self.lease.as_ref().map_or(0, |l| l.id);
        for effect in fx {
            match effect {
                Effect::Start { id, token } => {
                    let fx = self.bnodes.bucket_started(id, token);
                    self.execute_nodes(fx);
                }
                Effect::Stop(buckets) => {
                    let fx = self.bnodes.bucket_stop(&buckets);
                    self.execute_nodes(fx);
                }
                Effect::Acquire(batch) => {
                    let (cluster, name) = (self.cluster.clone(), self.cfg.name.clone());
                    self.spawn_input(async move {
                        let result = cluster.acquire_buckets(&batch, lease, &name).await;
                        Input::BucketsAcquired(batch, result)
                    });
                }
                Effect::Release(batch) => {
                    let cluster = self.cluster.clone();
                    self.spawn_input(async move {
                        let result = cluster.release_buckets(&batch).await;
                        Input::BucketsReleased(batch, result)
                    });
                }
            }
        }
    }

    /// Carries out the bucket nodes' effects.
    fn execute_nodes(&mut self, fx: Vec<NodeEffect>) {
        for effect in fx {
            match effect {
                NodeEffect::Read(bucket, token) => self.read_bucket(bucket, token, false),
                NodeEffect::Start { id, token } => {
                    let Some(ctx) = self.ctx.clone() else {
                        continue;
                    };
                    let initial = self.initials.remove(&id);
                    if self.fresh.remove(&id) == Some(token) {
                        // Told before the start, so that the deliverer has the node before its
                        // actor can write an event (an event written before the deliverer knew
                        // the node is left to a read of etcd, which a fresh node skips).
                        if let Some(hook) = &self.cfg.ownership_hook {
                            hook.owned_fresh(id, token);
                        }
                    }
                    let _ = self.sup.cast(SupervisorMsg::Start(Box::new(NodeArgs {
                        id,
                        token,
                        initial,
                        ctx,
                        stopping: Arc::new(AtomicBool::new(false)),
                    })));
                }
                NodeEffect::Stop(ids) => {
                    let _ = self.sup.cast(SupervisorMsg::Stop(ids));
                }
                NodeEffect::Delegate(changes) => {
                    for c in &changes {
                        self.initials.remove(&c.id);
                        self.fresh.remove(&c.id);
                    }
                    let cluster = self.cluster.clone();
                    let tx = self.inputs_tx.clone();
                    tokio::spawn(async move {
                        let result = cluster.delegate(&changes).await;
                        let _ = tx.send(Input::Delegated(changes, result)).await;
                    });
                }
                NodeEffect::BucketStopped(b, token) => {
                    self.initials.retain(|id, _| Bucket::of(id) != b);
                    self.fresh.retain(|id, _| Bucket::of(id) != b);
                    self.buckets
                        .actor_stopped(b, token, crate::supervisor::REASON_RELEASED);
                }
            }
        }
    }

    /// Queues a read of a bucket's records: all of them, or, when the warm standby has the
    /// bucket's specs, the rest. Sent by [`Session::send_reads`], in batches.
    fn read_bucket(&mut self, bucket: Bucket, token: FenceToken, again: bool) {
        self.reads_pending += 1;
        self.read_wave.get_or_insert_with(|| ReadWave {
            since: Instant::now(),
            buckets: 0,
            nodes: 0,
        });
        let kind = if again || !self.standby.ready(bucket) {
            ReadKind::Whole
        } else if self.standby.caught_up(bucket, 0).is_some() {
            ReadKind::Light
        } else {
            ReadKind::Rest
        };
        self.read_queue.push(
            QueuedRead {
                bucket,
                token,
                again,
            },
            kind,
        );
    }

    /// Sends the queued bucket reads that have a free slot.
    fn send_reads(&mut self) {
        for Batch { kind, reads } in self.read_queue.next_batches() {
            let cluster = self.cluster.clone();
            let buckets: Vec<Bucket> = reads.iter().map(|r| r.bucket).collect();
            self.spawn_input(async move {
                match kind {
                    ReadKind::Whole => {
                        let result = cluster.read_buckets(&buckets).await;
                        Input::BucketsRead(reads, result)
                    }
                    ReadKind::Rest | ReadKind::Light => {
                        let statuses = kind == ReadKind::Rest;
                        let result = cluster.read_buckets_without_specs(&buckets, statuses).await;
                        Input::BucketRestsRead(reads, statuses, result)
                    }
                }
            });
        }
    }

    /// Carries out the delegated nodes' table's effects. `initials`: what reserving read of
    /// freshly acquired nodes, handed to their actors so that they need not read it again.
    fn execute(&mut self, fx: Vec<Effect<NodeId>>, initials: &mut HashMap<NodeId, Initial>) {
        let lease = self.lease.as_ref().map_or(0, |l| l.id);
        for effect in fx {
            match effect {
                Effect::Start { id, token } => {
                    let Some(ctx) = self.ctx.clone() else {
                        continue;
                    };
                    let initial = initials.remove(&id);
                    let late = self
                        .late_specs
                        .at_start(id, initial.as_ref().map(|i| i.spec_rev));
                    let _ = self.sup.cast(SupervisorMsg::Start(Box::new(NodeArgs {
                        id,
                        token,
                        initial,
                        ctx,
                        stopping: Arc::new(AtomicBool::new(false)),
                    })));
                    if let Some(rev) = late {
                        // After the Start in the supervisor's mailbox: the new actor reads it.
                        let _ = self
                            .sup
                            .cast(SupervisorMsg::Forward(id, NodeMsg::SpecAt(rev)));
                    }
                }
                Effect::Stop(ids) => {
                    let _ = self.sup.cast(SupervisorMsg::Stop(ids));
                }
                Effect::Acquire(batch) => {
                    let (cluster, name) = (self.cluster.clone(), self.cfg.name.clone());
                    self.spawn_input(async move {
                        let result = cluster.acquire(&batch, lease, &name).await;
                        Input::Acquired(batch, result)
                    });
                }
                Effect::Release(batch) => {
                    let cluster = self.cluster.clone();
                    self.spawn_input(async move {
                        let result = cluster.release(&batch).await;
                        Input::Released(batch, result)
                    });
                }
            }
        }
    }

    /// Publishes how many node actors run here in the membership record: at once when a wave
    /// (a failover or start-up) is complete, i.e. every reserved node runs and the last report
    /// was made while actors were still starting; otherwise at most every 250 ms. Every
    /// record write goes to every conductor's and gateway's watch: nodes enrolled one by one
    /// each completed a "wave" of one, and reporting each at once rewrote the record about 90
    /// times a second per conductor during an enrollment (0.3 puts and 1.2 watch events per
    /// enrolled node).
    fn report(&mut self) {
        let running = self.bnodes.running() + self.delegated.running();
        let m = &crate::metrics::NODES;
        m.actors.set(running as i64);
        m.reservations
            .set((self.bnodes.held() + self.delegated.held()) as i64);
        let sync = self.sync_report();
        let sync_due =
            sync != self.reported_sync && self.last_report.elapsed() >= Duration::from_secs(5);
        if (running == self.reported && !sync_due) || self.report_in_flight {
            // A report in flight is followed by its answer, which calls this again.
            self.report_at = None;
            return;
        }
        let steady = self.buckets.steady() && self.bnodes.steady() && self.delegated.steady();
        let wave_done = steady && self.reported_unsteady;
        let due = self.last_report + REPORT_INTERVAL;
        if !wave_done && !sync_due && Instant::now() < due {
            self.report_at = Some(due);
            return;
        }
        self.report_at = None;
        self.reported_unsteady = !steady;
        let Some(mut rec) = self.record.clone() else {
            return;
        };
        rec.running = running;
        rec.sync = sync;
        self.report_in_flight = true;
        self.last_report = Instant::now();
        let cluster = self.cluster.clone();
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            let result = cluster.update_conductor(&rec).await;
            let _ = tx.send(Input::Reported(running, sync, result)).await;
        });
    }

    /// Power sync's counters as the membership record reports them.
    fn sync_report(&self) -> SyncReport {
        use std::sync::atomic::Ordering::Relaxed;
        let o = &self.cfg.sync;
        SyncReport {
            reads: o.stats.reads.load(Relaxed),
            failed_reads: o.stats.failed_reads.load(Relaxed),
            sweeps: o.sweeps.sweeps.load(Relaxed),
            last_sweep_ms: o.sweeps.last_duration_ms.load(Relaxed),
            last_sweep_nodes: o.sweeps.last_nodes.load(Relaxed),
        }
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
            sync: Default::default(),
            hardware: self
                .cfg
                .drivers
                .iter()
                .filter_map(|d| ferric_model::interfaces::catalog(d))
                .collect(),
            buckets: true,
        };
        self.ctx = Some(Arc::new(NodeCtx {
            me: self.cfg.name.clone(),
            drivers: self.cfg.drivers.clone(),
            conductor_group: self.cfg.conductor_group.clone(),
            store: Arc::new(EtcdStore {
                cluster: self.cluster.clone(),
                writer: self.writer.clone(),
                events: self.cfg.ownership_hook.clone(),
            }),
            fence: lease.fence(),
            bmc: self.cfg.bmc.clone(),
            connect: real_bmcs(),
            callback_timeout_ms: self.cfg.callback_timeout.as_millis() as u64,
            agents: self.cfg.agents.clone(),
            remediation: self.policy.subscribe(),
            consoles: self.cfg.consoles.clone().map(|ctx| Consoles {
                ctx,
                records: Some((self.cluster.clone(), lease.id)),
            }),
            sync: SyncCtx {
                settings: SyncSettings {
                    grace_ms: self.cfg.sync.grace.as_millis() as u64,
                    max_failures: self.cfg.sync.max_failures,
                },
                failure_interval: self.cfg.sync.failure_interval,
                config: self.sync_config.subscribe(),
                stats: self.cfg.sync.stats.clone(),
            },
        }));
        self.buckets.set_lease(lease.id);
        self.delegated.set_lease(lease.id);
        self.lease = Some(lease);
        self.start_sweeps();
        self.cluster
            .register_conductor(&record, self.cfg.ttl * 3 + Duration::from_secs(2))
            .await?;
        tracing::info!(conductor = %self.cfg.name, lease = record.lease_id, "registered");
        self.record = Some(record);
        self.resync().await?;
        // The grace runs from the end of the snapshot read, so that conductors that registered
        // meanwhile are seen before placing.
        self.buckets.hold(Instant::now());
        self.delegated.hold(Instant::now());
        Ok(())
    }

    /// Starts this session's power sync sweeps (unless `--sync-interval 0`): each sweep asks
    /// the session for the nodes whose actors run here, and each node reads its power state.
    fn start_sweeps(&mut self) {
        let opts = &self.cfg.sync;
        if opts.interval.is_zero() {
            return;
        }
        let settings = ferric_sync::SweepSettings {
            interval: opts.interval,
            concurrency: opts.workers,
        };
        let inputs = self.inputs_tx.clone();
        let sup = self.sup.clone();
        let stats = opts.sweeps.clone();
        // Reads wait while etcd does not answer this session's keepalives, as reservations do.
        let pause = match &self.lease {
            Some(lease) => lease.behind(),
            None => tokio::sync::watch::channel(false).1,
        };
        self.sweeper = Some(tokio::spawn(ferric_sync::run(
            settings,
            stats,
            pause,
            move || {
                let inputs = inputs.clone();
                async move {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    inputs.send(Input::SweepList(tx)).await.ok()?;
                    rx.await.ok()
                }
            },
            move |id, permit| {
                sup.cast(SupervisorMsg::Forward(
                    id,
                    NodeMsg::Sync {
                        probe: false,
                        permit: Some(permit),
                    },
                ))
                .is_ok()
            },
        )));
    }

    /// Reads the snapshot and (re)starts the watches from just after it.
    async fn resync(&mut self) -> Result<(), ClusterError> {
        for t in self.watch_tasks.drain(..) {
            t.abort();
        }
        // The standby's status watches went with their task: their buckets are read again
        // (also when this resync fails before the snapshot, so that no takeover waits on a
        // stream nobody reads).
        if self.status_watches.take().is_some() {
            self.standby.status_watches_lost();
        }
        self.watch_opens.clear();
        self.recheck_awaiting();
        let snap = self.cluster.ownership_snapshot().await?;
        match self.cluster.remediation_policy().await {
            Ok(p) => self.set_policy(p),
            Err(e) => {
                tracing::error!(error = %e, "the remediation policy is unreadable; remediation is off")
            }
        }
        match self.cluster.sync_config().await {
            Ok(c) => self.set_sync_config(c),
            Err(e) => {
                tracing::error!(error = %e, "the power sync config is unreadable; using the defaults (observe)");
                self.set_sync_config(SyncConfig::default());
            }
        }
        let revision = snap.revision;
        self.standby.invalidate(revision);
        self.recheck_awaiting();
        let delegated: Vec<NodeId> = self.delegated.running_ids().collect();
        self.resync_tables(snap);
        // The watches restart after the snapshot: a spec changed while they were down (an
        // intent the gateway accepted) reaches a running actor only if it looks again. The
        // held buckets are read again for that, and the delegated nodes' specs.
        for (bucket, token) in self.bnodes.running_buckets() {
            self.read_bucket(bucket, token, true);
        }
        if !delegated.is_empty() {
            match self.cluster.spec_revisions(&delegated).await {
                Ok(revs) => {
                    for (id, rev) in revs {
                        if self.delegated.runs(&id) {
                            let _ = self
                                .sup
                                .cast(SupervisorMsg::Forward(id, NodeMsg::SpecAt(rev)));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let from = revision + 1;
        for (kind, prefix) in [
            (Kind::Conductors, self.cluster.keys().conductors()),
            (Kind::Nodes, self.cluster.keys().nodes()),
            (Kind::Buckets, self.cluster.keys().buckets()),
            (Kind::Delegations, self.cluster.keys().delegations()),
            (Kind::Reservations, self.cluster.keys().reservations()),
            (Kind::Heartbeats, self.cluster.keys().heartbeats()),
            (Kind::Config, self.cluster.keys().config()),
        ] {
            // Buckets and reservations: deletes only. Who took a bucket or a node matters here
            // only when this conductor wants it, and its own Txn says so (`Acquire::Held`).
            let watch = if matches!(kind, Kind::Reservations | Kind::Buckets) {
                self.cluster.watch_prefix_deletes(&prefix, from).await?
            } else {
                self.cluster.watch_prefix(&prefix, from).await?
            };
            self.watch_tasks.push(tokio::spawn(forward_watch(
                kind,
                watch,
                self.inputs_tx.clone(),
            )));
        }
        tracing::info!(
            revision,
            conductors = self.buckets.members(),
            delegated = self.delegated.nodes(),
            "cluster snapshot read"
        );
        Ok(())
    }

    /// Membership changed: the bucket table's members go to the nodes table, and a change of
    /// the live members of an older build is logged (they are why this conductor holds nothing).
    fn members_changed(&mut self) {
        let members = self.buckets.member_map();
        self.bnodes.set_members(members);
        let older: Vec<String> = older_members(members)
            .into_iter()
            .map(str::to_string)
            .collect();
        if older != self.older {
            if older.is_empty() {
                tracing::info!(
                    "no conductor of an older build is live any more: taking this conductor's buckets"
                );
            } else {
                tracing::warn!(
                    older = ?older,
                    "conductors of an older build are live (they reserve nodes one by one): this \
                     conductor holds no nodes until the last of them has stopped"
                );
            }
            self.older = older;
        }
        self.standby_members_changed();
    }

    /// Hands a snapshot to the tables.
    fn resync_tables(&mut self, snap: OwnershipSnapshot) {
        let me = self.cfg.name.clone();
        let buckets_held = snap
            .buckets
            .iter()
            .map(|(b, create_rev, lease)| HeldKey {
                id: *b,
                create_rev: *create_rev,
                lease: *lease,
            })
            .collect();
        let fx = self
            .buckets
            .resync(snap.conductors.clone(), AllBuckets, buckets_held);
        self.members_changed();
        self.execute_buckets(fx);
        let mut to_me = Delegations::default();
        for (id, to) in &snap.delegations {
            to_me.set(*id, to.as_deref() == Ok(me.as_str()));
        }
        let held = snap
            .reservations
            .iter()
            .map(|r| HeldKey {
                id: r.id,
                create_rev: r.create_rev,
                lease: r.lease,
            })
            .collect();
        let fx = self.delegated.resync(snap.conductors, to_me, held);
        self.execute(fx, &mut HashMap::new());
    }

    /// Whether `id`'s actor runs here (through its bucket or a delegation).
    fn runs(&self, id: &NodeId) -> bool {
        self.bnodes.runs(id) || self.delegated.runs(id)
    }

    /// Every node whose actor runs here.
    fn running_ids(&self) -> Vec<NodeId> {
        self.bnodes
            .running_ids()
            .chain(self.delegated.running_ids())
            .collect()
    }

    /// Re-reads the cluster after a lost watch. While etcd is unreachable the node actors keep
    /// running until the lease's self-fencing deadline, which ends the session if etcd does not
    /// come back in time: a short etcd blip does not stop every node.
    async fn try_resync(&mut self) {
        for t in self.watch_tasks.drain(..) {
            t.abort();
        }
        match self.resync().await {
            Ok(()) => self.resync_at = None,
            Err(e) => {
                if self.resync_at.is_none() {
                    tracing::warn!(error = %e, "cannot re-read the cluster; retrying until the lease deadline");
                }
                self.resync_at = Some(Instant::now() + Duration::from_millis(500));
            }
        }
    }

    fn on_node_event(&mut self, ev: NodeEvent) {
        match ev {
            NodeEvent::Started { id, token } => {
                // (A node started fresh was announced before its start: this repeats it.)
                if let Some(hook) = &self.cfg.ownership_hook {
                    hook.owned(id, token);
                }
                if token.is_bucket() {
                    self.bnodes.actor_started(id, token)
                } else {
                    self.delegated.actor_started(id, token)
                }
            }
            NodeEvent::Stopped { id, token, reason } => {
                if let Some(hook) = &self.cfg.ownership_hook {
                    hook.released(id, token);
                }
                if token.is_bucket() {
                    let fx = self.bnodes.actor_stopped(id, token, &reason);
                    self.execute_nodes(fx);
                } else {
                    self.delegated.actor_stopped(id, token, &reason)
                }
            }
        }
    }

    async fn on_input(&mut self, input: Input) -> Result<(), End> {
        match input {
            Input::Acquired(batch, result) => {
                let mut initials = HashMap::new();
                let outcomes = match result {
                    Ok(outcomes) => Some(
                        outcomes
                            .into_iter()
                            .map(|(id, outcome)| (id, table_outcome(id, outcome, &mut initials)))
                            .collect(),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, count = batch.len(), "reservation batch failed; retrying in a moment");
                        self.later(Input::Retry(batch.clone()));
                        None
                    }
                };
                let fx = self.delegated.acquired(&batch, outcomes);
                self.execute(fx, &mut initials);
                self.late_specs.forget(&batch);
            }
            Input::Retry(ids) => self.delegated.retry(ids),
            Input::BucketsAcquired(batch, result) => {
                let outcomes = match result {
                    Ok(outcomes) => Some(
                        outcomes
                            .into_iter()
                            .map(|(b, outcome)| (b, bucket_outcome(outcome)))
                            .collect(),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, count = batch.len(), "bucket batch failed; retrying in a moment");
                        self.later(Input::RetryBuckets(batch.clone()));
                        None
                    }
                };
                let fx = self.buckets.acquired(&batch, outcomes);
                self.execute_buckets(fx);
            }
            Input::RetryBuckets(ids) => self.buckets.retry(ids),
            Input::BucketsReleased(batch, result) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, count = batch.len(), "releasing buckets failed; retrying");
                    self.buckets.release_failed(batch);
                }
            }
            Input::BucketsRead(reads, result) => match result {
                Ok(records) => {
                    let nodes = records.iter().map(|r| r.nodes.len()).sum();
                    self.read_queue.done(reads.len(), nodes);
                    for (read, records) in reads.into_iter().zip(records) {
                        if !read.again {
                            crate::metrics::NODES
                                .takeover_reads
                                .get_or_create(&crate::metrics::KindLabel { kind: "full" })
                                .inc();
                        }
                        self.on_bucket_read(read.bucket, read.token, read.again, records);
                    }
                }
                Err(e) => self.read_failed(reads, e),
            },
            Input::BucketRestsRead(reads, statuses, result) => match result {
                Ok(rests) => {
                    if statuses {
                        let nodes = rests.iter().map(|r| r.statuses.len()).sum();
                        self.read_queue.done(reads.len(), nodes);
                    } else {
                        // No nodes' records: nothing to learn of buckets' sizes.
                        self.read_queue.done(0, 0);
                    }
                    for (read, rest) in reads.into_iter().zip(rests) {
                        if statuses {
                            self.on_bucket_rest_read(read.bucket, read.token, rest, None);
                        } else {
                            self.on_bucket_light_read(read.bucket, read.token, rest);
                        }
                    }
                }
                Err(e) => self.read_failed(reads, e),
            },
            Input::RetryReads(reads) => {
                for r in reads {
                    if self.bnodes.wants_read(r.bucket, r.token, r.again) {
                        self.read_bucket(r.bucket, r.token, r.again);
                    }
                }
            }
            Input::StandbyFilled(buckets, result) => {
                match result {
                    Ok((rev, read)) => {
                        let nodes = read.iter().map(|(specs, _)| specs.len()).sum();
                        self.read_queue.observed(buckets.len(), nodes);
                        for (bucket, (specs, statuses)) in buckets.into_iter().zip(read) {
                            let open = self.standby.filled(bucket, Some((rev, specs, statuses)));
                            self.watch_opens.extend(open);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(buckets = buckets.len(), error = %e, "reading buckets' specs for the warm standby failed; reading them again later");
                        for bucket in buckets {
                            self.standby.filled(bucket, None);
                        }
                    }
                }
                self.standby_metrics();
            }
            Input::StatusNews(news) => self.on_status_news(news),
            Input::MarkerLate(bucket, token) => {
                if self.awaiting.get(&bucket).is_some_and(|(t, _)| *t == token) {
                    tracing::warn!(%bucket, "the warm standby's status watch has not delivered the bucket's acquisition in time; reading its statuses");
                    self.standby.drop_statuses(bucket);
                    self.try_complete(bucket);
                }
            }
            Input::Delegated(changes, result) => {
                let (rev, made) = match result {
                    Ok((rev, made)) => (rev, Some(made)),
                    Err(e) => {
                        tracing::warn!(error = %e, count = changes.len(), "delegation changes failed; looking again");
                        (0, None)
                    }
                };
                let fx = self.bnodes.delegated(&changes, made, rev);
                self.execute_nodes(fx);
            }
            Input::SweepList(reply) => {
                let _ = reply.send(self.running_ids());
            }
            Input::Reported(running, sync, result) => {
                self.report_in_flight = false;
                match result {
                    Ok(true) => {
                        self.reported = running;
                        self.reported_sync = sync;
                    }
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
                    self.delegated.release_failed(batch);
                }
            }
            Input::Watch(kind, Err(lost)) => {
                tracing::warn!(?kind, error = %lost, "watch lost; re-reading the cluster");
                self.try_resync().await;
            }
            Input::Watch(kind, Ok(events)) => {
                // A watch response holds whole revisions: after it, everything up to its last
                // event's revision has been seen.
                let last = events.last().map(WatchEvent::mod_rev);
                for ev in events {
                    match kind {
                        Kind::Conductors => self.on_conductor(ev)?,
                        Kind::Nodes => self.on_node(ev),
                        Kind::Buckets => self.on_bucket(ev),
                        Kind::Delegations => self.on_delegation(ev),
                        Kind::Reservations => self.on_reservation(ev),
                        Kind::Heartbeats => self.on_heartbeat(ev),
                        Kind::Config => self.on_config(ev),
                    }
                }
                if let (Kind::Nodes, Some(rev)) = (kind, last) {
                    self.standby.watched(rev);
                }
            }
        }
        Ok(())
    }

    fn on_conductor(&mut self, ev: WatchEvent) -> Result<(), End> {
        match ev {
            WatchEvent::Put { key, value, .. } => match decode::<ConductorRecord>(&value) {
                Ok(rec) => {
                    let now = Instant::now();
                    // Another conductor starting or stopping node actors is taking or handing
                    // over nodes (a start-up, a takeover, a rebalance, an enrollment): the
                    // standby's reads wait for it.
                    let running_before =
                        self.buckets.member_map().get(&rec.name).map(|r| r.running);
                    if rec.name != self.cfg.name && running_before != Some(rec.running) {
                        self.standby_quiet_from =
                            self.standby_quiet_from.max(now + STANDBY_QUIET / 3);
                    }
                    self.buckets.conductor_put(rec.clone(), now);
                    self.delegated.conductor_put(rec, now);
                    self.members_changed();
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
                self.buckets.conductor_left(&name);
                self.delegated.conductor_left(&name);
                self.members_changed();
            }
        }
        Ok(())
    }

    fn on_node(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put {
                key,
                value,
                create_rev,
                mod_rev,
                ..
            } => {
                let Some(id) = self.cluster.keys().node_id_of(&key) else {
                    return;
                };
                self.standby.node(id, Some(&value), mod_rev);
                let taken = self.bnodes.node_put(id, placement_of(&value), mod_rev);
                // A newer spec than a pending start read: the actor reads its own.
                if self.initials.get(&id).is_some_and(|i| i.spec_rev < mod_rev) {
                    self.initials.remove(&id);
                }
                let after_status_read = self
                    .status_revs
                    .get(&Bucket::of(&id))
                    .is_none_or(|r| create_rev > *r);
                if taken && create_rev == mod_rev && !self.bnodes.runs(&id) && after_status_read {
                    // A node enrolled just now in a bucket held here: its actor starts from the
                    // watch's record instead of reading etcd (a read per enrolled node, one at
                    // a time in the supervisor). etcd has no status for it: a status write
                    // needs the spec to exist and the bucket's fence, which is this
                    // conductor's since before the node was created, and a node's delete takes
                    // its status with it.
                    if let Some(token) = self.bnodes.held_token(Bucket::of(&id)) {
                        self.fresh.insert(id, token);
                    }
                    if let Ok(spec) = decode::<NodeSpec>(&value) {
                        self.initials.entry(id).or_insert(Initial {
                            spec: Ok(spec),
                            spec_rev: mod_rev,
                            status: Some(Ok(ferric_model::NodeStatus::default())),
                            hb_seen: 0,
                        });
                    }
                }
                if self.delegated.is_acquiring(&id) {
                    self.late_specs.seen(id, mod_rev);
                }
                if self.runs(&id) {
                    let msg = match decode::<NodeSpec>(&value) {
                        Ok(spec) => NodeMsg::Spec(Box::new(spec), mod_rev),
                        Err(e) => NodeMsg::SpecUnreadable(e.to_string(), mod_rev),
                    };
                    let _ = self.sup.cast(SupervisorMsg::Forward(id, msg));
                }
            }
            WatchEvent::Delete { key, mod_rev } => {
                let Some(id) = self.cluster.keys().node_id_of(&key) else {
                    return;
                };
                self.initials.remove(&id);
                self.fresh.remove(&id);
                self.standby.node(id, None, mod_rev);
                let fx = self.bnodes.node_deleted(id, mod_rev);
                self.execute_nodes(fx);
                self.delegated.units_mut().set(id, false);
                self.delegated.touch(id);
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
        if !self.runs(&id) {
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
        let sync_key = self.cluster.keys().sync_config();
        match ev {
            WatchEvent::Put { key, value, .. } if key == sync_key.as_bytes() => {
                match decode::<SyncConfig>(&value) {
                    Ok(c) => self.set_sync_config(c),
                    Err(e) => {
                        tracing::error!(error = %e, "the new power sync config is unreadable; using the defaults (observe)");
                        self.set_sync_config(SyncConfig::default());
                    }
                }
            }
            WatchEvent::Delete { key, .. } if key == sync_key.as_bytes() => {
                self.set_sync_config(SyncConfig::default())
            }
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
    fn set_sync_config(&mut self, config: SyncConfig) {
        if **self.sync_config.borrow() != config {
            tracing::info!(policy = %config.policy, "power sync config");
            self.sync_config.send_replace(Arc::new(config));
        }
    }

    fn set_policy(&mut self, policy: RemediationPolicy) {
        if **self.policy.borrow() == policy {
            return;
        }
        tracing::info!(rules = policy.rules.len(), "remediation policy");
        self.policy.send_replace(Arc::new(policy));
        for id in self.running_ids() {
            let _ = self
                .sup
                .cast(SupervisorMsg::Forward(id, NodeMsg::Remediate));
        }
    }

    /// A bucket key was deleted (its holder let it go, or its lease ended).
    fn on_bucket(&mut self, ev: WatchEvent) {
        let (key, mod_rev, change) = match ev {
            WatchEvent::Put {
                key,
                create_rev,
                mod_rev,
                lease,
                ..
            } => (key, mod_rev, Reservation::Put { create_rev, lease }),
            WatchEvent::Delete { key, mod_rev } => (key, mod_rev, Reservation::Delete),
        };
        let bucket = self.cluster.keys().leaf_of(&key).and_then(Bucket::parse);
        let fx = self.buckets.reservation(bucket, mod_rev, change);
        self.execute_buckets(fx);
    }

    /// A delegation was written or deleted: the delegated nodes' table follows those that name
    /// this conductor.
    fn on_delegation(&mut self, ev: WatchEvent) {
        let (key, to_me) = match ev {
            WatchEvent::Put { key, value, .. } => {
                let to_me =
                    decode::<DelegationRecord>(&value).is_ok_and(|d| d.conductor == self.cfg.name);
                (key, to_me)
            }
            WatchEvent::Delete { key, .. } => (key, false),
        };
        let Some(id) = self.cluster.keys().node_id_of(&key) else {
            return;
        };
        self.delegated.units_mut().set(id, to_me);
        self.delegated.touch(id);
    }

    /// A bucket read was answered (`nodes` read) or failed (None): one fewer pending, and the
    /// wave's line logged when it was the last.
    fn read_answered(&mut self, nodes: Option<usize>) {
        self.reads_pending = self.reads_pending.saturating_sub(1);
        if let (Some(n), Some(w)) = (nodes, self.read_wave.as_mut()) {
            w.buckets += 1;
            w.nodes += n;
        }
        if self.reads_pending == 0 {
            self.standby_quiet_from = self
                .standby_quiet_from
                .max(Instant::now() + STANDBY_QUIET / 3);
            if let Some(w) = self.read_wave.take() {
                tracing::info!(
                    buckets = w.buckets,
                    nodes = w.nodes,
                    ms = w.since.elapsed().as_millis() as u64,
                    "buckets read"
                );
            }
        }
    }

    /// A batch of bucket reads failed: each is tried again in a moment.
    fn read_failed(&mut self, reads: Vec<QueuedRead>, e: ClusterError) {
        self.read_queue.done(0, 0);
        tracing::warn!(buckets = reads.len(), error = %e, "reading buckets failed; reading them again in a moment");
        for _ in &reads {
            self.read_answered(None);
        }
        self.later(Input::RetryReads(reads));
    }

    /// A bucket's records came back.
    fn on_bucket_read(
        &mut self,
        bucket: Bucket,
        token: FenceToken,
        again: bool,
        records: BucketRecords,
    ) {
        self.read_answered(Some(records.nodes.len()));
        let placements = records
            .nodes
            .iter()
            .map(|n| {
                let placement = match &n.spec {
                    Ok(spec) => Ok((spec.driver.clone(), spec.conductor_group.clone())),
                    Err(e) => Err(e.to_string()),
                };
                (n.id, placement)
            })
            .collect();
        let fx = if again {
            // The watch may have missed changes while it was down: running actors look again.
            for n in &records.nodes {
                if self.bnodes.runs(&n.id) {
                    let _ = self
                        .sup
                        .cast(SupervisorMsg::Forward(n.id, NodeMsg::SpecAt(n.spec_rev)));
                }
            }
            self.bnodes
                .bucket_reread(bucket, token, records.revision, placements)
        } else {
            if records.status_revision != records.revision {
                self.status_revs.insert(bucket, records.status_revision);
            } else {
                self.status_revs.remove(&bucket);
            }
            let handed: HashSet<NodeId> = records.delegations.iter().map(|(id, _)| *id).collect();
            // Nodes changed after the read (news the watch brought while it was in flight)
            // start by reading their own records.
            let overtaken: HashSet<NodeId> = records
                .nodes
                .iter()
                .filter(|n| self.bnodes.overtaken(&n.id, records.revision))
                .map(|n| n.id)
                .collect();
            let fx = self.bnodes.bucket_read(
                bucket,
                token,
                records.revision,
                placements,
                records.delegations,
            );
            if self.bnodes.is_running(bucket, token) {
                // A bucket "runs" once its records are read (the bucket table counts it, and
                // is steady when every held bucket does).
                self.buckets.actor_started(bucket, token);
                // Only for nodes that may start now: a node handed on may come back much later,
                // and must then read what its delegate wrote meanwhile.
                for n in records
                    .nodes
                    .into_iter()
                    .filter(|n| !handed.contains(&n.id) && !overtaken.contains(&n.id))
                {
                    self.initials.insert(
                        n.id,
                        Initial {
                            spec: n.spec,
                            spec_rev: n.spec_rev,
                            status: n.status,
                            hb_seen: 0,
                        },
                    );
                }
            }
            fx
        };
        self.execute_nodes(fx);
    }

    /// A takeover's read of a bucket's statuses came back (or, `light`, of its delegations and
    /// reservations, with the light read's `kind` for the metrics): with the standby's specs,
    /// it is the bucket's read. Without them (the watch was lost meanwhile), the bucket is read
    /// whole.
    fn on_bucket_rest_read(
        &mut self,
        bucket: Bucket,
        token: FenceToken,
        mut rest: BucketRest,
        light: Option<&'static str>,
    ) {
        let Some(taken) = self.standby.take(bucket) else {
            // The standby lost the specs meanwhile (its watch was lost): read the bucket whole.
            return self.read_instead(bucket, token);
        };
        if light.is_some() {
            // The standby's statuses, complete up to the acquisition (`caught_up`).
            let Some(statuses) = taken.statuses else {
                tracing::error!(%bucket, "a light takeover read without the standby's statuses; reading the bucket whole");
                return self.read_instead(bucket, token);
            };
            rest.statuses = statuses
                .into_iter()
                .map(|(id, (value, _))| (id, decode(&value)))
                .collect();
        }
        crate::metrics::NODES
            .takeover_reads
            .get_or_create(&crate::metrics::KindLabel {
                kind: light.unwrap_or("standby"),
            })
            .inc();
        let specs = taken
            .specs
            .into_iter()
            .map(|(id, (value, rev))| (id, decode::<NodeSpec>(&value), rev))
            .collect();
        let records = rest.with_specs(taken.as_of, specs);
        self.standby_metrics();
        self.on_bucket_read(bucket, token, false, records);
    }

    /// A takeover read of `bucket` that the standby can no longer complete: the bucket is read
    /// again (as much as the standby still lets it skip), in the place of the read it was, or
    /// that read counts as answered if the bucket no longer wants one.
    fn read_instead(&mut self, bucket: Bucket, token: FenceToken) {
        if self.bnodes.wants_read(bucket, token, false) {
            self.reads_pending = self.reads_pending.saturating_sub(1);
            self.read_bucket(bucket, token, false);
        } else {
            self.read_answered(None);
        }
    }

    /// A takeover's read of a bucket's delegations and reservations came back: it completes
    /// once the standby's status watch has delivered the bucket's acquisition, now or when the
    /// watch brings it ([`Session::on_status_news`]); without the standby's statuses (their
    /// watch ended meanwhile), the statuses are read.
    fn on_bucket_light_read(&mut self, bucket: Bucket, token: FenceToken, rest: BucketRest) {
        if self.awaiting.insert(bucket, (token, rest)).is_some() {
            // An earlier takeover of the bucket (lost and taken again meanwhile): its read is
            // answered by this one.
            self.read_answered(None);
        }
        self.try_complete(bucket);
        if self.awaiting.contains_key(&bucket) {
            self.spawn_input(async move {
                tokio::time::sleep(MARKER_WAIT).await;
                Input::MarkerLate(bucket, token)
            });
        }
    }

    /// Completes the awaiting takeover of `bucket` if the standby's statuses have caught up with
    /// its acquisition, or reads what the standby no longer has.
    fn try_complete(&mut self, bucket: Bucket) {
        let Some((token, _)) = self.awaiting.get(&bucket) else {
            return;
        };
        let token = *token;
        match self.standby.caught_up(bucket, token.revision()) {
            Some(false) => {}
            Some(true) => {
                let (token, rest) = self.awaiting.remove(&bucket).expect("awaiting");
                self.on_bucket_rest_read(bucket, token, rest, Some("warm"));
            }
            None => {
                self.awaiting.remove(&bucket);
                self.read_instead(bucket, token);
            }
        }
    }

    /// Looks at every awaiting takeover again (the standby lost some statuses).
    fn recheck_awaiting(&mut self) {
        let buckets: Vec<Bucket> = self.awaiting.keys().copied().collect();
        for b in buckets {
            self.try_complete(b);
        }
    }

    /// News of the standby's status watches.
    fn on_status_news(&mut self, news: Result<BucketNews, WatchLost>) {
        match news {
            Ok(BucketNews::Events(watch, events)) => {
                let keys = self.cluster.keys();
                let events = events.into_iter().map(|ev| {
                    let rev = ev.mod_rev();
                    let id = keys.node_id_of(ev.key());
                    match ev {
                        WatchEvent::Put { value, .. } => (id, Some(value), rev),
                        WatchEvent::Delete { .. } => (id, None, rev),
                    }
                });
                if let Some(b) = self.standby.statuses(watch, events) {
                    self.try_complete(b);
                }
            }
            Ok(BucketNews::Ended(watch, why)) => {
                if let Some(b) = self.standby.status_watch_ended(watch) {
                    tracing::warn!(bucket = %b, reason = %why, "a warm standby's status watch ended; reading the bucket again later");
                    self.standby_quiet_from = Instant::now() + STANDBY_QUIET;
                    self.recheck_awaiting();
                } else if watch < 0 {
                    // etcd refused to create a watch and did not say which: its bucket's
                    // takeover falls back after MARKER_WAIT.
                    tracing::warn!(reason = %why, "etcd refused a warm standby's status watch");
                }
            }
            Err(lost) => {
                tracing::warn!(error = %lost, "the warm standby's status watches were lost; reading their buckets again later");
                self.status_watches = None;
                self.watch_opens.clear();
                self.standby.status_watches_lost();
                self.standby_quiet_from = Instant::now() + STANDBY_QUIET;
                self.recheck_awaiting();
            }
        }
        self.standby_metrics();
    }

    /// Opens the status watches of freshly filled standby buckets and cancels those of buckets
    /// no longer kept (opens first: a cancel that reached etcd before its watch's creation
    /// would leave the watch behind).
    async fn flush_status_watches(&mut self) {
        let cancels = self.standby.take_cancels();
        let mut opens = std::mem::take(&mut self.watch_opens);
        opens.retain(|o| !cancels.contains(&o.id));
        if opens.is_empty() && (cancels.is_empty() || self.status_watches.is_none()) {
            return;
        }
        let result = async {
            let mut opens = opens.into_iter();
            if self.status_watches.is_none() {
                let Some(first) = opens.next() else {
                    return Ok(());
                };
                let (watches, events) = self
                    .cluster
                    .watch_bucket_statuses(first.id, first.bucket, first.from)
                    .await
                    .map_err(|e| WatchLost::Ended(e.to_string()))?;
                self.status_watches = Some(watches);
                self.watch_tasks.push(tokio::spawn(forward_status_news(
                    events,
                    self.inputs_tx.clone(),
                )));
            }
            let watches = self.status_watches.as_mut().expect("opened");
            for o in opens {
                watches.add(o.id, o.bucket, o.from).await?;
            }
            for id in cancels {
                watches.cancel(id).await?;
            }
            Ok::<(), WatchLost>(())
        }
        .await;
        if let Err(lost) = result {
            self.on_status_news(Err(lost));
        }
    }

    /// Chooses the standby's buckets again when who is live changed: those whose holder this
    /// conductor would follow (the rendezvous runner-up), keeping those it is to take over now.
    fn standby_members_changed(&mut self) {
        // None while a conductor of an older build is live (this one then holds nothing).
        let names: Vec<String> = if self.older.is_empty() {
            self.buckets.member_map().keys().cloned().collect()
        } else {
            Vec::new()
        };
        if names == self.standby_members {
            return;
        }
        let me = self.cfg.name.as_str();
        let mut wanted = HashSet::new();
        let mut keep = HashSet::new();
        if self.cfg.warm_standby && names.iter().any(|n| n == me) && names.len() > 1 {
            use ferric_cluster::placement::bucket_owner;
            for b in Bucket::all() {
                let owner = bucket_owner(b, names.iter().map(String::as_str));
                if owner == Some(me) {
                    keep.insert(b);
                } else if bucket_owner(
                    b,
                    names
                        .iter()
                        .map(String::as_str)
                        .filter(|n| Some(*n) != owner),
                ) == Some(me)
                {
                    wanted.insert(b);
                }
            }
        }
        self.standby.set_wanted(&wanted, &keep);
        tracing::info!(members = ?names, standby = wanted.len(), owned = keep.len(), "warm standby buckets chosen");
        self.standby_members = names;
        self.standby_quiet_from = Instant::now() + STANDBY_QUIET;
        self.standby_metrics();
    }

    /// Reads the specs of standby buckets not read yet, a couple at a time, when no takeover
    /// read is in flight and every node held here runs.
    fn fill_standby(&mut self) {
        if self.reads_pending > 0 || !self.standby.wants_fill() {
            return;
        }
        // Other conductors may still be reading buckets they took: wait for the cluster to be
        // quiet (the wake-up comes from the session's tick or any input).
        if self.standby_quiet_from > Instant::now() {
            return;
        }
        if !(self.buckets.steady() && self.bnodes.steady()) {
            return;
        }
        let per_read = self.read_queue.batch_size();
        let fills = self.standby.next_fills(STANDBY_FILLS_IN_FLIGHT * per_read);
        for buckets in fills.chunks(per_read) {
            let cluster = self.cluster.clone();
            let buckets = buckets.to_vec();
            self.spawn_input(async move {
                let result = cluster.read_buckets_specs(&buckets).await;
                Input::StandbyFilled(buckets, result)
            });
        }
    }

    fn standby_metrics(&self) {
        let (kept, ready, specs, statuses) = self.standby.counts();
        let m = &crate::metrics::NODES;
        m.standby_buckets.set(kept as i64);
        m.standby_ready.set(ready as i64);
        m.standby_specs.set(specs as i64);
        m.standby_statuses.set(statuses as i64);
    }

    fn on_reservation(&mut self, ev: WatchEvent) {
        if let WatchEvent::Delete { key, mod_rev } = &ev {
            if let Some(id) = self.cluster.keys().node_id_of(key) {
                self.bnodes.reservation_deleted(id, *mod_rev);
            }
        }
        let fx = match ev {
            WatchEvent::Put {
                key,
                create_rev,
                mod_rev,
                lease,
                ..
            } => self.delegated.reservation(
                self.cluster.keys().node_id_of(&key),
                mod_rev,
                Reservation::Put { create_rev, lease },
            ),
            WatchEvent::Delete { key, mod_rev } => self.delegated.reservation(
                self.cluster.keys().node_id_of(&key),
                mod_rev,
                Reservation::Delete,
            ),
        };
        self.execute(fx, &mut HashMap::new());
    }
}

/// A reservation outcome as the table sees it; what the reserving Txn read of an acquired node
/// goes to `initials`, for its actor.
fn table_outcome(
    id: NodeId,
    outcome: AcquireOutcome,
    initials: &mut HashMap<NodeId, Initial>,
) -> Acquire {
    match outcome {
        AcquireOutcome::Acquired(a) => {
            let a = *a;
            initials.insert(
                id,
                Initial {
                    spec: a.spec,
                    spec_rev: a.spec_rev,
                    status: a.status,
                    hb_seen: 0,
                },
            );
            Acquire::Acquired(a.token)
        }
        AcquireOutcome::Held {
            lease,
            create_rev,
            seen_at,
            ..
        } => Acquire::Held {
            lease,
            create_rev,
            seen_at,
        },
        AcquireOutcome::Gone => Acquire::Gone,
        AcquireOutcome::NotDelegated => Acquire::Refused,
    }
}

/// A bucket acquisition's outcome as the table sees it.
fn bucket_outcome(outcome: BucketOutcome) -> Acquire {
    match outcome {
        BucketOutcome::Acquired(token) => Acquire::Acquired(token),
        BucketOutcome::Held {
            lease,
            create_rev,
            seen_at,
            ..
        } => Acquire::Held {
            lease,
            create_rev,
            seen_at,
        },
    }
}

async fn forward_status_news(mut events: BucketWatchEvents, tx: mpsc::Sender<Input>) {
    loop {
        let news = events.next().await;
        let stop = news.is_err();
        if tx.send(Input::StatusNews(news)).await.is_err() || stop {
            return;
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

/// Whether the lease's last acknowledged keepalive is older than three keepalive intervals
/// (TTL/10 each): the time left before the self-fencing deadline is below what a fresh
/// acknowledgement gives minus that.
fn etcd_strained(lease: &LeaseState, ttl: Duration, now: Instant) -> bool {
    let LeaseState::Alive { deadline } = lease else {
        return false;
    };
    let fresh = ttl.saturating_sub(ferric_cluster::FenceClock::default_margin(ttl));
    let left = deadline.saturating_duration_since(now);
    left + ttl * 3 / 10 < fresh
}

/// Spec changes the watch delivered while a node's reservation was in flight. Its actor starts
/// with the spec the reserving Txn read, and a change committed after that Txn can reach this
/// conductor before the Txn's answer does: while the node is not running here the change is
/// not forwarded, and the actor would start with the older spec and never see it (a `manage`
/// accepted right after enrollment stayed in `verifying` for good). Such an actor is told to
/// look at the newer revision at once.
#[derive(Debug, Default)]
struct LateSpecs(HashMap<NodeId, i64>);

impl LateSpecs {
    fn seen(&mut self, id: NodeId, mod_rev: i64) {
        let rev = self.0.entry(id).or_insert(mod_rev);
        *rev = (*rev).max(mod_rev);
    }

    /// At the start of `id`'s actor with the spec of `started_with` (None: the actor reads it
    /// itself, after this): the revision it must look at, when the watch saw a newer one.
    fn at_start(&mut self, id: NodeId, started_with: Option<i64>) -> Option<i64> {
        let rev = self.0.remove(&id)?;
        started_with.is_some_and(|r| r < rev).then_some(rev)
    }

    /// A reservation batch is answered: whatever was not started is no longer in flight.
    fn forget(&mut self, batch: &[NodeId]) {
        for id in batch {
            self.0.remove(id);
        }
    }
}

#[cfg(test)]
mod late_spec_tests {
    use super::*;

    #[test]
    fn an_actor_started_with_an_older_spec_is_told_of_the_newer_one() {
        let (a, b, c) = (
            NodeId::new_random(),
            NodeId::new_random(),
            NodeId::new_random(),
        );
        let mut late = LateSpecs::default();
        late.seen(a, 47);
        late.seen(a, 45);
        late.seen(b, 30);
        late.seen(c, 50);
        // The reserving Txn read `a` at 14 and `b` at 30 (the change it saw is the one read).
        assert_eq!(late.at_start(a, Some(14)), Some(47));
        assert_eq!(late.at_start(b, Some(30)), None);
        // An actor that reads its own spec at start reads the newest.
        assert_eq!(late.at_start(c, None), None);
        assert_eq!(late.at_start(a, Some(14)), None, "told once");
        // A batch that was refused leaves nothing behind.
        late.seen(a, 60);
        late.forget(&[a]);
        assert!(late.0.is_empty());
    }
}

#[cfg(test)]
mod strain_tests {
    use super::*;

    #[test]
    fn strained_when_the_last_acknowledgement_is_three_intervals_old() {
        let ttl = Duration::from_secs(10);
        let now = Instant::now();
        // A fresh acknowledgement leaves TTL - margin (10 s - 2.5 s) before the deadline.
        let fresh = LeaseState::Alive {
            deadline: now + Duration::from_millis(7_500),
        };
        assert!(!etcd_strained(&fresh, ttl, now));
        let two_intervals = LeaseState::Alive {
            deadline: now + Duration::from_millis(5_600),
        };
        assert!(!etcd_strained(&two_intervals, ttl, now));
        let late = LeaseState::Alive {
            deadline: now + Duration::from_millis(4_400),
        };
        assert!(etcd_strained(&late, ttl, now));
        assert!(!etcd_strained(&LeaseState::Fenced, ttl, now));
    }
}

//! `NodeActor`: one per node this conductor holds a reservation for. It keeps the node's spec
//! and status in memory, receives spec changes from the conductor's single watch, decides with
//! the pure functions of `decide`, acts through a `PowerActor` child (spawned only while it
//! has BMC work) and a `ConsoleActor` child (while the console is enabled), and writes the
//! status with fenced transactions. A fenced write that fails means someone else owns the node
//! now: the actor stops at once.
//!
//! This file is the actor itself: its context, messages, state and dispatch. The work lives in
//! `node_actor/`: `reconcile` (the loop and its contract), `effects` (commit, history, events,
//! timers, the error policy), `power`, `provision`, `agent`, `remediation`, `console` and `bios`.

mod agent;
mod bios;
mod console;
mod effects;
mod in_flight;
mod power;
mod provision;
mod reconcile;
mod remediation;
mod sync;
#[cfg(test)]
mod tests;

use crate::decide::agent::callback_timeout_ms;
use crate::decide::maintenance::on_maintenance_change;
use crate::decide::node_state::{rebase_sequences, unserved_condition};
use crate::decide::sync::SyncSettings;
use crate::error::NodeError;
use crate::store::NodeStore;
use crate::supervisor::SupervisorMsg;
use effects::{history, record, requeue, settle, Extras, RETRY};
use ferric_cluster::{Cluster, SelfFence};
use ferric_console::{ConsoleActor, ConsoleContext, ConsoleMsg, ConsoleTarget, StopReason};
use ferric_model::{
    now_ms, CodecError, DriverInfo, DriverInfoError, FenceToken, HeartbeatRecord, HistoryKind,
    NodeId, NodeSpec, NodeStatus, PowerState, ProvisionState, RemediationPolicy, Requester,
    SyncConfig,
};
use ferric_power::{Bmc, BmcError, BmcSettings, PowerMsg};
use in_flight::{InFlight, Timers};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Opens a node's BMC from its driver and parsed `driver_info` (the real drivers by default;
/// tests give scripted ones).
pub type BmcConnector = Arc<
    dyn Fn(&str, &DriverInfo, Option<PowerState>, &BmcSettings) -> Result<Box<dyn Bmc>, BmcError>
        + Send
        + Sync,
>;

/// The drivers of `ferric-power`, chosen by the node's driver name.
pub fn real_bmcs() -> BmcConnector {
    Arc::new(ferric_power::connect_info)
}

/// The conductor's console service as node actors use it.
pub struct Consoles {
    pub ctx: Arc<ConsoleContext>,
    /// Where `consoles/<uuid>` records go: this cluster, on the session's lease (None: no
    /// records, for tests of the actor alone).
    pub records: Option<(Cluster, i64)>,
}

/// What every node actor of one conductor session shares.
pub struct NodeCtx {
    pub me: String,
    /// The drivers and conductor group this conductor serves. Placement gives it a node of
    /// another driver or group only when no live conductor serves that one: it then holds the
    /// node as its *caretaker* (see `reconcile::caretaker`).
    pub drivers: Vec<String>,
    pub conductor_group: String,
    pub store: Arc<dyn NodeStore>,
    /// The session's self-fencing deadline, checked right before every hardware command.
    pub fence: SelfFence,
    pub bmc: Arc<BmcSettings>,
    pub connect: BmcConnector,
    /// How long wait states wait for the agent unless the node says otherwise.
    pub callback_timeout_ms: u64,
    /// The agents' command API.
    pub agents: AgentCtx,
    /// The cluster's remediation policy, kept current by the conductor's watch.
    pub remediation: tokio::sync::watch::Receiver<Arc<RemediationPolicy>>,
    /// The conductor's console service (None: this conductor serves no consoles).
    pub consoles: Option<Consoles>,
    /// Power sync: settings, the cluster's policy, counters.
    pub sync: SyncCtx,
}

/// The agents' command API as node actors use it.
#[derive(Clone)]
pub struct AgentCtx {
    pub api: Arc<dyn crate::agent_client::AgentApi>,
    /// How often a running command is polled (a heartbeat polls it too).
    pub poll_interval: std::time::Duration,
    /// How long after a call that got no answer the next try goes out.
    pub retry_interval: std::time::Duration,
    /// Calls in a row without an answer after which the state fails (Ironic's
    /// `[agent]max_command_attempts`).
    pub max_attempts: u32,
}

impl std::fmt::Debug for AgentCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCtx")
            .field("poll_interval", &self.poll_interval)
            .field("retry_interval", &self.retry_interval)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl AgentCtx {
    /// The HTTP client with `settings`.
    pub fn http(me: &str, settings: crate::conductor::AgentSettings) -> Result<Self, String> {
        Ok(AgentCtx {
            api: Arc::new(crate::agent_client::HttpAgents::new(
                me,
                settings.command_timeout,
            )?),
            poll_interval: settings.poll_interval,
            retry_interval: settings.poll_interval,
            max_attempts: settings.max_attempts,
        })
    }
}

/// Power sync as node actors see it.
pub struct SyncCtx {
    pub settings: SyncSettings,
    /// How often a node in maintenance with the fault `power failure` is probed.
    pub failure_interval: std::time::Duration,
    /// The cluster's sync config, kept current by the conductor's watch of `config/`.
    pub config: tokio::sync::watch::Receiver<Arc<SyncConfig>>,
    pub stats: Arc<SyncStats>,
}

impl SyncCtx {
    fn count(&self, ok: bool) {
        crate::metrics::NODES
            .sync_reads
            .get_or_create(&crate::metrics::ResultLabel {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
        let c = if ok {
            &self.stats.reads
        } else {
            &self.stats.failed_reads
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Power sync's counters on one conductor (its metrics).
#[derive(Debug, Default)]
pub struct SyncStats {
    pub reads: std::sync::atomic::AtomicU64,
    pub failed_reads: std::sync::atomic::AtomicU64,
}

impl NodeCtx {
    fn serves(&self, driver: &str, group: &str) -> bool {
        self.conductor_group == group && self.drivers.iter().any(|d| d == driver)
    }
}

/// Records read when the reservation was acquired (None: read them from etcd, e.g. on restart).
pub struct Initial {
    pub spec: Result<NodeSpec, CodecError>,
    pub spec_rev: i64,
    pub status: Option<Result<NodeStatus, CodecError>>,
    /// The newest heartbeat revision already looked at (0 on a first start).
    pub hb_seen: i64,
}

/// A node at rest as its supervisor keeps it instead of an actor: what the actor needs to start
/// again exactly where it stopped, without reading etcd. See `supervisor`, "Parking".
pub struct Parked {
    spec: Box<NodeSpec>,
    spec_rev: i64,
    status: NodeStatus,
    hb_seen: i64,
    /// The spec's `driver_info` cannot be read (nothing is done on the node until it changes).
    spec_error: bool,
}

impl Parked {
    /// The spec revision the node was at.
    pub fn spec_rev(&self) -> i64 {
        self.spec_rev
    }

    /// Whether the cluster's remediation policy, as `ctx` has it now, has something to do on
    /// this node (a changed policy wakes only the nodes it concerns).
    pub fn needs_remediation(&self, ctx: &NodeCtx) -> bool {
        !matches!(
            crate::decide::remedy::remedy(&self.spec, &self.status, &ctx.remediation.borrow()),
            crate::decide::remedy::Remedy::Nothing
        )
    }

    /// Whether a sweep's read would be skipped on this node (in maintenance, in a provision
    /// state sync leaves alone, held by a caretaker): the read is then not worth waking it.
    pub fn sweep_skips(&self, ctx: &NodeCtx) -> bool {
        let node = sync::SweepView {
            acting: !self.spec_error,
            served: ctx.serves(&self.spec.driver, &self.spec.conductor_group),
            busy: false,
            // Parked only once its status is this owner's.
            taken: true,
        };
        node.skip_reason(&self.spec, &self.status, false).is_some()
    }

    /// What the actor that takes the node up again starts from.
    pub fn into_initial(self) -> Initial {
        Initial {
            spec: Ok(*self.spec),
            spec_rev: self.spec_rev,
            status: Some(Ok(self.status)),
            hb_seen: self.hb_seen,
        }
    }
}

/// A node handed over with its records (a bucket's read, a reservation's) whose first pass
/// would do nothing but take the status over in memory and come to rest: the records it would
/// then be parked with, so that no actor is started for it (at a million nodes, a failover
/// hands each survivor about 11,000 such nodes, and starting an actor to park it again was most
/// of the survivors' work). Otherwise the records stay in `args` for the actor.
///
/// The test is the actor's own: the state its start would build, the takeover its first pass
/// makes (`take_over`, with nothing a reader must see: no write), then `at_rest` and the idle
/// pass's checks that start work by themselves (the power-failure probe, a fault against the
/// maintenance flag, a remediation rule). A node this conductor holds only as caretaker, with
/// a spec or status that cannot be read, or a `driver_info` that cannot, gets an actor. The unit
/// test `parking_at_start_is_what_the_first_pass_would_do` holds this to a real actor's first
/// pass over the same records.
pub fn park_at_start(args: &mut NodeArgs) -> Option<Box<Parked>> {
    use crate::decide::node_state::{take_over, takeover_needs_write};
    use crate::decide::remedy::{fault_vs_maintenance, remedy, FaultAction, Remedy};
    let (spec, spec_rev, status, hb_seen) = match args.initial.take() {
        Some(Initial {
            spec: Ok(spec),
            spec_rev,
            status,
            hb_seen,
        }) if !matches!(status, Some(Err(_))) => (
            spec,
            spec_rev,
            status.and_then(Result::ok).unwrap_or_default(),
            hb_seen,
        ),
        other => {
            args.initial = other;
            return None;
        }
    };
    let info = match spec.driver_info() {
        Ok(info) => info,
        Err(_) => {
            args.initial = Some(Initial {
                spec: Ok(spec),
                spec_rev,
                status: Some(Ok(status)),
                hb_seen,
            });
            return None;
        }
    };
    let mut state = NodeState::fresh(args);
    state.spec_rev = spec_rev;
    state.hb_seen = hb_seen;
    state.set_parsed_spec(spec, Ok(info));
    let next = take_over(&status, &state.ctx.me, state.token, now_ms(), None);
    let rests = state.unserved().is_none() && !takeover_needs_write(&status, &next);
    state.status = next;
    let rests = rests
        && state.at_rest()
        && state.spec.as_deref().is_some_and(|spec| {
            !crate::decide::sync::in_power_failure(spec, &state.status)
                && fault_vs_maintenance(spec, &state.status) == FaultAction::Nothing
                && remedy(spec, &state.status, &state.ctx.remediation.borrow()) == Remedy::Nothing
        });
    if rests {
        return state.into_parked();
    }
    // (Always there: set above. Without it the actor reads the node itself.)
    let spec = state.original_spec()?;
    args.initial = Some(Initial {
        spec: Ok(spec),
        spec_rev,
        status: Some(Ok(status)),
        hb_seen,
    });
    None
}

pub struct NodeArgs {
    pub id: NodeId,
    pub token: FenceToken,
    pub initial: Option<Initial>,
    pub ctx: Arc<NodeCtx>,
    /// Set by the supervisor when this node is being stopped: no new BMC command may start.
    pub stopping: Arc<AtomicBool>,
}

/// A summary for callers that want to see the actor answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    pub id: NodeId,
    pub token: FenceToken,
    pub provision_state: ProvisionState,
    pub power_seq_done: u64,
}

pub enum NodeMsg {
    /// A newer spec from the watch (with its mod_revision).
    Spec(Box<NodeSpec>, i64),
    /// The spec at this revision could not be decoded.
    SpecUnreadable(String, i64),
    /// The spec's revision is this (a snapshot after a lost watch): read it if it is newer
    /// than the one this actor has.
    SpecAt(i64),
    /// Look at the spec and status and do the next piece of work.
    Reconcile,
    /// From this node's power actor.
    Power(ferric_power::PowerEvent),
    /// A timed provisioning step of `state` ended.
    ProvisionStep {
        state: ProvisionState,
        ok: bool,
    },
    /// The agent's last heartbeat (from the conductor's watch, or read at start) and the
    /// revision it was recorded at.
    Heartbeat(Box<HeartbeatRecord>, i64),
    /// The deadline of the wait state may have passed.
    WaitDeadline(u64),
    /// The agent answered call number `u64` (or did not).
    AgentAnswer(
        u64,
        Box<(
            crate::decide::agent::AgentCall,
            crate::decide::agent::CallResult,
        )>,
    ),
    /// Talk to the agent again (a running command's poll, a retry).
    AgentTimer,
    /// Look at remediation again (the policy changed, or a rate-limit window ended).
    Remediate,
    /// Power sync: read the power state now (a sweep; `probe`: the power-failure probe).
    /// `permit` is the sweep's concurrency slot, released when the read is done.
    Sync {
        probe: bool,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Ping(RpcReplyPort<NodeSnapshot>),
    /// From the supervisor after this actor said it is at rest: answered with
    /// `SupervisorMsg::Parked`, carrying the node's records if it still is (the actor is then
    /// stopped and the supervisor keeps them), None if it is not.
    Park,
}

pub struct NodeState {
    id: NodeId,
    token: FenceToken,
    ctx: Arc<NodeCtx>,
    stopping: Arc<AtomicBool>,
    spec: Option<Box<NodeSpec>>,
    /// The spec's `driver_info`, parsed once per spec (the default while it is unreadable).
    info: DriverInfo,
    spec_rev: i64,
    /// Why the spec cannot be acted on (an unreadable record or `driver_info`); recorded as
    /// the node's `last_error`, and nothing moves until a readable spec comes.
    spec_error: Option<String>,
    /// The spec record itself cannot be decoded (not only its `driver_info`): nothing at all
    /// is written for the node until a readable spec comes (the API shows the record's error).
    spec_unreadable: bool,
    /// The status has not been read (the read at start failed on the spec record).
    status_unread: bool,
    status: NodeStatus,
    /// Status writes etcd has not taken yet, oldest first, each with its history entry and
    /// event (see `effects::record`).
    unsent: VecDeque<(NodeStatus, Extras)>,
    /// The maintenance flip this actor itself wrote into the spec (its revision and who asked),
    /// so the history names the right author when the watch brings it back.
    own_flip: Option<(i64, Requester)>,
    /// Set when this build must not touch the node (its status is in a newer format).
    passive: Option<String>,
    power: Option<ActorRef<PowerMsg>>,
    /// The one BMC operation the power actor is running for this node.
    in_flight: InFlight,
    /// The span of the user's power request in flight, when traces are exported; it ends when
    /// the request's outcome is recorded.
    op_span: tracing::Span,
    timers: Timers,
    /// Failed etcd requests in a row (the retry backoff grows with it).
    failures: u32,
    /// The newest heartbeat revision looked at (ignored ones too).
    hb_seen: i64,
    /// A heartbeat that came before the node entered its wait state (the agent can be faster
    /// than the read-back that confirms the boot), looked at once it waits.
    early_hb: Option<(Box<HeartbeatRecord>, i64)>,
    /// The console actor while the node's console is enabled, with the target it serves.
    console: Option<(ActorRef<ConsoleMsg>, ConsoleTarget)>,
    /// Why the enabled console cannot run (logged and recorded once per distinct error).
    console_error: Option<String>,
    /// The mismatch with the last requested power state the previous sync read saw.
    sync_mismatch: Option<PowerState>,
    /// Cleaning ended: the BIOS settings are cached again on the next pass.
    bios_due: bool,
    /// The agent's work ended: its token is wiped on the next pass.
    token_wipe_due: bool,
    /// The task of the agent call in flight, if any.
    agent_call: Option<tokio::task::AbortHandle>,
    /// Numbers the agent calls: an answer of a call no longer in flight is ignored.
    agent_call_seq: u64,
    /// The spec's `automated_clean` was empty and took the cluster's default (see
    /// `set_parsed_spec`): a parked copy gives it back empty.
    clean_defaulted: bool,
    /// The supervisor was told this node is at rest (and nothing happened since).
    rest_told: bool,
    /// This actor handed its records to the supervisor to be parked: anything that still
    /// reaches it goes back to the supervisor, which holds it for the next actor.
    parked: bool,
}

impl NodeState {
    /// A node's state before its records are taken: nothing read, nothing running.
    fn fresh(args: &NodeArgs) -> NodeState {
        NodeState {
            id: args.id,
            token: args.token,
            ctx: args.ctx.clone(),
            stopping: args.stopping.clone(),
            spec: None,
            info: DriverInfo::default(),
            spec_rev: 0,
            spec_error: None,
            spec_unreadable: false,
            status_unread: false,
            status: NodeStatus::default(),
            unsent: VecDeque::new(),
            own_flip: None,
            passive: None,
            power: None,
            in_flight: InFlight::Idle,
            op_span: tracing::Span::none(),
            timers: Timers::default(),
            failures: 0,
            hb_seen: 0,
            early_hb: None,
            console: None,
            console_error: None,
            sync_mismatch: None,
            bios_due: false,
            token_wipe_due: false,
            agent_call: None,
            agent_call_seq: 0,
            clean_defaulted: false,
            rest_told: false,
            parked: false,
        }
    }

    /// Whether this actor may start BMC work at all (not being stopped, lease certainly alive).
    fn may_command(&self) -> bool {
        !self.stopping.load(Ordering::Acquire) && self.ctx.fence.check(Default::default()).is_ok()
    }

    /// Takes a spec: its `driver_info` is parsed here, once; an unreadable one stops all work
    /// on the node with a clear `last_error` until a readable spec comes.
    fn set_spec(&mut self, spec: NodeSpec) {
        let info = spec.driver_info();
        self.set_parsed_spec(spec, info);
    }

    /// `set_spec` with the `driver_info` already parsed (from this same spec).
    fn set_parsed_spec(&mut self, mut spec: NodeSpec, info: Result<DriverInfo, DriverInfoError>) {
        self.spec_unreadable = false;
        // The cluster's default of `automated_clean` (`config/sync`) is resolved into the copy
        // the decisions read, when the spec arrives (a change of the default applies to a node
        // at its next spec change or actor start). Never written back: spec changes by the
        // owner are applied to the record read from etcd.
        self.clean_defaulted = spec.automated_clean.is_none();
        if self.clean_defaulted {
            spec.automated_clean = Some(self.ctx.sync.config.borrow().automated_clean);
        }
        match info {
            Ok(info) => {
                self.info = info;
                self.spec_error = None;
            }
            Err(e) => {
                tracing::error!(node = %self.id, error = %e, "unreadable driver_info");
                self.info = DriverInfo::default();
                self.spec_error = Some(format!(
                    "driver_info is unreadable ({e}); nothing is done on this node until it is fixed"
                ));
            }
        }
        self.spec = Some(Box::new(spec));
    }

    /// While this conductor holds the node only as its caretaker (it does not serve the node's
    /// driver and conductor group, so no live conductor does), the status condition saying so.
    fn unserved(&self) -> Option<String> {
        let spec = self.spec.as_deref().filter(|_| self.spec_error.is_none())?;
        if self.ctx.serves(&spec.driver, &spec.conductor_group) {
            return None;
        }
        Some(unserved_condition(
            &spec.driver,
            &spec.conductor_group,
            &self.ctx.me,
        ))
    }

    /// Takes the status read when the node was reserved (None: there is none yet). One that
    /// cannot be read is reset to `error` with a `last_error` saying so; one written by a newer
    /// build leaves the node alone.
    fn take_status(&mut self, status: Option<Result<NodeStatus, CodecError>>) {
        match status {
            None => {}
            Some(Ok(status)) => self.status = status,
            Some(Err(e @ CodecError::UnknownVersion { .. })) => {
                // Written by a newer conductor: rewriting it in our older format would lose
                // what we cannot read. Leave the node alone; a newer conductor can serve it.
                tracing::error!(node = %self.id, error = %e, "status written by a newer version; not touching this node");
                self.passive = Some(e.to_string());
            }
            Some(Err(e)) => {
                tracing::error!(node = %self.id, error = %e, "corrupt status record; resetting it to \"error\"");
                self.status.provision_state = ProvisionState::Error;
                self.status.last_error = Some(format!(
                    "status record was unreadable ({e}); the provision state before it was lost"
                ));
                // Written by the first pass, as this owner's (see `effects::record`).
                self.status.owner = Some(self.ctx.me.clone());
                self.status.fence = self.token.0;
                self.status.updated_at_ms = now_ms();
                self.unsent
                    .push_back((self.status.clone(), Extras::default()));
            }
        }
    }

    /// Whether nothing is going on for this node and nothing will until a message comes from
    /// outside (a spec change, a heartbeat, a sweep's read, a policy change): no operation,
    /// session, console, agent call or timer, nothing unwritten, a settled provision state, no
    /// pending request, and the status already this owner's. Such a node is parked by its
    /// supervisor (its actor ends; the next message starts one from the parked records).
    fn at_rest(&self) -> bool {
        use ProvisionState as S;
        let Some(spec) = self.spec.as_deref() else {
            return false;
        };
        let st = &self.status;
        let quiet = self.passive.is_none()
            && !self.spec_unreadable
            && !self.status_unread
            && self.unsent.is_empty()
            && self.own_flip.is_none()
            && self.power.is_none()
            && !self.in_flight.is_busy()
            && self.console.is_none()
            && self.agent_call.is_none()
            && self.early_hb.is_none()
            && self.sync_mismatch.is_none()
            && !self.bios_due
            && !self.token_wipe_due
            && !self.timers.any();
        let settled = !st.provision_state.is_busy()
            && !st.provision_state.is_wait()
            && st.provision_state != S::Verifying
            && st.power_op.is_none()
            && spec.pending_power(st).is_none()
            && spec.pending_boot_device(st).is_none()
            && spec.pending_provision(st).is_none()
            && !spec.console_enabled;
        quiet && settled && self.taken()
    }

    /// Whether the status is this owner's (written, or taken over in memory, with its fence).
    fn taken(&self) -> bool {
        self.status.owner.as_deref() == Some(self.ctx.me.as_str())
            && self.status.fence == self.token.0
    }

    /// The records a parked node starts again from (`at_rest` holds).
    fn parked_copy(&self) -> Option<Box<Parked>> {
        let mut spec = self.spec.clone()?;
        if self.clean_defaulted {
            spec.automated_clean = None;
        }
        Some(Box::new(Parked {
            spec,
            spec_rev: self.spec_rev,
            status: self.status.clone(),
            hb_seen: self.hb_seen,
            spec_error: self.spec_error.is_some(),
        }))
    }

    /// `parked_copy` without the copies, for a state that is not kept.
    fn into_parked(mut self) -> Option<Box<Parked>> {
        let spec_error = self.spec_error.is_some();
        let spec = self.original_spec()?;
        Some(Box::new(Parked {
            spec: Box::new(spec),
            spec_rev: self.spec_rev,
            status: std::mem::take(&mut self.status),
            hb_seen: self.hb_seen,
            spec_error,
        }))
    }

    /// Takes the spec out as it was given (the cluster's `automated_clean` default undone).
    fn original_spec(&mut self) -> Option<NodeSpec> {
        let mut spec = *self.spec.take()?;
        if self.clean_defaulted {
            spec.automated_clean = None;
        }
        Some(spec)
    }

    /// How long this node's wait states wait for the agent.
    fn callback_timeout_ms(&self) -> u64 {
        callback_timeout_ms(&self.info, self.ctx.callback_timeout_ms)
    }

    /// The spec, or an empty one while the record is unreadable.
    fn spec_now(&self) -> NodeSpec {
        self.spec
            .as_deref()
            .cloned()
            .unwrap_or_else(|| NodeSpec::new(self.id, "", 0))
    }
}

pub struct NodeActor;

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let mut state = NodeState::fresh(&args);
        let from_store = args.initial.is_none();
        if from_store {
            tracing::debug!(node = %args.id, "no records handed over: reading the node");
        }
        let initial = match args.initial {
            Some(initial) => initial,
            None => Box::pin(read_initial(&*state.ctx.store, state.id)).await?,
        };
        state.spec_rev = initial.spec_rev;
        state.hb_seen = initial.hb_seen;
        match initial.spec {
            Ok(spec) => state.set_spec(spec),
            Err(e) => {
                state.spec_error = Some(format!("node spec record is unreadable: {e}"));
                state.spec_unreadable = true;
            }
        }
        // Read at start, the status is lost with an unreadable spec (one read fails both): it is
        // read again once a readable spec comes.
        state.status_unread = from_store && initial.spec_rev == 0 && state.spec_unreadable;
        state.take_status(initial.status);
        if state.status.provision_state.is_wait() && state.status.agent.is_some() {
            // A heartbeat may have come while nobody owned the node: look at the last one.
            let (me, store, id) = (myself.clone(), state.ctx.store.clone(), state.id);
            tokio::spawn(async move {
                match store.last_heartbeat(id).await {
                    Ok(Some((hb, rev))) => {
                        let _ = me.send_message(NodeMsg::Heartbeat(Box::new(hb), rev));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(node = %id, error = %e, "cannot read the last heartbeat")
                    }
                }
            });
        }
        myself.send_message(NodeMsg::Reconcile)?;
        Ok(state)
    }

    // The work is boxed: an actor's task holds its largest `handle` future for its whole life,
    // and 100k idle nodes must not each carry the state machine of a reconcile pass.
    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if state.parked {
            // Handed to the supervisor already: it holds this for the node's next actor.
            if let Some(sup) = myself.try_get_supervisor() {
                let _ = sup.send_message(SupervisorMsg::Forward(state.id, msg));
            }
            return Ok(());
        }
        if let NodeMsg::Park = msg {
            let copy = state.at_rest().then(|| state.parked_copy()).flatten();
            let handed = copy.is_some();
            state.rest_told = false;
            if let Some(sup) = myself.try_get_supervisor() {
                let answer = SupervisorMsg::Parked(state.id, myself.get_id(), copy);
                let sent = sup.send_message(answer).is_ok();
                state.parked = handed && sent;
            }
            return Ok(());
        }
        Box::pin(handle(myself.clone(), msg, state)).await?;
        tell_rest(&myself, state);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(call) = state.agent_call.take() {
            call.abort();
        }
        // Handed over or shutting down: the console ends before the reservation is released, so
        // the BMC's one session is free when the new owner opens it.
        if let Some((console, _)) = state.console.take() {
            ConsoleActor::stop_and_wait(
                &console,
                StopReason::OwnerChanged,
                console::CONSOLE_STOP_BOUND,
            )
            .await;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        evt: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Children: the power actor and the console actor. When the power actor ends (idle,
        // fenced, crashed), forget it; an operation it was running is still recorded in the
        // status and resumes from there. A console that ended by itself is opened again.
        let (SupervisionEvent::ActorTerminated(cell, _, _)
        | SupervisionEvent::ActorFailed(cell, _)) = &evt
        else {
            return Ok(());
        };
        let crashed = match &evt {
            SupervisionEvent::ActorFailed(_, err) => Some(err.to_string()),
            _ => None,
        };
        if state
            .console
            .as_ref()
            .is_some_and(|(c, _)| c.get_id() == cell.get_id())
        {
            state.console = None;
            if let Some(err) = &crashed {
                tracing::error!(node = %state.id, error = %err, "console actor crashed; reopening");
            }
            requeue(&myself, state, RETRY);
        }
        if state
            .power
            .as_ref()
            .is_some_and(|p| p.get_id() == cell.get_id())
        {
            state.power = None;
            // (An agent call in flight is not the power actor's.)
            let lost =
                !matches!(state.in_flight, InFlight::Agent(_)) && state.in_flight.take().is_busy();
            if let Some(err) = &crashed {
                tracing::error!(node = %state.id, error = %err, "power actor crashed");
            }
            if lost && state.may_command() {
                requeue(&myself, state, RETRY);
            }
        }
        if !state.parked {
            tell_rest(&myself, state);
        }
        Ok(())
    }
}

/// Tells the supervisor when this node comes to rest (once per rest), so that it can park it.
fn tell_rest(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    let rest = state.at_rest();
    if rest && !state.rest_told {
        if let Some(sup) = myself.try_get_supervisor() {
            // Another kind of parent (a test's) does not take it: nothing to tell.
            let _ = sup.send_message(SupervisorMsg::AtRest(state.id, myself.get_id()));
        }
    }
    state.rest_told = rest;
}

/// One message's work (see [`NodeActor::handle`]).
async fn handle(
    myself: ActorRef<NodeMsg>,
    msg: NodeMsg,
    state: &mut NodeState,
) -> Result<(), ActorProcessingErr> {
    let outcome = match msg {
        NodeMsg::Spec(spec, rev) => Box::pin(on_spec(&myself, state, spec, rev)).await,
        NodeMsg::SpecUnreadable(error, rev) => {
            if rev <= state.spec_rev {
                return Ok(());
            }
            state.spec_rev = rev;
            state.spec_error = Some(format!("node spec record is unreadable: {error}"));
            state.spec_unreadable = true;
            Box::pin(reconcile::reconcile(&myself, state)).await
        }
        NodeMsg::SpecAt(rev) => {
            state.timers.spec_at = false;
            if rev <= state.spec_rev {
                return Ok(());
            }
            match Box::pin(state.ctx.store.read_node(state.id)).await {
                Ok(view) => {
                    Box::pin(on_spec(&myself, state, Box::new(view.spec), view.spec_rev)).await
                }
                Err(ferric_cluster::ClusterError::Corrupt { source, .. }) => {
                    state.spec_rev = rev;
                    state.spec_error = Some(format!("node spec record is unreadable: {source}"));
                    state.spec_unreadable = true;
                    Box::pin(reconcile::reconcile(&myself, state)).await
                }
                Err(e) => {
                    // Look again later; the snapshot's revision still says what to catch up to.
                    state.failures = state.failures.saturating_add(1);
                    let after = effects::retry_delay(state.failures, state.id.as_bytes()[0]);
                    tracing::warn!(node = %state.id, error = %e, "cannot read the spec after a lost watch; retrying");
                    state.timers.spec_at = true;
                    myself.send_after(after, move || NodeMsg::SpecAt(rev));
                    return Ok(());
                }
            }
        }
        NodeMsg::Reconcile => {
            state.timers.retry = false;
            Box::pin(reconcile::reconcile(&myself, state)).await
        }
        NodeMsg::ProvisionStep { state: step, ok } => {
            Box::pin(provision::on_step_timer(&myself, state, step, ok)).await
        }
        NodeMsg::Power(event) => {
            match Box::pin(power::on_power_event(&myself, state, event)).await {
                Ok(()) => Box::pin(reconcile::reconcile(&myself, state)).await,
                Err(e) => Err(e),
            }
        }
        NodeMsg::Heartbeat(hb, rev) => {
            Box::pin(agent::on_heartbeat_msg(&myself, state, hb, rev)).await
        }
        NodeMsg::WaitDeadline(deadline) => {
            Box::pin(agent::on_deadline_timer(&myself, state, deadline)).await
        }
        NodeMsg::AgentAnswer(seq, answer) => {
            if seq != state.agent_call_seq || !matches!(state.in_flight, InFlight::Agent(_)) {
                // A call that was given up (its wait ended meanwhile).
                return Ok(());
            }
            let (call, result) = *answer;
            Box::pin(agent::on_agent_answer(&myself, state, call, result)).await
        }
        NodeMsg::AgentTimer => {
            state.timers.agent = false;
            Box::pin(agent::on_agent_timer(&myself, state)).await
        }
        NodeMsg::Remediate => {
            state.timers.remedy = false;
            Box::pin(reconcile::reconcile(&myself, state)).await
        }
        NodeMsg::Sync { probe, permit } => {
            Box::pin(sync::on_sync(&myself, state, probe, permit)).await
        }
        // Taken in `NodeActor::handle`.
        NodeMsg::Park => return Ok(()),
        NodeMsg::Ping(reply) => {
            let _ = reply.send(NodeSnapshot {
                id: state.id,
                token: state.token,
                provision_state: state.status.provision_state,
                power_seq_done: state.status.power_seq_done,
            });
            return Ok(());
        }
    };
    settle(&myself, state, outcome);
    Ok(())
}

/// A newer spec from the watch: a maintenance flip is recorded first, then the node is
/// reconciled against the new spec.
async fn on_spec(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    spec: Box<NodeSpec>,
    rev: i64,
) -> reconcile::Outcome {
    // The watch and the acquisition read race: never go back to an older spec.
    if rev <= state.spec_rev {
        return Ok(reconcile::Action::AwaitChange);
    }
    state.spec_rev = rev;
    if state.status_unread {
        let view = state
            .ctx
            .store
            .read_node(state.id)
            .await
            .map_err(|e| NodeError::from_cluster(state.id, e))?;
        state.status_unread = false;
        state.take_status(Some(match view.status_error {
            None => Ok(view.status),
            Some(reason) => Err(CodecError::Corrupt {
                kind: "node status",
                version: 0,
                reason,
            }),
        }));
    }
    let bmc_changed = state
        .spec
        .as_ref()
        .is_none_or(|s| s.driver != spec.driver || s.driver_info != spec.driver_info);
    if bmc_changed && !state.in_flight.is_power() {
        // New credentials or address: the next command opens a new session.
        if let Some(p) = state.power.take() {
            p.stop(Some("driver_info changed".into()));
        }
    }
    let was = state.spec.as_ref().map(|s| s.maintenance);
    let author = match state.own_flip.take() {
        Some((own, by)) if own == rev => Some(by),
        other => {
            state.own_flip = other.filter(|(own, _)| *own > rev);
            None
        }
    };
    let info = spec.driver_info();
    let timeout = info.as_ref().map_or(state.ctx.callback_timeout_ms, |i| {
        callback_timeout_ms(i, state.ctx.callback_timeout_ms)
    });
    let mut rebased_status = state.status.clone();
    let rebased = rebase_sequences(&spec, &mut rebased_status);
    if !rebased.is_empty() {
        tracing::warn!(node = %state.id, kinds = ?rebased, "the spec's request sequence restarted (a replaced spec); its requests are new");
        let action = format!(
            "{} request sequence restarted by a replaced spec",
            rebased.join(", ")
        );
        let entry = history(
            state,
            HistoryKind::Takeover,
            &action,
            Requester::Conductor,
            None,
        );
        record(state, rebased_status, Extras::history(entry)).await?;
    }
    let change = on_maintenance_change(was, &spec, &state.status, author, now_ms(), timeout);
    state.set_parsed_spec(*spec, info);
    if let Some(change) = change {
        let entry = history(
            state,
            HistoryKind::Maintenance,
            &change.action,
            change.by,
            None,
        );
        record(state, change.status, Extras::history(entry)).await?;
    }
    reconcile::reconcile(myself, state).await
}

async fn read_initial(store: &dyn NodeStore, id: NodeId) -> Result<Initial, ActorProcessingErr> {
    match store.read_node(id).await {
        Ok(view) => Ok(Initial {
            spec: Ok(view.spec),
            spec_rev: view.spec_rev,
            status: Some(match view.status_error {
                None => Ok(view.status),
                Some(e) => Err(CodecError::Corrupt {
                    kind: "node status",
                    version: 0,
                    reason: e,
                }),
            }),
            hb_seen: 0,
        }),
        Err(ferric_cluster::ClusterError::Corrupt { source, .. }) => Ok(Initial {
            spec: Err(source),
            spec_rev: 0,
            status: None,
            hb_seen: 0,
        }),
        Err(e) => Err(Box::new(e)),
    }
}

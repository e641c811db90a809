//! `NodeActor`: one per node this conductor holds a reservation for. It keeps the node's spec
//! and status in memory, receives spec changes from the conductor's single watch, decides with
//! the pure functions of `node_state`, acts through a `PowerActor` child (spawned only while it
//! has BMC work), and writes the status with fenced transactions. A fenced write that fails means
//! someone else owns the node now: the actor stops at once.

use crate::agent::{
    callback_timeout_ms, on_heartbeat, restart_wait_on_leaving_maintenance, wait_timeout, Heartbeat,
};
use crate::node_state::{
    begin_provision, boot_finished, hardware_done, next_step, power_finished, power_start,
    step_done, take_over, takeover_needs_write, work_for, Hardware, Step, Work, HARD_TIMEOUT_S,
};
use crate::remedy::{fault_vs_maintenance, remedy, FaultAction, Remedy};
use ferric_cluster::heartbeats::HeartbeatRecord;
use ferric_cluster::remediation::Slot;
use ferric_cluster::{Cluster, ClusterError, SelfFence, StatusWriter};
use ferric_console::{
    ConsoleActor, ConsoleArgs, ConsoleContext, ConsoleEvent, ConsoleMsg, ConsoleTarget, RecordTo,
    StopReason,
};
use ferric_model::{
    now_ms, BootDevice, CodecError, EventRecord, FenceToken, HistoryEntry, NodeId, NodeSpec,
    NodeStatus, PowerState, PowerTarget, ProvisionRequest, ProvisionState, Remediation,
    RemediationPolicy, Verb,
};
use ferric_power::op::{Phase, Plan};
use ferric_power::{BmcSettings, Outcome, PowerActor, PowerArgs, PowerEvent, PowerMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What every node actor of one conductor session shares.
pub struct NodeCtx {
    pub me: String,
    pub cluster: Cluster,
    pub writer: StatusWriter,
    /// The session's self-fencing deadline, checked right before every hardware command.
    pub fence: SelfFence,
    pub bmc: Arc<BmcSettings>,
    /// How long wait states wait for the agent unless the node says otherwise.
    pub callback_timeout_ms: u64,
    /// The cluster's remediation policy, kept current by the conductor's watch.
    pub remediation: tokio::sync::watch::Receiver<Arc<RemediationPolicy>>,
    /// The conductor's console service (None: this conductor serves no consoles).
    pub consoles: Option<Arc<ConsoleContext>>,
    /// The session's lease, which `consoles/<uuid>` records are put on.
    pub lease_id: i64,
}

/// The sequence number of the power actor's work for provisioning (boot device and power of
/// the deploy interface), apart from the users' requests, which count up from 1.
const HW_SEQ: u64 = u64::MAX;

/// Records read when the reservation was acquired (None: read them from etcd, e.g. on restart).
pub struct Initial {
    pub spec: Result<NodeSpec, CodecError>,
    pub spec_rev: i64,
    pub status: Option<Result<NodeStatus, CodecError>>,
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
    /// Look at the spec and status and do the next piece of work.
    Reconcile,
    /// From this node's power actor.
    Power(PowerEvent),
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
    /// Look at remediation again (the policy changed, or a rate-limit window ended).
    Remediate,
    Ping(RpcReplyPort<NodeSnapshot>),
}

pub struct NodeState {
    id: NodeId,
    token: FenceToken,
    ctx: Arc<NodeCtx>,
    stopping: Arc<AtomicBool>,
    spec: Option<Box<NodeSpec>>,
    spec_rev: i64,
    spec_error: Option<String>,
    status: NodeStatus,
    /// The in-memory status has changes etcd has not acknowledged yet.
    dirty: bool,
    /// Set when this build must not touch the node (its status is in a newer format).
    passive: Option<String>,
    power: Option<ActorRef<PowerMsg>>,
    /// The power operation (request seq) the power actor is running.
    power_in_flight: Option<u64>,
    boot_in_flight: Option<u64>,
    /// The provisioning state whose timed step is scheduled.
    work_scheduled: Option<ProvisionState>,
    /// The deploy interface's hardware work the power actor is doing.
    hw_in_flight: Option<(ProvisionState, Hardware, u64)>,
    /// The wait-state deadline a timer is armed for.
    deadline_armed: Option<u64>,
    /// The newest heartbeat revision looked at (ignored ones too).
    hb_seen: i64,
    /// A heartbeat that came before the node entered its wait state (the agent can be faster
    /// than the read-back that confirms the boot), looked at once it waits.
    early_hb: Option<(Box<HeartbeatRecord>, i64)>,
    /// A remediation retry (rate limit, etcd error) is scheduled.
    remedy_later: bool,
    /// The console actor while the node's console is enabled, with the target it serves.
    console: Option<(ActorRef<ConsoleMsg>, ConsoleTarget)>,
    /// Why the enabled console cannot run (logged and recorded once per distinct error).
    console_error: Option<String>,
    retry_pending: bool,
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
        let mut state = NodeState {
            id: args.id,
            token: args.token,
            ctx: args.ctx,
            stopping: args.stopping,
            spec: None,
            spec_rev: 0,
            spec_error: None,
            status: NodeStatus::default(),
            dirty: false,
            passive: None,
            power: None,
            power_in_flight: None,
            boot_in_flight: None,
            work_scheduled: None,
            hw_in_flight: None,
            deadline_armed: None,
            hb_seen: 0,
            early_hb: None,
            remedy_later: false,
            console: None,
            console_error: None,
            retry_pending: false,
        };
        let initial = match args.initial {
            Some(initial) => initial,
            None => Box::pin(read_initial(&state.ctx.cluster, &state.id)).await?,
        };
        state.spec_rev = initial.spec_rev;
        match initial.spec {
            Ok(spec) => state.spec = Some(Box::new(spec)),
            Err(e) => state.spec_error = Some(format!("node spec record is unreadable: {e}")),
        }
        match initial.status {
            None => {}
            Some(Ok(status)) => state.status = status,
            Some(Err(e @ CodecError::UnknownVersion { .. })) => {
                // Written by a newer conductor: rewriting it in our older format would lose
                // what we cannot read. Leave the node alone; a newer conductor can serve it.
                tracing::error!(node = %state.id, error = %e, "status written by a newer version; not touching this node");
                state.passive = Some(e.to_string());
            }
            Some(Err(e)) => {
                tracing::error!(node = %state.id, error = %e, "corrupt status record; resetting it to \"error\"");
                state.status.provision_state = ProvisionState::Error;
                state.status.last_error = Some(format!(
                    "status record was unreadable ({e}); the provision state before it was lost"
                ));
                state.dirty = true;
            }
        }
        if state.status.provision_state.is_wait() && state.status.agent.is_some() {
            // A heartbeat may have come while nobody owned the node: look at the last one.
            let (me, cluster, id) = (myself.clone(), state.ctx.cluster.clone(), state.id);
            tokio::spawn(async move {
                match cluster.last_heartbeat_rev(&id).await {
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
        match msg {
            NodeMsg::Spec(spec, rev) => {
                // The watch and the acquisition read race: never go back to an older spec.
                if rev > state.spec_rev {
                    state.spec_rev = rev;
                    let bmc_changed = state.spec.as_ref().is_none_or(|s| {
                        s.driver != spec.driver || s.driver_info != spec.driver_info
                    });
                    if bmc_changed && state.power_in_flight.is_none() {
                        // New credentials or address: the next command opens a new session.
                        if let Some(p) = state.power.take() {
                            p.stop(Some("driver_info changed".into()));
                        }
                    }
                    let was = state.spec.as_ref().map(|s| s.maintenance);
                    let entry = match (was, spec.maintenance) {
                        (Some(false), true) => Some(format!(
                            "maintenance set: {}",
                            spec.maintenance_reason
                                .as_deref()
                                .unwrap_or("no reason given")
                        )),
                        (Some(true), false) => Some(match state.status.fault.as_deref() {
                            Some(f) => format!("maintenance unset; fault \"{f}\" cleared"),
                            None => "maintenance unset".to_string(),
                        }),
                        _ => None,
                    };
                    // Maintenance set because of a fault is the conductor's act, not a user's.
                    let by = if spec.maintenance && state.status.fault.is_some() {
                        "conductor"
                    } else if !spec.maintenance
                        && state.status.remediation.as_ref().is_some_and(|r| r.active)
                    {
                        "remediation"
                    } else {
                        "api"
                    };
                    state.spec = Some(spec);
                    state.spec_error = None;
                    if let Some(action) = entry {
                        // Ironic: leaving maintenance clears maintenance_reason (the spec's)
                        // and fault (the status's, so the owner clears it). Both directions
                        // go into the node's history.
                        let mut next = state.status.clone();
                        if action.starts_with("maintenance unset") {
                            next.fault = None;
                            next.fault_at_ms = None;
                            // The fault episode is over; a new fault may be remediated again.
                            next.remediation = None;
                            let timeout = callback_timeout_ms(
                                &spec_now(state),
                                state.ctx.callback_timeout_ms,
                            );
                            restart_wait_on_leaving_maintenance(&mut next, now_ms(), timeout);
                        }
                        let h = history(state, "maintenance", &action, by, None);
                        let extras = Extras {
                            history: Some(h),
                            event: None,
                        };
                        if Box::pin(after_commit(&myself, state, next, extras))
                            .await
                            .is_some()
                        {
                            return Ok(());
                        }
                    }
                    Box::pin(reconcile(&myself, state)).await;
                }
            }
            NodeMsg::SpecUnreadable(error, rev) => {
                if rev > state.spec_rev {
                    state.spec_rev = rev;
                    state.spec_error = Some(format!("node spec record is unreadable: {error}"));
                    Box::pin(reconcile(&myself, state)).await;
                }
            }
            NodeMsg::Reconcile => {
                state.retry_pending = false;
                Box::pin(reconcile(&myself, state)).await;
            }
            NodeMsg::ProvisionStep { state: step, ok } => {
                if state.work_scheduled == Some(step) {
                    state.work_scheduled = None;
                    let work = Work::Step {
                        state: step,
                        after_ms: 0,
                        ok,
                    };
                    if Box::pin(drive(&myself, state, Some(work))).await.is_none() {
                        Box::pin(reconcile(&myself, state)).await;
                    }
                }
            }
            NodeMsg::Power(event) => {
                Box::pin(on_power_event(&myself, state, event)).await;
                Box::pin(reconcile(&myself, state)).await;
            }
            NodeMsg::Heartbeat(hb, rev) => {
                let waiting =
                    state.status.provision_state.is_wait() && state.hw_in_flight.is_none();
                if rev > state.hb_seen && !waiting {
                    state.early_hb = Some((hb, rev));
                } else if rev > state.hb_seen {
                    state.hb_seen = rev;
                    if Box::pin(on_agent_heartbeat(&myself, state, &hb, rev))
                        .await
                        .is_none()
                    {
                        Box::pin(reconcile(&myself, state)).await;
                    }
                }
            }
            NodeMsg::WaitDeadline(deadline) => {
                if state.deadline_armed == Some(deadline) {
                    state.deadline_armed = None;
                }
                if Box::pin(on_wait_deadline(&myself, state)).await.is_none() {
                    Box::pin(reconcile(&myself, state)).await;
                }
            }
            NodeMsg::Remediate => {
                state.remedy_later = false;
                Box::pin(reconcile(&myself, state)).await;
            }
            NodeMsg::Ping(reply) => {
                let _ = reply.send(NodeSnapshot {
                    id: state.id,
                    token: state.token,
                    provision_state: state.status.provision_state,
                    power_seq_done: state.status.power_seq_done,
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Handed over or shutting down: the console ends before the reservation is released, so
        // the BMC's one session is free when the new owner opens it.
        if let Some((console, _)) = state.console.take() {
            ConsoleActor::stop_and_wait(&console, StopReason::OwnerChanged, CONSOLE_STOP_BOUND)
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
        if let SupervisionEvent::ActorTerminated(cell, _, _)
        | SupervisionEvent::ActorFailed(cell, _) = &evt
        {
            if state
                .console
                .as_ref()
                .is_some_and(|(c, _)| c.get_id() == cell.get_id())
            {
                state.console = None;
                if let SupervisionEvent::ActorFailed(_, err) = &evt {
                    tracing::error!(node = %state.id, error = %err, "console actor crashed; reopening");
                }
                schedule_retry(&myself, state);
            }
            if state
                .power
                .as_ref()
                .is_some_and(|p| p.get_id() == cell.get_id())
            {
                state.power = None;
                let lost = state.power_in_flight.take().is_some()
                    | state.boot_in_flight.take().is_some()
                    | state.hw_in_flight.take().is_some();
                if let SupervisionEvent::ActorFailed(_, err) = &evt {
                    tracing::error!(node = %state.id, error = %err, "power actor crashed");
                }
                if lost && may_command(state) {
                    schedule_retry(&myself, state);
                }
            }
        }
        Ok(())
    }
}

async fn read_initial(cluster: &Cluster, id: &NodeId) -> Result<Initial, ActorProcessingErr> {
    match cluster.get_node(&id.to_string()).await {
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
        }),
        Err(ClusterError::Corrupt { source, .. }) => Ok(Initial {
            spec: Err(source),
            spec_rev: 0,
            status: None,
        }),
        Err(e) => Err(Box::new(e)),
    }
}

/// Whether this actor may start BMC work at all (not being stopped, lease certainly alive).
fn may_command(state: &NodeState) -> bool {
    !state.stopping.load(Ordering::Acquire) && state.ctx.fence.check(Duration::ZERO).is_ok()
}

enum Commit {
    Done,
    /// etcd did not take the write; it stays dirty and is retried.
    Later,
    /// Someone else owns the node now.
    Fenced,
}

/// Extra records that go with a status write.
#[derive(Default)]
struct Extras {
    history: Option<HistoryEntry>,
    event: Option<EventRecord>,
}

async fn reconcile(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    if let Some(why) = &state.passive {
        tracing::debug!(node = %state.id, why, "passive");
        return;
    }
    // Bounded: each step either finishes a request (advancing a sequence number) or returns.
    for _ in 0..16 {
        if state.dirty {
            let status = state.status.clone();
            match commit(state, status, Extras::default()).await {
                Commit::Done => {}
                Commit::Later => return schedule_retry(myself, state),
                Commit::Fenced => return fenced(myself, state),
            }
        }
        if let Some(error) = state.spec_error.clone() {
            if state.status.last_error.as_deref() != Some(error.as_str())
                || state.status.fence != state.token.0
            {
                tracing::error!(node = %state.id, %error, "cannot act on this node");
                let mut next = take_over(&state.status, &state.ctx.me, state.token, now_ms());
                next.last_error = Some(error);
                state.status = next;
                state.dirty = true;
                continue;
            }
            return;
        }
        if state.power_in_flight.is_some()
            || state.boot_in_flight.is_some()
            || state.hw_in_flight.is_some()
        {
            // One operation at a time per node; the power actor's event continues from here.
            return;
        }
        let Some(spec) = state.spec.as_deref() else {
            return;
        };
        let step = next_step(spec, &state.status, &state.ctx.me, state.token);
        if step != Step::TakeOver {
            if let Some(error) = sync_console(myself, state).await {
                // Ironic records a console that cannot start; here it goes to the history (not
                // last_error, which belongs to provisioning), once per distinct error.
                let entry = history(state, "console", "enable", "conductor", Some(error));
                let next = state.status.clone();
                let extras = Extras {
                    history: Some(entry),
                    event: None,
                };
                if after_commit(myself, state, next, extras).await.is_some() {
                    return;
                }
            }
        }
        let Some(spec) = state.spec.as_deref() else {
            return;
        };
        match step {
            Step::TakeOver => {
                let next = take_over(&state.status, &state.ctx.me, state.token, now_ms());
                if !takeover_needs_write(&state.status, &next) {
                    // Ownership itself is recorded by the reservation; writing every node's
                    // status on every hand-over would double etcd's load on a failover.
                    state.status = next;
                    continue;
                }
                let entry = history(
                    state,
                    "takeover",
                    &format!("taken over by {}", state.ctx.me),
                    "conductor",
                    next.last_error.clone(),
                );
                match commit(
                    state,
                    next,
                    Extras {
                        history: Some(entry),
                        event: None,
                    },
                )
                .await
                {
                    Commit::Done => continue,
                    Commit::Later => return schedule_retry(myself, state),
                    Commit::Fenced => return fenced(myself, state),
                }
            }
            Step::Power(req) => {
                if !may_command(state) {
                    return;
                }
                let (next, plan, phase) = power_start(spec, &state.status, &req, now_ms());
                if next.power_op != state.status.power_op && plan.target.is_soft() {
                    // Record a graceful operation before the first BMC command: its deadline
                    // must survive a takeover. A hard operation needs no record: a new owner
                    // finds the request pending in the spec and re-checks the hardware.
                    match commit(state, next, Extras::default()).await {
                        Commit::Done => {}
                        Commit::Later => return schedule_retry(myself, state),
                        Commit::Fenced => return fenced(myself, state),
                    }
                } else {
                    state.status = next;
                }
                match power_actor(myself, state).await {
                    Ok(power) => {
                        state.power_in_flight = Some(req.seq);
                        let _ = power.send_message(PowerMsg::Run(plan, phase));
                        return;
                    }
                    Err(error) => {
                        let outcome = Outcome::Failed {
                            error,
                            fault: false,
                            power: None,
                        };
                        finish_power(myself, state, req.seq, outcome).await;
                        continue;
                    }
                }
            }
            Step::BootDevice(req) => {
                if !may_command(state) {
                    return;
                }
                match power_actor(myself, state).await {
                    Ok(power) => {
                        state.boot_in_flight = Some(req.seq);
                        let _ = power.send_message(PowerMsg::Boot {
                            seq: req.seq,
                            device: req.device,
                            persistent: req.persistent,
                        });
                        return;
                    }
                    Err(error) => {
                        let next = boot_finished(&state.status, &req, &Err(error.clone()));
                        let entry = history(
                            state,
                            "boot device",
                            req.device.as_str(),
                            &req.requested_by,
                            Some(error),
                        );
                        if let Some(c) = record(myself, state, next, entry).await {
                            return c;
                        }
                    }
                }
            }
            Step::Provision(req) => {
                let before = state.status.provision_state;
                let timeout = callback_timeout_ms(spec, state.ctx.callback_timeout_ms);
                let (mut next, mut work) =
                    begin_provision(spec, &state.status, &req, now_ms(), timeout);
                let mut action = format!(
                    "{}: \"{}\" -> \"{}\"",
                    req.verb.as_str(),
                    before.as_str(),
                    next.provision_state.as_str()
                );
                let mut error = work.as_ref().err().cloned();
                if let Ok(Some(Work::Step {
                    state: s,
                    after_ms: 0,
                    ok,
                })) = work
                {
                    // An instant step (automated cleaning off, the fake interface without a
                    // step time): the verb and its step are one transition and one write; a
                    // conductor dying in between leaves the request pending, not the node stuck.
                    let result = step_result(s, ok);
                    error = result.clone().err();
                    let (end, more) = step_done(spec, &next, s, result, now_ms());
                    action = format!("{action} -> \"{}\"", end.provision_state.as_str());
                    next = end;
                    work = Ok(more);
                }
                let entry = history(state, "provision", &action, &req.requested_by, error);
                let extras = Extras {
                    history: Some(entry),
                    event: None,
                };
                if let Some(c) = after_commit(myself, state, next, extras).await {
                    return c;
                }
                if let Some(c) = drive(myself, state, work.ok().flatten()).await {
                    return c;
                }
            }
            Step::Idle => {
                // A provisioning state with work and nothing scheduled: this actor restarted
                // (same owner, same fence) while working. Pick the work up again.
                let st = state.status.provision_state;
                if (st.is_busy() || st == ProvisionState::Verifying)
                    && state.work_scheduled != Some(st)
                {
                    match work_for(spec, &state.status) {
                        Ok(work) => {
                            if let Some(c) = drive(myself, state, work).await {
                                return c;
                            }
                            if state.hw_in_flight.is_some() || state.work_scheduled.is_some() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(node = %state.id, error = %e, "cannot resume provisioning work")
                        }
                    }
                }
                if state.status.provision_state.is_wait() {
                    if let Some((hb, rev)) = state.early_hb.take() {
                        let _ = myself.send_message(NodeMsg::Heartbeat(hb, rev));
                    }
                }
                arm_deadline(myself, state);
                match fault_check(myself, state).await {
                    Some(Flow::Return) => return,
                    Some(Flow::Again) => continue,
                    None => {}
                }
                match remediate(myself, state).await {
                    Some(Flow::Return) => return,
                    Some(Flow::Again) => continue,
                    None => {}
                }
                return;
            }
        }
    }
}

/// The result of a fake step that was or was not told to fail.
fn step_result(state: ProvisionState, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" failed: the fake deploy interface was told to fail here (fake_fail_states)",
            state.as_str()
        ))
    }
}

/// Does provisioning work until it has to wait (a timed step is scheduled) or ends in a state
/// without work. Each transition is written with its history entry. Some(()) when the caller
/// must return (write not taken, or fenced).
async fn drive(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    mut work: Option<Work>,
) -> Option<()> {
    while let Some(w) = work {
        // No readable spec: nothing to drive (None: the caller goes on).
        let spec = state.spec.clone()?;
        let (from, result) = match w {
            Work::Verify => {
                let from = ProvisionState::Verifying;
                match read_power(myself, state).await {
                    Ok(p) => {
                        state.status.power_state = Some(p);
                        (from, Ok(()))
                    }
                    Err(e) => (
                        from,
                        Err(format!("failed to verify the node's driver: {e}")),
                    ),
                }
            }
            Work::Step {
                state: s,
                after_ms,
                ok,
            } if after_ms > 0 => {
                let me = myself.clone();
                state.work_scheduled = Some(s);
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
                    let _ = me.send_message(NodeMsg::ProvisionStep { state: s, ok });
                });
                return None;
            }
            Work::Step { state: s, ok, .. } => (s, step_result(s, ok)),
            Work::Hardware { state: s, hw } => {
                return start_hardware(myself, state, s, hw).await;
            }
        };
        let (next, more) = step_done(&spec, &state.status, from, result.clone(), now_ms());
        if next == state.status {
            return None;
        }
        let action = format!(
            "\"{}\" -> \"{}\"",
            from.as_str(),
            next.provision_state.as_str()
        );
        let entry = history(state, "provision", &action, "conductor", result.err());
        let extras = Extras {
            history: Some(entry),
            event: None,
        };
        if let Some(c) = after_commit(myself, state, next, extras).await {
            return Some(c);
        }
        work = more;
    }
    None
}

/// Commits a status with the history entry that describes it (see `after_commit`).
async fn record(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    next: NodeStatus,
    entry: HistoryEntry,
) -> Option<()> {
    let extras = Extras {
        history: Some(entry),
        event: None,
    };
    after_commit(myself, state, next, extras).await
}

/// Commits and maps the outcome: None to go on, Some(()) when reconcile must return.
async fn after_commit(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    next: NodeStatus,
    extras: Extras,
) -> Option<()> {
    match commit(state, next, extras).await {
        Commit::Done => None,
        Commit::Later => {
            schedule_retry(myself, state);
            Some(())
        }
        Commit::Fenced => {
            fenced(myself, state);
            Some(())
        }
    }
}

/// The node's power actor, spawned (linked to this node actor) if it is not running.
async fn power_actor(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<ActorRef<PowerMsg>, String> {
    if let Some(p) = &state.power {
        return Ok(p.clone());
    }
    let spec = state.spec.as_deref().ok_or("no readable spec")?;
    let bmc = ferric_power::connect(
        &spec.driver,
        &spec.driver_info,
        state.status.power_state,
        &state.ctx.bmc,
    )
    .map_err(|e| e.to_string())?;
    let me = myself.clone();
    let args = PowerArgs {
        node: state.id,
        bmc,
        settings: state.ctx.bmc.clone(),
        fence: Arc::new(crate::fence::LeaseFence(state.ctx.fence.clone())),
        stopping: state.stopping.clone(),
        notify: Arc::new(move |ev| {
            let _ = me.send_message(NodeMsg::Power(ev));
        }),
    };
    let (power, _) = Actor::spawn_linked(None, PowerActor, args, myself.get_cell())
        .await
        .map_err(|e| format!("cannot start the power actor: {e}"))?;
    state.power = Some(power.clone());
    Ok(power)
}

/// Reads the power state through the node's driver (what `manage` verifies).
async fn read_power(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<ferric_model::PowerState, String> {
    if !may_command(state) {
        return Err("conductor is fenced or stopping".into());
    }
    let power = power_actor(myself, state).await?;
    let timeout = state.ctx.bmc.command_timeout + state.ctx.bmc.min_gap + Duration::from_secs(1);
    match ractor::call_t!(power, PowerMsg::Read, timeout.as_millis() as u64) {
        Ok(result) => result,
        Err(e) => Err(format!("no answer from the power actor: {e}")),
    }
}

async fn on_power_event(myself: &ActorRef<NodeMsg>, state: &mut NodeState, event: PowerEvent) {
    match event {
        PowerEvent::SoftSent { seq } => {
            let mut next = state.status.clone();
            if let Some(op) = next.power_op.as_mut().filter(|op| op.seq == seq) {
                op.soft_sent = true;
                let _ = after_commit(myself, state, next, Extras::default()).await;
            }
        }
        PowerEvent::BootDone {
            seq: HW_SEQ,
            result,
        } => {
            hardware_boot_done(myself, state, result).await;
        }
        PowerEvent::Finished {
            seq: HW_SEQ,
            outcome,
        } => {
            if let Some((s, hw, started)) = state.hw_in_flight.take() {
                let (result, power) = match outcome {
                    Outcome::Done { power, .. } => (Ok(()), Some(power)),
                    Outcome::Failed { error, power, .. } => (Err(error), power),
                };
                let _ = finish_hardware(myself, state, (s, hw, started), result, power).await;
            }
        }
        PowerEvent::Finished { seq, outcome } => {
            if state.power_in_flight == Some(seq) {
                state.power_in_flight = None;
            }
            finish_power(myself, state, seq, outcome).await;
        }
        PowerEvent::BootDone { seq, result } => {
            if state.boot_in_flight == Some(seq) {
                state.boot_in_flight = None;
            }
            let Some(req) = state
                .spec
                .as_ref()
                .and_then(|s| s.boot_device_request.clone())
                .filter(|r| r.seq == seq)
            else {
                return;
            };
            let next = boot_finished(&state.status, &req, &result);
            let action = format!(
                "{}{}",
                req.device.as_str(),
                if req.persistent { " (persistent)" } else { "" }
            );
            let entry = history(
                state,
                "boot device",
                &action,
                &req.requested_by,
                result.err(),
            );
            let _ = record(myself, state, next, entry).await;
        }
    }
}

/// Records the end of power operation `seq`: status, history and (if the observed power state
/// changed) an event, in one fenced transaction.
async fn finish_power(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    seq: u64,
    outcome: Outcome,
) {
    let req = state
        .spec
        .as_ref()
        .and_then(|s| s.power_request.clone())
        .filter(|r| r.seq == seq);
    let before = state.status.power_state;
    let mut next = power_finished(&state.status, seq, &outcome, now_ms());
    let (action, error) = match (&outcome, &req) {
        (Outcome::Done { note, .. }, Some(r)) => (
            match note {
                Some(n) => format!("{}: {n}", r.target.as_str()),
                None => r.target.as_str().to_string(),
            },
            None,
        ),
        (Outcome::Failed { error, .. }, Some(r)) => {
            (r.target.as_str().to_string(), Some(error.clone()))
        }
        (_, None) => ("power".to_string(), None),
    };
    let who = req
        .as_ref()
        .map_or("conductor".to_string(), |r| r.requested_by.clone());
    let entry = history(state, "power", &action, &who, error);
    let event = if next.power_state != before && next.power_state.is_some() {
        next.event_seq += 1;
        Some(EventRecord {
            node: state.id,
            seq: next.event_seq,
            instance_uuid: state.spec.as_ref().and_then(|s| s.instance_uuid),
            power_state: next.power_state,
            previous_power_state: before,
            at_ms: now_ms(),
            conductor: state.ctx.me.clone(),
        })
    } else {
        None
    };
    let _ = after_commit(
        myself,
        state,
        next,
        Extras {
            history: Some(entry),
            event,
        },
    )
    .await;
}

fn history(
    state: &NodeState,
    kind: &str,
    action: &str,
    requested_by: &str,
    error: Option<String>,
) -> HistoryEntry {
    HistoryEntry {
        at_ms: now_ms(),
        kind: kind.to_string(),
        action: action.to_string(),
        requested_by: requested_by.to_string(),
        conductor: state.ctx.me.clone(),
        severity: if error.is_some() { "ERROR" } else { "INFO" }.to_string(),
        result: error.unwrap_or_else(|| "ok".to_string()),
    }
}

async fn commit(state: &mut NodeState, mut status: NodeStatus, extras: Extras) -> Commit {
    status.updated_at_ms = now_ms();
    status.owner = Some(state.ctx.me.clone());
    status.fence = state.token.0;
    if extras.history.is_some() {
        status.history_seq += 1;
    }
    let result = state
        .ctx
        .writer
        .write_with(
            state.id,
            state.token,
            &status,
            extras.history.as_ref(),
            extras.event.as_ref(),
        )
        .await;
    match result {
        Ok(()) => {
            state.status = status;
            state.dirty = false;
            Commit::Done
        }
        Err(ClusterError::Fenced(_)) => Commit::Fenced,
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "status write failed; will retry");
            // Keep what happened (the hardware already changed); the status is written later.
            state.status = status;
            state.dirty = true;
            Commit::Later
        }
    }
}

fn schedule_retry(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    if !state.retry_pending {
        state.retry_pending = true;
        let me = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = me.send_message(NodeMsg::Reconcile);
        });
    }
}

fn fenced(myself: &ActorRef<NodeMsg>, state: &NodeState) {
    tracing::warn!(node = %state.id, fence = state.token.0, "status write fenced: another conductor owns this node; stopping");
    state.stopping.store(true, Ordering::Release);
    myself.stop(Some(crate::supervisor::REASON_FENCED.to_string()));
}

fn spec_now(state: &NodeState) -> NodeSpec {
    state
        .spec
        .as_deref()
        .cloned()
        .unwrap_or_else(|| NodeSpec::new(state.id, "", 0))
}

/// What the reconcile loop does after a side decision.
enum Flow {
    /// Stop (waiting for a write, a watch event or a timer).
    Return,
    /// Something changed: look again.
    Again,
}

/// Starts the deploy interface's hardware work `hw` of provisioning state `pstate` on the power
/// actor; its events finish it. Some(()) when the caller must return.
async fn start_hardware(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    pstate: ProvisionState,
    hw: Hardware,
) -> Option<()> {
    if !may_command(state) {
        return Some(());
    }
    let power = match power_actor(myself, state).await {
        Ok(p) => p,
        Err(e) => {
            return finish_hardware(myself, state, (pstate, hw, now_ms()), Err(e), None).await
        }
    };
    state.hw_in_flight = Some((pstate, hw, now_ms()));
    let _ = match hw {
        Hardware::BootRamdisk => power.send_message(PowerMsg::Boot {
            seq: HW_SEQ,
            device: BootDevice::Pxe,
            persistent: false,
        }),
        Hardware::BootDisk => power.send_message(PowerMsg::Boot {
            seq: HW_SEQ,
            device: BootDevice::Disk,
            persistent: true,
        }),
        Hardware::PowerOff => {
            let plan = hw_plan(state, PowerTarget::Off);
            power.send_message(PowerMsg::Run(plan, Phase::Begin))
        }
    };
    Some(())
}

fn hw_plan(state: &NodeState, target: PowerTarget) -> Plan {
    let spec = state.spec.as_deref();
    Plan {
        seq: HW_SEQ,
        target,
        deadline_ms: now_ms() + u64::from(HARD_TIMEOUT_S) * 1000,
        timeout_s: HARD_TIMEOUT_S,
        policy: spec.map(|s| s.soft_off_policy).unwrap_or_default(),
        disable_power_off: spec.is_some_and(|s| s.disable_power_off),
    }
}

/// The boot device of the hardware work is set: now the power half (a reboot powers on a node
/// that is off).
async fn hardware_boot_done(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    result: Result<(), String>,
) {
    let Some((pstate, hw, started)) = state.hw_in_flight else {
        return;
    };
    if let Err(e) = result {
        state.hw_in_flight = None;
        let _ = finish_hardware(
            myself,
            state,
            (pstate, hw, started),
            Err(format!("setting the boot device failed: {e}")),
            None,
        )
        .await;
        return;
    }
    let device = if hw == Hardware::BootRamdisk {
        BootDevice::Pxe
    } else {
        BootDevice::Disk
    };
    state.status.boot_device = Some(device);
    state.status.boot_persistent = hw == Hardware::BootDisk;
    let plan = hw_plan(state, PowerTarget::Reboot);
    match state.power.clone() {
        Some(power) if may_command(state) => {
            let _ = power.send_message(PowerMsg::Run(plan, Phase::Begin));
        }
        _ => {
            // Stopping, or the power actor is gone (its supervision event schedules a retry).
            state.hw_in_flight = None;
        }
    }
}

/// Records the end of hardware work: status (with the power state observed and an event if it
/// changed), history, and the work that follows.
async fn finish_hardware(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    (pstate, hw, started): (ProvisionState, Hardware, u64),
    result: Result<(), String>,
    power: Option<PowerState>,
) -> Option<()> {
    let spec = state.spec.clone()?;
    let timeout = callback_timeout_ms(&spec, state.ctx.callback_timeout_ms);
    let before_power = state.status.power_state;
    let mut base = state.status.clone();
    if power.is_some() {
        base.power_state = power;
    }
    let (mut next, more) = hardware_done(
        &spec,
        &base,
        pstate,
        hw,
        result.clone(),
        started,
        now_ms(),
        timeout,
    );
    if next == state.status {
        return None;
    }
    let action = format!(
        "{}: \"{}\" -> \"{}\"",
        hw.as_str(),
        pstate.as_str(),
        next.provision_state.as_str()
    );
    let entry = history(state, "provision", &action, "conductor", result.err());
    let event = power_event(state, &mut next, before_power);
    if let Some(c) = after_commit(
        myself,
        state,
        next,
        Extras {
            history: Some(entry),
            event,
        },
    )
    .await
    {
        return Some(c);
    }
    Box::pin(drive(myself, state, more)).await
}

/// An outbox event when the observed power state changed (the status's event_seq advances).
fn power_event(
    state: &NodeState,
    next: &mut NodeStatus,
    before: Option<PowerState>,
) -> Option<EventRecord> {
    if next.power_state == before || next.power_state.is_none() {
        return None;
    }
    next.event_seq += 1;
    Some(EventRecord {
        node: state.id,
        seq: next.event_seq,
        instance_uuid: state.spec.as_ref().and_then(|s| s.instance_uuid),
        power_state: next.power_state,
        previous_power_state: before,
        at_ms: now_ms(),
        conductor: state.ctx.me.clone(),
    })
}

/// A heartbeat of the node's agent. Some(()) when the caller must return.
async fn on_agent_heartbeat(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    hb: &HeartbeatRecord,
    rev: i64,
) -> Option<()> {
    let spec = state.spec.clone()?;
    if state.status.owner.as_deref() != Some(state.ctx.me.as_str())
        || state.status.fence != state.token.0
    {
        // Not taken over yet: the reconcile after the takeover reads the last heartbeat again.
        return None;
    }
    let timeout = callback_timeout_ms(&spec, state.ctx.callback_timeout_ms);
    match on_heartbeat(&spec, &state.status, hb, rev, now_ms(), timeout) {
        Heartbeat::Ignored(why) => {
            tracing::debug!(node = %state.id, why, "heartbeat ignored");
            None
        }
        Heartbeat::InMaintenance => {
            tracing::info!(node = %state.id, "heartbeat from a node in maintenance: recorded, no action taken");
            None
        }
        Heartbeat::WrongToken => {
            tracing::warn!(node = %state.id, "heartbeat with an agent token other than the one this boot's agent presented; ignored");
            None
        }
        Heartbeat::Progress {
            status,
            action,
            error,
            work,
        } => {
            let entry = history(state, "provision", &action, "agent", error);
            if let Some(c) = record(myself, state, *status, entry).await {
                return Some(c);
            }
            drive(myself, state, work).await
        }
    }
}

/// Fails the wait state if its deadline passed. Some(()) when the caller must return.
async fn on_wait_deadline(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Option<()> {
    let spec = state.spec.clone()?;
    let (next, error) = wait_timeout(&spec, &state.status, now_ms())?;
    let action = format!(
        "timeout: \"{}\" -> \"{}\"",
        state.status.provision_state.as_str(),
        next.provision_state.as_str()
    );
    let entry = history(state, "provision", &action, "conductor", Some(error));
    record(myself, state, next, entry).await
}

/// Arms a timer for the wait state's deadline (kept in the status, so it survives a takeover).
fn arm_deadline(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    let Some(deadline) = state.status.deadline_ms else {
        return;
    };
    if !state.status.provision_state.is_wait() || state.deadline_armed == Some(deadline) {
        return;
    }
    state.deadline_armed = Some(deadline);
    let me = myself.clone();
    let wait = deadline.saturating_sub(now_ms());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let _ = me.send_message(NodeMsg::WaitDeadline(deadline));
    });
}

fn schedule_remedy(myself: &ActorRef<NodeMsg>, state: &mut NodeState, after: Duration) {
    if !state.remedy_later {
        state.remedy_later = true;
        let me = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = me.send_message(NodeMsg::Remediate);
        });
    }
}

/// Puts a node with a fresh fault into maintenance, or clears a fault an operator's leaving
/// maintenance already ended.
async fn fault_check(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Option<Flow> {
    let spec = state.spec.as_deref()?;
    match fault_vs_maintenance(spec, &state.status) {
        FaultAction::Nothing => None,
        FaultAction::ClearFault => {
            let mut next = state.status.clone();
            let fault = next.fault.take().unwrap_or_default();
            next.fault_at_ms = None;
            next.remediation = None;
            let entry = history(
                state,
                "maintenance",
                &format!("fault \"{fault}\" cleared (maintenance was left)"),
                "conductor",
                None,
            );
            Some(to_flow(record(myself, state, next, entry).await))
        }
        FaultAction::SetMaintenance(reason) => {
            let result = state
                .ctx
                .cluster
                .update_spec_fenced(&state.id, state.token, |view, spec| {
                    if !view.spec.maintenance {
                        spec.maintenance = true;
                        spec.maintenance_reason = Some(reason.clone());
                    }
                    Ok(())
                })
                .await;
            match result {
                // The watch brings the new spec (and the history entry of the transition).
                Ok(_) => Some(Flow::Return),
                Err(ClusterError::Fenced(_)) => {
                    fenced(myself, state);
                    Some(Flow::Return)
                }
                Err(e) => {
                    tracing::warn!(node = %state.id, error = %e, "cannot put the faulty node into maintenance; will retry");
                    schedule_retry(myself, state);
                    Some(Flow::Return)
                }
            }
        }
    }
}

fn to_flow(c: Option<()>) -> Flow {
    match c {
        Some(()) => Flow::Return,
        None => Flow::Again,
    }
}

/// The remediation policy's next move on this node (see `remedy.rs`).
async fn remediate(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Option<Flow> {
    let policy = state.ctx.remediation.borrow().clone();
    let spec = state.spec.as_deref()?;
    let decision = remedy(spec, &state.status, &policy);
    let attempt = |st: &NodeStatus| {
        let r = st.remediation.as_ref();
        let fault = r.map(|r| r.fault.clone()).unwrap_or_default();
        let rule = policy.rule_for(&fault);
        format!(
            "{} for fault \"{fault}\", attempt {} of {}",
            rule.map_or("clean", |r| r.action.as_str()),
            r.map_or(0, |r| r.attempts),
            rule.map_or(0, |r| r.attempts)
        )
    };
    match decision {
        Remedy::Nothing => None,
        Remedy::Start(rule) => {
            if state.remedy_later {
                return None;
            }
            match state
                .ctx
                .cluster
                .take_remediation_slot(&policy, now_ms())
                .await
            {
                Ok(Slot::Granted) => {
                    let mut next = state.status.clone();
                    let tried = next
                        .remediation
                        .as_ref()
                        .filter(|r| r.fault == rule.fault)
                        .map_or(0, |r| r.attempts);
                    next.remediation = Some(Remediation {
                        fault: rule.fault.clone(),
                        attempts: tried + 1,
                        active: true,
                        cleaning: false,
                        started_at_ms: now_ms(),
                    });
                    let action = format!("remediation started: {}", attempt(&next));
                    let entry = history(state, "remediation", &action, "remediation", None);
                    Some(to_flow(record(myself, state, next, entry).await))
                }
                Ok(Slot::Later(ms)) => {
                    tracing::info!(node = %state.id, wait_ms = ms, "remediation rate limit reached; waiting for the next window");
                    // Spread the retries of many nodes over a second.
                    let jitter = u64::from(state.id.to_string().as_bytes()[0] % 64) * 16;
                    schedule_remedy(myself, state, Duration::from_millis(ms + jitter));
                    None
                }
                Err(e) => {
                    tracing::warn!(node = %state.id, error = %e, "cannot take a remediation slot");
                    schedule_remedy(myself, state, Duration::from_secs(5));
                    None
                }
            }
        }
        Remedy::Request(verb) => {
            if verb == Verb::Provide {
                let mut next = state.status.clone();
                if let Some(r) = next.remediation.as_mut() {
                    if !r.cleaning {
                        // Recorded first: a clean failure after this is the attempt's own.
                        r.cleaning = true;
                        return Some(to_flow(
                            after_commit(myself, state, next, Extras::default()).await,
                        ));
                    }
                }
            }
            let result = state
                .ctx
                .cluster
                .update_spec_fenced(&state.id, state.token, |view, spec| {
                    if view.spec.pending_provision(&view.status).is_some() {
                        return Ok(());
                    }
                    spec.provision_request = Some(ProvisionRequest {
                        seq: spec.next_provision_seq(),
                        verb,
                        maintenance_ok: true,
                        args: String::new(),
                        requested_by: "remediation".into(),
                        requested_at_ms: now_ms(),
                    });
                    Ok(())
                })
                .await;
            match result {
                Ok(view) => {
                    if view.spec_rev > state.spec_rev {
                        state.spec_rev = view.spec_rev;
                        state.spec = Some(Box::new(view.spec));
                    }
                    Some(Flow::Again)
                }
                Err(ClusterError::Fenced(_)) => {
                    fenced(myself, state);
                    Some(Flow::Return)
                }
                Err(e) => {
                    tracing::warn!(node = %state.id, error = %e, "remediation could not ask for {}", verb.as_str());
                    schedule_remedy(myself, state, Duration::from_secs(5));
                    Some(Flow::Return)
                }
            }
        }
        Remedy::PowerCheck => {
            let result = read_power(myself, state).await;
            let mut next = state.status.clone();
            match result {
                Ok(p) => {
                    next.power_state = Some(p);
                    Some(remedy_succeeded(myself, state, next, &attempt).await)
                }
                Err(e) => Some(remedy_failed(myself, state, next, &attempt, e).await),
            }
        }
        Remedy::Succeeded => {
            let next = state.status.clone();
            Some(remedy_succeeded(myself, state, next, &attempt).await)
        }
        Remedy::Failed(error) => {
            let next = state.status.clone();
            Some(remedy_failed(myself, state, next, &attempt, error).await)
        }
        Remedy::Abandon => {
            let mut next = state.status.clone();
            next.remediation = None;
            let entry = history(
                state,
                "remediation",
                "remediation stopped: the node left maintenance",
                "remediation",
                None,
            );
            Some(to_flow(record(myself, state, next, entry).await))
        }
    }
}

/// The attempt worked: maintenance is left (the spec), which clears the fault and ends the
/// episode when the watch brings the change back (`NodeMsg::Spec`).
async fn remedy_succeeded(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    mut next: NodeStatus,
    attempt: &(dyn Fn(&NodeStatus) -> String + Sync),
) -> Flow {
    let action = format!("remediation succeeded: {}", attempt(&next));
    if let Some(r) = next.remediation.as_mut() {
        r.active = false;
    }
    let entry = history(state, "remediation", &action, "remediation", None);
    // The status first: a clean failure later is not this attempt's.
    if record(myself, state, next, entry).await.is_some() {
        return Flow::Return;
    }
    let result = state
        .ctx
        .cluster
        .update_spec_fenced(&state.id, state.token, |_, spec| {
            spec.maintenance = false;
            spec.maintenance_reason = None;
            Ok(())
        })
        .await;
    match result {
        Ok(_) => Flow::Return,
        Err(ClusterError::Fenced(_)) => {
            fenced(myself, state);
            Flow::Return
        }
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "remediation succeeded but leaving maintenance failed; the node stays in maintenance");
            Flow::Return
        }
    }
}

/// The attempt failed: the node stays in maintenance with the reason saying so.
async fn remedy_failed(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    mut next: NodeStatus,
    attempt: &(dyn Fn(&NodeStatus) -> String + Sync),
    error: String,
) -> Flow {
    let what = attempt(&next);
    if let Some(r) = next.remediation.as_mut() {
        r.active = false;
    }
    let entry = history(
        state,
        "remediation",
        &format!("remediation failed: {what}"),
        "remediation",
        Some(error.clone()),
    );
    if record(myself, state, next, entry).await.is_some() {
        return Flow::Return;
    }
    let fault = state.status.fault.clone().unwrap_or_default();
    let reason = format!("{fault}: remediation ({what}) failed: {error}");
    let result = state
        .ctx
        .cluster
        .update_spec_fenced(&state.id, state.token, |_, spec| {
            spec.maintenance = true;
            spec.maintenance_reason = Some(reason.clone());
            Ok(())
        })
        .await;
    if let Err(ClusterError::Fenced(_)) = result {
        fenced(myself, state);
    } else if let Err(e) = result {
        tracing::warn!(node = %state.id, error = %e, "could not record the failed remediation in the maintenance reason");
    }
    Flow::Return
}

/// How long a stopping node waits for its console to end (ipmitool's stdin close, SIGINT,
/// SIGKILL and `sol deactivate` fit well within it).
const CONSOLE_STOP_BOUND: Duration = Duration::from_secs(30);

/// Starts, restarts or stops the node's console actor to match the spec's `console_enabled`.
/// The console works in maintenance too (operators diagnose nodes with it). Returns a new
/// error that keeps the console from running.
async fn sync_console(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Option<String> {
    let ctx = state.ctx.consoles.clone()?;
    let wanted = state
        .spec
        .as_deref()
        .filter(|s| s.console_enabled && may_command(state))
        .map(ConsoleTarget::from_spec);
    match (wanted, state.console.take()) {
        (None, None) => state.console_error = None,
        (None, Some((console, _))) => {
            tracing::info!(node = %state.id, "console disabled");
            // The actor cleans up on its own (close viewers, end the session, free the BMC).
            let _ = console.send_message(ConsoleMsg::Stop(StopReason::Disabled));
            state.console_error = None;
        }
        (Some(Ok(target)), Some((console, running))) if running == target => {
            state.console = Some((console, running));
        }
        (Some(Ok(target)), previous) => {
            if let Some((console, _)) = previous {
                // New credentials or address: end the old session before opening the new one.
                ConsoleActor::stop_and_wait(&console, StopReason::Disabled, CONSOLE_STOP_BOUND)
                    .await;
            }
            let node = state.id;
            let args = ConsoleArgs {
                node,
                target: target.clone(),
                ctx,
                record: Some(RecordTo {
                    cluster: state.ctx.cluster.clone(),
                    lease: state.ctx.lease_id,
                    token: state.token,
                }),
                notify: Arc::new(move |ev| match ev {
                    ConsoleEvent::State { state, .. } => {
                        tracing::debug!(%node, ?state, "console state")
                    }
                }),
            };
            match ConsoleActor::spawn_linked(myself.get_cell(), args).await {
                Ok(console) => {
                    tracing::info!(node = %state.id, "console enabled");
                    state.console = Some((console, target));
                    state.console_error = None;
                }
                Err(e) => return console_failed(state, e.to_string()),
            }
        }
        (Some(Err(e)), previous) => {
            if let Some((console, _)) = previous {
                let _ = console.send_message(ConsoleMsg::Stop(StopReason::Disabled));
            }
            return console_failed(state, e.to_string());
        }
    }
    None
}

/// Some(error) the first time this error keeps the console from running.
fn console_failed(state: &mut NodeState, error: String) -> Option<String> {
    if state.console_error.as_deref() == Some(error.as_str()) {
        return None;
    }
    tracing::warn!(node = %state.id, %error, "cannot open the node's console");
    state.console_error = Some(error.clone());
    Some(error)
}

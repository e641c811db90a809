//! The reconcile pass: compares the spec with the status and does the next piece of work until
//! it has to wait. The contract (kube-rs's): a pass ends with an `Action` (wait for the next
//! message, or look again after a while) or a `NodeError`, which the error policy in `effects`
//! turns into what happens next (fenced: stop; unavailable: backoff).

use super::effects::{arm_deadline, flush, history, record, Extras};
use super::{console, power, provision, remediation, NodeMsg, NodeState};
use crate::decide::node_state::{fail_unserved, next_step, take_over, takeover_needs_write, Step};
use crate::error::NodeError;
use ferric_model::{now_ms, HistoryKind, ProvisionState, Requester};
use ractor::ActorRef;
use std::time::Duration;

/// What a reconcile pass asks for when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing more until a message arrives (a watch event, a child's event, a timer).
    AwaitChange,
    /// Look again after this long.
    RequeueAfter(Duration),
}

pub(crate) type Outcome = Result<Action, NodeError>;

/// How a piece of work inside a pass lets the pass go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Nothing here keeps the pass from its next check.
    Go,
    /// Something changed: the pass starts over.
    Again,
    /// The pass ends here (an operation is in flight, or a timer or message is due).
    Wait,
}

/// How many times a pass may start over: each start finishes a request (advancing a sequence
/// number) or records a transition, so a pass is bounded.
const MAX_ROUNDS: usize = 16;

pub(super) async fn reconcile(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Outcome {
    if let Some(why) = &state.passive {
        tracing::debug!(node = %state.id, why, "passive");
        return Ok(Action::AwaitChange);
    }
    for _ in 0..MAX_ROUNDS {
        if round(myself, state).await? != Flow::Again {
            break;
        }
    }
    Ok(Action::AwaitChange)
}

/// One round of the pass: Again when it must start over.
async fn round(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Result<Flow, NodeError> {
    flush(state).await?;
    if let Some(error) = state.spec_error.clone() {
        if state.spec_unreadable {
            // Nothing is written for a node whose spec record cannot be read: its status (and
            // the last_error in it) stays as it was, for whoever repairs the record; the API
            // shows the record's error itself.
            tracing::error!(node = %state.id, %error, "cannot act on this node; writing nothing for it");
            return Ok(Flow::Wait);
        }
        if state.status.last_error.as_deref() != Some(error.as_str())
            || state.status.fence != state.token.0
        {
            tracing::error!(node = %state.id, %error, "cannot act on this node");
            let mut next = take_over(&state.status, &state.ctx.me, state.token, now_ms(), None);
            next.last_error = Some(error);
            record(state, next, Extras::default()).await?;
            return Ok(Flow::Again);
        }
        return Ok(Flow::Wait);
    }
    if state.in_flight.is_busy() {
        // One operation at a time per node; the power actor's event continues from here.
        return Ok(Flow::Wait);
    }
    if std::mem::take(&mut state.bios_due) {
        super::bios::cache_bios(myself, state).await?;
    }
    if state.token_wipe_due {
        super::agent::wipe_agent_token(state).await?;
        state.token_wipe_due = false;
    }
    let Some(spec) = state.spec.as_deref() else {
        return Ok(Flow::Wait);
    };
    let step = next_step(spec, &state.status, &state.ctx.me, state.token);
    let unserved = state.unserved();
    if step != Step::TakeOver {
        if let Some(error) = console::sync_console(myself, state, unserved.is_none()).await {
            // Ironic records a console that cannot start; here it goes to the history (not
            // last_error, which belongs to provisioning), once per distinct error.
            let entry = history(
                state,
                HistoryKind::Console,
                "enable",
                Requester::Conductor,
                Some(error),
            );
            let next = state.status.clone();
            record(state, next, Extras::history(entry)).await?;
        }
    }
    match step {
        Step::TakeOver => {
            let next = take_over(
                &state.status,
                &state.ctx.me,
                state.token,
                now_ms(),
                unserved.as_deref(),
            );
            if !takeover_needs_write(&state.status, &next) {
                // Ownership itself is recorded by the reservation; writing every node's
                // status on every hand-over would double etcd's load on a failover.
                state.status = next;
                return Ok(Flow::Again);
            }
            let action = match unserved {
                None => format!("taken over by {}", state.ctx.me),
                Some(_) => format!("taken over by {} as caretaker", state.ctx.me),
            };
            let detail = next.last_error.clone().or(next.unserved.clone());
            let entry = history(
                state,
                HistoryKind::Takeover,
                &action,
                Requester::Conductor,
                detail,
            );
            record(state, next, Extras::history(entry)).await?;
            Ok(Flow::Again)
        }
        _ if unserved.is_some() => caretaker(myself, state, unserved.unwrap_or_default()).await,
        Step::Power(req) => power::start_power(myself, state, req).await,
        Step::BootDevice(req) => power::start_boot_device(myself, state, req).await,
        Step::Provision(req) => provision::start_provision(myself, state, req).await,
        Step::Idle => {
            if state.status.unserved.is_some() {
                // This conductor serves the node now (its driver or group changed to one of
                // ours): the caretaker's condition ends, and queued requests run.
                let mut next = state.status.clone();
                next.unserved = None;
                let entry = history(
                    state,
                    HistoryKind::Takeover,
                    &format!("served by {}", state.ctx.me),
                    Requester::Conductor,
                    None,
                );
                record(state, next, Extras::history(entry)).await?;
                return Ok(Flow::Again);
            }
            idle(myself, state).await
        }
    }
}

/// The pass of a caretaker: this conductor holds the node only because no live conductor
/// serves its driver and conductor group. It does what needs no hardware: it keeps the status
/// condition that says why, fails a busy state (work that cannot go on anywhere), keeps the
/// wait state's deadline, and leaves every request queued for a conductor that serves the
/// node, which placement hands the node to as soon as one joins. No BMC session, power or
/// console child, heartbeat or remediation runs here.
async fn caretaker(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    unserved: String,
) -> Result<Flow, NodeError> {
    if let Some(next) = fail_unserved(&state.status, now_ms(), &unserved) {
        let action = format!(
            "\"{}\" -> \"{}\" (held by a caretaker)",
            state.status.provision_state.as_str(),
            next.provision_state.as_str()
        );
        let entry = history(
            state,
            HistoryKind::Provision,
            &action,
            Requester::Conductor,
            next.last_error.clone(),
        );
        state.timers.step = None;
        record(state, next, Extras::history(entry)).await?;
        return Ok(Flow::Again);
    }
    if state.status.unserved.as_deref() != Some(unserved.as_str()) {
        let mut next = state.status.clone();
        next.unserved = Some(unserved.clone());
        let entry = history(
            state,
            HistoryKind::Takeover,
            &format!("held by {} as caretaker", state.ctx.me),
            Requester::Conductor,
            Some(unserved),
        );
        record(state, next, Extras::history(entry)).await?;
        return Ok(Flow::Again);
    }
    arm_deadline(myself, state);
    match remediation::fault_check(myself, state).await? {
        Flow::Go => Ok(Flow::Wait),
        flow => Ok(flow),
    }
}

/// No request is pending: resume interrupted work, arm the wait deadline, and look at faults
/// and remediation.
async fn idle(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Result<Flow, NodeError> {
    // A provisioning state with work and nothing scheduled: this actor restarted (same owner,
    // same fence) while working, or work waited for another operation. Pick it up again.
    let st = state.status.provision_state;
    let resumable =
        (st.is_busy() || st == ProvisionState::Verifying) && state.timers.step != Some(st);
    if resumable
        && (provision::resume(myself, state).await? == Flow::Wait
            || state.in_flight.is_busy()
            || state.timers.step.is_some())
    {
        return Ok(Flow::Wait);
    }
    if state.status.provision_state.is_wait() {
        if let Some((hb, rev)) = state.early_hb.take() {
            let _ = myself.send_message(NodeMsg::Heartbeat(hb, rev));
        }
        if super::agent::resume_agent(myself, state).await? == Flow::Wait {
            return Ok(Flow::Wait);
        }
    }
    arm_deadline(myself, state);
    super::sync::arm_probe(myself, state);
    match remediation::fault_check(myself, state).await? {
        Flow::Go => {}
        flow => return Ok(flow),
    }
    match remediation::remediate(myself, state).await? {
        Flow::Go => Ok(Flow::Wait),
        flow => Ok(flow),
    }
}

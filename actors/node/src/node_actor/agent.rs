//! The agent's side of provisioning: heartbeats, the calls to the agent's command API that
//! drive a waiting node (one at a time, in flight like a BMC operation), and the deadline of
//! each wait state.

use super::effects::{history, record, Extras};
use super::in_flight::InFlight;
use super::provision::drive;
use super::reconcile::{reconcile, Action, Flow, Outcome};
use super::{NodeMsg, NodeState};
use crate::agent_client::{AgentTarget, Verify};
use crate::decide::agent::{
    current_link, next_call, on_answer, on_heartbeat, record_posting, records_before_posting,
    wait_timeout, AgentCall, CallResult, Heartbeat, Then,
};
use crate::error::NodeError;
use ferric_model::{now_ms, HeartbeatRecord, HistoryKind, Requester};
use ractor::ActorRef;

/// A heartbeat from the watch. One that comes before the node waits for it (the agent can be
/// faster than the read-back that confirms the ramdisk boot) is kept until the node waits.
pub(super) async fn on_heartbeat_msg(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    hb: Box<HeartbeatRecord>,
    rev: i64,
) -> Outcome {
    if rev <= state.hb_seen {
        return Ok(Action::AwaitChange);
    }
    let booting = matches!(state.in_flight, InFlight::Hardware { .. });
    // A caretaker keeps it too: what a heartbeat starts needs the node's hardware, and the
    // conductor that takes the node over reads the last heartbeat again.
    if !state.status.provision_state.is_wait() || booting || state.unserved().is_some() {
        // Inspection data ends the wait it comes early for: a later plain heartbeat of the
        // same ramdisk must not take its place.
        let keep = state
            .early_hb
            .as_ref()
            .is_some_and(|(early, _)| early.is_inspection_result() && !hb.is_inspection_result());
        if !keep {
            state.early_hb = Some((hb, rev));
        }
        return Ok(Action::AwaitChange);
    }
    state.hb_seen = rev;
    match on_agent_heartbeat(myself, state, &hb, rev).await? {
        Flow::Wait => Ok(Action::AwaitChange),
        _ => reconcile(myself, state).await,
    }
}

async fn on_agent_heartbeat(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    hb: &HeartbeatRecord,
    rev: i64,
) -> Result<Flow, NodeError> {
    let Some(spec) = state.spec.clone() else {
        return Ok(Flow::Go);
    };
    if state.status.owner.as_deref() != Some(state.ctx.me.as_str())
        || state.status.fence != state.token.0
    {
        // Not taken over yet: the reconcile after the takeover reads the last heartbeat again.
        return Ok(Flow::Go);
    }
    let timeout = state.callback_timeout_ms();
    match on_heartbeat(&spec, &state.status, hb, rev, now_ms(), timeout) {
        Heartbeat::Drive(changed) => {
            if let Some(next) = changed {
                record(state, *next, Extras::default()).await?;
            }
            // Whatever runs is polled now (IPA heartbeats at once when a command ends).
            drive_agent(myself, state).await
        }
        Heartbeat::Ignored(why) => {
            tracing::debug!(node = %state.id, why, "heartbeat ignored");
            Ok(Flow::Go)
        }
        Heartbeat::InMaintenance => {
            tracing::info!(node = %state.id, "heartbeat from a node in maintenance: recorded, no action taken");
            Ok(Flow::Go)
        }
        Heartbeat::WrongToken => {
            // The pin may come from a heartbeat recorded while no token was issued: the agent
            // of the boot before, still heartbeating with its own token as this boot began
            // (the gateway takes a token it has no record of). The token this boot's lookup
            // issued wins over such a pin.
            let issued = state
                .ctx
                .store
                .agent_token(state.id)
                .await
                .map_err(|e| NodeError::from_cluster(state.id, e))?;
            let pinned = state.status.agent.as_ref().and_then(|a| a.token.clone());
            let repin = issued.as_ref().is_some_and(|rec| {
                rec.matches(hb.agent_token.as_deref()) && !rec.matches(pinned.as_deref())
            });
            if !repin {
                tracing::warn!(node = %state.id, "heartbeat with an agent token other than the one this boot's agent presented; ignored");
                return Ok(Flow::Go);
            }
            tracing::warn!(node = %state.id, "the agent token pinned for this boot was not the one its lookup issued; following the issued one");
            let mut next = state.status.clone();
            if let Some(a) = next.agent.as_mut() {
                a.token = hb.agent_token.clone();
            }
            record(state, next, Extras::default()).await?;
            Box::pin(on_agent_heartbeat(myself, state, hb, rev)).await
        }
        Heartbeat::Progress {
            status,
            action,
            error,
            work,
        } => {
            let entry = history(
                state,
                HistoryKind::Provision,
                &action,
                Requester::Agent,
                error,
            );
            record(state, *status, Extras::history(entry)).await?;
            drive(myself, state, work).await
        }
    }
}

/// The next call to the agent, if one is due and none is in flight: written into the status
/// first when it must not run twice, then sent from a task whose answer comes back as
/// `AgentAnswer`.
pub(super) async fn drive_agent(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<Flow, NodeError> {
    if state.in_flight.is_busy() || !state.may_command() || state.unserved().is_some() {
        return Ok(Flow::Wait);
    }
    let Some(spec) = state.spec.clone() else {
        return Ok(Flow::Go);
    };
    let Some(call) = next_call(&spec, &state.status) else {
        return Ok(Flow::Go);
    };
    if records_before_posting(&call) {
        let next = record_posting(&state.status, &call, now_ms());
        if next != state.status {
            record(state, next, Extras::default()).await?;
        }
    }
    let Some(link) = current_link(&state.status) else {
        return Ok(Flow::Go);
    };
    let target = AgentTarget {
        url: link.url.clone(),
        token: state.status.agent.as_ref().and_then(|a| a.token.clone()),
        verify: Verify::for_node(link.verify_ca.as_deref(), state.info.get("agent_verify_ca")),
    };
    tracing::debug!(node = %state.id, call = %call.describe(&state.status), url = %target.url, "calling the agent");
    state.in_flight = InFlight::Agent(state.status.provision_state);
    let api = state.ctx.agents.api.clone();
    let me = myself.clone();
    state.agent_call_seq += 1;
    let seq = state.agent_call_seq;
    let task = tokio::spawn(async move {
        let result = api.call(&target, &call).await;
        let _ = me.send_message(NodeMsg::AgentAnswer(seq, Box::new((call, result))));
    });
    state.agent_call = Some(task.abort_handle());
    Ok(Flow::Wait)
}

/// The agent answered (or did not): the status, history and work that follow, and when the
/// agent is called next.
pub(super) async fn on_agent_answer(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    call: AgentCall,
    result: CallResult,
) -> Outcome {
    if matches!(state.in_flight, InFlight::Agent(_)) {
        state.in_flight = InFlight::Idle;
        state.agent_call = None;
    }
    let Some(spec) = state.spec.clone() else {
        return reconcile(myself, state).await;
    };
    let label = match &result {
        CallResult::Command(_) | CallResult::Listed(_) => "answered",
        CallResult::Busy(_) => "busy",
        CallResult::Unreachable(_) => "unreachable",
        CallResult::Refused(_) => "refused",
    };
    crate::metrics::NODES
        .agent_calls
        .get_or_create(&crate::metrics::ResultLabel { result: label })
        .inc();
    if let CallResult::Unreachable(e) = &result {
        tracing::warn!(node = %state.id, call = %call.describe(&state.status), error = %e, "the agent did not answer");
    }
    let answer = on_answer(
        &spec,
        &state.status,
        &call,
        result,
        now_ms(),
        state.ctx.agents.max_attempts,
    );
    if let Some(next) = answer.status {
        if *next != state.status {
            let extras = match answer.action {
                Some(action) => Extras::history(history(
                    state,
                    HistoryKind::Provision,
                    &action,
                    Requester::Agent,
                    answer.error,
                )),
                None => Extras::default(),
            };
            record(state, *next, extras).await?;
        }
    }
    if drive(myself, state, answer.work).await? == Flow::Wait {
        return Ok(Action::AwaitChange);
    }
    match answer.then {
        Then::CallNow => {
            if drive_agent(myself, state).await? == Flow::Wait {
                return Ok(Action::AwaitChange);
            }
        }
        Then::PollLater => agent_after(myself, state, state.ctx.agents.poll_interval),
        Then::RetryLater => agent_after(myself, state, state.ctx.agents.retry_interval),
        Then::Stop => {}
    }
    reconcile(myself, state).await
}

/// The agent's timer fired: call it if a call is still due.
pub(super) async fn on_agent_timer(myself: &ActorRef<NodeMsg>, state: &mut NodeState) -> Outcome {
    if drive_agent(myself, state).await? == Flow::Wait {
        return Ok(Action::AwaitChange);
    }
    reconcile(myself, state).await
}

/// Arms the agent's timer unless it is armed.
fn agent_after(myself: &ActorRef<NodeMsg>, state: &mut NodeState, after: std::time::Duration) {
    if !state.timers.agent {
        state.timers.agent = true;
        myself.send_after(after, || NodeMsg::AgentTimer);
    }
}

/// A pass found the node waiting for its agent with nothing scheduled (a new owner, a
/// restarted actor): the conversation goes on where the status says it is.
pub(super) async fn resume_agent(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<Flow, NodeError> {
    if state.timers.agent {
        return Ok(Flow::Go);
    }
    drive_agent(myself, state).await
}

/// The wait state's deadline timer fired: fail the wait state if the deadline passed.
pub(super) async fn on_deadline_timer(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    deadline: u64,
) -> Outcome {
    if state.timers.deadline == Some(deadline) {
        state.timers.deadline = None;
    }
    if let Some(spec) = state.spec.clone() {
        if let Some((next, error)) = wait_timeout(&spec, &state.status, now_ms()) {
            let action = format!(
                "timeout: \"{}\" -> \"{}\"",
                state.status.provision_state.as_str(),
                next.provision_state.as_str()
            );
            let entry = history(
                state,
                HistoryKind::Provision,
                &action,
                Requester::Conductor,
                Some(error),
            );
            record(state, next, Extras::history(entry)).await?;
        }
    }
    reconcile(myself, state).await
}

/// Wipes the node's agent token: a new ramdisk boot gets a new one, and ended work none.
/// Fenced; an unavailable etcd is an error (the caller's work is retried), since an old token
/// left valid would lock the next ramdisk out.
pub(super) async fn wipe_agent_token(state: &mut NodeState) -> Result<(), NodeError> {
    state
        .ctx
        .store
        .wipe_agent_token(state.id, state.token)
        .await
        .map_err(|e| NodeError::from_cluster(state.id, e))
}

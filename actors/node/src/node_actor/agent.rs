//! The agent's side of provisioning: heartbeats that advance a waiting node, and the deadline
//! of each wait state.

use super::effects::{history, record, Extras};
use super::in_flight::InFlight;
use super::provision::drive;
use super::reconcile::{reconcile, Action, Flow, Outcome};
use super::{NodeMsg, NodeState};
use crate::decide::agent::{on_heartbeat, wait_timeout, Heartbeat};
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
        Heartbeat::Ignored(why) => {
            tracing::debug!(node = %state.id, why, "heartbeat ignored");
            Ok(Flow::Go)
        }
        Heartbeat::InMaintenance => {
            tracing::info!(node = %state.id, "heartbeat from a node in maintenance: recorded, no action taken");
            Ok(Flow::Go)
        }
        Heartbeat::WrongToken => {
            tracing::warn!(node = %state.id, "heartbeat with an agent token other than the one this boot's agent presented; ignored");
            Ok(Flow::Go)
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

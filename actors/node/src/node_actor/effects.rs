//! The effects of a node actor's decisions: fenced status writes with their history entry and
//! outbox event, timers, and the error policy that says what a failed write leads to.

use super::reconcile::{Action, Outcome};
use super::remediation::set_fault_maintenance;
use super::{NodeMsg, NodeState};
use crate::decide::remedy::{fault_vs_maintenance, FaultAction};
use crate::error::NodeError;
use ferric_model::{
    now_ms, EventRecord, HistoryEntry, HistoryKind, NodeStatus, PowerState, ProvisionState,
    Requester,
};
use ractor::ActorRef;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

/// How soon a node looks again after a child ended or could not start.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// The first retry after a failed etcd request; it doubles per failure up to `BACKOFF_CAP`.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Records that go with a status write, in the same transaction.
#[derive(Default)]
pub(super) struct Extras {
    pub(super) history: Option<HistoryEntry>,
    pub(super) event: Option<EventRecord>,
}

impl Extras {
    pub(super) fn history(entry: HistoryEntry) -> Self {
        Extras {
            history: Some(entry),
            event: None,
        }
    }

    pub(super) fn with_event(mut self, event: Option<EventRecord>) -> Self {
        self.event = event;
        self
    }
}

pub(super) fn history(
    state: &NodeState,
    kind: HistoryKind,
    action: &str,
    requested_by: impl Into<Requester>,
    error: Option<String>,
) -> HistoryEntry {
    HistoryEntry {
        at_ms: now_ms(),
        kind,
        action: action.to_string(),
        requested_by: requested_by.into(),
        conductor: state.ctx.me.clone(),
        severity: if error.is_some() { "ERROR" } else { "INFO" }.to_string(),
        result: error.unwrap_or_else(|| "ok".to_string()),
    }
}

/// Writes `status` (fenced by the reservation) with its extras. It is the node's status from
/// now on, written or not: the hardware already changed. A write etcd does not take is kept,
/// with its history entry and event, and written before anything newer (`flush`), so no
/// entry or event is lost and their sequence numbers stay in order.
pub(super) async fn record(
    state: &mut NodeState,
    mut status: NodeStatus,
    extras: Extras,
) -> Result<(), NodeError> {
    use ProvisionState as S;
    if matches!(state.status.provision_state, S::Cleaning | S::CleanWait)
        && matches!(status.provision_state, S::Available | S::Manageable)
    {
        // Cleaning ended: the settings are cached again (Ironic does it around cleaning).
        state.bios_due = true;
    }
    if state.status.provision_state.agent_may_look_up()
        && !status.provision_state.agent_may_look_up()
    {
        // The agent's work ended: its token goes (Ironic's `wipe_token_and_url`).
        state.token_wipe_due = true;
    }
    if let super::in_flight::InFlight::Agent(waiting) = state.in_flight {
        if status.provision_state != waiting {
            // The wait ended (a timeout, an abort, the agent's own error): a call still out to
            // the agent is of no use, and must not hold the node's next operation up.
            if let Some(call) = state.agent_call.take() {
                call.abort();
            }
            state.in_flight = super::in_flight::InFlight::Idle;
        }
    }
    let fresh_fault = status.fault.is_some()
        && (status.fault != state.status.fault || status.fault_at_ms != state.status.fault_at_ms);
    if let Some(FaultAction::SetMaintenance(reason)) = state
        .spec
        .as_deref()
        .filter(|_| fresh_fault)
        .map(|spec| fault_vs_maintenance(spec, &status))
    {
        // Ironic sets the fault, maintenance and the failed state in one save. Here the spec's
        // maintenance is written first, so whoever sees the failure (a client waiting for
        // `clean failed`) sees maintenance too, and an operator's `DELETE maintenance` after
        // it is not undone by a later write. If etcd fails this write, `fault_check` makes it
        // after the status.
        match set_fault_maintenance(state, &reason).await {
            Ok(true) => status.fault_maintenance = Some(reason),
            Ok(false) => {}
            Err(e @ NodeError::Fenced(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(node = %state.id, error = %e, "maintenance for a fault not written before its status; it will be after it");
            }
        }
    }
    status.updated_at_ms = now_ms();
    status.owner = Some(state.ctx.me.clone());
    status.fence = state.token.0;
    if extras.history.is_some() {
        status.history_seq += 1;
    }
    state.status = status.clone();
    if state
        .unsent
        .back()
        .is_some_and(|(_, e)| e.history.is_none() && e.event.is_none())
    {
        // A bare status that was never written is superseded by this one.
        state.unsent.pop_back();
    }
    state.unsent.push_back((status, extras));
    flush(state).await
}

/// Writes what etcd has not taken yet, oldest first.
pub(super) async fn flush(state: &mut NodeState) -> Result<(), NodeError> {
    while let Some((status, extras)) = state.unsent.front() {
        // Part of the traced request being recorded, if any.
        let span = if tracing::Span::current().is_disabled() {
            tracing::Span::none()
        } else {
            tracing::info_span!("etcd status write", node = %state.id, otel.kind = "client")
        };
        let result = state
            .ctx
            .store
            .write_status(
                state.id,
                state.token,
                status,
                extras.history.as_ref(),
                extras.event.as_ref(),
            )
            .instrument(span)
            .await;
        if let Err(e) = result {
            let e = NodeError::from_cluster(state.id, e);
            if let NodeError::Unavailable { .. } = e {
                tracing::warn!(node = %state.id, error = %e, "status write failed; will retry");
            }
            return Err(e);
        }
        state.unsent.pop_front();
        state.failures = 0;
    }
    Ok(())
}

/// An outbox event when the observed power state changed (the status's event_seq advances).
pub(super) fn power_event(
    state: &NodeState,
    next: &mut NodeStatus,
    before: Option<PowerState>,
) -> Option<EventRecord> {
    // Every change, to unknown too (a power failure): the compute service hears only of on
    // and off, other receivers of everything.
    if next.power_state == before {
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

/// Applies what a pass asked for, or what its error leads to (kube-rs's `error_policy`).
pub(super) fn settle(myself: &ActorRef<NodeMsg>, state: &mut NodeState, outcome: Outcome) {
    let action = match outcome {
        Ok(action) => action,
        Err(e) => match error_policy(state, &e) {
            Some(action) => action,
            None => return fenced(myself, state),
        },
    };
    match action {
        Action::AwaitChange => {}
        Action::RequeueAfter(after) => requeue(myself, state, after),
    }
}

/// Fenced: stop (someone else owns the node). Unavailable: look again after a capped,
/// jittered backoff, so a fleet of nodes does not retry against a recovering etcd in step.
pub(super) fn error_policy(state: &mut NodeState, e: &NodeError) -> Option<Action> {
    match e {
        NodeError::Fenced(_) => None,
        NodeError::Unavailable { .. } => {
            state.failures = state.failures.saturating_add(1);
            Some(Action::RequeueAfter(retry_delay(
                state.failures,
                state.id.as_bytes()[0],
            )))
        }
    }
}

/// `BACKOFF_BASE` doubled per failure after the first, capped, plus up to a quarter of it as
/// jitter chosen by `seed` (a byte of the node's id: spread across nodes, stable per node).
pub(super) fn retry_delay(failures: u32, seed: u8) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let delay = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP);
    delay + delay / 4 * u32::from(seed) / 255
}

/// Arms the `Reconcile` timer unless one is armed.
pub(super) fn requeue(myself: &ActorRef<NodeMsg>, state: &mut NodeState, after: Duration) {
    if !state.timers.retry {
        state.timers.retry = true;
        myself.send_after(after, || NodeMsg::Reconcile);
    }
}

/// Arms the `Remediate` timer unless one is armed.
pub(super) fn remedy_after(myself: &ActorRef<NodeMsg>, state: &mut NodeState, after: Duration) {
    if !state.timers.remedy {
        state.timers.remedy = true;
        myself.send_after(after, || NodeMsg::Remediate);
    }
}

/// Arms the timer that ends the timed step of provisioning state `step`.
pub(super) fn step_after(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    step: ProvisionState,
    after: Duration,
    ok: bool,
) {
    state.timers.step = Some(step);
    myself.send_after(after, move || NodeMsg::ProvisionStep { state: step, ok });
}

/// Arms a timer for the wait state's deadline (kept in the status, so it survives a takeover).
pub(super) fn arm_deadline(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    let Some(deadline) = state.status.deadline_ms else {
        return;
    };
    if !state.status.provision_state.is_wait() || state.timers.deadline == Some(deadline) {
        return;
    }
    state.timers.deadline = Some(deadline);
    let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
    myself.send_after(wait, move || NodeMsg::WaitDeadline(deadline));
}

/// Someone else owns the node: no BMC command may start, and the actor stops.
pub(super) fn fenced(myself: &ActorRef<NodeMsg>, state: &NodeState) {
    tracing::warn!(node = %state.id, fence = state.token.0, "status write fenced: another conductor owns this node; stopping");
    state.stopping.store(true, Ordering::Release);
    myself.stop(Some(crate::supervisor::REASON_FENCED.to_string()));
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_is_capped_and_jitters_by_a_quarter_at_most() {
        assert_eq!(retry_delay(1, 0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, 0), Duration::from_millis(1000));
        assert_eq!(retry_delay(3, 0), Duration::from_millis(2000));
        assert_eq!(retry_delay(30, 0), Duration::from_secs(10));
        assert_eq!(retry_delay(u32::MAX, 0), Duration::from_secs(10));
        assert_eq!(retry_delay(1, 255), Duration::from_millis(625));
        assert!(retry_delay(1, 100) > retry_delay(1, 0));
    }
}

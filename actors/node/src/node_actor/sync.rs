//! Power sync on the node's side: a sweep's read (or a power-failure probe) goes through the
//! node's power path like any command (one BMC command at a time, the per-BMC gap, the fence and
//! the self-fencing deadline), `decide::sync` says what it changes, and the status, history and
//! event are written in one fenced transaction. The `enforce` policy's push is a power operation
//! of the conductor's own (`InFlight::Enforce`).

use super::effects::{history, power_event, record, Extras};
use super::in_flight::InFlight;
use super::power::{power_actor, read_power};
use super::reconcile::{reconcile, Action, Outcome};
use super::{NodeMsg, NodeState};
use crate::decide::node_state::HARD_TIMEOUT_S;
use crate::decide::sync::{in_power_failure, on_read, policy_for};
use crate::error::NodeError;
use crate::store::SpecChange;
use ferric_model::{
    now_ms, HistoryKind, NodeSpec, NodeStatus, PowerTarget, ProvisionState, Requester,
};
use ferric_power::op::{Phase, Plan};
use ferric_power::{Outcome as PowerOutcome, PowerMsg};
use ractor::ActorRef;
use tokio::sync::OwnedSemaphorePermit;

/// The sequence number of sync's own power operations (users' requests count up from 1,
/// provisioning's hardware work uses `u64::MAX`).
pub(super) const SYNC_SEQ: u64 = u64::MAX - 1;

/// Why this node is not read now, or None when it is.
fn skip_reason(state: &NodeState, probe: bool) -> Option<&'static str> {
    let spec = state.spec.as_deref()?;
    let st = &state.status;
    let node = SweepView {
        acting: state.passive.is_none() && state.spec_error.is_none(),
        served: state.unserved().is_none(),
        busy: state.in_flight.is_busy(),
        taken: state.taken(),
    };
    node.skip_reason(spec, st, probe)
}

/// What a sweep needs to know of a node besides its records, to tell whether it reads it
/// (a parked node's supervisor asks too, before waking it for nothing).
pub(crate) struct SweepView {
    /// The conductor acts on the node (its records are readable and of this version).
    pub(crate) acting: bool,
    /// The conductor serves the node's driver and group (it is not only its caretaker).
    pub(crate) served: bool,
    /// An operation of the node's is in flight.
    pub(crate) busy: bool,
    /// The status is this owner's (taken over).
    pub(crate) taken: bool,
}

impl SweepView {
    pub(crate) fn skip_reason(
        &self,
        spec: &NodeSpec,
        st: &NodeStatus,
        probe: bool,
    ) -> Option<&'static str> {
        use ProvisionState as S;
        if !self.acting {
            return Some("not acting on this node");
        }
        if !self.served {
            return Some("held by a caretaker");
        }
        if self.busy
            || st.power_op.is_some()
            || spec.pending_power(st).is_some()
            || spec.pending_boot_device(st).is_some()
            || spec.pending_provision(st).is_some()
        {
            return Some("an operation is in flight or pending");
        }
        if !self.taken {
            return Some("not taken over yet");
        }
        let state_excluded = matches!(
            st.provision_state,
            S::Enroll | S::AdoptFailed | S::Verifying
        ) || st.provision_state.is_busy()
            || st.provision_state.is_wait();
        if state_excluded {
            return Some("its provision state is not synced");
        }
        match (probe, in_power_failure(spec, st)) {
            (true, false) => Some("no power failure to probe"),
            (false, _) if spec.maintenance => Some("in maintenance"),
            _ => None,
        }
    }
}

/// A sweep's read (`probe` false) or a power-failure probe (`probe` true). `permit`: the
/// sweep's concurrency slot, held until the read is done.
pub(super) async fn on_sync(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    probe: bool,
    permit: Option<OwnedSemaphorePermit>,
) -> Outcome {
    if probe {
        state.timers.probe = false;
    }
    if let Some(why) = skip_reason(state, probe) {
        tracing::trace!(node = %state.id, why, "not read by this sweep");
        if probe {
            return reconcile(myself, state).await;
        }
        return Ok(Action::AwaitChange);
    }
    if !state.may_command() {
        return Ok(Action::AwaitChange);
    }
    // A BMC session opened for this read ends with it. A sweep reads each node once per
    // interval, longer than the power actor's idle timeout, so keeping the session only kept
    // an actor per node alive for 30 s after every read: at 300,000 nodes and the default 60 s
    // interval that was half the fleet's nodes with a second actor, and 22 KiB per node
    // instead of 12 (issue 17). A power request or an operation keeps its session as before.
    let opened_here = state.power.is_none();
    let read = read_power(myself, state).await;
    if opened_here && !state.in_flight.is_busy() {
        if let Some(power) = state.power.take() {
            power.stop(Some("idle".into()));
        }
    }
    state.ctx.sync.count(read.is_ok());
    drop(permit);
    let Some(spec) = state.spec.clone() else {
        return Ok(Action::AwaitChange);
    };
    if !state.in_flight.is_busy() && spec.pending_power(&state.status).is_none() {
        let cluster = state.ctx.sync.config.borrow().policy;
        let policy = policy_for(state.info.power_sync(), cluster);
        let out = on_read(
            &spec,
            &state.status,
            read,
            state.sync_mismatch,
            policy,
            state.ctx.sync.settings,
            now_ms(),
        );
        state.sync_mismatch = out.mismatch;
        if let Some(next) = out.status {
            write(state, next, out.history).await?;
        }
        if out.leave_maintenance {
            leave_maintenance(state).await?;
        }
        if let Some(target) = out.push {
            start_push(myself, state, target).await?;
            return Ok(Action::AwaitChange);
        }
    }
    reconcile(myself, state).await
}

/// Writes what a read found: status, history entry and (when the power state changed) the
/// event, in one fenced transaction.
async fn write(
    state: &mut NodeState,
    mut next: NodeStatus,
    entry: Option<(String, Option<String>)>,
) -> Result<(), NodeError> {
    let before = state.status.power_state;
    let event = power_event(state, &mut next, before);
    let extras = match entry {
        Some((action, error)) => {
            let entry = history(
                state,
                HistoryKind::Sync,
                &action,
                Requester::Conductor,
                error,
            );
            Extras::history(entry).with_event(event)
        }
        None => Extras {
            event,
            ..Extras::default()
        },
    };
    record(state, next, extras).await
}

/// The power failure is over and its maintenance is lifted: the watch brings the spec back,
/// and leaving maintenance clears the fault in the history (as a user's leaving does).
async fn leave_maintenance(state: &mut NodeState) -> Result<(), NodeError> {
    match state
        .ctx
        .store
        .update_spec(state.id, state.token, &SpecChange::LeaveMaintenance)
        .await
    {
        Ok(view) => {
            state.own_flip = Some((view.spec_rev, Requester::Conductor));
            Ok(())
        }
        Err(e) => match NodeError::from_cluster(state.id, e) {
            e @ NodeError::Fenced(_) => Err(e),
            e => {
                tracing::warn!(node = %state.id, error = %e, "the power failure is over but leaving maintenance failed; the next probe tries again");
                Ok(())
            }
        },
    }
}

/// `enforce`: restores the last requested power state with a hard action.
async fn start_push(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    target: PowerTarget,
) -> Result<(), NodeError> {
    if !state.may_command() || state.in_flight.is_busy() {
        return Ok(());
    }
    let power = match power_actor(myself, state).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "power sync cannot push");
            return Ok(());
        }
    };
    let spec = state.spec.as_deref();
    let plan = Plan {
        seq: SYNC_SEQ,
        target,
        deadline_ms: now_ms() + u64::from(HARD_TIMEOUT_S) * 1000,
        timeout_s: HARD_TIMEOUT_S,
        policy: spec.map(|s| s.soft_off_policy).unwrap_or_default(),
        disable_power_off: spec.is_some_and(|s| s.disable_power_off),
    };
    state.in_flight = InFlight::Enforce(target);
    let _ = power.send_message(PowerMsg::Run(plan, Phase::Begin));
    Ok(())
}

/// The push ended: its result, why it was done, and the event, in the history.
pub(super) async fn finish_push(
    state: &mut NodeState,
    outcome: PowerOutcome,
) -> Result<(), NodeError> {
    let InFlight::Enforce(target) = state.in_flight.take() else {
        return Ok(());
    };
    state.sync_mismatch = None;
    let before = state.status.power_state;
    let mut next = state.status.clone();
    let now = now_ms();
    next.power_op_ended_ms = Some(now);
    next.updated_at_ms = now;
    let (power, error) = match outcome {
        PowerOutcome::Done { power, .. } => (Some(power), None),
        PowerOutcome::Failed { error, power, .. } => (power, Some(error)),
    };
    if power.is_some() {
        next.power_state = power;
    }
    let why = state
        .spec
        .as_ref()
        .and_then(|s| s.power_request.as_ref())
        .map(|r| {
            format!(
                "the last request, \"{}\" by {}, was not the hardware's state on two sweeps in a row",
                r.target.as_str(),
                r.requested_by
            )
        })
        .unwrap_or_default();
    let action = format!("enforce: {} ({why})", target.as_str());
    let event = power_event(state, &mut next, before);
    let entry = history(
        state,
        HistoryKind::Sync,
        &action,
        Requester::Conductor,
        error,
    );
    record(state, next, Extras::history(entry).with_event(event)).await
}

/// Arms the power-failure probe of a node in maintenance with that fault.
pub(super) fn arm_probe(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    let Some(spec) = state.spec.as_deref() else {
        return;
    };
    if state.timers.probe || !in_power_failure(spec, &state.status) {
        return;
    }
    state.timers.probe = true;
    myself.send_after(state.ctx.sync.failure_interval, || NodeMsg::Sync {
        probe: true,
        permit: None,
    });
}

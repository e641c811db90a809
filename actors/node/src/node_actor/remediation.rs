//! Faults and remediation: a node with a fresh fault goes into maintenance (the conductor's
//! act, as in Ironic), and the remediation policy, when one is set, checks it and returns it to
//! service (see `decide/remedy.rs` for the decisions).

use super::effects::{history, record, remedy_after, Extras};
use super::power::read_power;
use super::reconcile::Flow;
use super::{NodeMsg, NodeState};
use crate::decide::remedy::{fault_vs_maintenance, remedy, FaultAction, Remedy};
use crate::decide::sync::recovered;
use crate::error::NodeError;
use crate::store::SpecChange;
use ferric_cluster::remediation::Slot;
use ferric_model::{
    now_ms, HistoryEntry, HistoryKind, NodeStatus, Remediation, RemediationPolicy, Requester, Verb,
};
use ractor::ActorRef;
use std::time::Duration;

/// How long remediation waits after etcd refused or failed a request of its own.
const REMEDY_RETRY: Duration = Duration::from_secs(5);

/// Puts a node with a fresh fault into maintenance, or clears a fault an operator's leaving
/// maintenance already ended.
pub(super) async fn fault_check(
    _myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<Flow, NodeError> {
    let Some(spec) = state.spec.as_deref() else {
        return Ok(Flow::Go);
    };
    match fault_vs_maintenance(spec, &state.status) {
        FaultAction::Nothing => Ok(Flow::Go),
        FaultAction::ClearFault => {
            let mut next = state.status.clone();
            let fault = next.fault.take().unwrap_or_default();
            next.fault_at_ms = None;
            next.remediation = None;
            let action = format!("fault \"{fault}\" cleared (maintenance was left)");
            let entry = history(
                state,
                HistoryKind::Maintenance,
                &action,
                Requester::Conductor,
                None,
            );
            record(state, next, Extras::history(entry)).await?;
            Ok(Flow::Again)
        }
        FaultAction::SetMaintenance(reason) => {
            // The write that should have come before the fault's status did not (etcd failed
            // it, or the owner died between the two).
            if set_fault_maintenance(state, &reason).await? {
                // Recorded so that the fault's end lifts this maintenance and no other.
                let mut next = state.status.clone();
                next.fault_maintenance = Some(reason);
                record(state, next, Extras::default()).await?;
            }
            Ok(Flow::Wait)
        }
    }
}

/// Maintenance on for a fault, as the owner's act. True when the spec now carries it with
/// `reason` (maintenance an operator set before keeps the operator's reason). The watch brings
/// the new spec, and with it the history entry of the flip.
pub(super) async fn set_fault_maintenance(
    state: &mut NodeState,
    reason: &str,
) -> Result<bool, NodeError> {
    let view = change_spec(state, SpecChange::MaintenanceForFault(reason.to_string())).await?;
    let ours = view.spec.maintenance && view.spec.maintenance_reason.as_deref() == Some(reason);
    if ours {
        state.own_flip = Some((view.spec_rev, Requester::Conductor));
    }
    Ok(ours)
}

/// A fenced change of the node's spec by its owner. The watch brings the new spec back as
/// `NodeMsg::Spec`, which records maintenance flips in the history.
async fn change_spec(
    state: &mut NodeState,
    change: SpecChange,
) -> Result<ferric_cluster::NodeView, NodeError> {
    state
        .ctx
        .store
        .update_spec(state.id, state.token, &change)
        .await
        .map_err(|e| NodeError::from_cluster(state.id, e))
}

/// A history entry of remediation's own.
fn remedy_entry(state: &NodeState, action: &str, error: Option<String>) -> HistoryEntry {
    history(
        state,
        HistoryKind::Remediation,
        action,
        Requester::Remediation,
        error,
    )
}

/// "clean for fault "x", attempt 1 of 3": the attempt as the history names it.
fn attempt(policy: &RemediationPolicy, status: &NodeStatus) -> String {
    let r = status.remediation.as_ref();
    let fault = r.map(|r| r.fault.clone()).unwrap_or_default();
    let rule = policy.rule_for(&fault);
    format!(
        "{} for fault \"{fault}\", attempt {} of {}",
        rule.map_or("clean", |r| r.action.as_str()),
        r.map_or(0, |r| r.attempts),
        rule.map_or(0, |r| r.attempts)
    )
}

/// The remediation policy's next move on this node.
pub(super) async fn remediate(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<Flow, NodeError> {
    let policy = state.ctx.remediation.borrow().clone();
    let Some(spec) = state.spec.as_deref() else {
        return Ok(Flow::Go);
    };
    match remedy(spec, &state.status, &policy) {
        Remedy::Nothing => Ok(Flow::Go),
        Remedy::Start(rule) => {
            if state.timers.remedy {
                return Ok(Flow::Go);
            }
            match state
                .ctx
                .store
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
                    let action = format!("remediation started: {}", attempt(&policy, &next));
                    let entry = remedy_entry(state, &action, None);
                    record(state, next, Extras::history(entry)).await?;
                    Ok(Flow::Again)
                }
                Ok(Slot::Later(ms)) => {
                    tracing::info!(node = %state.id, wait_ms = ms, "remediation rate limit reached; waiting for the next window");
                    // Spread the retries of many nodes over a second.
                    let jitter = u64::from(state.id.to_string().as_bytes()[0] % 64) * 16;
                    remedy_after(myself, state, Duration::from_millis(ms + jitter));
                    Ok(Flow::Go)
                }
                Err(e) => {
                    tracing::warn!(node = %state.id, error = %e, "cannot take a remediation slot");
                    remedy_after(myself, state, REMEDY_RETRY);
                    Ok(Flow::Go)
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
                        record(state, next, Extras::default()).await?;
                        return Ok(Flow::Again);
                    }
                }
            }
            match change_spec(state, SpecChange::Provision(verb)).await {
                Ok(view) => {
                    // Acted on at once (no maintenance flip to record from the watch).
                    if view.spec_rev > state.spec_rev {
                        state.spec_rev = view.spec_rev;
                        state.set_spec(view.spec);
                    }
                    Ok(Flow::Again)
                }
                Err(e @ NodeError::Fenced(_)) => Err(e),
                Err(e) => {
                    tracing::warn!(node = %state.id, error = %e, "remediation could not ask for {}", verb.as_str());
                    remedy_after(myself, state, REMEDY_RETRY);
                    Ok(Flow::Wait)
                }
            }
        }
        Remedy::PowerCheck => {
            // The power-failure probe's read and recovery (`decide::sync::recovered`); the
            // rule, an operator's policy, then returns the node to service whoever set its
            // maintenance.
            let result = read_power(myself, state).await;
            match result {
                Ok(p) => {
                    let next = recovered(&state.status, p);
                    succeeded(state, &policy, next).await
                }
                Err(e) => {
                    let next = state.status.clone();
                    failed(state, &policy, next, e).await
                }
            }
        }
        Remedy::Succeeded => {
            let next = state.status.clone();
            succeeded(state, &policy, next).await
        }
        Remedy::Failed(error) => {
            let next = state.status.clone();
            failed(state, &policy, next, error).await
        }
        Remedy::Abandon => {
            let mut next = state.status.clone();
            next.remediation = None;
            let entry = remedy_entry(
                state,
                "remediation stopped: the node left maintenance",
                None,
            );
            record(state, next, Extras::history(entry)).await?;
            Ok(Flow::Again)
        }
    }
}

/// The attempt worked: maintenance is left (the spec), which clears the fault and ends the
/// episode when the watch brings the change back (`NodeMsg::Spec`).
async fn succeeded(
    state: &mut NodeState,
    policy: &RemediationPolicy,
    mut next: NodeStatus,
) -> Result<Flow, NodeError> {
    let action = format!("remediation succeeded: {}", attempt(policy, &next));
    if let Some(r) = next.remediation.as_mut() {
        r.active = false;
    }
    let entry = remedy_entry(state, &action, None);
    // The status first: a clean failure later is not this attempt's.
    record(state, next, Extras::history(entry)).await?;
    match change_spec(state, SpecChange::LeaveMaintenance).await {
        Ok(view) => {
            state.own_flip = Some((view.spec_rev, Requester::Remediation));
            Ok(Flow::Wait)
        }
        Err(e @ NodeError::Fenced(_)) => Err(e),
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "remediation succeeded but leaving maintenance failed; the node stays in maintenance");
            Ok(Flow::Wait)
        }
    }
}

/// The attempt failed: the node stays in maintenance with the reason saying so.
async fn failed(
    state: &mut NodeState,
    policy: &RemediationPolicy,
    mut next: NodeStatus,
    error: String,
) -> Result<Flow, NodeError> {
    let what = attempt(policy, &next);
    if let Some(r) = next.remediation.as_mut() {
        r.active = false;
    }
    let action = format!("remediation failed: {what}");
    let entry = remedy_entry(state, &action, Some(error.clone()));
    record(state, next, Extras::history(entry)).await?;
    let fault = state.status.fault.clone().unwrap_or_default();
    let reason = format!("{fault}: remediation ({what}) failed: {error}");
    match change_spec(state, SpecChange::Maintenance(reason)).await {
        Err(e @ NodeError::Fenced(_)) => Err(e),
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "could not record the failed remediation in the maintenance reason");
            Ok(Flow::Wait)
        }
        Ok(_) => Ok(Flow::Wait),
    }
}

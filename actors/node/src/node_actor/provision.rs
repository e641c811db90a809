//! Provisioning: a verb's transition, and the work of each busy state (verify, timed steps of
//! the fake interface, the deploy interface's hardware work) until the node has to wait.

use super::bios::reads_bios;
use super::effects::{history, record, step_after, Extras};
use super::power::{read_power, request_span, send_read, start_hardware, PendingRead};
use super::reconcile::{reconcile, Flow, Outcome};
use super::{NodeMsg, NodeState};
use crate::decide::node_state::{begin_provision, step_done, work_for, Work};
use crate::error::NodeError;
use ferric_model::{now_ms, HistoryKind, ProvisionRequest, ProvisionState, RequestKind, Requester};
use ractor::ActorRef;
use std::time::Duration;
use tracing::Instrument;

/// A user's (or remediation's) provision request: the verb's transition and its first work,
/// written with its history entry.
pub(super) async fn start_provision(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    req: ProvisionRequest,
) -> Result<Flow, NodeError> {
    // Traced (when traces are exported): the transition and the work it starts, up to the
    // first wait, with the BMC commands of that work.
    let span = request_span(state, RequestKind::Provision, req.seq, req.verb.as_str());
    take_up(myself, state, req).instrument(span).await
}

async fn take_up(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    req: ProvisionRequest,
) -> Result<Flow, NodeError> {
    let spec = state.spec_now();
    let before = state.status.provision_state;
    let timeout = state.callback_timeout_ms();
    let (mut next, mut work) = begin_provision(&spec, &state.status, &req, now_ms(), timeout);
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
        // An instant step (automated cleaning off, the fake interface without a step time):
        // the verb and its step are one transition and one write; a conductor dying in between
        // leaves the request pending, not the node stuck.
        let result = step_result(s, ok);
        error = result.clone().err();
        let (end, more) = step_done(&spec, &next, s, result, now_ms());
        action = format!("{action} -> \"{}\"", end.provision_state.as_str());
        next = end;
        work = Ok(more);
    }
    // A verification whose power read answers at once (fake hardware, or a BMC that answers
    // within `QUICK_VERIFY`): the verb, `verifying` and its result are one transition and one
    // write, as for an instant step; nobody could have seen `verifying` in between. A slower
    // read writes `verifying` first, as before, and the verification goes on waiting for the
    // same read. A conductor dying before the write leaves the request pending (the next
    // owner verifies again: a read has no effect on the machine).
    let mut pending = None;
    if matches!(work, Ok(Some(Work::Verify))) && !reads_bios(state) {
        if let Ok(read) = send_read(myself, state).await {
            match read.within(QUICK_VERIFY).await {
                Ok(answer) => {
                    let result = match answer {
                        Ok(power) => {
                            next.power_state = Some(power);
                            Ok(())
                        }
                        Err(e) => Err(verify_failed(&e)),
                    };
                    error = result.clone().err();
                    let (end, more) =
                        step_done(&spec, &next, ProvisionState::Verifying, result, now_ms());
                    action = format!("{action} -> \"{}\"", end.provision_state.as_str());
                    next = end;
                    work = Ok(more);
                }
                Err(read) => pending = Some(read),
            }
        }
    }
    let entry = history(
        state,
        HistoryKind::Provision,
        &action,
        req.requested_by.as_str(),
        error,
    );
    record(state, next, Extras::history(entry)).await?;
    match drive_from(myself, state, work.ok().flatten(), pending).await? {
        Flow::Wait => Ok(Flow::Wait),
        _ => Ok(Flow::Again),
    }
}

/// The timer of a timed step ended.
pub(super) async fn on_step_timer(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    step: ProvisionState,
    ok: bool,
) -> Outcome {
    if state.timers.step != Some(step) {
        return Ok(super::reconcile::Action::AwaitChange);
    }
    state.timers.step = None;
    let work = Work::Step {
        state: step,
        after_ms: 0,
        ok,
    };
    match drive(myself, state, Some(work)).await? {
        Flow::Wait => Ok(super::reconcile::Action::AwaitChange),
        _ => reconcile(myself, state).await,
    }
}

/// Picks up the work of the current provisioning state again (an actor restarted while
/// working, or hardware work waited for another operation).
pub(super) async fn resume(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<Flow, NodeError> {
    let Some(spec) = state.spec.as_deref() else {
        return Ok(Flow::Go);
    };
    match work_for(spec, &state.status) {
        Ok(work) => drive(myself, state, work).await,
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "cannot resume provisioning work");
            Ok(Flow::Go)
        }
    }
}

/// How long the power read of a verification may take for the verb and its result to be
/// written as one transition (`take_up`).
const QUICK_VERIFY: Duration = Duration::from_millis(100);

fn verify_failed(error: &str) -> String {
    format!("failed to verify the node's driver: {error}")
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

/// Does provisioning work until it has to wait or ends in a state without work. Each
/// transition is written with its history entry. Wait when hardware work is in flight (or
/// cannot start now); a timed step only arms its timer, and the pass goes on.
pub(super) async fn drive(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    work: Option<Work>,
) -> Result<Flow, NodeError> {
    drive_from(myself, state, work, None).await
}

/// `drive`, with the power read of a verification already sent (`take_up`).
async fn drive_from(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    mut work: Option<Work>,
    mut pending: Option<PendingRead>,
) -> Result<Flow, NodeError> {
    while let Some(w) = work {
        // No readable spec: nothing to drive.
        let Some(spec) = state.spec.clone() else {
            return Ok(Flow::Go);
        };
        let (from, result) = match w {
            Work::Verify => {
                let from = ProvisionState::Verifying;
                let read = match pending.take() {
                    Some(read) => read.answer().await,
                    None => read_power(myself, state).await,
                };
                match read {
                    Ok(p) => {
                        state.status.power_state = Some(p);
                        // Before the node is manageable, as Ironic's verify does it.
                        super::bios::cache_bios(myself, state).await?;
                        (from, Ok(()))
                    }
                    Err(e) => (from, Err(verify_failed(&e))),
                }
            }
            Work::Step {
                state: s,
                after_ms,
                ok,
            } if after_ms > 0 => {
                step_after(myself, state, s, Duration::from_millis(after_ms), ok);
                return Ok(Flow::Go);
            }
            Work::Step { state: s, ok, .. } => (s, step_result(s, ok)),
            Work::Hardware { state: s, hw } => {
                return Box::pin(start_hardware(myself, state, s, hw)).await;
            }
        };
        let (next, more) = step_done(&spec, &state.status, from, result.clone(), now_ms());
        if next == state.status {
            return Ok(Flow::Go);
        }
        let action = format!(
            "\"{}\" -> \"{}\"",
            from.as_str(),
            next.provision_state.as_str()
        );
        let entry = history(
            state,
            HistoryKind::Provision,
            &action,
            Requester::Conductor,
            result.err(),
        );
        record(state, next, Extras::history(entry)).await?;
        work = more;
    }
    Ok(Flow::Go)
}

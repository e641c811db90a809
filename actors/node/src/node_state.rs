//! What a node actor should do next, and how each outcome changes the status: pure functions
//! over the spec and status, so every decision is tested without etcd or actors.

use ferric_model::provision::{
    on_event, on_verb, recovery_on_takeover, target_of, Event, Recovery,
};
use ferric_model::{
    BootDeviceRequest, FenceToken, NodeSpec, NodeStatus, PowerOp, PowerRequest, PowerState,
    PowerTarget, ProvisionRequest, ProvisionState, Verb,
};
use ferric_power::op::{resume_phase, Phase, Plan};
use ferric_power::Outcome;

/// The next unit of work for a node, in priority order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until the spec changes.
    Idle,
    /// The status does not yet say that this conductor owns the node with this token.
    TakeOver,
    Power(PowerRequest),
    BootDevice(BootDeviceRequest),
    Provision(ProvisionRequest),
}

pub fn next_step(spec: &NodeSpec, status: &NodeStatus, me: &str, token: FenceToken) -> Step {
    if status.owner.as_deref() != Some(me) || status.fence != token.0 {
        return Step::TakeOver;
    }
    if let Some(p) = spec.pending_power(status) {
        return Step::Power(p.clone());
    }
    if let Some(b) = spec.pending_boot_device(status) {
        return Step::BootDevice(b.clone());
    }
    if let Some(p) = spec.pending_provision(status) {
        // In maintenance nothing advances a node by itself, but an explicit request is the
        // operator's own act; the API refuses the verbs Ironic refuses in maintenance.
        return Step::Provision(p.clone());
    }
    Step::Idle
}

/// The status after this conductor takes the node over from `previous` (None: never owned).
/// A node found in a state where its previous owner was working is moved to the matching failed
/// state with a `last_error` that names who died and when; wait states keep waiting.
pub fn take_over(status: &NodeStatus, me: &str, token: FenceToken, now_ms: u64) -> NodeStatus {
    let mut next = status.clone();
    next.owner = Some(me.to_string());
    next.fence = token.0;
    next.updated_at_ms = now_ms;
    if let Recovery::FailTo(failed) = recovery_on_takeover(status.provision_state) {
        let previous = status.owner.as_deref().unwrap_or("an unknown conductor");
        next.last_error = Some(format!(
            "conductor {previous} stopped while the node was in \"{}\" (taken over by {me} at {}); moved to \"{}\"",
            status.provision_state.as_str(),
            fmt_ms(now_ms),
            failed.as_str()
        ));
        next.target_provision_state = None;
        next.provision_state = failed;
        next.provision_updated_at_ms = Some(now_ms);
    }
    // A power action that was in flight is re-checked against the hardware by the request
    // (still pending, since power_seq_done was not advanced), so only the target is cleared.
    next.target_power_state = None;
    next
}

/// Whether a takeover changed anything a reader must see (a recovered state, a cleared power
/// target); if not, the new owner records itself in the status with its next real write.
pub fn takeover_needs_write(before: &NodeStatus, after: &NodeStatus) -> bool {
    before.provision_state != after.provision_state
        || before.target_provision_state != after.target_provision_state
        || before.target_power_state != after.target_power_state
        || before.last_error != after.last_error
}

/// Ironic's defaults: hard power actions wait up to 60 s, soft ones up to 600 s.
pub const HARD_TIMEOUT_S: u32 = 60;
pub const SOFT_TIMEOUT_S: u32 = 600;

/// Starts (or, for a node taken over mid-operation, resumes) the power operation of `req`:
/// the status records the operation before the first BMC command, so that whoever owns the node
/// next knows what was under way, since when, and whether the OS was already asked to shut down.
pub fn power_start(
    spec: &NodeSpec,
    status: &NodeStatus,
    req: &PowerRequest,
    now_ms: u64,
) -> (NodeStatus, Plan, Phase) {
    let soft = matches!(req.target, PowerTarget::SoftOff | PowerTarget::SoftReboot);
    let timeout_s = req.timeout_s.filter(|t| *t > 0).unwrap_or(if soft {
        SOFT_TIMEOUT_S
    } else {
        HARD_TIMEOUT_S
    });
    let mut next = status.clone();
    let (op, phase) = match &status.power_op {
        // Resume: keep the original deadline; do not re-send a graceful request.
        Some(op) if op.seq == req.seq => (op.clone(), resume_phase(op.soft_sent)),
        _ => (
            PowerOp {
                seq: req.seq,
                target: req.target,
                started_at_ms: now_ms,
                deadline_ms: now_ms + u64::from(timeout_s) * 1000,
                soft_sent: false,
            },
            Phase::Begin,
        ),
    };
    next.target_power_state = Some(req.target);
    next.power_op = Some(op.clone());
    let plan = Plan {
        seq: req.seq,
        target: req.target,
        deadline_ms: op.deadline_ms,
        timeout_s,
        policy: spec.soft_off_policy,
        disable_power_off: spec.disable_power_off,
    };
    (next, plan, phase)
}

/// The status after the power operation `seq` ended.
pub fn power_finished(status: &NodeStatus, seq: u64, outcome: &Outcome, now_ms: u64) -> NodeStatus {
    let mut next = status.clone();
    next.power_seq_done = next.power_seq_done.max(seq);
    next.power_op = None;
    next.target_power_state = None;
    next.updated_at_ms = now_ms;
    match outcome {
        Outcome::Done { power, .. } => {
            next.power_state = Some(*power);
            next.last_error = None;
            if next.fault.as_deref() == Some(POWER_FAULT) {
                next.fault = None;
            }
        }
        Outcome::Failed {
            error,
            fault,
            power,
        } => {
            if let Some(p) = power {
                next.power_state = Some(*p);
            }
            next.last_error = Some(error.clone());
            if *fault {
                next.fault = Some(POWER_FAULT.to_string());
            }
        }
    }
    next
}

/// Ironic's fault name for power problems.
pub const POWER_FAULT: &str = "power failure";

/// The status after a boot device request ended.
pub fn boot_finished(
    status: &NodeStatus,
    req: &BootDeviceRequest,
    result: &Result<(), String>,
) -> NodeStatus {
    let mut next = status.clone();
    next.boot_seq_done = next.boot_seq_done.max(req.seq);
    match result {
        Ok(()) => {
            next.boot_device = Some(req.device);
            next.boot_persistent = req.persistent;
            next.last_error = None;
        }
        Err(e) => {
            next.last_error = Some(format!(
                "setting boot device {} failed: {e}",
                req.device.as_str()
            ))
        }
    }
    next
}

/// The outcome of a provision verb for drivers whose work is instant (no hardware step beyond
/// a power read): the verb's transitions run to the next stable state at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionOutcome {
    /// The verb is not valid in the node's current state (the state changed after the API
    /// accepted it): recorded as `last_error`, nothing moves.
    Refused(String),
    /// The state the node ends in.
    Reached(ProvisionState),
}

/// Runs `req` on `status` for verbs that need no deploy interface. `verify` is the result of
/// reading the power state through the node's driver (the check `manage` performs).
pub fn instant_provision(
    status: &NodeStatus,
    req: &ProvisionRequest,
    verify: impl FnOnce() -> Result<PowerState, String>,
) -> (NodeStatus, ProvisionOutcome) {
    let mut next = status.clone();
    next.provision_seq_done = req.seq;
    let from = status.provision_state;
    let entered = match on_verb(from, req.verb) {
        Ok(s) => s,
        Err(e) => {
            next.last_error = Some(e.to_string());
            return (next, ProvisionOutcome::Refused(e.to_string()));
        }
    };
    let (end, error) = match (req.verb, entered) {
        (Verb::Manage, ProvisionState::Verifying) => match verify() {
            Ok(power) => {
                next.power_state = Some(power);
                (event(entered, Event::Done, false), None)
            }
            Err(e) => (
                event(entered, Event::Fail, false),
                Some(format!("failed to verify the node's driver: {e}")),
            ),
        },
        (Verb::Provide, ProvisionState::Cleaning) => (event(entered, Event::Done, false), None),
        // A verb with a transition out of a failed state back to a stable one (manage from
        // "clean failed", ...) needs no work either.
        (_, s) if s.is_stable() => (s, None),
        (verb, s) => {
            let msg = format!(
                "provision verb \"{}\" (to \"{}\") is not supported by this conductor yet",
                verb.as_str(),
                s.as_str()
            );
            next.last_error = Some(msg.clone());
            return (next, ProvisionOutcome::Refused(msg));
        }
    };
    next.provision_state = end;
    next.target_provision_state = target_of(end, false);
    next.last_error = error;
    next.manual = false;
    (next, ProvisionOutcome::Reached(end))
}

fn event(state: ProvisionState, ev: Event, manual: bool) -> ProvisionState {
    // The transitions used here exist in Ironic's table; the fallback keeps a bug from panicking
    // a conductor and shows up as an "error" state instead.
    on_event(state, ev, manual).unwrap_or(ProvisionState::Error)
}

fn fmt_ms(ms: u64) -> String {
    format!("{}.{:03}s since epoch", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_model::{NodeId, PowerTarget};

    fn spec() -> NodeSpec {
        NodeSpec::new(NodeId::new_random(), "fake-hardware", 0)
    }

    fn owned(token: i64) -> NodeStatus {
        NodeStatus {
            owner: Some("c1".into()),
            fence: token,
            ..NodeStatus::default()
        }
    }

    fn preq(seq: u64, target: PowerTarget) -> PowerRequest {
        PowerRequest {
            seq,
            target,
            timeout_s: None,
            requested_by: "t".into(),
            requested_at_ms: 0,
        }
    }

    fn vreq(seq: u64, verb: Verb) -> ProvisionRequest {
        ProvisionRequest {
            seq,
            verb,
            maintenance_ok: false,
            args: String::new(),
            requested_by: "t".into(),
            requested_at_ms: 0,
        }
    }

    #[test]
    fn a_new_owner_takes_over_before_anything_else() {
        let mut s = spec();
        s.power_request = Some(preq(1, PowerTarget::On));
        assert_eq!(
            next_step(&s, &NodeStatus::default(), "c1", FenceToken(5)),
            Step::TakeOver
        );
        // Same owner name but an older token (a previous run of the same conductor).
        assert_eq!(
            next_step(&s, &owned(4), "c1", FenceToken(5)),
            Step::TakeOver
        );
        assert_eq!(
            next_step(&s, &owned(5), "c1", FenceToken(5)),
            Step::Power(preq(1, PowerTarget::On))
        );
    }

    #[test]
    fn power_comes_before_provision_and_done_requests_are_idle() {
        let mut s = spec();
        s.power_request = Some(preq(2, PowerTarget::Off));
        s.provision_request = Some(vreq(1, Verb::Manage));
        let mut st = owned(5);
        assert!(matches!(
            next_step(&s, &st, "c1", FenceToken(5)),
            Step::Power(_)
        ));
        st = power_finished(
            &st,
            2,
            &Outcome::Done {
                power: PowerState::Off,
                note: None,
            },
            1,
        );
        assert!(matches!(
            next_step(&s, &st, "c1", FenceToken(5)),
            Step::Provision(_)
        ));
        st.provision_seq_done = 1;
        assert_eq!(next_step(&s, &st, "c1", FenceToken(5)), Step::Idle);
    }

    #[test]
    fn takeover_fails_busy_states_and_keeps_waits() {
        let mut st = owned(3);
        st.provision_state = ProvisionState::Deploying;
        let t = take_over(&st, "c2", FenceToken(9), 1_000);
        assert_eq!(t.provision_state, ProvisionState::DeployFailed);
        assert_eq!(t.owner.as_deref(), Some("c2"));
        assert_eq!(t.fence, 9);
        let err = t.last_error.unwrap();
        assert!(err.contains("c1") && err.contains("deploying"), "{err}");

        st.provision_state = ProvisionState::CleanWait;
        st.deadline_ms = Some(77);
        let t = take_over(&st, "c2", FenceToken(9), 1_000);
        assert_eq!(t.provision_state, ProvisionState::CleanWait);
        assert_eq!(t.deadline_ms, Some(77));
        assert_eq!(t.last_error, None);
    }

    #[test]
    fn only_a_recovering_takeover_is_written() {
        let quiet = owned(3);
        assert!(!takeover_needs_write(
            &quiet,
            &take_over(&quiet, "c2", FenceToken(9), 1)
        ));
        let mut busy = owned(3);
        busy.provision_state = ProvisionState::Cleaning;
        assert!(takeover_needs_write(
            &busy,
            &take_over(&busy, "c2", FenceToken(9), 1)
        ));
        let mut powering = owned(3);
        powering.target_power_state = Some(PowerTarget::On);
        assert!(takeover_needs_write(
            &powering,
            &take_over(&powering, "c2", FenceToken(9), 1)
        ));
    }

    #[test]
    fn a_power_operation_is_recorded_then_resumed_with_its_deadline() {
        let mut s = spec();
        let req = preq(4, PowerTarget::SoftOff);
        s.power_request = Some(req.clone());
        let (st, plan, phase) = power_start(&s, &owned(1), &req, 1_000);
        assert_eq!(phase, Phase::Begin);
        assert_eq!(plan.deadline_ms, 1_000 + 600_000);
        let op = st.power_op.clone().unwrap();
        assert_eq!((op.seq, op.soft_sent), (4, false));
        assert_eq!(st.target_power_state, Some(PowerTarget::SoftOff));

        // Another conductor takes over after the graceful request went out.
        let mut taken = st.clone();
        taken.power_op.as_mut().unwrap().soft_sent = true;
        let (_, plan2, phase2) = power_start(&s, &taken, &req, 50_000);
        assert_eq!(phase2, Phase::SoftSent);
        assert_eq!(plan2.deadline_ms, plan.deadline_ms);

        let done = power_finished(
            &taken,
            4,
            &Outcome::Failed {
                error: "the OS did not shut down".into(),
                fault: true,
                power: Some(PowerState::On),
            },
            2,
        );
        assert_eq!(done.power_seq_done, 4);
        assert_eq!(done.power_op, None);
        assert_eq!(done.fault.as_deref(), Some(POWER_FAULT));
        assert_eq!(done.power_state, Some(PowerState::On));
        let ok = power_finished(
            &done,
            5,
            &Outcome::Done {
                power: PowerState::Off,
                note: None,
            },
            3,
        );
        assert_eq!(ok.fault, None);
        assert_eq!(ok.last_error, None);
    }

    #[test]
    fn manage_verifies_through_the_driver() {
        let st = owned(1);
        let (ok, out) = instant_provision(&st, &vreq(1, Verb::Manage), || Ok(PowerState::Off));
        assert_eq!(out, ProvisionOutcome::Reached(ProvisionState::Manageable));
        assert_eq!(ok.power_state, Some(PowerState::Off));
        assert_eq!(ok.provision_seq_done, 1);

        let (failed, out) =
            instant_provision(&st, &vreq(1, Verb::Manage), || Err("no answer".into()));
        assert_eq!(out, ProvisionOutcome::Reached(ProvisionState::Enroll));
        assert!(failed.last_error.unwrap().contains("no answer"));
    }

    #[test]
    fn provide_reaches_available_and_invalid_verbs_are_recorded() {
        let mut st = owned(1);
        st.provision_state = ProvisionState::Manageable;
        let (next, out) = instant_provision(&st, &vreq(2, Verb::Provide), || unreachable!());
        assert_eq!(out, ProvisionOutcome::Reached(ProvisionState::Available));
        assert_eq!(next.target_provision_state, None);

        let (next, out) = instant_provision(&owned(1), &vreq(3, Verb::Provide), || unreachable!());
        assert!(matches!(out, ProvisionOutcome::Refused(_)));
        assert_eq!(next.provision_state, ProvisionState::Enroll);
        assert_eq!(next.provision_seq_done, 3);
        assert!(next.last_error.unwrap().contains("enroll"));
    }
}

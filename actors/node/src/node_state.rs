//! What a node actor should do next, and how each outcome changes the status: pure functions
//! over the spec and status, so every decision is tested without etcd or actors.

use ferric_model::provision::{
    on_event, on_verb, recovery_on_takeover, target_of, Event, Recovery,
};
use ferric_model::{
    BootDeviceRequest, FenceToken, NodeSpec, NodeStatus, PowerOp, PowerRequest, PowerTarget,
    ProvisionRequest, ProvisionState, Verb,
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

/// How the work inside provisioning states is done for a node (Ironic's deploy interface).
#[derive(Debug, Clone, PartialEq)]
pub enum DeployInterface {
    /// Ironic's `fake`: every step takes `step_ms` and succeeds, except in the states listed in
    /// `fail_in` (from `driver_info`: `fake_step_secs`, `fake_fail_states`).
    Fake {
        step_ms: u64,
        fail_in: Vec<ProvisionState>,
    },
    /// Ironic's `direct` (agent-driven). Until the agent path lands, only what needs no agent
    /// is done: automated cleaning is off (provide and undeploy pass through cleaning at once),
    /// adoption; everything else is refused with a clear error.
    Direct,
}

/// The node's deploy interface: `deploy_interface` if set, else Ironic's default for its driver.
pub fn deploy_interface(spec: &NodeSpec) -> DeployInterface {
    let name = spec
        .interfaces
        .get("deploy_interface")
        .map(String::as_str)
        .unwrap_or(if spec.driver == "fake-hardware" {
            "fake"
        } else {
            "direct"
        });
    if name != "fake" {
        return DeployInterface::Direct;
    }
    let info: serde_json::Value = serde_json::from_str(&spec.driver_info).unwrap_or_default();
    let step_ms = info
        .get("fake_step_secs")
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .map_or(0, |s| (s.clamp(0.0, 3600.0) * 1000.0) as u64);
    let fail_in = match info.get("fake_fail_states") {
        Some(serde_json::Value::String(s)) => s
            .split(',')
            .filter_map(|p| ProvisionState::parse(p.trim()))
            .collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().and_then(ProvisionState::parse))
            .collect(),
        _ => Vec::new(),
    };
    DeployInterface::Fake { step_ms, fail_in }
}

/// Work the conductor does in a provisioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Verifying: read the power state through the node's driver.
    Verify,
    /// One step of `state` that ends after `after_ms`, in success or failure.
    Step {
        state: ProvisionState,
        after_ms: u64,
        ok: bool,
    },
}

/// The work a node in `state` needs, None when it only waits (stable, failed, wait and hold
/// states), or why this conductor cannot do it.
pub fn work_for(
    spec: &NodeSpec,
    state: ProvisionState,
    manual: bool,
) -> Result<Option<Work>, String> {
    use ProvisionState as S;
    if state == S::Verifying {
        return Ok(Some(Work::Verify));
    }
    if !state.is_busy() {
        return Ok(None);
    }
    match deploy_interface(spec) {
        DeployInterface::Fake { step_ms, fail_in } => Ok(Some(Work::Step {
            state,
            after_ms: step_ms,
            ok: !fail_in.contains(&state),
        })),
        DeployInterface::Direct => match state {
            S::Cleaning if !manual => Ok(Some(Work::Step { state, after_ms: 0, ok: true })),
            S::Deleting | S::Adopting => Ok(Some(Work::Step { state, after_ms: 0, ok: true })),
            other => Err(format!(
                "\"{}\" needs the agent (deploy interface \"direct\"), which this conductor does not run yet; use deploy_interface \"fake\" or wait for the agent support",
                other.as_str()
            )),
        },
    }
}

/// The status once `req` is taken up, and the first piece of work. A verb the state does not
/// allow, or that needs work this conductor cannot do, is refused (recorded in `last_error`) and
/// the node stays where it is.
pub fn begin_provision(
    spec: &NodeSpec,
    status: &NodeStatus,
    req: &ProvisionRequest,
    now_ms: u64,
) -> (NodeStatus, Result<Option<Work>, String>) {
    let mut next = status.clone();
    next.provision_seq_done = req.seq;
    let entered = match on_verb(status.provision_state, req.verb) {
        Ok(s) => s,
        Err(e) => {
            next.last_error = Some(e.to_string());
            return (next, Err(e.to_string()));
        }
    };
    let manual = req.verb == Verb::Clean;
    let work = match work_for(spec, entered, manual) {
        Ok(w) => w,
        Err(e) => {
            next.last_error = Some(e.clone());
            return (next, Err(e));
        }
    };
    next.provision_state = entered;
    next.manual = manual;
    next.target_provision_state = target_of(entered, manual);
    next.provision_updated_at_ms = Some(now_ms);
    next.last_error = None;
    (next, Ok(work))
}

/// The status after a step of `state` ended (`ok` or failed), and the next work. A result for
/// a state the node has already left is stale and changes nothing.
pub fn step_done(
    spec: &NodeSpec,
    status: &NodeStatus,
    state: ProvisionState,
    result: Result<(), String>,
    now_ms: u64,
) -> (NodeStatus, Option<Work>) {
    if status.provision_state != state {
        return (status.clone(), None);
    }
    let mut next = status.clone();
    let ev = if result.is_ok() {
        Event::Done
    } else {
        Event::Fail
    };
    let to = event(state, ev, status.manual);
    next.provision_state = to;
    next.provision_updated_at_ms = Some(now_ms);
    next.last_error = result.err();
    let work = match work_for(spec, to, status.manual) {
        Ok(w) => w,
        Err(e) => {
            // Cannot go on (e.g. undeploy of an agent node reached cleaning): fail the state.
            let failed = event(to, Event::Fail, status.manual);
            next.provision_state = failed;
            next.last_error = Some(e);
            None
        }
    };
    if !next.provision_state.is_busy() && next.provision_state != ProvisionState::Verifying {
        next.manual = next.manual && next.provision_state.is_wait();
    }
    next.target_provision_state = target_of(next.provision_state, status.manual);
    (next, work)
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
    use ferric_model::{NodeId, PowerState, PowerTarget};

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

    fn fake(step_secs: f64, fail: &str) -> NodeSpec {
        let mut s = spec();
        s.driver_info =
            format!(r#"{{"fake_step_secs": {step_secs}, "fake_fail_states": "{fail}"}}"#);
        s
    }

    /// Runs provisioning work to its end, as the node actor does, without timing.
    fn drive(spec: &NodeSpec, mut st: NodeStatus, req: &ProvisionRequest) -> NodeStatus {
        let (next, work) = begin_provision(spec, &st, req, 0);
        st = next;
        let mut work = work.unwrap_or(None);
        while let Some(w) = work {
            let (next, more) = match w {
                Work::Verify => step_done(spec, &st, ProvisionState::Verifying, Ok(()), 0),
                Work::Step { state, ok, .. } => step_done(
                    spec,
                    &st,
                    state,
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("step in {} failed", state.as_str()))
                    },
                    0,
                ),
            };
            st = next;
            work = more;
        }
        st
    }

    #[test]
    fn the_fake_deploy_interface_drives_the_main_path() {
        let s = fake(0.0, "");
        let mut st = owned(1);
        for (seq, verb, want) in [
            (1, Verb::Manage, ProvisionState::Manageable),
            (2, Verb::Provide, ProvisionState::Available),
            (3, Verb::Deploy, ProvisionState::Active),
            (4, Verb::Rebuild, ProvisionState::Active),
            (5, Verb::Rescue, ProvisionState::Rescue),
            (6, Verb::Unrescue, ProvisionState::Active),
            (7, Verb::Undeploy, ProvisionState::Available),
            (8, Verb::Manage, ProvisionState::Manageable),
            (9, Verb::Inspect, ProvisionState::Manageable),
            (10, Verb::Clean, ProvisionState::Manageable),
            (11, Verb::Adopt, ProvisionState::Active),
            (12, Verb::Service, ProvisionState::Active),
        ] {
            st = drive(&s, st, &vreq(seq, verb));
            assert_eq!(st.provision_state, want, "after {verb:?}: {st:?}");
            assert_eq!(st.target_provision_state, None);
            assert_eq!(st.last_error, None);
            assert_eq!(st.provision_seq_done, seq);
        }
    }

    #[test]
    fn a_failing_fake_step_lands_in_the_failed_state() {
        let s = fake(0.0, "deploying, cleaning");
        let mut st = owned(1);
        st.provision_state = ProvisionState::Available;
        st = drive(&s, st, &vreq(1, Verb::Deploy));
        assert_eq!(st.provision_state, ProvisionState::DeployFailed);
        assert!(st.last_error.unwrap().contains("deploying"));
        let mut st = owned(1);
        st.provision_state = ProvisionState::Manageable;
        st = drive(&s, st, &vreq(1, Verb::Provide));
        assert_eq!(st.provision_state, ProvisionState::CleanFailed);
        assert_eq!(
            deploy_interface(&s),
            DeployInterface::Fake {
                step_ms: 0,
                fail_in: vec![ProvisionState::Deploying, ProvisionState::Cleaning]
            }
        );
    }

    #[test]
    fn agent_nodes_do_what_needs_no_agent_and_refuse_the_rest() {
        let mut s = spec();
        s.driver = "redfish".into();
        let mut st = owned(1);
        st.provision_state = ProvisionState::Manageable;
        let provided = drive(&s, st.clone(), &vreq(1, Verb::Provide));
        assert_eq!(provided.provision_state, ProvisionState::Available);
        let (refused, work) = begin_provision(&s, &provided, &vreq(2, Verb::Deploy), 0);
        assert!(work.is_err());
        assert_eq!(refused.provision_state, ProvisionState::Available);
        assert!(refused.last_error.unwrap().contains("agent"));
        let (_, work) = begin_provision(&s, &st, &vreq(2, Verb::Clean), 0);
        assert!(work.is_err(), "manual cleaning needs clean steps");
    }

    #[test]
    fn a_stale_step_result_changes_nothing() {
        let s = fake(0.0, "");
        let mut st = owned(1);
        st.provision_state = ProvisionState::Active;
        let (next, work) = step_done(&s, &st, ProvisionState::Deploying, Ok(()), 0);
        assert_eq!(next, st);
        assert_eq!(work, None);
    }

    #[test]
    fn manage_verifies_through_the_driver() {
        let s = spec();
        let st = owned(1);
        let (verifying, work) = begin_provision(&s, &st, &vreq(1, Verb::Manage), 0);
        assert_eq!(work, Ok(Some(Work::Verify)));
        assert_eq!(verifying.provision_state, ProvisionState::Verifying);
        assert_eq!(
            verifying.target_provision_state,
            Some(ProvisionState::Manageable)
        );
        let (ok, more) = step_done(&s, &verifying, ProvisionState::Verifying, Ok(()), 1);
        assert_eq!(
            (ok.provision_state, more),
            (ProvisionState::Manageable, None)
        );
        let (failed, _) = step_done(
            &s,
            &verifying,
            ProvisionState::Verifying,
            Err("no answer".into()),
            1,
        );
        assert_eq!(failed.provision_state, ProvisionState::Enroll);
        assert!(failed.last_error.unwrap().contains("no answer"));
    }

    #[test]
    fn invalid_verbs_are_recorded_and_move_nothing() {
        let (next, work) = begin_provision(&spec(), &owned(1), &vreq(3, Verb::Provide), 0);
        assert!(work.is_err());
        assert_eq!(next.provision_state, ProvisionState::Enroll);
        assert_eq!(next.provision_seq_done, 3);
        assert!(next.last_error.unwrap().contains("enroll"));
    }
}

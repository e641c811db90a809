//! What a node actor should do next, and how each outcome changes the status: pure functions
//! over the spec and status, so every decision is tested without etcd or actors.

use ferric_model::provision::{
    on_event, on_verb, recovery_on_takeover, target_of, Event, Recovery,
};
use ferric_model::{
    AgentProgress, BootDeviceRequest, DriverInfoError, FenceToken, NodeSpec, NodeStatus, PowerOp,
    PowerRequest, PowerTarget, ProvisionRequest, ProvisionState, Verb,
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
                set_fault(&mut next, POWER_FAULT, now_ms);
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
    /// Ironic's `direct`: the conductor boots the node into the agent's ramdisk and waits for
    /// heartbeats (see `agent.rs`); the conductor's own part is boot device and power.
    Direct,
}

/// The node's deploy interface: `deploy_interface` if set, else Ironic's default for its driver.
/// An unreadable `driver_info` (which the fake interface reads) is an error, for the caller to
/// report as the node's status error.
pub fn try_deploy_interface(spec: &NodeSpec) -> Result<DeployInterface, DriverInfoError> {
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
        return Ok(DeployInterface::Direct);
    }
    let info = spec.driver_info()?;
    Ok(DeployInterface::Fake {
        step_ms: info.fake_step_ms(),
        fail_in: info.fake_fail_states().to_vec(),
    })
}

/// [`try_deploy_interface`] for callers that cannot report an error yet: an unreadable
/// `driver_info` is logged and the fake interface runs with its defaults.
// TODO(issue 10, node actor): report the error as a status error and remove this.
pub fn deploy_interface(spec: &NodeSpec) -> DeployInterface {
    try_deploy_interface(spec).unwrap_or_else(|e| {
        tracing::warn!(node = %spec.id, error = %e, "unreadable driver_info; fake deploy defaults");
        DeployInterface::Fake {
            step_ms: 0,
            fail_in: Vec::new(),
        }
    })
}

/// The conductor's own hardware work in a provisioning state (deploy interface `direct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardware {
    /// Boot the agent's ramdisk: boot device `pxe` for the next boot, then power on (or
    /// reboot a running node). Success moves the node to the state's wait state.
    BootRamdisk,
    /// Boot the instance: boot device `disk` (persistent), then reboot (or power on).
    BootDisk,
    PowerOff,
}

impl Hardware {
    pub fn as_str(self) -> &'static str {
        match self {
            Hardware::BootRamdisk => "boot the agent ramdisk (pxe, power on)",
            Hardware::BootDisk => "boot the instance (disk, reboot)",
            Hardware::PowerOff => "power off",
        }
    }
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
    /// Boot device and power work of `state`; its result ends (or, for the ramdisk boot,
    /// suspends) the state.
    Hardware { state: ProvisionState, hw: Hardware },
}

/// The work a node in its current state needs, None when it only waits (stable, failed, wait and
/// hold states), or why this conductor cannot do it.
pub fn work_for(spec: &NodeSpec, status: &NodeStatus) -> Result<Option<Work>, String> {
    use ProvisionState as S;
    let state = status.provision_state;
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
        DeployInterface::Direct => {
            // The agent's part of this state is done once its steps are (the node came back
            // from the wait state); what remains is the conductor's.
            let agent_done = status
                .agent
                .as_ref()
                .is_some_and(|a| a.state == state && a.finished());
            let hw = |hw| Ok(Some(Work::Hardware { state, hw }));
            match state {
                S::Deploying | S::Servicing if agent_done => hw(Hardware::BootDisk),
                S::Cleaning | S::Inspecting if agent_done => hw(Hardware::PowerOff),
                S::Rescuing if agent_done => Ok(Some(Work::Step {
                    state,
                    after_ms: 0,
                    ok: true,
                })),
                S::Deploying | S::Servicing | S::Cleaning | S::Inspecting | S::Rescuing => {
                    hw(Hardware::BootRamdisk)
                }
                S::Deleting => hw(Hardware::PowerOff),
                S::Unrescuing => hw(Hardware::BootDisk),
                S::Adopting => Ok(Some(Work::Step {
                    state,
                    after_ms: 0,
                    ok: true,
                })),
                other => Err(format!(
                    "no work defined for \"{}\" with the direct deploy interface",
                    other.as_str()
                )),
            }
        }
    }
}

/// The status once `req` is taken up, and the first piece of work. A verb the state does not
/// allow, or that needs work this conductor cannot do, is refused (recorded in `last_error`) and
/// the node stays where it is. `timeout_ms`: how long a wait state waits for the agent.
pub fn begin_provision(
    spec: &NodeSpec,
    status: &NodeStatus,
    req: &ProvisionRequest,
    now_ms: u64,
    timeout_ms: u64,
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
    let manual = match req.verb {
        Verb::Clean => true,
        // Unhold and abort keep the operation they belong to.
        Verb::Unhold | Verb::Abort => status.manual,
        _ => false,
    };
    next.provision_state = entered;
    next.manual = manual;
    if entered.is_wait() {
        // Back to waiting (unhold): the agent gets a whole timeout again.
        next.deadline_ms = Some(now_ms + timeout_ms);
    } else {
        next.deadline_ms = None;
        if req.verb != Verb::Abort {
            // A new operation: the agent's progress of an earlier one does not count.
            next.agent = None;
        }
    }
    let mut work = match work_for(spec, &next) {
        Ok(w) => w,
        Err(e) => {
            let mut refused = status.clone();
            refused.provision_seq_done = req.seq;
            refused.last_error = Some(e.clone());
            return (refused, Err(e));
        }
    };
    if req.verb == Verb::Abort
        && status.provision_state == ProvisionState::RescueWait
        && deploy_interface(spec) == DeployInterface::Direct
    {
        // Aborting a rescue takes the rescue ramdisk down: power the node off. A failure here
        // is Ironic's "rescue abort failure" fault.
        work = Some(Work::Hardware {
            state: entered,
            hw: Hardware::PowerOff,
        });
    }
    if !entered.is_busy() && !entered.is_wait() {
        next.agent = next.agent.filter(|_| req.verb == Verb::Abort);
    }
    if let Some(a) = next.agent.as_mut() {
        a.maintenance_ok |= spec.maintenance && req.maintenance_ok;
    }
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
    let ev = if result.is_ok() {
        Event::Done
    } else {
        Event::Fail
    };
    transition(spec, status, ev, result.err(), now_ms)
}

/// The status after the hardware work `hw` of `state` ended, and the next work. The ramdisk
/// boot suspends the state in its wait state with a deadline `timeout_ms` from now; heartbeats
/// sent after `started_ms` (when the boot device was set) belong to this boot.
#[allow(clippy::too_many_arguments)]
pub fn hardware_done(
    spec: &NodeSpec,
    status: &NodeStatus,
    state: ProvisionState,
    hw: Hardware,
    result: Result<(), String>,
    started_ms: u64,
    now_ms: u64,
    timeout_ms: u64,
) -> (NodeStatus, Option<Work>) {
    if status.provision_state != state {
        return (status.clone(), None);
    }
    if state == ProvisionState::RescueFailed {
        // The power off of an aborted rescue.
        let mut next = status.clone();
        if let Err(e) = result {
            next.last_error = Some(format!("aborting the rescue failed: {e}"));
            set_fault(
                &mut next,
                ferric_model::faults::RESCUE_ABORT_FAILURE,
                now_ms,
            );
        }
        return (next, None);
    }
    match (hw, result) {
        (Hardware::BootRamdisk, Ok(())) => {
            let mut next = status.clone();
            next.provision_state = event(state, Event::Wait, status.manual);
            next.target_provision_state = target_of(next.provision_state, status.manual);
            next.provision_updated_at_ms = Some(now_ms);
            next.deadline_ms = Some(now_ms + timeout_ms);
            next.last_error = None;
            let maintenance_ok = spec.maintenance
                && (status.remediation.as_ref().is_some_and(|r| r.active)
                    || spec
                        .provision_request
                        .as_ref()
                        .is_some_and(|r| r.maintenance_ok && r.seq == status.provision_seq_done));
            next.agent = Some(AgentProgress {
                state,
                steps: crate::agent::steps_for(spec, state, status.manual),
                done: 0,
                booted_at_ms: started_ms.min(now_ms),
                token: None,
                heartbeat_rev: 0,
                last_heartbeat_ms: None,
                maintenance_ok,
            });
            (next, None)
        }
        (_, Ok(())) => transition(spec, status, Event::Done, None, now_ms),
        (hw, Err(e)) => transition(
            spec,
            status,
            Event::Fail,
            Some(format!("{} failed: {e}", hw.as_str())),
            now_ms,
        ),
    }
}

/// Applies `ev` to the node's current state and finds the next work; a failure of cleaning or
/// servicing is a fault (Ironic: the node goes into maintenance).
pub(crate) fn transition(
    spec: &NodeSpec,
    status: &NodeStatus,
    ev: Event,
    error: Option<String>,
    now_ms: u64,
) -> (NodeStatus, Option<Work>) {
    let state = status.provision_state;
    let mut next = status.clone();
    let to = event(state, ev, status.manual);
    next.provision_state = to;
    next.provision_updated_at_ms = Some(now_ms);
    next.last_error = error;
    next.deadline_ms = None;
    let work = match work_for(spec, &next) {
        Ok(w) => w,
        Err(e) => {
            // Cannot go on: fail the state.
            next.provision_state = event(to, Event::Fail, status.manual);
            next.last_error = Some(e);
            None
        }
    };
    let end = next.provision_state;
    if !end.is_busy() && end != ProvisionState::Verifying {
        next.manual = next.manual && end.is_wait();
        if !end.is_wait() {
            next.agent = None;
        }
    }
    if ev == Event::Fail || end.is_failed() {
        match end {
            ProvisionState::CleanFailed => {
                set_fault(&mut next, ferric_model::faults::CLEAN_FAILURE, now_ms)
            }
            ProvisionState::ServiceFailed => {
                set_fault(&mut next, ferric_model::faults::SERVICE_FAILURE, now_ms)
            }
            _ => {}
        }
    }
    next.target_provision_state = target_of(end, status.manual);
    (next, work)
}

/// Records a fault; the owner then puts the node into maintenance (see `remedy.rs`).
pub fn set_fault(status: &mut NodeStatus, fault: &str, now_ms: u64) {
    status.fault = Some(fault.to_string());
    status.fault_at_ms = Some(now_ms);
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
    use crate::agent::{on_heartbeat, wait_timeout, Heartbeat};
    use ferric_cluster::heartbeats::HeartbeatRecord;
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
        let (next, work) = begin_provision(spec, &st, req, 0, 1000);
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
                Work::Hardware { state, hw } => {
                    hardware_done(spec, &st, state, hw, Ok(()), 0, 0, 1000)
                }
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

    fn agent_spec() -> NodeSpec {
        let mut s = spec();
        s.driver = "redfish".into();
        s
    }

    fn hb(at_ms: u64, token: &str) -> HeartbeatRecord {
        HeartbeatRecord {
            at_ms,
            callback_url: "http://127.0.0.1:9999/".into(),
            agent_version: None,
            agent_token: Some(token.into()),
            agent_verify_ca: None,
            agent_status: None,
            agent_status_message: None,
            recorded_by: "gw".into(),
        }
    }

    fn progress(h: Heartbeat) -> (NodeStatus, Option<Work>) {
        match h {
            Heartbeat::Progress { status, work, .. } => (*status, work),
            other => panic!("expected progress, got {other:?}"),
        }
    }

    #[test]
    fn the_agent_drives_a_deploy_through_wait_call_back() {
        let s = agent_spec();
        let mut st = owned(1);
        st.provision_state = ProvisionState::Available;
        let (st, work) = begin_provision(&s, &st, &vreq(1, Verb::Deploy), 10, 1000);
        assert_eq!(st.provision_state, ProvisionState::Deploying);
        let boot = Work::Hardware {
            state: ProvisionState::Deploying,
            hw: Hardware::BootRamdisk,
        };
        assert_eq!(work, Ok(Some(boot)));
        let (st, work) = hardware_done(
            &s,
            &st,
            ProvisionState::Deploying,
            Hardware::BootRamdisk,
            Ok(()),
            20,
            20,
            1000,
        );
        assert_eq!(work, None);
        assert_eq!(st.provision_state, ProvisionState::WaitCallBack);
        assert_eq!(st.target_provision_state, Some(ProvisionState::Active));
        assert_eq!(st.deadline_ms, Some(1020));
        let agent = st.agent.clone().unwrap();
        assert_eq!(agent.steps.len(), 2);
        assert_eq!(agent.booted_at_ms, 20);
        // Sent before the ramdisk boot: stale.
        assert!(matches!(
            on_heartbeat(&s, &st, &hb(19, "t"), 5, 30, 1000),
            Heartbeat::Ignored(_)
        ));
        let (st, work) = progress(on_heartbeat(&s, &st, &hb(25, "t"), 6, 30, 1000));
        assert_eq!(work, None);
        assert_eq!(st.provision_state, ProvisionState::WaitCallBack);
        assert_eq!(st.deadline_ms, Some(1030), "each step restarts the wait");
        assert_eq!(st.agent.as_ref().unwrap().token.as_deref(), Some("t"));
        // The same heartbeat again, and one with another token, do nothing.
        assert!(matches!(
            on_heartbeat(&s, &st, &hb(25, "t"), 6, 31, 1000),
            Heartbeat::Ignored(_)
        ));
        assert_eq!(
            on_heartbeat(&s, &st, &hb(26, "x"), 7, 31, 1000),
            Heartbeat::WrongToken
        );
        let (st, work) = progress(on_heartbeat(&s, &st, &hb(27, "t"), 8, 40, 1000));
        assert_eq!(st.provision_state, ProvisionState::Deploying);
        assert_eq!(st.deadline_ms, None);
        let finish = Work::Hardware {
            state: ProvisionState::Deploying,
            hw: Hardware::BootDisk,
        };
        assert_eq!(work, Some(finish));
        let (st, work) = hardware_done(
            &s,
            &st,
            ProvisionState::Deploying,
            Hardware::BootDisk,
            Ok(()),
            50,
            50,
            1000,
        );
        assert_eq!((st.provision_state, work), (ProvisionState::Active, None));
        assert_eq!(st.agent, None);
        assert_eq!(st.target_provision_state, None);
    }

    /// Every agent state: boot, one heartbeat per step, the conductor's part; and what it ends in.
    #[test]
    fn every_agent_verb_reaches_its_end_state() {
        let s = agent_spec();
        for (from, verb, want) in [
            (
                ProvisionState::Manageable,
                Verb::Provide,
                ProvisionState::Available,
            ),
            (
                ProvisionState::Manageable,
                Verb::Inspect,
                ProvisionState::Manageable,
            ),
            (
                ProvisionState::Manageable,
                Verb::Clean,
                ProvisionState::Manageable,
            ),
            (
                ProvisionState::Active,
                Verb::Rebuild,
                ProvisionState::Active,
            ),
            (ProvisionState::Active, Verb::Rescue, ProvisionState::Rescue),
            (
                ProvisionState::Rescue,
                Verb::Unrescue,
                ProvisionState::Active,
            ),
            (
                ProvisionState::Active,
                Verb::Service,
                ProvisionState::Active,
            ),
            (
                ProvisionState::Active,
                Verb::Undeploy,
                ProvisionState::Available,
            ),
        ] {
            let mut st = owned(1);
            st.provision_state = from;
            let (mut st, work) = begin_provision(&s, &st, &vreq(1, verb), 0, 1000);
            let mut work = work.unwrap();
            let mut rev = 0;
            for _ in 0..20 {
                match work {
                    Some(Work::Hardware { state, hw }) => {
                        (st, work) =
                            hardware_done(&s, &st, state, hw, Ok(()), rev as u64, rev as u64, 1000)
                    }
                    Some(Work::Step { state, ok, .. }) => {
                        (st, work) = step_done(&s, &st, state, step_ok(ok), rev as u64)
                    }
                    Some(Work::Verify) => unreachable!(),
                    None if st.provision_state.is_wait() => {
                        rev += 1;
                        (st, work) = progress(on_heartbeat(
                            &s,
                            &st,
                            &hb(rev as u64, "t"),
                            rev,
                            rev as u64,
                            1000,
                        ));
                    }
                    None => break,
                }
            }
            assert_eq!(st.provision_state, want, "{verb:?} from {from}: {st:?}");
            assert_eq!(st.last_error, None);
            assert_eq!(st.agent, None);
            assert_eq!(st.fault, None);
        }
    }

    fn step_ok(ok: bool) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err("failed".into())
        }
    }

    #[test]
    fn wait_states_time_out_into_their_failed_states_but_not_in_maintenance() {
        let mut s = agent_spec();
        for (busy, wait, failed, fault) in [
            (
                ProvisionState::Deploying,
                ProvisionState::WaitCallBack,
                ProvisionState::DeployFailed,
                None,
            ),
            (
                ProvisionState::Cleaning,
                ProvisionState::CleanWait,
                ProvisionState::CleanFailed,
                Some("clean failure"),
            ),
            (
                ProvisionState::Inspecting,
                ProvisionState::InspectWait,
                ProvisionState::InspectFailed,
                None,
            ),
            (
                ProvisionState::Rescuing,
                ProvisionState::RescueWait,
                ProvisionState::RescueFailed,
                None,
            ),
            (
                ProvisionState::Servicing,
                ProvisionState::ServiceWait,
                ProvisionState::ServiceFailed,
                Some("service failure"),
            ),
        ] {
            s.maintenance = false;
            let mut st = owned(1);
            st.provision_state = busy;
            let (st, _) =
                hardware_done(&s, &st, busy, Hardware::BootRamdisk, Ok(()), 100, 100, 1000);
            assert_eq!(st.provision_state, wait);
            assert_eq!(wait_timeout(&s, &st, 1099), None, "not yet");
            let (failed_st, error) = wait_timeout(&s, &st, 1100).expect("timed out");
            assert_eq!(failed_st.provision_state, failed, "{wait}");
            assert!(error.contains("Timeout reached"), "{error}");
            assert_eq!(failed_st.fault.as_deref(), fault, "{wait}");
            assert_eq!(failed_st.deadline_ms, None);
            // In maintenance nothing advances the node: no timeout, heartbeats recorded only.
            s.maintenance = true;
            assert_eq!(wait_timeout(&s, &st, 5000), None);
            assert_eq!(
                on_heartbeat(&s, &st, &hb(200, "t"), 3, 200, 1000),
                Heartbeat::InMaintenance
            );
            // Leaving maintenance gives the agent a whole timeout again.
            let mut left = st.clone();
            crate::agent::restart_wait_on_leaving_maintenance(&mut left, 5000, 1000);
            s.maintenance = false;
            assert_eq!(wait_timeout(&s, &left, 5999), None);
            assert!(wait_timeout(&s, &left, 6000).is_some());
        }
    }

    #[test]
    fn work_asked_for_in_maintenance_hears_its_agent() {
        let mut s = agent_spec();
        s.maintenance = true;
        let mut req = vreq(1, Verb::Clean);
        req.maintenance_ok = true;
        s.provision_request = Some(req.clone());
        let mut st = owned(1);
        st.provision_state = ProvisionState::Manageable;
        let (st, _) = begin_provision(&s, &st, &req, 0, 1000);
        let (st, _) = hardware_done(
            &s,
            &st,
            ProvisionState::Cleaning,
            Hardware::BootRamdisk,
            Ok(()),
            10,
            10,
            1000,
        );
        assert_eq!(st.provision_state, ProvisionState::CleanWait);
        assert!(st.agent.as_ref().unwrap().maintenance_ok);
        let (st, work) = progress(on_heartbeat(&s, &st, &hb(20, "t"), 1, 20, 1000));
        assert_eq!(st.provision_state, ProvisionState::Cleaning);
        assert_eq!(
            work,
            Some(Work::Hardware {
                state: ProvisionState::Cleaning,
                hw: Hardware::PowerOff
            })
        );
    }

    #[test]
    fn an_agent_error_or_failed_hardware_fails_the_state() {
        let s = agent_spec();
        let mut st = owned(1);
        st.provision_state = ProvisionState::Cleaning;
        let (st, _) = hardware_done(
            &s,
            &st,
            ProvisionState::Cleaning,
            Hardware::BootRamdisk,
            Ok(()),
            10,
            10,
            1000,
        );
        let mut bad = hb(20, "t");
        bad.agent_status = Some("error".into());
        bad.agent_status_message = Some("disk 3 did not erase".into());
        let (failed, _) = progress(on_heartbeat(&s, &st, &bad, 1, 20, 1000));
        assert_eq!(failed.provision_state, ProvisionState::CleanFailed);
        assert!(failed.last_error.as_deref().unwrap().contains("disk 3"));
        assert_eq!(failed.fault.as_deref(), Some("clean failure"));
        assert_eq!(failed.fault_at_ms, Some(20));

        let mut st = owned(1);
        st.provision_state = ProvisionState::Deploying;
        let (failed, work) = hardware_done(
            &s,
            &st,
            ProvisionState::Deploying,
            Hardware::BootRamdisk,
            Err("BMC unreachable".into()),
            5,
            5,
            1000,
        );
        assert_eq!(
            (failed.provision_state, work),
            (ProvisionState::DeployFailed, None)
        );
        assert!(failed.last_error.unwrap().contains("BMC unreachable"));
        assert_eq!(failed.fault, None, "a failed deploy is not a fault");
    }

    #[test]
    fn a_rescue_abort_that_cannot_power_off_is_a_fault() {
        let s = agent_spec();
        let mut st = owned(1);
        st.provision_state = ProvisionState::RescueWait;
        let (st, work) = begin_provision(&s, &st, &vreq(1, Verb::Abort), 0, 1000);
        assert_eq!(st.provision_state, ProvisionState::RescueFailed);
        let off = Work::Hardware {
            state: ProvisionState::RescueFailed,
            hw: Hardware::PowerOff,
        };
        assert_eq!(work, Ok(Some(off)));
        let (ok, _) = hardware_done(
            &s,
            &st,
            ProvisionState::RescueFailed,
            Hardware::PowerOff,
            Ok(()),
            1,
            1,
            1000,
        );
        assert_eq!(ok.fault, None);
        let (bad, _) = hardware_done(
            &s,
            &st,
            ProvisionState::RescueFailed,
            Hardware::PowerOff,
            Err("no answer".into()),
            1,
            1,
            1000,
        );
        assert_eq!(bad.fault.as_deref(), Some("rescue abort failure"));
        assert_eq!(bad.provision_state, ProvisionState::RescueFailed);
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
        let (verifying, work) = begin_provision(&s, &st, &vreq(1, Verb::Manage), 0, 1000);
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
        let (next, work) = begin_provision(&spec(), &owned(1), &vreq(3, Verb::Provide), 0, 1000);
        assert!(work.is_err());
        assert_eq!(next.provision_state, ProvisionState::Enroll);
        assert_eq!(next.provision_seq_done, 3);
        assert!(next.last_error.unwrap().contains("enroll"));
    }
}

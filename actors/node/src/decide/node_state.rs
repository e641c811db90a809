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

/// The status condition of a node held by `caretaker` because no live conductor serves its
/// driver and conductor group.
pub fn unserved_condition(driver: &str, group: &str, caretaker: &str) -> String {
    format!(
        "no live conductor serves driver \"{driver}\" in conductor group \"{group}\"; {caretaker} holds the node as caretaker: no hardware work is done and requests stay queued until such a conductor joins"
    )
}

/// The status after this conductor takes the node over from `previous` (None: never owned).
/// A node found in a state where its previous owner was working is moved to the matching failed
/// state with a `last_error` that names who died and when; wait states keep waiting.
/// `unserved`: this conductor takes the node only as its caretaker, for this reason (said in
/// `last_error` too, and kept as the status condition while it lasts).
pub fn take_over(
    status: &NodeStatus,
    me: &str,
    token: FenceToken,
    now_ms: u64,
    unserved: Option<&str>,
) -> NodeStatus {
    let mut next = status.clone();
    next.owner = Some(me.to_string());
    next.fence = token.0;
    next.updated_at_ms = now_ms;
    if let Recovery::FailTo(failed) = recovery_on_takeover(status.provision_state) {
        let previous = status.owner.as_deref().unwrap_or("an unknown conductor");
        let mut error = format!(
            "conductor {previous} stopped while the node was in \"{}\" (taken over by {me} at {}); moved to \"{}\"",
            status.provision_state.as_str(),
            fmt_ms(now_ms),
            failed.as_str()
        );
        if let Some(why) = unserved {
            error.push_str("; ");
            error.push_str(why);
        }
        next.last_error = Some(error);
        next.target_provision_state = None;
        next.provision_state = failed;
        next.provision_updated_at_ms = Some(now_ms);
    }
    // A power action that was in flight is re-checked against the hardware by the request
    // (still pending, since power_seq_done was not advanced), so only the target is cleared.
    next.target_power_state = None;
    next.unserved = unserved.map(str::to_string);
    next
}

/// A caretaker that already holds a node found busy (its driver or group changed while this
/// conductor worked on it): the work cannot go on here, so the node moves to the matching failed
/// state, as a takeover would move it. None when the state is not busy.
pub fn fail_unserved(status: &NodeStatus, now_ms: u64, unserved: &str) -> Option<NodeStatus> {
    let Recovery::FailTo(failed) = recovery_on_takeover(status.provision_state) else {
        return None;
    };
    let mut next = status.clone();
    next.last_error = Some(format!(
        "the work in \"{}\" stopped at {} and the node moved to \"{}\": {unserved}",
        status.provision_state.as_str(),
        fmt_ms(now_ms),
        failed.as_str()
    ));
    next.target_provision_state = None;
    next.provision_state = failed;
    next.provision_updated_at_ms = Some(now_ms);
    next.unserved = Some(unserved.to_string());
    next.updated_at_ms = now_ms;
    Some(next)
}

/// Request sequences a replaced spec restarted. In every spec the API advanced, a request's
/// sequence number is at least what the status has done; one behind it means the spec was
/// replaced by a repair that could not read the status (`PUT`, `ferric ctl node repair`), and
/// numbers its requests from 1 again. Such a request is a new one: the done counter goes back to
/// just before it, so it runs instead of passing for done. Returns the kinds rebased.
pub fn rebase_sequences(spec: &NodeSpec, status: &mut NodeStatus) -> Vec<&'static str> {
    let mut rebased = Vec::new();
    let mut rebase = |seq: Option<u64>, done: &mut u64, kind: &'static str| {
        if let Some(seq) = seq.filter(|s| *s < *done) {
            *done = seq - 1;
            rebased.push(kind);
        }
    };
    rebase(
        spec.power_request.as_ref().map(|r| r.seq),
        &mut status.power_seq_done,
        "power",
    );
    rebase(
        spec.provision_request.as_ref().map(|r| r.seq),
        &mut status.provision_seq_done,
        "provision",
    );
    rebase(
        spec.boot_device_request.as_ref().map(|r| r.seq),
        &mut status.boot_seq_done,
        "boot device",
    );
    rebased
}

/// Whether a takeover changed anything a reader must see (a recovered state, a cleared power
/// target); if not, the new owner records itself in the status with its next real write.
pub fn takeover_needs_write(before: &NodeStatus, after: &NodeStatus) -> bool {
    before.provision_state != after.provision_state
        || before.target_provision_state != after.target_provision_state
        || before.target_power_state != after.target_power_state
        || before.last_error != after.last_error
        || before.unserved != after.unserved
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
    next.power_op_ended_ms = Some(now_ms);
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
/// An unreadable `driver_info` (which the fake interface reads) is an error.
pub fn deploy_interface(spec: &NodeSpec) -> Result<DeployInterface, DriverInfoError> {
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
    if state == S::Cleaning && !status.manual && spec.automated_clean == Some(false) {
        // Ironic's `automated_clean` false (the node's, or the cluster default the node actor
        // resolved into it): automated cleaning is one instant step that succeeds. Manual
        // cleaning is what the user asked for and always runs.
        return Ok(Some(Work::Step {
            state,
            after_ms: 0,
            ok: true,
        }));
    }
    let interface =
        deploy_interface(spec).map_err(|e| format!("cannot read the node's driver_info: {e}"))?;
    match interface {
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
            next.agent_link = None;
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
        && deploy_interface(spec).is_ok_and(|d| d == DeployInterface::Direct)
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
        next.agent_link = next.agent_link.filter(|_| req.verb == Verb::Abort);
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
                steps: crate::decide::agent::steps_at_boot(state),
                done: 0,
                booted_at_ms: started_ms.min(now_ms),
                token: None,
                heartbeat_rev: 0,
                last_heartbeat_ms: None,
                maintenance_ok,
            });
            // The new ramdisk's agent links itself with its first heartbeat.
            next.agent_link = None;
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
    // A retired node is not returned to the pool: automated cleaning ends in `manageable`, as
    // a manual clean does (Ironic's `'manage' if manual_clean or node.retired else 'done'`).
    let ends_manageable =
        status.manual || (spec.retired && state == ProvisionState::Cleaning && ev == Event::Done);
    let to = event(state, ev, ends_manageable);
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
            next.agent_link = None;
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

pub(crate) fn fmt_ms(ms: u64) -> String {
    format!("{}.{:03}s since epoch", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests;

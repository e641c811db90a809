//! Power sync, decided: what one read of a node's power state by a sweep (or a power-failure
//! probe) changes in its status, and whether the `enforce` policy pushes the last requested state
//! back onto the hardware. Pure, so every rule is tested without BMCs, etcd or actors.
//!
//! The rules (README, "Power sync"):
//! - A read that differs from the recorded state is recorded, with a history entry naming it
//!   the result of the last request (when it reaches that request's target) or an out-of-band
//!   change (the OS, the button, another BMC client), and an event.
//! - `--sync-max-failures` failed reads in a row give the fault `power failure` (unless the node
//!   is in maintenance already); the owner then puts the node into maintenance, noting that it
//!   did. The count lives in the status, so a failover does not reset it.
//! - A read that works clears the count; on a node with the fault `power failure` it ends the
//!   fault, and lifts the maintenance only if the fault put it there.
//! - `enforce` pushes only the target of the last *finished* request, only after the mismatch
//!   was seen on two reads in a row, only once the grace period after the last request and the
//!   last power operation has passed, never powers off a `disable_power_off` node, and never
//!   cuts power after a soft power off (the OS did not agree to go down).

use super::node_state::{fmt_ms, set_fault};
use ferric_model::{faults, NodeSpec, NodeStatus, PowerState, PowerTarget, SyncPolicy};

/// The settings of one conductor's sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    pub grace_ms: u64,
    pub max_failures: u32,
}

/// What a read changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    /// The status to write, when it changed.
    pub status: Option<NodeStatus>,
    /// The history entry's action and error, when there is something to say.
    pub history: Option<(String, Option<String>)>,
    /// The mismatch with the last requested state this read saw (for the next read's "two in a
    /// row"); None when the hardware is where it was asked to be.
    pub mismatch: Option<PowerState>,
    /// `enforce` restores this (a hard action).
    pub push: Option<PowerTarget>,
    /// The fault is over and the maintenance it set is to be lifted.
    pub leave_maintenance: bool,
}

/// The power-failure probe applies: the node is in maintenance because its BMC stopped
/// answering (or a power operation recorded the same fault).
pub fn in_power_failure(spec: &NodeSpec, status: &NodeStatus) -> bool {
    spec.maintenance && status.fault.as_deref() == Some(faults::POWER_FAILURE)
}

/// The status once the BMC of a node in power failure answered with `power`: the fault, its
/// count and its maintenance note are cleared. The one recovery of a power failure, whoever
/// probed (power sync's probe, or a remediation rule's `power-check`).
pub fn recovered(status: &NodeStatus, power: PowerState) -> NodeStatus {
    let mut next = status.clone();
    next.fault = None;
    next.fault_at_ms = None;
    next.power_failures = 0;
    next.fault_maintenance = None;
    next.power_state = Some(power);
    next
}

/// The policy in force for a node: its own `ferric_power_sync`, else the cluster's.
pub fn policy_for(node: Option<SyncPolicy>, cluster: SyncPolicy) -> SyncPolicy {
    node.unwrap_or(cluster)
}

/// One read's consequences. `previous`: the mismatch the last read saw (None: none, or this
/// owner has not read the node yet).
pub fn on_read(
    spec: &NodeSpec,
    status: &NodeStatus,
    read: Result<PowerState, String>,
    previous: Option<PowerState>,
    policy: SyncPolicy,
    settings: SyncSettings,
    now_ms: u64,
) -> SyncOutcome {
    let mut out = SyncOutcome::default();
    let power = match read {
        Err(error) => return failed_read(spec, status, error, settings, now_ms),
        Ok(p) => p,
    };
    let mut next = status.clone();
    next.power_failures = 0;
    if in_power_failure(spec, status) {
        next = recovered(status, power);
        let lift = spec.maintenance_reason.is_some()
            && status.fault_maintenance.as_deref() == spec.maintenance_reason.as_deref();
        out.leave_maintenance = lift;
        out.history = Some((
            format!(
                "power failure over: the BMC answers again ({}){}",
                power.as_str(),
                if lift {
                    "; the maintenance it set is lifted"
                } else {
                    "; maintenance set by a user stays"
                }
            ),
            None,
        ));
        out.status = Some(next);
        return out;
    }
    if status.power_state != Some(power) {
        next.power_state = Some(power);
        out.history = Some((describe_change(spec, status, power), None));
    }
    let requested = spec
        .power_request
        .as_ref()
        .filter(|r| r.seq <= status.power_seq_done);
    if let Some(req) = requested.filter(|r| r.target.final_state() != power) {
        out.mismatch = Some(power);
        if policy == SyncPolicy::Enforce && previous == Some(power) {
            let since = req
                .requested_at_ms
                .max(status.power_op_ended_ms.unwrap_or(0));
            let push = match req.target {
                PowerTarget::On | PowerTarget::Reboot | PowerTarget::SoftReboot => {
                    Some(PowerTarget::On)
                }
                PowerTarget::Off if !spec.disable_power_off => Some(PowerTarget::Off),
                // Never cut power the OS did not agree to, nor power off what must stay on.
                PowerTarget::Off | PowerTarget::SoftOff => None,
            };
            if push.is_some() && now_ms >= since.saturating_add(settings.grace_ms) {
                out.push = push;
            }
        }
    }
    if next != *status {
        out.status = Some(next);
    }
    out
}

/// The history text of a read that differs from the recorded state.
fn describe_change(spec: &NodeSpec, status: &NodeStatus, power: PowerState) -> String {
    let was = status.power_state.map_or("unknown", |p| p.as_str());
    let by_request = spec
        .power_request
        .as_ref()
        .filter(|r| r.seq <= status.power_seq_done && r.target.final_state() == power);
    match by_request {
        Some(r) => format!(
            "{} (was {was}): the result of \"{}\" requested by {} at {}",
            power.as_str(),
            r.target.as_str(),
            r.requested_by,
            fmt_ms(r.requested_at_ms)
        ),
        None => format!(
            "{} (was {was}): an out-of-band change (the OS, the power button, or another BMC client)",
            power.as_str()
        ),
    }
}

fn failed_read(
    spec: &NodeSpec,
    status: &NodeStatus,
    error: String,
    settings: SyncSettings,
    now_ms: u64,
) -> SyncOutcome {
    if in_power_failure(spec, status) {
        // A probe that still finds no BMC: nothing new to say (the fault says it).
        return SyncOutcome::default();
    }
    let mut next = status.clone();
    next.power_failures = status.power_failures.saturating_add(1);
    let n = next.power_failures;
    let max = settings.max_failures.max(1);
    let mut action = format!("power state read failed ({n} in a row, the limit is {max})");
    if n >= max && !spec.maintenance && status.fault.is_none() {
        set_fault(&mut next, faults::POWER_FAILURE, now_ms);
        next.power_state = None;
        next.last_error = Some(format!(
            "power state could not be read {n} times in a row: {error}"
        ));
        action.push_str(": power failure, the node goes into maintenance");
    }
    SyncOutcome {
        status: Some(next),
        history: Some((action, Some(error))),
        ..SyncOutcome::default()
    }
}

#[cfg(test)]
mod tests;

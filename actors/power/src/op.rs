//! One power operation as a pure state machine: given what the hardware last said and the time,
//! which command comes next. Every command is idempotent in effect ("ensure on", never
//! "toggle"): the machine is read before and after each change.
//!
//! Graceful operations never cut power nobody asked to cut: when the OS does not shut down in
//! time, the node's `soft_off_policy` decides: `error` leaves power as it is and fails the
//! operation; `hard-off` forces the machine off and says so.

use crate::bmc::PowerAction;
use ferric_model::{PowerState, PowerTarget, SoftOffPolicy};

/// What the operation must achieve and under which rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub seq: u64,
    pub target: PowerTarget,
    /// Wall-clock deadline (ms since epoch) of the whole operation, or of the OS's shutdown for
    /// graceful operations.
    pub deadline_ms: u64,
    pub timeout_s: u32,
    pub policy: SoftOffPolicy,
    pub disable_power_off: bool,
}

/// Where the operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing sent yet (also where a new owner resumes a hard operation: it reads first).
    Begin,
    OnSent,
    OffSent,
    ResetSent,
    /// The graceful shutdown request went out; waiting for the OS.
    SoftSent,
    /// The OS did not shut down in time and policy `hard-off` forced it.
    ForcedOff,
    /// Powering on again after a forced off (the soft reboot's note must say it was forced).
    ForcedOnSent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send(PowerAction, Phase),
    /// Read the power state again later.
    Poll,
    Done {
        note: Option<String>,
    },
    Failed {
        error: String,
        fault: bool,
    },
}

pub fn decide(plan: &Plan, phase: Phase, observed: PowerState, now_ms: u64) -> Decision {
    use Decision::*;
    use PowerState::{Off, On};
    use PowerTarget as T;
    let late = now_ms >= plan.deadline_ms;
    let timed_out = |what: &str| Failed {
        error: format!("{what} within {} s", plan.timeout_s),
        fault: false,
    };
    if plan.disable_power_off && matches!(plan.target, T::Off | T::SoftOff) {
        return Failed {
            error: "power off is disabled on this node (disable_power_off)".into(),
            fault: false,
        };
    }
    match (plan.target, phase, observed) {
        // Observed states that already satisfy the target end the operation.
        (T::On, _, On) => Done { note: None },
        (T::Off, _, Off) => Done { note: None },
        (T::SoftOff, Phase::ForcedOff, Off) => Done {
            note: Some(forced_note(plan)),
        },
        (T::SoftOff, _, Off) => Done { note: None },
        (T::Reboot | T::SoftReboot, Phase::OnSent | Phase::ResetSent, On) => Done { note: None },
        (T::SoftReboot, Phase::ForcedOnSent, On) => Done {
            note: Some(forced_note(plan)),
        },
        (T::SoftReboot, Phase::ForcedOff, Off) => Send(PowerAction::On, Phase::ForcedOnSent),

        (_, _, PowerState::Error) => Failed {
            error: "the BMC reports the power state as an error".into(),
            fault: true,
        },

        // Power on.
        (T::On, Phase::Begin, Off) => Send(PowerAction::On, Phase::OnSent),
        (T::On, _, Off) if late => timed_out("the machine did not power on"),
        (T::On, _, Off) => Poll,

        // Power off (hard).
        (T::Off, Phase::Begin, On) => Send(PowerAction::ForceOff, Phase::OffSent),
        (T::Off, _, On) if late => timed_out("the machine did not power off"),
        (T::Off, _, On) => Poll,

        // Reboot: off then on, or a reset when power off is disabled.
        (T::Reboot, Phase::Begin, On) if plan.disable_power_off => {
            Send(PowerAction::HardReset, Phase::ResetSent)
        }
        (T::Reboot, Phase::Begin, On) => Send(PowerAction::ForceOff, Phase::OffSent),
        (T::Reboot, Phase::Begin | Phase::OffSent, Off) => Send(PowerAction::On, Phase::OnSent),
        (T::Reboot, _, _) if late => timed_out("the machine did not come back on"),
        (T::Reboot, _, _) => Poll,

        // A node that must never be powered off reboots by reset, soft or not: no graceful
        // shutdown (the OS would power the machine off) and no forced off.
        (T::SoftReboot, Phase::Begin, On) if plan.disable_power_off => {
            Send(PowerAction::HardReset, Phase::ResetSent)
        }
        (T::SoftReboot, Phase::ResetSent, _) if late => {
            timed_out("the machine did not come back on")
        }
        (T::SoftReboot, Phase::ResetSent, _) => Poll,

        // Soft power off and soft reboot: ask the OS, wait, then policy.
        (T::SoftOff | T::SoftReboot, Phase::Begin, On) => {
            Send(PowerAction::GracefulShutdown, Phase::SoftSent)
        }
        (T::SoftReboot, Phase::Begin | Phase::SoftSent, Off) => {
            Send(PowerAction::On, Phase::OnSent)
        }
        (T::SoftOff | T::SoftReboot, Phase::SoftSent, On) if late => match plan.policy {
            SoftOffPolicy::Error => Failed {
                error: format!(
                    "the OS did not shut down within {} s; power left on (soft_off_policy error)",
                    plan.timeout_s
                ),
                fault: true,
            },
            SoftOffPolicy::HardOff => Send(PowerAction::ForceOff, Phase::ForcedOff),
        },
        (T::SoftOff | T::SoftReboot, Phase::ForcedOff, On) if late_by(plan, now_ms, 60_000) => {
            timed_out("the machine did not power off even when forced")
        }
        (T::SoftReboot, Phase::OnSent, Off) if late => {
            timed_out("the machine did not come back on")
        }
        (T::SoftOff | T::SoftReboot, _, _) => Poll,
    }
}

/// Past the deadline by more than `extra_ms` (a forced off after a soft timeout gets its own
/// minute, as a hard power off would).
fn late_by(plan: &Plan, now_ms: u64, extra_ms: u64) -> bool {
    now_ms >= plan.deadline_ms.saturating_add(extra_ms)
}

fn forced_note(plan: &Plan) -> String {
    format!(
        "the OS did not shut down within {} s; forced off (soft_off_policy hard-off)",
        plan.timeout_s
    )
}

/// The phase a new owner resumes in: a graceful request already sent is not sent again.
pub fn resume_phase(soft_sent: bool) -> Phase {
    if soft_sent {
        Phase::SoftSent
    } else {
        Phase::Begin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PowerState::{Off, On};

    fn plan(target: PowerTarget) -> Plan {
        Plan {
            seq: 1,
            target,
            deadline_ms: 10_000,
            timeout_s: 10,
            policy: SoftOffPolicy::Error,
            disable_power_off: false,
        }
    }

    /// Runs an operation against a simulated machine whose OS shuts down `os_off_at` ms after a
    /// graceful request (None: never). Returns the commands sent and the outcome.
    fn run(
        plan: Plan,
        start: PowerState,
        os_off_after: Option<u64>,
    ) -> (Vec<PowerAction>, Decision) {
        let mut power = start;
        let mut phase = Phase::Begin;
        let mut sent = Vec::new();
        let mut soft_at = None;
        let mut now = 0;
        for _ in 0..200 {
            if let (Some(at), Some(after)) = (soft_at, os_off_after) {
                if now >= at + after {
                    // The OS finished shutting down (once).
                    power = Off;
                    soft_at = None;
                }
            }
            match decide(&plan, phase, power, now) {
                Decision::Send(action, next) => {
                    sent.push(action);
                    phase = next;
                    match action {
                        PowerAction::On | PowerAction::HardReset => power = On,
                        PowerAction::ForceOff => power = Off,
                        PowerAction::GracefulShutdown => soft_at = Some(now),
                    }
                }
                Decision::Poll => now += 500,
                end => return (sent, end),
            }
        }
        panic!("operation did not end");
    }

    #[test]
    fn hard_operations_are_idempotent() {
        assert_eq!(
            run(plan(PowerTarget::On), Off, None),
            (vec![PowerAction::On], Decision::Done { note: None })
        );
        assert_eq!(
            run(plan(PowerTarget::On), On, None),
            (vec![], Decision::Done { note: None })
        );
        assert_eq!(
            run(plan(PowerTarget::Off), On, None),
            (vec![PowerAction::ForceOff], Decision::Done { note: None })
        );
        assert_eq!(run(plan(PowerTarget::Off), Off, None).0, vec![]);
        assert_eq!(
            run(plan(PowerTarget::Reboot), On, None).0,
            vec![PowerAction::ForceOff, PowerAction::On]
        );
        assert_eq!(
            run(plan(PowerTarget::Reboot), Off, None).0,
            vec![PowerAction::On]
        );
    }

    #[test]
    fn disable_power_off_refuses_off_and_reboots_by_reset() {
        let mut p = plan(PowerTarget::Off);
        p.disable_power_off = true;
        assert!(matches!(run(p, On, None), (v, Decision::Failed { .. }) if v.is_empty()));
        p.target = PowerTarget::SoftOff;
        assert!(matches!(run(p, On, None), (v, Decision::Failed { .. }) if v.is_empty()));
        p.target = PowerTarget::Reboot;
        assert_eq!(
            run(p, On, None),
            (vec![PowerAction::HardReset], Decision::Done { note: None })
        );
    }

    #[test]
    fn soft_off_that_completes_never_forces() {
        let (sent, end) = run(plan(PowerTarget::SoftOff), On, Some(3_000));
        assert_eq!(sent, vec![PowerAction::GracefulShutdown]);
        assert_eq!(end, Decision::Done { note: None });
    }

    #[test]
    fn soft_off_timeout_with_policy_error_leaves_power_on_and_faults() {
        let (sent, end) = run(plan(PowerTarget::SoftOff), On, None);
        assert_eq!(sent, vec![PowerAction::GracefulShutdown]);
        match end {
            Decision::Failed { error, fault } => {
                assert!(fault);
                assert!(error.contains("did not shut down within 10 s"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn soft_off_timeout_with_policy_hard_off_forces_and_says_so() {
        let mut p = plan(PowerTarget::SoftOff);
        p.policy = SoftOffPolicy::HardOff;
        let (sent, end) = run(p, On, None);
        assert_eq!(
            sent,
            vec![PowerAction::GracefulShutdown, PowerAction::ForceOff]
        );
        assert!(matches!(end, Decision::Done { note: Some(n) } if n.contains("forced off")));
    }

    #[test]
    fn soft_reboot_waits_for_the_os_then_powers_on() {
        let (sent, end) = run(plan(PowerTarget::SoftReboot), On, Some(2_000));
        assert_eq!(sent, vec![PowerAction::GracefulShutdown, PowerAction::On]);
        assert_eq!(end, Decision::Done { note: None });
        let mut p = plan(PowerTarget::SoftReboot);
        p.policy = SoftOffPolicy::HardOff;
        let (sent, _) = run(p, On, None);
        assert_eq!(
            sent,
            vec![
                PowerAction::GracefulShutdown,
                PowerAction::ForceOff,
                PowerAction::On
            ]
        );
    }

    #[test]
    fn a_new_owner_resumes_waiting_without_resending() {
        let p = plan(PowerTarget::SoftOff);
        assert_eq!(decide(&p, resume_phase(true), On, 5_000), Decision::Poll);
        assert!(matches!(
            decide(&p, resume_phase(true), On, 10_000),
            Decision::Failed { .. }
        ));
        assert_eq!(
            decide(&p, resume_phase(true), Off, 10_000),
            Decision::Done { note: None }
        );
        // A hard operation is re-checked against the hardware first.
        assert_eq!(
            decide(&plan(PowerTarget::On), resume_phase(false), On, 0),
            Decision::Done { note: None }
        );
    }

    #[test]
    fn a_machine_that_never_turns_on_times_out() {
        let p = plan(PowerTarget::On);
        assert_eq!(decide(&p, Phase::OnSent, Off, 9_999), Decision::Poll);
        assert!(matches!(
            decide(&p, Phase::OnSent, Off, 10_000),
            Decision::Failed { fault: false, .. }
        ));
    }
}

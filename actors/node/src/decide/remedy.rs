//! Faults, maintenance and the remediation policy, as pure decisions.
//!
//! A fault (`clean failure`, `service failure`, `rescue abort failure`, `power failure`) is
//! recorded in the status by the owner, which then puts the node into maintenance in the spec
//! (Ironic does both in one save; here they are two writes, and a new owner that finds the
//! fault without maintenance finishes the job, see [`fault_vs_maintenance`]).
//!
//! Remediation (off by default) acts only on nodes in maintenance with a fault its policy names,
//! one attempt at a time, each attempt after taking a slot of the cluster-wide rate limit.

use ferric_model::provision::on_verb;
use ferric_model::{
    NodeSpec, NodeStatus, ProvisionState, RemediationAction, RemediationPolicy, RemediationRule,
    Verb,
};

/// What the owner must do about a fault and the spec's maintenance flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    Nothing,
    /// Put the node into maintenance with this reason.
    SetMaintenance(String),
    /// Maintenance was left after the fault was recorded: the fault is cleared.
    ClearFault,
}

pub fn fault_vs_maintenance(spec: &NodeSpec, status: &NodeStatus) -> FaultAction {
    let Some(fault) = status.fault.as_deref() else {
        return FaultAction::Nothing;
    };
    if spec.maintenance {
        return FaultAction::Nothing;
    }
    // The spec last changed before the fault: the maintenance write is still to be done (or was
    // lost with a dying owner). Changed after it: an operator left maintenance.
    if status.fault_at_ms.unwrap_or(0) >= spec.updated_at_ms {
        let reason = match &status.last_error {
            Some(e) => format!("{fault}: {e}"),
            None => fault.to_string(),
        };
        FaultAction::SetMaintenance(reason)
    } else {
        FaultAction::ClearFault
    }
}

/// The next move of remediation on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    Nothing,
    /// Start an attempt of `rule` (after taking a rate-limit slot).
    Start(RemediationRule),
    /// Ask for this verb (as the user "remediation", allowed in maintenance).
    Request(Verb),
    /// Read the power state; success ends the attempt well.
    PowerCheck,
    /// The attempt worked: leave maintenance, clear the fault.
    Succeeded,
    /// The attempt failed: stay in maintenance with the reason updated.
    Failed(String),
    /// The operator left maintenance during the attempt: stop remediating.
    Abandon,
}

pub fn remedy(spec: &NodeSpec, status: &NodeStatus, policy: &RemediationPolicy) -> Remedy {
    use ProvisionState as S;
    let state = status.provision_state;
    if spec.pending_provision(status).is_some() || state.is_busy() || state.is_wait() {
        return Remedy::Nothing;
    }
    let active = status.remediation.as_ref().filter(|r| r.active);
    let Some(r) = active else {
        let Some(fault) = status.fault.as_deref().filter(|_| spec.maintenance) else {
            return Remedy::Nothing;
        };
        let Some(rule) = policy.rule_for(fault) else {
            return Remedy::Nothing;
        };
        let tried = status
            .remediation
            .as_ref()
            .filter(|r| r.fault == fault)
            .map_or(0, |r| r.attempts);
        if tried >= rule.attempts {
            return Remedy::Nothing;
        }
        return Remedy::Start(rule.clone());
    };
    if !spec.maintenance {
        return Remedy::Abandon;
    }
    let action = policy
        .rule_for(&r.fault)
        .map_or(RemediationAction::Clean, |rule| rule.action);
    match action {
        RemediationAction::PowerCheck => Remedy::PowerCheck,
        RemediationAction::Clean => match state {
            S::Available if r.cleaning => Remedy::Succeeded,
            S::CleanFailed if r.cleaning => Remedy::Failed(
                status
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "cleaning failed".into()),
            ),
            S::Manageable => Remedy::Request(Verb::Provide),
            s if on_verb(s, Verb::Manage).is_ok() => Remedy::Request(Verb::Manage),
            s => Remedy::Failed(format!(
                "cannot clean a node in \"{}\" (remediation only cleans nodes that can be managed)",
                s.as_str()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_model::{faults, NodeId, Remediation};

    fn spec(maintenance: bool, updated: u64) -> NodeSpec {
        let mut s = NodeSpec::new(NodeId::new_random(), "fake-hardware", 0);
        s.maintenance = maintenance;
        s.updated_at_ms = updated;
        s
    }

    fn faulty(state: ProvisionState, at: u64) -> NodeStatus {
        NodeStatus {
            provision_state: state,
            fault: Some(faults::CLEAN_FAILURE.into()),
            fault_at_ms: Some(at),
            last_error: Some("disk 3 did not erase".into()),
            ..NodeStatus::default()
        }
    }

    fn policy(action: RemediationAction, attempts: u32) -> RemediationPolicy {
        RemediationPolicy {
            rules: vec![RemediationRule {
                fault: faults::CLEAN_FAILURE.into(),
                action,
                attempts,
            }],
            max_per_window: 10,
            window_secs: 60,
        }
    }

    #[test]
    fn a_fault_puts_the_node_into_maintenance_once() {
        let st = faulty(ProvisionState::CleanFailed, 100);
        match fault_vs_maintenance(&spec(false, 50), &st) {
            FaultAction::SetMaintenance(reason) => {
                assert!(reason.starts_with("clean failure: disk 3"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fault_vs_maintenance(&spec(true, 150), &st),
            FaultAction::Nothing
        );
        // Maintenance left after the fault: the fault goes too.
        assert_eq!(
            fault_vs_maintenance(&spec(false, 150), &st),
            FaultAction::ClearFault
        );
        assert_eq!(
            fault_vs_maintenance(&spec(false, 0), &NodeStatus::default()),
            FaultAction::Nothing
        );
    }

    #[test]
    fn remediation_is_off_without_a_rule_and_bounded_by_attempts() {
        let st = faulty(ProvisionState::CleanFailed, 100);
        let s = spec(true, 150);
        assert_eq!(
            remedy(&s, &st, &RemediationPolicy::default()),
            Remedy::Nothing
        );
        let p = policy(RemediationAction::Clean, 1);
        assert!(matches!(remedy(&s, &st, &p), Remedy::Start(_)));
        // Not in maintenance: nothing (the fault is about to be cleared or set).
        assert_eq!(remedy(&spec(false, 150), &st, &p), Remedy::Nothing);
        let mut tried = st.clone();
        tried.remediation = Some(Remediation {
            fault: faults::CLEAN_FAILURE.into(),
            attempts: 1,
            active: false,
            cleaning: true,
            started_at_ms: 1,
        });
        assert_eq!(remedy(&s, &tried, &p), Remedy::Nothing);
        // Another fault is another episode.
        let mut other = tried.clone();
        other.fault = Some(faults::SERVICE_FAILURE.into());
        assert_eq!(remedy(&s, &other, &p), Remedy::Nothing, "no rule for it");
    }

    #[test]
    fn a_clean_attempt_manages_provides_and_judges_the_result() {
        let s = spec(true, 150);
        let p = policy(RemediationAction::Clean, 1);
        let mut st = faulty(ProvisionState::CleanFailed, 100);
        st.remediation = Some(Remediation {
            fault: faults::CLEAN_FAILURE.into(),
            attempts: 1,
            active: true,
            cleaning: false,
            started_at_ms: 1,
        });
        assert_eq!(remedy(&s, &st, &p), Remedy::Request(Verb::Manage));
        st.provision_state = ProvisionState::Manageable;
        assert_eq!(remedy(&s, &st, &p), Remedy::Request(Verb::Provide));
        st.remediation.as_mut().unwrap().cleaning = true;
        st.provision_state = ProvisionState::CleanWait;
        assert_eq!(remedy(&s, &st, &p), Remedy::Nothing, "busy");
        st.provision_state = ProvisionState::Available;
        assert_eq!(remedy(&s, &st, &p), Remedy::Succeeded);
        st.provision_state = ProvisionState::CleanFailed;
        assert!(matches!(remedy(&s, &st, &p), Remedy::Failed(e) if e.contains("disk 3")));
        st.provision_state = ProvisionState::Active;
        assert!(matches!(remedy(&s, &st, &p), Remedy::Failed(_)));
        assert_eq!(remedy(&spec(false, 200), &st, &p), Remedy::Abandon);
    }
}

//! What a change of the spec's maintenance flag does to the status. As in Ironic, leaving
//! maintenance clears `fault` (the status's; the API clears the spec's reason); both directions
//! go into the node's history.

use crate::decide::agent::restart_wait_on_leaving_maintenance;
use ferric_model::{NodeSpec, NodeStatus, Requester};

/// The status and history entry that record a maintenance flip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceChange {
    pub status: NodeStatus,
    /// The history entry's action.
    pub action: String,
    /// Who flipped it: the API, the conductor (maintenance on a fault) or remediation.
    pub by: Requester,
}

/// The change when maintenance flips from `was` (None: the first spec this actor sees, which
/// is no flip) to `spec.maintenance`. `author`: who wrote the flip when the node's owner did
/// (remediation, or the conductor on a fault); None for a user's change.
pub fn on_maintenance_change(
    was: Option<bool>,
    spec: &NodeSpec,
    status: &NodeStatus,
    author: Option<Requester>,
    now_ms: u64,
    callback_timeout_ms: u64,
) -> Option<MaintenanceChange> {
    // Maintenance set because of a fault is the conductor's act, not a user's.
    let by = if let Some(author) = author {
        author
    } else if spec.maintenance && status.fault.is_some() {
        Requester::Conductor
    } else if !spec.maintenance && status.remediation.as_ref().is_some_and(|r| r.active) {
        Requester::Remediation
    } else {
        Requester::Api
    };
    match (was?, spec.maintenance) {
        (false, true) => Some(MaintenanceChange {
            status: status.clone(),
            action: format!(
                "maintenance set: {}",
                spec.maintenance_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
            by,
        }),
        (true, false) => {
            let mut next = status.clone();
            let action = match next.fault.take() {
                Some(f) => format!("maintenance unset; fault \"{f}\" cleared"),
                None => "maintenance unset".to_string(),
            };
            next.fault_at_ms = None;
            // The fault episode is over; a new fault may be remediated again.
            next.remediation = None;
            restart_wait_on_leaving_maintenance(&mut next, now_ms, callback_timeout_ms);
            Some(MaintenanceChange {
                status: next,
                action,
                by,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_model::{NodeId, ProvisionState, Remediation};

    fn spec(maintenance: bool) -> NodeSpec {
        let mut s = NodeSpec::new(NodeId::new_random(), "fake-hardware", 0);
        s.maintenance = maintenance;
        s.maintenance_reason = maintenance.then(|| "rack work".to_string());
        s
    }

    #[test]
    fn no_flip_no_entry() {
        let st = NodeStatus::default();
        assert_eq!(
            on_maintenance_change(None, &spec(true), &st, None, 0, 1000),
            None
        );
        assert_eq!(
            on_maintenance_change(Some(true), &spec(true), &st, None, 0, 1000),
            None
        );
        assert_eq!(
            on_maintenance_change(Some(false), &spec(false), &st, None, 0, 1000),
            None
        );
    }

    #[test]
    fn entering_is_recorded_with_the_reason_and_who() {
        let st = NodeStatus::default();
        let c = on_maintenance_change(Some(false), &spec(true), &st, None, 0, 1000).unwrap();
        assert_eq!(c.action, "maintenance set: rack work");
        assert_eq!(c.by, "api");
        assert_eq!(c.status, st);
        let mut faulty = st.clone();
        faulty.fault = Some("power failure".into());
        let c = on_maintenance_change(Some(false), &spec(true), &faulty, None, 0, 1000).unwrap();
        assert_eq!(c.by, "conductor");
    }

    #[test]
    fn leaving_clears_the_fault_and_the_episode_and_restarts_the_wait() {
        let mut st = NodeStatus {
            provision_state: ProvisionState::CleanWait,
            fault: Some("clean failure".into()),
            fault_at_ms: Some(5),
            deadline_ms: Some(10),
            ..NodeStatus::default()
        };
        st.remediation = Some(Remediation {
            fault: "clean failure".into(),
            attempts: 1,
            active: true,
            cleaning: false,
            started_at_ms: 1,
        });
        let c = on_maintenance_change(Some(true), &spec(false), &st, None, 1_000, 60_000).unwrap();
        assert_eq!(
            c.action,
            "maintenance unset; fault \"clean failure\" cleared"
        );
        assert_eq!(c.by, "remediation");
        let by_owner = on_maintenance_change(
            Some(true),
            &spec(false),
            &NodeStatus::default(),
            Some(Requester::Remediation),
            0,
            1,
        );
        assert_eq!(by_owner.unwrap().by, "remediation");
        assert_eq!(c.status.fault, None);
        assert_eq!(c.status.fault_at_ms, None);
        assert_eq!(c.status.remediation, None);
        assert_eq!(c.status.deadline_ms, Some(61_000));
    }
}

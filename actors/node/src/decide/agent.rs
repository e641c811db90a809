//! The agent side of the `direct` deploy interface, as pure functions: which steps the agent
//! runs in each state, what a heartbeat does, when a wait state times out.
//!
//! Ferric has no callback into the agent: each heartbeat after the ramdisk boot runs the next
//! step (and says how the previous one went through `agent_status`). When the last step is done
//! the node resumes the busy state and the conductor does its own part (`node_state::work_for`).

use crate::decide::node_state::{transition, Work};
use ferric_model::heartbeat::INSPECTION_ERROR;
use ferric_model::provision::Event;
use ferric_model::HeartbeatRecord;
use ferric_model::{DriverInfo, NodeSpec, NodeStatus, ProvisionState};

/// Ironic's default callback timeouts (`[conductor]deploy_callback_timeout` etc.): 30 minutes.
pub const DEFAULT_CALLBACK_TIMEOUT_MS: u64 = 1_800_000;

/// How long wait states of this node wait for the agent: `driver_info.agent_callback_timeout`
/// (seconds, a Ferric extension) or the conductor's default.
pub fn callback_timeout_ms(info: &DriverInfo, default_ms: u64) -> u64 {
    info.agent_callback_timeout_ms().unwrap_or(default_ms)
}

/// The agent's steps in `state`, as `interface.step`. Manual cleaning and servicing run the
/// steps the request named (`clean_steps`, `service_steps`), the rest Ironic's defaults.
pub fn steps_for(spec: &NodeSpec, state: ProvisionState, manual: bool) -> Vec<String> {
    use ProvisionState as S;
    let requested = |field: &str| -> Vec<String> {
        let args: serde_json::Value = spec
            .provision_request
            .as_ref()
            .and_then(|r| serde_json::from_str(&r.args).ok())
            .unwrap_or_default();
        args.get(field)
            .and_then(|v| v.as_array())
            .map(|steps| {
                steps
                    .iter()
                    .filter_map(|s| {
                        let interface = s.get("interface")?.as_str()?;
                        let step = s.get("step")?.as_str()?;
                        Some(format!("{interface}.{step}"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let defaults: &[&str] = match state {
        S::Deploying => &["deploy.write_image", "deploy.prepare_instance_boot"],
        S::Cleaning if manual => {
            let steps = requested("clean_steps");
            if !steps.is_empty() {
                return steps;
            }
            &["deploy.erase_devices_metadata"]
        }
        S::Cleaning => &["deploy.erase_devices_metadata"],
        S::Inspecting => &["inspect.inspect_hardware"],
        S::Rescuing => &["rescue.finalize_rescue"],
        S::Servicing => {
            let steps = requested("service_steps");
            if !steps.is_empty() {
                return steps;
            }
            &["deploy.service_noop"]
        }
        _ => &[],
    };
    defaults.iter().map(|s| s.to_string()).collect()
}

/// What a heartbeat does to a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Heartbeat {
    /// Nothing; the reason goes to the debug log only (heartbeats come every few seconds).
    Ignored(&'static str),
    /// Recorded but no progress: the node is in maintenance.
    InMaintenance,
    /// The token differs from the one the first heartbeat of this boot pinned.
    WrongToken,
    /// A step ran, or the agent reported an error: the new status, the history line, the error
    /// if any, and the work that follows.
    Progress {
        status: Box<NodeStatus>,
        action: String,
        error: Option<String>,
        work: Option<Work>,
    },
}

/// Whether heartbeats and timeouts apply to this node now: not in maintenance, unless the work
/// was asked for in maintenance explicitly.
fn agent_may_progress(spec: &NodeSpec, status: &NodeStatus) -> bool {
    !spec.maintenance || status.agent.as_ref().is_some_and(|a| a.maintenance_ok)
}

/// A heartbeat recorded at etcd revision `rev`.
pub fn on_heartbeat(
    spec: &NodeSpec,
    status: &NodeStatus,
    hb: &HeartbeatRecord,
    rev: i64,
    now_ms: u64,
    timeout_ms: u64,
) -> Heartbeat {
    let state = status.provision_state;
    let Some(agent) = status.agent.as_ref().filter(|_| state.is_wait()) else {
        return Heartbeat::Ignored("the node is not waiting for its agent");
    };
    if rev <= agent.heartbeat_rev {
        return Heartbeat::Ignored("already acted on");
    }
    if hb.at_ms < agent.booted_at_ms {
        return Heartbeat::Ignored("sent before the node was booted into the ramdisk");
    }
    if !agent_may_progress(spec, status) {
        return Heartbeat::InMaintenance;
    }
    let inspection = hb.is_inspection_result();
    if state == ProvisionState::InspectWait && !inspection {
        // In-band inspection ends with the ramdisk's inspection data (the gateway records it
        // as an inspection result), not with a heartbeat.
        return Heartbeat::Ignored("inspect wait ends with the inspection data");
    }
    if inspection && state != ProvisionState::InspectWait {
        return Heartbeat::Ignored("inspection data for a node not waiting for it");
    }
    if let Some(pinned) = agent.token.as_ref().filter(|_| !inspection) {
        // (An inspection result is the gateway's record, not the agent's.)
        if hb.agent_token.as_ref() != Some(pinned) {
            return Heartbeat::WrongToken;
        }
    }
    let mut next = status.clone();
    {
        let a = next.agent.as_mut().expect("checked above");
        a.heartbeat_rev = rev;
        a.last_heartbeat_ms = Some(hb.at_ms);
        if a.token.is_none() {
            a.token = hb.agent_token.clone();
        }
    }
    if matches!(hb.agent_status.as_deref(), Some("error" | INSPECTION_ERROR)) {
        let error = format!(
            "the agent reported an error in \"{}\": {}",
            state.as_str(),
            hb.agent_status_message
                .as_deref()
                .unwrap_or("no message given")
        );
        let (failed, work) = transition(spec, &next, Event::Fail, Some(error.clone()), now_ms);
        return Heartbeat::Progress {
            action: format!(
                "agent error: \"{}\" -> \"{}\"",
                state.as_str(),
                failed.provision_state.as_str()
            ),
            status: Box::new(failed),
            error: Some(error),
            work,
        };
    }
    let a = next.agent.as_mut().expect("checked above");
    let step = a
        .steps
        .get(a.done as usize)
        .cloned()
        .unwrap_or_else(|| "(no step)".into());
    a.done += 1;
    let (done, total) = (a.done, a.steps.len());
    let finished = a.finished();
    let mut action = format!("agent step {step} done ({done} of {total})");
    if !finished {
        next.deadline_ms = Some(now_ms + timeout_ms);
        return Heartbeat::Progress {
            status: Box::new(next),
            action,
            error: None,
            work: None,
        };
    }
    let (resumed, work) = transition(spec, &next, Event::Resume, None, now_ms);
    action = format!(
        "{action}: \"{}\" -> \"{}\"",
        state.as_str(),
        resumed.provision_state.as_str()
    );
    Heartbeat::Progress {
        status: Box::new(resumed),
        action,
        error: None,
        work,
    }
}

/// If the node's wait state ran out of time: the failed status and the error. Nodes in
/// maintenance do not time out (nothing advances them by themselves), as in Ironic.
pub fn wait_timeout(
    spec: &NodeSpec,
    status: &NodeStatus,
    now_ms: u64,
) -> Option<(NodeStatus, String)> {
    let state = status.provision_state;
    let deadline = status.deadline_ms?;
    if !state.is_wait() || now_ms < deadline || !agent_may_progress(spec, status) {
        return None;
    }
    let step = status
        .agent
        .as_ref()
        .and_then(|a| a.steps.get(a.done as usize).cloned());
    let error = format!(
        "Timeout reached while waiting for callback for node {} in \"{}\"{}",
        spec.id,
        state.as_str(),
        step.map(|s| format!(" (step {s})")).unwrap_or_default()
    );
    let (failed, _) = transition(spec, status, Event::Fail, Some(error.clone()), now_ms);
    Some((failed, error))
}

/// When the node leaves maintenance in a wait state, its agent gets a whole timeout again (the
/// deadline may have passed while nothing was allowed to advance the node).
pub fn restart_wait_on_leaving_maintenance(status: &mut NodeStatus, now_ms: u64, timeout_ms: u64) {
    if status.provision_state.is_wait() && status.deadline_ms.is_some() {
        status.deadline_ms = Some(now_ms + timeout_ms);
    }
}

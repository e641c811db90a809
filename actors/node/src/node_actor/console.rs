//! The node's console: a `ConsoleActor` child while the spec enables it (in maintenance too:
//! operators diagnose nodes with it), stopped before the reservation is released.

use super::{NodeMsg, NodeState};
use ferric_console::{
    ConsoleActor, ConsoleArgs, ConsoleEvent, ConsoleMsg, ConsoleTarget, RecordTo, StopReason,
};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;

/// How long a stopping node waits for its console to end (ipmitool's stdin close, SIGINT,
/// SIGKILL and `sol deactivate` fit well within it).
pub(super) const CONSOLE_STOP_BOUND: Duration = Duration::from_secs(30);

/// Starts, restarts or stops the node's console actor to match the spec's `console_enabled`.
/// Returns a new error that keeps the console from running. `allowed`: false while the node is
/// held by a caretaker, which runs no console (the console stops if one runs).
pub(super) async fn sync_console(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    allowed: bool,
) -> Option<String> {
    let consoles = state.ctx.consoles.as_ref()?;
    let wanted = state
        .spec
        .as_deref()
        .filter(|s| s.console_enabled && allowed && state.may_command())
        .map(|s| {
            let interface = s.interfaces.get("console_interface").map(String::as_str);
            ConsoleTarget::resolve_info(&s.driver, interface, &state.info)
        });
    match (wanted, state.console.take()) {
        (None, None) => state.console_error = None,
        (None, Some((console, _))) => {
            tracing::info!(node = %state.id, "console disabled");
            // The actor cleans up on its own (close viewers, end the session, free the BMC).
            let _ = console.send_message(ConsoleMsg::Stop(StopReason::Disabled));
            state.console_error = None;
        }
        (Some(Ok(target)), Some((console, running))) if running == target => {
            state.console = Some((console, running));
        }
        (Some(Ok(target)), previous) => {
            if let Some((console, _)) = previous {
                // New credentials or address: end the old session before opening the new one.
                ConsoleActor::stop_and_wait(&console, StopReason::Disabled, CONSOLE_STOP_BOUND)
                    .await;
            }
            let node = state.id;
            let args = ConsoleArgs {
                node,
                target: target.clone(),
                ctx: consoles.ctx.clone(),
                record: consoles.records.as_ref().map(|(cluster, lease)| RecordTo {
                    cluster: cluster.clone(),
                    lease: *lease,
                    token: state.token,
                }),
                notify: Arc::new(move |ev| match ev {
                    ConsoleEvent::State { state, .. } => {
                        tracing::debug!(%node, ?state, "console state")
                    }
                }),
            };
            match ConsoleActor::spawn_linked(myself.get_cell(), args).await {
                Ok(console) => {
                    tracing::info!(node = %state.id, "console enabled");
                    state.console = Some((console, target));
                    state.console_error = None;
                }
                Err(e) => return console_failed(state, e.to_string()),
            }
        }
        (Some(Err(e)), previous) => {
            if let Some((console, _)) = previous {
                let _ = console.send_message(ConsoleMsg::Stop(StopReason::Disabled));
            }
            return console_failed(state, e.to_string());
        }
    }
    None
}

/// Some(error) the first time this error keeps the console from running.
fn console_failed(state: &mut NodeState, error: String) -> Option<String> {
    if state.console_error.as_deref() == Some(error.as_str()) {
        return None;
    }
    tracing::warn!(node = %state.id, %error, "cannot open the node's console");
    state.console_error = Some(error.clone());
    Some(error)
}

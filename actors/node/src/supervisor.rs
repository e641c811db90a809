//! The per-conductor supervisor of node actors.
//!
//! ```text
//! conductor session (conductor/session.rs: lease, watches, reservations;
//!                    conductor/ownership.rs decides placement and hand-over)
//!   └── NodeSupervisor (one per conductor process)
//!         ├── NodeActor <uuid-1>   (one per reserved node)
//!         ├── NodeActor <uuid-2>
//!         └── ...
//! ```
//!
//! The session tells the supervisor which nodes to run (after reserving them) and which to stop
//! (before releasing them); the supervisor reports every actor that ended, so that the session
//! releases a reservation only after its actor finished its in-flight work. A crashed actor is
//! respawned with the same fencing token after a capped exponential backoff; after
//! `RESTART_BUDGET` crashes within `RESTART_WINDOW` the supervisor gives up on that node and
//! records the failure in its status.

use crate::node_actor::{NodeActor, NodeArgs, NodeCtx, NodeMsg};
use ferric_model::{FenceToken, NodeId};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const REASON_FENCED: &str = "fenced";
pub const REASON_RELEASED: &str = "released";
pub const RESTART_BUDGET: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What the supervisor tells the conductor session.
#[derive(Debug)]
pub enum NodeEvent {
    /// The actor of `id` is running (spawned and initialised).
    Started { id: NodeId, token: FenceToken },
    /// The actor of `id` is gone (stopped on request, fenced, or given up after crashes).
    Stopped {
        id: NodeId,
        token: FenceToken,
        reason: String,
    },
}

pub enum SupervisorMsg {
    Start(Box<NodeArgs>),
    Stop(Vec<NodeId>),
    /// Stops every actor; replies once all have ended.
    StopAll(RpcReplyPort<()>),
    Forward(NodeId, NodeMsg),
    Count(RpcReplyPort<usize>),
    Respawn(NodeId),
}

struct Child {
    actor: Option<ActorRef<NodeMsg>>,
    token: FenceToken,
    ctx: Arc<NodeCtx>,
    /// Shared with the node actor and its power actor: set when the node is being stopped, so
    /// that no new BMC command leaves while the stop waits behind the command in flight.
    stop_flag: Arc<AtomicBool>,
    crashes: Vec<Instant>,
    stopping: bool,
    /// `NodeEvent::Started` was sent (the actor has run at least once).
    announced: bool,
    /// Starts in a row that failed (see [`start_again`]).
    failed_starts: u32,
}

/// A start that failed (the actor could not read the node's records: etcd slow or
/// unreachable) is tried again after a capped backoff for as long as the node is held here. It
/// used to end the node's actor for good while its reservation stayed: the node was held and
/// served by nobody until the conductor restarted (found at a million nodes, issue 17). A
/// stop of the node while it waits ends it at once (`stop_child`).
fn start_again(myself: &ActorRef<SupervisorMsg>, child: &mut Child, id: NodeId, error: &str) {
    child.actor = None;
    child.failed_starts = child.failed_starts.saturating_add(1);
    let wait = backoff(child.failed_starts as usize);
    tracing::warn!(node = %id, attempts = child.failed_starts, retry_ms = wait.as_millis() as u64, error, "node actor failed to start; starting it again");
    let me = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = me.send_message(SupervisorMsg::Respawn(id));
    });
}

pub struct SupervisorState {
    children: HashMap<NodeId, Child>,
    by_actor: HashMap<ActorId, NodeId>,
    waiting_all: Vec<RpcReplyPort<()>>,
    events: mpsc::UnboundedSender<NodeEvent>,
}

pub struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = mpsc::UnboundedSender<NodeEvent>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        events: Self::Arguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            children: HashMap::new(),
            by_actor: HashMap::new(),
            waiting_all: Vec::new(),
            events,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(args) => {
                let args = *args;
                let (id, token, ctx, stop_flag) =
                    (args.id, args.token, args.ctx.clone(), args.stopping.clone());
                if let Some(old) = state.children.get(&id) {
                    // A stale actor for an earlier reservation of the same node: it must end
                    // before a new one starts (one actor per node, ever).
                    tracing::error!(node = %id, old = old.token.0, new = token.0, "start of a node that still has an actor; refusing");
                    return Ok(());
                }
                let started = Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await;
                let mut child = Child {
                    actor: None,
                    token,
                    ctx,
                    stop_flag,
                    crashes: Vec::new(),
                    stopping: false,
                    announced: false,
                    failed_starts: 0,
                };
                match started {
                    Ok((actor, _)) => {
                        state.by_actor.insert(actor.get_id(), id);
                        let _ = state.events.send(NodeEvent::Started { id, token });
                        child.actor = Some(actor);
                        child.announced = true;
                    }
                    Err(e) => start_again(&myself, &mut child, id, &e.to_string()),
                }
                state.children.insert(id, child);
            }
            SupervisorMsg::Stop(ids) => {
                for id in ids {
                    stop_child(state, id);
                }
            }
            SupervisorMsg::StopAll(reply) => {
                let ids: Vec<NodeId> = state.children.keys().copied().collect();
                for id in ids {
                    stop_child(state, id);
                }
                if state.children.is_empty() {
                    let _ = reply.send(());
                } else {
                    state.waiting_all.push(reply);
                }
            }
            SupervisorMsg::Forward(id, msg) => {
                if let Some(actor) = state.children.get(&id).and_then(|c| c.actor.as_ref()) {
                    let _ = actor.send_message(msg);
                }
            }
            SupervisorMsg::Count(reply) => {
                let _ = reply.send(state.children.len());
            }
            SupervisorMsg::Respawn(id) => {
                let Some(child) = state.children.get_mut(&id) else {
                    return Ok(());
                };
                let args = NodeArgs {
                    id,
                    token: child.token,
                    initial: None,
                    ctx: child.ctx.clone(),
                    stopping: child.stop_flag.clone(),
                };
                match Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        state.by_actor.insert(actor.get_id(), id);
                        child.actor = Some(actor);
                        child.failed_starts = 0;
                        if !std::mem::replace(&mut child.announced, true) {
                            let token = child.token;
                            let _ = state.events.send(NodeEvent::Started { id, token });
                        }
                    }
                    Err(e) => start_again(&myself, child, id, &e.to_string()),
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id()) {
                    let token = state.children.get(&id).map_or(FenceToken(0), |c| c.token);
                    finish(state, id, token, reason.unwrap_or_else(|| "stopped".into()));
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let Some(child) = state.children.get_mut(&id) else {
                    return Ok(());
                };
                child.actor = None;
                if child.stopping {
                    let token = child.token;
                    finish(state, id, token, format!("crashed while stopping: {err}"));
                    return Ok(());
                }
                let now = Instant::now();
                child
                    .crashes
                    .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                child.crashes.push(now);
                let crashes = child.crashes.len();
                if crashes > RESTART_BUDGET {
                    tracing::error!(node = %id, crashes, error = %err, "node actor keeps crashing; giving up on this node");
                    let token = child.token;
                    let ctx = child.ctx.clone();
                    record_give_up(ctx, id, token, format!("node actor crashed {crashes} times within {}s, last: {err}; this conductor gave up on the node", RESTART_WINDOW.as_secs()));
                    finish(state, id, token, "gave up after repeated crashes".into());
                    return Ok(());
                }
                let backoff = backoff(crashes);
                tracing::warn!(node = %id, crashes, backoff_ms = backoff.as_millis() as u64, error = %err, "node actor crashed; restarting");
                let me = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    let _ = me.send_message(SupervisorMsg::Respawn(id));
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Capped exponential backoff for the n-th crash (n >= 1).
pub fn backoff(crashes: usize) -> Duration {
    let exp = crashes.saturating_sub(1).min(16) as u32;
    (BACKOFF_BASE * 2u32.pow(exp)).min(BACKOFF_CAP)
}

fn stop_child(state: &mut SupervisorState, id: NodeId) {
    let Some(child) = state.children.get_mut(&id) else {
        return;
    };
    child.stopping = true;
    child.stopping_flag();
    match &child.actor {
        // Stop is handled after the message in progress: an in-flight operation completes.
        Some(actor) => actor.stop(Some(REASON_RELEASED.to_string())),
        // Waiting for a respawn: nothing runs, end it now.
        None => {
            let token = child.token;
            finish(state, id, token, REASON_RELEASED.into());
        }
    }
}

impl Child {
    fn stopping_flag(&self) {
        self.stop_flag.store(true, Ordering::Release);
    }
}

fn finish(state: &mut SupervisorState, id: NodeId, token: FenceToken, reason: String) {
    state.children.remove(&id);
    let _ = state.events.send(NodeEvent::Stopped { id, token, reason });
    if state.children.is_empty() {
        for reply in state.waiting_all.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Writes the reason the supervisor gave up into the node's status (fenced, best effort).
fn record_give_up(ctx: Arc<NodeCtx>, id: NodeId, token: FenceToken, error: String) {
    tokio::spawn(async move {
        let Ok(view) = ctx.store.read_node(id).await else {
            return;
        };
        let mut status = view.status;
        status.last_error = Some(error);
        status.owner = Some(ctx.me.clone());
        status.fence = token.0;
        if let Err(e) = ctx.store.write_status(id, token, &status, None, None).await {
            tracing::warn!(node = %id, error = %e, "could not record the give-up in the status");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(10), BACKOFF_CAP);
        assert_eq!(backoff(1000), BACKOFF_CAP);
    }
}

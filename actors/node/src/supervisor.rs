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
//!
//! # Parking
//!
//! Most of a large fleet sits idle: `available` or `active`, powered as asked, nothing
//! pending. An actor costs about 9 KB whatever its node does (ractor's two channels and the
//! actor's task; `bench/MILLION.md`), so an idle node is *parked*: its actor ends and the
//! supervisor keeps the node's records (`Parked`, about 2 KB). The node stays held under
//! the same reservation and fencing token; the session sees no change (no `Stopped`).
//!
//! 1. An actor whose node comes to rest (`NodeState::at_rest`: no operation, session, console,
//!    agent call, timer or unwritten status, a settled provision state, nothing pending) says
//!    so (`AtRest`).
//! 2. The supervisor sends it `Park` through its mailbox, so after everything forwarded before,
//!    and holds whatever comes for the node from then on.
//! 3. The actor answers with its records if it is still at rest (then it forwards anything that
//!    still reaches it back here), or None. With records the supervisor stops the actor and
//!    keeps them; either way the held messages go on, to a new actor if the node is parked.
//! 4. Any other message for a parked node starts its actor again from the parked records (no
//!    etcd read) and is delivered to it.
//!
//! A node started with its records (a bucket's read, a reservation's) whose first pass would
//! only take it over in memory and come to rest is parked at once, without an actor
//! (`node_actor::park_at_start`): a failover or a cold start then starts actors only for the
//! nodes that have something to do.
//!
//! A sweep's read wakes a parked node and it parks again once the read is done; a read the node
//! would skip (in maintenance, say), a `SpecAt` the parked spec is at and a remediation policy
//! with nothing to do on the node do not wake it.

use crate::node_actor::{park_at_start, NodeActor, NodeArgs, NodeCtx, NodeMsg, Parked};
use ferric_model::{FenceToken, NodeId};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const REASON_FENCED: &str = "fenced";
pub const REASON_RELEASED: &str = "released";
/// An actor ended because its node was parked (see "Parking").
pub const REASON_PARKED: &str = "parked";
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

/// How the supervisor is set up.
pub struct SupervisorArgs {
    pub events: mpsc::UnboundedSender<NodeEvent>,
    /// Park nodes at rest (see "Parking"); false keeps an actor per held node at all times.
    pub park: bool,
}

pub enum SupervisorMsg {
    Start(Box<NodeArgs>),
    Stop(Vec<NodeId>),
    /// Stops every actor; replies once all have ended.
    StopAll(RpcReplyPort<()>),
    Forward(NodeId, NodeMsg),
    Count(RpcReplyPort<usize>),
    Respawn(NodeId),
    /// The node's actor (this one) came to rest.
    AtRest(NodeId, ActorId),
    /// The actor's answer to `Park`: its node's records if it is still at rest.
    Parked(NodeId, ActorId, Option<Box<Parked>>),
    /// How many held nodes are parked, and how many times a parked node was woken.
    Parking(RpcReplyPort<ParkStats>),
}

/// Parking's figures on one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkStats {
    pub parked: usize,
    pub wakes: u64,
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
    /// The node's records while it is parked (no actor runs).
    parked: Option<Box<Parked>>,
    /// `Park` was sent to the actor and not answered yet: messages for the node wait in `held`.
    parking: bool,
    held: Vec<NodeMsg>,
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
    park: bool,
    parked: usize,
    wakes: u64,
}

/// Moves the count of parked nodes (`SupervisorState::parked`) and its gauge. A function of the
/// field alone, so that it can be called while a child of the same state is borrowed.
fn count_parked(parked: &mut usize, delta: isize) {
    *parked = parked.saturating_add_signed(delta);
    crate::metrics::NODES.parked.set(*parked as i64);
}

pub struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        crate::metrics::NODES.parked.set(0);
        Ok(SupervisorState {
            children: HashMap::new(),
            by_actor: HashMap::new(),
            waiting_all: Vec::new(),
            events: args.events,
            park: args.park,
            parked: 0,
            wakes: 0,
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
                let mut args = *args;
                let (id, token, ctx, stop_flag) =
                    (args.id, args.token, args.ctx.clone(), args.stopping.clone());
                if let Some(old) = state.children.get(&id) {
                    // A stale actor for an earlier reservation of the same node: it must end
                    // before a new one starts (one actor per node, ever).
                    tracing::error!(node = %id, old = old.token.0, new = token.0, "start of a node that still has an actor; refusing");
                    return Ok(());
                }
                // A node handed over at rest is parked at once (see "Parking").
                let parked = if state.park {
                    park_at_start(&mut args)
                } else {
                    None
                };
                let mut child = Child {
                    actor: None,
                    token,
                    ctx,
                    stop_flag,
                    crashes: Vec::new(),
                    stopping: false,
                    announced: false,
                    failed_starts: 0,
                    parked: None,
                    parking: false,
                    held: Vec::new(),
                };
                if parked.is_some() {
                    child.parked = parked;
                    child.announced = true;
                    count_parked(&mut state.parked, 1);
                    let _ = state.events.send(NodeEvent::Started { id, token });
                    state.children.insert(id, child);
                    return Ok(());
                }
                match Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await {
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
            SupervisorMsg::Forward(id, msg) => forward(&myself, state, id, msg).await,
            SupervisorMsg::Count(reply) => {
                let _ = reply.send(state.children.len());
            }
            SupervisorMsg::Parking(reply) => {
                let _ = reply.send(ParkStats {
                    parked: state.parked,
                    wakes: state.wakes,
                });
            }
            SupervisorMsg::AtRest(id, actor_id) => {
                let park = state.park;
                let Some(child) = state.children.get_mut(&id) else {
                    return Ok(());
                };
                let Some(actor) = child.actor.as_ref().filter(|a| a.get_id() == actor_id) else {
                    return Ok(());
                };
                if !park || child.stopping || child.parking {
                    return Ok(());
                }
                // An actor that ends before it answers ends `parking` with it (a crash, or a
                // stop that finishes the node).
                child.parking = actor.send_message(NodeMsg::Park).is_ok();
            }
            SupervisorMsg::Parked(id, actor_id, parked) => {
                on_parked(&myself, state, id, actor_id, parked).await
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
                        child.parking = false;
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
                // Messages held for a park that will not come are dropped, as any message for
                // a node whose actor waits to be started again is: its next actor reads the
                // node's records from etcd.
                child.parking = false;
                child.held.clear();
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

/// A message for a node: to its actor, held while it parks, or to a new actor started from
/// the parked records.
async fn forward(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    id: NodeId,
    msg: NodeMsg,
) {
    let Some(child) = state.children.get_mut(&id) else {
        return;
    };
    if child.parking {
        child.held.push(msg);
        return;
    }
    if let Some(actor) = &child.actor {
        let _ = actor.send_message(msg);
        return;
    }
    match (&child.parked, &msg) {
        // Waiting to be started again after a crash or a failed start: the next actor reads
        // the node's records from etcd.
        (None, _) => return,
        // A snapshot's revision this node's spec is already at: nothing to catch up on.
        (Some(parked), NodeMsg::SpecAt(rev)) if *rev <= parked.spec_rev() => return,
        // A changed remediation policy that has nothing to do on this node (at a million
        // nodes, waking every node for it would start 100,000 actors per conductor at once).
        (Some(parked), NodeMsg::Remediate) if !parked.needs_remediation(&child.ctx) => return,
        // A sweep's read it would skip (in maintenance, say): the sweep's slot is freed.
        (Some(parked), NodeMsg::Sync { probe: false, .. }) if parked.sweep_skips(&child.ctx) => {
            return
        }
        _ => {}
    }
    child.held.push(msg);
    wake(myself, state, id).await;
}

/// Starts the actor of a parked node from its parked records and hands it what was held.
async fn wake(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, id: NodeId) {
    let Some(child) = state.children.get_mut(&id) else {
        return;
    };
    let Some(parked) = child.parked.take() else {
        return;
    };
    let args = NodeArgs {
        id,
        token: child.token,
        initial: Some(parked.into_initial()),
        ctx: child.ctx.clone(),
        stopping: child.stop_flag.clone(),
    };
    let held = std::mem::take(&mut child.held);
    state.wakes += 1;
    crate::metrics::NODES.wakes.inc();
    match Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await {
        Ok((actor, _)) => {
            state.by_actor.insert(actor.get_id(), id);
            for msg in held {
                let _ = actor.send_message(msg);
            }
            child.actor = Some(actor);
        }
        Err(e) => start_again(myself, child, id, &e.to_string()),
    }
    count_parked(&mut state.parked, -1);
}

/// The actor's answer to `Park`: with the node's records it is stopped and the node parked
/// (woken at once if messages came meanwhile); without, the held messages go to it.
async fn on_parked(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    id: NodeId,
    actor_id: ActorId,
    parked: Option<Box<Parked>>,
) {
    let Some(child) = state.children.get_mut(&id) else {
        return;
    };
    let Some(actor) = child.actor.clone().filter(|a| a.get_id() == actor_id) else {
        return;
    };
    if !child.parking {
        return;
    }
    child.parking = false;
    match parked {
        // Being stopped meanwhile: the stop ends the actor and the node as usual.
        Some(_) if child.stopping => child.held.clear(),
        Some(parked) => {
            state.by_actor.remove(&actor_id);
            // Its mailbox is empty (everything since `Park` was held here), and at rest it
            // has no timer or child that could send it anything.
            actor.stop(Some(REASON_PARKED.to_string()));
            child.actor = None;
            child.parked = Some(parked);
            let woken = !child.held.is_empty();
            count_parked(&mut state.parked, 1);
            if woken {
                wake(myself, state, id).await;
            }
        }
        None => {
            for msg in child.held.drain(..) {
                let _ = actor.send_message(msg);
            }
        }
    }
}

fn stop_child(state: &mut SupervisorState, id: NodeId) {
    let Some(child) = state.children.get_mut(&id) else {
        return;
    };
    child.stopping = true;
    child.stopping_flag();
    if child.parked.take().is_some() {
        count_parked(&mut state.parked, -1);
    }
    match &child.actor {
        // Stop is handled after the message in progress: an in-flight operation completes.
        Some(actor) => actor.stop(Some(REASON_RELEASED.to_string())),
        // Parked, or waiting for a respawn: nothing runs, end it now.
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

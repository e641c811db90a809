//! `ConsoleActor`: a child of a `NodeActor` that exists while the node's console is enabled.
//! It owns the node's one console session (through the runner task, see `runner.rs`), registers
//! the session's hub so that the console server can attach viewers, and tells the node actor
//! the session's state (active, or reconnecting with the last error).
//!
//! Ending it:
//! - `ConsoleMsg::Stop(reason)`: viewers are closed with the reason's close code, the session is
//!   closed cleanly (BMC side freed), the record is deleted, then the actor stops. Use
//!   [`ConsoleActor::stop_and_wait`] to wait for all of that.
//! - A plain `stop()`, or being killed with its node actor: the same cleanup, with viewers told
//!   "owner changed" (4001); when killed, the cleanup completes in the background.

use crate::context::ConsoleContext;
use crate::error::ConsoleError;
use crate::hub::{Close, ConsoleHub, SessionState};
use crate::runner::{RecordTo, Runner};
use crate::session::Cancel;
use crate::target::ConsoleTarget;
use ferric_model::console_wire::{CLOSE_DISABLED, CLOSE_OWNER_CHANGED};
use ferric_model::{now_ms, NodeId};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the console actor tells its node actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// The session's state changed (connecting, active, reconnecting with the last error).
    State { node: NodeId, state: SessionState },
}

pub type ConsoleNotify = Arc<dyn Fn(ConsoleEvent) + Send + Sync>;

/// Why a console stops; decides the close code its viewers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The node's console was disabled (spec `console_enabled` false): close 4410.
    Disabled,
    /// The node is moving to another conductor, or this conductor is shutting down: close
    /// 4001, so the gateway reconnects the viewer to the new owner.
    OwnerChanged,
}

impl StopReason {
    pub fn close(self) -> Close {
        match self {
            StopReason::Disabled => Close::new(CLOSE_DISABLED, "console disabled"),
            StopReason::OwnerChanged => Close::new(CLOSE_OWNER_CHANGED, "owner changed; reconnect"),
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Disabled => "console disabled",
            StopReason::OwnerChanged => "owner changed",
        })
    }
}

pub struct ConsoleArgs {
    pub node: NodeId,
    /// From [`ConsoleTarget::from_spec`] (resolve it first: an error there is the node's
    /// `last_error`, and no actor is spawned).
    pub target: ConsoleTarget,
    pub ctx: Arc<ConsoleContext>,
    /// Where to keep `consoles/<uuid>` (None: no record, e.g. in tests without etcd).
    pub record: Option<RecordTo>,
    pub notify: ConsoleNotify,
}

pub enum ConsoleMsg {
    /// End the console (see the module docs).
    Stop(StopReason),
    Status(RpcReplyPort<ConsoleStatus>),
    /// From the runner: the session's state changed.
    Session(SessionState),
}

/// A console as its actor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleStatus {
    pub node: NodeId,
    pub interface: &'static str,
    /// Where the session goes, without secrets.
    pub session: String,
    pub state: SessionState,
    pub started_at_ms: u64,
    pub viewers: usize,
}

struct RunnerHandle {
    cancel: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

pub struct ConsoleState {
    node: NodeId,
    interface: &'static str,
    session: String,
    hub: Arc<ConsoleHub>,
    ctx: Arc<ConsoleContext>,
    notify: ConsoleNotify,
    state: SessionState,
    started_at_ms: u64,
    runner: Option<RunnerHandle>,
}

impl ConsoleState {
    /// Closes the viewers, unregisters the hub and cancels the runner; returns the runner's
    /// task to wait for (None if already done).
    fn begin_stop(&mut self, reason: StopReason) -> Option<tokio::task::JoinHandle<()>> {
        let runner = self.runner.take()?;
        self.hub.close(reason.close());
        self.ctx.registry.remove(&self.hub);
        let _ = runner.cancel.send(true);
        Some(runner.join)
    }

    /// Long enough for a clean stop: stdin close, SIGINT, SIGKILL, then `sol deactivate`.
    fn stop_bound(&self) -> Duration {
        let s = &self.ctx.settings;
        s.stop_grace * 2 + s.open_timeout + Duration::from_secs(15)
    }
}

impl Drop for ConsoleState {
    fn drop(&mut self) {
        // Killed (no post_stop): the runner finishes the cleanup on its own.
        self.begin_stop(StopReason::OwnerChanged);
    }
}

pub struct ConsoleActor;

impl ConsoleActor {
    /// Spawns a console actor linked to `supervisor` (the node actor).
    pub async fn spawn_linked(
        supervisor: ActorCell,
        args: ConsoleArgs,
    ) -> Result<ActorRef<ConsoleMsg>, ConsoleError> {
        Actor::spawn_linked(None, ConsoleActor, args, supervisor)
            .await
            .map(|(actor, _)| actor)
            .map_err(|e| ConsoleError::Spawn(e.to_string()))
    }

    /// Asks the console to stop for `reason` and waits until it has (session closed, BMC side
    /// freed, record deleted), at most `timeout`.
    pub async fn stop_and_wait(
        actor: &ActorRef<ConsoleMsg>,
        reason: StopReason,
        timeout: Duration,
    ) {
        if actor.send_message(ConsoleMsg::Stop(reason)).is_ok() {
            let _ = actor.get_cell().wait(Some(timeout)).await;
        }
    }
}

impl Actor for ConsoleActor {
    type Msg = ConsoleMsg;
    type State = ConsoleState;
    type Arguments = ConsoleArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConsoleMsg>,
        args: ConsoleArgs,
    ) -> Result<ConsoleState, ActorProcessingErr> {
        let settings = &args.ctx.settings;
        std::fs::create_dir_all(crate::pidfile::dir(&settings.runtime_dir))?;
        let hub = ConsoleHub::new(args.node, &settings.conductor, settings.hub_limits());
        args.ctx.registry.insert(hub.clone());
        let started_at_ms = now_ms();
        let (cancel_tx, cancel) = Cancel::new();
        let runner = Runner {
            node: args.node,
            target: args.target.clone(),
            hub: hub.clone(),
            ctx: args.ctx.clone(),
            record: args.record,
            actor: myself,
            started_at_ms,
        };
        // Spawned from this actor's task (a runtime worker), never from the blocking pool; the
        // console child itself is forked by the spawner thread (see sys.rs).
        let join = tokio::spawn(runner.run(cancel));
        Ok(ConsoleState {
            node: args.node,
            interface: args.target.interface(),
            session: args.target.describe(),
            hub,
            ctx: args.ctx,
            notify: args.notify,
            state: SessionState::Connecting,
            started_at_ms,
            runner: Some(RunnerHandle {
                cancel: cancel_tx,
                join,
            }),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConsoleMsg>,
        state: &mut ConsoleState,
    ) -> Result<(), ActorProcessingErr> {
        let bound = state.stop_bound();
        if let Some(join) = state.begin_stop(StopReason::OwnerChanged) {
            let _ = tokio::time::timeout(bound, join).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConsoleMsg>,
        msg: ConsoleMsg,
        state: &mut ConsoleState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsoleMsg::Stop(reason) => {
                let bound = state.stop_bound();
                if let Some(join) = state.begin_stop(reason) {
                    if tokio::time::timeout(bound, join).await.is_err() {
                        tracing::warn!(node = %state.node, "console cleanup still running; continuing in the background");
                    }
                }
                myself.stop(Some(reason.to_string()));
            }
            ConsoleMsg::Status(reply) => {
                let _ = reply.send(ConsoleStatus {
                    node: state.node,
                    interface: state.interface,
                    session: state.session.clone(),
                    state: state.state.clone(),
                    started_at_ms: state.started_at_ms,
                    viewers: state.hub.viewers(),
                });
            }
            ConsoleMsg::Session(s) => {
                if state.runner.is_some() && s != state.state {
                    state.state = s.clone();
                    (state.notify)(ConsoleEvent::State {
                        node: state.node,
                        state: s,
                    });
                }
            }
        }
        Ok(())
    }
}

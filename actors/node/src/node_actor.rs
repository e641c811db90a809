//! `NodeActor`: one per node this conductor holds a reservation for. It keeps the node's spec
//! and status in memory, receives spec changes from the conductor's single watch, decides with
//! the pure functions of `node_state`, acts through the node's driver, and writes the status with
//! fenced transactions. A fenced write that fails means someone else owns the node now: the
//! actor stops at once.

use crate::node_state::{
    instant_provision, next_step, power_done, take_over, takeover_needs_write, Step,
};
use ferric_cluster::{Cluster, ClusterError, SelfFence, StatusWriter};
use ferric_model::{
    now_ms, CodecError, FenceToken, NodeId, NodeSpec, NodeStatus, ProvisionState, Verb,
};
use ferric_power::Driver;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

/// What every node actor of one conductor session shares.
pub struct NodeCtx {
    pub me: String,
    pub cluster: Cluster,
    pub writer: StatusWriter,
    /// The session's self-fencing deadline, checked right before every hardware command.
    pub fence: SelfFence,
    /// Upper bound on one hardware command; a command is only started if it can finish before
    /// the self-fencing deadline.
    pub command_budget: Duration,
}

/// Records read when the reservation was acquired (None: read them from etcd, e.g. on restart).
pub struct Initial {
    pub spec: Result<NodeSpec, CodecError>,
    pub spec_rev: i64,
    pub status: Option<Result<NodeStatus, CodecError>>,
}

pub struct NodeArgs {
    pub id: NodeId,
    pub token: FenceToken,
    pub initial: Option<Initial>,
    pub ctx: Arc<NodeCtx>,
}

/// A summary for callers that want to see the actor answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    pub id: NodeId,
    pub token: FenceToken,
    pub provision_state: ProvisionState,
    pub power_seq_done: u64,
}

pub enum NodeMsg {
    /// A newer spec from the watch (with its mod_revision).
    Spec(Box<NodeSpec>, i64),
    /// The spec at this revision could not be decoded.
    SpecUnreadable(String, i64),
    /// Look at the spec and status and do the next piece of work.
    Reconcile,
    Ping(RpcReplyPort<NodeSnapshot>),
}

pub struct NodeState {
    id: NodeId,
    token: FenceToken,
    ctx: Arc<NodeCtx>,
    spec: Option<Box<NodeSpec>>,
    spec_rev: i64,
    spec_error: Option<String>,
    status: NodeStatus,
    /// The in-memory status has changes etcd has not acknowledged yet.
    dirty: bool,
    /// Set when this build must not touch the node (its status is in a newer format).
    passive: Option<String>,
    driver: Option<Driver>,
    retry_pending: bool,
}

pub struct NodeActor;

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let mut state = NodeState {
            id: args.id,
            token: args.token,
            ctx: args.ctx,
            spec: None,
            spec_rev: 0,
            spec_error: None,
            status: NodeStatus::default(),
            dirty: false,
            passive: None,
            driver: None,
            retry_pending: false,
        };
        let initial = match args.initial {
            Some(initial) => initial,
            None => read_initial(&state.ctx.cluster, &state.id).await?,
        };
        state.spec_rev = initial.spec_rev;
        match initial.spec {
            Ok(spec) => state.spec = Some(Box::new(spec)),
            Err(e) => state.spec_error = Some(format!("node spec record is unreadable: {e}")),
        }
        match initial.status {
            None => {}
            Some(Ok(status)) => state.status = status,
            Some(Err(e @ CodecError::UnknownVersion { .. })) => {
                // Written by a newer conductor: rewriting it in our older format would lose
                // what we cannot read. Leave the node alone; a newer conductor can serve it.
                tracing::error!(node = %state.id, error = %e, "status written by a newer version; not touching this node");
                state.passive = Some(e.to_string());
            }
            Some(Err(e)) => {
                tracing::error!(node = %state.id, error = %e, "corrupt status record; resetting it to \"error\"");
                state.status.provision_state = ProvisionState::Error;
                state.status.last_error = Some(format!(
                    "status record was unreadable ({e}); the provision state before it was lost"
                ));
                state.dirty = true;
            }
        }
        myself.send_message(NodeMsg::Reconcile)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Spec(spec, rev) => {
                // The watch and the acquisition read race: never go back to an older spec.
                if rev > state.spec_rev {
                    state.spec_rev = rev;
                    if state.spec.as_ref().is_none_or(|s| s.driver != spec.driver) {
                        state.driver = None;
                    }
                    state.spec = Some(spec);
                    state.spec_error = None;
                    reconcile(&myself, state).await;
                }
            }
            NodeMsg::SpecUnreadable(error, rev) => {
                if rev > state.spec_rev {
                    state.spec_rev = rev;
                    state.spec_error = Some(format!("node spec record is unreadable: {error}"));
                    reconcile(&myself, state).await;
                }
            }
            NodeMsg::Reconcile => {
                state.retry_pending = false;
                reconcile(&myself, state).await;
            }
            NodeMsg::Ping(reply) => {
                let _ = reply.send(NodeSnapshot {
                    id: state.id,
                    token: state.token,
                    provision_state: state.status.provision_state,
                    power_seq_done: state.status.power_seq_done,
                });
            }
        }
        Ok(())
    }
}

async fn read_initial(cluster: &Cluster, id: &NodeId) -> Result<Initial, ActorProcessingErr> {
    match cluster.get_node(&id.to_string()).await {
        Ok(view) => Ok(Initial {
            spec: Ok(view.spec),
            spec_rev: view.spec_rev,
            status: Some(match view.status_error {
                None => Ok(view.status),
                Some(e) => Err(CodecError::Corrupt {
                    kind: "node status",
                    version: 0,
                    reason: e,
                }),
            }),
        }),
        Err(ClusterError::Corrupt { source, .. }) => Ok(Initial {
            spec: Err(source),
            spec_rev: 0,
            status: None,
        }),
        Err(e) => Err(Box::new(e)),
    }
}

enum Commit {
    Done,
    /// etcd did not take the write; it stays dirty and is retried.
    Later,
    /// Someone else owns the node now.
    Fenced,
}

async fn reconcile(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    if let Some(why) = &state.passive {
        tracing::debug!(node = %state.id, why, "passive");
        return;
    }
    // Bounded: each step either finishes a request (advancing a sequence number) or returns.
    for _ in 0..16 {
        if state.dirty {
            let status = state.status.clone();
            match commit(state, status).await {
                Commit::Done => {}
                Commit::Later => return schedule_retry(myself, state),
                Commit::Fenced => return fenced(myself, state),
            }
        }
        if let Some(error) = state.spec_error.clone() {
            if state.status.last_error.as_deref() != Some(error.as_str())
                || state.status.fence != state.token.0
            {
                tracing::error!(node = %state.id, %error, "cannot act on this node");
                let mut next = take_over(&state.status, &state.ctx.me, state.token, now_ms());
                next.last_error = Some(error);
                state.status = next;
                state.dirty = true;
                continue;
            }
            return;
        }
        let Some(spec) = state.spec.as_deref() else {
            return;
        };
        let step = next_step(spec, &state.status, &state.ctx.me, state.token);
        let next = match step {
            Step::Idle => return,
            Step::TakeOver => {
                let next = take_over(&state.status, &state.ctx.me, state.token, now_ms());
                if !takeover_needs_write(&state.status, &next) {
                    // Ownership itself is recorded by the reservation; writing every node's
                    // status on every hand-over would double etcd's load on a failover.
                    state.status = next;
                    continue;
                }
                next
            }
            Step::Power(req) => {
                let result = match hardware(state).await {
                    Ok(driver) => driver
                        .set_power(req.target)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => {
                        if state.ctx.fence.check(Duration::ZERO).is_err() {
                            // Self-fenced: the conductor is stopping this actor; do nothing.
                            return;
                        }
                        Err(e)
                    }
                };
                power_done(&state.status, &req, result, now_ms())
            }
            Step::Provision(req) => {
                let verify = if req.verb == Verb::Manage {
                    match hardware(state).await {
                        Ok(driver) => driver.power_state().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    }
                } else {
                    Err("not read".into())
                };
                instant_provision(&state.status, &req, || verify).0
            }
        };
        state.status = next;
        state.dirty = true;
    }
}

/// The node's driver, after checking the self-fencing deadline: the one gate in front of every
/// hardware command.
async fn hardware(state: &mut NodeState) -> Result<&mut Driver, String> {
    // fenced: a conductor past its deadline may already have lost the node to another.
    state
        .ctx
        .fence
        .check(state.ctx.command_budget)
        .map_err(str::to_string)?;
    if state.driver.is_none() {
        let name = state
            .spec
            .as_ref()
            .map(|s| s.driver.clone())
            .unwrap_or_default();
        state.driver = Some(Driver::for_node(&name).map_err(|e| e.to_string())?);
    }
    Ok(state.driver.as_mut().expect("set above"))
}

async fn commit(state: &mut NodeState, mut status: NodeStatus) -> Commit {
    status.updated_at_ms = now_ms();
    match state.ctx.writer.write(state.id, state.token, &status).await {
        Ok(()) => {
            state.status = status;
            state.dirty = false;
            Commit::Done
        }
        Err(ClusterError::Fenced(_)) => Commit::Fenced,
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "status write failed; will retry");
            Commit::Later
        }
    }
}

fn schedule_retry(myself: &ActorRef<NodeMsg>, state: &mut NodeState) {
    if !state.retry_pending {
        state.retry_pending = true;
        let me = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = me.send_message(NodeMsg::Reconcile);
        });
    }
}

fn fenced(myself: &ActorRef<NodeMsg>, state: &NodeState) {
    tracing::warn!(node = %state.id, fence = state.token.0, "status write fenced: another conductor owns this node; stopping");
    myself.stop(Some(crate::supervisor::REASON_FENCED.to_string()));
}

//! A conductor's membership session: lease, registration, the watches of `conductors/`,
//! `nodes/` and `reservations/`, rendezvous placement, and batched reservation of the nodes this
//! conductor should own. One session lives as long as one lease; when the lease is lost (self
//! fenced, expired, revoked) every node actor is stopped and a new session starts with a new
//! lease once etcd answers again.
//!
//! The parts: `session` (the etcd event loop of one lease), `ownership` (the pure table of what
//! this conductor wants, holds and runs, and what to do about it) and `placement_index` (the
//! nodes' placement inputs, interned).
//!
//! Ownership hand-off never has two owners: a conductor that loses a node to placement stops the
//! node's actor (after its in-flight operation) and only then deletes the reservation; the new
//! owner reserves it with "create if absent" and only then starts its actor.

mod bucket_nodes;
mod ownership;
mod placement_index;
mod reads;
mod session;
mod standby;

use crate::error::ConductorError;
use crate::supervisor::{NodeEvent, SupervisorMsg};
use ferric_cluster::{Cluster, StatusWriter};
use ractor::ActorRef;
use session::{End, Session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub struct ConductorConfig {
    pub name: String,
    pub ttl: Duration,
    pub drivers: Vec<String>,
    pub conductor_group: String,
    pub address: String,
    pub console_address: String,
    /// Reservation batches in flight at once.
    pub acquire_parallel: usize,
    /// Settings shared by every BMC driver of this conductor (timeouts, per-BMC gap).
    pub bmc: Arc<ferric_power::BmcSettings>,
    /// How long wait states wait for the agent by default.
    pub callback_timeout: Duration,
    /// The agents' command API.
    pub agents: crate::node_actor::AgentCtx,
    /// The conductor's console service (None: no consoles here).
    pub consoles: Option<Arc<ferric_console::ConsoleContext>>,
    pub sync: SyncOptions,
    /// Told which nodes run here and under which fencing token (the event deliverer).
    pub ownership_hook: Option<Arc<dyn OwnershipHook>>,
    /// Keep the specs of the buckets this conductor would take over (`session`'s standby).
    pub warm_standby: bool,
    /// Keep the statuses too (watched per bucket), not only the specs.
    pub standby_statuses: bool,
}

/// Told which nodes this conductor holds: `owned` when a node's actor started, `released` when
/// it stopped, `released_all` when a session ended; and `event_written` when a node actor's
/// status write with an outbox event succeeded (the event deliverer takes it from here instead
/// of every conductor watching `events/`). Calls must return at once (they run on the session's
/// event loop and in node actors).
pub trait OwnershipHook: Send + Sync + std::fmt::Debug {
    fn owned(&self, id: ferric_model::NodeId, token: ferric_model::FenceToken);
    /// `owned` for a node created after this conductor held its fence (enrolled into a bucket
    /// held here): nothing was written for it by anyone else. Called before the node's actor
    /// can start, so that every event it writes comes after; `owned` follows once it runs.
    fn owned_fresh(&self, id: ferric_model::NodeId, token: ferric_model::FenceToken);
    fn released(&self, id: ferric_model::NodeId, token: ferric_model::FenceToken);
    fn released_all(&self);
    fn event_written(
        &self,
        id: ferric_model::NodeId,
        token: ferric_model::FenceToken,
        event: &ferric_model::EventRecord,
    );
}

/// Power sync's settings of one conductor (`ferric conductor --sync-*`).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Between the starts of two sweeps; zero turns sweeps off.
    pub interval: Duration,
    /// Reads in flight at once.
    pub workers: usize,
    /// No `enforce` push within this long after a power request or operation.
    pub grace: Duration,
    /// Failed reads in a row that make a power failure.
    pub max_failures: u32,
    /// How often a node in power failure is probed.
    pub failure_interval: Duration,
    pub stats: Arc<crate::node_actor::SyncStats>,
    pub sweeps: Arc<ferric_sync::SweepStats>,
}

impl Default for SyncOptions {
    /// Ironic's defaults where Ferric has no reason to differ (3 failures), a 60 s interval.
    fn default() -> Self {
        SyncOptions {
            interval: Duration::from_secs(60),
            workers: 16,
            grace: Duration::from_secs(120),
            max_failures: 3,
            failure_interval: Duration::from_secs(30),
            stats: Arc::default(),
            sweeps: Arc::default(),
        }
    }
}

/// Runs a conductor until `shutdown` turns true. On shutdown the node actors are stopped (each
/// after its in-flight operation) and the lease is revoked, which hands every node over at once.
pub async fn run(
    cluster: Cluster,
    cfg: ConductorConfig,
    supervisor: ActorRef<SupervisorMsg>,
    mut node_events: mpsc::UnboundedReceiver<NodeEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConductorError> {
    let writer = StatusWriter::spawn(cluster.clone(), 4);
    let mut previous_lease: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let mut session = Session::new(&cluster, &cfg, &supervisor, &writer);
        let end = session
            .run(&mut node_events, &mut shutdown, &mut previous_lease)
            .await;
        // Whatever ended the session, no actor of it may keep running.
        stop_all(&supervisor, &mut node_events).await;
        crate::metrics::NODES.actors.set(0);
        crate::metrics::NODES.reservations.set(0);
        if let Some(hook) = &cfg.ownership_hook {
            hook.released_all();
        }
        let lease = session.lease.take();
        let session_started = session.started();
        drop(session);
        match end {
            End::Shutdown => {
                if let Some(lease) = lease {
                    lease.stop();
                    match cluster.revoke_lease(lease.id).await {
                        Ok(()) => {
                            tracing::info!(lease = lease.id, "lease revoked: all nodes handed over")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not revoke the lease; it expires by itself")
                        }
                    }
                }
                return Ok(());
            }
            End::Lost(why) => {
                failures = 0;
                if let Some(lease) = &lease {
                    // An explicit eviction is final for this incarnation: stay down.
                    if let Ok(Some(ev)) = cluster.eviction_of(&cfg.name, lease.id).await {
                        lease.stop();
                        tracing::error!(
                            conductor = %cfg.name,
                            by = %ev.by,
                            reason = %ev.reason,
                            at_ms = ev.at_ms,
                            "evicted: every node actor stopped and no BMC command will be sent; exiting"
                        );
                        return Err(ConductorError::Evicted {
                            conductor: cfg.name.clone(),
                            by: ev.by,
                            reason: ev.reason,
                        });
                    }
                }
                tracing::error!(
                    why,
                    "session lost; every node actor stopped; rejoining with a new lease"
                );
                if let Some(lease) = lease {
                    lease.stop();
                    previous_lease = Some(lease.id);
                }
            }
            End::Failed(e) => {
                failures += 1;
                if session_started {
                    tracing::error!(error = %e, "session ended, self-fenced: every node actor stopped; rejoining with a new lease");
                }
                if let Some(lease) = lease {
                    lease.stop();
                    previous_lease = Some(lease.id);
                }
                let wait = Duration::from_millis(200 * u64::from(failures.min(10)));
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "cannot start a session");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

async fn stop_all(
    supervisor: &ActorRef<SupervisorMsg>,
    node_events: &mut mpsc::UnboundedReceiver<NodeEvent>,
) {
    match ractor::call_t!(supervisor, SupervisorMsg::StopAll, 30_000) {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "node actors did not all stop in time"),
    }
    // Their stop reports belong to the old session.
    while node_events.try_recv().is_ok() {}
}
/// How conductors call the agents' command API.
#[derive(Debug, Clone, Copy)]
pub struct AgentSettings {
    /// One request, answer included (Ironic's `[agent]command_timeout`).
    pub command_timeout: Duration,
    /// How often a running command is polled between heartbeats; also the wait before trying
    /// again after a call got no answer.
    pub poll_interval: Duration,
    /// Calls in a row without an answer after which the wait state fails.
    pub max_attempts: u32,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            command_timeout: crate::agent_client::DEFAULT_COMMAND_TIMEOUT,
            poll_interval: Duration::from_secs(2),
            max_attempts: 3,
        }
    }
}

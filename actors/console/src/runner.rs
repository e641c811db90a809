//! The task that owns a console's sessions: opens one, pumps it, and when it ends on its own
//! reopens it after a capped backoff (never spinning), until cancelled; then closes the session
//! cleanly and removes the console record. It runs apart from the console actor so that the
//! cleanup completes even when the actor is killed with its node actor (ractor kills children
//! without running their `post_stop`).

use crate::console_actor::ConsoleMsg;
use crate::context::ConsoleContext;
use crate::hub::{ConsoleHub, SessionState};
use crate::session::{self, Cancel, Ended, Io, Report};
use crate::target::ConsoleTarget;
use ferric_cluster::{Cluster, ClusterError};
use ferric_model::ConsoleRecord;
use ferric_model::{now_ms, FenceToken, NodeId};
use ractor::ActorRef;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a console's `consoles/<uuid>` record goes: the conductor's lease, fenced by the node's
/// reservation token.
#[derive(Clone)]
pub struct RecordTo {
    pub cluster: Cluster,
    pub lease: i64,
    pub token: FenceToken,
}

/// Capped exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(10));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

pub(crate) struct Runner {
    pub node: NodeId,
    pub target: ConsoleTarget,
    pub hub: Arc<ConsoleHub>,
    pub ctx: Arc<ConsoleContext>,
    pub record: Option<RecordTo>,
    pub actor: ActorRef<ConsoleMsg>,
    pub started_at_ms: u64,
}

/// Tells the hub, the actor and the record about state changes.
struct Reporter {
    hub: Arc<ConsoleHub>,
    actor: ActorRef<ConsoleMsg>,
    record: Option<watch::Sender<ConsoleRecord>>,
    active_since: Mutex<Option<Instant>>,
}

impl Reporter {
    fn state(&self, state: SessionState, pid: Option<u32>) {
        self.hub.set_state(state.clone());
        if let Some(rec) = &self.record {
            rec.send_modify(|r| {
                r.state = state.name().to_string();
                r.pid = pid;
                match &state {
                    SessionState::Active { since_ms, .. } => {
                        r.active_since_ms = Some(*since_ms);
                        r.last_error = None;
                    }
                    SessionState::Reconnecting { error, .. } => {
                        r.active_since_ms = None;
                        r.last_error = Some(error.clone());
                    }
                    SessionState::Connecting => r.active_since_ms = None,
                }
            });
        }
        // The actor may be gone (killed with its node): the hub and record still matter.
        let _ = self.actor.send_message(ConsoleMsg::Session(state));
    }

    /// How long the last session was active (zero if it never was).
    fn take_active_for(&self) -> Duration {
        self.active_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

impl Report for Reporter {
    fn active(&self, pid: Option<u32>) {
        *self.active_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.state(
            SessionState::Active {
                since_ms: now_ms(),
                pid,
            },
            pid,
        );
    }
}

impl Runner {
    pub(crate) async fn run(self, mut cancel: Cancel) {
        let node = self.node;
        // A previous console of this node may still be cleaning up (its `sol deactivate` must
        // not hit our session): wait for it.
        let lifecycle = tokio::select! {
            l = self.ctx.registry.lifecycle(node) => l,
            _ = cancel.cancelled() => return,
        };
        let settings = &self.ctx.settings;
        let (record_tx, recorder) = match self.record.clone() {
            Some(to) => {
                let rec = ConsoleRecord {
                    conductor: settings.conductor.clone(),
                    address: self.ctx.address.clone(),
                    interface: self.target.interface().to_string(),
                    pid: None,
                    started_at_ms: self.started_at_ms,
                    active_since_ms: None,
                    state: SessionState::Connecting.name().to_string(),
                    last_error: None,
                    session: self.target.describe(),
                };
                let (tx, rx) = watch::channel(rec);
                (Some(tx), Some(tokio::spawn(keep_record(to, node, rx))))
            }
            None => (None, None),
        };
        let reporter = Reporter {
            hub: self.hub.clone(),
            actor: self.actor.clone(),
            record: record_tx,
            active_since: Mutex::new(None),
        };
        let http = match &self.target {
            ConsoleTarget::FerricSim(_) => reqwest::Client::builder()
                .build()
                .map_err(|e| tracing::error!(%node, error = %e, "cannot build an HTTP client"))
                .ok(),
            _ => None,
        };
        let io = Io {
            node,
            hub: &self.hub,
            settings,
            report: &reporter,
        };
        let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
        let mut attempt = 0u32;
        tracing::info!(%node, interface = self.target.interface(), session = %self.target.describe(), "console starting");
        loop {
            let ended = match &self.target {
                ConsoleTarget::Ipmitool(t) => session::ipmitool::run(t, &io, &mut cancel).await,
                ConsoleTarget::FerricSim(t) => match &http {
                    Some(http) => session::sim::run(t, http, &io, &mut cancel).await,
                    None => Ended::Failed("no HTTP client".into()),
                },
                ConsoleTarget::Fake => session::fake::run(&io, &mut cancel).await,
            };
            let error = match ended {
                Ended::Stopped => break,
                Ended::Lost(e) | Ended::Failed(e) => e,
            };
            if cancel.is_cancelled() {
                break;
            }
            // A session that stayed up long enough starts the backoff over; one that dies right
            // after opening keeps growing it.
            if reporter.take_active_for() >= settings.backoff_max {
                backoff.reset();
                attempt = 0;
            }
            attempt += 1;
            let delay = backoff.next_delay();
            tracing::warn!(%node, error = %error, attempt, retry_in_ms = delay.as_millis() as u64, "console session ended; reopening");
            reporter.state(
                SessionState::Reconnecting {
                    error,
                    attempt,
                    retry_in_ms: delay.as_millis() as u64,
                },
                None,
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => break,
            }
        }
        self.hub.set_input(None);
        // Dropping the sender makes the recorder delete the record and end.
        drop(reporter);
        if let Some(task) = recorder {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        tracing::info!(%node, "console stopped");
        drop(lifecycle);
    }
}

/// Writes the latest record whenever it changes (only the newest matters), and deletes it when
/// the console ends.
async fn keep_record(to: RecordTo, node: NodeId, mut rx: watch::Receiver<ConsoleRecord>) {
    let mut fenced = false;
    loop {
        let rec = rx.borrow_and_update().clone();
        if !fenced {
            match to
                .cluster
                .put_console(&node, to.token, to.lease, &rec)
                .await
            {
                Ok(()) => {}
                Err(ClusterError::Fenced(_)) => {
                    // The node is no longer ours; the node actor is being stopped.
                    tracing::warn!(%node, "console record not written: the reservation is gone");
                    fenced = true;
                }
                Err(e) => tracing::warn!(%node, error = %e, "cannot write the console record"),
            }
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
    if let Err(e) = to.cluster.delete_console(&node, to.lease).await {
        tracing::warn!(%node, error = %e, "cannot delete the console record (it goes with the lease)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        // Never zero, whatever the configuration.
        assert!(Backoff::new(Duration::ZERO, Duration::ZERO).next_delay() > Duration::ZERO);
    }
}

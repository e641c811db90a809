//! The conductor's lease: grant, keepalive every TTL/10, and the local **self-fencing deadline**.
//!
//! etcd expires a lease TTL after the last keepalive it *received*. The conductor cannot know
//! when that was, only when it *sent* each keepalive, which is never later. So after an
//! acknowledged keepalive sent at `t`, the lease is certainly alive until `t + ttl`; the conductor
//! stops all BMC work at `t + ttl - margin` unless a later keepalive was acknowledged. A BMC cannot
//! check a fencing token: this deadline is what keeps two conductors from driving one machine.

use crate::{Cluster, ClusterError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Pure deadline arithmetic (tested with paused time).
#[derive(Debug, Clone, Copy)]
pub struct FenceClock {
    ttl: Duration,
    margin: Duration,
    deadline: Instant,
}

impl FenceClock {
    /// The lease was granted by a request sent at `sent`.
    pub fn new(sent: Instant, ttl: Duration, margin: Duration) -> Self {
        FenceClock {
            ttl,
            margin,
            deadline: sent + ttl.saturating_sub(margin),
        }
    }

    /// A keepalive sent at `sent` was acknowledged with `granted` seconds to live. The deadline
    /// only moves forward: an acknowledgement of an older keepalive arriving late changes nothing.
    pub fn on_ack(&mut self, sent: Instant, granted: Duration) {
        let ttl = granted.min(self.ttl);
        let candidate = sent + ttl.saturating_sub(self.margin);
        if candidate > self.deadline {
            self.deadline = candidate;
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn is_fenced(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// The default margin: a quarter of the TTL, at least 250 ms and at most 5 s.
    pub fn default_margin(ttl: Duration) -> Duration {
        (ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }
}

/// What the keeper knows about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Certainly alive until (at least) `deadline`.
    Alive { deadline: Instant },
    /// No keepalive was acknowledged in time: stop all work now.
    Fenced,
    /// etcd answered that the lease no longer exists (expired or revoked, e.g. by eviction).
    Expired,
}

/// A cheap, clonable check of the conductor's self-fencing deadline, for use right before every
/// irreversible effect (a BMC command). It reads the clock itself, so it does not depend on the
/// keeper task being scheduled on time.
#[derive(Debug, Clone)]
pub struct SelfFence {
    rx: watch::Receiver<LeaseState>,
}

impl SelfFence {
    /// Ok while the lease is certainly alive and at least `budget` remains before the deadline
    /// (the time the next effect may take).
    pub fn check(&self, budget: Duration) -> Result<(), &'static str> {
        match *self.rx.borrow() {
            LeaseState::Alive { deadline } if Instant::now() + budget < deadline => Ok(()),
            LeaseState::Alive { .. } => Err("conductor lease deadline reached (self-fenced)"),
            LeaseState::Fenced => Err("conductor self-fenced: lease keepalives not acknowledged"),
            LeaseState::Expired => Err("conductor lease expired or revoked"),
        }
    }

    pub fn state(&self) -> LeaseState {
        *self.rx.borrow()
    }

    /// A fence that is always open, for unit tests of code that takes a `SelfFence`.
    pub fn always_alive() -> Self {
        // A receiver keeps the last value after its sender is gone.
        let (_tx, rx) = watch::channel(LeaseState::Alive {
            deadline: Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        });
        SelfFence { rx }
    }
}

/// Grants a lease and keeps it alive in a background task.
pub struct LeaseKeeper {
    pub id: i64,
    pub ttl: Duration,
    tx: watch::Sender<LeaseState>,
    /// The last keepalive was refused or not answered in time (see [`LeaseKeeper::behind`]).
    behind: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    pub async fn grant(cluster: &Cluster, ttl: Duration) -> Result<Self, ClusterError> {
        let margin = FenceClock::default_margin(ttl);
        let sent = Instant::now();
        let secs = ttl.as_secs().max(1) as i64;
        let resp = cluster
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(|e| cluster.err(e))?;
        let id = resp.id();
        let clock = FenceClock::new(sent, ttl, margin);
        let (tx, _) = watch::channel(LeaseState::Alive {
            deadline: clock.deadline(),
        });
        crate::metrics::CLUSTER.deadline.set(Some(clock.deadline()));
        let behind = watch::Sender::new(false);
        let task = tokio::spawn(keep_alive(
            cluster.clone(),
            id,
            ttl,
            clock,
            tx.clone(),
            behind.clone(),
        ));
        tracing::info!(
            lease = id,
            ttl_ms = ttl.as_millis() as u64,
            margin_ms = margin.as_millis() as u64,
            "lease granted"
        );
        Ok(LeaseKeeper {
            id,
            ttl,
            tx,
            behind,
            task,
        })
    }

    /// True while the last keepalive was refused or not answered in time, until one is
    /// acknowledged. etcd 3.4 refuses a renewal when its apply loop is more than a second
    /// behind (`waiting for the applied index took too long`), so this is the earliest sign
    /// that the writes of everyone sharing etcd have put the leases at risk: a conductor then
    /// sends no new reservation batches until etcd has caught up.
    pub fn behind(&self) -> watch::Receiver<bool> {
        self.behind.subscribe()
    }

    pub fn fence(&self) -> SelfFence {
        SelfFence {
            rx: self.tx.subscribe(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.tx.subscribe()
    }

    /// Stops keeping the lease alive and marks it fenced locally (etcd is not told).
    pub fn stop(&self) {
        self.task.abort();
        let _ = self.tx.send(LeaseState::Fenced);
        crate::metrics::CLUSTER.deadline.set(None);
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive(
    cluster: Cluster,
    id: i64,
    ttl: Duration,
    mut clock: FenceClock,
    tx: watch::Sender<LeaseState>,
    behind: watch::Sender<bool>,
) {
    // Often: the last acknowledged keepalive is at most one interval old when etcd becomes
    // unreachable, so an outage (a leader election, a lost member) of up to
    // `ttl - margin - interval` passes without fencing. At TTL/3 an election of 1.5 s fenced
    // every conductor with a 3 s TTL (found by `ferric chaos`); a keepalive is one small message.
    let interval = (ttl / 10).max(Duration::from_millis(100));
    let mut stream = None;
    let mut next = Instant::now() + interval;
    loop {
        // Wake at the next keepalive time, or at the deadline if that comes first.
        let wake = next.min(clock.deadline());
        tokio::time::sleep_until(wake).await;
        if clock.is_fenced(Instant::now()) {
            tracing::error!(
                lease = id,
                "no keepalive acknowledged before the self-fencing deadline: fencing"
            );
            let _ = tx.send(LeaseState::Fenced);
            crate::metrics::CLUSTER.self_fences.inc();
            return;
        }
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + interval;
        let sent = Instant::now();
        // An answer is waited for up to TTL/3 (not just one interval): under load etcd takes
        // longer than TTL/10 to acknowledge, and giving up on every slow answer to ask again
        // would never see one (the survivors of a 30,000-node failover fenced themselves so).
        let budget = clock
            .deadline()
            .saturating_duration_since(sent)
            .min((ttl / 3).max(interval));
        let attempt = tokio::time::timeout(budget, async {
            if stream.is_none() {
                stream = Some(cluster.lease_client().keep_alive(id).await?);
            }
            let (keeper, responses) = stream.as_mut().expect("set above");
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match attempt {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                behind.send_if_modified(|b| std::mem::replace(b, false));
                clock.on_ack(sent, Duration::from_secs(resp.ttl() as u64));
                let m = &crate::metrics::CLUSTER;
                m.keepalive_seconds.observe(sent.elapsed().as_secs_f64());
                m.deadline.set(Some(clock.deadline()));
                let _ = tx.send(LeaseState::Alive {
                    deadline: clock.deadline(),
                });
            }
            Ok(Ok(Some(_))) => {
                tracing::error!(
                    lease = id,
                    "etcd says the lease is gone (expired or revoked)"
                );
                let _ = tx.send(LeaseState::Expired);
                crate::metrics::CLUSTER.self_fences.inc();
                return;
            }
            Ok(Ok(None)) => {
                tracing::warn!(lease = id, "keepalive stream closed; reopening");
                stream = None;
            }
            Ok(Err(e)) => {
                behind.send_if_modified(|b| !std::mem::replace(b, true));
                tracing::warn!(lease = id, error = %e, "keepalive failed; retrying");
                stream = None;
                next = Instant::now() + interval.min(Duration::from_millis(100));
            }
            Err(_) => {
                behind.send_if_modified(|b| !std::mem::replace(b, true));
                tracing::warn!(lease = id, "keepalive not acknowledged in time; retrying");
                stream = None;
                next = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_is_measured_from_the_send_time() {
        let ttl = Duration::from_secs(2);
        let margin = Duration::from_millis(500);
        let t0 = Instant::now();
        let mut clock = FenceClock::new(t0, ttl, margin);
        assert_eq!(clock.deadline(), t0 + Duration::from_millis(1500));

        // A keepalive sent at 0.6 s and acknowledged at 1.2 s: deadline from 0.6 s, not 1.2 s.
        tokio::time::advance(Duration::from_millis(600)).await;
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(600)).await;
        clock.on_ack(sent, ttl);
        assert_eq!(clock.deadline(), t0 + Duration::from_millis(2100));
        assert!(!clock.is_fenced(Instant::now()));

        // A late acknowledgement of an older keepalive never moves the deadline back.
        clock.on_ack(t0, ttl);
        assert_eq!(clock.deadline(), t0 + Duration::from_millis(2100));

        // A shorter TTL granted by etcd shortens the window; a longer one is capped at ours.
        clock.on_ack(sent, Duration::from_secs(60));
        assert_eq!(clock.deadline(), t0 + Duration::from_millis(2100));

        tokio::time::advance(Duration::from_millis(899)).await;
        assert!(!clock.is_fenced(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(clock.is_fenced(Instant::now()));
    }

    #[test]
    fn margin_is_bounded() {
        assert_eq!(
            FenceClock::default_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            FenceClock::default_margin(Duration::from_millis(600)),
            Duration::from_millis(250)
        );
        assert_eq!(
            FenceClock::default_margin(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn self_fence_refuses_work_that_would_run_past_the_deadline() {
        let (tx, rx) = watch::channel(LeaseState::Alive {
            deadline: Instant::now() + Duration::from_secs(1),
        });
        let fence = SelfFence { rx };
        assert!(fence.check(Duration::from_millis(500)).is_ok());
        assert!(fence.check(Duration::from_millis(1500)).is_err());
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(fence.check(Duration::ZERO).is_err());
        tx.send(LeaseState::Expired).unwrap();
        assert!(fence.check(Duration::ZERO).is_err());
    }
}

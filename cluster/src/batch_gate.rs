//! When a group-committed batch may go to etcd. Writers of many tasks (status writes, spec
//! compare-and-swaps, enrollments) queue their requests; a batch goes once one of a few slots
//! is free. A batch that is not full also waits while another such batch is in flight: under a
//! steady trickle (16 clients, one request each) requests then gather into a few transactions
//! instead of one small one per slot, which is what etcd's CPU pays for (a raft entry, a
//! WAL write and a reply per transaction); a backlog still goes out in full batches side by
//! side. A request waits for at most one partial batch ahead of it.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct BatchGate {
    slots: Arc<Semaphore>,
    partial: Arc<Semaphore>,
}

/// Leave to send one batch; dropped when its transaction is answered.
pub struct Pass {
    _slot: OwnedSemaphorePermit,
    partial: Option<OwnedSemaphorePermit>,
}

impl Pass {
    /// The batch turned out full: it does not hold the partial batch's turn.
    pub fn full(&mut self) {
        self.partial = None;
    }
}

impl BatchGate {
    /// `parallel`: batches in flight at once.
    pub fn new(parallel: usize) -> BatchGate {
        BatchGate {
            slots: Arc::new(Semaphore::new(parallel.max(1))),
            partial: Arc::new(Semaphore::new(1)),
        }
    }

    /// Waits until a batch may go. `full_waiting`: a full batch is already queued (it need not
    /// wait for the partial batch's turn). None once the gate is closed.
    pub async fn enter(&self, full_waiting: impl Fn() -> bool) -> Option<Pass> {
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let partial = if full_waiting() {
            None
        } else {
            Some(self.partial.clone().acquire_owned().await.ok()?)
        };
        Some(Pass {
            _slot: slot,
            partial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_partial_batch_at_a_time_full_ones_side_by_side() {
        let gate = BatchGate::new(4);
        let a = gate.enter(|| false).await.expect("open");
        // A second partial batch waits for the first.
        let waiting = tokio::time::timeout(Duration::from_secs(1), gate.enter(|| false)).await;
        assert!(
            waiting.is_err(),
            "a second partial batch went while one was in flight"
        );
        // Full batches do not wait for it.
        let b = gate.enter(|| true).await.expect("open");
        let c = gate.enter(|| false);
        tokio::pin!(c);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut c)
                .await
                .is_err(),
            "the partial turn is taken"
        );
        drop(a);
        let mut c = tokio::time::timeout(Duration::from_secs(1), &mut c)
            .await
            .expect("the partial turn is free again")
            .expect("open");
        // A pass that turned out full gives the partial turn back at once.
        c.full();
        let d = tokio::time::timeout(Duration::from_secs(1), gate.enter(|| false)).await;
        assert!(d.is_ok());
        drop((b, c, d));
    }
}

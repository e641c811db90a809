//! When a group-committed batch may go to etcd. Writers of many tasks (status writes, spec
//! compare-and-swaps, enrollments) queue their requests; a batch goes once one of a few slots
//! is free. A batch that is not full also waits while another such batch is in flight: under a
//! steady trickle (16 clients, one request each) requests then gather into a few transactions
//! instead of one small one per slot, which is what etcd's CPU pays for (a raft entry, a
//! WAL write and a reply per transaction); a backlog still goes out in full batches side by
//! side. A request waits for at most one partial batch ahead of it.

use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

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

    /// The next batch of up to `max` requests from `rx` and the leave to send it: waits for
    /// the first request, then for leave (requests arriving meanwhile join), then takes what
    /// is queued. None once `rx` or the gate is closed.
    pub async fn next<T>(&self, rx: &mut mpsc::Receiver<T>, max: usize) -> Option<(Vec<T>, Pass)> {
        let first = rx.recv().await?;
        let mut pass = self.enter(|| rx.len() + 1 >= max).await?;
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if batch.len() >= max {
            pass.full();
        }
        Some((batch, pass))
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

    #[tokio::test(start_paused = true)]
    async fn next_takes_what_is_queued_up_to_the_batch_size() {
        let gate = BatchGate::new(4);
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..7 {
            tx.send(i).await.unwrap();
        }
        let (full, _a) = gate.next(&mut rx, 4).await.expect("a batch");
        assert_eq!(full, [0, 1, 2, 3]);
        let (rest, b) = gate.next(&mut rx, 4).await.expect("a batch");
        assert_eq!(rest, [4, 5, 6]);
        // Requests that come while the partial batch is in flight wait for it, and go together.
        tx.send(7).await.unwrap();
        let answered = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.send(8).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(b);
        };
        let ((last, _c), ()) = tokio::join!(
            async { gate.next(&mut rx, 4).await.expect("a batch") },
            answered
        );
        assert_eq!(last, [7, 8]);
        drop(tx);
        assert!(gate.next(&mut rx, 4).await.is_none(), "closed");
    }
}

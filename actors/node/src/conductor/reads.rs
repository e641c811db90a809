//! The bucket reads of a takeover, queued and sent in batches: a few transactions in flight,
//! each reading as many buckets as keeps it about [`NODES_PER_READ`] nodes (at most
//! [`BUCKETS_PER_READ`]). A small fleet's 4,096 buckets then take about 130 reads instead of
//! 4,096; a million nodes' buckets (about 240 nodes each) are still read one at a time.
//!
//! How many nodes a bucket holds is learnt from the reads themselves: nodes are spread evenly
//! over buckets by their uuid, so the average so far is a good guess of the next. Until the
//! first answer, reads ask for one bucket each.

use ferric_cluster::buckets::BUCKETS_PER_READ;
use ferric_model::{Bucket, FenceToken};
use std::collections::VecDeque;

/// Read transactions in flight at once.
pub(super) const READS_IN_FLIGHT: usize = 8;
/// About how many nodes one read should bring back.
const NODES_PER_READ: usize = 256;

/// One bucket to read: `again` is a re-read after a lost watch (its running actors look again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QueuedRead {
    pub bucket: Bucket,
    pub token: FenceToken,
    pub again: bool,
}

/// What a read asks of its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadKind {
    /// Everything: specs, statuses, delegations, reservations.
    Whole,
    /// All but the specs, which the warm standby has.
    Rest,
    /// Delegations and reservations only: the warm standby has specs and statuses. A few keys
    /// per bucket, so as many buckets as a read may hold.
    Light,
}

/// A read to send.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Batch {
    pub kind: ReadKind,
    pub reads: Vec<QueuedRead>,
}

#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    whole: VecDeque<QueuedRead>,
    rest: VecDeque<QueuedRead>,
    light: VecDeque<QueuedRead>,
    in_flight: usize,
    /// Buckets and nodes read so far, for the size of the next batches.
    buckets_read: usize,
    nodes_read: usize,
}

impl ReadQueue {
    pub(super) fn push(&mut self, read: QueuedRead, kind: ReadKind) {
        match kind {
            ReadKind::Whole => self.whole.push_back(read),
            ReadKind::Rest => self.rest.push_back(read),
            ReadKind::Light => self.light.push_back(read),
        }
    }

    /// The batches to send now (as many as free slots allow), the cheapest first: they finish
    /// a warm standby's takeovers, the cheaper part of a wave.
    pub(super) fn next_batches(&mut self) -> Vec<Batch> {
        let sized = self.batch_size();
        let mut out = Vec::new();
        while self.in_flight < READS_IN_FLIGHT {
            let (queue, kind, size) = if !self.light.is_empty() {
                (&mut self.light, ReadKind::Light, BUCKETS_PER_READ)
            } else if !self.rest.is_empty() {
                (&mut self.rest, ReadKind::Rest, sized)
            } else if !self.whole.is_empty() {
                (&mut self.whole, ReadKind::Whole, sized)
            } else {
                break;
            };
            // A bucket asked twice goes in the next batch: a read's answer is one per bucket.
            let mut reads: Vec<QueuedRead> = Vec::with_capacity(size);
            while reads.len() < size {
                match queue.front() {
                    Some(r) if !reads.iter().any(|q| q.bucket == r.bucket) => {
                        reads.extend(queue.pop_front());
                    }
                    _ => break,
                }
            }
            out.push(Batch { kind, reads });
            self.in_flight += 1;
        }
        out
    }

    /// A batch came back: `nodes` read in `buckets` buckets (none when it failed, or when it
    /// read no nodes' records: a light read).
    pub(super) fn done(&mut self, buckets: usize, nodes: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.observed(buckets, nodes);
    }

    /// Another read (the warm standby's) found `nodes` in `buckets` buckets.
    pub(super) fn observed(&mut self, buckets: usize, nodes: usize) {
        self.buckets_read += buckets;
        self.nodes_read += nodes;
    }

    /// Buckets per read: one until a read has said how full buckets are.
    pub(super) fn batch_size(&self) -> usize {
        if self.buckets_read == 0 {
            return 1;
        }
        let per_bucket = self.nodes_read.div_ceil(self.buckets_read).max(1);
        (NODES_PER_READ / per_bucket).clamp(1, BUCKETS_PER_READ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(b: u16) -> QueuedRead {
        QueuedRead {
            bucket: Bucket(b),
            token: FenceToken::bucket(1),
            again: false,
        }
    }

    #[test]
    fn batches_grow_once_reads_show_buckets_are_small_and_stay_single_when_full() {
        let mut q = ReadQueue::default();
        for b in 0..400 {
            q.push(read(b), ReadKind::Whole);
        }
        let first = q.next_batches();
        assert_eq!(first.len(), READS_IN_FLIGHT);
        assert!(first.iter().all(|b| b.reads.len() == 1));
        assert!(q.next_batches().is_empty(), "no free slot");
        // A small fleet: 8 buckets held 3 nodes in all.
        for i in 0..first.len() {
            q.done(1, usize::from(i == 0) * 3);
        }
        let next = q.next_batches();
        assert_eq!(next.len(), READS_IN_FLIGHT);
        assert!(next.iter().all(|b| b.reads.len() == BUCKETS_PER_READ));
        assert_eq!(next[0].reads[0].bucket, Bucket(8), "in queue order");

        // A million nodes: about 244 a bucket.
        let mut q = ReadQueue::default();
        for b in 0..20 {
            q.push(read(b), ReadKind::Whole);
        }
        q.next_batches();
        for _ in 0..READS_IN_FLIGHT {
            q.done(1, 244);
        }
        assert!(q.next_batches().iter().all(|b| b.reads.len() == 1));
    }

    #[test]
    fn a_bucket_queued_twice_is_read_twice_in_separate_batches() {
        let mut q = ReadQueue::default();
        q.done(5, 0);
        for b in [1, 2, 1, 3] {
            q.push(read(b), ReadKind::Whole);
        }
        let batches = q.next_batches();
        let buckets: Vec<Vec<u16>> = batches
            .iter()
            .map(|b| b.reads.iter().map(|r| r.bucket.0).collect())
            .collect();
        assert_eq!(buckets, vec![vec![1, 2], vec![1, 3]]);
    }

    #[test]
    fn light_reads_go_first_and_fill_a_read_whatever_the_buckets_hold() {
        let mut q = ReadQueue::default();
        q.done(1, 244);
        for b in 0..40 {
            q.push(read(b), ReadKind::Light);
        }
        q.push(read(100), ReadKind::Whole);
        let batches = q.next_batches();
        let sizes: Vec<(ReadKind, usize)> =
            batches.iter().map(|b| (b.kind, b.reads.len())).collect();
        assert_eq!(
            sizes,
            vec![
                (ReadKind::Light, BUCKETS_PER_READ),
                (ReadKind::Light, 40 - BUCKETS_PER_READ),
                (ReadKind::Whole, 1)
            ]
        );
    }

    #[test]
    fn rest_reads_go_first_and_are_never_mixed_with_whole_ones() {
        let mut q = ReadQueue::default();
        q.done(5, 0);
        q.push(read(1), ReadKind::Whole);
        q.push(read(2), ReadKind::Rest);
        q.push(read(3), ReadKind::Rest);
        let batches = q.next_batches();
        assert_eq!(
            batches,
            vec![
                Batch {
                    kind: ReadKind::Rest,
                    reads: vec![read(2), read(3)]
                },
                Batch {
                    kind: ReadKind::Whole,
                    reads: vec![read(1)]
                }
            ]
        );
    }
}

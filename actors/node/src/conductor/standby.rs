//! Warm standby. For each bucket this conductor would take over if its holder died (the
//! rendezvous runner-up among the live conductors), it keeps the bucket's node specs and
//! statuses: filled once by a read of the bucket's `nodes/` and `status/` ranges at one
//! revision; the specs are kept current by the whole-prefix `nodes/` watch every conductor runs
//! anyway, the statuses are not (a watch of every status would cost each write a delivery to
//! every conductor). Taking such a bucket over then reads no spec and no status: the statuses'
//! changes since the fill come from a watch of the bucket's status range that ends at the
//! claim's marker (`Cluster::status_changes`), and only delegations and reservations, a
//! handful of keys, are read.
//!
//! The specs are those of a known revision, `as_of`: the fill's read revision, or the watch's
//! last delivered revision if it is newer (every event at or below it has been applied). A
//! takeover hands the bucket table that revision as the read's: spec changes above it that the
//! watch delivers later are news, exactly as after a read at that revision. Statuses cannot
//! change between the old holder's bucket key going away and the new holder's first write,
//! so the fill's statuses with the changes up to the claim are those of any revision after the
//! acquisition. Pure: no I/O; the session reads and calls in.

use ferric_model::{Bucket, NodeId};
use std::collections::{HashMap, HashSet};

/// A node's spec as the watch or a read delivered it, with its `mod_revision`.
pub type RawSpec = (Vec<u8>, i64);

#[derive(Debug)]
enum State {
    /// Wanted, not read yet.
    Wanted,
    /// Being read: watch news of it is kept until the read answers (put or delete, newest).
    /// `stale`: the watch was lost meanwhile, so the news may have gaps; the answer is dropped.
    Filling {
        early: HashMap<NodeId, (Option<Vec<u8>>, i64)>,
        stale: bool,
    },
    /// Read at `read_rev`, and kept since by the watch.
    Ready { read_rev: i64 },
}

#[derive(Debug)]
struct Kept {
    state: State,
    specs: HashMap<NodeId, RawSpec>,
    /// Statuses as of the fill's read (raw).
    statuses: HashMap<NodeId, Vec<u8>>,
}

/// A bucket's records handed to a takeover.
#[derive(Debug)]
pub struct Taken {
    /// The revision the specs are those of.
    pub as_of: i64,
    pub specs: HashMap<NodeId, RawSpec>,
    /// The statuses as of `status_rev` (the fill's read revision).
    pub statuses: HashMap<NodeId, Vec<u8>>,
    pub status_rev: i64,
}

impl Taken {
    /// Applies the status changes a catch-up watch delivered (all after `status_rev`, oldest
    /// first): the statuses are then those of the claim.
    pub fn apply_status_changes(&mut self, changes: Vec<ferric_cluster::buckets::StatusChange>) {
        for (id, value, _rev) in changes {
            match value {
                Some(v) => {
                    self.statuses.insert(id, v);
                }
                None => {
                    self.statuses.remove(&id);
                }
            }
        }
    }
}

/// What a fill read: its revision, the specs and the statuses.
pub type Fill = (i64, Vec<(NodeId, RawSpec)>, Vec<(NodeId, Vec<u8>)>);

#[derive(Debug, Default)]
pub struct Standby {
    buckets: HashMap<Bucket, Kept>,
    /// The node watch's last delivered revision (every event at or below it applied).
    watch_rev: i64,
    fills_in_flight: usize,
    /// Buckets in `Wanted`.
    unfilled: usize,
}

impl Standby {
    /// The buckets to keep from now on. Buckets no longer wanted are dropped, but for those in
    /// `keep` (this conductor is now their owner: the holder just left, and the takeover's
    /// read is on its way).
    pub fn set_wanted(&mut self, wanted: &HashSet<Bucket>, keep: &HashSet<Bucket>) {
        self.buckets
            .retain(|b, _| wanted.contains(b) || keep.contains(b));
        for b in wanted {
            self.buckets.entry(*b).or_insert_with(|| Kept {
                state: State::Wanted,
                specs: HashMap::new(),
                statuses: HashMap::new(),
            });
        }
        self.recount();
    }

    /// Up to `max` buckets to read now (at most `max` fills in flight in all).
    pub fn next_fills(&mut self, max: usize) -> Vec<Bucket> {
        let room = max.saturating_sub(self.fills_in_flight);
        let mut out: Vec<Bucket> = self
            .buckets
            .iter()
            .filter(|(_, k)| matches!(k.state, State::Wanted))
            .map(|(b, _)| *b)
            .collect();
        out.sort_unstable();
        out.truncate(room);
        for b in &out {
            if let Some(k) = self.buckets.get_mut(b) {
                k.state = State::Filling {
                    early: HashMap::new(),
                    stale: false,
                };
            }
        }
        self.fills_in_flight += out.len();
        self.recount();
        out
    }

    /// A fill's read of `b` answered (`None`: it failed; read again later).
    pub fn filled(&mut self, b: Bucket, read: Option<Fill>) {
        self.fills_in_flight = self.fills_in_flight.saturating_sub(1);
        let Some(k) = self.buckets.get_mut(&b) else {
            return self.recount();
        };
        let State::Filling { early, stale } = std::mem::replace(&mut k.state, State::Wanted) else {
            return self.recount();
        };
        let Some((read_rev, specs, statuses)) = read.filter(|_| !stale) else {
            return self.recount();
        };
        k.specs = specs.into_iter().collect();
        k.statuses = statuses.into_iter().collect();
        for (id, (value, rev)) in early {
            if rev <= read_rev {
                continue;
            }
            match value {
                Some(v) => {
                    k.specs.insert(id, (v, rev));
                }
                None => {
                    k.specs.remove(&id);
                }
            }
        }
        k.state = State::Ready { read_rev };
        self.recount();
    }

    /// The watch delivered a spec of `id` at `mod_rev` (`None`: the node was deleted).
    pub fn node(&mut self, id: NodeId, value: Option<&[u8]>, mod_rev: i64) {
        let Some(k) = self.buckets.get_mut(&Bucket::of(&id)) else {
            return;
        };
        match &mut k.state {
            State::Wanted => {}
            State::Filling { early, .. } => {
                let e = early.entry(id).or_insert((None, 0));
                if mod_rev >= e.1 {
                    *e = (value.map(<[u8]>::to_vec), mod_rev);
                }
            }
            // Older than the read: the read has it (a node absent from the read and put at or
            // below its revision was deleted by then).
            State::Ready { read_rev } if mod_rev <= *read_rev => {}
            State::Ready { .. } => match value {
                Some(v) => {
                    if k.specs.get(&id).is_none_or(|(_, r)| *r < mod_rev) {
                        k.specs.insert(id, (v.to_vec(), mod_rev));
                    }
                }
                None => {
                    if k.specs.get(&id).is_some_and(|(_, r)| *r < mod_rev) {
                        k.specs.remove(&id);
                    }
                }
            },
        }
    }

    /// The watch delivered everything up to `rev`.
    pub fn watched(&mut self, rev: i64) {
        self.watch_rev = self.watch_rev.max(rev);
    }

    /// The watch was lost: what it missed is unknown, so every bucket is read again.
    pub fn invalidate(&mut self, rev: i64) {
        self.watch_rev = self.watch_rev.max(rev);
        for k in self.buckets.values_mut() {
            match &mut k.state {
                State::Ready { .. } => {
                    k.state = State::Wanted;
                    k.specs = HashMap::new();
                    k.statuses = HashMap::new();
                }
                State::Filling { stale, .. } => *stale = true,
                State::Wanted => {}
            }
        }
        self.recount();
    }

    /// Whether some bucket waits for its first read.
    pub fn wants_fill(&self) -> bool {
        self.unfilled > 0
    }

    fn recount(&mut self) {
        self.unfilled = self
            .buckets
            .values()
            .filter(|k| matches!(k.state, State::Wanted))
            .count();
    }

    /// Whether `b`'s specs are ready for a takeover.
    pub fn ready(&self, b: Bucket) -> bool {
        self.buckets
            .get(&b)
            .is_some_and(|k| matches!(k.state, State::Ready { .. }))
    }

    /// The revision `b`'s statuses are those of, if it is ready for a takeover.
    pub fn status_rev(&self, b: Bucket) -> Option<i64> {
        match self.buckets.get(&b)?.state {
            State::Ready { read_rev } => Some(read_rev),
            _ => None,
        }
    }

    /// Hands `b`'s records to its takeover (and forgets them), if they are ready.
    pub fn take(&mut self, b: Bucket) -> Option<Taken> {
        if !self.ready(b) {
            return None;
        }
        let k = self.buckets.remove(&b)?;
        let State::Ready { read_rev } = k.state else {
            return None;
        };
        Some(Taken {
            as_of: read_rev.max(self.watch_rev),
            specs: k.specs,
            statuses: k.statuses,
            status_rev: read_rev,
        })
    }

    /// Buckets kept, buckets ready, and the specs kept.
    pub fn counts(&self) -> (usize, usize, usize) {
        let ready = self
            .buckets
            .values()
            .filter(|k| matches!(k.state, State::Ready { .. }))
            .count();
        let specs = self.buckets.values().map(|k| k.specs.len()).sum();
        (self.buckets.len(), ready, specs)
    }
}

#[cfg(test)]
mod tests;

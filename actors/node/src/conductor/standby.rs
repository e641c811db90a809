//! Warm standby of specs. For each bucket this conductor would take over if its holder died
//! (the rendezvous runner-up among the live conductors), it keeps the bucket's node specs:
//! filled once by a read of the bucket's `nodes/` range, then kept current by the whole-prefix
//! `nodes/` watch every conductor runs anyway. Taking such a bucket over then reads only its
//! statuses, delegations and reservations, about half the keys of a takeover read.
//!
//! The specs are those of a known revision, `as_of`: the fill's read revision, or the watch's
//! last delivered revision if it is newer (every event at or below it has been applied). A
//! takeover hands the bucket table that revision as the read's: spec changes above it that the
//! watch delivers later are news, exactly as after a read at that revision. Statuses come from
//! the takeover's own read; they cannot change between the old holder's bucket key going away
//! and the new holder's first write, so a read at any revision after the acquisition is as
//! good as one at `as_of`. Pure: no I/O; the session reads and calls in.

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
}

/// A bucket's specs handed to a takeover.
#[derive(Debug)]
pub struct Taken {
    /// The revision the specs are those of.
    pub as_of: i64,
    pub specs: HashMap<NodeId, RawSpec>,
}

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

    /// A fill's read of `b` at `read_rev` answered (`None`: it failed; read again later).
    pub fn filled(&mut self, b: Bucket, read: Option<(i64, Vec<(NodeId, RawSpec)>)>) {
        self.fills_in_flight = self.fills_in_flight.saturating_sub(1);
        let Some(k) = self.buckets.get_mut(&b) else {
            return self.recount();
        };
        let State::Filling { early, stale } = std::mem::replace(&mut k.state, State::Wanted) else {
            return self.recount();
        };
        let Some((read_rev, specs)) = read.filter(|_| !stale) else {
            return self.recount();
        };
        k.specs = specs.into_iter().collect();
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

    /// Hands `b`'s specs to its takeover (and forgets them), if they are ready.
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

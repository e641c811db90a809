//! Warm standby. For each bucket this conductor would take over if its holder died (the
//! rendezvous runner-up among the live conductors), it keeps the bucket's node specs and
//! statuses: filled once by a read of the bucket's `nodes/` and `status/` ranges, then kept
//! current, the specs by the whole-prefix `nodes/` watch every conductor runs anyway, the
//! statuses by a watch of the bucket's status range (one of a stream of such watches). Taking
//! such a bucket over then reads only its delegations and reservations, a few keys.
//!
//! The specs are those of a known revision, `as_of`: the fill's read revision, or the watch's
//! last delivered revision if it is newer (every event at or below it has been applied). A
//! takeover hands the bucket table that revision as the read's: spec changes above it that the
//! watch delivers later are news, exactly as after a read at that revision.
//!
//! The statuses are complete up to the last revision their watch delivered (`seen`). Every
//! acquisition of a bucket puts its status marker (`status/<bucket>`) in the same transaction,
//! so once the watch has delivered the acquisition's revision, it has delivered every status
//! the previous holder wrote (its writes are fenced by its own bucket key, gone by then), and
//! the new holder has written none yet: the statuses are the bucket's as of the takeover's
//! read. Until then the takeover waits (`caught_up`). Without a status watch (it ended, or
//! was never opened), the takeover reads the statuses as before. Pure: no I/O; the session
//! reads, watches and calls in.

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
    /// Kept by a status watch once the fill answered; None: not kept (a takeover reads them).
    statuses: Option<Statuses>,
}

/// A bucket's statuses as its watch keeps them.
#[derive(Debug)]
struct Statuses {
    watch: i64,
    /// Every status event at or below it has been applied.
    seen: i64,
    records: HashMap<NodeId, RawSpec>,
}

/// A status watch to open: `id` over `bucket`'s statuses, from revision `from` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenWatch {
    pub id: i64,
    pub bucket: Bucket,
    pub from: i64,
}

/// A fill's answer for one bucket: the read's revision, the specs and the statuses.
pub type Fill = (i64, Vec<(NodeId, RawSpec)>, Vec<(NodeId, RawSpec)>);

/// A bucket's specs handed to a takeover.
#[derive(Debug)]
pub struct Taken {
    /// The revision the specs are those of.
    pub as_of: i64,
    pub specs: HashMap<NodeId, RawSpec>,
    /// The statuses, complete up to the takeover's acquisition (None: the takeover reads
    /// them).
    pub statuses: Option<HashMap<NodeId, RawSpec>>,
}

#[derive(Debug, Default)]
pub struct Standby {
    /// Keep specs only (`--no-standby-statuses`).
    specs_only: bool,
    buckets: HashMap<Bucket, Kept>,
    /// The status watches open, by id.
    watches: HashMap<i64, Bucket>,
    /// The last status watch id handed out (ids are never reused).
    last_watch: i64,
    /// Status watches to cancel (their bucket is no longer kept).
    cancels: Vec<i64>,
    /// The node watch's last delivered revision (every event at or below it applied).
    watch_rev: i64,
    fills_in_flight: usize,
    /// Buckets in `Wanted`.
    unfilled: usize,
}

impl Standby {
    /// A standby that keeps specs only: a takeover reads the statuses.
    pub fn specs_only() -> Self {
        Standby {
            specs_only: true,
            ..Standby::default()
        }
    }

    /// The buckets to keep from now on. Buckets no longer wanted are dropped, but for those in
    /// `keep` (this conductor is now their owner: the holder just left, and the takeover's
    /// read is on its way).
    pub fn set_wanted(&mut self, wanted: &HashSet<Bucket>, keep: &HashSet<Bucket>) {
        let (watches, cancels) = (&mut self.watches, &mut self.cancels);
        self.buckets.retain(|b, k| {
            let kept = wanted.contains(b) || keep.contains(b);
            if !kept {
                if let Some(st) = &k.statuses {
                    watches.remove(&st.watch);
                    cancels.push(st.watch);
                }
            }
            kept
        });
        for b in wanted {
            self.buckets.entry(*b).or_insert_with(|| Kept {
                state: State::Wanted,
                specs: HashMap::new(),
                statuses: None,
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

    /// A fill's read of `b` answered (`None`: it failed; read again later). When the bucket is
    /// ready, the status watch to open from just after the read.
    pub fn filled(&mut self, b: Bucket, read: Option<Fill>) -> Option<OpenWatch> {
        self.fills_in_flight = self.fills_in_flight.saturating_sub(1);
        let out = self.fill(b, read);
        self.recount();
        out
    }

    fn fill(&mut self, b: Bucket, read: Option<Fill>) -> Option<OpenWatch> {
        let k = self.buckets.get_mut(&b)?;
        let State::Filling { early, stale } = std::mem::replace(&mut k.state, State::Wanted) else {
            return None;
        };
        let (read_rev, specs, statuses) = read.filter(|_| !stale)?;
        if let Some(old) = k.statuses.take() {
            self.watches.remove(&old.watch);
            self.cancels.push(old.watch);
        }
        let watch = (!self.specs_only).then(|| {
            self.last_watch += 1;
            self.watches.insert(self.last_watch, b);
            k.statuses = Some(Statuses {
                watch: self.last_watch,
                seen: read_rev,
                records: statuses.into_iter().collect(),
            });
            self.last_watch
        });
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
        watch.map(|id| OpenWatch {
            id,
            bucket: b,
            from: read_rev + 1,
        })
    }

    /// Status watch `watch` delivered events (node, value or None for a delete, `mod_revision`;
    /// node None: the bucket's marker, or a key that names no node), all of whole revisions.
    /// Returns the bucket, if the watch is current.
    pub fn statuses(
        &mut self,
        watch: i64,
        events: impl IntoIterator<Item = (Option<NodeId>, Option<Vec<u8>>, i64)>,
    ) -> Option<Bucket> {
        let b = *self.watches.get(&watch)?;
        let st = self.buckets.get_mut(&b)?.statuses.as_mut()?;
        for (id, value, rev) in events {
            st.seen = st.seen.max(rev);
            let Some(id) = id else { continue };
            match value {
                Some(v) => {
                    st.records.insert(id, (v, rev));
                }
                None => {
                    st.records.remove(&id);
                }
            }
        }
        Some(b)
    }

    /// Status watch `watch` ended (etcd canceled it): its bucket is read again. Returns the
    /// bucket, if the watch was current.
    pub fn status_watch_ended(&mut self, watch: i64) -> Option<Bucket> {
        let b = self.watches.remove(&watch)?;
        if let Some(k) = self.buckets.get_mut(&b) {
            k.statuses = None;
            if matches!(k.state, State::Ready { .. }) {
                k.state = State::Wanted;
                k.specs = HashMap::new();
            }
        }
        self.recount();
        Some(b)
    }

    /// The stream of status watches ended: every bucket it kept is read again.
    pub fn status_watches_lost(&mut self) {
        let ended: Vec<i64> = self.watches.keys().copied().collect();
        for w in ended {
            self.status_watch_ended(w);
        }
        self.cancels.clear();
    }

    /// Forgets `b`'s statuses (a takeover waited too long for their watch): a takeover then
    /// reads them.
    pub fn drop_statuses(&mut self, b: Bucket) {
        if let Some(st) = self.buckets.get_mut(&b).and_then(|k| k.statuses.take()) {
            self.watches.remove(&st.watch);
            self.cancels.push(st.watch);
        }
    }

    /// Status watches to cancel, since the last call.
    pub fn take_cancels(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.cancels)
    }

    /// Whether `b`'s statuses are kept and complete up to revision `rev` (None: not kept, or
    /// the bucket is not ready: a takeover reads them).
    pub fn caught_up(&self, b: Bucket, rev: i64) -> Option<bool> {
        let k = self.buckets.get(&b)?;
        if !matches!(k.state, State::Ready { .. }) {
            return None;
        }
        Some(k.statuses.as_ref()?.seen >= rev)
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

    /// The watch was lost: what it missed is unknown, so every bucket is read again. The status
    /// watches go too (the session drops their stream).
    pub fn invalidate(&mut self, rev: i64) {
        self.watch_rev = self.watch_rev.max(rev);
        for k in self.buckets.values_mut() {
            k.statuses = None;
            match &mut k.state {
                State::Ready { .. } => {
                    k.state = State::Wanted;
                    k.specs = HashMap::new();
                }
                State::Filling { stale, .. } => *stale = true,
                State::Wanted => {}
            }
        }
        self.watches.clear();
        self.cancels.clear();
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
        let statuses = k.statuses.map(|st| {
            self.watches.remove(&st.watch);
            self.cancels.push(st.watch);
            st.records
        });
        Some(Taken {
            as_of: read_rev.max(self.watch_rev),
            specs: k.specs,
            statuses,
        })
    }

    /// Buckets kept, buckets ready, the specs kept and the statuses kept.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let ready = self
            .buckets
            .values()
            .filter(|k| matches!(k.state, State::Ready { .. }))
            .count();
        let specs = self.buckets.values().map(|k| k.specs.len()).sum();
        let statuses = self
            .buckets
            .values()
            .filter_map(|k| k.statuses.as_ref())
            .map(|st| st.records.len())
            .sum();
        (self.buckets.len(), ready, specs, statuses)
    }
}

#[cfg(test)]
mod tests;

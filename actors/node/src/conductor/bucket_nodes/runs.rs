//! Where each node of the held buckets stands ([`Run`]), kept by bucket and with its counts
//! kept as entries change: a conductor holds about 100,000 nodes at a million, and the session
//! asks how many are held and whether all are settled after every input, and a bucket's stop
//! asks whether anything of that bucket still runs after each of its nodes stops. Scanning
//! every entry for those made a failover's takeover quadratic (`bench/MILLION.md`).

use super::Run;
use ferric_model::{Bucket, NodeId};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub(super) struct Runs {
    by_bucket: HashMap<Bucket, HashMap<NodeId, Run>>,
    /// Entries that are held here (an actor, or given up).
    held: usize,
    /// Entries with a running actor (the supervisor said so).
    started: usize,
    /// Entries not settled (see [`settled`]).
    unsettled: usize,
    /// Per bucket, entries that keep it from being reported stopped (an actor here, or a
    /// delegation change in flight).
    busy: HashMap<Bucket, usize>,
}

fn held(r: &Run) -> bool {
    matches!(r, Run::Here { .. } | Run::GaveUp)
}

fn started(r: &Run) -> bool {
    matches!(r, Run::Here { started: true, .. })
}

/// Where a start-up or failover ends: running here, handed on, or given up.
fn settled(r: &Run) -> bool {
    matches!(
        r,
        Run::Here {
            started: true,
            stopping: None
        } | Run::Delegated { .. }
            | Run::GaveUp
    )
}

fn busy(r: &Run) -> bool {
    matches!(r, Run::Here { .. } | Run::Changing { .. })
}

impl Runs {
    pub fn get(&self, id: &NodeId) -> Option<&Run> {
        self.by_bucket.get(&Bucket::of(id))?.get(id)
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// Sets `id`'s entry, returning the one it replaces.
    pub fn insert(&mut self, id: NodeId, run: Run) -> Option<Run> {
        let b = Bucket::of(&id);
        self.count(b, &run, 1);
        let old = self.by_bucket.entry(b).or_default().insert(id, run);
        if let Some(old) = &old {
            self.count(b, old, -1);
        }
        old
    }

    /// A node of a held bucket not known yet is free to start.
    pub fn or_free(&mut self, id: NodeId) {
        if !self.contains(&id) {
            self.insert(id, Run::Free);
        }
    }

    pub fn remove(&mut self, id: &NodeId) -> Option<Run> {
        let b = Bucket::of(id);
        let nodes = self.by_bucket.get_mut(&b)?;
        let old = nodes.remove(id)?;
        if nodes.is_empty() {
            self.by_bucket.remove(&b);
        }
        self.count(b, &old, -1);
        Some(old)
    }

    /// Removes every entry of `b`, returning their nodes.
    pub fn remove_bucket(&mut self, b: Bucket) -> Vec<NodeId> {
        let Some(nodes) = self.by_bucket.remove(&b) else {
            return Vec::new();
        };
        for r in nodes.values() {
            self.count(b, r, -1);
        }
        nodes.into_keys().collect()
    }

    /// The nodes of `b` with an entry.
    pub fn ids_of(&self, b: Bucket) -> Vec<NodeId> {
        self.by_bucket
            .get(&b)
            .map(|n| n.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every node with an entry.
    pub fn ids(&self) -> Vec<NodeId> {
        self.iter().map(|(id, _)| *id).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Run)> + '_ {
        self.by_bucket.values().flat_map(|n| n.iter())
    }

    /// Whether some node of `b` runs here or has a delegation change in flight.
    pub fn busy_in(&self, b: Bucket) -> bool {
        self.busy.get(&b).is_some_and(|n| *n > 0)
    }

    /// Nodes held here (an actor, or given up).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Nodes whose actors the supervisor reported running.
    pub fn started(&self) -> usize {
        self.started
    }

    /// Whether every entry is settled: running here, handed on, or given up.
    pub fn all_settled(&self) -> bool {
        self.unsettled == 0
    }

    fn count(&mut self, b: Bucket, r: &Run, sign: isize) {
        let add = |n: &mut usize, yes: bool| {
            if yes {
                *n = n.saturating_add_signed(sign);
            }
        };
        add(&mut self.held, held(r));
        add(&mut self.started, started(r));
        add(&mut self.unsettled, !settled(r));
        if busy(r) {
            let n = self.busy.entry(b).or_default();
            *n = n.saturating_add_signed(sign);
            if *n == 0 {
                self.busy.remove(&b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(bucket: u16, n: u8) -> NodeId {
        let mut bytes = [0u8; 16];
        bytes[0] = (bucket >> 4) as u8;
        bytes[1] = ((bucket & 0xf) << 4) as u8;
        bytes[15] = n;
        NodeId(uuid::Uuid::from_bytes(bytes))
    }

    /// The counts equal a scan of every entry after each of many random changes.
    #[test]
    fn counts_follow_every_change() {
        let runs_of = |k: u64| match k % 7 {
            0 => Run::Free,
            1 => Run::Here {
                started: false,
                stopping: None,
            },
            2 => Run::Here {
                started: true,
                stopping: None,
            },
            3 => Run::Here {
                started: true,
                stopping: Some(None),
            },
            4 => Run::Delegated { to: "b".into() },
            5 => Run::Changing {
                to: None,
                from: Some("b".into()),
            },
            _ => Run::GaveUp,
        };
        let mut t = Runs::default();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for step in 0..5_000 {
            let (b, n) = ((next() % 3) as u16, (next() % 8) as u8);
            match next() % 5 {
                0 => {
                    t.remove(&id(b, n));
                }
                1 if step % 50 == 0 => {
                    t.remove_bucket(Bucket(b));
                }
                2 => t.or_free(id(b, n)),
                _ => {
                    t.insert(id(b, n), runs_of(next()));
                }
            }
            let all: Vec<(NodeId, Run)> = t.iter().map(|(i, r)| (*i, r.clone())).collect();
            assert_eq!(t.held(), all.iter().filter(|(_, r)| held(r)).count());
            assert_eq!(t.started(), all.iter().filter(|(_, r)| started(r)).count());
            assert_eq!(t.all_settled(), all.iter().all(|(_, r)| settled(r)));
            for b in 0..3u16 {
                let busy_here = all
                    .iter()
                    .any(|(i, r)| Bucket::of(i) == Bucket(b) && busy(r));
                assert_eq!(t.busy_in(Bucket(b)), busy_here, "step {step}, bucket {b}");
                let mut ids = t.ids_of(Bucket(b));
                ids.sort();
                let mut want: Vec<NodeId> = all
                    .iter()
                    .filter(|(i, _)| Bucket::of(i) == Bucket(b))
                    .map(|(i, _)| *i)
                    .collect();
                want.sort();
                assert_eq!(ids, want);
            }
        }
    }
}

//! The nodes of the buckets this conductor holds, pure (no etcd, no actors, no I/O): which of
//! them run here under the bucket's token, which are handed on to a delegate, and the steps
//! between the two. Each input returns the [`NodeEffect`]s the session executes; their results
//! come back as inputs.
//!
//! A node of a held bucket belongs here when this conductor serves its driver and conductor
//! group, or when no live conductor does (this conductor is then its caretaker). Otherwise it
//! is handed on to the rendezvous winner among those that serve it: `delegations/<uuid>` names
//! the delegate, which reserves the node itself (`ferric_cluster::buckets`).
//!
//! Invariant: a node never has two owners.
//! - A node is handed on only after its actor here reported stopped.
//! - A node is taken back in two steps: the delegation is first changed to name nobody (the
//!   delegate sees that, stops the node and deletes its reservation), then deleted with a
//!   compare that its reservation is gone; only then does the actor start here. Its fence
//!   (bucket token, and no reservation) refuses its writes while a delegate holds the node.
//! - A bucket is released only after every node of it that ran here reported stopped.

use super::placement_index::{Eligible, PlacementIndex};
use crate::supervisor::REASON_FENCED;
use ferric_cluster::buckets::Delegate;
use ferric_model::{Bucket, ConductorRecord, FenceToken, NodeId};
use runs::Runs;
use std::collections::{BTreeMap, HashMap, HashSet};

mod runs;

/// A node's placement inputs: (driver, conductor group), or why its spec cannot be read.
pub type Placement = Result<(String, String), String>;

/// What the session must do for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEffect {
    /// Read the bucket's records (`Cluster::read_bucket`); the answer comes back as
    /// [`BucketNodes::bucket_read`].
    Read(Bucket, FenceToken),
    /// Start the node's actor with the bucket's token.
    Start { id: NodeId, token: FenceToken },
    /// Stop these node actors, each after its in-flight operation; every end comes back as
    /// `actor_stopped`.
    Stop(Vec<NodeId>),
    /// Change these delegations (`Cluster::delegate`); the answers come back as `delegated`.
    Delegate(Vec<Delegate>),
    /// Every node of the bucket that ran here has stopped: the bucket table may let it go.
    BucketStopped(Bucket, FenceToken),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketPhase {
    /// Its records are being read.
    Reading,
    Running,
    /// Its nodes are being stopped; then the bucket is reported stopped.
    Stopping,
}

#[derive(Debug)]
struct Held {
    token: FenceToken,
    phase: BucketPhase,
    /// The revision its records were read at: the watch's older news of its nodes is stale.
    read_rev: i64,
}

/// Where one node of a held bucket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    /// Nothing runs here and no delegation names anyone: it can start here at once.
    Free,
    /// Its actor runs here (`started`: the supervisor said so), or is being stopped, after
    /// which it is handed on to `then` (or just ends: `None`).
    Here {
        started: bool,
        stopping: Option<Option<String>>,
    },
    /// A delegation names `to` (`""`: nobody, while taking it back).
    Delegated { to: String },
    /// A delegation change is in flight.
    Changing {
        to: Option<String>,
        from: Option<String>,
    },
    /// Taking it back was refused at revision `refused_at`: a delegate still holds its
    /// reservation. A delete of the reservation after that revision lets it try again.
    Reclaiming { refused_at: i64 },
    /// Its actor gave up after repeated crashes: it stays here, not running, so that no other
    /// conductor is dragged into the same crash loop (the status says why).
    GaveUp,
}

#[derive(Debug, Default)]
pub struct BucketNodes {
    me: String,
    members: BTreeMap<String, ConductorRecord>,
    held: HashMap<Bucket, Held>,
    /// Placement inputs of the nodes of held buckets.
    nodes: PlacementIndex,
    run: Runs,
    /// The newest reservation delete seen per node of a held bucket (see `Run::Reclaiming`).
    reservation_deleted: HashMap<NodeId, i64>,
    /// News of nodes of buckets being read (the watch can deliver a change newer than the read
    /// before the read's answer): the newest per node, `None` for a delete, applied by
    /// `bucket_read` when newer than the read.
    early: HashMap<NodeId, (Option<Placement>, i64)>,
    dirty_all: bool,
    dirty: HashSet<NodeId>,
}

impl BucketNodes {
    pub fn new(me: &str) -> Self {
        BucketNodes {
            me: me.to_string(),
            ..Default::default()
        }
    }

    /// Membership changed. Every node is looked at again on the next pass when what placement
    /// reads of the members changed (who is live, on which lease, serving what); conductors
    /// rewrite their records several times a second to report their running actors, and a
    /// pass over 100,000 nodes for each of those took most of a failover's CPU.
    pub fn set_members(&mut self, members: &BTreeMap<String, ConductorRecord>) {
        let same = self.members.len() == members.len()
            && self.members.iter().zip(members).all(|((a, x), (b, y))| {
                a == b
                    && x.lease_id == y.lease_id
                    && x.drivers == y.drivers
                    && x.conductor_group == y.conductor_group
                    && x.buckets == y.buckets
            });
        self.members = members.clone();
        if !same {
            self.dirty_all = true;
        }
    }

    /// Node actors reported running.
    pub fn running(&self) -> u64 {
        self.run.started() as u64
    }

    /// Nodes held through buckets (running, being stopped, or given up).
    pub fn held(&self) -> usize {
        self.run.held()
    }

    /// Every node of every held bucket that should run here does, and no read is in flight.
    pub fn steady(&self) -> bool {
        self.held.values().all(|h| h.phase == BucketPhase::Running) && self.run.all_settled()
    }

    /// Whether `id`'s actor runs here and is not being stopped (it gets the node's updates).
    pub fn runs(&self, id: &NodeId) -> bool {
        matches!(self.run.get(id), Some(Run::Here { stopping: None, .. }))
    }

    /// The nodes whose actors run here and are not being stopped.
    pub fn running_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.run
            .iter()
            .filter(|(_, r)| matches!(r, Run::Here { stopping: None, .. }))
            .map(|(id, _)| *id)
    }

    /// Whether the bucket of `id` is held here with its records read (its spec changes are
    /// this table's to follow).
    pub fn follows(&self, id: &NodeId) -> bool {
        self.held
            .get(&Bucket::of(id))
            .is_some_and(|h| h.phase == BucketPhase::Running)
    }

    /// The bucket table acquired `b` with `token`: read its records first.
    pub fn bucket_started(&mut self, b: Bucket, token: FenceToken) -> Vec<NodeEffect> {
        self.held.insert(
            b,
            Held {
                token,
                phase: BucketPhase::Reading,
                read_rev: 0,
            },
        );
        vec![NodeEffect::Read(b, token)]
    }

    /// `b`'s records, read at `read_rev` after it was acquired with `token`: `nodes` with their
    /// placement inputs, and the delegations the previous holders left (delegate, or the
    /// record's error).
    pub fn bucket_read(
        &mut self,
        b: Bucket,
        token: FenceToken,
        read_rev: i64,
        nodes: Vec<(NodeId, Placement)>,
        delegations: Vec<(NodeId, Result<String, String>)>,
    ) -> Vec<NodeEffect> {
        match self.held.get_mut(&b) {
            Some(h) if h.token == token && h.phase == BucketPhase::Reading => {
                h.phase = BucketPhase::Running;
                h.read_rev = read_rev;
            }
            // Stopped (or lost and acquired again) while the read was in flight.
            _ => return self.maybe_stopped(b),
        }
        for (id, placement) in nodes {
            self.nodes.insert(id, placement);
            self.run.or_free(id);
            self.dirty.insert(id);
        }
        for (id, to) in delegations {
            // An unreadable delegation is taken back like one that names nobody.
            let to = to.unwrap_or_default();
            self.run.insert(id, Run::Delegated { to });
            self.dirty.insert(id);
        }
        let early: Vec<NodeId> = self
            .early
            .keys()
            .filter(|id| Bucket::of(id) == b)
            .copied()
            .collect();
        let mut fx = Vec::new();
        for id in early {
            match self.early.remove(&id) {
                Some((Some(placement), rev)) => {
                    self.node_put(id, placement, rev);
                }
                Some((None, rev)) => fx.extend(self.node_deleted(id, rev)),
                None => {}
            }
        }
        fx
    }

    /// The bucket table stops these buckets (lost to placement, or their keys lost): stop
    /// their nodes; each bucket is reported stopped once none of them runs here.
    pub fn bucket_stop(&mut self, buckets: &[Bucket]) -> Vec<NodeEffect> {
        let mut fx = Vec::new();
        let mut to_stop = Vec::new();
        for b in buckets {
            let Some(h) = self.held.get_mut(b) else {
                continue;
            };
            h.phase = BucketPhase::Stopping;
            for id in self.run.ids_of(*b) {
                if let Some(Run::Here { started, stopping }) = self.run.get(&id).cloned() {
                    if stopping.is_none() {
                        to_stop.push(id);
                    }
                    self.run.insert(
                        id,
                        Run::Here {
                            started,
                            stopping: Some(None),
                        },
                    );
                }
            }
        }
        if !to_stop.is_empty() {
            fx.push(NodeEffect::Stop(to_stop));
        }
        for b in buckets {
            fx.extend(self.maybe_stopped(*b));
        }
        fx
    }

    /// `b`'s records read again at `read_rev` (after a lost watch, which may have missed
    /// changes): placement inputs are renewed, and nodes no longer there are deleted.
    pub fn bucket_reread(
        &mut self,
        b: Bucket,
        token: FenceToken,
        read_rev: i64,
        nodes: Vec<(NodeId, Placement)>,
    ) -> Vec<NodeEffect> {
        match self.held.get_mut(&b) {
            Some(h) if h.token == token && h.phase == BucketPhase::Running => {
                h.read_rev = h.read_rev.max(read_rev);
            }
            _ => return Vec::new(),
        }
        let present: HashSet<NodeId> = nodes.iter().map(|(id, _)| *id).collect();
        for (id, placement) in nodes {
            self.nodes.insert(id, placement);
            self.run.or_free(id);
            self.dirty.insert(id);
        }
        let gone: Vec<NodeId> = self
            .run
            .ids_of(b)
            .into_iter()
            .filter(|id| !present.contains(id))
            .collect();
        let mut fx = Vec::new();
        for id in gone {
            fx.extend(self.deleted(id));
        }
        fx
    }

    /// The token `b` is held under here, if it is.
    pub fn held_token(&self, b: Bucket) -> Option<FenceToken> {
        self.held.get(&b).map(|h| h.token)
    }

    /// Whether `b` is held with `token` and its records have been read.
    pub fn is_running(&self, b: Bucket, token: FenceToken) -> bool {
        self.held
            .get(&b)
            .is_some_and(|h| h.token == token && h.phase == BucketPhase::Running)
    }

    /// Whether a read at `read_rev` of the bucket of `id` has `id` older than the watch does:
    /// the watch brought a change of it above `read_rev` while the read was in flight (etcd
    /// answered the read before the change, and the change's event came before the answer).
    /// Its actor must not start from the read's records: it would start from the older spec,
    /// and the change, delivered while nothing ran to take it, would be lost (a power request
    /// accepted during a takeover's reads was never carried out). Asked before
    /// [`BucketNodes::bucket_read`], which applies that news to placement.
    pub fn overtaken(&self, id: &NodeId, read_rev: i64) -> bool {
        self.early
            .get(id)
            .is_some_and(|(news, rev)| news.is_some() && *rev > read_rev)
    }

    /// Whether a read of `b` for `token` is still wanted (`again`: a re-read of a running
    /// bucket; otherwise its first read).
    pub fn wants_read(&self, b: Bucket, token: FenceToken, again: bool) -> bool {
        let phase = if again {
            BucketPhase::Running
        } else {
            BucketPhase::Reading
        };
        self.held
            .get(&b)
            .is_some_and(|h| h.token == token && h.phase == phase)
    }

    /// The held buckets whose records have been read, with their tokens.
    pub fn running_buckets(&self) -> Vec<(Bucket, FenceToken)> {
        self.held
            .iter()
            .filter(|(_, h)| h.phase == BucketPhase::Running)
            .map(|(b, h)| (*b, h.token))
            .collect()
    }

    /// Whether news of `id` at `mod_rev` is newer than its bucket's read. News of a bucket
    /// being read is kept for its read (`news` is then false).
    fn news(&mut self, id: &NodeId, mod_rev: i64, placement: Option<&Placement>) -> bool {
        match self.held.get(&Bucket::of(id)) {
            Some(h) if h.phase == BucketPhase::Running => mod_rev > h.read_rev,
            Some(h) if h.phase == BucketPhase::Reading => {
                let e = self.early.entry(*id).or_insert((None, 0));
                if mod_rev >= e.1 {
                    *e = (placement.cloned(), mod_rev);
                }
                false
            }
            _ => false,
        }
    }

    /// A node of a held bucket was created or its spec changed at `mod_rev` (news older than
    /// the bucket's read is ignored). Whether it was taken now (its bucket runs here, and the
    /// news is newer than the bucket's read).
    pub fn node_put(
        &mut self,
        id: NodeId,
        placement: Result<(String, String), String>,
        mod_rev: i64,
    ) -> bool {
        if !self.news(&id, mod_rev, Some(&placement)) {
            return false;
        }
        self.nodes.insert(id, placement);
        self.run.or_free(id);
        self.dirty.insert(id);
        true
    }

    /// A node of a held bucket was deleted at `mod_rev`: its actor stops, and its delegation,
    /// if any, goes with the node's other records.
    pub fn node_deleted(&mut self, id: NodeId, mod_rev: i64) -> Vec<NodeEffect> {
        if !self.news(&id, mod_rev, None) {
            return Vec::new();
        }
        self.deleted(id)
    }

    fn deleted(&mut self, id: NodeId) -> Vec<NodeEffect> {
        self.nodes.remove(&id);
        match self.run.get(&id).cloned() {
            Some(Run::Here { started, stopping }) => {
                self.run.insert(
                    id,
                    Run::Here {
                        started,
                        stopping: Some(None),
                    },
                );
                if stopping.is_none() {
                    return vec![NodeEffect::Stop(vec![id])];
                }
            }
            Some(Run::Changing { .. }) => {}
            Some(_) => {
                self.run.remove(&id);
            }
            None => {}
        }
        Vec::new()
    }

    /// A node's reservation was deleted at `mod_rev` (a delegate let it go).
    pub fn reservation_deleted(&mut self, id: NodeId, mod_rev: i64) {
        if !self.run.contains(&id) {
            return;
        }
        let rev = self.reservation_deleted.entry(id).or_insert(mod_rev);
        *rev = (*rev).max(mod_rev);
        if matches!(self.run.get(&id), Some(Run::Reclaiming { refused_at }) if mod_rev > *refused_at)
        {
            self.dirty.insert(id);
        }
    }

    /// The delegation changes of one batch came back: `answered_at` is the batch's revision,
    /// `made` whether each change was made (None: the batch failed as a whole; each node is
    /// looked at again on the next pass).
    pub fn delegated(
        &mut self,
        changes: &[Delegate],
        made: Option<Vec<bool>>,
        answered_at: i64,
    ) -> Vec<NodeEffect> {
        let mut fx = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let Some(Run::Changing { to, from }) = self.run.get(&c.id).cloned() else {
                continue;
            };
            let ok = made.as_ref().map(|m| m.get(i).copied().unwrap_or(false));
            let next = match (ok, to) {
                // Failed as a whole: where it was before, looked at again.
                (None, _) => match from {
                    Some(from) => Run::Delegated { to: from },
                    None => Run::Free,
                },
                (Some(true), Some(to)) => Run::Delegated { to },
                (Some(true), None) => Run::Free,
                // Handing on refused: the bucket is no longer ours (its loss is on its way).
                (Some(false), Some(_)) => match from {
                    Some(from) => Run::Delegated { to: from },
                    None => Run::Free,
                },
                // Taking back refused: a delegate still holds the node's reservation.
                (Some(false), None) => {
                    if self
                        .reservation_deleted
                        .get(&c.id)
                        .is_some_and(|rev| *rev > answered_at)
                    {
                        Run::Delegated { to: String::new() }
                    } else {
                        Run::Reclaiming {
                            refused_at: answered_at,
                        }
                    }
                }
            };
            self.run.insert(c.id, next);
            self.dirty.insert(c.id);
        }
        for b in changes
            .iter()
            .map(|c| Bucket::of(&c.id))
            .collect::<HashSet<_>>()
        {
            fx.extend(self.maybe_stopped(b));
        }
        fx
    }

    /// The supervisor reports the actor of `id` running with `token`.
    pub fn actor_started(&mut self, id: NodeId, token: FenceToken) {
        if self.token_of(&id) != Some(token) {
            return;
        }
        if let Some(Run::Here {
            started: false,
            stopping,
        }) = self.run.get(&id).cloned()
        {
            self.run.insert(
                id,
                Run::Here {
                    started: true,
                    stopping,
                },
            );
        }
    }

    /// The supervisor reports the actor of `id` (bucket token `token`) ended, for `reason`.
    pub fn actor_stopped(
        &mut self,
        id: NodeId,
        token: FenceToken,
        reason: &str,
    ) -> Vec<NodeEffect> {
        if self.token_of(&id) != Some(token) {
            return Vec::new();
        }
        let Some(Run::Here { stopping, .. }) = self.run.get(&id).cloned() else {
            return Vec::new();
        };
        let next = match stopping {
            Some(then) => match then {
                Some(to) if self.follows(&id) => {
                    self.run.insert(
                        id,
                        Run::Changing {
                            to: Some(to.clone()),
                            from: None,
                        },
                    );
                    let token = self.held[&Bucket::of(&id)].token;
                    return vec![NodeEffect::Delegate(vec![Delegate {
                        id,
                        token,
                        to: Some(to),
                    }])];
                }
                _ if !self.nodes.contains(&id) => None,
                _ => Some(Run::Free),
            },
            // Fenced: a delegate holds the node's reservation (or the bucket is lost, which
            // the bucket table learns from its watch). Take it back as from a delegation that
            // names nobody: refused while the reservation is there, then wait for it to go.
            None if reason == REASON_FENCED => Some(Run::Delegated { to: String::new() }),
            None => {
                tracing::error!(node = %id, reason, "node actor ended on its own; keeping the node");
                Some(Run::GaveUp)
            }
        };
        match next {
            Some(r) => {
                self.run.insert(id, r);
            }
            None => {
                self.run.remove(&id);
            }
        }
        self.dirty.insert(id);
        self.maybe_stopped(Bucket::of(&id))
    }

    /// One pass: starts, stops, hands on and takes back what placement says.
    pub fn decide(&mut self) -> Vec<NodeEffect> {
        let ids: Vec<NodeId> = if std::mem::take(&mut self.dirty_all) {
            self.dirty.clear();
            self.run.ids()
        } else {
            self.dirty.drain().collect()
        };
        let mut fx = Vec::new();
        let mut to_stop = Vec::new();
        let mut changes = Vec::new();
        let mut eligible = Eligible::default();
        for id in ids {
            let Some(h) = self.held.get(&Bucket::of(&id)) else {
                self.run.remove(&id);
                continue;
            };
            if h.phase != BucketPhase::Running {
                continue;
            }
            let token = h.token;
            let Some(run) = self.run.get(&id).cloned() else {
                continue;
            };
            // Who should own it: None here, or the delegate's name.
            let target =
                match self
                    .nodes
                    .owner_where_not(&id, &self.me, &self.members, &mut eligible)
                {
                    Some(t) => t,
                    // Unknown node (deleted): nothing to start or hand on; what runs or changes
                    // finishes first.
                    None => {
                        if !matches!(run, Run::Here { .. } | Run::Changing { .. }) {
                            self.run.remove(&id);
                        }
                        continue;
                    }
                };
            let mut change = |run: &mut Runs, to: Option<String>, from: Option<String>| {
                run.insert(
                    id,
                    Run::Changing {
                        to: to.clone(),
                        from,
                    },
                );
                changes.push(Delegate { id, token, to });
            };
            match (run, target) {
                (Run::Free, None) => {
                    self.run.insert(
                        id,
                        Run::Here {
                            started: false,
                            stopping: None,
                        },
                    );
                    fx.push(NodeEffect::Start { id, token });
                }
                (Run::Free, Some(w)) => change(&mut self.run, Some(w), None),
                (
                    Run::Here {
                        stopping: None,
                        started,
                    },
                    Some(w),
                ) => {
                    self.run.insert(
                        id,
                        Run::Here {
                            started,
                            stopping: Some(Some(w)),
                        },
                    );
                    to_stop.push(id);
                }
                (Run::Delegated { to }, Some(w)) if to != w => {
                    change(&mut self.run, Some(w), Some(to))
                }
                // Take it back: first name nobody, so that the delegate lets it go.
                (Run::Delegated { to }, None) if !to.is_empty() => {
                    change(&mut self.run, Some(String::new()), Some(to))
                }
                (Run::Delegated { to }, None) => change(&mut self.run, None, Some(to)),
                (Run::Reclaiming { refused_at }, None)
                    if self
                        .reservation_deleted
                        .get(&id)
                        .is_some_and(|rev| *rev > refused_at) =>
                {
                    change(&mut self.run, None, Some(String::new()));
                }
                (Run::Reclaiming { .. }, Some(w)) => {
                    change(&mut self.run, Some(w), Some(String::new()))
                }
                _ => {}
            }
        }
        if !to_stop.is_empty() {
            tracing::info!(
                count = to_stop.len(),
                "handing nodes on to conductors that serve them"
            );
            fx.push(NodeEffect::Stop(to_stop));
        }
        if !changes.is_empty() {
            fx.push(NodeEffect::Delegate(changes));
        }
        fx
    }

    fn token_of(&self, id: &NodeId) -> Option<FenceToken> {
        self.held.get(&Bucket::of(id)).map(|h| h.token)
    }

    /// Reports `b` stopped when it is being stopped and nothing of it runs or changes here.
    fn maybe_stopped(&mut self, b: Bucket) -> Vec<NodeEffect> {
        let Some(h) = self.held.get(&b) else {
            return Vec::new();
        };
        if h.phase != BucketPhase::Stopping {
            return Vec::new();
        }
        if self.run.busy_in(b) {
            return Vec::new();
        }
        let token = h.token;
        self.held.remove(&b);
        for id in self.run.remove_bucket(b) {
            self.nodes.remove(&id);
            self.reservation_deleted.remove(&id);
        }
        self.early.retain(|id, _| Bucket::of(id) != b);
        vec![NodeEffect::BucketStopped(b, token)]
    }
}

#[cfg(test)]
mod tests;

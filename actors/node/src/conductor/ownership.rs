//! The conductor's ownership table, pure (no etcd, no actors, no I/O): which units (buckets, or
//! nodes handed on to this conductor) placement gives this conductor (desired), which it holds
//! (key and fencing token), which run and which are being stopped (observed), and the
//! transitions on every input. Each transition returns the `Effect`s the session executes;
//! their results come back as inputs.
//!
//! Invariant: a unit changes hands without ever having two owners. A unit lost to placement is
//! first stopped (`Effect::Stop`), and its key is released (`Effect::Release`) only after it
//! reported stopped; a unit is acquired only while no one else holds it, and it starts
//! (`Effect::Start`) only after the key is ours.

#[cfg(test)]
use super::placement_index::Eligible;
use super::placement_index::PlacementIndex;
use crate::supervisor::REASON_FENCED;
use ferric_model::{Bucket, ConductorRecord, FenceToken, NodeId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// What a table owns through keys of its own: buckets (`buckets/<bucket>`), or nodes
/// (`reservations/<uuid>`, a delegate's).
pub trait Unit: Copy + Eq + Hash + Ord + Debug + Display {
    /// The fencing token of this kind's key created at `create_rev`.
    fn token(create_rev: i64) -> FenceToken;
    /// A byte that spreads units over the periodic look's slices.
    fn slice_byte(&self) -> u8;
}

impl Unit for NodeId {
    fn token(create_rev: i64) -> FenceToken {
        FenceToken(create_rev)
    }
    fn slice_byte(&self) -> u8 {
        self.as_bytes()[15]
    }
}

impl Unit for Bucket {
    fn token(create_rev: i64) -> FenceToken {
        FenceToken::bucket(create_rev)
    }
    fn slice_byte(&self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

/// The units a table knows and which of them placement gives this conductor.
pub trait Units<K>: Default + Debug {
    /// What one placement pass may compute once and reuse.
    type Cache: Default;
    fn ids(&self) -> Vec<K>;
    fn len(&self) -> usize;
    fn wants(
        &self,
        k: &K,
        me: &str,
        members: &BTreeMap<String, ConductorRecord>,
        cache: &mut Self::Cache,
    ) -> bool;
    /// The unit no longer exists (an acquisition found it gone).
    fn gone(&mut self, k: &K);
}

#[cfg(test)]
impl Units<NodeId> for PlacementIndex {
    type Cache = Eligible;
    fn ids(&self) -> Vec<NodeId> {
        PlacementIndex::ids(self).copied().collect()
    }
    fn len(&self) -> usize {
        PlacementIndex::len(self)
    }
    fn wants(
        &self,
        k: &NodeId,
        me: &str,
        members: &BTreeMap<String, ConductorRecord>,
        cache: &mut Eligible,
    ) -> bool {
        self.owner_cached(k, members, cache) == Some(me)
    }
    fn gone(&mut self, k: &NodeId) {
        self.remove(k);
    }
}

/// Live members of an older build, which reserve nodes one by one without looking at buckets
/// (`ConductorRecord::buckets`). While one is live this conductor holds no bucket and no
/// handed-on node: the older ones serve the fleet, and the upgrade goes on once the last of
/// them has left (`deploy/GUIDE.md`, section 5).
pub fn older_members(members: &BTreeMap<String, ConductorRecord>) -> Vec<&str> {
    members
        .values()
        .filter(|c| !c.buckets)
        .map(|c| c.name.as_str())
        .collect()
}

/// Whether some live member is of an older build (see [`older_members`]).
fn mixed(members: &BTreeMap<String, ConductorRecord>) -> bool {
    members.values().any(|c| !c.buckets)
}

/// Every bucket; this conductor wants those that rendezvous over all live members gives it.
#[derive(Debug, Default)]
pub struct AllBuckets;

impl Units<Bucket> for AllBuckets {
    type Cache = ();
    fn ids(&self) -> Vec<Bucket> {
        Bucket::all().collect()
    }
    fn len(&self) -> usize {
        Bucket::COUNT as usize
    }
    fn wants(
        &self,
        k: &Bucket,
        me: &str,
        members: &BTreeMap<String, ConductorRecord>,
        _: &mut (),
    ) -> bool {
        !mixed(members)
            && ferric_cluster::placement::bucket_owner(*k, members.keys().map(String::as_str))
                == Some(me)
    }
    fn gone(&mut self, _: &Bucket) {}
}

/// The nodes whose delegation names this conductor: it reserves each of them itself (a bucket's
/// holder handed them on), and lets each go when its delegation names someone else.
#[derive(Debug, Default)]
pub struct Delegations(HashSet<NodeId>);

impl Delegations {
    /// A delegation of `id` now names `to` (None: deleted).
    pub fn set(&mut self, id: NodeId, to_me: bool) {
        if to_me {
            self.0.insert(id);
        } else {
            self.0.remove(&id);
        }
    }
}

impl Units<NodeId> for Delegations {
    type Cache = ();
    fn ids(&self) -> Vec<NodeId> {
        self.0.iter().copied().collect()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn wants(
        &self,
        k: &NodeId,
        _: &str,
        members: &BTreeMap<String, ConductorRecord>,
        _: &mut (),
    ) -> bool {
        self.0.contains(k) && !mixed(members)
    }
    fn gone(&mut self, k: &NodeId) {
        self.0.remove(k);
    }
}

/// A key held by a conductor, as a snapshot lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKey<K> {
    pub id: K,
    pub create_rev: i64,
    pub lease: i64,
}

/// After registering, a conductor waits this long (at most, and never more than a quarter of
/// its TTL) before reserving anything, and restarts the wait when another conductor joins
/// meanwhile. Conductors started together then see each other before placing, instead of the
/// first one reserving every node and handing two thirds of them over a moment later.
const JOIN_GRACE: Duration = Duration::from_millis(400);

/// Nodes looked at per periodic tick at most (see [`Ownership::sweep_tick`]).
pub const SWEEP_SLICE: usize = 50_000;

/// The join grace of a conductor whose lease lives `ttl`.
pub fn join_grace(ttl: Duration) -> Duration {
    JOIN_GRACE.min(ttl / 4)
}

/// What the session must do for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<K = NodeId> {
    /// Start the unit with this fencing token (the key is ours).
    Start { id: K, token: FenceToken },
    /// Stop these units, each node after its in-flight operation; every end comes back as
    /// `actor_stopped`.
    Stop(Vec<K>),
    /// Acquire these units in one batch on this session's lease; the result comes back as
    /// `acquired`.
    Acquire(Vec<K>),
    /// Delete these keys: each unit has reported stopped. A failure comes back as
    /// `release_failed`.
    Release(Vec<(K, FenceToken)>),
}

/// The outcome of reserving one node, as the table needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Acquired(FenceToken),
    /// Someone holds it: `lease` is the holder's lease, `seen_at` the revision at which the
    /// reserving transaction saw it held.
    Held {
        lease: i64,
        create_rev: i64,
        seen_at: i64,
    },
    /// The node no longer exists.
    Gone,
    /// Not this conductor's to take now (a node whose delegation does not name it): looked at
    /// again on the next pass.
    Refused,
}

/// A change of a reservation key, as the watch delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Put { create_rev: i64, lease: i64 },
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Asked to stop; `release` says whether the reservation is deleted afterwards.
    Stopping {
        release: bool,
    },
}

/// A node whose reservation this conductor holds.
#[derive(Debug)]
struct Mine {
    token: FenceToken,
    phase: Phase,
    /// The supervisor reported the actor running.
    started: bool,
}

#[derive(Debug)]
pub struct Ownership<K: Unit = NodeId, U: Units<K> = PlacementIndex> {
    me: String,
    /// This session's lease: reservations on it are ours.
    lease: i64,
    join_grace: Duration,
    acquire_parallel: usize,
    /// The conductor's own keepalives are slow to be acknowledged: one batch at a time (see
    /// [`Ownership::set_etcd_strained`]).
    strained: bool,
    /// etcd refused or did not answer the last keepalive: no new batch (see
    /// [`Ownership::set_etcd_behind`]).
    behind: bool,
    /// Batches allowed in flight otherwise: `acquire_parallel`, or fewer while it grows back
    /// (by one per answered batch) after etcd was behind.
    window: usize,
    batch: usize,
    members: BTreeMap<String, ConductorRecord>,
    nodes: U,
    /// Reservations held by anyone but this session, with the revision they were seen at: a
    /// delete at a later revision frees them.
    others: HashMap<K, i64>,
    /// Deletes the watch delivered for nodes whose reservation was in flight, newest revision
    /// each: the reservation's reply may have seen the key held before that delete (the watch
    /// can overtake the reply), and then it is free again.
    deleted_while_acquiring: HashMap<K, i64>,
    mine: HashMap<K, Mine>,
    acquiring: HashSet<K>,
    acquire_queue: VecDeque<Vec<K>>,
    acquire_in_flight: usize,
    /// A batch smaller than `batch` is in flight (see [`Ownership::pump`]).
    partial_in_flight: bool,
    releasing: Vec<(K, FenceToken)>,
    dirty_all: bool,
    dirty: HashSet<K>,
    /// No reservations before this instant (see `JOIN_GRACE`).
    hold_until: Option<Instant>,
    /// Actors reported running.
    running: u64,
}

impl<K: Unit, U: Units<K>> Ownership<K, U> {
    /// `batch`: nodes per reservation batch; `acquire_parallel`: batches in flight at once.
    pub fn new(me: &str, join_grace: Duration, acquire_parallel: usize, batch: usize) -> Self {
        Ownership {
            me: me.to_string(),
            lease: 0,
            join_grace,
            acquire_parallel: acquire_parallel.max(1),
            strained: false,
            behind: false,
            window: acquire_parallel.max(1),
            batch: batch.max(1),
            members: BTreeMap::new(),
            nodes: U::default(),
            others: HashMap::new(),
            deleted_while_acquiring: HashMap::new(),
            mine: HashMap::new(),
            acquiring: HashSet::new(),
            acquire_queue: VecDeque::new(),
            acquire_in_flight: 0,
            partial_in_flight: false,
            releasing: Vec::new(),
            dirty_all: true,
            dirty: HashSet::new(),
            hold_until: None,
            running: 0,
        }
    }

    /// The session's lease, once granted.
    pub fn set_lease(&mut self, lease: i64) {
        self.lease = lease;
    }

    /// Holds every reservation for the join grace from `now` (a session's start).
    pub fn hold(&mut self, now: Instant) {
        self.hold_until = Some(now + self.join_grace);
    }

    /// Until when reservations are held back, if they are.
    pub fn hold_until(&self) -> Option<Instant> {
        self.hold_until
    }

    /// The join grace may have ended.
    pub fn grace_elapsed(&mut self, now: Instant) {
        if self.hold_until.is_some_and(|t| t <= now) {
            self.hold_until = None;
            self.dirty_all = true;
        }
    }

    /// Look at every node again on the next pass.
    #[cfg(test)]
    pub fn mark_all_dirty(&mut self) {
        self.dirty_all = true;
    }

    /// The periodic look behind the watches, tick number `tick`: every node when the fleet is
    /// at most [`SWEEP_SLICE`] nodes, else one slice of about that many (by the id's last
    /// byte), so that a whole pass spreads over several ticks. A pass costs a rendezvous
    /// weight per node and member: at a million nodes and ten conductors, every node at every
    /// 5 s tick took all of each conductor's CPU and cold start never ended (issue 17).
    pub fn sweep_tick(&mut self, tick: u64) {
        let slices = self.nodes.len().div_ceil(SWEEP_SLICE).clamp(1, 256);
        if slices == 1 {
            self.dirty_all = true;
            return;
        }
        let slice = (tick % slices as u64) as usize;
        let in_slice = |id: &K| usize::from(id.slice_byte()) % slices == slice;
        let ids: Vec<K> = self
            .nodes
            .ids()
            .into_iter()
            .chain(self.mine.keys().copied())
            .filter(|id| in_slice(id))
            .collect();
        self.dirty.extend(ids);
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The live conductors, by name.
    pub fn member_map(&self) -> &BTreeMap<String, ConductorRecord> {
        &self.members
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Node actors reported running.
    pub fn running(&self) -> u64 {
        self.running
    }

    /// Reservations this session holds.
    pub fn held(&self) -> usize {
        self.mine.len()
    }

    /// Every reserved node runs and no reservation is pending: a start-up or failover is done.
    pub fn steady(&self) -> bool {
        self.running as usize == self.mine.len()
            && self.acquire_queue.is_empty()
            && self.acquire_in_flight == 0
    }

    /// Whether `id`'s actor runs here and is not being stopped (it gets the node's updates).
    pub fn runs(&self, id: &K) -> bool {
        self.mine.get(id).is_some_and(|m| m.phase == Phase::Running)
    }

    /// The nodes whose actors run here and are not being stopped.
    pub fn running_ids(&self) -> impl Iterator<Item = K> + '_ {
        self.mine
            .iter()
            .filter(|(_, m)| m.phase == Phase::Running)
            .map(|(id, _)| *id)
    }

    /// A consistent read of the cluster at one revision replaces members, units and other
    /// conductors' keys. Keys on our lease that we did not know are adopted; ours that are
    /// gone are lost (they stop, nothing to release).
    pub fn resync(
        &mut self,
        conductors: Vec<ConductorRecord>,
        units: U,
        held: Vec<HeldKey<K>>,
    ) -> Vec<Effect<K>> {
        let mut fx = Vec::new();
        self.members = conductors
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        self.nodes = units;
        self.others.clear();
        let mut seen_mine = HashSet::new();
        for r in held {
            match self.mine.get(&r.id) {
                Some(m) if m.token.revision() == r.create_rev => {
                    seen_mine.insert(r.id);
                }
                _ if r.lease == self.lease => {
                    // Adopted now, so not lost below (which would stop the actor just started).
                    if !self.mine.contains_key(&r.id) {
                        seen_mine.insert(r.id);
                    }
                    self.adopt(r.id, K::token(r.create_rev), &mut fx);
                }
                _ => {
                    self.others.insert(r.id, r.create_rev);
                }
            }
        }
        let lost: Vec<K> = self
            .mine
            .keys()
            .filter(|id| !seen_mine.contains(id))
            .copied()
            .collect();
        for id in lost {
            self.lost(id, &mut fx);
        }
        self.deleted_while_acquiring.clear();
        self.dirty_all = true;
        fx
    }

    /// A conductor's record was written. A conductor rewrites its record to report its running
    /// actors; only a new member or a change of what it serves moves nodes.
    pub fn conductor_put(&mut self, rec: ConductorRecord, now: Instant) {
        let placement_changed = self.members.get(&rec.name).is_none_or(|old| {
            old.lease_id != rec.lease_id
                || old.drivers != rec.drivers
                || old.conductor_group != rec.conductor_group
                || old.buckets != rec.buckets
        });
        if placement_changed {
            tracing::info!(conductor = %rec.name, "conductor joined");
            if self.hold_until.is_some() {
                self.hold_until = Some(now + self.join_grace);
            }
            self.dirty_all = true;
        }
        self.members.insert(rec.name.clone(), rec);
    }

    /// Another conductor left (its record expired with its lease, or it was evicted).
    pub fn conductor_left(&mut self, name: &str) {
        tracing::info!(conductor = %name, "conductor left");
        self.members.remove(name);
        self.dirty_all = true;
    }

    /// The known units, to change; every unit changed must be [`Ownership::touch`]ed.
    pub fn units_mut(&mut self) -> &mut U {
        &mut self.nodes
    }

    /// Look at `id` again on the next pass (its placement inputs changed).
    pub fn touch(&mut self, id: K) {
        self.dirty.insert(id);
    }

    /// An acquisition of `id` is in flight.
    pub fn is_acquiring(&self, id: &K) -> bool {
        self.acquiring.contains(id)
    }

    /// A reservation key changed at `mod_rev` (`id` None: a key that names no node). The
    /// session's watch delivers deletes only; a put, where one is delivered, is understood too.
    pub fn reservation(
        &mut self,
        id: Option<K>,
        mod_rev: i64,
        change: Reservation,
    ) -> Vec<Effect<K>> {
        let mut fx = Vec::new();
        let Some(id) = id else { return fx };
        match change {
            Reservation::Put { create_rev, lease } => {
                if self
                    .mine
                    .get(&id)
                    .is_some_and(|m| m.token.revision() == create_rev)
                {
                    return fx;
                }
                if lease == self.lease {
                    // Our own batch: its reply (with the records read in the same Txn) is on its
                    // way, or was lost, in which case the retry finds it held by our lease.
                    if !self.mine.contains_key(&id) && !self.acquiring.contains(&id) {
                        self.adopt(id, K::token(create_rev), &mut fx);
                    }
                    return fx;
                }
                self.others.insert(id, create_rev);
            }
            Reservation::Delete => {
                if self.acquiring.contains(&id) {
                    let rev = self.deleted_while_acquiring.entry(id).or_insert(mod_rev);
                    *rev = (*rev).max(mod_rev);
                }
                if self
                    .mine
                    .get(&id)
                    .is_some_and(|m| mod_rev > m.token.revision())
                {
                    self.lost(id, &mut fx);
                }
                if self.others.get(&id).is_some_and(|rev| mod_rev >= *rev) {
                    self.others.remove(&id);
                }
                self.dirty.insert(id);
            }
        }
        fx
    }

    /// The supervisor reports the actor of `id` (reservation `token`) running.
    pub fn actor_started(&mut self, id: K, token: FenceToken) {
        if let Some(m) = self.mine.get_mut(&id) {
            if m.token == token && !m.started {
                m.started = true;
                self.running += 1;
            }
        }
    }

    /// The supervisor reports the actor of `id` (reservation `token`) ended, for `reason`.
    pub fn actor_stopped(&mut self, id: K, token: FenceToken, reason: &str) {
        let Some(m) = self.mine.get(&id) else { return };
        if m.token != token {
            return;
        }
        let was_started = m.started;
        match m.phase {
            Phase::Stopping { release: true } => self.releasing.push((id, token)),
            Phase::Stopping { release: false } => {}
            Phase::Running if reason == REASON_FENCED => {}
            Phase::Running => {
                // Gave up after crashes: keep the reservation so that no other conductor is
                // dragged into the same crash loop; the status says why.
                tracing::error!(node = %id, reason, "node actor ended on its own; keeping the reservation");
                if let Some(m) = self.mine.get_mut(&id) {
                    if std::mem::take(&mut m.started) {
                        self.running -= 1;
                    }
                }
                return;
            }
        }
        self.mine.remove(&id);
        if was_started {
            self.running -= 1;
        }
        self.dirty.insert(id);
    }

    /// A reservation batch came back: `None` when the whole batch failed (retried on the next
    /// pass), otherwise one outcome per node.
    pub fn acquired(&mut self, batch: &[K], outcomes: Option<Vec<(K, Acquire)>>) -> Vec<Effect<K>> {
        let mut fx = Vec::new();
        self.acquire_in_flight -= 1;
        if batch.len() < self.batch {
            self.partial_in_flight = false;
        }
        if self.acquire_in_flight == 0 && self.acquire_queue.is_empty() {
            tracing::info!(
                owned = self.mine.len() + batch.len(),
                "reservation wave done"
            );
        }
        let Some(outcomes) = outcomes else {
            for id in batch {
                self.acquiring.remove(id);
                self.deleted_while_acquiring.remove(id);
            }
            return fx;
        };
        self.window = (self.window + 1).min(self.acquire_parallel);
        for (id, outcome) in outcomes {
            self.acquiring.remove(&id);
            let deleted_at = self.deleted_while_acquiring.remove(&id);
            match outcome {
                Acquire::Acquired(token) => {
                    self.others.remove(&id);
                    self.start(id, token, &mut fx);
                }
                Acquire::Held {
                    lease,
                    create_rev,
                    seen_at,
                } => {
                    if lease == self.lease {
                        if !self.mine.contains_key(&id) {
                            // An earlier batch committed but its reply was lost.
                            self.adopt(id, K::token(create_rev), &mut fx);
                        }
                    } else if deleted_at.is_some_and(|rev| rev > seen_at) {
                        // The watch delivered the key's delete, after the Txn saw it held,
                        // before the reply came: it is free again, try again.
                        self.dirty.insert(id);
                    } else {
                        // Held since (at the latest) the Txn's revision: the delete, which comes
                        // after it, is still to come through the watch. Known held already: the
                        // revision it was seen at stays.
                        self.others.entry(id).or_insert(seen_at);
                    }
                }
                Acquire::Gone => self.nodes.gone(&id),
                Acquire::Refused => {
                    self.dirty.insert(id);
                }
            }
        }
        fx
    }

    /// Nodes of a reservation batch that failed as a whole, to try again now (the session waits
    /// a moment first, so that an unreachable etcd is not asked in a tight loop). The batch
    /// may have committed with its reply lost: the retry then finds the nodes held by this
    /// session's lease and adopts them.
    pub fn retry(&mut self, ids: Vec<K>) {
        self.dirty.extend(ids);
    }

    /// Releasing these reservations failed: they are retried on the next pass.
    pub fn release_failed(&mut self, batch: Vec<(K, FenceToken)>) {
        self.releasing.extend(batch);
    }

    /// One pass: decides which nodes to reserve and which to give up (unless the join grace
    /// holds), then starts queued reservation batches and releases.
    pub fn decide(&mut self) -> Vec<Effect<K>> {
        let mut fx = Vec::new();
        self.place(&mut fx);
        self.pump(&mut fx);
        fx
    }

    fn place(&mut self, fx: &mut Vec<Effect<K>>) {
        if self.hold_until.is_some() {
            return;
        }
        let ids: Vec<K> = if std::mem::take(&mut self.dirty_all) {
            self.dirty.clear();
            let mut ids = self.nodes.ids();
            ids.extend(self.mine.keys().copied());
            ids
        } else {
            self.dirty.drain().collect()
        };
        let mut to_stop = Vec::new();
        let mut to_acquire = Vec::new();
        let mut cache = U::Cache::default();
        for id in ids {
            let want = self.nodes.wants(&id, &self.me, &self.members, &mut cache);
            match self.mine.get_mut(&id) {
                Some(m) if m.phase == Phase::Running && !want => {
                    m.phase = Phase::Stopping { release: true };
                    to_stop.push(id);
                }
                Some(_) => {}
                None => {
                    if want && !self.others.contains_key(&id) && self.acquiring.insert(id) {
                        to_acquire.push(id);
                    }
                }
            }
        }
        if !to_stop.is_empty() {
            tracing::info!(
                count = to_stop.len(),
                "handing nodes over to their new owners"
            );
            fx.push(Effect::Stop(to_stop));
        }
        for chunk in to_acquire.chunks(self.batch) {
            self.acquire_queue.push_back(chunk.to_vec());
        }
    }

    /// etcd is slow to acknowledge this conductor's keepalives: acquire one batch at a time
    /// until it is not. A failover of thousands of nodes is a burst of large transactions on
    /// etcd; at full speed it delayed the survivors' own keepalives past their self-fencing
    /// deadline, so they fenced themselves too and the nodes moved for a minute instead of
    /// seconds (found by `ferric chaos` at 30,000 nodes). Acquiring goes on, slower.
    pub fn set_etcd_strained(&mut self, strained: bool) -> Vec<Effect<K>> {
        self.strained = strained;
        let mut fx = Vec::new();
        self.pump(&mut fx);
        fx
    }

    /// etcd refused or did not answer this conductor's last keepalive (`behind`), or has
    /// acknowledged one again. While behind, no new reservation batch goes out (those in
    /// flight finish); afterwards one, growing by one per answered batch.
    ///
    /// etcd 3.4 refuses renewals while its apply loop is more than a second behind. At a
    /// million nodes the survivors of a failover kept it behind with their reservation
    /// batches (each of 120 nodes took 100 to 300 ms to apply on two cores, and nine
    /// conductors sent one each at a time): keepalives failed for the 11 s a 15 s lease
    /// allows, every survivor fenced itself, and the failover took seven minutes. Every
    /// conductor sharing etcd sees its keepalives fail at the same moment, so they all hold
    /// back together and etcd catches up.
    pub fn set_etcd_behind(&mut self, behind: bool) -> Vec<Effect<K>> {
        if behind && !self.behind {
            self.window = 1;
        }
        self.behind = behind;
        let mut fx = Vec::new();
        self.pump(&mut fx);
        fx
    }

    /// Reservation batches allowed in flight now.
    fn acquire_limit(&self) -> usize {
        if self.behind {
            0
        } else if self.strained {
            1
        } else {
            self.window
        }
    }

    /// Starts queued reservation batches while fewer than the limit are in flight. Queued
    /// batches merge up to the batch size, and a batch that is not full waits while another
    /// is in flight: nodes that come a few at a time (enrollment) gather into a few
    /// transactions instead of one each, while a backlog (start-up, a failover) still goes
    /// out in full batches side by side.
    fn pump(&mut self, fx: &mut Vec<Effect<K>>) {
        while self.acquire_in_flight < self.acquire_limit() {
            let Some(mut batch) = self.acquire_queue.pop_front() else {
                break;
            };
            while batch.len() < self.batch {
                let Some(next) = self.acquire_queue.front_mut() else {
                    break;
                };
                let room = self.batch - batch.len();
                if next.len() <= room {
                    batch.append(next);
                    self.acquire_queue.pop_front();
                } else {
                    batch.extend(next.drain(..room));
                }
            }
            let partial = batch.len() < self.batch;
            if partial && self.partial_in_flight {
                self.acquire_queue.push_front(batch);
                break;
            }
            self.partial_in_flight |= partial;
            self.acquire_in_flight += 1;
            fx.push(Effect::Acquire(batch));
        }
        if !self.releasing.is_empty() {
            fx.push(Effect::Release(std::mem::take(&mut self.releasing)));
        }
    }

    fn start(&mut self, id: K, token: FenceToken, fx: &mut Vec<Effect<K>>) {
        self.mine.insert(
            id,
            Mine {
                token,
                phase: Phase::Running,
                started: false,
            },
        );
        fx.push(Effect::Start { id, token });
        // Placement may have moved on while the reservation was in flight.
        self.dirty.insert(id);
    }

    /// A reservation on our lease that we did not know about (a batch whose reply was lost).
    fn adopt(&mut self, id: K, token: FenceToken, fx: &mut Vec<Effect<K>>) {
        tracing::info!(unit = %id, fence = %token, "adopting a key made by this session");
        self.others.remove(&id);
        self.start(id, token, fx);
    }

    /// Our reservation of `id` is gone (deleted from outside, or our lease ended).
    fn lost(&mut self, id: K, fx: &mut Vec<Effect<K>>) {
        if let Some(m) = self.mine.get_mut(&id) {
            if m.phase == Phase::Running {
                tracing::warn!(unit = %id, fence = %m.token, "key lost; stopping");
                fx.push(Effect::Stop(vec![id]));
            }
            m.phase = Phase::Stopping { release: false };
        }
        self.dirty.insert(id);
    }
}

/// A per-node table fed by the nodes' placement inputs: how the tests drive the generic table
/// (and how conductors placed every node before buckets).
#[cfg(test)]
impl Ownership<NodeId, PlacementIndex> {
    /// [`Ownership::resync`] from a snapshot of the cluster.
    pub fn resync_snapshot(&mut self, snap: ferric_cluster::Snapshot) -> Vec<Effect> {
        let mut index = PlacementIndex::default();
        for n in snap.nodes {
            index.insert(n.id, n.placement);
        }
        let held = snap
            .reservations
            .into_iter()
            .map(|r| HeldKey {
                id: r.id,
                create_rev: r.create_rev,
                lease: r.lease,
            })
            .collect();
        self.resync(snap.conductors, index, held)
    }

    /// A node was created or its spec changed (`placement`: its driver and group, or why the
    /// spec cannot be read).
    pub fn node_put(&mut self, id: NodeId, placement: Result<(String, String), String>) {
        self.nodes.insert(id, placement);
        self.dirty.insert(id);
    }

    pub fn node_deleted(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.dirty.insert(id);
    }
}

#[cfg(test)]
mod tests;

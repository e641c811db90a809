//! Buckets and delegations (DESIGN.md, "Placement"): the keys through which most nodes are
//! owned.
//!
//! - `buckets/<bucket>` (on the holder's lease, value a [`ReservationRecord`]): its holder owns
//!   every node of the bucket that it has not handed on. Its `create_revision` is those nodes'
//!   fencing token ([`FenceToken::bucket`]). A failover moves about 4,096 / conductors keys,
//!   whatever the fleet's size.
//! - `delegations/<uuid>` (no lease, value a [`DelegationRecord`]): the bucket's holder hands
//!   the node on to the named conductor (it does not serve the node's driver or group). Written
//!   and deleted only by the bucket's holder, fenced by its bucket key. The delegate then owns
//!   the node through a reservation of its own, created only while the delegation names it
//!   ([`Cluster::acquire`]).
//!
//! A bucket is acquired with a create-if-absent, like a reservation; its records are read after
//! (`read_bucket`): whatever the previous holder delegated was written before it let the bucket
//! go, so a read after the acquisition sees it, and from then on only this holder writes the
//! bucket's delegations.

use crate::reservations::BATCH;
use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use ferric_model::{
    decode, encode, now_ms, Bucket, CodecError, DelegationRecord, FenceToken, NodeId, NodeSpec,
    NodeStatus, ReservationRecord,
};
use std::collections::{HashMap, HashSet};

/// The most buckets one read asks for ([`Cluster::read_buckets`]): four ranges each at most,
/// within etcd's default limit of 128 operations in a transaction (`--max-txn-ops`).
pub const BUCKETS_PER_READ: usize = 32;

/// One bucket's records of one kind as etcd holds them: (node, (value, `mod_revision`)).
pub type RawRecords = Vec<(NodeId, (Vec<u8>, i64))>;

/// A bucket's specs as read: (node, spec, `mod_revision`).
pub type SpecsRead = Vec<(NodeId, Result<NodeSpec, CodecError>, i64)>;

/// The records of a read's ranges of one kind, each with its node and the index of its
/// node's bucket among those asked (records of no bucket asked, or of no node, are skipped).
fn located<'r>(
    k: &crate::Keyspace,
    at: &HashMap<Bucket, usize>,
    kind: Option<&'r [etcd_client::GetResponse]>,
) -> Vec<(usize, NodeId, &'r etcd_client::KeyValue)> {
    kind.into_iter()
        .flatten()
        .flat_map(|g| g.kvs())
        .filter_map(|kv| {
            let id = k.node_id_of(kv.key())?;
            let i = *at.get(&Bucket::of(&id))?;
            Some((i, id, kv))
        })
        .collect()
}

/// A read asks for at most [`BUCKETS_PER_READ`] buckets, each once (its answer is one per bucket).
fn check_batch(buckets: &[Bucket]) -> Result<(), ClusterError> {
    if buckets.len() > BUCKETS_PER_READ {
        return Err(ClusterError::Internal(format!(
            "{} buckets asked in one read (at most {BUCKETS_PER_READ})",
            buckets.len()
        )));
    }
    if positions(buckets).len() != buckets.len() {
        return Err(ClusterError::Internal(
            "a bucket asked twice in one read".into(),
        ));
    }
    Ok(())
}

/// Where each bucket asked is in the answer.
fn positions(buckets: &[Bucket]) -> HashMap<Bucket, usize> {
    buckets.iter().enumerate().map(|(i, b)| (*b, i)).collect()
}

/// The runs of consecutive buckets among `buckets`, as (first, last), in key order.
fn bucket_runs(buckets: &[Bucket]) -> Vec<(Bucket, Bucket)> {
    let mut sorted = buckets.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut runs: Vec<(Bucket, Bucket)> = Vec::new();
    for b in sorted {
        match runs.last_mut() {
            Some((_, last)) if last.0 + 1 == b.0 => *last = b,
            _ => runs.push((b, b)),
        }
    }
    runs
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketOutcome {
    /// Ours, with this token (the key's create revision, as a bucket token).
    Acquired(FenceToken),
    /// Someone holds it (possibly a previous session of ours whose lease has not expired yet,
    /// or this very lease when an earlier reply was lost: compare `lease`).
    Held {
        holder: Option<String>,
        lease: i64,
        create_rev: i64,
        /// The revision at which the Txn saw it held.
        seen_at: i64,
    },
}

/// One node of a bucket as read with it.
#[derive(Debug)]
pub struct BucketNode {
    pub id: NodeId,
    pub spec: Result<NodeSpec, CodecError>,
    pub spec_rev: i64,
    /// None: no status written yet.
    pub status: Option<Result<NodeStatus, CodecError>>,
}

/// A per-node reservation of a delegated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldReservation {
    pub id: NodeId,
    pub holder: Option<String>,
    pub create_rev: i64,
    pub lease: i64,
}

/// Everything of one bucket, read at one revision.
#[derive(Debug)]
pub struct BucketRecords {
    pub bucket: Bucket,
    /// The revision the specs are those of: spec changes above it are news.
    pub revision: i64,
    /// The revision statuses, delegations and reservations were read at (`revision`, but
    /// for specs kept by a warm standby: see [`BucketRest::with_specs`]).
    pub status_revision: i64,
    pub nodes: Vec<BucketNode>,
    /// (node, delegate): the delegate's name, or the record's decode error as text.
    pub delegations: Vec<(NodeId, Result<String, String>)>,
    pub reservations: Vec<HeldReservation>,
}

/// A bucket's records but its specs, read at one revision.
#[derive(Debug)]
pub struct BucketRest {
    pub bucket: Bucket,
    pub revision: i64,
    pub statuses: HashMap<NodeId, Result<NodeStatus, CodecError>>,
    /// (node, delegate): the delegate's name, or the record's decode error as text.
    pub delegations: Vec<(NodeId, Result<String, String>)>,
    pub reservations: Vec<HeldReservation>,
}

impl BucketRest {
    /// The whole bucket with `specs` (id, spec, `mod_revision`) as of revision `as_of`. A node
    /// gets its status from this read; statuses of nodes not in `specs` are dropped (a node
    /// created after `as_of` whose spec the caller learns later).
    pub fn with_specs(mut self, as_of: i64, specs: SpecsRead) -> BucketRecords {
        let nodes = specs
            .into_iter()
            .map(|(id, spec, spec_rev)| BucketNode {
                id,
                spec,
                spec_rev,
                status: self.statuses.remove(&id),
            })
            .collect();
        BucketRecords {
            bucket: self.bucket,
            revision: as_of,
            status_revision: self.revision,
            nodes,
            delegations: self.delegations,
            reservations: self.reservations,
        }
    }
}

impl HeldReservation {
    /// The reservation `kv` of node `id` (no holder when its record is unreadable).
    pub(crate) fn of(id: NodeId, kv: &etcd_client::KeyValue) -> Self {
        HeldReservation {
            id,
            holder: decode::<ReservationRecord>(kv.value())
                .ok()
                .map(|r| r.conductor),
            create_rev: kv.create_revision(),
            lease: kv.lease(),
        }
    }
}

/// A change of one node's delegation by its bucket's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegate {
    pub id: NodeId,
    /// The holder's bucket token.
    pub token: FenceToken,
    /// Some: hand the node on to this conductor. None: take it back (refused while a delegate
    /// still holds the node's reservation).
    pub to: Option<String>,
}

/// Who owns which node, as etcd says at one revision: bucket holders, the nodes handed on,
/// and the delegates' reservations.
#[derive(Debug, Default)]
pub struct Owners {
    pub buckets: HashMap<Bucket, String>,
    pub delegated: HashSet<NodeId>,
    pub reserved: HashMap<NodeId, String>,
}

/// The owner of one node from its records (each the raw value, if the key exists): the holder
/// of its own reservation; nobody while it is handed on (`delegation`) and not reserved yet;
/// otherwise its bucket's holder. [`Owners::holder`] is the same rule over the whole fleet.
pub fn node_holder(
    reservation: Option<&[u8]>,
    delegation: Option<&[u8]>,
    bucket: Option<&[u8]>,
) -> Option<String> {
    let holder = |v: &[u8]| decode::<ReservationRecord>(v).ok().map(|r| r.conductor);
    match (reservation, delegation) {
        (Some(r), _) => holder(r),
        (None, Some(_)) => None,
        (None, None) => bucket.and_then(holder),
    }
}

impl Owners {
    /// The owner of `id`: the holder of its own reservation; nobody while it is handed on and
    /// not reserved yet; otherwise its bucket's holder.
    pub fn holder(&self, id: &NodeId) -> Option<&str> {
        if let Some(h) = self.reserved.get(id) {
            return Some(h);
        }
        if self.delegated.contains(id) {
            return None;
        }
        self.buckets.get(&Bucket::of(id)).map(String::as_str)
    }
}

impl Cluster {
    /// [`Owners`] at `revision` (None: now).
    pub async fn owners(&self, revision: Option<i64>) -> Result<Owners, ClusterError> {
        let k = self.keys();
        let (rev, buckets) = crate::get_prefix(self, &k.buckets(), revision, false).await?;
        let (_, delegations) = crate::get_prefix(self, &k.delegations(), Some(rev), true).await?;
        let (_, reservations) =
            crate::get_prefix(self, &k.reservations(), Some(rev), false).await?;
        let holder = |v: &[u8]| decode::<ReservationRecord>(v).ok().map(|r| r.conductor);
        Ok(Owners {
            buckets: buckets
                .iter()
                .filter_map(|kv| Some((Bucket::parse(k.leaf_of(kv.key())?)?, holder(kv.value())?)))
                .collect(),
            delegated: delegations
                .iter()
                .filter_map(|kv| k.node_id_of(kv.key()))
                .collect(),
            reserved: reservations
                .iter()
                .filter_map(|kv| Some((k.node_id_of(kv.key())?, holder(kv.value())?)))
                .collect(),
        })
    }

    /// Tries to take `buckets` on `lease` for `conductor`. Outcomes come back in input order.
    pub async fn acquire_buckets(
        &self,
        buckets: &[Bucket],
        lease: i64,
        conductor: &str,
    ) -> Result<Vec<(Bucket, BucketOutcome)>, ClusterError> {
        let value = encode(&ReservationRecord {
            conductor: conductor.to_string(),
            acquired_at_ms: now_ms(),
        });
        let mut out = Vec::with_capacity(buckets.len());
        for chunk in buckets.chunks(BATCH) {
            let ops = chunk
                .iter()
                .map(|b| {
                    let key = self.keys().bucket(*b);
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                            .and_then([
                                TxnOp::put(
                                    key.clone(),
                                    value.clone(),
                                    Some(PutOptions::new().with_lease(lease)),
                                ),
                                // The bucket's status marker: a warm standby's watch of the
                                // bucket's statuses sees it after every status written
                                // before this acquisition.
                                TxnOp::put(
                                    self.keys().status_marker(*b),
                                    value.clone(),
                                    Some(PutOptions::new().with_lease(lease)),
                                ),
                            ])
                            .or_else([TxnOp::get(key, None)]),
                    )
                })
                .collect();
            let resp = self.txn_all(ops).await?;
            // All puts of one Txn share its revision, which is each new key's create_revision.
            let revision = resp.header().map_or(0, |h| h.revision());
            for (b, op) in chunk.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Txn(t) = op else {
                    return Err(ClusterError::Internal(
                        "unexpected etcd txn response".into(),
                    ));
                };
                let outcome = if t.succeeded() {
                    BucketOutcome::Acquired(FenceToken::bucket(revision))
                } else {
                    match t.op_responses().first() {
                        Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty() => {
                            let kv = &g.kvs()[0];
                            BucketOutcome::Held {
                                holder: decode::<ReservationRecord>(kv.value())
                                    .ok()
                                    .map(|r| r.conductor),
                                lease: kv.lease(),
                                create_rev: kv.create_revision(),
                                seen_at: revision,
                            }
                        }
                        // Deleted between the compare and the get cannot happen in one Txn;
                        // treat it as held by nobody known, seen now: the watch frees it.
                        _ => BucketOutcome::Held {
                            holder: None,
                            lease: 0,
                            create_rev: 0,
                            seen_at: revision,
                        },
                    }
                };
                out.push((*b, outcome));
            }
        }
        Ok(out)
    }

    /// Lets buckets go (each one's nodes have stopped here). A bucket whose token no longer
    /// matches (its lease expired and someone else took it) is left alone. Returns how many
    /// were released.
    pub async fn release_buckets(
        &self,
        held: &[(Bucket, FenceToken)],
    ) -> Result<usize, ClusterError> {
        let keys = held
            .iter()
            .map(|(b, token)| (self.keys().bucket(*b), token.revision()))
            .collect();
        self.release_keys(keys).await
    }

    /// Reads one bucket's specs, statuses, delegations and reservations at one revision.
    pub async fn read_bucket(&self, bucket: Bucket) -> Result<BucketRecords, ClusterError> {
        let mut read = self.read_buckets(&[bucket]).await?;
        read.pop()
            .ok_or_else(|| ClusterError::Internal("empty bucket read".into()))
    }

    /// Reads the records of up to [`BUCKETS_PER_READ`] distinct buckets, all at one revision,
    /// in one transaction; one answer per bucket, in the order asked. A run of consecutive
    /// buckets is one range per kind of record, so a small fleet's buckets cost a few ranges,
    /// not four each (a conductor taking over all 4,096 buckets of 20 nodes read them one
    /// transaction per bucket for 3.5 s in a debug build).
    pub async fn read_buckets(
        &self,
        buckets: &[Bucket],
    ) -> Result<Vec<BucketRecords>, ClusterError> {
        let (revision, parts) = self.read_bucket_parts(buckets, true, true).await?;
        Ok(parts
            .into_iter()
            .map(|(specs, rest)| rest.with_specs(revision, specs))
            .collect())
    }

    /// Like [`Cluster::read_buckets`], but not the specs: for a takeover that has the buckets'
    /// specs already (a warm standby's). `statuses: false` leaves the statuses out too (the
    /// standby has them as well): delegations and reservations only.
    pub async fn read_buckets_without_specs(
        &self,
        buckets: &[Bucket],
        statuses: bool,
    ) -> Result<Vec<BucketRest>, ClusterError> {
        let (_, parts) = self.read_bucket_parts(buckets, false, statuses).await?;
        Ok(parts.into_iter().map(|(_, rest)| rest).collect())
    }

    /// The specs and statuses of up to [`BUCKETS_PER_READ`] buckets as etcd holds them (raw,
    /// with their `mod_revision`), one pair of lists per bucket in the order asked, and the
    /// revision of the read (one transaction, a range per run of consecutive buckets). Status
    /// markers ([`crate::Keyspace::status_marker`]) are not nodes and are left out.
    pub async fn read_buckets_specs(
        &self,
        buckets: &[Bucket],
    ) -> Result<(i64, Vec<(RawRecords, RawRecords)>), ClusterError> {
        let k = self.keys();
        let (revision, kinds) = self.read_runs(buckets, &[k.nodes(), k.statuses()]).await?;
        let at = positions(buckets);
        let mut out = vec![(Vec::new(), Vec::new()); buckets.len()];
        for (i, id, kv) in located(k, &at, kinds.first().map(Vec::as_slice)) {
            out[i]
                .0
                .push((id, (kv.value().to_vec(), kv.mod_revision())));
        }
        for (i, id, kv) in located(k, &at, kinds.get(1).map(Vec::as_slice)) {
            out[i]
                .1
                .push((id, (kv.value().to_vec(), kv.mod_revision())));
        }
        Ok((revision, out))
    }

    /// Reads each of `prefixes` over `buckets` in one transaction, a range per run of
    /// consecutive buckets: the revision of the read, and per prefix, its ranges' answers.
    async fn read_runs(
        &self,
        buckets: &[Bucket],
        prefixes: &[String],
    ) -> Result<(i64, Vec<Vec<etcd_client::GetResponse>>), ClusterError> {
        check_batch(buckets)?;
        let k = self.keys();
        let runs = bucket_runs(buckets);
        let ops: Vec<TxnOp> = prefixes
            .iter()
            .flat_map(|prefix| {
                runs.iter().map(move |(first, last)| {
                    let start = k.bucket_range(prefix, *first);
                    let end = crate::prefix_end(k.bucket_range(prefix, *last).as_bytes());
                    TxnOp::get(start, Some(GetOptions::new().with_range(end)))
                })
            })
            .collect();
        let resp = self
            .kv()
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| self.err(e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut gets = Vec::with_capacity(prefixes.len() * runs.len());
        for op in resp.op_responses() {
            match op {
                TxnOpResponse::Get(g) => gets.push(g),
                _ => {
                    return Err(ClusterError::Internal(
                        "unexpected etcd txn response".into(),
                    ))
                }
            }
        }
        if gets.len() != prefixes.len() * runs.len() {
            return Err(ClusterError::Internal("short etcd txn response".into()));
        }
        let mut kinds = Vec::with_capacity(prefixes.len());
        let mut gets = gets.into_iter();
        for _ in prefixes {
            kinds.push(gets.by_ref().take(runs.len()).collect());
        }
        Ok((revision, kinds))
    }

    /// The specs (when asked) and the rest of each bucket, in the order asked, and the
    /// revision of the read.
    async fn read_bucket_parts(
        &self,
        buckets: &[Bucket],
        with_specs: bool,
        with_statuses: bool,
    ) -> Result<(i64, Vec<(SpecsRead, BucketRest)>), ClusterError> {
        let k = self.keys();
        let mut prefixes = Vec::with_capacity(4);
        if with_specs {
            prefixes.push(k.nodes());
        }
        if with_statuses {
            prefixes.push(k.statuses());
        }
        prefixes.extend([k.delegations(), k.reservations()]);
        let (revision, kinds) = self.read_runs(buckets, &prefixes).await?;
        let at = positions(buckets);
        let mut out: Vec<(SpecsRead, BucketRest)> = buckets
            .iter()
            .map(|b| {
                (
                    Vec::new(),
                    BucketRest {
                        bucket: *b,
                        revision,
                        statuses: HashMap::new(),
                        delegations: Vec::new(),
                        reservations: Vec::new(),
                    },
                )
            })
            .collect();
        // Each record goes to its node's bucket (a range of a run spans several).
        let mut kinds = kinds.iter().map(Vec::as_slice);
        let kvs = |kind| located(k, &at, kind);
        if with_specs {
            for (i, id, kv) in kvs(kinds.next()) {
                out[i]
                    .0
                    .push((id, decode::<NodeSpec>(kv.value()), kv.mod_revision()));
            }
        }
        if with_statuses {
            for (i, id, kv) in kvs(kinds.next()) {
                out[i]
                    .1
                    .statuses
                    .insert(id, decode::<NodeStatus>(kv.value()));
            }
        }
        for (i, id, kv) in kvs(kinds.next()) {
            let delegate = decode::<DelegationRecord>(kv.value())
                .map(|d| d.conductor)
                .map_err(|e| e.to_string());
            out[i].1.delegations.push((id, delegate));
        }
        for (i, id, kv) in kvs(kinds.next()) {
            out[i].1.reservations.push(HeldReservation::of(id, kv));
        }
        Ok((revision, out))
    }

    /// Hands nodes on, or takes them back, as their buckets' holder. Each change is fenced by
    /// its bucket token; taking a node back also needs its reservation gone (the delegate has
    /// stopped it). One bool per change, in input order: whether it was made; and the revision
    /// of the last transaction (each refusal was true at or before it).
    pub async fn delegate(&self, changes: &[Delegate]) -> Result<(i64, Vec<bool>), ClusterError> {
        let mut out = Vec::with_capacity(changes.len());
        let mut revision = 0;
        for chunk in changes.chunks(BATCH) {
            let ops = chunk
                .iter()
                .map(|c| {
                    let key = self.keys().delegation(&c.id);
                    let mut when = vec![Compare::create_revision(
                        self.keys().bucket(Bucket::of(&c.id)),
                        CompareOp::Equal,
                        c.token.revision(),
                    )];
                    let then = match &c.to {
                        Some(to) => TxnOp::put(
                            key,
                            encode(&DelegationRecord {
                                conductor: to.clone(),
                            }),
                            None,
                        ),
                        None => {
                            when.push(Compare::create_revision(
                                self.keys().reservation(&c.id),
                                CompareOp::Equal,
                                0,
                            ));
                            TxnOp::delete(key, None)
                        }
                    };
                    TxnOp::txn(Txn::new().when(when).and_then([then]))
                })
                .collect();
            let resp = self.txn_all(ops).await?;
            revision = resp.header().map_or(revision, |h| h.revision());
            out.extend(
                resp.op_responses()
                    .iter()
                    .map(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded())),
            );
        }
        Ok((revision, out))
    }

    /// The spec revision of each of `ids` that exists (one Txn of gets per batch).
    pub async fn spec_revisions(&self, ids: &[NodeId]) -> Result<Vec<(NodeId, i64)>, ClusterError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let ops = chunk
                .iter()
                .map(|id| {
                    TxnOp::get(
                        self.keys().node(id),
                        Some(GetOptions::new().with_keys_only()),
                    )
                })
                .collect();
            let resp = self.txn_all(ops).await?;
            for (id, op) in chunk.iter().zip(resp.op_responses()) {
                if let TxnOpResponse::Get(g) = op {
                    if let Some(kv) = g.kvs().first() {
                        out.push((*id, kv.mod_revision()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every delegation: (node, delegate or the record's error), and the revision of the read.
    #[allow(clippy::type_complexity)]
    pub async fn list_delegations(
        &self,
        revision: Option<i64>,
    ) -> Result<(i64, Vec<(NodeId, Result<String, String>)>), ClusterError> {
        let (rev, kvs) =
            crate::get_prefix(self, &self.keys().delegations(), revision, false).await?;
        let out = kvs
            .iter()
            .filter_map(|kv| {
                Some((
                    self.keys().node_id_of(kv.key())?,
                    decode::<DelegationRecord>(kv.value())
                        .map(|d| d.conductor)
                        .map_err(|e| e.to_string()),
                ))
            })
            .collect();
        Ok((rev, out))
    }

    /// Every bucket key: (bucket, holder, token, lease), and the revision of the read.
    #[allow(clippy::type_complexity)]
    pub async fn list_buckets(
        &self,
    ) -> Result<(i64, Vec<(Bucket, Option<String>, FenceToken, i64)>), ClusterError> {
        let (rev, kvs) = crate::get_prefix(self, &self.keys().buckets(), None, false).await?;
        let out = kvs
            .iter()
            .filter_map(|kv| {
                let b = Bucket::parse(self.keys().leaf_of(kv.key())?)?;
                let holder = decode::<ReservationRecord>(kv.value())
                    .ok()
                    .map(|r| r.conductor);
                Some((
                    b,
                    holder,
                    FenceToken::bucket(kv.create_revision()),
                    kv.lease(),
                ))
            })
            .collect();
        Ok((rev, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_buckets_are_read_as_one_range() {
        let b = |n: u16| Bucket(n);
        assert_eq!(
            bucket_runs(&[b(7), b(3), b(4), b(5), b(9), b(4), b(4095)]),
            vec![(b(3), b(5)), (b(7), b(7)), (b(9), b(9)), (b(4095), b(4095))]
        );
        assert_eq!(bucket_runs(&[]), vec![]);
        let all: Vec<Bucket> = Bucket::all().collect();
        assert_eq!(bucket_runs(&all), vec![(b(0), b(4095))]);
    }
}

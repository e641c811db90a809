//! The invariants of DESIGN.md as checks over independent records only: the simulated fleet's
//! command log (`ferric_sim::LogEntry`), etcd's revision history as the recorder saw it
//! (`super::history::Change`) and its lease snapshots, and what the workload, the event readers,
//! the compute stand-in and the console viewers recorded. Never a conductor's log or its view of
//! itself. Each check is a pure function over plain data that returns the violations it found.
//!
//! Times: the sim stamps each command when it reaches the system; the recorder stamps each change
//! when it sees it, which is never before the commit but can be seconds after it while etcd is
//! disrupted. So a time comparison is only used in the direction that lag cannot fake: "a command
//! at t after a change seen at s < t" is after the commit. Everything that needs more precision
//! uses order instead (revisions in etcd, the sim's own order per system).

// The runner (`run`) is the user; until it lands only the tests call some of this.

use super::history::{kept, Change, ChangeKind, LeaseSnapshot};
use ferric_cluster::Keyspace;
use ferric_model::{
    decode, EventRecord, HistoryEntry, HistoryKind, NodeSpec, NodeStatus, ProvisionState,
    Requester, ReservationRecord, Sink,
};
use ferric_sim::{LogEntry, LogOp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// 'a' to 'f', as in the chaos plan.
    pub invariant: char,
    pub node: Option<String>,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: char, node: Option<&str>, detail: String) -> Violation {
        violation(invariant, node, detail)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({})", self.invariant)?;
        if let Some(n) = &self.node {
            write!(f, " node {n}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

fn violation(invariant: char, node: Option<&str>, detail: String) -> Violation {
    Violation {
        invariant,
        node: node.map(str::to_string),
        detail,
    }
}

/// The report form of a set of violations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub total: usize,
    /// Violations per invariant ('a'..'f'), every invariant listed.
    pub by_invariant: BTreeMap<char, usize>,
    /// Revision ranges the recorder could not see: the checks are incomplete over them.
    pub recorder_gaps: Vec<super::history::Gap>,
    pub violations: Vec<Violation>,
}

impl Summary {
    pub fn new(violations: Vec<Violation>, recorder_gaps: Vec<super::history::Gap>) -> Self {
        let mut by_invariant: BTreeMap<char, usize> = ('a'..='f').map(|c| (c, 0)).collect();
        for v in &violations {
            *by_invariant.entry(v.invariant).or_default() += 1;
        }
        Summary {
            ok: violations.is_empty() && recorder_gaps.is_empty(),
            total: violations.len(),
            by_invariant,
            recorder_gaps,
            violations,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Epochs and incarnations from etcd's history.

/// One holding of a node: from the creation of the key that gave it (its reservation, or its
/// bucket's key while no delegation hands it on) to that key's delete (or the delegation).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Epoch {
    conductor: String,
    /// The key's create revision: the fencing token.
    create_revision: i64,
    /// The revision the holding began at: the epochs' order (a bucket's holding of a node
    /// resumes when a delegation of it is deleted).
    from_revision: i64,
    lease: i64,
    created_seen_ms: u64,
    deleted_seen_ms: Option<u64>,
}

/// How far behind etcd the history recorder's seen times may be: an epoch seen created more
/// than this after a command did not hold the node when the command was sent.
const RECORDER_LAG_BOUND_MS: u64 = 10_000;

/// The node uuid of `<kind>/<uuid>` or `<kind>/<uuid>/<seq>` for a relative kind prefix.
fn node_in<'a>(key: &'a str, kind: &str) -> Option<&'a str> {
    let rest = key.strip_prefix(kind)?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|s| !s.is_empty())
}

/// Like [`node_in`], for kinds whose keys are nodes': only a uuid counts (a bucket's status
/// marker, `status/<bucket>`, names no node).
fn uuid_in<'a>(key: &'a str, kind: &str) -> Option<&'a str> {
    node_in(key, kind).filter(|s| s.parse::<uuid::Uuid>().is_ok())
}

/// `<kind>/<uuid>/<seq>`: the uuid and the seq.
fn node_seq_in<'a>(key: &'a str, kind: &str) -> Option<(&'a str, u64)> {
    let rest = key.strip_prefix(kind)?;
    let (node, seq) = rest.split_once('/')?;
    Some((node, seq.parse().ok()?))
}

/// The puts of `<kind><node>/<seq>` keys whose value decodes as `R`, with the node, the seq and
/// the change itself (history entries, outbox events).
fn puts_of<'a, R: ferric_model::Record>(
    changes: &'a [Change],
    kind: &'a str,
) -> impl Iterator<Item = (&'a str, u64, R, &'a Change)> + 'a {
    changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Put)
        .filter_map(move |c| {
            let (node, seq) = node_seq_in(&c.key, kind)?;
            let r = decode::<R>(c.value.as_deref()?).ok()?;
            Some((node, seq, r, c))
        })
}

fn history_kind() -> String {
    // `history/<uuid>/` of the keyspace, without the uuid.
    let k = kept(&Keyspace::default()).history;
    format!("{}/", k.split('/').next().unwrap_or("history"))
}

/// Every node's epochs, in the order they began: the epochs of its own reservations, and
/// those of its bucket's keys, each split where a delegation handed the node on (from the
/// delegation's put to its delete the bucket's holder does not own the node).
fn epochs(changes: &[Change]) -> HashMap<String, Vec<Epoch>> {
    let k = kept(&Keyspace::default());
    let mut out = key_epochs(changes, &k.reservations);
    let buckets = key_epochs(changes, &k.buckets);
    // Per node, the delegation's puts and deletes in revision order: (revision, seen, put).
    let mut handed: HashMap<&str, Vec<(i64, u64, bool)>> = HashMap::new();
    let mut nodes: HashSet<&str> = HashSet::new();
    for c in changes {
        if let Some(node) = node_in(&c.key, &k.delegations) {
            handed.entry(node).or_default().push((
                c.revision,
                c.seen_unix_ms,
                c.kind == ChangeKind::Put,
            ));
        }
        for kind in [&k.statuses, &k.reservations, &k.delegations, &k.nodes] {
            if let Some(node) = uuid_in(&c.key, kind) {
                nodes.insert(node);
            }
        }
    }
    for node in nodes {
        let Some(list) = node.get(..3).and_then(|b| buckets.get(b)) else {
            continue;
        };
        let hands = handed.get(node).map(Vec::as_slice).unwrap_or_default();
        let mine = out.entry(node.to_string()).or_default();
        for e in list {
            // Walk the bucket epoch, cutting out the delegated stretches.
            let mut open = Some((e.from_revision, e.created_seen_ms));
            for &(rev, seen, put) in hands {
                if rev <= e.from_revision || e.deleted_seen_ms.is_some_and(|d| seen > d) {
                    // Before the epoch (its state at the start is the last one before) or after.
                    if rev <= e.from_revision {
                        open = (!put).then_some((e.from_revision, e.created_seen_ms));
                    }
                    continue;
                }
                match (put, open) {
                    (true, Some((from, created))) => {
                        mine.push(Epoch {
                            from_revision: from,
                            created_seen_ms: created,
                            deleted_seen_ms: Some(seen),
                            ..e.clone()
                        });
                        open = None;
                    }
                    (false, None) => open = Some((rev, seen)),
                    _ => {}
                }
            }
            if let Some((from, created)) = open {
                mine.push(Epoch {
                    from_revision: from,
                    created_seen_ms: created,
                    ..e.clone()
                });
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|e| e.from_revision);
    }
    out
}

/// The lifetimes of every key under `prefix`, by the key's leaf, in create revision order.
fn key_epochs(changes: &[Change], prefix: &str) -> HashMap<String, Vec<Epoch>> {
    let mut out: HashMap<String, Vec<Epoch>> = HashMap::new();
    for c in changes {
        let Some(node) = node_in(&c.key, prefix) else {
            continue;
        };
        let holder = c
            .value
            .as_deref()
            .and_then(|v| decode::<ReservationRecord>(v).ok())
            .map(|r| r.conductor);
        let list = out.entry(node.to_string()).or_default();
        let known = list
            .iter_mut()
            .find(|e| c.create_revision != 0 && e.create_revision == c.create_revision);
        match (c.kind, known) {
            (ChangeKind::Put, Some(_)) => {}
            (ChangeKind::Put, None) => list.push(Epoch {
                conductor: holder.unwrap_or_default(),
                create_revision: c.create_revision,
                from_revision: c.create_revision,
                lease: c.lease,
                created_seen_ms: c.seen_unix_ms,
                deleted_seen_ms: None,
            }),
            (ChangeKind::Delete, Some(e)) => e.deleted_seen_ms = Some(c.seen_unix_ms),
            (ChangeKind::Delete, None) => {
                // The put was not seen (before a gap): the delete's previous value names it.
                if let Some(e) = list
                    .iter_mut()
                    .rev()
                    .find(|e| e.deleted_seen_ms.is_none() && c.create_revision == 0)
                {
                    e.deleted_seen_ms = Some(c.seen_unix_ms);
                } else {
                    list.push(Epoch {
                        conductor: holder.unwrap_or_default(),
                        create_revision: c.create_revision,
                        from_revision: c.create_revision,
                        lease: c.lease,
                        created_seen_ms: 0,
                        deleted_seen_ms: Some(c.seen_unix_ms),
                    });
                }
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|e| e.create_revision);
    }
    out
}

/// A conductor's membership key on one lease: one run of the process.
#[derive(Debug, Clone)]
struct Incarnation {
    name: String,
    deleted_seen_ms: Option<u64>,
}

/// Incarnations by lease, and every conductor name seen.
fn incarnations(changes: &[Change]) -> (HashMap<i64, Incarnation>, HashSet<String>) {
    let prefix = kept(&Keyspace::default()).conductors;
    let mut by_lease: HashMap<i64, Incarnation> = HashMap::new();
    let mut names = HashSet::new();
    for c in changes {
        let Some(name) = node_in(&c.key, &prefix) else {
            continue;
        };
        names.insert(name.to_string());
        if c.lease == 0 {
            continue;
        }
        let inc = by_lease.entry(c.lease).or_insert_with(|| Incarnation {
            name: name.to_string(),
            deleted_seen_ms: None,
        });
        if c.kind == ChangeKind::Delete {
            inc.deleted_seen_ms = Some(c.seen_unix_ms);
        }
    }
    (by_lease, names)
}

/// What checks (a) and (c) read from the history: each node's epochs, each lease's incarnation,
/// every conductor name, node by BMC system, and when the records begin.
struct Owners<'a> {
    epochs: HashMap<String, Vec<Epoch>>,
    leases: HashMap<i64, Incarnation>,
    conductors: HashSet<String>,
    node_of: HashMap<&'a str, &'a str>,
    start: u64,
}

impl<'a> Owners<'a> {
    fn of(changes: &[Change], system_of: &'a HashMap<String, String>) -> Owners<'a> {
        let epochs = epochs(changes);
        let (leases, mut conductors) = incarnations(changes);
        conductors.extend(epochs.values().flatten().map(|e| e.conductor.clone()));
        Owners {
            epochs,
            leases,
            conductors,
            node_of: system_of
                .iter()
                .map(|(n, s)| (s.as_str(), n.as_str()))
                .collect(),
            start: first_seen(changes),
        }
    }
}

fn first_seen(changes: &[Change]) -> u64 {
    changes.iter().map(|c| c.seen_unix_ms).min().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// (a) One owner, self-fencing.

/// (a) No BMC received commands from two conductors for one node in overlapping ownership
/// windows, and no conductor sent a command after its reservation or its lease ended.
///
/// Commands: Redfish requests in the sim's log whose client is a conductor (a name seen under
/// `conductors/` or holding a reservation), on a system of `system_of` (node uuid -> system),
/// answered or not (an error answer still means the BMC got it). Other clients are ignored, and
/// so are commands from before the recorder's first change (their epochs are unknown).
///
/// The exact layer is order: per node, the commands in the sim's order (time, then log index)
/// are walked with a pointer into the node's epochs (reservation creations by revision). A
/// command from the current epoch's owner stays; one from another conductor moves the pointer
/// to that conductor's next later epoch; a command from a conductor that owns no later epoch
/// is a violation: either it never held the node, or it is an earlier owner sending after a
/// later owner sent. Epochs whose owner sent nothing (a caretaker, a short holding) are skipped.
///
/// The time layer (only where lag cannot fake it): a command from X at t after X's current
/// epoch's delete was seen (< t) must belong to a later epoch of X, else it is a violation; and
/// a command at t after the delete of `conductors/X` on that epoch's lease was seen (the lease
/// expired or was revoked: the self-fencing deadline is before that) is a violation.
pub fn check_bmc_ownership(
    log: &[LogEntry],
    changes: &[Change],
    system_of: &HashMap<String, String>,
) -> Vec<Violation> {
    let Owners {
        epochs,
        leases,
        conductors,
        node_of,
        start,
    } = Owners::of(changes, system_of);
    let mut per_node: BTreeMap<&str, Vec<&LogEntry>> = BTreeMap::new();
    for e in log {
        if e.op != LogOp::Redfish || e.unix_ms < start {
            continue;
        }
        let Some(client) = e.client.as_deref() else {
            continue;
        };
        if !conductors.contains(client) {
            continue;
        }
        if let Some(node) = node_of.get(e.system.as_str()) {
            per_node.entry(node).or_default().push(e);
        }
    }
    let none = Vec::new();
    let mut out = Vec::new();
    for (node, mut cmds) in per_node {
        cmds.sort_by_key(|e| (e.unix_ms, e.index));
        let list = epochs.get(node).unwrap_or(&none);
        let next_of = |x: &str, from: usize| (from..list.len()).find(|&i| list[i].conductor == x);
        let mut at: Option<usize> = None;
        for c in cmds {
            let x = c.client.as_deref().unwrap_or_default();
            let what = format!(
                "{} {} {} (log #{}, at {})",
                x,
                c.method,
                c.action.as_deref().unwrap_or(&c.path),
                c.index,
                c.unix_ms
            );
            let current = at.filter(|&i| list[i].conductor == x);
            let epoch = match current {
                Some(i) => i,
                None => match next_of(x, at.map_or(0, |i| i + 1)) {
                    Some(q) => q,
                    None => {
                        let detail = match (at, list.iter().any(|e| e.conductor == x)) {
                            (Some(i), true) => format!(
                                "{what}: overlap: {x} is not the owner of the current or any later epoch; {} (reservation revision {}) owns the node and has already sent commands",
                                list[i].conductor, list[i].create_revision
                            ),
                            (_, true) => format!(
                                "{what}: {x} sent with no current or later reservation of its own"
                            ),
                            (_, false) => format!(
                                "{what}: {x} never held a reservation of this node"
                            ),
                        };
                        out.push(violation('a', Some(node), detail));
                        continue;
                    }
                },
            };
            // An epoch whose end was seen before the command cannot be the command's: X must
            // hold a later one (it may have held and lost several in between, each on a new
            // lease, with no other owner's command to move the pointer).
            let mut epoch = epoch;
            while let Some(del) = list[epoch].deleted_seen_ms.filter(|&d| c.unix_ms > d) {
                // A later epoch seen created long after the command cannot have held it: the
                // command fell between two holdings (seen times lag, by less than the bound).
                match next_of(x, epoch + 1)
                    .filter(|&q| list[q].created_seen_ms <= c.unix_ms + RECORDER_LAG_BOUND_MS)
                {
                    Some(q) => epoch = q,
                    None => {
                        out.push(violation(
                            'a',
                            Some(node),
                            format!(
                                "{what}: sent after its reservation (revision {}) was deleted (seen at {del}), when no later reservation of its own held the node",
                                list[epoch].create_revision
                            ),
                        ));
                        break;
                    }
                }
            }
            if list[epoch].deleted_seen_ms.is_some_and(|d| c.unix_ms > d) {
                continue;
            }
            at = Some(epoch);
            let e = &list[epoch];
            if let Some(inc) = leases.get(&e.lease) {
                if let Some(del) = inc.deleted_seen_ms.filter(|&d| c.unix_ms > d) {
                    out.push(violation(
                        'a',
                        Some(node),
                        format!(
                            "{what}: sent after {}'s lease {:x} ended (conductors/{} deleted, seen at {del}): past its self-fencing deadline",
                            inc.name, e.lease, inc.name
                        ),
                    ));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (b) Intent survives death.

/// What the workload asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Power,
    Provision,
}

/// One request the workload sent, with the gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptedRequest {
    pub node: String,
    pub kind: RequestKind,
    /// The power target as the history spells it (`power on`, `rebooting`, ...) or the
    /// provision verb (`deploy`, `manage`, ...).
    pub what: String,
    pub accepted_unix_ms: u64,
    /// The HTTP status answered; only 2xx counts as accepted.
    pub status: u16,
}

/// A node's final spec and status, read once the run is quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinalNode {
    pub node: String,
    pub power_request_seq: Option<u64>,
    pub power_seq_done: u64,
    pub provision_request_seq: Option<u64>,
    pub provision_seq_done: u64,
}

impl FinalNode {
    pub fn of(spec: &NodeSpec, status: &NodeStatus) -> Self {
        FinalNode {
            node: spec.id.to_string(),
            power_request_seq: spec.power_request.as_ref().map(|r| r.seq),
            power_seq_done: status.power_seq_done,
            provision_request_seq: spec.provision_request.as_ref().map(|r| r.seq),
            provision_seq_done: status.provision_seq_done,
        }
    }
}

/// Whether a history entry was asked for by someone (the gateway records the caller's name
/// verbatim), not by the conductor on its own, an agent or remediation.
fn from_api(r: &Requester) -> bool {
    !matches!(
        r,
        Requester::Conductor | Requester::Agent | Requester::Remediation
    )
}

/// (b) Every accepted request was applied or failed with a recorded error; none was lost.
///
/// Per node and kind, the accepted (2xx) requests in acceptance order must be a subsequence of
/// the history entries written during the run (puts of `history/<uuid>/<seq>` seen by the
/// recorder, in seq order) of that kind and asked through the API, an entry matching when its
/// action starts with the request's `what`; the entry's result (ok or the error) is how it
/// ended. The gateway refuses (409) a request while one of the same kind is pending, so an
/// accepted request is never replaced by the next. And at the end nothing is left pending:
/// `power_seq_done >= spec.power_request.seq`, the same for provisioning.
pub fn check_requests(
    accepted: &[AcceptedRequest],
    changes: &[Change],
    finals: &[FinalNode],
) -> Vec<Violation> {
    let hk = history_kind();
    let mut entries: BTreeMap<(String, RequestKind), BTreeMap<u64, HistoryEntry>> = BTreeMap::new();
    for (node, seq, h, _) in puts_of::<HistoryEntry>(changes, &hk).filter(|(.., c)| !c.initial) {
        let kind = match h.kind {
            HistoryKind::Power => RequestKind::Power,
            HistoryKind::Provision => RequestKind::Provision,
            _ => continue,
        };
        if from_api(&h.requested_by) {
            entries
                .entry((node.to_string(), kind))
                .or_default()
                .entry(seq)
                .or_insert(h);
        }
    }
    let mut asked: BTreeMap<(String, RequestKind), Vec<&AcceptedRequest>> = BTreeMap::new();
    for r in accepted.iter().filter(|r| (200..300).contains(&r.status)) {
        asked.entry((r.node.clone(), r.kind)).or_default().push(r);
    }
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for ((node, kind), mut reqs) in asked {
        reqs.sort_by_key(|r| r.accepted_unix_ms);
        let hist = entries.get(&(node.clone(), kind)).unwrap_or(&empty);
        let mut it = hist.values();
        for r in reqs {
            let of_request = |h: &HistoryEntry| {
                h.action == r.what || h.action.starts_with(&format!("{}:", r.what))
            };
            if !it.any(of_request) {
                out.push(violation(
                    'b',
                    Some(&node),
                    format!(
                        "{kind:?} request \"{}\" accepted at {} has no history entry (applied or failed) after the earlier ones: lost",
                        r.what, r.accepted_unix_ms
                    ),
                ));
            }
        }
    }
    for f in finals {
        if let Some(seq) = f.power_request_seq.filter(|&s| f.power_seq_done < s) {
            out.push(violation(
                'b',
                Some(&f.node),
                format!(
                    "power request {seq} still pending at the end (power_seq_done {})",
                    f.power_seq_done
                ),
            ));
        }
        if let Some(seq) = f
            .provision_request_seq
            .filter(|&s| f.provision_seq_done < s)
        {
            out.push(violation(
                'b',
                Some(&f.node),
                format!(
                    "provision request {seq} still pending at the end (provision_seq_done {})",
                    f.provision_seq_done
                ),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (c) Consoles.

/// What a console viewer saw around one fault: when it was injected and when output came again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleGap {
    pub node: String,
    pub fault_unix_ms: u64,
    /// First output after the fault; `None` when none came before the end.
    pub first_output_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConsoleLimits {
    /// How long after its owner lost the node (reservation or lease delete seen) a session may
    /// still be open: the new owner's acquire and clear of the stale session.
    pub close_grace_ms: u64,
    /// An enabled console serves again within this (TTL + a few seconds) after a fault.
    pub serve_within_ms: u64,
    /// The end of the records: a session never closed is open until then.
    pub end_unix_ms: u64,
}

/// (c) No serial session of a dead or fenced conductor survives, and every enabled console
/// serves again in time.
///
/// Sessions are the sim's `serial_open` entries answered 101 by a conductor client, closed by
/// the `serial_close` of the same system and session number. A session of X on node N belongs
/// to X's first epoch of N not ended (delete seen) before the open; it must be closed within
/// `close_grace_ms` of the earlier of that epoch's delete and the delete of `conductors/X` on
/// its lease (seen times: lag only makes this lenient). An open with no such epoch is a session
/// of a conductor that had already lost the node. Then each viewer gap must end (output again)
/// within `serve_within_ms` of its fault.
pub fn check_consoles(
    log: &[LogEntry],
    changes: &[Change],
    system_of: &HashMap<String, String>,
    gaps: &[ConsoleGap],
    limits: ConsoleLimits,
) -> Vec<Violation> {
    let Owners {
        epochs,
        leases,
        conductors,
        node_of,
        start,
    } = Owners::of(changes, system_of);
    // Session numbers restart with the sim: a session's close is the first one at or after it.
    let mut closes: HashMap<(&str, u64), Vec<u64>> = HashMap::new();
    for e in log.iter().filter(|e| e.op == LogOp::SerialClose) {
        if let Some(seq) = e.seq {
            closes
                .entry((e.system.as_str(), seq))
                .or_default()
                .push(e.unix_ms);
        }
    }
    let mut out = Vec::new();
    for e in log {
        if e.op != LogOp::SerialOpen || e.status != Some(101) || e.unix_ms < start {
            continue;
        }
        let (Some(x), Some(seq)) = (e.client.as_deref(), e.seq) else {
            continue;
        };
        let Some(&node) = node_of.get(e.system.as_str()) else {
            continue;
        };
        if !conductors.contains(x) {
            continue;
        }
        let closed = closes
            .get(&(e.system.as_str(), seq))
            .and_then(|ts| ts.iter().copied().filter(|&t| t >= e.unix_ms).min());
        let list = epochs.get(node).map(Vec::as_slice).unwrap_or(&[]);
        // The session belongs to the last of X's epochs that overlaps it in seen times (created
        // before it closed, not ended before it opened). Seen times lag: an earlier epoch's end
        // may be seen after a later epoch's session opened, and must not be taken for its end.
        // Its creation may be seen only after the session closed: then the first epoch not
        // ended before the open is taken, as without lag.
        let until_ms = closed.unwrap_or(limits.end_unix_ms);
        let candidates: Vec<&Epoch> = list
            .iter()
            .filter(|ep| ep.conductor == x && ep.deleted_seen_ms.is_none_or(|d| d >= e.unix_ms))
            .collect();
        let Some(epoch) = candidates
            .iter()
            .rev()
            .find(|ep| ep.created_seen_ms <= until_ms)
            .or(candidates.first())
            .copied()
        else {
            out.push(violation(
                'c',
                Some(node),
                format!(
                    "{x} opened serial session {seq} on {} at {} without holding the node",
                    e.system, e.unix_ms
                ),
            ));
            continue;
        };
        let lease_end = leases.get(&epoch.lease).and_then(|i| i.deleted_seen_ms);
        let lost = match (epoch.deleted_seen_ms, lease_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(lost) = lost {
            let until = closed.unwrap_or(limits.end_unix_ms);
            if until > lost + limits.close_grace_ms {
                out.push(violation(
                    'c',
                    Some(node),
                    format!(
                        "{x}'s serial session {seq} on {} (opened at {}) {} {} ms after {x} lost the node or its lease (seen at {lost}); allowed {} ms",
                        e.system,
                        e.unix_ms,
                        if closed.is_some() { "closed" } else { "still open" },
                        until - lost,
                        limits.close_grace_ms
                    ),
                ));
            }
        }
    }
    for g in gaps {
        match g.first_output_after_ms {
            None => out.push(violation(
                'c',
                Some(&g.node),
                format!(
                    "console never served again after the fault at {}",
                    g.fault_unix_ms
                ),
            )),
            Some(t) if t.saturating_sub(g.fault_unix_ms) > limits.serve_within_ms => {
                out.push(violation(
                    'c',
                    Some(&g.node),
                    format!(
                        "console served again {} ms after the fault at {} (limit {} ms)",
                        t - g.fault_unix_ms,
                        g.fault_unix_ms,
                        limits.serve_within_ms
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (d) Reservations on live leases.

/// (d) Every reservation key is on a live lease. The snapshot lists live leases before and
/// after its read of the keys: a lease live at the read is in one of the two lists unless it was
/// granted after the first and expired before the second (longer than any snapshot takes), and
/// a dead lease cannot be in either, so a reservation whose lease is in neither (or on no lease)
/// is a violation.
pub fn check_reservation_leases(snap: &LeaseSnapshot) -> Vec<Violation> {
    let live: HashSet<i64> = snap
        .leases_before
        .iter()
        .chain(&snap.leases_after)
        .copied()
        .collect();
    snap.reservations
        .iter()
        .filter(|(_, _, lease)| *lease == 0 || !live.contains(lease))
        .map(|(node, holder, lease)| {
            violation(
                'd',
                Some(node),
                if *lease == 0 {
                    format!(
                        "reservation of {holder} is on no lease (revision {})",
                        snap.revision
                    )
                } else {
                    format!(
                        "reservation of {holder} is on lease {lease:x}, which is not live (revision {}, at {})",
                        snap.revision, snap.at_unix_ms
                    )
                },
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (e) Event order.

/// A `power_event` one `/v1/ferric/events` reader received (a reader that resumes with
/// Last-Event-ID stays the same reader). In the order received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamItem {
    pub reader: String,
    pub node: String,
    pub seq: u64,
    pub received_unix_ms: u64,
}

/// An event the compute stand-in received. In the order received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputeItem {
    pub node: String,
    pub seq: u64,
    pub received_unix_ms: u64,
    /// Whether it answered success (an event it refused was not delivered and is ignored).
    pub acked: bool,
}

/// The order rule shared by the stream and the compute receiver, over one node's deliveries in
/// the order received, `known` being the seqs of the node's events this receiver must get.
///
/// "In order per node, at least once": the deliveries are runs of consecutive known seqs, each
/// in increasing order. A run may continue the previous one, or start again at a seq already
/// delivered: that is a resend, which at least once permits (a lost answer, or a new owner
/// resuming from the fenced cursor, which is written after the answers it records); it must
/// then go on from there without a hole. So a receiver that drops any seq at or below the
/// highest it has seen gets every event exactly once, in order. What is not permitted: a seq
/// above everything delivered that skips a known one (a gap), a resend that skips a known one
/// (a reorder: the receiver is shown something older after something newer, with events
/// missing in between), and a seq that is neither known nor next (when `known` is empty, seqs
/// are taken as consecutive). At the end, every known seq after the first delivered must have
/// been delivered.
fn order_violations(seqs: &[u64], known: &BTreeSet<u64>) -> Vec<String> {
    let next_after = |s: u64| -> u64 {
        if known.is_empty() {
            s + 1
        } else {
            known.range(s + 1..).next().copied().unwrap_or(s + 1)
        }
    };
    let mut out = Vec::new();
    let mut first: Option<u64> = None;
    let mut prev: u64 = 0;
    let mut hi: u64 = 0;
    for &s in seqs {
        let Some(f) = first else {
            first = Some(s);
            prev = s;
            hi = s;
            continue;
        };
        if s == prev || s == next_after(prev) {
            // A duplicate of the last, or the next in order.
        } else if s >= f && s <= hi {
            // A resend of something already delivered: allowed as the start of a run, which
            // must then proceed without a hole.
            if s > prev {
                let skipped: Vec<u64> = known.range(prev + 1..s).copied().collect();
                out.push(format!(
                    "reorder: seq {s} after seq {prev} in a resend (skipping {skipped:?})"
                ));
            }
        } else if s > hi {
            let skipped: Vec<u64> = if known.is_empty() {
                (prev + 1..s).collect()
            } else {
                known.range(prev + 1..s).copied().collect()
            };
            if prev < hi {
                out.push(format!(
                    "reorder: seq {s} after seq {prev} in a resend that had reached only {prev} of {hi} (skipping {skipped:?})"
                ));
            } else {
                out.push(format!(
                    "gap: seq {s} after seq {prev}, skipping {skipped:?}"
                ));
            }
        } else {
            out.push(format!(
                "reorder: seq {s}, older than the first delivered ({f}), after seq {prev}"
            ));
        }
        prev = s;
        hi = hi.max(s);
    }
    if first.is_some() {
        let missing: Vec<u64> = known.range(hi + 1..).copied().collect();
        if !missing.is_empty() {
            out.push(format!("never delivered after seq {hi}: {missing:?}"));
        }
    }
    out
}

/// (e) Per node, every event stream reader and the compute receiver see the node's events with
/// no gap and no reordering (see `order_violations` for what a repeat may be).
///
/// The events are the outbox puts (`events/<uuid>/<seq>`) the recorder saw: a stream reader
/// gets every event, the compute receiver only those Nova is told about
/// (`Sink::Compute.applies_to`). And the compute receiver got each event created during the run
/// at least once: its first delivery of a node is no later than the node's first such event.
pub fn check_events(
    stream: &[StreamItem],
    compute: &[ComputeItem],
    sink: Sink,
    changes: &[Change],
) -> Vec<Violation> {
    let prefix = kept(&Keyspace::default()).events;
    // node -> seq -> (applies to compute, created during the run)
    let mut outbox: BTreeMap<String, BTreeMap<u64, (bool, bool)>> = BTreeMap::new();
    for (node, seq, ev, c) in puts_of::<EventRecord>(changes, &prefix) {
        outbox
            .entry(node.to_string())
            .or_default()
            .entry(seq)
            .or_insert((sink.applies_to(&ev), !c.initial));
    }
    let all = |node: &str| -> BTreeSet<u64> {
        outbox
            .get(node)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut per_reader: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
    for i in stream {
        per_reader
            .entry((i.reader.as_str(), i.node.as_str()))
            .or_default()
            .push(i.seq);
    }
    for ((reader, node), seqs) in per_reader {
        for d in order_violations(&seqs, &all(node)) {
            out.push(violation(
                'e',
                Some(node),
                format!("event stream reader {reader}: {d}"),
            ));
        }
    }
    let mut per_node: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for i in compute.iter().filter(|i| i.acked) {
        per_node.entry(i.node.as_str()).or_default().push(i.seq);
    }
    let empty = BTreeMap::new();
    let nodes: BTreeSet<&str> = per_node
        .keys()
        .copied()
        .chain(outbox.keys().map(String::as_str))
        .collect();
    for node in nodes {
        let events = outbox.get(node).unwrap_or(&empty);
        let known: BTreeSet<u64> = events
            .iter()
            .filter(|(_, (applies, _))| *applies)
            .map(|(s, _)| *s)
            .collect();
        let first_new = events
            .iter()
            .find(|(_, (applies, new))| *applies && *new)
            .map(|(s, _)| *s);
        let seqs = per_node.get(node).map(Vec::as_slice).unwrap_or(&[]);
        match (seqs.first(), first_new) {
            (None, Some(f)) => out.push(violation(
                'e',
                Some(node),
                format!("compute receiver: never received the events from seq {f} on"),
            )),
            (Some(&first), Some(f)) if first > f => out.push(violation(
                'e',
                Some(node),
                format!(
                    "compute receiver: first delivery is seq {first}; events from seq {f} were lost"
                ),
            )),
            _ => {}
        }
        for d in order_violations(seqs, &known) {
            out.push(violation('e', Some(node), format!("compute receiver: {d}")));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (f) Stuck states.

/// How long a node may stay in a transient state, with the slack a failover adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransientLimits {
    /// For any transient provision state without its own limit.
    pub provision_ms: u64,
    pub per_state: Vec<(ProvisionState, u64)>,
    /// A power operation in flight (`status.power_op`).
    pub power_op_ms: u64,
    /// Added to every limit: lease TTL, takeover and the recorder's lag.
    pub slack_ms: u64,
    /// The end of the records: an interval still open ends here.
    pub end_unix_ms: u64,
}

impl TransientLimits {
    fn limit(&self, s: ProvisionState) -> u64 {
        self.per_state
            .iter()
            .find(|(st, _)| *st == s)
            .map_or(self.provision_ms, |(_, ms)| *ms)
            + self.slack_ms
    }
}

/// States that must end by themselves: not stable, not failed, not a hold (a hold waits for
/// the user, by design).
pub fn is_transient(s: ProvisionState) -> bool {
    use ProvisionState as S;
    !s.is_stable() && !s.is_failed() && !matches!(s, S::DeployHold | S::CleanHold | S::ServiceHold)
}

/// (f) No node stays in a transient provision state, or with a power operation in flight,
/// past its limit. From the status puts the recorder saw (`status/<uuid>`): a state is entered
/// at the seen time of the first status in it and left at the seen time of the first status
/// not in it (or the status's delete, or the end of the records). Both ends lag alike; the
/// slack covers the difference. A state already current when the recorder started counts from
/// then (lenient).
pub fn check_transient_states(changes: &[Change], limits: &TransientLimits) -> Vec<Violation> {
    let prefix = kept(&Keyspace::default()).statuses;
    // node -> (state since, power op (seq) since)
    type Open = (Option<(ProvisionState, u64)>, Option<(u64, u64)>);
    let mut open: BTreeMap<String, Open> = BTreeMap::new();
    let mut out = Vec::new();
    let mut close_state = |node: &str, s: ProvisionState, since: u64, until: u64| {
        if is_transient(s) && until.saturating_sub(since) > limits.limit(s) {
            out.push(violation(
                'f',
                Some(node),
                format!(
                    "in \"{}\" for {} ms (from {since} to {until}); limit {} ms",
                    s.as_str(),
                    until - since,
                    limits.limit(s)
                ),
            ));
        }
    };
    let mut power_out = Vec::new();
    let mut close_op = |node: &str, seq: u64, since: u64, until: u64| {
        let limit = limits.power_op_ms + limits.slack_ms;
        if until.saturating_sub(since) > limit {
            power_out.push(violation(
                'f',
                Some(node),
                format!(
                    "power operation {seq} in flight for {} ms (from {since} to {until}); limit {limit} ms",
                    until - since
                ),
            ));
        }
    };
    for c in changes {
        let Some(node) = uuid_in(&c.key, &prefix) else {
            continue;
        };
        let t = c.seen_unix_ms;
        let entry = open.entry(node.to_string()).or_default();
        let now: Open = match c.kind {
            ChangeKind::Delete => (None, None),
            ChangeKind::Put => {
                let Some(st) = c
                    .value
                    .as_deref()
                    .and_then(|v| decode::<NodeStatus>(v).ok())
                else {
                    continue;
                };
                (
                    Some((st.provision_state, t)),
                    st.power_op.as_ref().map(|op| (op.seq, t)),
                )
            }
        };
        match (entry.0, now.0) {
            (Some((a, _)), Some((b, _))) if a == b => {}
            (prev, next) => {
                if let Some((s, since)) = prev {
                    close_state(node, s, since, t);
                }
                entry.0 = next;
            }
        }
        match (entry.1, now.1) {
            (Some((a, _)), Some((b, _))) if a == b => {}
            (prev, next) => {
                if let Some((seq, since)) = prev {
                    close_op(node, seq, since, t);
                }
                entry.1 = next;
            }
        }
    }
    for (node, (state, op)) in &open {
        if let Some((s, since)) = state {
            close_state(node, *s, *since, limits.end_unix_ms);
        }
        if let Some((seq, since)) = op {
            close_op(node, *seq, *since, limits.end_unix_ms);
        }
    }
    out.extend(power_out);
    out
}

#[cfg(test)]
mod tests;

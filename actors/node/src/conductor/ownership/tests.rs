//! Unit tests of the ownership table: placement on membership changes, hand-over and take-over,
//! deleted and moved nodes, resync, the join grace (on tokio's paused clock), and the hand-over
//! invariant (no release before the actor reported stopped) over random input sequences.

use super::*;
use crate::supervisor::NodeEvent;
use ferric_cluster::buckets::HeldReservation;
use ferric_cluster::placement::owner_of;
use ferric_cluster::snapshot::{Snapshot, SnapshotNode};
use std::collections::BTreeSet;

const ME: &str = "a";
const MY_LEASE: i64 = 100;
const GRACE: Duration = Duration::from_millis(400);

fn id(n: u128) -> NodeId {
    NodeId(uuid::Uuid::from_u128(n))
}

fn ids(range: std::ops::Range<u128>) -> Vec<NodeId> {
    range.map(id).collect()
}

fn conductor(name: &str, lease: i64, drivers: &[&str]) -> ConductorRecord {
    ConductorRecord {
        name: name.into(),
        address: String::new(),
        console_address: String::new(),
        drivers: drivers.iter().map(|d| d.to_string()).collect(),
        conductor_group: String::new(),
        version: String::new(),
        started_at_ms: 0,
        lease_id: lease,
        running: 0,
        sync: Default::default(),
        hardware: Vec::new(),
        buckets: true,
    }
}

fn me() -> ConductorRecord {
    conductor(ME, MY_LEASE, &["ipmi", "redfish"])
}

fn ipmi(n: &NodeId) -> SnapshotNode {
    SnapshotNode {
        id: *n,
        placement: Ok(("ipmi".into(), String::new())),
        mod_rev: 1,
    }
}

fn held(n: NodeId, lease: i64, create_rev: i64) -> HeldReservation {
    HeldReservation {
        id: n,
        holder: None,
        create_rev,
        lease,
    }
}

fn snapshot(
    revision: i64,
    conductors: Vec<ConductorRecord>,
    nodes: &[NodeId],
    reservations: Vec<HeldReservation>,
) -> Snapshot {
    Snapshot {
        revision,
        conductors,
        nodes: nodes.iter().map(ipmi).collect(),
        reservations,
    }
}

/// Who rendezvous placement picks among `names` (the oracle the table must agree with).
fn winner(n: &NodeId, names: &[&'static str]) -> &'static str {
    owner_of(n, names.iter().copied()).unwrap()
}

/// A table of conductor "a" that has read `snap` and whose join grace is over.
fn joined(snap: Snapshot) -> (Ownership, Vec<Effect>) {
    joined_with(2, snap)
}

/// [`joined`], with `parallel` reservation batches (of 4) in flight at once.
fn joined_with(parallel: usize, snap: Snapshot) -> (Ownership, Vec<Effect>) {
    let mut t = Ownership::new(ME, GRACE, parallel, 4);
    t.set_lease(MY_LEASE);
    let fx = t.resync_snapshot(snap);
    let now = Instant::now();
    t.hold(now);
    t.grace_elapsed(now + GRACE);
    (t, fx)
}

fn stops(fx: &[Effect]) -> BTreeSet<NodeId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Stop(ids) => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The reservation batches asked for, in order.
fn batches(fx: &[Effect]) -> Vec<Vec<NodeId>> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Acquire(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// Answers a reservation batch with success, tokens from `rev` on.
fn reserve(t: &mut Ownership, batch: &[NodeId], rev: &mut i64) -> Vec<Effect> {
    let outcomes = batch
        .iter()
        .map(|n| {
            *rev += 1;
            (*n, Acquire::Acquired(FenceToken(*rev)))
        })
        .collect();
    t.acquired(batch, Some(outcomes))
}

fn acquires(fx: &[Effect]) -> BTreeSet<NodeId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Acquire(ids) => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn releases(fx: &[Effect]) -> BTreeSet<(NodeId, FenceToken)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Release(r) => Some(r.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn starts(fx: &[Effect]) -> BTreeMap<NodeId, FenceToken> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Start { id, token } => Some((*id, *token)),
            _ => None,
        })
        .collect()
}

/// Answers every reservation batch the table asks for with success (tokens from `rev`) and
/// reports every started actor running, until the table asks for nothing more. Returns the
/// tokens of the nodes it started.
fn acquire_all(t: &mut Ownership, rev: &mut i64) -> BTreeMap<NodeId, FenceToken> {
    let mut started = BTreeMap::new();
    loop {
        let fx = t.decide();
        assert!(releases(&fx).is_empty() && stops(&fx).is_empty(), "{fx:?}");
        let asked = batches(&fx);
        if asked.is_empty() {
            return started;
        }
        for batch in asked {
            for (n, token) in starts(&reserve(t, &batch, rev)) {
                t.actor_started(n, token);
                started.insert(n, token);
            }
        }
    }
}

#[test]
fn while_etcd_is_strained_one_batch_at_a_time_is_in_flight() {
    let nodes = ids(1..21);
    let (mut t, _) = joined(snapshot(5, vec![me()], &nodes, vec![]));
    assert!(t.set_etcd_strained(true).is_empty(), "nothing queued yet");
    let fx = t.decide();
    assert_eq!(acquires(&fx).len(), 4, "one batch of 4: {fx:?}");
    // Healthy again: the second slot is filled at once, and no more.
    let fx = t.set_etcd_strained(false);
    assert_eq!(acquires(&fx).len(), 4, "{fx:?}");
    assert!(acquires(&t.decide()).is_empty());
}

#[test]
fn while_etcd_is_behind_no_batch_goes_out_then_the_window_grows_back() {
    let nodes = ids(1..41);
    let (mut t, _) = joined_with(3, snapshot(5, vec![me()], &nodes, vec![]));
    assert!(t.set_etcd_behind(true).is_empty());
    assert!(acquires(&t.decide()).is_empty(), "nothing while behind");
    // Caught up: one batch, then one more per answered batch, up to three.
    let fx = t.set_etcd_behind(false);
    let first = batches(&fx);
    assert_eq!(first.len(), 1, "{fx:?}");
    let mut rev = 5;
    reserve(&mut t, &first[0], &mut rev);
    let second = batches(&t.decide());
    assert_eq!(second.len(), 2, "window 2 after one answer");
    reserve(&mut t, &second[0], &mut rev);
    let third = batches(&t.decide());
    assert_eq!(third.len(), 2, "window 3: one still in flight, two more");
    // Behind again while batches are in flight: they finish, nothing new goes out.
    assert!(t.set_etcd_behind(true).is_empty());
    reserve(&mut t, &second[1], &mut rev);
    assert!(acquires(&t.decide()).is_empty());
}

#[test]
fn a_lone_conductor_reserves_every_node_in_batches_then_starts_them() {
    let nodes = ids(1..11);
    let (mut t, fx) = joined(snapshot(5, vec![me()], &nodes, vec![]));
    assert!(fx.is_empty());
    let fx = t.decide();
    // Batches of 4, two in flight at once.
    let sizes: Vec<usize> = fx
        .iter()
        .map(|e| match e {
            Effect::Acquire(b) => b.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sizes, [4, 4]);
    assert!(!t.steady());
    let mut rev = 5;
    let first = batches(&fx).remove(0);
    let fx1 = reserve(&mut t, &first, &mut rev);
    assert_eq!(starts(&fx1).len(), 4, "an actor starts only once reserved");
    // The third batch goes out as soon as a slot is free.
    assert_eq!(acquires(&t.decide()).len(), 2);
    assert_eq!(
        t.running(),
        0,
        "started means reported running by the supervisor"
    );
    for (n, token) in starts(&fx1) {
        t.actor_started(n, token);
    }
    assert_eq!(t.running(), 4);
    assert!(t.runs(&first[0]));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_reserved_during_the_join_grace_and_a_joiner_restarts_it() {
    let nodes = ids(1..21);
    let mut t = Ownership::new(ME, GRACE, 2, 100);
    t.set_lease(MY_LEASE);
    assert!(t
        .resync_snapshot(snapshot(5, vec![me()], &nodes, vec![]))
        .is_empty());
    t.hold(Instant::now());
    assert!(t.decide().is_empty(), "held right after the snapshot");

    tokio::time::advance(Duration::from_millis(300)).await;
    t.grace_elapsed(Instant::now());
    assert!(t.decide().is_empty());
    // "b" joins: the grace starts again from now, so "a" does not reserve what "b" wins.
    t.conductor_put(conductor("b", 200, &["ipmi"]), Instant::now());
    assert_eq!(t.hold_until(), Some(Instant::now() + GRACE));
    tokio::time::advance(Duration::from_millis(200)).await;
    t.grace_elapsed(Instant::now());
    assert!(t.decide().is_empty(), "still held 500 ms after the start");
    // A record rewrite (a new `running` count) is no join: the grace is not extended.
    let mut b = conductor("b", 200, &["ipmi"]);
    b.running = 7;
    t.conductor_put(b, Instant::now());
    tokio::time::advance(Duration::from_millis(200)).await;
    t.grace_elapsed(Instant::now());
    assert_eq!(t.hold_until(), None);
    let want: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| winner(n, &["a", "b"]) == ME)
        .copied()
        .collect();
    assert!(!want.is_empty() && want.len() < nodes.len());
    assert_eq!(acquires(&t.decide()), want);
}

#[test]
fn join_grace_is_at_most_a_quarter_of_the_ttl() {
    assert_eq!(join_grace(Duration::from_secs(10)), JOIN_GRACE);
    assert_eq!(
        join_grace(Duration::from_secs(1)),
        Duration::from_millis(250)
    );
}

#[test]
fn a_new_conductor_takes_its_share_and_the_old_owner_releases_only_after_stopping() {
    let nodes = ids(1..31);
    let (mut t, _) = joined(snapshot(5, vec![me()], &nodes, vec![]));
    let mut rev = 5;
    let tokens = acquire_all(&mut t, &mut rev);
    assert_eq!(tokens.len(), nodes.len());
    assert!(t.steady());

    t.conductor_put(conductor("b", 200, &["ipmi"]), Instant::now());
    let fx = t.decide();
    let lost: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| winner(n, &["a", "b"]) == "b")
        .copied()
        .collect();
    assert!(!lost.is_empty());
    assert_eq!(stops(&fx), lost, "exactly the nodes b wins are stopped");
    assert!(
        releases(&fx).is_empty(),
        "nothing released before the actors stopped"
    );
    assert!(acquires(&fx).is_empty());
    assert!(lost.iter().all(|n| !t.runs(n)));
    // Asking again changes nothing: a stop is asked once.
    assert!(t.decide().is_empty());

    let mut lost = lost.into_iter();
    let first = lost.next().unwrap();
    t.actor_stopped(first, tokens[&first], crate::supervisor::REASON_RELEASED);
    assert_eq!(
        releases(&t.decide()),
        BTreeSet::from([(first, tokens[&first])])
    );
    for n in lost.by_ref() {
        t.actor_stopped(n, tokens[&n], crate::supervisor::REASON_RELEASED);
    }
    assert_eq!(releases(&t.decide()).len(), stops(&fx).len() - 1);
    assert!(t.steady());
    assert_eq!(t.running() as usize, nodes.len() - stops(&fx).len());
}

#[test]
fn a_node_is_taken_over_only_after_the_old_owners_reservation_is_gone() {
    let nodes = ids(1..41);
    let x = *nodes
        .iter()
        .find(|n| winner(n, &["a", "b"]) == "b")
        .expect("b wins some node");
    let (mut t, _) = joined(snapshot(
        10,
        vec![me(), conductor("b", 200, &["ipmi"])],
        &nodes,
        vec![held(x, 200, 7)],
    ));
    let mut rev = 10;
    let tokens = acquire_all(&mut t, &mut rev);
    assert!(!tokens.contains_key(&x));

    // b dies: its record goes first, its reservations expire with its lease a moment later.
    t.conductor_left("b");
    let taken = acquire_all(&mut t, &mut rev);
    assert!(!taken.is_empty(), "b's unreserved nodes are taken at once");
    assert!(
        !taken.contains_key(&x),
        "x is still reserved by b: no attempt"
    );
    // A delete older than the reservation we saw is of an earlier incarnation.
    t.reservation(Some(x), 6, Reservation::Delete);
    assert!(t.decide().is_empty());
    t.reservation(Some(x), 20, Reservation::Delete);
    let fx = t.decide();
    assert_eq!(fx, [Effect::Acquire(vec![x])]);
    let fx = t.acquired(&[x], Some(vec![(x, Acquire::Acquired(FenceToken(99)))]));
    assert_eq!(
        fx,
        [Effect::Start {
            id: x,
            token: FenceToken(99)
        }]
    );
}

/// The session watches reservation deletes only: a node held by someone else is learnt from
/// the reservation's own reply, and freed by the delete that follows it.
#[test]
fn a_held_reply_waits_for_the_delete_and_one_the_watch_delivered_first_is_retried() {
    let x = id(1);
    let (mut t, _) = joined(snapshot(10, vec![me()], &[x], vec![]));
    assert_eq!(acquires(&t.decide()), BTreeSet::from([x]));
    // Someone else holds it at the Txn's revision 12: wait for its delete.
    let held = |seen_at| Acquire::Held {
        lease: 300,
        create_rev: 11,
        seen_at,
    };
    assert!(t.acquired(&[x], Some(vec![(x, held(12))])).is_empty());
    assert!(
        t.decide().is_empty(),
        "no retry until the watch says it is gone"
    );
    t.reservation(Some(x), 13, Reservation::Delete);
    assert_eq!(acquires(&t.decide()), BTreeSet::from([x]));
    // Taken again by someone else (seen held at 14), and deleted at 15, the delete delivered
    // by the watch before the reply: free, retried at once.
    t.reservation(Some(x), 15, Reservation::Delete);
    assert!(t.acquired(&[x], Some(vec![(x, held(14))])).is_empty());
    assert_eq!(acquires(&t.decide()), BTreeSet::from([x]));
    // A delete the watch delivered during the Txn but of an older incarnation (before the
    // revision the Txn saw it held at) frees nothing.
    t.reservation(Some(x), 16, Reservation::Delete);
    assert!(t.acquired(&[x], Some(vec![(x, held(17))])).is_empty());
    assert!(t.decide().is_empty(), "held since 17: wait");
    t.reservation(Some(x), 18, Reservation::Delete);
    assert_eq!(acquires(&t.decide()), BTreeSet::from([x]));
}

#[test]
fn a_failed_batch_is_tried_again_when_the_session_says_so() {
    let (x, y) = (id(1), id(2));
    let (mut t, _) = joined(snapshot(10, vec![me()], &[x, y], vec![]));
    let batch: Vec<NodeId> = acquires(&t.decide()).into_iter().collect();
    assert!(t.acquired(&batch, None).is_empty());
    assert!(t.decide().is_empty(), "not in a tight loop");
    t.retry(batch.clone());
    assert_eq!(acquires(&t.decide()), batch.into_iter().collect());
}

#[test]
fn a_lost_reply_is_adopted_and_a_failed_batch_retried() {
    let (x, y) = (id(1), id(2));
    let (mut t, _) = joined(snapshot(10, vec![me()], &[x, y], vec![]));
    let batch: Vec<NodeId> = acquires(&t.decide()).into_iter().collect();
    assert!(t.acquired(&batch, None).is_empty());
    assert!(t.decide().is_empty());
    // A failed batch is retried by the next sweep over every node.
    t.mark_all_dirty();
    let batch: Vec<NodeId> = acquires(&t.decide()).into_iter().collect();
    assert_eq!(batch.len(), 2);
    // The reply says "held by your own lease": an earlier attempt committed.
    let ours = Acquire::Held {
        lease: MY_LEASE,
        create_rev: 11,
        seen_at: 12,
    };
    let fx = t.acquired(&batch, Some(vec![(x, ours), (y, Acquire::Gone)]));
    assert_eq!(
        fx,
        [Effect::Start {
            id: x,
            token: FenceToken(11)
        }]
    );
    assert!(t.decide().is_empty(), "a node that is gone is not retried");
    // A reservation on our lease that the watch shows us first is adopted too.
    let z = id(3);
    t.node_put(z, Ok(("ipmi".into(), String::new())));
    let fx = t.reservation(
        Some(z),
        14,
        Reservation::Put {
            create_rev: 14,
            lease: MY_LEASE,
        },
    );
    assert_eq!(
        fx,
        [Effect::Start {
            id: z,
            token: FenceToken(14)
        }]
    );
    // Its own put seen again is not a second start.
    let again = Reservation::Put {
        create_rev: 14,
        lease: MY_LEASE,
    };
    assert!(t.reservation(Some(z), 14, again).is_empty());
}

#[test]
fn a_deleted_node_is_stopped_then_released() {
    let nodes = ids(1..4);
    let (mut t, _) = joined(snapshot(5, vec![me()], &nodes, vec![]));
    let mut rev = 5;
    let tokens = acquire_all(&mut t, &mut rev);
    let x = nodes[0];
    t.node_deleted(x);
    let fx = t.decide();
    assert_eq!(fx, [Effect::Stop(vec![x])]);
    assert!(t.decide().is_empty(), "no release while the actor runs");
    t.actor_stopped(x, tokens[&x], crate::supervisor::REASON_RELEASED);
    assert_eq!(t.decide(), [Effect::Release(vec![(x, tokens[&x])])]);
    // A release that failed goes out again.
    t.release_failed(vec![(x, tokens[&x])]);
    assert_eq!(t.decide(), [Effect::Release(vec![(x, tokens[&x])])]);
    assert_eq!(t.nodes(), 2);
}

#[test]
fn a_driver_or_group_change_moves_the_node() {
    let nodes = ids(1..21);
    let (mut t, _) = joined(snapshot(
        5,
        vec![me(), conductor("b", 200, &["ipmi"])],
        &nodes,
        vec![],
    ));
    let mut rev = 5;
    let tokens = acquire_all(&mut t, &mut rev);
    let x = *tokens.keys().next().expect("a owns some ipmi node");
    // Only a serves redfish: a node b owned moves to a.
    let y = *nodes.iter().find(|n| !tokens.contains_key(n)).unwrap();
    t.node_put(y, Ok(("redfish".into(), String::new())));
    assert_eq!(acquires(&t.decide()), BTreeSet::from([y]));
    rev += 1;
    let reserved = Some(vec![(y, Acquire::Acquired(FenceToken(rev)))]);
    for (n, token) in starts(&t.acquired(&[y], reserved)) {
        t.actor_started(n, token);
    }
    // A group nobody serves: the winner over every live conductor holds it as caretaker, and
    // x's winner over a and b is a (a won it when both served it).
    t.node_put(x, Ok(("ipmi".into(), "rack9".into())));
    assert!(t.decide().is_empty(), "a keeps x as its caretaker");
    assert!(t.runs(&x));
    // A conductor of rack9 joins: x is handed to it (stopped first, then released).
    let mut rack9 = conductor("c", 300, &["ipmi"]);
    rack9.conductor_group = "rack9".into();
    t.conductor_put(rack9, Instant::now());
    assert_eq!(stops(&t.decide()), BTreeSet::from([x]));
    t.actor_stopped(x, tokens[&x], crate::supervisor::REASON_RELEASED);
    assert_eq!(releases(&t.decide()), BTreeSet::from([(x, tokens[&x])]));
    // An unreadable spec is placed over every conductor, so that its owner reports it.
    t.node_put(x, Err("garbage".into()));
    let mine_now = winner(&x, &["a", "b", "c"]) == ME;
    assert_eq!(acquires(&t.decide()).contains(&x), mine_now);
}

#[test]
fn a_node_nobody_serves_gets_a_caretaker_and_moves_when_a_capable_conductor_joins() {
    // b serves only redfish; a (ipmi, redfish) and c (ipmi) remain after b leaves.
    let nodes = ids(1..41);
    let mut snap = snapshot(
        5,
        vec![
            me(),
            conductor("b", 200, &["redfish"]),
            conductor("c", 300, &["ipmi"]),
        ],
        &[],
        vec![],
    );
    snap.nodes = nodes
        .iter()
        .map(|n| SnapshotNode {
            id: *n,
            placement: Ok(("fake-hardware".into(), String::new())),
            mod_rev: 1,
        })
        .collect();
    let (mut t, _) = joined(snap);
    // Nobody serves fake-hardware: every node has a caretaker, the winner over a, b and c.
    let mine: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| winner(n, &["a", "b", "c"]) == ME)
        .copied()
        .collect();
    assert!(!mine.is_empty() && mine.len() < nodes.len());
    let mut rev = 5;
    let tokens = acquire_all(&mut t, &mut rev);
    assert_eq!(tokens.keys().copied().collect::<BTreeSet<_>>(), mine);
    // b leaves: the caretakers are recomputed over a and c; a never holds what c should.
    t.conductor_left("b");
    let now_mine: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| winner(n, &["a", "c"]) == ME)
        .copied()
        .collect();
    // (acquire_all asserts that nothing a holds is stopped or released meanwhile)
    let gained = acquire_all(&mut t, &mut rev);
    assert_eq!(
        gained.keys().copied().collect::<BTreeSet<_>>(),
        &now_mine - &mine
    );
    // A conductor that serves fake-hardware joins: every node a holds as caretaker goes to it.
    t.conductor_put(conductor("d", 400, &["fake-hardware"]), Instant::now());
    assert_eq!(stops(&t.decide()), now_mine);
}

#[test]
fn resync_stops_what_was_lost_and_respects_others() {
    let (x, y, w) = (id(1), id(2), id(4));
    let (mut t, _) = joined(snapshot(5, vec![me()], &[x, y], vec![]));
    let mut rev = 5;
    let tokens = acquire_all(&mut t, &mut rev);
    assert_eq!(tokens.len(), 2);
    // A watch was lost; the new read shows x still ours, y's reservation gone (deleted from
    // outside), and a new node w held by another conductor.
    let fx = t.resync_snapshot(snapshot(
        30,
        vec![me()],
        &[x, y, w],
        vec![held(x, MY_LEASE, tokens[&x].0), held(w, 300, 26)],
    ));
    assert_eq!(fx, [Effect::Stop(vec![y])]);
    assert!(t.runs(&x) && !t.runs(&y));
    // w would be ours but is held: no attempt; y, lost, is never released by us.
    let fx = t.decide();
    assert!(fx.is_empty(), "{fx:?}");
    t.actor_stopped(y, tokens[&y], crate::supervisor::REASON_RELEASED);
    let fx = t.decide();
    assert!(releases(&fx).is_empty(), "{fx:?}");
    // Once its actor is gone, y can be reserved again.
    assert_eq!(acquires(&fx), BTreeSet::from([y]));
    // The resync itself is a sweep over every node.
    assert_eq!(t.members(), 1);
    assert_eq!(t.nodes(), 3);
}

#[test]
fn resync_adopts_a_reservation_on_our_lease_and_keeps_its_actor() {
    let x = id(1);
    let (mut t, _) = joined(snapshot(5, vec![me()], &[x], vec![]));
    assert_eq!(t.decide(), [Effect::Acquire(vec![x])]);
    // The watch is lost while the batch is in flight; the batch fails on our side although
    // etcd committed it, and the re-read shows the reservation on our lease.
    assert!(t.acquired(&[x], None).is_empty());
    let fx = t.resync_snapshot(snapshot(30, vec![me()], &[x], vec![held(x, MY_LEASE, 25)]));
    assert_eq!(
        fx,
        [Effect::Start {
            id: x,
            token: FenceToken(25)
        }]
    );
    assert!(t.runs(&x));
    t.actor_started(x, FenceToken(25));
    assert!(t.decide().is_empty());
    assert!(t.steady());
}

#[test]
fn a_reservation_deleted_from_outside_stops_the_actor_without_release() {
    let x = id(1);
    let (mut t, _) = joined(snapshot(5, vec![me()], &[x], vec![]));
    let mut rev = 5;
    let token = acquire_all(&mut t, &mut rev)[&x];
    // An older delete (of a previous reservation) is not ours.
    assert!(t
        .reservation(Some(x), token.0 - 1, Reservation::Delete)
        .is_empty());
    assert!(t.runs(&x));
    assert_eq!(
        t.reservation(Some(x), token.0 + 3, Reservation::Delete),
        [Effect::Stop(vec![x])]
    );
    t.actor_stopped(x, token, crate::supervisor::REASON_RELEASED);
    assert!(releases(&t.decide()).is_empty());
    // A key that names no node changes nothing.
    assert!(t.reservation(None, 50, Reservation::Delete).is_empty());
}

#[test]
fn an_actor_that_ends_on_its_own_keeps_its_reservation() {
    let (x, y) = (id(1), id(2));
    let (mut t, _) = joined(snapshot(5, vec![me()], &[x, y], vec![]));
    let mut rev = 5;
    let tokens = acquire_all(&mut t, &mut rev);
    assert_eq!(t.running(), 2);
    // Given up after crashes: no other conductor is dragged into the crash loop.
    t.actor_stopped(x, tokens[&x], "gave up after repeated crashes");
    assert_eq!(t.running(), 1);
    assert!(t.decide().is_empty(), "neither released nor reserved again");
    // A stop report for an older token is not about the current actor.
    t.actor_stopped(y, FenceToken(tokens[&y].0 - 100), REASON_FENCED);
    assert!(t.runs(&y));
    // Fenced (its write was refused): forgotten, not released; placement may try again.
    t.actor_stopped(y, tokens[&y], REASON_FENCED);
    let fx = t.decide();
    assert!(releases(&fx).is_empty());
    assert_eq!(acquires(&fx), BTreeSet::from([y]));
}

/// A small deterministic generator, so that a failing sequence replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a node actor does in the simulated supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    Stopping,
}

/// Random sequences of membership changes, node changes, outside deletes, reservation replies
/// and actor reports. The table must never release a reservation whose actor has not reported
/// stopped, and never start a second actor for a node.
#[test]
fn release_never_precedes_the_actor_stop_report() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let nodes = ids(1..25);
        let (mut t, _) = joined(snapshot(1, vec![me()], &nodes, vec![]));
        let mut rev = 1i64;
        // etcd's reservations: node -> (lease, create_rev).
        let mut store: HashMap<NodeId, (i64, i64)> = HashMap::new();
        let mut actors: HashMap<NodeId, (FenceToken, Life)> = HashMap::new();
        let mut reports: VecDeque<NodeEvent> = VecDeque::new();
        let mut stopped_reported: HashSet<(NodeId, FenceToken)> = HashSet::new();
        let mut pending: Vec<Vec<NodeId>> = Vec::new();
        let mut releases_seen = 0;
        for step in 0..400 {
            let ctx = format!("seed {seed} step {step}");
            let mut fx = Vec::new();
            match rng.below(9) {
                0 => {
                    let name = ["b", "c"][rng.below(2)];
                    if rng.below(2) == 0 {
                        t.conductor_put(conductor(name, 200, &["ipmi"]), Instant::now());
                    } else {
                        t.conductor_left(name);
                    }
                }
                1 => {
                    let n = nodes[rng.below(nodes.len())];
                    match rng.below(3) {
                        0 => t.node_deleted(n),
                        1 => t.node_put(n, Ok(("ipmi".into(), String::new()))),
                        _ => t.node_put(n, Ok(("ipmi".into(), "rack9".into()))),
                    }
                }
                2 if !pending.is_empty() => {
                    let batch = pending.swap_remove(rng.below(pending.len()));
                    let outcomes = if rng.below(6) == 0 {
                        None
                    } else {
                        Some(
                            batch
                                .iter()
                                .map(|n| match store.get(n) {
                                    Some(&(lease, create_rev)) => (
                                        *n,
                                        Acquire::Held {
                                            lease,
                                            create_rev,
                                            seen_at: rev,
                                        },
                                    ),
                                    None => {
                                        rev += 1;
                                        store.insert(*n, (MY_LEASE, rev));
                                        (*n, Acquire::Acquired(FenceToken(rev)))
                                    }
                                })
                                .collect(),
                        )
                    };
                    fx.extend(t.acquired(&batch, outcomes));
                }
                3 | 4 => {
                    let stopping: Vec<NodeId> = actors
                        .iter()
                        .filter(|(_, (_, l))| *l == Life::Stopping)
                        .map(|(n, _)| *n)
                        .collect();
                    if !stopping.is_empty() {
                        let n = stopping[rng.below(stopping.len())];
                        let (token, _) = actors.remove(&n).unwrap();
                        reports.push_back(NodeEvent::Stopped {
                            id: n,
                            token,
                            reason: crate::supervisor::REASON_RELEASED.into(),
                        });
                    }
                }
                5 => {
                    if let Some(ev) = reports.pop_front() {
                        match ev {
                            NodeEvent::Started { id, token } => t.actor_started(id, token),
                            NodeEvent::Stopped { id, token, reason } => {
                                stopped_reported.insert((id, token));
                                t.actor_stopped(id, token, &reason);
                            }
                        }
                    }
                }
                6 if rng.below(4) == 0 => {
                    // A reservation deleted from outside (an operator, or an expired lease).
                    let ours: Vec<NodeId> = store.keys().copied().collect();
                    if !ours.is_empty() {
                        let n = ours[rng.below(ours.len())];
                        store.remove(&n);
                        rev += 1;
                        fx.extend(t.reservation(Some(n), rev, Reservation::Delete));
                    }
                }
                _ => fx.extend(t.decide()),
            }
            for effect in fx {
                match effect {
                    Effect::Start { id, token } => {
                        assert!(
                            !actors.contains_key(&id),
                            "{ctx}: a second actor for {id} while one still runs"
                        );
                        assert_eq!(store.get(&id), Some(&(MY_LEASE, token.0)), "{ctx}");
                        actors.insert(id, (token, Life::Running));
                        reports.push_back(NodeEvent::Started { id, token });
                    }
                    Effect::Stop(ids) => {
                        for n in ids {
                            if let Some(a) = actors.get_mut(&n) {
                                a.1 = Life::Stopping;
                            }
                        }
                    }
                    Effect::Acquire(batch) => pending.push(batch),
                    Effect::Release(batch) => {
                        for (n, token) in batch {
                            assert!(
                                stopped_reported.contains(&(n, token)),
                                "{ctx}: release of {n} (token {}) before its actor reported stopped",
                                token.0
                            );
                            assert!(actors.get(&n).is_none_or(|a| a.0 != token), "{ctx}");
                            releases_seen += 1;
                            if store.get(&n).is_some_and(|r| r.1 == token.0) {
                                store.remove(&n);
                                rev += 1;
                                let fx = t.reservation(Some(n), rev, Reservation::Delete);
                                assert!(fx.is_empty(), "{ctx}: {fx:?}");
                            }
                        }
                    }
                }
            }
        }
        assert!(
            releases_seen > 0,
            "seed {seed}: the sequence never handed a node over"
        );
    }
}

#[test]
fn the_periodic_look_covers_a_large_fleet_in_slices() {
    let mut t = Ownership::new("c1", Duration::from_millis(0), 2, 120);
    let all = ids(0..120_000);
    for id in &all {
        t.node_put(*id, Ok(("fake-hardware".into(), String::new())));
    }
    t.dirty.clear();
    t.dirty_all = false;
    let slices = 120_000usize.div_ceil(super::SWEEP_SLICE);
    let mut seen = HashSet::new();
    for tick in 0..slices as u64 {
        t.sweep_tick(tick);
        assert!(!t.dirty_all, "a large fleet is never looked at whole");
        assert!(
            t.dirty.len() < 2 * super::SWEEP_SLICE,
            "{} in one slice",
            t.dirty.len()
        );
        seen.extend(t.dirty.drain());
    }
    assert_eq!(seen.len(), all.len(), "every node once per round of ticks");
    // A small fleet is looked at whole at every tick.
    let mut small = Ownership::new("c1", Duration::from_millis(0), 2, 120);
    small.node_put(all[0], Ok(("fake-hardware".into(), String::new())));
    small.sweep_tick(7);
    assert!(small.dirty_all);
}

#[test]
fn small_reservation_batches_gather_while_one_is_in_flight_full_ones_go_side_by_side() {
    // Only this conductor: it wants every node. Batches of 4, 2 in flight.
    let (mut t, _) = joined(snapshot(5, vec![me()], &[], vec![]));
    let put = |t: &mut Ownership, range| {
        for n in ids(range) {
            t.node_put(n, Ok(("ipmi".into(), String::new())));
        }
    };
    // Nodes come one at a time: the first goes alone, the next two wait for it.
    put(&mut t, 1..2);
    let first = t.decide();
    assert_eq!(acquires(&first), BTreeSet::from([id(1)]));
    put(&mut t, 2..3);
    assert!(
        acquires(&t.decide()).is_empty(),
        "a second small batch went"
    );
    put(&mut t, 3..4);
    assert!(acquires(&t.decide()).is_empty(), "a third small batch went");
    // The first is answered: the two waiting go together, in one transaction.
    let fx = t.acquired(
        &[id(1)],
        Some(vec![(id(1), Acquire::Acquired(FenceToken(6)))]),
    );
    let fx: Vec<Effect> = fx.into_iter().chain(t.decide()).collect();
    assert_eq!(batches(&fx), [vec![id(2), id(3)]]);
    // A backlog: full batches go side by side although a small one is in flight.
    put(&mut t, 10..18);
    let sizes: Vec<usize> = batches(&t.decide()).iter().map(Vec::len).collect();
    assert_eq!(sizes, [4], "one slot left of two: one full batch");
}

//! Unit tests of the nodes of held buckets: what starts here, what is handed on, the order of
//! hand-on and take-back, bucket stops, and over random input sequences against a model of
//! etcd and of the delegates, the invariant that a node never has two owners.

use super::*;

const ME: &str = "a";

fn conductor(name: &str, drivers: &[&str]) -> ConductorRecord {
    ConductorRecord {
        name: name.into(),
        address: String::new(),
        console_address: String::new(),
        drivers: drivers.iter().map(|d| d.to_string()).collect(),
        conductor_group: String::new(),
        version: String::new(),
        started_at_ms: 0,
        lease_id: 1,
        running: 0,
        sync: Default::default(),
        hardware: Vec::new(),
        buckets: true,
    }
}

fn members(list: &[ConductorRecord]) -> BTreeMap<String, ConductorRecord> {
    list.iter().map(|c| (c.name.clone(), c.clone())).collect()
}

/// Node `n` of bucket `b` (its uuid starts with the bucket's three digits).
fn node(b: u16, n: u128) -> NodeId {
    NodeId(uuid::Uuid::from_u128(((b as u128) << 116) | n))
}

fn on(driver: &str) -> Result<(String, String), String> {
    Ok((driver.into(), String::new()))
}

const B: Bucket = Bucket(0x7f3);
const TOKEN: FenceToken = FenceToken(-40);

fn starts(fx: &[NodeEffect]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = fx
        .iter()
        .filter_map(|e| match e {
            NodeEffect::Start { id, token } => {
                assert!(token.is_bucket());
                Some(*id)
            }
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn stops(fx: &[NodeEffect]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = fx
        .iter()
        .filter_map(|e| match e {
            NodeEffect::Stop(ids) => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    v.sort();
    v
}

fn changes(fx: &[NodeEffect]) -> Vec<Delegate> {
    fx.iter()
        .filter_map(|e| match e {
            NodeEffect::Delegate(c) => Some(c.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn stopped_buckets(fx: &[NodeEffect]) -> Vec<Bucket> {
    fx.iter()
        .filter_map(|e| match e {
            NodeEffect::BucketStopped(b, _) => Some(*b),
            _ => None,
        })
        .collect()
}

/// A table of "a" (serving ipmi) with `b` acquired and read: `nodes` by driver.
fn holding(
    list: &[ConductorRecord],
    nodes: &[(NodeId, &str)],
    delegations: Vec<(NodeId, Result<String, String>)>,
) -> (BucketNodes, Vec<NodeEffect>) {
    let mut t = BucketNodes::new(ME);
    t.set_members(&members(list));
    assert_eq!(t.bucket_started(B, TOKEN), [NodeEffect::Read(B, TOKEN)]);
    let nodes = nodes.iter().map(|(id, d)| (*id, on(d))).collect();
    assert!(t.bucket_read(B, TOKEN, 45, nodes, delegations).is_empty());
    let fx = t.decide();
    (t, fx)
}

#[test]
fn nodes_this_conductor_serves_start_here_under_the_bucket_token() {
    let me = conductor(ME, &["ipmi"]);
    let ids = [node(0x7f3, 1), node(0x7f3, 2)];
    let (mut t, fx) = holding(&[me], &[(ids[0], "ipmi"), (ids[1], "ipmi")], vec![]);
    assert_eq!(starts(&fx), ids.to_vec());
    assert!(changes(&fx).is_empty());
    assert!(!t.steady(), "not started yet");
    for id in ids {
        t.actor_started(id, TOKEN);
        assert!(t.runs(&id));
    }
    // A report with another token is someone else's actor.
    t.actor_started(ids[0], FenceToken(-41));
    assert_eq!(t.running(), 2);
    assert!(t.steady());
    assert!(t.decide().is_empty(), "nothing more to do");
}

#[test]
fn a_node_another_conductor_serves_is_handed_on_and_never_started_here() {
    let (me, w) = (conductor(ME, &["ipmi"]), conductor("w", &["redfish"]));
    let x = node(0x7f3, 1);
    let (mut t, fx) = holding(&[me, w], &[(x, "redfish")], vec![]);
    assert!(starts(&fx).is_empty());
    assert_eq!(
        changes(&fx),
        [Delegate {
            id: x,
            token: TOKEN,
            to: Some("w".into())
        }]
    );
    assert!(t.delegated(&changes(&fx), Some(vec![true]), 50).is_empty());
    assert!(t.decide().is_empty());
    assert!(!t.runs(&x));
    assert!(t.steady());
}

#[test]
fn a_caretaken_node_is_handed_on_only_after_its_actor_stopped() {
    let me = conductor(ME, &["ipmi"]);
    let x = node(0x7f3, 1);
    // Nobody serves redfish: "a" holds it as its caretaker.
    let (mut t, fx) = holding(std::slice::from_ref(&me), &[(x, "redfish")], vec![]);
    assert_eq!(starts(&fx), [x]);
    t.actor_started(x, TOKEN);
    // A conductor that serves it joins: stop first, no delegation yet.
    t.set_members(&members(&[me, conductor("w", &["redfish"])]));
    let fx = t.decide();
    assert_eq!(stops(&fx), [x]);
    assert!(
        changes(&fx).is_empty(),
        "handed on before its actor stopped: {fx:?}"
    );
    assert!(!t.runs(&x));
    assert!(t.decide().is_empty());
    // Stopped: now the delegation.
    let fx = t.actor_stopped(x, TOKEN, "released");
    assert_eq!(
        changes(&fx),
        [Delegate {
            id: x,
            token: TOKEN,
            to: Some("w".into())
        }]
    );
    assert_eq!(t.running(), 0);
}

#[test]
fn a_node_is_taken_back_by_naming_nobody_then_deleting_once_the_reservation_is_gone() {
    let me = conductor(ME, &["ipmi"]);
    let w = conductor("w", &["redfish"]);
    let x = node(0x7f3, 1);
    let (mut t, fx) = holding(
        &[me.clone(), w],
        &[(x, "redfish")],
        vec![(x, Ok("w".into()))],
    );
    assert!(fx.is_empty(), "the delegation is already right: {fx:?}");
    // w leaves and nobody else serves redfish: "a" takes it back as caretaker.
    t.set_members(&members(&[me]));
    let fx = t.decide();
    let step1 = changes(&fx);
    assert_eq!(step1.len(), 1);
    assert_eq!(step1[0].to.as_deref(), Some(""), "first: name nobody");
    assert!(starts(&fx).is_empty());
    assert!(t.delegated(&step1, Some(vec![true]), 60).is_empty());
    let fx = t.decide();
    let step2 = changes(&fx);
    assert_eq!(step2[0].to, None, "then: delete");
    // Refused at 70: the delegate still holds its reservation.
    assert!(t.delegated(&step2, Some(vec![false]), 70).is_empty());
    assert!(t.decide().is_empty(), "waits for the reservation's delete");
    t.reservation_deleted(x, 69);
    assert!(
        t.decide().is_empty(),
        "a delete before the refusal is not news"
    );
    t.reservation_deleted(x, 71);
    let fx = t.decide();
    assert_eq!(changes(&fx)[0].to, None, "tried again after the delete");
    assert!(starts(&fx).is_empty());
    assert!(t.delegated(&changes(&fx), Some(vec![true]), 72).is_empty());
    assert_eq!(
        starts(&t.decide()),
        [x],
        "started only once the delegation is gone"
    );
}

#[test]
fn a_refusal_overtaken_by_the_reservations_delete_is_tried_again() {
    let me = conductor(ME, &["ipmi"]);
    let x = node(0x7f3, 1);
    let (mut t, fx) = holding(&[me], &[(x, "ipmi")], vec![(x, Ok(String::new()))]);
    let del = changes(&fx);
    assert_eq!(del[0].to, None);
    // The delete came through the watch before the refusal's answer.
    t.reservation_deleted(x, 80);
    assert!(t.delegated(&del, Some(vec![false]), 79).is_empty());
    assert_eq!(changes(&t.decide())[0].to, None);
}

#[test]
fn a_bucket_is_reported_stopped_only_after_its_nodes_and_changes_are_done() {
    let (me, w) = (conductor(ME, &["ipmi"]), conductor("w", &["redfish"]));
    let (x, y, z) = (node(0x7f3, 1), node(0x7f3, 2), node(0x7f3, 3));
    let (mut t, fx) = holding(
        &[me, w],
        &[(x, "ipmi"), (y, "ipmi"), (z, "redfish")],
        vec![],
    );
    assert_eq!(starts(&fx), [x, y]);
    let in_flight = changes(&fx);
    t.actor_started(x, TOKEN);
    let fx = t.bucket_stop(&[B]);
    assert_eq!(stops(&fx), [x, y]);
    assert!(stopped_buckets(&fx).is_empty());
    assert!(
        t.decide().is_empty(),
        "nothing starts or changes in a stopping bucket"
    );
    assert!(t.actor_stopped(x, TOKEN, "released").is_empty());
    assert!(
        t.actor_stopped(y, TOKEN, "released").is_empty(),
        "z's delegation is in flight"
    );
    let fx = t.delegated(&in_flight, Some(vec![true]), 90);
    assert_eq!(fx, [NodeEffect::BucketStopped(B, TOKEN)]);
    assert!(!t.follows(&x));
    assert_eq!(t.running(), 0);
    // The bucket comes back (another session of the same conductor): read anew.
    assert_eq!(
        t.bucket_started(B, FenceToken(-95)),
        [NodeEffect::Read(B, FenceToken(-95))]
    );
}

#[test]
fn a_bucket_stopped_while_its_read_is_in_flight_is_let_go_at_once() {
    let mut t = BucketNodes::new(ME);
    t.set_members(&members(&[conductor(ME, &["ipmi"])]));
    t.bucket_started(B, TOKEN);
    assert_eq!(t.bucket_stop(&[B]), [NodeEffect::BucketStopped(B, TOKEN)]);
    let x = node(0x7f3, 1);
    assert!(t
        .bucket_read(B, TOKEN, 45, vec![(x, on("ipmi"))], vec![])
        .is_empty());
    assert!(t.decide().is_empty(), "a late read starts nothing");
}

#[test]
fn a_fenced_actor_is_taken_back_like_a_delegated_node() {
    let me = conductor(ME, &["ipmi"]);
    let x = node(0x7f3, 1);
    let (mut t, _) = holding(&[me], &[(x, "ipmi")], vec![]);
    t.actor_started(x, TOKEN);
    assert!(t.actor_stopped(x, TOKEN, REASON_FENCED).is_empty());
    let fx = t.decide();
    assert!(starts(&fx).is_empty(), "not started again at once");
    assert_eq!(
        changes(&fx)[0].to,
        None,
        "the delete that needs the reservation gone"
    );
}

#[test]
fn nodes_enrolled_later_and_deleted_nodes() {
    let me = conductor(ME, &["ipmi"]);
    let (x, other) = (node(0x7f3, 1), node(0x123, 1));
    let (mut t, _) = holding(&[me], &[], vec![]);
    let y = node(0x7f3, 2);
    t.node_put(y, on("ipmi"), 45);
    t.node_put(x, on("ipmi"), 46);
    t.node_put(other, on("ipmi"), 47);
    assert_eq!(
        starts(&t.decide()),
        [x],
        "only news of nodes of held buckets, after the read"
    );
    t.actor_started(x, TOKEN);
    assert!(t.node_deleted(x, 44).is_empty(), "older than the read");
    assert_eq!(stops(&t.node_deleted(x, 48)), [x]);
    assert!(t.actor_stopped(x, TOKEN, "released").is_empty());
    assert!(t.decide().is_empty());
    assert_eq!(t.held(), 0);
}

#[test]
fn news_that_overtakes_the_buckets_read_is_applied_with_it() {
    let me = conductor(ME, &["ipmi"]);
    let (x, y, z) = (node(0x7f3, 1), node(0x7f3, 2), node(0x7f3, 3));
    let mut t = BucketNodes::new(ME);
    t.set_members(&members(&[me]));
    t.bucket_started(B, TOKEN);
    // While the read is in flight the watch brings: y created after the read (rev 50), z
    // created before it (rev 40, also in the read), and x deleted after it (rev 51).
    t.node_put(y, on("ipmi"), 50);
    t.node_put(z, on("ipmi"), 40);
    assert!(t.node_deleted(x, 51).is_empty());
    // w, in the read at its spec of rev 30, changed at rev 49: the read's records of it are
    // older than the watch's (its actor must read its own).
    let w = node(0x7f3, 4);
    t.node_put(w, on("ipmi"), 49);
    assert!(t.decide().is_empty(), "nothing before the read");
    assert!(t.overtaken(&w, 45), "changed after the read");
    assert!(
        !t.overtaken(&w, 49),
        "a read at the change's revision has it"
    );
    assert!(!t.overtaken(&z, 45), "z's news is the read's own");
    assert!(!t.overtaken(&x, 45), "deleted: it does not start at all");
    let read = vec![(x, on("ipmi")), (z, on("ipmi")), (w, on("ipmi"))];
    assert!(t.bucket_read(B, TOKEN, 45, read, vec![]).is_empty());
    assert_eq!(
        starts(&t.decide()),
        [y, z, w],
        "y from the watch, x deleted after the read"
    );
    assert!(!t.overtaken(&w, 45), "the news went with the read");
}

#[test]
fn an_actor_that_gives_up_keeps_its_node() {
    let me = conductor(ME, &["ipmi"]);
    let x = node(0x7f3, 1);
    let (mut t, _) = holding(&[me], &[(x, "ipmi")], vec![]);
    t.actor_started(x, TOKEN);
    assert!(t.actor_stopped(x, TOKEN, "crashed too often").is_empty());
    assert!(t.decide().is_empty(), "not restarted, not handed on");
    assert_eq!(t.held(), 1);
}

/// xorshift64: deterministic random inputs.
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

/// A model of etcd's keys for the bucket's nodes and of the delegates: a delegate reserves a
/// node while the delegation names it and no reservation exists, and (some steps later) lets
/// it go once the delegation no longer names it. Random orders of every input; after each
/// step no node may run here while a delegate holds its reservation, and nothing may be handed
/// on while its actor runs here.
#[test]
fn a_node_never_has_two_owners_over_random_sequences() {
    let drivers = ["ipmi", "redfish", "idrac"];
    let candidates = [
        conductor(ME, &["ipmi"]),
        conductor("w1", &["redfish"]),
        conductor("w2", &["redfish", "idrac"]),
    ];
    // How often each path ran, over all seeds: the test must exercise them.
    let (mut started, mut handed_on, mut taken_back, mut refused) = (0, 0, 0, 0);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let ids: Vec<NodeId> = (1..=6).map(|n| node(0x7f3, n)).collect();
        let mut t = BucketNodes::new(ME);
        let mut live = vec![candidates[0].clone(), candidates[1].clone()];
        t.set_members(&members(&live));
        let mut rev: i64 = 100;
        // etcd: delegation per node, reservation holder per node.
        let mut delegation: HashMap<NodeId, String> = HashMap::new();
        let mut reservation: HashMap<NodeId, String> = HashMap::new();
        // Actors running here (started and not yet reported stopped).
        let mut here: HashSet<NodeId> = HashSet::new();
        let mut pending: Vec<NodeEffect> = Vec::new();
        let mut stop_reports: Vec<NodeId> = Vec::new();
        t.bucket_started(B, TOKEN);
        let nodes = ids
            .iter()
            .map(|id| (*id, on(drivers[rng.below(3)])))
            .collect();
        pending.extend(t.bucket_read(B, TOKEN, rev, nodes, vec![]));
        for step in 0..120 {
            let ctx = format!("seed {seed} step {step}");
            pending.extend(t.decide());
            // Apply some of the effects, in order.
            let mut rest = Vec::new();
            for fx in pending.drain(..) {
                if rng.below(3) == 0 {
                    rest.push(fx);
                    continue;
                }
                match fx {
                    NodeEffect::Start { id, .. } => {
                        assert!(
                            !reservation.contains_key(&id),
                            "{ctx}: {id} started while {:?} holds it",
                            reservation.get(&id)
                        );
                        assert!(
                            !delegation.contains_key(&id),
                            "{ctx}: {id} started while delegated to {:?}",
                            delegation.get(&id)
                        );
                        assert!(here.insert(id), "{ctx}: {id} started twice");
                        started += 1;
                        t.actor_started(id, TOKEN);
                    }
                    NodeEffect::Stop(list) => stop_reports.extend(list),
                    NodeEffect::Delegate(list) => {
                        rev += 1;
                        let made: Vec<bool> = list
                            .iter()
                            .map(|c| match &c.to {
                                Some(to) => {
                                    assert!(
                                        !here.contains(&c.id),
                                        "{ctx}: {} handed on while running here",
                                        c.id
                                    );
                                    handed_on += usize::from(!to.is_empty());
                                    delegation.insert(c.id, to.clone());
                                    true
                                }
                                None if reservation.contains_key(&c.id) => {
                                    refused += 1;
                                    false
                                }
                                None => {
                                    taken_back += 1;
                                    delegation.remove(&c.id);
                                    true
                                }
                            })
                            .collect();
                        let fx = t.delegated(&list, Some(made), rev);
                        rest.extend(fx);
                    }
                    other => rest.push(other),
                }
            }
            pending = rest;
            // Report some stops.
            if !stop_reports.is_empty() && rng.below(2) == 0 {
                let id = stop_reports.remove(rng.below(stop_reports.len()));
                if here.remove(&id) {
                    pending.extend(t.actor_stopped(id, TOKEN, "released"));
                }
            }
            // Delegates act.
            for id in &ids {
                match (delegation.get(id), reservation.get(id)) {
                    (Some(to), None)
                        if !to.is_empty()
                            && live.iter().any(|c| &c.name == to)
                            && rng.below(2) == 0 =>
                    {
                        reservation.insert(*id, to.clone());
                    }
                    (d, Some(holder)) if d != Some(holder) && rng.below(2) == 0 => {
                        reservation.remove(id);
                        rev += 1;
                        t.reservation_deleted(*id, rev);
                    }
                    _ => {}
                }
            }
            // Membership and driver changes now and then.
            match rng.below(12) {
                0 => {
                    let c = &candidates[1 + rng.below(2)];
                    if let Some(i) = live.iter().position(|l| l.name == c.name) {
                        live.remove(i);
                        // A dead delegate's reservations go with its lease.
                        let gone: Vec<NodeId> = reservation
                            .iter()
                            .filter(|(_, h)| **h == c.name)
                            .map(|(id, _)| *id)
                            .collect();
                        for id in gone {
                            reservation.remove(&id);
                            rev += 1;
                            t.reservation_deleted(id, rev);
                        }
                    } else {
                        live.push(c.clone());
                    }
                    t.set_members(&members(&live));
                }
                1 => {
                    let id = ids[rng.below(ids.len())];
                    rev += 1;
                    t.node_put(id, on(drivers[rng.below(3)]), rev);
                }
                _ => {}
            }
            for id in &ids {
                if here.contains(id) {
                    assert!(
                        !reservation.contains_key(id),
                        "{ctx}: {id} runs here while {:?} holds its reservation",
                        reservation.get(id)
                    );
                }
            }
        }
    }
    for (what, n) in [
        ("started", started),
        ("handed on", handed_on),
        ("taken back", taken_back),
        ("refused take-backs", refused),
    ] {
        assert!(n >= 100, "only {n} {what} over all seeds");
    }
}

/// A member rewriting its record to report its running actors moves no node and makes no pass
/// over every node; a member joining, leaving or changing what it serves does.
#[test]
fn only_a_change_of_what_placement_reads_looks_at_every_node_again() {
    let mut t = BucketNodes::new(ME);
    let (a, b) = (conductor(ME, &["ipmi"]), conductor("b", &["ipmi"]));
    t.set_members(&members(&[a.clone(), b.clone()]));
    assert!(t.dirty_all);
    t.decide();
    assert!(!t.dirty_all);
    let reported = ConductorRecord {
        running: 5_000,
        sync: ferric_model::SyncReport {
            sweeps: 3,
            ..Default::default()
        },
        ..b.clone()
    };
    t.set_members(&members(&[a.clone(), reported.clone()]));
    assert!(
        !t.dirty_all,
        "a report of running actors is not a placement change"
    );
    let changes = [
        ConductorRecord {
            lease_id: 2,
            ..reported.clone()
        },
        ConductorRecord {
            drivers: vec!["redfish".into()],
            ..reported.clone()
        },
        ConductorRecord {
            conductor_group: "rack2".into(),
            ..reported.clone()
        },
        ConductorRecord {
            buckets: false,
            ..reported.clone()
        },
    ];
    for changed in changes {
        t.set_members(&members(&[a.clone(), reported.clone()]));
        t.decide();
        t.set_members(&members(&[a.clone(), changed.clone()]));
        assert!(t.dirty_all, "{changed:?}");
    }
    t.decide();
    t.set_members(&members(std::slice::from_ref(&a)));
    assert!(t.dirty_all, "a member left");
    t.decide();
    t.set_members(&members(&[a, conductor("c", &["ipmi"])]));
    assert!(t.dirty_all, "another member joined");
}

use super::*;

/// A node id in bucket `b` (its first three hex digits), numbered `n` within it.
fn node(b: u16, n: u16) -> NodeId {
    format!("{b:03x}00000-0000-4000-8000-{n:012x}")
        .parse()
        .unwrap()
}

const B: u16 = 0x0ab;

fn ready_with(specs: &[(NodeId, &str, i64)], read_rev: i64) -> Standby {
    let mut s = Standby::default();
    s.set_wanted(&HashSet::from([Bucket(B)]), &HashSet::new());
    assert_eq!(s.next_fills(2), vec![Bucket(B)]);
    s.filled(
        Bucket(B),
        Some((
            read_rev,
            specs
                .iter()
                .map(|(id, v, r)| (*id, (v.as_bytes().to_vec(), *r)))
                .collect(),
            Vec::new(),
        )),
    );
    assert!(s.ready(Bucket(B)));
    s
}

fn specs_of(t: &Taken) -> Vec<(NodeId, String, i64)> {
    let mut v: Vec<_> = t
        .specs
        .iter()
        .map(|(id, (v, r))| (*id, String::from_utf8(v.clone()).unwrap(), *r))
        .collect();
    v.sort();
    v
}

#[test]
fn news_during_a_fill_newer_than_its_read_wins() {
    let (x, y, z) = (node(B, 1), node(B, 2), node(B, 3));
    let mut s = Standby::default();
    s.set_wanted(&HashSet::from([Bucket(B)]), &HashSet::new());
    assert_eq!(s.next_fills(2), vec![Bucket(B)]);
    assert!(s.next_fills(2).is_empty(), "a bucket is read once");
    // While the read is in flight: x changed after it, y deleted after it, z changed before.
    s.node(x, Some(b"x2"), 12);
    s.node(y, None, 13);
    s.node(z, Some(b"z0"), 5);
    s.filled(
        Bucket(B),
        Some((
            10,
            vec![
                (x, (b"x1".to_vec(), 9)),
                (y, (b"y1".to_vec(), 8)),
                (z, (b"z1".to_vec(), 7)),
            ],
            Vec::new(),
        )),
    );
    s.watched(13);
    let t = s.take(Bucket(B)).expect("ready");
    assert_eq!(t.as_of, 13);
    assert_eq!(
        specs_of(&t),
        vec![(x, "x2".into(), 12), (z, "z1".into(), 7)]
    );
    assert!(s.take(Bucket(B)).is_none(), "taken once");
}

#[test]
fn watch_news_older_than_the_read_does_not_bring_back_a_deleted_node() {
    let x = node(B, 1);
    let mut s = ready_with(&[], 20);
    // The watch lags the fill's read: x was created at 15 and deleted at 18.
    s.node(x, Some(b"x"), 15);
    s.node(x, None, 18);
    s.watched(18);
    let t = s.take(Bucket(B)).unwrap();
    assert!(t.specs.is_empty());
    assert_eq!(t.as_of, 20, "the read is newer than the watch");
}

#[test]
fn ready_buckets_follow_puts_and_deletes() {
    let (x, y) = (node(B, 1), node(B, 2));
    let mut s = ready_with(&[(x, "x1", 3)], 10);
    s.node(x, Some(b"x2"), 11);
    s.node(y, Some(b"y1"), 12);
    s.node(x, None, 14);
    // Another bucket's news is not kept.
    s.node(node(B + 1, 1), Some(b"other"), 15);
    s.watched(15);
    let t = s.take(Bucket(B)).unwrap();
    assert_eq!(specs_of(&t), vec![(y, "y1".into(), 12)]);
    assert_eq!(t.as_of, 15);
}

#[test]
fn a_lost_watch_sends_every_bucket_back_to_be_read() {
    let x = node(B, 1);
    let mut s = ready_with(&[(x, "x1", 3)], 10);
    s.invalidate(30);
    assert!(!s.ready(Bucket(B)));
    assert!(s.take(Bucket(B)).is_none());
    // A fill in flight when the watch is lost is dropped when it answers.
    assert_eq!(s.next_fills(1), vec![Bucket(B)]);
    s.invalidate(31);
    s.filled(
        Bucket(B),
        Some((32, vec![(x, (b"x1".to_vec(), 3))], vec![])),
    );
    assert!(!s.ready(Bucket(B)));
    assert_eq!(s.next_fills(1), vec![Bucket(B)], "read again");
    s.filled(
        Bucket(B),
        Some((33, vec![(x, (b"x1".to_vec(), 3))], vec![])),
    );
    assert!(s.ready(Bucket(B)));
}

#[test]
fn buckets_no_longer_wanted_are_dropped_but_those_being_taken_over() {
    let mut s = ready_with(&[(node(B, 1), "x", 3)], 10);
    let other = Bucket(B + 1);
    s.set_wanted(&HashSet::from([other]), &HashSet::from([Bucket(B)]));
    assert!(s.ready(Bucket(B)), "kept for its takeover");
    assert_eq!(s.counts(), (2, 1, 1, 0));
    s.set_wanted(&HashSet::from([other]), &HashSet::new());
    assert!(!s.ready(Bucket(B)));
    assert_eq!(s.counts(), (1, 0, 0, 0));
    // A failed fill is tried again.
    assert_eq!(s.next_fills(4), vec![other]);
    s.filled(other, None);
    assert_eq!(s.next_fills(4), vec![other]);
}

fn st(v: &str, rev: i64) -> (Vec<u8>, i64) {
    (v.as_bytes().to_vec(), rev)
}

type Records = Vec<(NodeId, (Vec<u8>, i64))>;

/// `s` wanting bucket B and its fill answered at `rev`: the status watch to open, if any.
fn fill_b(s: &mut Standby, rev: i64, specs: Records, statuses: Records) -> Option<OpenWatch> {
    s.set_wanted(&HashSet::from([Bucket(B)]), &HashSet::new());
    assert_eq!(s.next_fills(1), vec![Bucket(B)]);
    s.filled(Bucket(B), Some((rev, specs, statuses)))
}

#[test]
fn statuses_are_kept_by_their_watch_and_complete_once_it_reaches_the_acquisition() {
    let (x, y, z) = (node(B, 1), node(B, 2), node(B, 3));
    let mut s = Standby::default();
    assert_eq!(s.caught_up(Bucket(B), 1), None, "not read yet");
    let open = fill_b(
        &mut s,
        10,
        vec![(x, st("x", 2)), (y, st("y", 2))],
        vec![(x, st("xs1", 5)), (y, st("ys1", 6))],
    )
    .expect("a status watch to open");
    assert_eq!((open.bucket, open.from), (Bucket(B), 11));
    // The holder writes x, deletes y's status, writes z's; then dies, and this conductor's
    // acquisition at 20 puts the marker.
    s.statuses(open.id, [(Some(x), Some(b"xs2".to_vec()), 12)]);
    s.statuses(
        open.id,
        [(Some(y), None, 14), (Some(z), Some(b"zs1".to_vec()), 15)],
    );
    assert_eq!(
        s.caught_up(Bucket(B), 20),
        Some(false),
        "the marker not seen yet"
    );
    assert_eq!(
        s.statuses(open.id, [(None, Some(b"marker".to_vec()), 20)]),
        Some(Bucket(B))
    );
    assert_eq!(s.caught_up(Bucket(B), 20), Some(true));
    assert_eq!(s.counts(), (1, 1, 2, 2));
    let t = s.take(Bucket(B)).expect("ready");
    let mut got: Vec<(NodeId, String, i64)> = t
        .statuses
        .expect("kept")
        .into_iter()
        .map(|(id, (v, r))| (id, String::from_utf8(v).unwrap(), r))
        .collect();
    got.sort();
    assert_eq!(got, vec![(x, "xs2".into(), 12), (z, "zs1".into(), 15)]);
    assert_eq!(
        s.take_cancels(),
        vec![open.id],
        "the watch ends with the takeover"
    );
    assert_eq!(
        s.statuses(open.id, [(Some(x), None, 30)]),
        None,
        "no longer current"
    );
}

#[test]
fn an_ended_status_watch_sends_its_bucket_back_to_be_read_and_old_ids_are_ignored() {
    let x = node(B, 1);
    let mut s = Standby::default();
    let first = fill_b(&mut s, 10, vec![(x, st("x", 2))], vec![]).unwrap();
    assert_eq!(s.status_watch_ended(first.id), Some(Bucket(B)));
    assert_eq!(s.caught_up(Bucket(B), 1), None);
    assert!(!s.ready(Bucket(B)));
    assert_eq!(s.next_fills(1), vec![Bucket(B)], "read again");
    let second = s
        .filled(Bucket(B), Some((40, vec![(x, st("x", 2))], vec![])))
        .unwrap();
    assert_ne!(second.id, first.id, "ids are not reused");
    assert_eq!(s.status_watch_ended(first.id), None);
    assert_eq!(s.statuses(first.id, [(None, None, 50)]), None);
    assert_eq!(s.caught_up(Bucket(B), 45), Some(false));
    // Dropped from the standby: its watch is to be canceled.
    s.set_wanted(&HashSet::new(), &HashSet::new());
    assert_eq!(s.take_cancels(), vec![second.id]);
    // A lost stream: everything read again, nothing to cancel.
    fill_b(&mut s, 60, vec![], vec![]).unwrap();
    s.status_watches_lost();
    assert!(s.take_cancels().is_empty());
    assert_eq!(s.next_fills(1), vec![Bucket(B)]);
}

#[test]
fn a_specs_only_standby_opens_no_status_watch() {
    let x = node(B, 1);
    let mut s = Standby::specs_only();
    let open = fill_b(&mut s, 10, vec![(x, st("x", 2))], vec![(x, st("xs", 3))]);
    assert_eq!(open, None);
    assert!(s.ready(Bucket(B)));
    assert_eq!(
        s.caught_up(Bucket(B), 1),
        None,
        "a takeover reads the statuses"
    );
    assert_eq!(s.counts(), (1, 1, 1, 0));
    assert!(s.take(Bucket(B)).expect("ready").statuses.is_none());
}

#[test]
fn statuses_dropped_for_a_late_marker_leave_the_specs_for_the_takeover() {
    let x = node(B, 1);
    let mut s = Standby::default();
    let open = fill_b(&mut s, 10, vec![(x, st("x", 2))], vec![]).unwrap();
    assert_eq!(s.caught_up(Bucket(B), 20), Some(false));
    s.drop_statuses(Bucket(B));
    assert_eq!(
        s.caught_up(Bucket(B), 20),
        None,
        "the takeover reads the statuses"
    );
    assert!(s.ready(Bucket(B)), "the specs stay");
    assert_eq!(s.take_cancels(), vec![open.id]);
    assert_eq!(s.statuses(open.id, [(None, None, 20)]), None);
}

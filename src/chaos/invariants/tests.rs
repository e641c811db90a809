//! The checks against hand-built records: each catches its violation and passes a clean record.

use super::*;
use ferric_model::{encode, NodeId, PowerOp, PowerState, PowerTarget};

const N: &str = "6f1c3a52-8d9e-4b8a-9a77-0e5f4c1d2b3a";
const SYS: &str = "sys-0";

fn systems() -> HashMap<String, String> {
    HashMap::from([(N.to_string(), SYS.to_string())])
}

fn change(
    key: String,
    kind: ChangeKind,
    rev: i64,
    create: i64,
    lease: i64,
    value: Option<Vec<u8>>,
    seen: u64,
) -> Change {
    Change {
        revision: rev,
        mod_revision: rev,
        create_revision: create,
        key,
        kind,
        lease,
        value,
        seen_unix_ms: seen,
        initial: false,
    }
}

fn resv(conductor: &str) -> Option<Vec<u8>> {
    Some(encode(&ReservationRecord {
        conductor: conductor.into(),
        acquired_at_ms: 0,
    }))
}

/// `conductor` reserves the node at revision `rev` on `lease`, seen at `seen`.
fn reserve(conductor: &str, rev: i64, lease: i64, seen: u64) -> Change {
    change(
        format!("reservations/{N}"),
        ChangeKind::Put,
        rev,
        rev,
        lease,
        resv(conductor),
        seen,
    )
}

/// The reservation created at `create` is deleted at `rev`.
fn release(conductor: &str, create: i64, rev: i64, lease: i64, seen: u64) -> Change {
    change(
        format!("reservations/{N}"),
        ChangeKind::Delete,
        rev,
        create,
        lease,
        resv(conductor),
        seen,
    )
}

fn join(name: &str, lease: i64, rev: i64, seen: u64) -> Change {
    change(
        format!("conductors/{name}"),
        ChangeKind::Put,
        rev,
        rev,
        lease,
        None,
        seen,
    )
}

fn leave(name: &str, lease: i64, rev: i64, seen: u64) -> Change {
    change(
        format!("conductors/{name}"),
        ChangeKind::Delete,
        rev,
        0,
        lease,
        None,
        seen,
    )
}

fn entry(index: u64, t: u64, op: LogOp, client: &str) -> LogEntry {
    LogEntry {
        index,
        time: String::new(),
        unix_ms: t,
        op,
        system: SYS.into(),
        method: "POST".into(),
        path: format!("/redfish/v1/Systems/{SYS}/Actions/ComputerSystem.Reset"),
        action: Some("On".into()),
        status: Some(204),
        client: Some(client.into()),
        node: None,
        seq: None,
        detail: None,
        traceparent: None,
    }
}

fn cmd(index: u64, t: u64, client: &str) -> LogEntry {
    entry(index, t, LogOp::Redfish, client)
}

fn three_conductors() -> Vec<Change> {
    vec![
        join("c1", 1, 1, 100),
        join("c2", 2, 2, 100),
        join("c3", 3, 3, 100),
    ]
}

#[test]
fn handover_after_sigkill_is_clean() {
    let mut ch = three_conductors();
    ch.extend([
        reserve("c1", 10, 1, 1000),
        // c1 is killed: its lease expires, etcd deletes its key and reservation together.
        leave("c1", 1, 15, 5000),
        release("c1", 10, 15, 1, 5000),
        reserve("c2", 20, 2, 5100),
    ]);
    let log = [
        cmd(0, 1100, "c1"),
        cmd(1, 1200, "c1"),
        // Not conductors: ignored.
        cmd(2, 4000, "ferric-sim-agent"),
        cmd(3, 4100, "curl/8"),
        // c2's first command may come before the recorder saw its reservation (lag).
        cmd(4, 5050, "c2"),
        cmd(5, 5200, "c2"),
    ];
    assert_eq!(check_bmc_ownership(&log, &ch, &systems()), vec![]);
}

/// `conductor` takes the node's bucket at `rev` on `lease`, seen at `seen`.
fn take_bucket(conductor: &str, rev: i64, lease: i64, seen: u64) -> Change {
    change(
        format!("buckets/{}", &N[..3]),
        ChangeKind::Put,
        rev,
        rev,
        lease,
        resv(conductor),
        seen,
    )
}

fn drop_bucket(conductor: &str, create: i64, rev: i64, lease: i64, seen: u64) -> Change {
    change(
        format!("buckets/{}", &N[..3]),
        ChangeKind::Delete,
        rev,
        create,
        lease,
        resv(conductor),
        seen,
    )
}

/// The bucket's holder hands the node on (put) or takes it back (delete) at `rev`.
fn delegation(put: bool, rev: i64, seen: u64) -> Change {
    let kind = if put {
        ChangeKind::Put
    } else {
        ChangeKind::Delete
    };
    change(format!("delegations/{N}"), kind, rev, rev, 0, None, seen)
}

#[test]
fn a_bucket_holder_and_its_delegate_take_turns_cleanly() {
    let mut ch = three_conductors();
    ch.extend([
        take_bucket("c1", 10, 1, 1000),
        // c1 hands the node on to c2, which reserves it, later lets it go; c1 takes it back.
        delegation(true, 20, 2000),
        reserve("c2", 21, 2, 2100),
        release("c2", 21, 30, 2, 3000),
        delegation(false, 31, 3100),
        // c1 dies; c3 takes the bucket.
        leave("c1", 1, 40, 5000),
        drop_bucket("c1", 10, 40, 1, 5000),
        take_bucket("c3", 41, 3, 5100),
    ]);
    let log = [
        cmd(0, 1500, "c1"),
        cmd(1, 2500, "c2"),
        cmd(2, 3500, "c1"),
        cmd(3, 5500, "c3"),
    ];
    assert_eq!(check_bmc_ownership(&log, &ch, &systems()), vec![]);
}

#[test]
fn a_bucket_holder_sending_while_the_node_is_handed_on_is_caught() {
    let mut ch = three_conductors();
    ch.extend([
        take_bucket("c1", 10, 1, 1000),
        delegation(true, 20, 2000),
        reserve("c2", 21, 2, 2100),
    ]);
    // c2 sent, then c1 (which handed the node on) sent again: an overlap.
    let log = [cmd(0, 1500, "c1"), cmd(1, 2500, "c2"), cmd(2, 2600, "c1")];
    let v = check_bmc_ownership(&log, &ch, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("overlap"), "{v:?}");
    // c1 sending after its delegation was seen, with no command of c2 yet, is caught by time.
    let log = [cmd(0, 1500, "c1"), cmd(1, 2050, "c1")];
    let v = check_bmc_ownership(&log, &ch, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
}

#[test]
fn aba_and_caretaker_are_clean() {
    let mut ch = three_conductors();
    ch.extend([
        reserve("c1", 10, 1, 1000),
        release("c1", 10, 11, 1, 3000),
        // c3 is a caretaker for a while: it never touches the BMC.
        reserve("c3", 12, 3, 3050),
        release("c3", 12, 13, 3, 3080),
        reserve("c2", 20, 2, 3100),
        release("c2", 20, 21, 2, 6000),
        reserve("c1", 30, 1, 6100),
    ]);
    let log = [
        cmd(0, 1100, "c1"),
        cmd(1, 3200, "c2"),
        cmd(2, 5900, "c2"),
        cmd(3, 6200, "c1"),
        cmd(4, 7000, "c1"),
    ];
    assert_eq!(check_bmc_ownership(&log, &ch, &systems()), vec![]);
}

#[test]
fn a_conductor_that_lost_and_regained_the_node_several_times_is_clean() {
    // c1 fences itself twice and rejoins each time on a new lease, reserving the node again;
    // nobody else sends in between, so only time says which epoch a command is in.
    let mut ch = three_conductors();
    ch.extend([
        reserve("c1", 10, 1, 1000),
        leave("c1", 1, 15, 2000),
        release("c1", 10, 15, 1, 2000),
        join("c1", 4, 16, 2050),
        reserve("c1", 20, 4, 2100),
        leave("c1", 4, 25, 3000),
        release("c1", 20, 25, 4, 3000),
        join("c1", 5, 26, 3050),
        reserve("c1", 30, 5, 3100),
    ]);
    let log = [cmd(0, 1100, "c1"), cmd(1, 3500, "c1"), cmd(2, 9000, "c1")];
    assert_eq!(check_bmc_ownership(&log, &ch, &systems()), vec![]);

    // But a command sent between two holdings, long before the next one, is caught.
    let mut gap = three_conductors();
    gap.extend([
        reserve("c1", 10, 1, 1000),
        leave("c1", 1, 15, 2000),
        release("c1", 10, 15, 1, 2000),
        join("c1", 4, 16, 30_000),
        reserve("c1", 20, 4, 30_100),
    ]);
    let log = [cmd(0, 1100, "c1"), cmd(1, 5000, "c1"), cmd(2, 30_200, "c1")];
    let v = check_bmc_ownership(&log, &gap, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("was deleted"), "{}", v[0].detail);
}

#[test]
fn an_old_owner_sending_after_the_new_owner_is_an_overlap() {
    let mut ch = three_conductors();
    ch.extend([
        reserve("c1", 10, 1, 1000),
        release("c1", 10, 11, 1, 3000),
        reserve("c2", 20, 2, 3100),
    ]);
    let log = [
        cmd(0, 1100, "c1"),
        cmd(1, 2500, "c2"),
        // Before the recorder saw c1's delete: only the order shows it.
        LogEntry {
            status: Some(500), // answered with an error: still sent
            ..cmd(2, 2600, "c1")
        },
    ];
    let v = check_bmc_ownership(&log, &ch, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, 'a');
    assert_eq!(v[0].node.as_deref(), Some(N));
    assert!(v[0].detail.contains("overlap"), "{}", v[0].detail);
}

#[test]
fn a_command_after_the_reservation_or_the_lease_ended_is_caught() {
    let mut ch = three_conductors();
    ch.extend([
        reserve("c1", 10, 1, 1000),
        leave("c1", 1, 15, 4000),
        release("c1", 10, 15, 1, 4000),
    ]);
    let log = [cmd(0, 1100, "c1"), cmd(1, 4500, "c1")];
    let v = check_bmc_ownership(&log, &ch, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("log #1"), "{}", v[0].detail);

    // The lease's end alone (the reservation's delete fell in a recorder gap).
    let mut ch = three_conductors();
    ch.extend([reserve("c1", 10, 1, 1000), leave("c1", 1, 15, 4000)]);
    let v = check_bmc_ownership(&log, &ch, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("self-fencing"), "{}", v[0].detail);
}

#[test]
fn a_command_without_any_reservation_is_caught() {
    let mut ch = three_conductors();
    ch.push(reserve("c1", 10, 1, 1000));
    let log = [cmd(0, 1100, "c1"), cmd(1, 1200, "c3")];
    let v = check_bmc_ownership(&log, &ch, &systems());
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("never held"), "{}", v[0].detail);
    // A node nobody ever reserved.
    let v = check_bmc_ownership(&log, &three_conductors(), &systems());
    assert_eq!(v.len(), 2, "{v:?}");
}

// (b)

fn history(seq: u64, kind: HistoryKind, action: &str, by: &str, result: &str, seen: u64) -> Change {
    let h = HistoryEntry {
        at_ms: seen,
        kind,
        action: action.into(),
        requested_by: by.into(),
        conductor: "c1".into(),
        result: result.into(),
        severity: "INFO".into(),
    };
    change(
        format!("history/{N}/{seq:020}"),
        ChangeKind::Put,
        100 + seq as i64,
        100 + seq as i64,
        0,
        Some(encode(&h)),
        seen,
    )
}

fn asked(kind: RequestKind, what: &str, at: u64, status: u16) -> AcceptedRequest {
    AcceptedRequest {
        node: N.into(),
        kind,
        what: what.into(),
        accepted_unix_ms: at,
        status,
    }
}

#[test]
fn accepted_requests_are_applied_or_failed_with_an_error() {
    let ch = vec![
        history(1, HistoryKind::Takeover, "takeover", "conductor", "ok", 900),
        // The gateway records the caller's name as it is.
        history(
            2,
            HistoryKind::Power,
            "power on: was already on",
            "chaos",
            "ok",
            1100,
        ),
        // The conductor's own sync entry does not count for a request.
        history(3, HistoryKind::Power, "power off", "conductor", "ok", 1500),
        // Another kind of request whose name starts like one asked: no match.
        history(6, HistoryKind::Power, "power offx", "chaos", "ok", 1600),
        history(
            4,
            HistoryKind::Provision,
            "deploy: \"available\" -> \"deploying\"",
            "api:chaos",
            "ok",
            2100,
        ),
        history(
            5,
            HistoryKind::Power,
            "power off",
            "api:chaos",
            "BMC unreachable",
            3100,
        ),
    ];
    let accepted = [
        asked(RequestKind::Power, "power on", 1000, 202),
        asked(RequestKind::Provision, "deploy", 2000, 202),
        // Refused: not accepted, nothing to find.
        asked(RequestKind::Power, "rebooting", 2500, 409),
        asked(RequestKind::Power, "power off", 3000, 202),
    ];
    let fin = FinalNode {
        node: N.into(),
        power_request_seq: Some(2),
        power_seq_done: 2,
        provision_request_seq: Some(1),
        provision_seq_done: 1,
    };
    assert_eq!(
        check_requests(&accepted, &ch, std::slice::from_ref(&fin)),
        vec![]
    );

    // Lost: the power off has no entry (the conductor's own does not count), and the
    // provision request is still pending at the end.
    let ch: Vec<Change> = ch.into_iter().filter(|c| !c.key.ends_with("05")).collect();
    let fin = FinalNode {
        provision_seq_done: 0,
        ..fin
    };
    let v = check_requests(&accepted, &ch, &[fin]);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.invariant == 'b'));
    assert!(
        v[0].detail.contains("\"power off\"") && v[0].detail.contains("lost"),
        "{v:?}"
    );
    assert!(
        v[1].detail.contains("provision request 1 still pending"),
        "{v:?}"
    );
}

// (c)

fn open(index: u64, t: u64, client: &str, seq: u64, status: u16) -> LogEntry {
    LogEntry {
        seq: Some(seq),
        status: Some(status),
        ..entry(index, t, LogOp::SerialOpen, client)
    }
}

fn close(index: u64, t: u64, client: &str, seq: u64) -> LogEntry {
    LogEntry {
        seq: Some(seq),
        ..entry(index, t, LogOp::SerialClose, client)
    }
}

const LIMITS: ConsoleLimits = ConsoleLimits {
    close_grace_ms: 2000,
    serve_within_ms: 15_000,
    end_unix_ms: 100_000,
};

#[test]
fn consoles_of_dead_owners_close_and_consoles_serve_again() {
    let mut ch = three_conductors();
    ch.extend([
        reserve("c1", 10, 1, 1000),
        leave("c1", 1, 15, 4000),
        release("c1", 10, 15, 1, 4000),
        reserve("c2", 20, 2, 4100),
    ]);
    let clean = [
        open(0, 1100, "c1", 1, 101),
        // c2 tries while the frozen c1's session holds the port: refused, then clears it.
        open(1, 4200, "c2", 1, 409),
        close(2, 4500, "c1", 1),
        open(3, 4600, "c2", 2, 101),
    ];
    let gaps = [ConsoleGap {
        node: N.into(),
        fault_unix_ms: 2000,
        first_output_after_ms: Some(4700),
    }];
    assert_eq!(
        check_consoles(&clean, &ch, &systems(), &gaps, LIMITS),
        vec![]
    );

    let late = [open(0, 1100, "c1", 1, 101), close(1, 9000, "c1", 1)];
    let v = check_consoles(&late, &ch, &systems(), &[], LIMITS);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].detail.contains("closed 5000 ms after"),
        "{}",
        v[0].detail
    );

    let never = [open(0, 1100, "c1", 1, 101)];
    let v = check_consoles(&never, &ch, &systems(), &[], LIMITS);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("still open"), "{}", v[0].detail);

    let stale = [open(0, 4800, "c1", 1, 101), close(1, 4900, "c1", 1)];
    let v = check_consoles(&stale, &ch, &systems(), &[], LIMITS);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].detail.contains("without holding"), "{}", v[0].detail);

    // The recorder lags: c1 lost the node and got it back, and opened its console, before the
    // recorder saw the old epoch end. The session belongs to the new epoch, which holds on.
    let mut lagged = three_conductors();
    lagged.extend([
        reserve("c1", 10, 1, 1000),
        release("c1", 10, 15, 1, 7010),
        reserve("c1", 30, 1, 7020),
    ]);
    let held = [open(0, 7000, "c1", 1, 101)];
    assert_eq!(
        check_consoles(&held, &lagged, &systems(), &[], LIMITS),
        vec![]
    );

    let gaps = [
        ConsoleGap {
            node: N.into(),
            fault_unix_ms: 2000,
            first_output_after_ms: Some(30_000),
        },
        ConsoleGap {
            node: N.into(),
            fault_unix_ms: 40_000,
            first_output_after_ms: None,
        },
    ];
    let v = check_consoles(&[], &ch, &systems(), &gaps, LIMITS);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.invariant == 'c'));
}

// (d)

#[test]
fn reservations_must_be_on_live_leases() {
    let mut snap = LeaseSnapshot {
        at_unix_ms: 1,
        revision: 50,
        leases_before: vec![1, 2],
        // Lease 3 was granted between the two lists; lease 1 expired.
        leases_after: vec![2, 3],
        reservations: vec![(N.into(), "c1".into(), 1), ("n2".into(), "c3".into(), 3)],
        conductors: vec![("c2".into(), 2), ("c3".into(), 3)],
    };
    assert_eq!(check_reservation_leases(&snap), vec![]);
    snap.reservations.push(("n3".into(), "c9".into(), 9));
    snap.reservations.push(("n4".into(), "c9".into(), 0));
    let v = check_reservation_leases(&snap);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].node.as_deref(), Some("n3"));
    assert!(v[0].detail.contains("not live"));
    assert!(v[1].detail.contains("no lease"));
}

// (e)

fn event(seq: u64, instance: bool, initial: bool) -> Change {
    let ev = EventRecord {
        node: NodeId(N.parse().unwrap()),
        seq,
        instance_uuid: instance.then(|| uuid::Uuid::from_u128(1)),
        power_state: Some(if seq % 2 == 0 {
            PowerState::Off
        } else {
            PowerState::On
        }),
        previous_power_state: None,
        at_ms: 0,
        conductor: "c1".into(),
    };
    Change {
        initial,
        ..change(
            format!("events/{N}/{seq:020}"),
            ChangeKind::Put,
            200 + seq as i64,
            200 + seq as i64,
            0,
            Some(encode(&ev)),
            1000 + seq,
        )
    }
}

fn got(seqs: &[u64]) -> Vec<ComputeItem> {
    seqs.iter()
        .map(|&seq| ComputeItem {
            node: N.into(),
            seq,
            received_unix_ms: 0,
            acked: true,
        })
        .collect()
}

fn read(reader: &str, seqs: &[u64]) -> Vec<StreamItem> {
    seqs.iter()
        .map(|&seq| StreamItem {
            reader: reader.into(),
            node: N.into(),
            seq,
            received_unix_ms: 0,
        })
        .collect()
}

#[test]
fn events_arrive_in_order_at_least_once() {
    // Event 3 has no instance: Nova is not told, the stream shows it.
    let ch = vec![
        event(1, true, false),
        event(2, true, false),
        event(3, false, false),
        event(4, true, false),
    ];
    let mut stream = read("r1", &[1, 2, 3, 4]);
    // A reader that joined late (resumed at 3) is fine too.
    stream.extend(read("r2", &[3, 4]));
    // A redelivery of the last acknowledged event (2 again) is a duplicate, allowed; an event
    // the receiver refused does not count.
    let mut compute = got(&[1, 2, 2, 4]);
    compute.insert(
        1,
        ComputeItem {
            acked: false,
            ..got(&[4])[0].clone()
        },
    );
    assert_eq!(check_events(&stream, &compute, Sink::Compute, &ch), vec![]);

    // A new owner resending from its cursor (1, 2, 4 again after 4): a resend, in order from
    // where it starts, is at least once; so is a resend cut short by another one.
    assert_eq!(
        check_events(&[], &got(&[1, 2, 4, 1, 2, 4]), Sink::Compute, &ch),
        vec![]
    );
    assert_eq!(
        check_events(&[], &got(&[1, 2, 4, 2, 1, 2, 4]), Sink::Compute, &ch),
        vec![]
    );

    // A reader that joined at 2 and then got 1: older than anything it had.
    let v = check_events(
        &read("r1", &[2, 1, 2, 3, 4]),
        &got(&[1, 2, 4]),
        Sink::Compute,
        &ch,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].detail.contains("older than the first delivered"),
        "{v:?}"
    );

    let cases: [(&[u64], &str); 4] = [
        // 1 after 4, then 4: a resend with a hole shows an older state after a newer one with
        // the events between missing.
        (&[1, 2, 4, 1, 4], "reorder: seq 4 after seq 1 in a resend"),
        (&[1, 4], "gap: seq 4 after seq 1, skipping [2]"),
        (&[1, 2], "never delivered after seq 2: [4]"),
        (&[2, 4], "events from seq 1 were lost"),
    ];
    for (seqs, want) in cases {
        let v = check_events(&[], &got(seqs), Sink::Compute, &ch);
        assert_eq!(v.len(), 1, "{seqs:?}: {v:?}");
        assert_eq!(v[0].invariant, 'e');
        assert!(v[0].detail.contains(want), "{seqs:?}: {}", v[0].detail);
    }
    // Events from before the run may have been delivered before it: no head loss then.
    let old = vec![event(1, true, true), event(2, true, false)];
    assert_eq!(check_events(&[], &got(&[2]), Sink::Compute, &old), vec![]);

    let v = check_events(
        &read("r1", &[1, 3, 2, 4, 4]),
        &got(&[1, 2, 4]),
        Sink::Compute,
        &ch,
    );
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v[0].detail.starts_with("event stream reader r1: gap"),
        "{v:?}"
    );
    assert!(v[1].detail.contains("reorder"), "{v:?}");
}

// (f)

fn status(rev: i64, state: ProvisionState, op: Option<u64>, seen: u64) -> Change {
    let st = NodeStatus {
        provision_state: state,
        power_op: op.map(|seq| PowerOp {
            seq,
            target: PowerTarget::On,
            started_at_ms: 0,
            deadline_ms: 0,
            soft_sent: false,
        }),
        ..NodeStatus::default()
    };
    change(
        format!("status/{N}"),
        ChangeKind::Put,
        rev,
        1,
        0,
        Some(encode(&st)),
        seen,
    )
}

#[test]
fn transient_states_end_within_their_limits() {
    let limits = TransientLimits {
        provision_ms: 10_000,
        per_state: vec![(ProvisionState::WaitCallBack, 30_000)],
        power_op_ms: 5_000,
        slack_ms: 1_000,
        end_unix_ms: 100_000,
    };
    use ProvisionState as S;
    let clean = vec![
        status(1, S::Available, None, 1_000),
        status(2, S::Available, Some(3), 2_000),
        status(3, S::Deploying, None, 6_000),
        status(4, S::WaitCallBack, None, 15_000),
        status(5, S::WaitCallBack, None, 30_000),
        status(6, S::Active, None, 44_000),
        // Holds wait for the user: no limit.
        status(7, S::DeployHold, None, 50_000),
    ];
    assert_eq!(check_transient_states(&clean, &limits), vec![]);

    let stuck = vec![
        status(1, S::Available, Some(3), 1_000),
        status(2, S::Cleaning, None, 6_000),
        status(3, S::CleanWait, Some(4), 20_000),
    ];
    let v = check_transient_states(&stuck, &limits);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v.iter().all(|v| v.invariant == 'f'));
    assert!(v[0].detail.contains("\"cleaning\" for 14000 ms"), "{v:?}");
    assert!(v[1].detail.contains("\"clean wait\" for 80000 ms"), "{v:?}");
    assert!(
        v[2].detail
            .contains("power operation 4 in flight for 80000 ms"),
        "{v:?}"
    );
}

#[test]
fn the_summary_counts_per_invariant() {
    let s = Summary::new(
        vec![
            violation('a', Some(N), "x".into()),
            violation('e', None, "y".into()),
        ],
        vec![],
    );
    assert!(!s.ok);
    assert_eq!(s.total, 2);
    assert_eq!(s.by_invariant[&'a'], 1);
    assert_eq!(s.by_invariant[&'b'], 0);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["violations"][0]["invariant"], "a");
    assert!(Summary::new(vec![], vec![]).ok);
}

#[test]
fn a_buckets_status_marker_is_not_a_node() {
    // The acquisition of bucket 6f1 puts its key and its status marker, on the holder's lease.
    let changes = vec![
        change(
            "buckets/6f1".into(),
            ChangeKind::Put,
            5,
            5,
            7,
            resv("c1"),
            100,
        ),
        change(
            "status/6f1".into(),
            ChangeKind::Put,
            5,
            5,
            7,
            resv("c1"),
            100,
        ),
        status(6, ProvisionState::Available, None, 110),
        change("status/6f1".into(), ChangeKind::Delete, 9, 0, 0, None, 200),
    ];
    let nodes = epochs(&changes);
    assert_eq!(nodes.keys().collect::<Vec<_>>(), vec![N], "{nodes:?}");
    let limits = TransientLimits {
        provision_ms: 10_000,
        per_state: vec![],
        power_op_ms: 5_000,
        slack_ms: 1_000,
        end_unix_ms: 300,
    };
    assert!(check_transient_states(&changes, &limits).is_empty());
}

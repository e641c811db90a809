//! Cluster-core integration tests: a real etcd and real `ferric conductor` processes. Each test
//! has its own etcd and key prefix and checks what an independent observer sees: etcd's keys,
//! etcd's revision history, `ferric ctl`'s answers and the processes' exit codes.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ferric_cluster::{AcquireOutcome, Cluster, ClusterError, EtcdConfig, LeaseKeeper};
use ferric_model::{
    decode, encode, now_ms, FenceToken, NodeId, NodeSpec, NodeStatus, PowerRequest, PowerState,
    PowerTarget, ProvisionState, Verb,
};
use ferric_testkit::{describe, free_port, Fleet, Snapshot};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const THREE: [&str; 3] = ["c1", "c2", "c3"];
const TTL_2: [&str; 2] = ["--lease-ttl", "2"];

/// Starts c1, c2, c3 with `args`.
fn start_three(fleet: &mut Fleet, args: &[&str]) {
    for name in THREE {
        fleet.start_conductor(name, args);
    }
}

/// Every node settled on `live`, and each of them holding a fair share (rendezvous hashing over
/// three conductors gives each about a third).
fn check_shares(snap: &Snapshot, live: &[&str], low: f64, high: f64) -> Result<(), String> {
    snap.check_settled(live)?;
    let total = snap.nodes.len() as f64;
    let counts = snap.counts();
    for name in live {
        let n = counts.get(*name).copied().unwrap_or(0);
        let share = n as f64 / total;
        if !(low..=high).contains(&share) {
            return Err(format!(
                "conductor {name} holds {n} of {total} nodes ({:.1}%), want {:.0}%..{:.0}%; all counts {counts:?}",
                share * 100.0,
                low * 100.0,
                high * 100.0
            ));
        }
    }
    Ok(())
}

async fn wait_balanced(fleet: &Fleet, timeout: Duration, live: &[&str]) -> Snapshot {
    fleet
        .wait_until(
            timeout,
            &format!(
                "every node is reserved once by one of {live:?}, statuses match, each holds 25-42%"
            ),
            async || {
                let snap = fleet.snapshot().await?;
                check_shares(&snap, live, 0.25, 0.42)?;
                Ok(snap)
            },
        )
        .await
}

/// One entry of `ctl conductor list --json`.
struct Listed {
    nodes: u64,
    drivers: Vec<String>,
    group: String,
}

/// Parses `ctl conductor list --json` by conductor name.
fn parse_conductor_list(stdout: &[u8]) -> Result<BTreeMap<String, Listed>, String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "`ctl conductor list --json` is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })?;
    let arr = v
        .as_array()
        .ok_or_else(|| format!("`ctl conductor list --json` is not an array: {v}"))?;
    let mut out = BTreeMap::new();
    for c in arr {
        let name = c["name"]
            .as_str()
            .ok_or_else(|| format!("conductor without a string `name`: {c}"))?;
        let nodes = c["nodes"]
            .as_u64()
            .ok_or_else(|| format!("conductor without a numeric `nodes`: {c}"))?;
        let drivers = c["drivers"]
            .as_array()
            .ok_or_else(|| format!("conductor without a `drivers` array: {c}"))?
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        let group = c["conductor_group"]
            .as_str()
            .ok_or_else(|| format!("conductor without a string `conductor_group`: {c}"))?
            .to_string();
        out.insert(
            name.to_string(),
            Listed {
                nodes,
                drivers,
                group,
            },
        );
    }
    Ok(out)
}

/// Waits until the given nodes show `power on` for their latest power request.
async fn wait_powered_on(fleet: &Fleet, ids: &[String], timeout: Duration) {
    fleet
        .wait_until(
            timeout,
            &format!("{} nodes show power on for their request", ids.len()),
            async || {
                let snap = fleet.snapshot().await?;
                let mut waiting = Vec::new();
                for id in ids {
                    let spec = snap
                        .spec(id)
                        .ok_or_else(|| format!("node {id} is gone"))?
                        .map_err(|e| format!("node {id}: unreadable spec: {e}"))?;
                    let seq = spec.power_request.as_ref().map_or(0, |r| r.seq);
                    match snap.status(id) {
                        Some(Ok(s))
                            if s.power_state == Some(PowerState::On)
                                && s.power_seq_done >= seq
                                && seq > 0 => {}
                        Some(Ok(s)) => waiting.push(format!(
                            "{id}: power {:?}, done seq {} of {seq}, last_error {:?}",
                            s.power_state, s.power_seq_done, s.last_error
                        )),
                        other => waiting.push(format!("{id}: status {other:?}")),
                    }
                }
                if waiting.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} not yet on, e.g. {}", waiting.len(), waiting[0]))
                }
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_conductors_own_3000_nodes_once() {
    let mut fleet = Fleet::new("three-own").await;
    start_three(&mut fleet, &TTL_2);
    let ids = fleet.create_nodes(3000, &[]).await;

    let snap = wait_balanced(&fleet, Duration::from_secs(90), &THREE).await;
    fleet.ensure(snap.nodes.len() == 3000, || {
        format!("etcd has {} nodes, want 3000", snap.nodes.len())
    });
    for id in &ids {
        fleet.ensure(snap.nodes.contains_key(id), || {
            format!("created node {id} is not in etcd")
        });
    }
    fleet.note(&format!("placement: {:?}", snap.counts()));

    // `ctl conductor list` must report what etcd holds. The counts are read from etcd before and
    // after ctl, so a change in between (none is expected once settled) cannot pass as agreement.
    fleet
        .wait_until(
            Duration::from_secs(20),
            "`ctl conductor list --json` agrees with etcd's reservation counts",
            async || {
                let before = fleet.snapshot().await?.counts();
                let out = fleet.ctl(&["conductor", "list", "--json"]).await;
                if !out.status.success() {
                    return Err(format!("ctl conductor list failed: {}", describe(&out)));
                }
                let listed = parse_conductor_list(&out.stdout)?;
                let after = fleet.snapshot().await?.counts();
                if before != after {
                    return Err(format!("reservations moved during the check: {before:?} -> {after:?}"));
                }
                let names: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
                if names != THREE.into_iter().collect() {
                    return Err(format!("ctl lists conductors {names:?}, want {THREE:?}"));
                }
                for (name, Listed { nodes, drivers, group }) in &listed {
                    let want = after.get(name).copied().unwrap_or(0) as u64;
                    if *nodes != want {
                        return Err(format!(
                            "ctl says {name} holds {nodes} nodes, etcd has {want} reservations"
                        ));
                    }
                    if !drivers.iter().any(|d| d == "fake-hardware") || !group.is_empty() {
                        return Err(format!(
                            "ctl says {name} serves drivers {drivers:?} in group {group:?}, want fake-hardware in the default group \"\""
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;

    for name in THREE {
        fleet.ensure(fleet.conductor(name).is_running(), || {
            format!("conductor {name} exited")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_reowns_within_ttl_and_restart_rebalances() {
    let mut fleet = Fleet::new("sigkill").await;
    start_three(&mut fleet, &TTL_2);
    fleet.create_nodes(3000, &[]).await;
    let before = wait_balanced(&fleet, Duration::from_secs(90), &THREE).await;

    let victim = "c2";
    let survivors = ["c1", "c3"];
    let moved = before.held_by(victim);
    let start = Instant::now();
    fleet.conductor(victim).kill();
    fleet.note(&format!("SIGKILLed {victim}"));
    // When the first of them was seen re-owned: the survivors act once the killed conductor's
    // lease (TTL 2 s) has expired, not after some longer timeout.
    let first_reowned = std::cell::Cell::new(None::<Duration>);

    let after = fleet
        .wait_until(
            Duration::from_secs(30),
            &format!("the {} nodes of the killed {victim} are re-reserved by {survivors:?} with matching statuses", moved.len()),
            async || {
                let snap = fleet.snapshot().await?;
                let problems: Vec<String> = moved
                    .iter()
                    .filter_map(|id| snap.node_problem(id, &survivors))
                    .collect();
                if problems.len() < moved.len() && first_reowned.get().is_none() {
                    first_reowned.set(Some(start.elapsed()));
                }
                match problems.first() {
                    None => Ok(snap),
                    Some(p) => Err(format!("{} of {} not yet re-owned, e.g. {p}", problems.len(), moved.len())),
                }
            },
        )
        .await;
    let all_reowned = start.elapsed();
    let first = first_reowned.get().unwrap_or(all_reowned);
    fleet.note(&format!(
        "SIGKILL of {victim}: its {} nodes re-owned by {survivors:?}, the first after {:.2} s, all after {:.2} s (lease TTL 2 s)",
        moved.len(),
        first.as_secs_f64(),
        all_reowned.as_secs_f64()
    ));
    // Generous for a loaded machine (TTL + 5 s), yet far below the 30 s the wait allows: a
    // takeover that waited for anything but the lease's expiry would miss it. The exact figure
    // is `ferric bench failover`'s.
    fleet.ensure(first <= Duration::from_secs(2 + 5), || {
        format!("the first node of the killed {victim} was re-owned only after {first:?} (lease TTL 2 s)")
    });
    let stayed = before
        .reservations
        .iter()
        .filter(|(id, kv)| {
            after
                .reservations
                .get(*id)
                .is_some_and(|a| a.create_rev == kv.create_rev)
        })
        .count();
    fleet.note(&format!(
        "{stayed} nodes kept their reservation through the failover"
    ));

    fleet
        .wait_settled(Duration::from_secs(30), &survivors)
        .await;

    // The new owners' actors answer: power on a sample of the moved nodes.
    let step = (moved.len() / 20).max(1);
    let sample: Vec<String> = moved.iter().step_by(step).take(20).cloned().collect();
    for id in &sample {
        fleet.ctl_ok(&["node", "power", id, "on"]).await;
    }
    wait_powered_on(&fleet, &sample, Duration::from_secs(30)).await;

    // The killed conductor comes back under its name and gets its share again.
    fleet.restart_conductor(victim);
    fleet.note(&format!("restarted {victim}"));
    let start = Instant::now();
    wait_balanced(&fleet, Duration::from_secs(60), &THREE).await;
    fleet.note(&format!(
        "restart of {victim}: rebalanced after {:.2} s",
        start.elapsed().as_secs_f64()
    ));

    fleet.check_fencing_history().await;
}

/// The value of `name` in a conductor's `/metrics`, from the series whose labels include
/// `label` (e.g. `kind="full"`; "" for any), 0 if there is none.
fn metric(port: u16, name: &str, label: &str) -> f64 {
    let body = ferric_testkit::http::http(port, "GET", "/metrics", &[], None)
        .map(|r| r.body)
        .unwrap_or_default();
    body.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels.contains(label).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A takeover with the warm standby's specs and statuses (kept by watches: the takeover reads
/// only delegations and reservations) acts on every change made around the holder's death:
/// intents written while it was dead are carried out, nodes deleted then do not run, nodes
/// created then run, nodes the holder moved on before it died are taken over as it left them;
/// etcd and the survivors' reservations agree once settled, and every bucket taken was read
/// without its specs and statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takeover_acts_on_changes_made_around_the_holders_death() {
    let mut fleet = Fleet::new("standby").await;
    let mut ports = BTreeMap::new();
    for name in THREE {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--lease-ttl", "3", "--metrics-listen", &listen];
        // c1 keeps specs only (its takeovers read statuses), c3 statuses too: both ways of a
        // warm takeover, each checked below.
        if name == "c1" {
            args.push("--no-standby-statuses");
        }
        fleet.start_conductor(name, &args);
        ports.insert(name, port);
    }
    fleet.create_nodes(900, &[]).await;
    let before = wait_balanced(&fleet, Duration::from_secs(90), &THREE).await;
    fleet
        .wait_until(
            Duration::from_secs(30),
            "every conductor's warm standby has read its buckets",
            async || {
                for (name, port) in &ports {
                    let kept = metric(*port, "ferric_standby_buckets", "");
                    let ready = metric(*port, "ferric_standby_ready_buckets", "");
                    if kept == 0.0 || ready < kept {
                        return Err(format!("{name}: {ready} of {kept} standby buckets read"));
                    }
                }
                Ok(())
            },
        )
        .await;
    let reads = |kind: &str, names: &[&str]| -> f64 {
        names
            .iter()
            .map(|n| {
                metric(
                    ports[n],
                    "ferric_takeover_reads_total",
                    &format!("kind=\"{kind}\""),
                )
            })
            .sum()
    };
    let victim = "c2";
    let survivors = ["c1", "c3"];
    let full_before = reads("full", &survivors);
    let standby_before = reads("standby", &survivors);
    let warm_before = reads("warm", &survivors);
    let moved = before.held_by(victim);
    // (A bucket's key stands for the node ids it covers.)
    let victim_buckets: BTreeSet<&str> = before
        .buckets
        .keys()
        .filter(|b| before.holder(b).is_some_and(|(h, _)| h == victim))
        .map(String::as_str)
        .collect();
    let (managed, deleted) = (&moved[..10], &moved[10..20]);
    let settled_before = &moved[20..40];

    let mut cfg = EtcdConfig::new(&fleet.url());
    cfg.prefix = fleet.prefix.clone();
    let cluster = Cluster::connect(&cfg)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("connect: {e}")));
    // After the standby's fill and before the kill, the holder moves some nodes on: the
    // takeover must act on their statuses as the holder left them, not as they were when the
    // standby read the specs.
    for id in settled_before {
        cluster
            .request_provision(None, id, Verb::Manage, false, "", "test")
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("manage {id}: {e}")));
    }
    for id in settled_before {
        fleet
            .wait_status(
                id,
                Duration::from_secs(30),
                &format!("node {id} manageable before its holder dies"),
                |s| match s.provision_state {
                    ProvisionState::Manageable => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
    }
    let killed_at = cluster
        .revision()
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("revision: {e}")));
    fleet.conductor(victim).kill();
    let killed = Instant::now();
    fleet.note(&format!("SIGKILLed {victim}"));
    // While its lease runs out (3 s): intents for some of its nodes, deletes of others, and
    // new nodes, about a third of them in its buckets.
    for id in managed {
        cluster
            .request_provision(None, id, Verb::Manage, false, "", "test")
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("manage {id}: {e}")));
    }
    for id in deleted {
        cluster
            .delete_node(id, |_| Ok(()))
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("delete {id}: {e}")));
    }
    let created: Vec<NodeId> = (0..60).map(|_| NodeId::new_random()).collect();
    let specs = created
        .iter()
        .map(|id| NodeSpec::new(*id, "fake-hardware", now_ms()))
        .collect();
    let made = cluster
        .create_nodes(specs)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("create: {e}")));
    fleet.ensure(made.iter().all(Result::is_ok), || format!("{made:?}"));
    let in_victims = created
        .iter()
        .filter(|id| victim_buckets.contains(&id.to_string()[..3]))
        .count();
    fleet.note(&format!(
        "10 manage requests, 10 deletes and 60 new nodes ({in_victims} in {victim}'s buckets) written {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    ));

    // Every node in etcd reserved by a survivor, and each survivor running as many node
    // actors as it holds: a deleted node still running, or a new one not started, fails it.
    let snap = fleet
        .wait_settled(Duration::from_secs(30), &survivors)
        .await;
    // Every bucket's acquisition put its status marker, on the same lease at the same revision.
    for (b, kv) in &snap.buckets {
        let marker = snap.status_markers.get(b);
        fleet.ensure(
            marker.is_some_and(|m| m.lease == kv.lease && m.mod_rev == kv.create_rev),
            || {
                format!(
                    "bucket {b} (lease {}, acquired at {}) has the status marker {marker:?}",
                    kv.lease, kv.create_rev
                )
            },
        );
    }
    for id in deleted {
        fleet.ensure(!snap.nodes.contains_key(id), || {
            format!("deleted node {id} is still in etcd")
        });
    }
    for id in managed {
        fleet
            .wait_status(
                id,
                Duration::from_secs(30),
                &format!("node {id}, asked to manage while its holder was dead, is manageable"),
                |s| {
                    if s.provision_state == ProvisionState::Manageable {
                        Ok(())
                    } else {
                        Err(format!("{:?}", s.provision_state))
                    }
                },
            )
            .await;
    }
    let standby = reads("standby", &survivors) - standby_before;
    let warm = reads("warm", &survivors) - warm_before;
    let full = reads("full", &survivors) - full_before;
    let (c1_warm, c3_standby) = (reads("warm", &["c1"]), reads("standby", &["c3"]));
    fleet.note(&format!(
        "takeover reads: {warm} with the standby's specs and statuses, {standby} with its specs, {full} whole; {victim} held {} buckets",
        victim_buckets.len()
    ));
    fleet.ensure(
        full == 0.0
            && standby + warm >= victim_buckets.len() as f64
            && standby > 0.0
            && warm > 0.0
            && c1_warm == 0.0
            && c3_standby == 0.0,
        || {
            format!(
                "the survivors read {full} taken buckets whole, {standby} with the standby's specs (c3: {c3_standby}) and {warm} with its specs and statuses (c1, which keeps no statuses: {c1_warm}); {victim} held {} buckets",
                victim_buckets.len()
            )
        },
    );
    // The nodes managed before the kill were taken over as manageable and at rest: a survivor
    // that started from statuses older than the manage would run it again and write them.
    let history = fleet.history().await;
    for id in settled_before {
        let writes: Vec<String> = history
            .under(&format!("{}status/{id}", fleet.prefix))
            .filter(|e| e.put && e.revision > killed_at)
            .filter_map(|e| decode::<NodeStatus>(&e.value).ok())
            .map(|s| format!("{:?} by {:?}", s.provision_state, s.owner))
            .collect();
        fleet.ensure(writes.is_empty(), || {
            format!("node {id}, manageable before the kill, had its status written after it: {writes:?}")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_at_once() {
    let mut fleet = Fleet::new("sigterm").await;
    // A TTL far longer than the hand-off: nodes moving before it proves a revoke, not an expiry.
    start_three(&mut fleet, &["--lease-ttl", "30"]);
    fleet.create_nodes(600, &[]).await;
    let before = wait_balanced(&fleet, Duration::from_secs(60), &THREE).await;

    let victim = "c1";
    let survivors = ["c2", "c3"];
    let handed = before.held_by(victim);
    fleet.ensure(!handed.is_empty(), || format!("{victim} holds no nodes"));
    let limit = Duration::from_secs(10);
    let start = Instant::now();
    fleet.conductor(victim).signal(Signal::SIGTERM);
    fleet.note(&format!("sent SIGTERM to {victim}"));

    fleet
        .wait_until(
            limit,
            &format!("the {} nodes of {victim} are re-reserved by {survivors:?} within 10 s of SIGTERM (TTL 30 s)", handed.len()),
            async || {
                let snap = fleet.snapshot().await?;
                let problems: Vec<String> = handed
                    .iter()
                    .filter_map(|id| snap.node_problem(id, &survivors))
                    .collect();
                match problems.first() {
                    None => Ok(()),
                    Some(p) => Err(format!("{} of {} not yet handed over, e.g. {p}", problems.len(), handed.len())),
                }
            },
        )
        .await;
    let handoff = start.elapsed();
    fleet.note(&format!(
        "SIGTERM of {victim}: its {} nodes re-owned after {:.3} s",
        handed.len(),
        handoff.as_secs_f64()
    ));

    let status = fleet
        .conductor(victim)
        .wait_exit(limit.saturating_sub(start.elapsed()))
        .await;
    match status {
        Some(s) if s.success() => {}
        Some(s) => fleet.fail(&format!("{victim} exited with {s} after SIGTERM, want 0")),
        None => fleet.fail(&format!("{victim} did not exit within 10 s of SIGTERM")),
    }
    fleet.note(&format!(
        "SIGTERM of {victim}: exited 0 within {:.2} s",
        start.elapsed().as_secs_f64()
    ));

    // All its buckets (and reservations) went in one revision: the lease was revoked, not
    // released one by one.
    let history = fleet.check_fencing_history().await;
    let mut revisions: BTreeMap<i64, usize> = BTreeMap::new();
    for id in &handed {
        let key = if before.reservations.contains_key(id) {
            format!("{}reservations/{id}", fleet.prefix)
        } else {
            format!("{}buckets/{}", fleet.prefix, &id[..3])
        };
        match history.first_delete_after(&key, before.revision) {
            Some(rev) => *revisions.entry(rev).or_insert(0) += 1,
            None => fleet.fail(&format!(
                "{key}, through which {victim} owned {id}, was never deleted"
            )),
        }
    }
    fleet.ensure(revisions.len() == 1, || {
        format!(
            "the {} reservations of {victim} were deleted in {} revisions (revision: count {revisions:?}), want one (a lease revoke)",
            handed.len(),
            revisions.len()
        )
    });
    let member = format!("{}conductors/{victim}", fleet.prefix);
    let member_deleted = history.first_delete_after(&member, before.revision);
    fleet.ensure(member_deleted == revisions.keys().next().copied(), || {
        format!(
            "{victim}'s membership key was deleted at revision {member_deleted:?}, its reservations at {revisions:?}: want one revoke of its lease"
        )
    });
    fleet
        .wait_settled(Duration::from_secs(10), &survivors)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_conductors_recover_without_restart() {
    let mut fleet = Fleet::new("etcd-outage").await;
    start_three(&mut fleet, &TTL_2);
    fleet.create_nodes(300, &[]).await;
    let before = wait_balanced(&fleet, Duration::from_secs(60), &THREE).await;

    let mut leases = BTreeMap::new();
    let mut pids = BTreeMap::new();
    let mut marks = BTreeMap::new();
    for name in THREE {
        let rec = before
            .conductor(name)
            .unwrap_or_else(|| fleet.fail(&format!("no readable conductor record for {name}")));
        leases.insert(name, rec.lease_id);
        pids.insert(name, fleet.conductor(name).pid());
        marks.insert(name, fleet.conductor(name).log_len());
    }

    // Outage of 2 x TTL. Meanwhile, watch the logs for each conductor's self-fencing.
    let outage = Duration::from_secs(4);
    fleet.etcd.stop();
    let down = Instant::now();
    fleet.note("etcd stopped");
    let mut fenced_after: BTreeMap<&str, f64> = BTreeMap::new();
    while down.elapsed() < outage {
        for name in THREE {
            if !fenced_after.contains_key(name)
                && fleet.conductor(name).logged_fencing_since(marks[name])
            {
                fenced_after.insert(name, down.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.etcd.restart();
    fleet.note(&format!(
        "etcd down for {:.2} s; self-fencing logged after (s): {fenced_after:?}",
        down.elapsed().as_secs_f64()
    ));

    for name in THREE {
        let p = fleet.conductor(name);
        fleet.ensure(p.is_running() && p.pid() == pids[name], || {
            format!(
                "conductor {name} (pid {}) did not survive the etcd outage",
                pids[name]
            )
        });
    }

    let start = Instant::now();
    fleet
        .wait_until(
            Duration::from_secs(60),
            "after etcd is back, every node is reserved once with matching statuses and every conductor rejoined on a new lease",
            async || {
                let snap = fleet.snapshot().await?;
                snap.check_settled(&THREE)?;
                for name in THREE {
                    let rec = snap
                        .conductor(name)
                        .ok_or_else(|| format!("conductor {name} is not registered"))?;
                    if rec.lease_id == leases[name] {
                        return Err(format!(
                            "conductor {name} is still registered on its lease {} from before the outage",
                            rec.lease_id
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    fleet.note(&format!(
        "recovered {:.2} s after etcd restarted",
        start.elapsed().as_secs_f64()
    ));

    for name in THREE {
        let p = fleet.conductor(name);
        fleet.ensure(p.is_running() && p.pid() == pids[name], || {
            format!(
                "conductor {name} (pid {}) exited after the outage",
                pids[name]
            )
        });
    }
    // The fencing invariant across the outage, checked before the log check below so that a
    // failure of either is reported with the other's outcome known.
    fleet.check_fencing_history().await;
    let silent: Vec<&str> = THREE
        .into_iter()
        .filter(|n| !fenced_after.contains_key(n))
        .collect();
    fleet.ensure(silent.is_empty(), || {
        format!("conductors {silent:?} logged nothing about self-fencing (\"fenc\") during the {outage:?} etcd outage")
    });
}

/// Reserves one node for `conductor` and returns the fencing token.
async fn acquire_one(
    fleet: &Fleet,
    cluster: &Cluster,
    id: NodeId,
    lease: i64,
    conductor: &str,
) -> FenceToken {
    let out = cluster
        .acquire(&[id], lease, conductor)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("acquire for {conductor}: {e}")));
    match out.into_iter().next() {
        Some((got, AcquireOutcome::Acquired(a))) if got == id => a.token,
        other => fleet.fail(&format!("{conductor} could not acquire {id}: {other:?}")),
    }
}

/// A client of the fleet's etcd and one fake-hardware node enrolled in it.
async fn connect_with_one_node(fleet: &Fleet) -> (Cluster, NodeId) {
    let mut cfg = EtcdConfig::new(&fleet.url());
    cfg.prefix = fleet.prefix.clone();
    let cluster = Cluster::connect(&cfg)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("connect: {e}")));
    let id = NodeId::new_random();
    let created = cluster
        .create_nodes(vec![NodeSpec::new(id, "fake-hardware", now_ms())])
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("create node: {e}")));
    fleet.ensure(
        matches!(created.as_slice(), [Ok(got)] if *got == id),
        || format!("create_nodes answered {created:?}"),
    );
    (cluster, id)
}

/// Takes `id`'s bucket for `conductor` and returns the fencing token.
async fn take_bucket(
    fleet: &Fleet,
    cluster: &Cluster,
    id: NodeId,
    lease: i64,
    conductor: &str,
) -> FenceToken {
    use ferric_cluster::buckets::BucketOutcome;
    let b = ferric_model::Bucket::of(&id);
    let out = cluster
        .acquire_buckets(&[b], lease, conductor)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("bucket for {conductor}: {e}")));
    match out.into_iter().next() {
        Some((got, BucketOutcome::Acquired(token))) if got == b => token,
        other => fleet.fail(&format!("{conductor} could not take bucket {b}: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fence_write_is_rejected() {
    use ferric_cluster::buckets::BucketOutcome;
    let fleet = Fleet::new("stale-fence").await;
    let (cluster, id) = connect_with_one_node(&fleet).await;
    let bucket = ferric_model::Bucket::of(&id);

    let ttl = Duration::from_secs(5);
    let lease_a = LeaseKeeper::grant(&cluster, ttl)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("grant lease for a: {e}")));
    let token_a = take_bucket(&fleet, &cluster, id, lease_a.id, "a").await;
    let status_of = |owner: &str, token: FenceToken| NodeStatus {
        owner: Some(owner.to_string()),
        fence: token.0,
        last_error: Some(format!("written by {owner}")),
        updated_at_ms: now_ms(),
        ..NodeStatus::default()
    };
    if let Err(e) = cluster
        .write_status(&id, token_a, &status_of("a", token_a))
        .await
    {
        fleet.fail(&format!("a's write while it holds the bucket failed: {e}"));
    }

    let lease_b = LeaseKeeper::grant(&cluster, ttl)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("grant lease for b: {e}")));
    // While a holds it, b cannot take it.
    match cluster.acquire_buckets(&[bucket], lease_b.id, "b").await {
        Ok(out) => fleet.ensure(
            matches!(out.as_slice(), [(_, BucketOutcome::Held { holder: Some(h), .. })] if h == "a"),
            || format!("b's take while a holds the bucket answered {out:?}"),
        ),
        Err(e) => fleet.fail(&format!("b's take: {e}")),
    }

    // a loses its lease (as if it died); b takes the bucket.
    if let Err(e) = cluster.revoke_lease(lease_a.id).await {
        fleet.fail(&format!("revoke a's lease: {e}"));
    }
    lease_a.stop();
    let token_b = take_bucket(&fleet, &cluster, id, lease_b.id, "b").await;
    fleet.ensure(token_b.revision() > token_a.revision(), || {
        format!("b's fence {token_b} is not newer than a's {token_a}")
    });

    match cluster
        .write_status(&id, token_a, &status_of("a", token_a))
        .await
    {
        Err(ClusterError::Fenced(_)) => {}
        other => fleet.fail(&format!(
            "a's write with its stale fence {token_a} answered {other:?}, want Fenced"
        )),
    }
    if let Err(e) = cluster
        .write_status(&id, token_b, &status_of("b", token_b))
        .await
    {
        fleet.fail(&format!("b's write as the holder failed: {e}"));
    }

    let snap = fleet.snapshot().await.unwrap_or_else(|e| fleet.fail(&e));
    match snap.status(&id.to_string()) {
        Some(Ok(s)) if s.owner.as_deref() == Some("b") && s.fence == token_b.0 => {}
        other => fleet.fail(&format!(
            "status in etcd is {other:?}, want b's with fence {token_b}"
        )),
    }
    fleet.check_fencing_history().await;
    if let Err(e) = cluster.revoke_lease(lease_b.id).await {
        fleet.fail(&format!("revoke b's lease: {e}"));
    }
}

/// The two ways of owning a node (DESIGN.md, "Placement"), against a real etcd: through its
/// bucket's key, and through a reservation of its own once the bucket's holder handed it on.
/// At every step exactly one of the parties gets a status write through, whatever tokens the
/// others still have, and what etcd keeps says who wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_and_delegation_fences_admit_one_writer() {
    use ferric_cluster::buckets::{BucketOutcome, Delegate};
    use ferric_model::Bucket;
    let fleet = Fleet::new("bucket-fence").await;
    let (cluster, id) = connect_with_one_node(&fleet).await;
    let bucket = Bucket::of(&id);
    let ttl = Duration::from_secs(5);
    let grant = async |who: &str| {
        LeaseKeeper::grant(&cluster, ttl)
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("grant lease for {who}: {e}")))
    };
    let (lease_a, lease_b, lease_w) = (grant("a").await, grant("b").await, grant("w").await);
    let status_of = |owner: &str, token: FenceToken| NodeStatus {
        owner: Some(owner.to_string()),
        fence: token.0,
        last_error: Some(format!("written by {owner}")),
        updated_at_ms: now_ms(),
        ..NodeStatus::default()
    };
    // Who of (name, token) gets a status write through; each is tried.
    let writers = async |tries: &[(&str, FenceToken)]| -> Vec<String> {
        let mut through = Vec::new();
        for (who, token) in tries {
            match cluster
                .write_status(&id, *token, &status_of(who, *token))
                .await
            {
                Ok(_) => through.push(who.to_string()),
                Err(ClusterError::Fenced(_)) => {}
                Err(e) => fleet.fail(&format!("{who}'s status write: {e}")),
            }
        }
        through
    };
    let take_bucket = async |who: &str, lease: i64| -> BucketOutcome {
        let out = cluster
            .acquire_buckets(&[bucket], lease, who)
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("{who} acquiring bucket {bucket}: {e}")));
        out.into_iter()
            .next()
            .map(|(_, o)| o)
            .unwrap_or_else(|| fleet.fail("no outcome"))
    };
    let delegate = async |token: FenceToken, to: Option<&str>| -> bool {
        let change = Delegate {
            id,
            token,
            to: to.map(str::to_string),
        };
        let out = cluster
            .delegate(&[change])
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("delegate to {to:?}: {e}")));
        out.1 == [true]
    };

    // a takes the bucket: the node is a's, b cannot take the bucket, w cannot reserve the node.
    let BucketOutcome::Acquired(token_a) = take_bucket("a", lease_a.id).await else {
        fleet.fail("a could not take a free bucket");
    };
    fleet.ensure(token_a.is_bucket(), || {
        format!("a's token {token_a} is not a bucket token")
    });
    match take_bucket("b", lease_b.id).await {
        BucketOutcome::Held {
            holder: Some(h),
            create_rev,
            ..
        } if h == "a" && create_rev == token_a.revision() => {}
        other => fleet.fail(&format!("b's take of a's bucket answered {other:?}")),
    }
    match cluster.acquire(&[id], lease_w.id, "w").await {
        Ok(out) => fleet.ensure(
            matches!(out.as_slice(), [(_, AcquireOutcome::NotDelegated)]),
            || format!("w's reservation of a node nobody handed on answered {out:?}"),
        ),
        Err(e) => fleet.fail(&format!("w's reservation: {e}")),
    }
    let w_none = FenceToken(i64::MAX / 2);
    assert_eq!(writers(&[("a", token_a), ("w", w_none)]).await, ["a"]);

    // a hands the node on to w; w reserves it; from then on only w writes.
    fleet.ensure(delegate(token_a, Some("w")).await, || {
        "a's delegation to w was refused".into()
    });
    let token_w = acquire_one(&fleet, &cluster, id, lease_w.id, "w").await;
    fleet.ensure(!token_w.is_bucket(), || {
        format!("w's token {token_w} is a bucket token")
    });
    assert_eq!(writers(&[("a", token_a), ("w", token_w)]).await, ["w"]);
    // a cannot take it back while w holds it.
    fleet.ensure(!delegate(token_a, None).await, || {
        "a took the node back while w held it".into()
    });

    // w lets it go; a takes it back; w's token is stale and w cannot reserve it again.
    match cluster.release(&[(id, token_w)]).await {
        Ok(1) => {}
        other => fleet.fail(&format!("w's release answered {other:?}")),
    }
    fleet.ensure(delegate(token_a, None).await, || {
        "a could not take the node back".into()
    });
    assert_eq!(writers(&[("w", token_w), ("a", token_a)]).await, ["a"]);
    match cluster.acquire(&[id], lease_w.id, "w").await {
        Ok(out) => fleet.ensure(
            matches!(out.as_slice(), [(_, AcquireOutcome::NotDelegated)]),
            || format!("w's reservation after a took the node back answered {out:?}"),
        ),
        Err(e) => fleet.fail(&format!("w's second reservation: {e}")),
    }

    // a dies: its bucket goes with its lease; b takes the bucket with a newer token, and a's
    // token (and a's delegations) are refused.
    if let Err(e) = cluster.revoke_lease(lease_a.id).await {
        fleet.fail(&format!("revoke a's lease: {e}"));
    }
    lease_a.stop();
    let BucketOutcome::Acquired(token_b) = take_bucket("b", lease_b.id).await else {
        fleet.fail("b could not take the bucket after a's lease ended");
    };
    fleet.ensure(token_b.revision() > token_a.revision(), || {
        format!("b's token {token_b} is not newer than a's {token_a}")
    });
    assert_eq!(
        writers(&[("a", token_a), ("w", token_w), ("b", token_b)]).await,
        ["b"]
    );
    fleet.ensure(!delegate(token_a, Some("w")).await, || {
        "a delegated with a stale bucket token".into()
    });
    fleet.ensure(delegate(token_b, Some("w")).await, || {
        "b's delegation was refused".into()
    });

    // What b reads of its bucket: the node, b's status, the delegation to w, no reservation.
    let records = cluster
        .read_bucket(bucket)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("read bucket: {e}")));
    let node = records.nodes.iter().find(|n| n.id == id);
    let status_owner = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.as_ref().ok())
        .map(|s| (s.owner.clone(), s.fence));
    fleet.ensure(
        records.nodes.len() == 1 && status_owner == Some((Some("b".into()), token_b.0)),
        || {
            format!(
                "bucket read: {} nodes, status (owner, fence) {status_owner:?}",
                records.nodes.len()
            )
        },
    );
    fleet.ensure(
        records.delegations == [(id, Ok("w".to_string()))] && records.reservations.is_empty(),
        || {
            format!(
                "bucket read: delegations {:?}, reservations {:?}",
                records.delegations, records.reservations
            )
        },
    );
    // The raw keys, as etcd has them.
    let snap = fleet.snapshot().await.unwrap_or_else(|e| fleet.fail(&e));
    match snap.status(&id.to_string()) {
        Some(Ok(s)) if s.owner.as_deref() == Some("b") && s.fence == token_b.0 => {}
        other => fleet.fail(&format!(
            "status in etcd is {other:?}, want b's with fence {token_b}"
        )),
    }
    for lease in [lease_b, lease_w] {
        let _ = cluster.revoke_lease(lease.id).await;
        lease.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fence_write_is_rejected_by_live_conductor() {
    let mut fleet = Fleet::new("lost-reservation").await;
    for name in ["c1", "c2"] {
        fleet.start_conductor(name, &TTL_2);
    }
    fleet.create_nodes(20, &[]).await;
    let before = fleet
        .wait_settled(Duration::from_secs(30), &["c1", "c2"])
        .await;

    // Take the node's bucket away from its holder from outside, and in the same revision ask
    // for a power action, so that the holder has a reason to write the status just then.
    let id = before
        .nodes
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| fleet.fail("no node"));
    let (holder, old_fence) = before.holder(&id).expect("owned");
    fleet.ensure(old_fence < 0, || {
        format!("node {id} is owned through a reservation (fence {old_fence}), not its bucket")
    });
    let spec_kv = &before.nodes[&id];
    let mut spec: NodeSpec =
        decode(&spec_kv.value).unwrap_or_else(|e| fleet.fail(&format!("spec of {id}: {e}")));
    let seq = spec.next_power_seq();
    spec.power_request = Some(PowerRequest {
        seq,
        target: PowerTarget::On,
        timeout_s: None,
        requested_by: "test".into(),
        requested_at_ms: now_ms(),
    });
    spec.updated_at_ms = now_ms();
    let res_key = format!("{}buckets/{}", fleet.prefix, &id[..3]);
    let node_key = format!("{}nodes/{id}", fleet.prefix);
    let txn = Txn::new()
        .when([
            Compare::create_revision(res_key.clone(), CompareOp::Equal, -old_fence),
            Compare::mod_revision(node_key.clone(), CompareOp::Equal, spec_kv.mod_rev),
        ])
        .and_then([
            TxnOp::delete(res_key.clone(), None),
            TxnOp::put(node_key, encode(&spec), None),
        ]);
    let resp = fleet
        .inspect
        .client()
        .txn(txn)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("delete bucket: {e}")));
    fleet.ensure(resp.succeeded(), || {
        format!("bucket of {id} (held by {holder}, fence {old_fence}) or its spec changed while settled")
    });
    let deleted_at = resp.header().map_or(0, |h| h.revision());
    fleet.note(&format!(
        "deleted the bucket of {id} (holder {holder}, fence {old_fence}) at revision {deleted_at}"
    ));

    fleet
        .wait_until(
            Duration::from_secs(30),
            &format!("node {id} is owned again (a new fence) and its status written under it"),
            async || {
                let snap = fleet.snapshot().await?;
                if let Some(p) = snap.node_problem(&id, &["c1", "c2"]) {
                    return Err(p);
                }
                let (_, fence) = snap.holder(&id).expect("checked");
                if fence.abs() <= deleted_at {
                    return Err(format!(
                        "reservation fence {fence} is not newer than the delete at {deleted_at}"
                    ));
                }
                Ok(())
            },
        )
        .await;
    wait_powered_on(&fleet, std::slice::from_ref(&id), Duration::from_secs(30)).await;
    fleet
        .wait_settled(Duration::from_secs(30), &["c1", "c2"])
        .await;

    let history = fleet.check_fencing_history().await;
    let status_key = format!("{}status/{id}", fleet.prefix);
    let stale: Vec<i64> = history
        .events
        .iter()
        .filter(|e| e.put && e.key == status_key && e.revision > deleted_at)
        .filter(|e| decode::<NodeStatus>(&e.value).is_ok_and(|s| s.fence == old_fence))
        .map(|e| e.revision)
        .collect();
    fleet.ensure(stale.is_empty(), || {
        format!("status of {id} written with the lost fence {old_fence} after its bucket was deleted at {deleted_at}: revisions {stale:?}")
    });
    for name in ["c1", "c2"] {
        fleet.ensure(fleet.conductor(name).is_running(), || {
            format!("conductor {name} exited")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors() {
    let mut fleet = Fleet::new("bad-input").await;
    fleet.start_conductor("c1", &TTL_2);
    let ids = fleet.create_nodes(2, &[]).await;
    fleet.wait_settled(Duration::from_secs(30), &["c1"]).await;

    // A spec of garbage bytes, and a well-formed spec with a format version from the future.
    let garbage = NodeId::new_random().to_string();
    let future = NodeId::new_random();
    let mut future_bytes = encode(&NodeSpec::new(future, "fake-hardware", now_ms()));
    future_bytes[0] = 200;
    let future = future.to_string();
    let mut kv = fleet.inspect.client().kv_client();
    for (id, value) in [
        (
            &garbage,
            vec![
                1u8, 0xff, 0xfe, 0x00, 0x13, 0x37, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
        (&future, future_bytes),
    ] {
        kv.put(format!("{}nodes/{id}", fleet.prefix), value, None)
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("put bad spec: {e}")));
    }

    // The owner holds them and writes nothing for them (the API shows the record's error, see
    // tests/unreadable_records.rs): no status appears, and its log says why.
    fleet
        .wait_until(
            Duration::from_secs(30),
            "the owner holds the unreadable specs and says it cannot act on them",
            async || {
                let snap = fleet.snapshot().await?;
                let logs = std::fs::read_to_string(fleet.conductor("c1").log_path())
                    .map_err(|e| format!("c1's log: {e}"))?;
                for (id, words) in [
                    (&garbage, &["corrupt"][..]),
                    (&future, &["version", "200"][..]),
                ] {
                    if let Some(p) = snap.node_problem(id, &["c1"]) {
                        return Err(p);
                    }
                    if snap.status(id).is_some() {
                        return Err(format!("node {id}: a status was written"));
                    }
                    let said = logs.lines().any(|l| {
                        let l = l.to_lowercase();
                        l.contains(id.as_str())
                            && l.contains("cannot act on this node")
                            && words.iter().all(|w| l.contains(w))
                    });
                    if !said {
                        return Err(format!("node {id}: no log line mentions {words:?}"));
                    }
                }
                Ok(())
            },
        )
        .await;
    // Still running a while later, and still doing its job for the good nodes.
    if let Some(s) = fleet
        .conductor("c1")
        .wait_exit(Duration::from_secs(3))
        .await
    {
        fleet.fail(&format!(
            "conductor exited with {s} after reading bad specs"
        ));
    }
    fleet.ctl_ok(&["node", "power", &ids[0], "on"]).await;
    wait_powered_on(&fleet, &ids[..1], Duration::from_secs(30)).await;

    // `node show --json` of a good node has the documented fields.
    let shown = fleet.ctl_ok(&["node", "show", &ids[1], "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&shown)
        .unwrap_or_else(|e| fleet.fail(&format!("node show --json is not JSON ({e}): {shown}")));
    for field in [
        "uuid",
        "name",
        "driver",
        "power_state",
        "provision_state",
        "last_error",
        "reservation",
    ] {
        fleet.ensure(v.get(field).is_some(), || {
            format!("node show --json lacks {field:?}: {v}")
        });
    }
    fleet.ensure(
        v["uuid"] == ids[1].as_str()
            && v["driver"] == "fake-hardware"
            && v["provision_state"] == "enroll"
            && v["reservation"] == "c1",
        || format!("node show --json of a fresh node owned by c1: {v}"),
    );

    let expect_error = |out: &std::process::Output, what: &str, words: &[&str]| {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lower = stderr.to_lowercase();
        fleet.ensure(
            out.status.code() == Some(1)
                && stderr.starts_with("error:")
                && words.iter().any(|w| lower.contains(w)),
            || {
                format!(
                    "{what}: want exit 1 and `error: ...` mentioning one of {words:?}, got {}",
                    describe(out)
                )
            },
        );
    };

    let unknown = NodeId::new_random().to_string();
    let out = fleet.ctl(&["node", "show", &unknown]).await;
    expect_error(
        &out,
        "node show <unknown uuid>",
        &["not found", "could not be found"],
    );

    let out = fleet.ctl(&["node", "provision", &ids[1], "provide"]).await;
    expect_error(&out, "provide on an enroll node", &["enroll"]);

    let out = fleet.ctl(&["node", "frobnicate"]).await;
    fleet.ensure(out.status.code() == Some(2), || {
        format!(
            "an unknown subcommand is a usage error (exit 2): {}",
            describe(&out)
        )
    });

    // Nothing listens on this port: ctl gives up in bounded time and says it is about etcd.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let start = Instant::now();
    let out = ferric_testkit::fleet::ctl_with_timeout(
        &closed,
        &fleet.prefix,
        &["node", "list"],
        Duration::from_secs(15),
    )
    .await
    .unwrap_or_else(|| {
        fleet.fail(&format!(
            "`ctl --etcd {closed} node list` ran for more than 15 s"
        ))
    });
    fleet.note(&format!(
        "ctl against a closed port gave up after {:.2} s",
        start.elapsed().as_secs_f64()
    ));
    expect_error(&out, "node list against a closed etcd port", &["etcd"]);

    fleet.ensure(fleet.conductor("c1").is_running(), || {
        "conductor c1 exited".into()
    });
}

/// A gateway's write starts from its watch-fed copy of the node instead of reading etcd first;
/// a copy that is behind must change nothing about the outcome: a request the copy would
/// refuse is judged on what etcd holds, and a spec changed since the copy loses nothing (the
/// compare-and-swap fails and the change is made on etcd's spec).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_stale_copy_are_judged_on_etcd() {
    let fleet = Fleet::new("stale-copy").await;
    let (cluster, id) = connect_with_one_node(&fleet).await;
    let uuid = id.to_string();
    let copy = cluster
        .get_node(&uuid)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("get: {e}")));

    // The copy says `active` (manage refused there); etcd has no status yet (`enroll`).
    let mut behind = copy.clone();
    behind.status.provision_state = ProvisionState::Active;
    let view = cluster
        .request_provision(Some(behind), &uuid, Verb::Manage, false, "", "test")
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("manage from a stale copy: {e}")));
    fleet.ensure(
        view.spec.provision_request.as_ref().map(|r| r.verb) == Some(Verb::Manage),
        || format!("the request is not in the answer: {view:?}"),
    );

    // The spec changed since the copy (the manage request above, then maintenance): a power
    // request from the old copy keeps both.
    cluster
        .update_spec(&uuid, |_, spec| {
            spec.maintenance = true;
            spec.maintenance_reason = Some("kept".into());
            Ok(())
        })
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("maintenance: {e}")));
    cluster
        .request_power(Some(copy), &uuid, PowerTarget::On, None, "test")
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("power from a stale copy: {e}")));
    let now = cluster
        .get_node(&uuid)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("get: {e}")));
    fleet.ensure(
        now.spec.maintenance_reason.as_deref() == Some("kept")
            && now.spec.provision_request.as_ref().map(|r| r.verb) == Some(Verb::Manage)
            && now.spec.power_request.as_ref().map(|r| r.target) == Some(PowerTarget::On),
        || format!("etcd's spec lost a change: {:?}", now.spec),
    );

    // A request etcd's state refuses is still refused: provide from `enroll`.
    let refused = cluster
        .request_provision(Some(now.clone()), &uuid, Verb::Provide, false, "", "test")
        .await;
    fleet.ensure(refused.is_err(), || {
        format!("provide from enroll was accepted: {refused:?}")
    });
}

/// A read of more than 50,000 nodes goes on in sub-ranges (etcd 3.4 walks the whole rest of a
/// range for every page): every node comes exactly once and in key order, at the snapshot's
/// revision, while nodes are created during the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_prefix_reads_see_every_node_once() {
    let fleet = Fleet::new("large-read").await;
    let (cluster, first) = connect_with_one_node(&fleet).await;
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..60_000)
        .map(|_| NodeSpec::new(NodeId::new_random(), "fake-hardware", now))
        .collect();
    let mut want: BTreeSet<String> = specs.iter().map(|s| s.id.to_string()).collect();
    want.insert(first.to_string());
    for chunk in specs.chunks(4096) {
        for r in cluster
            .create_nodes(chunk.to_vec())
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("create nodes: {e}")))
        {
            r.unwrap_or_else(|e| fleet.fail(&format!("create node: {e}")));
        }
    }
    // Nodes created while the snapshot is read are not in it (it is read at one revision).
    let late = cluster.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            let spec = NodeSpec::new(NodeId::new_random(), "fake-hardware", now_ms());
            let _ = late.create_nodes(vec![spec]).await;
        }
    });
    let snap = cluster
        .snapshot()
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("snapshot: {e}")));
    let _ = writer.await;
    let got: Vec<String> = snap.nodes.iter().map(|n| n.id.to_string()).collect();
    let mut sorted = got.clone();
    sorted.sort();
    fleet.ensure(got == sorted, || {
        "the snapshot's nodes are not in key order".into()
    });
    let got: BTreeSet<String> = got.into_iter().collect();
    fleet.ensure(got.len() == snap.nodes.len(), || {
        format!("{} nodes but {} distinct", snap.nodes.len(), got.len())
    });
    // etcd's own count at the snapshot's revision, an independent record.
    let mut etcd = etcd_client::Client::connect([fleet.url()], None)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("etcd: {e}")));
    let prefix = format!("{}nodes/", fleet.prefix);
    let counted = etcd
        .get(
            prefix.as_str(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_revision(snap.revision),
            ),
        )
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("count: {e}")))
        .count();
    fleet.ensure(counted as usize == got.len(), || {
        format!(
            "etcd counts {counted} nodes at the snapshot's revision, the snapshot has {}",
            got.len()
        )
    });
    fleet.ensure(want.is_subset(&got), || {
        format!(
            "{} nodes created before the read are missing",
            want.difference(&got).count()
        )
    });
}

/// Spec compare-and-swaps that share etcd transactions (the gateway's group commit) lose
/// nothing: 16 writers each add one mark to the descriptions of 8 nodes at once, several on the
/// same node in the same instant, and etcd holds every mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_spec_writes_lose_no_update() {
    let fleet = Fleet::new("grouped-writes").await;
    let (cluster, first) = connect_with_one_node(&fleet).await;
    let cluster = cluster.with_spec_batching();
    let now = now_ms();
    let mut ids = vec![first];
    let more: Vec<NodeSpec> = (0..7)
        .map(|_| NodeSpec::new(NodeId::new_random(), "fake-hardware", now))
        .collect();
    ids.extend(more.iter().map(|s| s.id));
    for r in cluster
        .create_nodes(more)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("create: {e}")))
    {
        r.unwrap_or_else(|e| fleet.fail(&format!("create: {e}")));
    }
    let before = cluster
        .revision()
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("revision: {e}")));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let cluster = cluster.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                for id in ids {
                    cluster
                        .update_spec(&id.to_string(), |_, spec| {
                            let mut d = spec.description.clone().unwrap_or_default();
                            d.push_str(&format!("[{w}]"));
                            spec.description = Some(d);
                            Ok(())
                        })
                        .await?;
                }
                Ok::<_, ClusterError>(())
            })
        })
        .collect();
    for w in writers {
        w.await
            .unwrap_or_else(|e| fleet.fail(&format!("writer: {e}")))
            .unwrap_or_else(|e| fleet.fail(&format!("write: {e}")));
    }
    let after = cluster
        .revision()
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("revision: {e}")));
    fleet.note(&format!(
        "128 spec writes took {} etcd revisions (one per shared transaction)",
        after - before
    ));
    // etcd's records, read directly.
    let mut etcd = etcd_client::Client::connect([fleet.url()], None)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("etcd: {e}")));
    for id in &ids {
        let key = format!("{}nodes/{id}", fleet.prefix);
        let resp = etcd
            .get(key.as_str(), None)
            .await
            .unwrap_or_else(|e| fleet.fail(&format!("get: {e}")));
        let spec: NodeSpec =
            decode(resp.kvs()[0].value()).unwrap_or_else(|e| fleet.fail(&format!("decode: {e}")));
        let d = spec.description.unwrap_or_default();
        for w in 0..16 {
            fleet.ensure(d.contains(&format!("[{w}]")), || {
                format!("node {id} lost writer {w}'s mark: {d}")
            });
        }
        fleet.ensure(d.matches('[').count() == 16, || format!("node {id}: {d}"));
    }
}

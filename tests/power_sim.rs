//! Power operations against `ferric sim` where timing matters: graceful shutdowns that take 3 s
//! or never complete (both soft-off policies), a conductor killed or frozen in the middle of a
//! 10 s soft power off, BMCs that refuse credentials or stop answering, and `disable_power_off`.
//! Every claim is checked in the simulator's own command log (which conductor sent what, when).

use ferric_model::{decode, PowerState};
use ferric_testkit::Fleet;
use ferric_testkit::Sim;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn actions(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["method"] == "POST")
        .map(|e| e["action"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn request(fleet: &Fleet, id: &str, action: &str, timeout: u32) -> u64 {
    let before = fleet.power_seq_done(id).await;
    let t = timeout.to_string();
    fleet
        .ctl_ok(&["node", "power", id, action, "--timeout", &t])
        .await;
    before + 1
}

async fn node(fleet: &Fleet, sim: &Sim, system: usize, extra: &[&str]) -> String {
    let info = sim.driver_info(system, "password");
    let mut args = vec!["--driver", "redfish", "--driver-info", info.as_str()];
    args.extend_from_slice(extra);
    fleet.create_nodes(1, &args).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_timing_and_policies() {
    let mut fleet = Fleet::new("power-sim-policy").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 3, &["--graceful-shutdown-secs", "3"]).await;
    fleet.start_conductor("c1", &["--lease-ttl", "5", "--bmc-min-gap-ms", "100"]);
    let quick = node(&fleet, &sim, 0, &[]).await;
    let hung = node(&fleet, &sim, 1, &[]).await;
    let forced = node(&fleet, &sim, 2, &["--soft-off-policy", "hard-off"]).await;
    for id in [&quick, &hung, &forced] {
        let seq = request(&fleet, id, "on", 30).await;
        fleet
            .wait_power_done(id, seq, Duration::from_secs(30))
            .await;
    }
    sim.behaviour(1, json!({"graceful_shutdown_secs": null}))
        .await;
    sim.behaviour(2, json!({"graceful_shutdown_secs": null}))
        .await;

    // An OS that takes 3 s: the node reports off only once the machine is off, and nothing
    // but the graceful request was sent.
    let t0 = Instant::now();
    let seq = request(&fleet, &quick, "soft-off", 30).await;
    let s = fleet
        .wait_power_done(&quick, seq, Duration::from_secs(30))
        .await;
    let took = t0.elapsed();
    fleet.ensure(
        s.power_state == Some(PowerState::Off) && s.last_error.is_none(),
        || format!("quick soft off: {s:?}"),
    );
    fleet.ensure(took >= Duration::from_secs(3), || {
        format!("soft off reported after {took:?}, before the OS finished")
    });
    fleet.ensure(sim.power(0).await == "Off", || "sim-0 is not off".into());
    let acts = actions(&sim.commands(0));
    fleet.ensure(acts == ["On", "GracefulShutdown"], || {
        format!("sim-0 received {acts:?}")
    });

    // An OS that never shuts down, policy error (the default): power stays on, the node says
    // why, a fault is recorded, and no one cut the power.
    let seq = request(&fleet, &hung, "soft-off", 3).await;
    let s = fleet
        .wait_power_done(&hung, seq, Duration::from_secs(40))
        .await;
    fleet.ensure(s.power_state == Some(PowerState::On), || {
        format!("hung: {s:?}")
    });
    let err = s.last_error.clone().unwrap_or_default();
    fleet.ensure(err.contains("did not shut down within 3 s"), || {
        format!("last_error {err:?}")
    });
    fleet.ensure(s.fault.as_deref() == Some("power failure"), || {
        format!("fault {:?}", s.fault)
    });
    fleet.ensure(sim.power(1).await == "On", || {
        "sim-1 was powered off".into()
    });
    let acts = actions(&sim.commands(1));
    fleet.ensure(acts == ["On", "GracefulShutdown"], || {
        format!("sim-1 received {acts:?}: power was cut")
    });
    // The failed soft power off is in the history, followed by the maintenance its fault set.
    let h = fleet.node_history(&hung).await;
    let soft = h
        .entries
        .iter()
        .position(|e| e.severity == "ERROR" && e.action == "soft power off");
    fleet.ensure(
        soft.is_some_and(|i| {
            h.entries[i + 1..]
                .iter()
                .any(|e| e.kind == "maintenance" && e.action.contains("power failure"))
        }),
        || format!("history {:?}", h.entries),
    );

    // Policy hard-off: forced off after the timeout, and the history says so.
    let seq = request(&fleet, &forced, "soft-off", 3).await;
    let s = fleet
        .wait_power_done(&forced, seq, Duration::from_secs(40))
        .await;
    fleet.ensure(
        s.power_state == Some(PowerState::Off) && s.last_error.is_none(),
        || format!("forced: {s:?}"),
    );
    fleet.ensure(sim.power(2).await == "Off", || "sim-2 is not off".into());
    let acts = actions(&sim.commands(2));
    fleet.ensure(acts == ["On", "GracefulShutdown", "ForceOff"], || {
        format!("sim-2 received {acts:?}")
    });
    let h = fleet.node_history(&forced).await;
    fleet.ensure(
        h.entries
            .last()
            .is_some_and(|e| e.action.contains("forced off") && e.action.contains("hard-off")),
        || format!("history {:?}", h.entries),
    );

    // A later successful power action clears the fault.
    let seq = request(&fleet, &hung, "off", 30).await;
    let s = fleet
        .wait_power_done(&hung, seq, Duration::from_secs(30))
        .await;
    fleet.ensure(
        s.fault.is_none() && s.power_state == Some(PowerState::Off),
        || format!("after off: {s:?}"),
    );
    drop(sim.proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_power_off_and_bad_bmcs() {
    let mut fleet = Fleet::new("power-sim-errors").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 4, &[]).await;
    fleet.start_conductor(
        "c1",
        &[
            "--lease-ttl",
            "5",
            "--bmc-min-gap-ms",
            "100",
            "--bmc-timeout",
            "2",
        ],
    );

    // disable_power_off: ctl refuses power off; reboot is a reset, never an off.
    let guarded = node(&fleet, &sim, 0, &["--disable-power-off"]).await;
    let seq = request(&fleet, &guarded, "on", 30).await;
    fleet
        .wait_power_done(&guarded, seq, Duration::from_secs(30))
        .await;
    fleet
        .ctl_refused(&["node", "power", &guarded, "off"], "disable_power_off")
        .await;
    let seq = request(&fleet, &guarded, "reboot", 30).await;
    let s = fleet
        .wait_power_done(&guarded, seq, Duration::from_secs(30))
        .await;
    fleet.ensure(
        s.power_state == Some(PowerState::On) && s.last_error.is_none(),
        || format!("guarded reboot: {s:?}"),
    );
    let acts = actions(&sim.commands(0));
    fleet.ensure(acts == ["On", "ForceRestart"], || {
        format!("sim-0 received {acts:?}")
    });

    // Wrong credentials: a clear error, quickly, and the node is not stuck.
    let info = sim.driver_info(1, "wrong");
    let bad = fleet
        .create_nodes(1, &["--driver", "redfish", "--driver-info", &info])
        .await
        .remove(0);
    let seq = request(&fleet, &bad, "on", 30).await;
    let s = fleet
        .wait_power_done(&bad, seq, Duration::from_secs(30))
        .await;
    let err = s.last_error.clone().unwrap_or_default();
    fleet.ensure(err.contains("credentials"), || {
        format!("wrong password: last_error {err:?}")
    });
    fleet.ensure(!err.contains("wrong"), || {
        format!("the password leaked into last_error: {err:?}")
    });
    fleet.ensure(sim.power(1).await == "Off", || {
        "sim-1 was powered on with a wrong password".into()
    });

    // A BMC that stops answering: the request ends with an error, then works again.
    let mute = node(&fleet, &sim, 2, &[]).await;
    sim.behaviour(2, json!({"unreachable": true})).await;
    let seq = request(&fleet, &mute, "on", 20).await;
    let s = fleet
        .wait_power_done(&mute, seq, Duration::from_secs(60))
        .await;
    let err = s.last_error.clone().unwrap_or_default();
    fleet.ensure(err.contains("unreachable"), || {
        format!("unreachable BMC: last_error {err:?}")
    });
    sim.behaviour(2, json!({"unreachable": false})).await;
    let seq = request(&fleet, &mute, "on", 20).await;
    let s = fleet
        .wait_power_done(&mute, seq, Duration::from_secs(30))
        .await;
    fleet.ensure(
        s.power_state == Some(PowerState::On) && s.last_error.is_none(),
        || format!("after the BMC came back: {s:?}"),
    );

    // The conductor answered everything: still alive.
    fleet.ensure(fleet.conductor("c1").is_running(), || {
        "conductor died".into()
    });
    drop(sim.proc);
}

/// Kills (SIGKILL) or freezes (SIGSTOP past the TTL) the conductor that sent a 10 s graceful
/// shutdown; the new owner finds the operation in the status, does not send the graceful request
/// again, and completes it; the old conductor sends nothing after its self-fencing deadline.
async fn takeover_mid_soft_off(freeze: bool) {
    let name = if freeze {
        "power-sim-freeze"
    } else {
        "power-sim-kill"
    };
    let mut fleet = Fleet::new(name).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 8, &["--graceful-shutdown-secs", "10"]).await;
    let args = ["--lease-ttl", "2", "--bmc-min-gap-ms", "100"];
    fleet.start_conductor("c1", &args);
    fleet.start_conductor("c2", &args);
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(node(&fleet, &sim, i, &[]).await);
    }
    let snap = fleet
        .wait_settled(Duration::from_secs(30), &["c1", "c2"])
        .await;
    // A node of c1's, powered on first.
    let (index, id) = ids
        .iter()
        .enumerate()
        .find(|(_, id)| snap.holder(id).is_some_and(|(h, _)| h == "c1"))
        .map(|(i, id)| (i, id.clone()))
        .expect("c1 owns some of 8 nodes");
    let seq = request(&fleet, &id, "on", 30).await;
    fleet
        .wait_power_done(&id, seq, Duration::from_secs(30))
        .await;

    let seq = request(&fleet, &id, "soft-off", 30).await;
    fleet
        .wait_until(
            Duration::from_secs(10),
            "c1 sent the graceful shutdown",
            async || {
                let sent = sim
                    .commands(index)
                    .iter()
                    .any(|e| e["action"] == "GracefulShutdown" && e["client"] == "c1");
                let recorded = fleet
                    .status(&id)
                    .await?
                    .power_op
                    .is_some_and(|op| op.soft_sent);
                if sent && recorded {
                    Ok(())
                } else {
                    Err(format!("sent {sent}, recorded {recorded}"))
                }
            },
        )
        .await;
    let cut = ferric_model::now_ms();
    if freeze {
        fleet.conductor("c1").signal(Signal::SIGSTOP);
    } else {
        fleet.conductor("c1").signal(Signal::SIGKILL);
    }
    let s = fleet
        .wait_power_done(&id, seq, Duration::from_secs(40))
        .await;
    fleet.ensure(
        s.power_state == Some(PowerState::Off)
            && s.last_error.is_none()
            && s.owner.as_deref() == Some("c2"),
        || format!("after takeover: {s:?}"),
    );
    fleet.ensure(sim.power(index).await == "Off", || {
        "machine is not off".into()
    });
    if freeze {
        // Thaw it: it must notice it lost its lease and send nothing.
        fleet.conductor("c1").signal(Signal::SIGCONT);
        fleet
            .wait_settled(Duration::from_secs(30), &["c1", "c2"])
            .await;
    }
    let log = sim.commands(index);
    let graceful = log
        .iter()
        .filter(|e| e["action"] == "GracefulShutdown")
        .count();
    fleet.ensure(graceful == 1, || {
        format!("graceful shutdown sent {graceful} times: {log:?}")
    });
    fleet.ensure(!log.iter().any(|e| e["action"] == "ForceOff"), || {
        format!("power was cut: {log:?}")
    });
    // c1's self-fencing deadline is at most TTL - margin (2 s - 0.5 s) after the cut.
    let late: Vec<&Value> = log
        .iter()
        .filter(|e| e["client"] == "c1" && e["unix_ms"].as_u64().unwrap_or(0) > cut + 1_500)
        .collect();
    fleet.ensure(late.is_empty(), || {
        format!("c1 commanded the BMC after its deadline: {late:?}")
    });
    fleet.ensure(log.iter().any(|e| e["client"] == "c2"), || {
        "c2 never read the BMC".into()
    });
    fleet.check_fencing_history().await;
    drop(sim.proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_killed_mid_soft_off() {
    takeover_mid_soft_off(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_frozen_mid_soft_off() {
    takeover_mid_soft_off(true).await;
}

/// `ctl conductor evict`: the evicted conductor stops every actor, sends no BMC command after
/// the eviction (checked in the simulator's log while its nodes were being polled), exits with a
/// clear message, and its nodes move on, the operation in flight included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_conductor_sends_nothing_and_exits() {
    let mut fleet = Fleet::new("power-sim-evict").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 12, &["--graceful-shutdown-secs", "8"]).await;
    let args = ["--lease-ttl", "5", "--bmc-min-gap-ms", "100"];
    fleet.start_conductor("c1", &args);
    fleet.start_conductor("c2", &args);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(node(&fleet, &sim, i, &[]).await);
    }
    // Settled, with c1 holding its share (right after start, c2 may briefly hold everything
    // until placement sees c1; with 12 nodes c1's share is empty once in 4,096 placements).
    let mine: Vec<(usize, String)> = fleet
        .wait_until(Duration::from_secs(30), "c1 holds its share", async || {
            let snap = fleet.snapshot().await?;
            snap.check_settled(&["c1", "c2"])?;
            let mine: Vec<(usize, String)> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| snap.holder(id).is_some_and(|(h, _)| h == "c1"))
                .map(|(i, id)| (i, id.clone()))
                .collect();
            (!mine.is_empty() && mine.len() < ids.len())
                .then_some(mine)
                .ok_or_else(|| "c1 holds none or all".to_string())
        })
        .await;
    // Keep c1 busy polling its BMCs: power on, then a slow soft power off.
    for (_, id) in &mine {
        let seq = request(&fleet, id, "on", 30).await;
        fleet
            .wait_power_done(id, seq, Duration::from_secs(30))
            .await;
    }
    let mut seqs = Vec::new();
    for (_, id) in &mine {
        seqs.push(request(&fleet, id, "soft-off", 30).await);
    }
    fleet
        .wait_until(
            Duration::from_secs(10),
            "c1 is polling its BMCs",
            async || {
                let polls = mine
                    .iter()
                    .filter(|(i, _)| {
                        sim.commands(*i)
                            .iter()
                            .any(|e| e["action"] == "GracefulShutdown")
                    })
                    .count();
                if polls == mine.len() {
                    Ok(())
                } else {
                    Err(format!("{polls} of {}", mine.len()))
                }
            },
        )
        .await;

    let out = fleet
        .ctl(&["conductor", "evict", "c1", "--reason", "test eviction"])
        .await;
    fleet.ensure(out.status.success(), || {
        format!("evict failed: {}", String::from_utf8_lossy(&out.stderr))
    });
    let exit = fleet
        .conductor("c1")
        .wait_exit(Duration::from_secs(15))
        .await;
    fleet.ensure(exit.is_some_and(|s| !s.success()), || {
        format!("c1 did not exit with an error: {exit:?}")
    });
    let log = fleet.conductor("c1").log();
    fleet.ensure(
        log.contains("evicted") && log.contains("test eviction"),
        || "c1's log does not say it was evicted".into(),
    );

    // The eviction is on record, with the time it was made (just before the lease was revoked).
    let mut kv = fleet.inspect.client().kv_client();
    let rec = kv
        .get(format!("{}evictions/c1", fleet.prefix), None)
        .await
        .expect("etcd");
    let rec: ferric_model::EvictionRecord = decode(rec.kvs()[0].value()).expect("eviction record");
    fleet.ensure(rec.reason == "test eviction", || format!("{rec:?}"));
    let evicted_at = rec.at_ms;

    // The operations in flight complete on c2, without a second graceful request.
    for ((i, id), seq) in mine.iter().zip(seqs) {
        let s = fleet
            .wait_power_done(id, seq, Duration::from_secs(40))
            .await;
        fleet.ensure(
            s.power_state == Some(PowerState::Off) && s.owner.as_deref() == Some("c2"),
            || format!("{id}: {s:?}"),
        );
        let cmds = sim.commands(*i);
        let graceful = cmds
            .iter()
            .filter(|e| e["action"] == "GracefulShutdown")
            .count();
        fleet.ensure(graceful == 1, || {
            format!("sim-{i}: graceful sent {graceful} times")
        });
        // The eviction takes effect when c1 hears of it through its watch (milliseconds);
        // 200 ms covers that and the clock of the log line, nothing more.
        let late: Vec<&Value> = cmds
            .iter()
            .filter(|e| {
                e["client"] == "c1" && e["unix_ms"].as_u64().unwrap_or(0) > evicted_at + 200
            })
            .collect();
        fleet.ensure(late.is_empty(), || {
            format!("c1 commanded sim-{i} after its eviction: {late:?}")
        });
    }
    fleet.wait_settled(Duration::from_secs(30), &["c2"]).await;
    fleet.check_fencing_history().await;
    drop(sim.proc);
}

//! Power sync through real conductors against `ferric sim` BMCs: out-of-band changes under
//! `observe` and `enforce` (and the grace period), soft power offs never undone, BMCs that stop
//! answering (power failure after N sweeps, recovery, a user's maintenance kept, the failure
//! count surviving a SIGKILL of the owner), and bad sync config. Every claim is checked in the
//! simulator's own command log or in etcd.

use ferric_model::{decode, EventRecord, NodeStatus, PowerState};
use ferric_testkit::http::api;
use ferric_testkit::{Fleet, Gateway, Sim};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Power actions (POSTs) a system received, with their time (ms since the epoch).
fn posts(sim: &Sim, system: usize) -> Vec<(String, u64)> {
    sim.commands(system)
        .iter()
        .filter(|e| e["method"] == "POST")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("?").to_string(),
                e["unix_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn now_ms() -> u64 {
    ferric_model::now_ms()
}

/// A redfish node on sim system `system`, managed (enrolled nodes are not synced).
async fn node(fleet: &Fleet, sim: &Sim, system: usize, policy: Option<&str>) -> String {
    let mut info: Value = serde_json::from_str(&sim.driver_info(system, "password")).unwrap();
    if let Some(p) = policy {
        info["ferric_power_sync"] = json!(p);
    }
    let info = info.to_string();
    let id = fleet
        .create_nodes(1, &["--driver", "redfish", "--driver-info", &info])
        .await
        .remove(0);
    manage(fleet, &id).await;
    id
}

/// Moves a node to `manageable` and waits until it is there. A request made before that is
/// queued behind nothing: the node's actor takes a pending power request before a pending
/// provision one, so a power request sent right after `manage` could run first, and the
/// verification's read would then record what the test does to the machine afterwards.
async fn manage(fleet: &Fleet, id: &str) {
    fleet.ctl_ok(&["node", "provision", id, "manage"]).await;
    fleet
        .wait_status(id, Duration::from_secs(20), "managed", |s| {
            if s.provision_state == ferric_model::ProvisionState::Manageable {
                Ok(())
            } else {
                Err(format!("{} {:?}", s.provision_state, s.last_error))
            }
        })
        .await;
}

async fn power(fleet: &Fleet, id: &str, action: &str) -> NodeStatus {
    let seq = fleet.power_seq_done(id).await + 1;
    fleet
        .ctl_ok(&["node", "power", id, action, "--timeout", "20"])
        .await;
    fleet
        .wait_power_done(id, seq, Duration::from_secs(30))
        .await
}

async fn wait_power(
    fleet: &Fleet,
    id: &str,
    want: Option<PowerState>,
    within: Duration,
) -> NodeStatus {
    fleet
        .wait_status(id, within, &format!("{id} recorded as {want:?}"), |s| {
            if s.power_state == want {
                Ok(())
            } else {
                Err(format!("{:?}", s.power_state))
            }
        })
        .await
}

/// The node's outbox events in etcd, in order.
async fn events(fleet: &Fleet, id: &str) -> Vec<EventRecord> {
    let mut kv = fleet.inspect.client().kv_client();
    let prefix = format!("{}events/{id}/", fleet.prefix);
    let resp = kv
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("read events: {e}")));
    resp.kvs()
        .iter()
        .map(|kv| decode::<EventRecord>(kv.value()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_changes_under_observe_and_enforce() {
    let mut fleet = Fleet::new("sync-oob").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 4, &["--graceful-shutdown-secs", "0.5"]).await;
    let grace = Duration::from_secs(4);
    fleet.start_conductor(
        "c1",
        &[
            "--lease-ttl",
            "3",
            "--bmc-min-gap-ms",
            "50",
            "--sync-interval",
            "0.5",
            "--sync-grace",
            "4",
        ],
    );
    let observed = node(&fleet, &sim, 0, None).await;
    let enforced = node(&fleet, &sim, 1, Some("enforce")).await;
    let soft_enforced = node(&fleet, &sim, 2, Some("enforce")).await;
    let soft_observed = node(&fleet, &sim, 3, None).await;
    for id in [&observed, &enforced, &soft_enforced, &soft_observed] {
        power(&fleet, id, "on").await;
    }

    // Observe: the OS shuts down; the sweep records it, with its event, and never pushes.
    sim.behaviour(0, json!({"power": "Off"})).await;
    wait_power(
        &fleet,
        &observed,
        Some(PowerState::Off),
        Duration::from_secs(10),
    )
    .await;
    let evs = events(&fleet, &observed).await;
    let last = evs.last().unwrap_or_else(|| fleet.fail("no event"));
    fleet.ensure(
        last.power_state == Some(PowerState::Off)
            && last.previous_power_state == Some(PowerState::On),
        || format!("last event {last:?}"),
    );
    let h = fleet.node_history(&observed).await;
    fleet.ensure(
        h.entries
            .iter()
            .any(|e| e.kind == "sync" && e.action.contains("out-of-band")),
        || format!("history {:?}", h.entries),
    );

    // Enforce: the OS shuts down right after the user's power on; the push comes only once
    // the grace after that request's end has passed, and restores on.
    let done = power(&fleet, &enforced, "off").await;
    fleet.ensure(done.power_state == Some(PowerState::Off), || {
        format!("{done:?}")
    });
    power(&fleet, &enforced, "on").await;
    let on_done = now_ms();
    sim.behaviour(1, json!({"power": "Off"})).await;
    // Both soft power offs, under either policy: the OS agrees and goes down.
    power(&fleet, &soft_enforced, "soft-off").await;
    power(&fleet, &soft_observed, "soft-off").await;
    wait_power(
        &fleet,
        &enforced,
        Some(PowerState::Off),
        Duration::from_secs(10),
    )
    .await;
    let restored = wait_power(
        &fleet,
        &enforced,
        Some(PowerState::On),
        Duration::from_secs(20),
    )
    .await;
    let pushes: Vec<u64> = posts(&sim, 1)
        .iter()
        .filter(|(a, t)| a == "On" && *t > on_done)
        .map(|(_, t)| *t)
        .collect();
    fleet.ensure(pushes.len() == 1, || {
        format!("sim-1 pushes after the request: {pushes:?}")
    });
    fleet.ensure(pushes[0] >= on_done + grace.as_millis() as u64, || {
        format!(
            "enforce pushed {} ms after the request ended, within the grace of {grace:?}",
            pushes[0] - on_done
        )
    });
    let h = fleet.node_history(&enforced).await;
    fleet.ensure(
        h.entries
            .iter()
            .any(|e| e.kind == "sync" && e.action.starts_with("enforce: power on")),
        || format!("history {:?} status {restored:?}", h.entries),
    );

    // Long after the grace, sweep after sweep: nothing undid the soft power offs, nothing
    // pushed the observed node.
    let until = Instant::now() + grace + Duration::from_secs(2);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (system, id) in [(0, &observed), (2, &soft_enforced), (3, &soft_observed)] {
        let acts: Vec<String> = posts(&sim, system).into_iter().map(|(a, _)| a).collect();
        let want: &[&str] = if system == 0 {
            &["On"]
        } else {
            &["On", "GracefulShutdown"]
        };
        fleet.ensure(acts == want, || {
            format!("sim-{system} ({id}) received {acts:?}")
        });
        fleet.ensure(sim.power(system).await == "Off", || {
            format!("sim-{system} is on")
        });
    }
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_that_stops_answering_is_a_power_failure_until_it_answers_again() {
    let mut fleet = Fleet::new("sync-failure").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), 3, &[]).await;
    let args = [
        "--lease-ttl",
        "2",
        "--bmc-min-gap-ms",
        "50",
        "--bmc-timeout",
        "0.5",
        "--sync-interval",
        "1",
        "--sync-failure-interval",
        "1",
    ];
    fleet.start_conductor("c1", &args);
    let failing = node(&fleet, &sim, 0, None).await;
    let users = node(&fleet, &sim, 1, None).await;
    let healthy = node(&fleet, &sim, 2, None).await;
    for id in [&failing, &users, &healthy] {
        power(&fleet, id, "on").await;
    }
    fleet.start_conductor("c2", &args);
    let snap = fleet
        .wait_settled(Duration::from_secs(20), &["c1", "c2"])
        .await;
    let owner = snap.holder(&failing).map(|(h, _)| h).unwrap_or_default();
    fleet.note(&format!("{failing} is owned by {owner}"));

    // The BMC stops answering: reads fail, counted in the status.
    sim.behaviour(0, json!({"unreachable": true})).await;
    sim.behaviour(1, json!({"unreachable": true})).await;
    fleet
        .wait_status(&failing, Duration::from_secs(15), "two failed reads", |s| {
            if s.power_failures >= 2 {
                Ok(())
            } else {
                Err(format!("{} failures", s.power_failures))
            }
        })
        .await;
    // Its owner dies: the count goes on from where it was (in the status, not in memory).
    let killed_at = fleet.history().await.revision;
    fleet.conductor(&owner).kill();
    let s = fleet
        .wait_status(&failing, Duration::from_secs(20), "power failure", |s| {
            if s.fault.as_deref() == Some("power failure") {
                Ok(())
            } else {
                Err(format!(
                    "{} failures, fault {:?}",
                    s.power_failures, s.fault
                ))
            }
        })
        .await;
    let new_owner = s.owner.clone().unwrap_or_default();
    fleet.ensure(new_owner != owner, || format!("still owned by {owner}"));
    let history = fleet.history().await;
    let counts: Vec<u32> = history
        .under(&format!("{}status/{failing}", fleet.prefix))
        .filter(|e| e.put && e.revision > killed_at)
        .filter_map(|e| decode::<NodeStatus>(&e.value).ok())
        .map(|s| s.power_failures)
        .collect();
    fleet.ensure(counts.first().is_some_and(|c| *c >= 3), || {
        format!("after the kill the count restarted: {counts:?}")
    });
    let spec = fleet
        .wait_until(
            Duration::from_secs(10),
            "maintenance for the fault",
            async || {
                let spec = fleet.spec(&failing).await;
                if spec.maintenance {
                    Ok(spec)
                } else {
                    Err("not in maintenance".to_string())
                }
            },
        )
        .await;
    fleet.ensure(
        spec.maintenance_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("power failure")),
        || format!("reason {:?}", spec.maintenance_reason),
    );

    // The gateway's metrics say it: nodes in power failure, and the conductors' failed reads.
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    fleet
        .wait_until(
            Duration::from_secs(20),
            "metrics show the failures",
            async || {
                let text = api(gw.port, "GET", "/metrics", None).body;
                let failed: f64 = text
                    .lines()
                    .filter(|l| l.starts_with("ferric_sync_failed_reads_total{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if text
                    .lines()
                    .any(|l| l.starts_with("ferric_nodes_power_failure ") && !l.ends_with(" 0"))
                    && failed >= 3.0
                {
                    Ok(())
                } else {
                    Err(text
                        .lines()
                        .filter(|l| l.contains("power_failure") || l.contains("sync_"))
                        .collect::<Vec<_>>()
                        .join("\n"))
                }
            },
        )
        .await;

    // The other nodes are unaffected: a power request on the healthy one runs normally.
    let s = power(&fleet, &healthy, "off").await;
    fleet.ensure(s.power_state == Some(PowerState::Off), || format!("{s:?}"));

    // A user's maintenance on the other failing node: it survives the recovery.
    fleet
        .wait_status(&users, Duration::from_secs(20), "power failure", |s| {
            if s.fault_maintenance.is_some() {
                Ok(())
            } else {
                Err(format!(
                    "{} failures, fault {:?}",
                    s.power_failures, s.fault
                ))
            }
        })
        .await;
    fleet
        .ctl_ok(&["node", "maintenance", &users, "on", "--reason", "rack work"])
        .await;

    // The BMCs answer again: the fault clears by itself, and only the fault's maintenance goes.
    sim.behaviour(0, json!({"unreachable": false})).await;
    sim.behaviour(1, json!({"unreachable": false})).await;
    for id in [&failing, &users] {
        fleet
            .wait_status(id, Duration::from_secs(15), "fault cleared", |s| {
                if s.fault.is_none() && s.power_state == Some(PowerState::On) {
                    Ok(())
                } else {
                    Err(format!("fault {:?} power {:?}", s.fault, s.power_state))
                }
            })
            .await;
    }
    fleet
        .wait_until(
            Duration::from_secs(10),
            "the fault's maintenance lifted",
            async || {
                if fleet.spec(&failing).await.maintenance {
                    Err("still in maintenance".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
    let spec = fleet.spec(&users).await;
    fleet.ensure(
        spec.maintenance && spec.maintenance_reason.as_deref() == Some("rack work"),
        || {
            format!(
                "the user's maintenance: {:?} {:?}",
                spec.maintenance, spec.maintenance_reason
            )
        },
    );
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sync_config_and_flags_give_clear_errors() {
    let mut fleet = Fleet::new("sync-bad").await;
    fleet
        .ctl_refused(&["sync", "set", "--policy", "push"], "observe or enforce")
        .await;
    let out = fleet.ctl_ok(&["sync", "set", "--policy", "enforce"]).await;
    fleet.ensure(out.contains("enforce"), || out.clone());
    let out = fleet.ctl_ok(&["sync", "show"]).await;
    fleet.ensure(out.contains("power sync policy: enforce"), || out.clone());
    // Garbage in etcd: shown as such, conductors keep the defaults and keep running.
    let mut kv = fleet.inspect.client().kv_client();
    kv.put(
        format!("{}config/sync", fleet.prefix),
        vec![1u8, 0xff, 0xff],
        None,
    )
    .await
    .unwrap_or_else(|e| fleet.fail(&format!("put: {e}")));
    let out = fleet.ctl_ok(&["sync", "show"]).await;
    fleet.ensure(
        out.contains("power sync policy: observe") && out.contains("warning"),
        || out.clone(),
    );
    fleet.start_conductor("c1", &["--lease-ttl", "2", "--sync-interval", "0.5"]);
    let id = fleet.create_nodes(1, &[]).await.remove(0);
    manage(&fleet, &id).await;
    fleet.ctl_ok(&["node", "power", &id, "on"]).await;
    fleet
        .wait_status(&id, Duration::from_secs(20), "on", |s| {
            if s.power_state == Some(PowerState::On) {
                Ok(())
            } else {
                Err(format!("{:?}", s.power_state))
            }
        })
        .await;
    let log = std::fs::read_to_string(fleet.conductor("c1").log_path()).unwrap_or_default();
    fleet.ensure(log.contains("power sync config is unreadable"), || {
        "no clear error in the conductor's log".into()
    });
    fleet.ensure(fleet.conductor("c1").is_running(), || "c1 exited".into());
    // A bad flag: a clear error, and the conductor does not start.
    let mut cmd = std::process::Command::new(ferric_testkit::fleet::ferric_bin());
    cmd.args([
        "conductor",
        "--etcd",
        &fleet.url(),
        "--prefix",
        &fleet.prefix,
        "--name",
        "bad",
        "--sync-interval=-1",
    ]);
    let bad = ferric_testkit::run_bounded(cmd, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    fleet.ensure(
        !bad.status.success() && err.contains("--sync-interval"),
        || err.clone(),
    );
}

/// The real IPMI path: another BMC client (ipmitool) powers the machine off behind Ferric's
/// back; the sweep records it, and the cluster's `enforce` policy restores the last request
/// after the grace. ipmitool, an independent client, has the last word on the power state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_out_of_band_power_off_is_recorded_then_enforced() {
    let mut fleet = Fleet::new("sync-ipmi").await;
    let sim = ferric_testkit::IpmiSim::start();
    fleet.ctl_ok(&["sync", "set", "--policy", "enforce"]).await;
    fleet.start_conductor(
        "c1",
        &[
            "--lease-ttl",
            "3",
            "--bmc-min-gap-ms",
            "100",
            "--sync-interval",
            "0.5",
            "--sync-grace",
            "2",
        ],
    );
    let id = fleet
        .create_nodes(
            1,
            &["--driver", "ipmi", "--driver-info", &sim.driver_info()],
        )
        .await
        .remove(0);
    manage(&fleet, &id).await;
    power(&fleet, &id, "on").await;
    fleet.ensure(
        tokio::task::block_in_place(|| sim.ipmitool_power_is_on()),
        || "not on after the request".into(),
    );
    let out = tokio::task::block_in_place(|| sim.ipmitool(&["chassis", "power", "off"]));
    fleet.ensure(out.status.success(), || {
        format!("ipmitool power off: {out:?}")
    });
    wait_power(&fleet, &id, Some(PowerState::Off), Duration::from_secs(10)).await;
    wait_power(&fleet, &id, Some(PowerState::On), Duration::from_secs(15)).await;
    fleet.ensure(
        tokio::task::block_in_place(|| sim.ipmitool_power_is_on()),
        || "ipmitool does not see the machine on again".into(),
    );
    let h = fleet.node_history(&id).await;
    let sync: Vec<&str> = h
        .entries
        .iter()
        .filter(|e| e.kind == "sync")
        .map(|e| e.action.as_str())
        .collect();
    fleet.ensure(
        sync.iter().any(|a| a.contains("out-of-band"))
            && sync.iter().any(|a| a.starts_with("enforce: power on")),
        || format!("sync history {sync:?}"),
    );
    fleet.check_fencing_history().await;
}

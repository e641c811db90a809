//! Provisioning with the agent (`direct` deploy interface) and recovery, through real processes:
//! conductors, a gateway (which records the agent's heartbeats), `ferric sim` as the BMCs.
//!
//! - A conductor is SIGKILLed while its nodes are in `deploying`, `cleaning`, `inspecting`,
//!   `deleting` (fake interface, slow steps), and in `wait call-back` and `clean wait` with a
//!   command running on the agent (`ferric sim`'s, IPA's command API), each in and out of
//!   maintenance. The new owner moves the busy ones to their failed states naming the dead
//!   conductor, keeps the wait states waiting with their original deadline and command (one of
//!   them then times out at that deadline: `clean failed`, fault, maintenance), polls the
//!   commands the dead conductor posted (the simulator's log shows the same command id, polled
//!   by the new owner, and no step posted twice) and carries the waiting ones on to
//!   `active`/`available`; in maintenance the agent's heartbeats are recorded and no command
//!   goes to the agent until maintenance ends.
//! - Remediation: a node whose cleaning failed is cleaned again and returned to `available`; a
//!   node that fails again stays in maintenance with the reason updated; the cluster-wide rate
//!   limit holds a third back.

use ferric_model::{NodeStatus, ProvisionState};
use ferric_testkit::http::{api, http};
use ferric_testkit::Fleet;
use ferric_testkit::Gateway;
use ferric_testkit::Sim;
use serde_json::json;
use std::time::Duration;

use ProvisionState as S;

/// Waits until the node rests in `want` (its target cleared).
async fn reach(fleet: &Fleet, id: &str, want: ProvisionState, within: Duration) -> NodeStatus {
    fleet
        .wait_until(
            within,
            &format!("{id} reaches {}", want.as_str()),
            async || {
                let s = fleet.status(id).await?;
                let resting = !want.is_busy() && !want.is_wait();
                if s.provision_state == want && (!resting || s.target_provision_state.is_none()) {
                    Ok(s)
                } else {
                    Err(format!(
                        "{} -> {:?}, last_error {:?}",
                        s.provision_state.as_str(),
                        s.target_provision_state,
                        s.last_error
                    ))
                }
            },
        )
        .await
}

async fn verb(fleet: &Fleet, id: &str, v: &str, want: ProvisionState) -> NodeStatus {
    fleet.ctl_ok(&["node", "provision", id, v]).await;
    reach(fleet, id, want, Duration::from_secs(30)).await
}

fn patch(gw: &Gateway, id: &str, ops: serde_json::Value) {
    let r = api(
        gw.port,
        "PATCH",
        &format!("/v1/nodes/{id}"),
        Some(&ops.to_string()),
    );
    assert_eq!(r.status, 200, "PATCH {id}: {}", r.body);
}

fn maintenance(gw: &Gateway, id: &str, on: bool) {
    let r = if on {
        api(
            gw.port,
            "PUT",
            &format!("/v1/nodes/{id}/maintenance"),
            Some(r#"{"reason": "test: looking at it"}"#),
        )
    } else {
        api(
            gw.port,
            "DELETE",
            &format!("/v1/nodes/{id}/maintenance"),
            None,
        )
    };
    assert_eq!(r.status, 202, "maintenance {on} {id}: {}", r.body);
}

/// The agent's heartbeat, as IPA sends it (no credentials: the endpoint is public, the agent
/// token is what counts). Returns the HTTP status.
fn heartbeat(gw: &Gateway, id: &str, token: &str) -> u16 {
    let body = json!({
        "callback_url": "http://127.0.0.1:9/",
        "agent_version": "test-agent",
        "agent_token": token,
    })
    .to_string();
    http(
        gw.port,
        "POST",
        &format!("/v1/heartbeat/{id}"),
        &[("X-OpenStack-Ironic-API-Version", "1.72")],
        Some(body.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("heartbeat {id}: {e}"))
    .status
}

fn steps_done(s: &NodeStatus) -> u32 {
    s.agent.as_ref().map_or(0, |a| a.done)
}

/// The id of the agent command under way, as the node's status records it.
fn command_id(s: &NodeStatus) -> Option<String> {
    s.agent_link.as_ref()?.command.as_ref()?.id.clone()
}

/// The simulator's record of agent command requests of `system` (`op: agent_command`).
fn agent_requests(sim: &Sim, system: usize) -> Vec<serde_json::Value> {
    sim.commands(system)
        .into_iter()
        .filter(|c| c["op"] == "agent_command")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_busy_state_survives_a_sigkilled_owner() {
    let mut fleet = Fleet::new("agent-takeover").await;
    let dir = tempfile::tempdir().unwrap();
    let ttl = ["--lease-ttl", "2"];
    // One conductor first: every node is its own when it dies; the second starts at the kill.
    fleet.start_conductor("c1", &ttl);
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let sim = Sim::start(dir.path(), 5, &[]).await;

    // Fake nodes: quick steps to get where they must be, then 60 s steps (PATCHed in).
    let fake = fleet
        .create_nodes(8, &["--driver-info", r#"{"fake_step_secs": 0}"#])
        .await;
    let slow = || json!([{"op": "add", "path": "/driver_info/fake_step_secs", "value": 60}]);
    let mut busy = Vec::new(); // (node, busy state, failed state, in maintenance)
    for (i, id) in fake.iter().enumerate() {
        let maint = i % 2 == 1;
        verb(&fleet, id, "manage", S::Manageable).await;
        let (last, state, failed) = match i / 2 {
            0 => {
                verb(&fleet, id, "provide", S::Available).await;
                ("deploy", S::Deploying, S::DeployFailed)
            }
            1 => ("provide", S::Cleaning, S::CleanFailed),
            2 => ("inspect", S::Inspecting, S::InspectFailed),
            _ => {
                verb(&fleet, id, "provide", S::Available).await;
                verb(&fleet, id, "deploy", S::Active).await;
                ("undeploy", S::Deleting, S::Error)
            }
        };
        patch(&gw, id, slow());
        verb(&fleet, id, last, state).await;
        if maint {
            maintenance(&gw, id, true);
        }
        busy.push((id.clone(), state, failed, maint));
    }

    // Agent nodes on the simulated BMCs, each with `ferric sim`'s agent. Commands are quick,
    // except one step long enough that the kill comes while it runs: write_image on 0 and 1,
    // erase_devices_metadata on 2 and 3. The last node waits only 20 s for an agent that never
    // says anything.
    let slow = |system: usize| {
        if system < 2 {
            "write_image"
        } else {
            "erase_devices_metadata"
        }
    };
    let mut agent = Vec::new();
    for system in 0..5 {
        let mut info: serde_json::Value =
            serde_json::from_str(&sim.driver_info(system, "password")).unwrap();
        info["agent_callback_timeout"] = json!(if system == 4 { 20 } else { 120 });
        let info = info.to_string();
        let id = fleet
            .create_nodes(1, &["--driver", "redfish", "--driver-info", &info])
            .await
            .remove(0);
        let mut a = json!({"api_url": gw.url, "node": id, "interval_ms": 300,
                           "command_ms": 100, "inspect": false,
                           "slow_command": slow(system), "slow_ms": 12_000});
        if system == 4 {
            a["stop_after"] = json!(0);
        }
        sim.agent(system, &a).await;
        verb(&fleet, &id, "manage", S::Manageable).await;
        agent.push(id);
    }
    let running = async |id: &str, step: &str| {
        fleet
            .wait_until(
                Duration::from_secs(40),
                &format!("{step} runs on {id}'s agent"),
                async || {
                    let s = fleet.status(id).await?;
                    let now = s.agent.as_ref().and_then(|a| a.steps.get(a.done as usize));
                    match (now, command_id(&s)) {
                        (Some(n), Some(c)) if n == step => Ok(c),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await
    };
    // 0, 1: wait call-back with write_image running (1 in maintenance), after a cleaning.
    for id in &agent[0..2] {
        verb(&fleet, id, "provide", S::Available).await;
        patch(
            &gw,
            id,
            json!([{"op": "add", "path": "/instance_info/image_source",
                    "value": "http://images/os.qcow2"}]),
        );
    }
    for id in &agent[0..2] {
        fleet.ctl_ok(&["node", "provision", id, "deploy"]).await;
    }
    // 2, 3: clean wait with erase_devices_metadata running (3 in maintenance); 4: clean wait.
    for id in &agent[2..5] {
        fleet.ctl_ok(&["node", "provision", id, "provide"]).await;
    }
    reach(&fleet, &agent[4], S::CleanWait, Duration::from_secs(20)).await;
    let mut posted = Vec::new();
    for (system, id) in agent[0..4].iter().enumerate() {
        posted.push(running(id, &format!("deploy.{}", slow(system))).await);
    }
    maintenance(&gw, &agent[1], true);
    maintenance(&gw, &agent[3], true);
    // The ramdisk boot is in the BMC's own record: boot from PXE, then power on.
    let cmds = sim.commands(2);
    let pxe = cmds
        .iter()
        .position(|c| c.to_string().contains("Pxe"))
        .unwrap_or_else(|| panic!("no PXE boot in the sim's log of sim-2: {cmds:?}"));
    assert!(
        cmds[pxe..]
            .iter()
            .any(|c| c.to_string().contains("\"On\"") || c.to_string().contains("ForceRestart")),
        "no power on after the PXE boot device: {cmds:?}"
    );

    let before: Vec<NodeStatus> = {
        let mut v = Vec::new();
        for id in &agent {
            v.push(fleet.status(id).await.unwrap());
        }
        v
    };
    fleet.conductor("c1").kill();
    fleet.start_conductor("c2", &ttl);
    fleet.note("c1 killed; c2 started");

    // Busy nodes: their failed state, naming the dead conductor, in maintenance or not.
    for (id, state, failed, maint) in &busy {
        let s = reach(&fleet, id, *failed, Duration::from_secs(10)).await;
        let err = s.last_error.clone().unwrap_or_default();
        fleet.ensure(
            err.contains("c1") && err.contains(state.as_str()) && s.owner.as_deref() == Some("c2"),
            || format!("{id}: last_error {err:?}, owner {:?}", s.owner),
        );
        fleet.ensure(fleet.spec(id).await.maintenance == *maint, || {
            format!("{id}: maintenance changed")
        });
    }
    // Wait states: still waiting, same deadline, same progress, now owned by c2.
    for (id, b) in agent.iter().zip(&before).take(4) {
        let s = fleet
            .wait_until(
                Duration::from_secs(10),
                &format!("c2 owns {id}"),
                async || {
                    let snap = fleet.snapshot().await?;
                    match snap.holder(id) {
                        Some((h, _)) if h == "c2" => fleet.status(id).await,
                        other => Err(format!("holder {other:?}")),
                    }
                },
            )
            .await;
        fleet.ensure(
            s.provision_state == b.provision_state
                && s.deadline_ms == b.deadline_ms
                && steps_done(&s) == steps_done(b)
                && command_id(&s) == command_id(b),
            || format!("{id} changed on takeover: {b:?} -> {s:?}"),
        );
    }
    let snap = fleet.wait_settled(Duration::from_secs(10), &["c2"]).await;
    fleet.ensure(!snap.counts().contains_key("c1"), || {
        "a reservation of the dead conductor remains".into()
    });

    // The agents go on with the new owner, which polls the very commands c1 posted (the
    // simulator's record), so no step runs twice. A foreign token is refused.
    let r = heartbeat(&gw, &agent[0], "someone-else");
    fleet.ensure(r == 400, || format!("a foreign token got {r}"));
    reach(&fleet, &agent[0], S::Active, Duration::from_secs(40)).await;
    reach(&fleet, &agent[2], S::Available, Duration::from_secs(40)).await;
    for (system, cid) in [(0usize, &posted[0]), (2, &posted[2])] {
        let reqs = agent_requests(&sim, system);
        fleet.ensure(
            reqs.iter().any(|c| {
                c["client"] == "c2"
                    && c["action"] == "poll"
                    && c["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(cid.as_str()))
            }),
            || format!("c2 never polled {cid} on sim-{system}: {reqs:?}"),
        );
        let step = format!("deploy.{}", slow(system));
        let posts = reqs
            .iter()
            .filter(|c| c["method"] == "POST" && c["detail"] == step.as_str())
            .count();
        // sim-0's cleaning before its deploy ran erase_devices_metadata too, quickly.
        fleet.ensure(posts == 1, || {
            format!("{step} posted {posts} times to sim-{system}: {reqs:?}")
        });
    }
    // The whole deploy in Ironic's order, across both conductors.
    let deploy: Vec<String> = agent_requests(&sim, 0)
        .iter()
        .filter(|c| c["method"] == "POST")
        .map(|c| {
            let action = c["action"].as_str().unwrap_or("?");
            match c["detail"].as_str() {
                Some(step) => format!("{action} {step}"),
                None => action.to_string(),
            }
        })
        .skip_while(|c| c != "deploy.get_deploy_steps")
        .collect();
    fleet.ensure(
        deploy
            == [
                "deploy.get_deploy_steps",
                "deploy.execute_deploy_step deploy.write_image",
                "standby.get_partition_uuids",
                "image.install_bootloader",
                "standby.power_off",
            ],
        || format!("sim-0's deploy commands: {deploy:?}"),
    );
    // The instance boots from disk: the BMC was told so after the ramdisk.
    let cmds = sim.commands(0);
    fleet.ensure(
        cmds.iter().rev().any(|c| c.to_string().contains("Hdd")),
        || format!("no disk boot in sim-0's log: {cmds:?}"),
    );

    // In maintenance, the agents' heartbeats are recorded (by the gateway) and no command
    // goes to them.
    for (system, id) in [(1usize, &agent[1]), (3, &agent[3])] {
        let before = fleet.status(id).await.unwrap();
        let rev0 = fleet.inspect.revision().await.unwrap();
        let mark = format!("node={id}");
        fleet
            .wait_until(
                Duration::from_secs(10),
                "c2 saw a heartbeat in maintenance",
                async || {
                    let log = fleet.conductor("c2").log();
                    log.lines()
                        .any(|l| l.contains("in maintenance") && l.contains(&mark))
                        .then_some(())
                        .ok_or("not yet".to_string())
                },
            )
            .await;
        fleet
            .wait_until(
                Duration::from_secs(10),
                "a heartbeat recorded in maintenance",
                async || {
                    let (_, kvs) = fleet
                        .inspect
                        .get_prefix(&fleet.inspect.key(&format!("heartbeats/{id}")))
                        .await
                        .map_err(|e| e.to_string())?;
                    (kvs.len() == 1 && kvs[0].mod_rev > rev0)
                        .then_some(())
                        .ok_or(format!("{kvs:?}"))
                },
            )
            .await;
        let from_c2 = agent_requests(&sim, system)
            .into_iter()
            .filter(|c| c["client"] == "c2")
            .count();
        fleet.ensure(from_c2 == 0, || {
            format!("c2 called sim-{system}'s agent while its node was in maintenance")
        });
        let after = fleet.status(id).await.unwrap();
        fleet.ensure(
            after.provision_state == before.provision_state
                && steps_done(&after) == steps_done(&before),
            || format!("{id} moved in maintenance: {before:?} -> {after:?}"),
        );
        maintenance(&gw, id, false);
    }
    // Out of maintenance, c2 goes on with the command c1 posted.
    reach(&fleet, &agent[1], S::Active, Duration::from_secs(40)).await;
    reach(&fleet, &agent[3], S::Available, Duration::from_secs(40)).await;
    for (system, cid) in [(1usize, &posted[1]), (3, &posted[3])] {
        let reqs = agent_requests(&sim, system);
        fleet.ensure(
            reqs.iter().any(|c| {
                c["client"] == "c2"
                    && c["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(cid.as_str()))
            }),
            || format!("c2 never polled {cid} on sim-{system}: {reqs:?}"),
        );
    }

    // The silent agent: clean failed at its original deadline, a fault, maintenance.
    let deadline = before[4].deadline_ms.expect("clean wait has a deadline");
    let s = reach(&fleet, &agent[4], S::CleanFailed, Duration::from_secs(40)).await;
    fleet.ensure(
        s.provision_updated_at_ms.unwrap_or(0) >= deadline
            && s.fault.as_deref() == Some("clean failure")
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Timeout")),
        || format!("timeout of {}: {s:?} (deadline {deadline})", agent[4]),
    );
    fleet
        .wait_until(
            Duration::from_secs(10),
            "the faulty node is in maintenance",
            async || {
                let sp = fleet.spec(&agent[4]).await;
                if sp.maintenance
                    && sp
                        .maintenance_reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("clean failure"))
                {
                    Ok(())
                } else {
                    Err(format!("{:?}", sp.maintenance_reason))
                }
            },
        )
        .await;
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediation_cleans_again_and_respects_its_limits() {
    let mut fleet = Fleet::new("remediation").await;
    let dir = tempfile::tempdir().unwrap();
    fleet.start_conductor("c1", &["--lease-ttl", "5"]);
    fleet.start_conductor("c2", &["--lease-ttl", "5"]);
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let ids = fleet
        .create_nodes(
            3,
            &[
                "--driver-info",
                r#"{"fake_step_secs": 0.2, "fake_fail_states": "cleaning"}"#,
            ],
        )
        .await;
    async fn fail_cleaning(fleet: &Fleet, id: &str) {
        verb(fleet, id, "manage", S::Manageable).await;
        let s = verb(fleet, id, "provide", S::CleanFailed).await;
        assert_eq!(s.fault.as_deref(), Some("clean failure"), "{s:?}");
        fleet
            .wait_until(
                Duration::from_secs(10),
                "maintenance on a clean failure",
                async || {
                    fleet
                        .spec(id)
                        .await
                        .maintenance
                        .then_some(())
                        .ok_or("not yet".to_string())
                },
            )
            .await;
    }
    fail_cleaning(&fleet, &ids[0]).await;
    fail_cleaning(&fleet, &ids[1]).await;
    // The first node's disks are fixed; the second still fails.
    patch(
        &gw,
        &ids[0],
        json!([{"op": "remove", "path": "/driver_info/fake_fail_states"}]),
    );
    // Nothing happens while remediation is off (its default).
    fleet.ensure(
        fleet.ctl_ok(&["remediation", "show"]).await.contains("off"),
        || "remediation is not off by default".into(),
    );
    // Two attempts per hour across the cluster.
    fleet
        .ctl_ok(&[
            "remediation",
            "set",
            "--fault",
            "clean failure",
            "--action",
            "clean",
            "--attempts",
            "1",
            "--max-per-window",
            "2",
            "--window-secs",
            "3600",
        ])
        .await;
    reach(&fleet, &ids[0], S::Available, Duration::from_secs(30)).await;
    fleet
        .wait_until(
            Duration::from_secs(30),
            "both remediations end",
            async || {
                let h0 = fleet.ctl_ok(&["node", "history", &ids[0]]).await;
                let h1 = fleet.ctl_ok(&["node", "history", &ids[1]]).await;
                let sp0 = fleet.spec(&ids[0]).await;
                let sp1 = fleet.spec(&ids[1]).await;
                let done0 = h0.contains("remediation succeeded") && !sp0.maintenance;
                let done1 = h1.contains("remediation failed")
                    && sp1
                        .maintenance_reason
                        .as_deref()
                        .is_some_and(|r| r.contains("remediation"));
                (done0 && done1).then_some(()).ok_or(format!(
                    "{done0} {done1}: {:?} / {:?}",
                    sp0.maintenance_reason, sp1.maintenance_reason
                ))
            },
        )
        .await;
    // The fault ends with the maintenance the remediation leaves: the success is written
    // first (`available`, fault and maintenance still on), then the spec leaves maintenance,
    // and the owner clears the fault when its watch brings that change back.
    fleet
        .wait_until(
            Duration::from_secs(10),
            "the fixed node's fault is cleared",
            async || {
                let s = fleet.status(&ids[0]).await?;
                (s.fault.is_none() && s.provision_state == S::Available)
                    .then_some(())
                    .ok_or(format!("fault kept: {s:?}"))
            },
        )
        .await;
    let s1 = fleet.status(&ids[1]).await.unwrap();
    fleet.ensure(
        s1.provision_state == S::CleanFailed && fleet.spec(&ids[1]).await.maintenance,
        || format!("the failing node: {s1:?}"),
    );
    // One attempt per episode: the failing node is not cleaned again.
    let h1 = fleet.ctl_ok(&["node", "history", &ids[1]]).await;
    fleet.ensure(h1.matches("remediation started").count() == 1, || {
        h1.clone()
    });
    // The window's two slots are used: a third faulty node waits for the next window.
    fail_cleaning(&fleet, &ids[2]).await;
    let mark = format!("node={}", ids[2]);
    fleet
        .wait_until(
            Duration::from_secs(20),
            "the rate limit holds the third back",
            async || {
                let logs = fleet.conductor("c1").log() + &fleet.conductor("c2").log();
                logs.lines()
                    .any(|l| l.contains("rate limit reached") && l.contains(&mark))
                    .then_some(())
                    .ok_or("not yet".to_string())
            },
        )
        .await;
    let h2 = fleet.ctl_ok(&["node", "history", &ids[2]]).await;
    fleet.ensure(!h2.contains("remediation started"), || h2.clone());
    let h1 = fleet.ctl_ok(&["node", "history", &ids[1]]).await;
    fleet.ensure(h1.matches("remediation started").count() == 1, || {
        h1.clone()
    });
    fleet.check_fencing_history().await;
}

/// `ferric sim` plays the agent: it heartbeats while its machine runs a PXE boot, so a deploy
/// goes through `wait call-back` to `active` with no test code in the loop; an agent that stops
/// heartbeating fails the deploy at the callback timeout. Counted in the simulator's own log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_sim_plays_the_agent() {
    let mut fleet = Fleet::new("sim-agent").await;
    let dir = tempfile::tempdir().unwrap();
    fleet.start_conductor("c1", &["--lease-ttl", "5"]);
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let sim = Sim::start(dir.path(), 2, &[]).await;
    let mut ids = Vec::new();
    for system in 0..2 {
        let mut info: serde_json::Value =
            serde_json::from_str(&sim.driver_info(system, "password")).unwrap();
        info["agent_callback_timeout"] = json!(4);
        let info = info.to_string();
        let id = fleet
            .create_nodes(1, &["--driver", "redfish", "--driver-info", &info])
            .await
            .remove(0);
        let agent = json!({"api_url": gw.url, "node": id, "interval_ms": 200});
        sim.agent(system, &agent).await;
        ids.push(id);
    }
    for (system, id) in ids.iter().enumerate() {
        verb(&fleet, id, "manage", S::Manageable).await;
        // Cleaning through the agent's command API, with no test code in the loop.
        verb(&fleet, id, "provide", S::Available).await;
        if system == 1 {
            // A ramdisk that hangs after its first heartbeat of a boot.
            let agent = json!({"api_url": gw.url, "node": id, "interval_ms": 200, "stop_after": 1});
            sim.agent(system, &agent).await;
        }
        patch(
            &gw,
            id,
            json!([{"op": "add", "path": "/instance_info/image_source",
                    "value": "http://images/os.qcow2"}]),
        );
        fleet.ctl_ok(&["node", "provision", id, "deploy"]).await;
    }
    let s = reach(&fleet, &ids[0], S::Active, Duration::from_secs(30)).await;
    fleet.ensure(s.last_error.is_none(), || format!("{s:?}"));
    let failed = reach(&fleet, &ids[1], S::DeployFailed, Duration::from_secs(30)).await;
    fleet.ensure(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Timeout reached while waiting for callback")),
        || format!("{failed:?}"),
    );
    // The simulator's record: heartbeats accepted (202) by the gateway for the right node, and
    // the deployed machine told to boot from disk after its last one.
    let heartbeats = |system: usize, id: &str| -> Vec<serde_json::Value> {
        sim.commands(system)
            .into_iter()
            .filter(|c| c["op"] == "heartbeat" && c["node"] == id && c["status"] == 202)
            .collect()
    };
    let hb0 = heartbeats(0, &ids[0]);
    fleet.ensure(hb0.len() >= 3, || format!("sim-0 heartbeats: {hb0:?}"));
    // ... and the machine now runs what it booted from disk (the simulator's own view), after
    // a boot device change to disk and a reset that followed it.
    let cmds = sim.commands(0);
    let hdd = cmds.iter().rposition(|c| c["action"] == "Hdd");
    let reset_after = hdd.is_some_and(|i| {
        cmds[i..].iter().any(|c| {
            c["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("ComputerSystem.Reset"))
        })
    });
    let view = sim.system(0).await;
    fleet.ensure(reset_after && view["run"]["from"] == "Hdd", || {
        format!(
            "sim-0 did not boot from disk: run {}, commands {cmds:?}",
            view["run"]
        )
    });
    // The hung agent sent exactly one heartbeat in its deploy boot (the last it sent).
    let hb1 = heartbeats(1, &ids[1]);
    fleet.ensure(hb1.last().is_some_and(|h| h["seq"] == 1), || {
        format!("sim-1 heartbeats: {hb1:?}")
    });
    fleet.check_fencing_history().await;
}

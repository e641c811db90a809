//! Provisioning through real conductors with the `fake` deploy interface: the whole main path,
//! a step told to fail, and a conductor killed (SIGKILL) while its nodes are cleaning: the new
//! owner moves them to the matching failed state with a `last_error` naming the dead conductor,
//! within 3 x TTL, and nothing stays stuck. (The other busy states go through the same pure
//! recovery function, tested for every state in `model` and `actors/node`.)

use ferric_model::{NodeStatus, PowerState, ProvisionState};
use ferric_testkit::http::api;
use ferric_testkit::sushy::{Sushy, SUSHY_WAIT};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::Duration;

/// Asks for `verb` and waits until the owner has taken this very request up (its sequence
/// number is done) and the node rests in `want`: a state that merely has not moved yet does
/// not count.
async fn verb(fleet: &Fleet, id: &str, verb: &str, want: ProvisionState) -> NodeStatus {
    fleet.ctl_ok(&["node", "provision", id, verb]).await;
    let snap = fleet.snapshot().await.unwrap_or_else(|e| fleet.fail(&e));
    let seq = match snap.spec(id) {
        Some(Ok(spec)) => spec.provision_request.map_or(0, |r| r.seq),
        other => fleet.fail(&format!("spec of {id}: {other:?}")),
    };
    fleet
        .wait_until(
            Duration::from_secs(30),
            &format!("{verb} (request {seq}) brings {id} to {}", want.as_str()),
            async || {
                let s = fleet.status(id).await?;
                if s.provision_seq_done >= seq
                    && s.provision_state == want
                    && s.target_provision_state.is_none()
                {
                    Ok(s)
                } else {
                    Err(format!(
                        "done {} {} -> {:?}, last_error {:?}",
                        s.provision_seq_done,
                        s.provision_state.as_str(),
                        s.target_provision_state,
                        s.last_error
                    ))
                }
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_deploy_interface_main_path_and_failures() {
    let mut fleet = Fleet::new("provision-path").await;
    fleet.start_conductor("c1", &["--lease-ttl", "5"]);
    let ids = fleet
        .create_nodes(
            2,
            &[
                "--driver-info",
                r#"{"fake_step_secs": 0.2, "fake_fail_states": ""}"#,
            ],
        )
        .await;
    let id = &ids[0];
    use ProvisionState as S;
    for (v, want) in [
        ("manage", S::Manageable),
        ("provide", S::Available),
        ("deploy", S::Active),
        ("rebuild", S::Active),
        ("rescue", S::Rescue),
        ("unrescue", S::Active),
        ("undeploy", S::Available),
        ("manage", S::Manageable),
        ("inspect", S::Manageable),
        ("clean", S::Manageable),
    ] {
        let s = verb(&fleet, id, v, want).await;
        fleet.ensure(s.last_error.is_none(), || {
            format!("{v}: last_error {:?}", s.last_error)
        });
    }
    // An invalid verb for the state is refused by ctl with the state's name.
    let out = fleet.ctl(&["node", "provision", id, "unrescue"]).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    fleet.ensure(
        out.status.code() == Some(1) && err.contains("manageable"),
        || format!("unrescue in manageable: {err}"),
    );

    // A deploy step told to fail ends in "deploy failed" with the reason.
    let failing = fleet
        .create_nodes(
            1,
            &["--driver-info", r#"{"fake_fail_states": "deploying"}"#],
        )
        .await
        .remove(0);
    verb(&fleet, &failing, "manage", S::Manageable).await;
    verb(&fleet, &failing, "provide", S::Available).await;
    let s = verb(&fleet, &failing, "deploy", S::DeployFailed).await;
    fleet.ensure(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("deploying")),
        || format!("{:?}", s.last_error),
    );
    // From "deploy failed" the node can be deployed again or torn down.
    let _ = verb(&fleet, &failing, "undeploy", S::Available).await;
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_conductors_cleaning_nodes_fail_cleanly() {
    let mut fleet = Fleet::new("provision-takeover").await;
    let args = ["--lease-ttl", "2"];
    fleet.start_conductor("c1", &args);
    fleet.start_conductor("c2", &args);
    // Slow steps: the conductor dies while they run.
    let ids = fleet
        .create_nodes(12, &["--driver-info", r#"{"fake_step_secs": 30}"#])
        .await;
    let snap = fleet
        .wait_settled(Duration::from_secs(30), &["c1", "c2"])
        .await;
    let c1: Vec<String> = ids
        .iter()
        .filter(|id| snap.holder(id).is_some_and(|(h, _)| h == "c1"))
        .cloned()
        .collect();
    fleet.ensure(c1.len() >= 2, || {
        format!("c1 owns only {} of 12 nodes", c1.len())
    });
    use ProvisionState as S;
    // manage verifies at once; provide then cleans for 30 s, during which c1 dies.
    for id in &c1 {
        verb(&fleet, id, "manage", S::Manageable).await;
    }
    for id in &c1 {
        fleet.ctl_ok(&["node", "provision", id, "provide"]).await;
    }
    fleet
        .wait_until(
            Duration::from_secs(10),
            "c1's nodes are cleaning",
            async || {
                for id in &c1 {
                    let s = fleet.status(id).await?;
                    if s.provision_state != S::Cleaning {
                        return Err(format!("{id}: {}", s.provision_state.as_str()));
                    }
                }
                Ok(())
            },
        )
        .await;
    fleet.conductor("c1").kill();
    for id in &c1 {
        let s = fleet
            .wait_until(
                Duration::from_secs(6),
                &format!("{id} leaves cleaning (3 x TTL)"),
                async || {
                    let s = fleet.status(id).await?;
                    if s.provision_state == S::CleanFailed {
                        Ok(s)
                    } else {
                        Err(s.provision_state.as_str().to_string())
                    }
                },
            )
            .await;
        let err = s.last_error.clone().unwrap_or_default();
        fleet.ensure(
            err.contains("c1") && err.contains("cleaning") && s.owner.as_deref() == Some("c2"),
            || format!("{id}: last_error {err:?} owner {:?}", s.owner),
        );
    }
    // No reservation of the dead conductor remains, and the nodes are usable again.
    let snap = fleet.wait_settled(Duration::from_secs(10), &["c2"]).await;
    fleet.ensure(!snap.counts().contains_key("c1"), || {
        "a reservation of c1 remains".into()
    });
    verb(&fleet, &c1[0], "manage", S::Manageable).await;
    fleet.check_fencing_history().await;
}

/// Maintenance: manual cleaning is refused unless asked for explicitly (`--maintenance-ok`),
/// then runs; entering and leaving maintenance is in the node's history, and leaving clears
/// the fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_clean_in_maintenance_needs_maintenance_ok() {
    let mut fleet = Fleet::new("provision-maint").await;
    fleet.start_conductor("c1", &["--lease-ttl", "5"]);
    let id = fleet
        .create_nodes(1, &["--driver-info", r#"{"fake_step_secs": 0.2}"#])
        .await
        .remove(0);
    use ProvisionState as S;
    verb(&fleet, &id, "manage", S::Manageable).await;
    fleet
        .ctl_ok(&["node", "maintenance", &id, "on", "--reason", "disk errors"])
        .await;
    fleet
        .ctl_refused(&["node", "provision", &id, "clean"], "maintenance")
        .await;
    fleet
        .ctl_ok(&["node", "provision", &id, "clean", "--maintenance-ok"])
        .await;
    fleet
        .wait_until(
            Duration::from_secs(20),
            "manual cleaning ran in maintenance",
            async || {
                let s = fleet.status(&id).await?;
                let h = fleet.ctl_ok(&["node", "history", &id, "--json"]).await;
                let events: Vec<String> = serde_json::from_str::<serde_json::Value>(&h)
                    .map_err(|e| e.to_string())?
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e["event"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let cleaned = events.iter().any(|e| e == "\"cleaning\" -> \"manageable\"");
                if s.provision_state == S::Manageable && cleaned {
                    Ok(())
                } else {
                    Err(format!("{} {h}", s.provision_state.as_str()))
                }
            },
        )
        .await;
    fleet.ctl_ok(&["node", "maintenance", &id, "off"]).await;
    fleet
        .wait_until(
            Duration::from_secs(20),
            "maintenance set and unset are in the history",
            async || {
                let h = fleet.ctl_ok(&["node", "history", &id, "--json"]).await;
                if h.contains("maintenance set: disk errors") && h.contains("maintenance unset") {
                    Ok(())
                } else {
                    Err(h)
                }
            },
        )
        .await;
}

/// Seed 004, case 2.2: redfish nodes whose only redfish conductor dies. Of three conductors
/// only c1 serves `redfish`; SIGKILLed, it leaves nodes in `deploying` and `cleaning` (one in
/// maintenance) and in `wait call-back` and `clean wait` (one in maintenance). Within TTL + 2 s
/// a caretaker (c2 or c3) holds every one: busy nodes are in their failed states with a
/// `last_error` naming c1 and the unserved driver, waiting nodes keep their deadlines, the API
/// flags the caretaker and takes requests as intent, and nobody sends the BMC anything
/// (sushy-tools' own log). When a redfish conductor joins again, the queued requests run. No
/// reservation ever changes hands without a delete (etcd's history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_no_live_conductor_serves_gets_a_caretaker() {
    let mut fleet = Fleet::new("provision-caretaker").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sushy = Sushy::start(dir.path()).await;
    let system = sushy.first_system().await;
    let common = ["--lease-ttl", "2", "--bmc-min-gap-ms", "100"];
    fleet.start_conductor("c1", &[&common[..], &["--drivers", "redfish"]].concat());
    for c in ["c2", "c3"] {
        fleet.start_conductor(
            c,
            &[&common[..], &["--drivers", "fake-hardware,ipmi"]].concat(),
        );
    }
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let call = |method: &str, path: &str, body: Option<Value>| {
        api(
            gw.port,
            method,
            path,
            body.map(|b| b.to_string()).as_deref(),
        )
    };
    let create = |name: &str, interface: &str, step: f64| {
        let r = call(
            "POST",
            "/v1/nodes",
            Some(json!({
                "name": name,
                "driver": "redfish",
                "deploy_interface": interface,
                "driver_info": {
                    "redfish_address": sushy.url,
                    "redfish_system_id": system,
                    "redfish_username": "admin",
                    "redfish_password": "pw",
                    "fake_step_secs": step,
                },
            })),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["uuid"].as_str().unwrap().to_string()
    };
    let patch = |id: &str, path: &str, value: Value| {
        let r = call(
            "PATCH",
            &format!("/v1/nodes/{id}"),
            Some(json!([{"op": "add", "path": path, "value": value}])),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let maintenance = |id: &str| {
        let r = call(
            "PUT",
            &format!("/v1/nodes/{id}/maintenance"),
            Some(json!({"reason": "rack work"})),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    use ProvisionState as S;
    let deploying = create("deploying", "fake", 0.2);
    let cleaning = create("cleaning", "fake", 60.0);
    let callback = create("callback", "fake", 0.2);
    let cleanwait = create("cleanwait", "direct", 0.2);
    for id in [&deploying, &cleaning, &callback, &cleanwait] {
        verb(&fleet, id, "manage", S::Manageable).await;
    }
    for id in [&deploying, &callback] {
        verb(&fleet, id, "provide", S::Available).await;
    }
    patch(&deploying, "/driver_info/fake_step_secs", json!(120));
    patch(&callback, "/deploy_interface", json!("direct"));
    for (id, v) in [
        (&deploying, "deploy"),
        (&cleaning, "provide"),
        (&callback, "deploy"),
        (&cleanwait, "provide"),
    ] {
        fleet.ctl_ok(&["node", "provision", id, v]).await;
    }
    let wanted = [
        (&deploying, S::Deploying),
        (&cleaning, S::Cleaning),
        (&callback, S::WaitCallBack),
        (&cleanwait, S::CleanWait),
    ];
    let before: Vec<NodeStatus> = fleet
        .wait_until(SUSHY_WAIT, "every node in its state", async || {
            let mut out = Vec::new();
            for (id, want) in &wanted {
                let s = fleet.status(id).await?;
                if s.provision_state != *want || s.owner.as_deref() != Some("c1") {
                    return Err(format!("{id}: {} by {:?}", s.provision_state, s.owner));
                }
                out.push(s);
            }
            Ok(out)
        })
        .await;
    maintenance(&cleaning);
    maintenance(&cleanwait);
    fleet
        .wait_until(
            Duration::from_secs(10),
            "maintenance recorded",
            async || {
                for id in [&cleaning, &cleanwait] {
                    if !fleet.spec(id).await.maintenance {
                        return Err(format!("{id} not in maintenance"));
                    }
                }
                Ok(())
            },
        )
        .await;

    // c1 dies; nobody else serves redfish.
    let bmc_requests = sushy.system_requests().len();
    // The log does record the conductor's requests (c1 read and booted these nodes).
    fleet.ensure(bmc_requests > 0, || format!("sushy's log: {}", sushy.log()));
    fleet.conductor("c1").kill();
    let unserved = r#"no live conductor serves driver "redfish" in conductor group """#;
    let after: Vec<NodeStatus> = fleet
        .wait_until(
            Duration::from_secs(4),
            "a caretaker holds every node (TTL + 2 s)",
            async || {
                let mut out = Vec::new();
                for ((id, was), old) in wanted.iter().zip(&before) {
                    let s = fleet.status(id).await?;
                    let want = match was {
                        S::Deploying => S::DeployFailed,
                        S::Cleaning => S::CleanFailed,
                        other => *other,
                    };
                    let caretaker = matches!(s.owner.as_deref(), Some("c2" | "c3"));
                    if s.provision_state != want || !caretaker || s.unserved.is_none() {
                        return Err(format!(
                            "{id}: {} by {:?}, unserved {:?}",
                            s.provision_state, s.owner, s.unserved
                        ));
                    }
                    fleet.ensure(s.deadline_ms == old.deadline_ms, || {
                        format!(
                            "{id}: deadline {:?} became {:?}",
                            old.deadline_ms, s.deadline_ms
                        )
                    });
                    out.push(s);
                }
                Ok(out)
            },
        )
        .await;
    for (s, (id, was)) in after.iter().zip(&wanted) {
        let unserved_now = s.unserved.clone().unwrap_or_default();
        fleet.ensure(unserved_now.contains(unserved), || {
            format!("{id}: condition {unserved_now:?}")
        });
        if was.is_busy() {
            let err = s.last_error.clone().unwrap_or_default();
            fleet.ensure(
                err.contains("conductor c1 stopped") && err.contains(unserved),
                || format!("{id}: last_error {err:?}"),
            );
        }
        let node = call("GET", &format!("/v1/nodes/{id}"), None).json();
        fleet.ensure(
            node["ferric_caretaker"] == true && node["conductor"] == s.owner.as_deref().unwrap(),
            || format!("{id}: API shows {node}"),
        );
        let reason = call("GET", &format!("/v1/nodes/{id}/validate"), None).json()["power"]
            ["reason"]
            .to_string();
        fleet.ensure(reason.contains("holds the node as caretaker"), || {
            format!("{id}: validate says {reason}")
        });
    }
    // Requests are intent: a power off and an undeploy are accepted (not a state error) and
    // wait, queued, for a conductor that serves redfish.
    patch(&deploying, "/driver_info/fake_step_secs", json!(0.2));
    let r = call(
        "PUT",
        &format!("/v1/nodes/{deploying}/states/power"),
        Some(json!({"target": "power off"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let r = call(
        "PUT",
        &format!("/v1/nodes/{deploying}/states/provision"),
        Some(json!({"target": "deleted"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let queued = fleet.spec(&deploying).await;
    let power_seq = queued.power_request.as_ref().map_or(0, |r| r.seq);
    let s = fleet
        .status(&deploying)
        .await
        .unwrap_or_else(|e| fleet.fail(&e));
    fleet.ensure(
        s.power_seq_done < power_seq && queued.pending_provision(&s).is_some(),
        || format!("requests did not stay queued: {s:?}"),
    );
    let during = sushy.system_requests();
    fleet.ensure(during.len() == bmc_requests, || {
        format!(
            "the BMC heard from someone while only caretakers held its nodes: {:?}",
            &during[bmc_requests..]
        )
    });

    // A redfish conductor joins: the nodes are handed over and the queued requests run.
    fleet.restart_conductor("c1");
    let s = fleet
        .wait_power_done(&deploying, power_seq, SUSHY_WAIT)
        .await;
    fleet.ensure(s.power_state == Some(PowerState::Off), || {
        format!("power off ended in {:?}", s.power_state)
    });
    verb_done(&fleet, &deploying, S::Available).await;
    for (id, _) in &wanted {
        let s = fleet
            .wait_until(
                Duration::from_secs(10),
                "c1 serves the node again",
                async || {
                    let s = fleet.status(id).await?;
                    if s.owner.as_deref() == Some("c1") && s.unserved.is_none() {
                        Ok(s)
                    } else {
                        Err(format!("{:?} {:?}", s.owner, s.unserved))
                    }
                },
            )
            .await;
        let node = call("GET", &format!("/v1/nodes/{id}"), None).json();
        fleet.ensure(
            node["ferric_caretaker"] == false && node["conductor"] == "c1",
            || format!("{id}: API shows {node} for {s:?}"),
        );
    }
    fleet.check_fencing_history().await;
}

/// Waits until the node's last provision request is done and it rests in `want`.
async fn verb_done(fleet: &Fleet, id: &str, want: ProvisionState) -> NodeStatus {
    let seq = fleet.spec(id).await.provision_request.map_or(0, |r| r.seq);
    fleet
        .wait_until(
            Duration::from_secs(30),
            &format!("request {seq} brings {id} to {}", want.as_str()),
            async || {
                let s = fleet.status(id).await?;
                if s.provision_seq_done >= seq && s.provision_state == want {
                    Ok(s)
                } else {
                    Err(format!("{} {:?}", s.provision_state, s.last_error))
                }
            },
        )
        .await
}

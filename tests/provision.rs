//! Provisioning through real conductors with the `fake` deploy interface: the whole main path,
//! a step told to fail, and a conductor killed (SIGKILL) while its nodes are cleaning: the new
//! owner moves them to the matching failed state with a `last_error` naming the dead conductor,
//! within 3 x TTL, and nothing stays stuck. (The other busy states go through the same pure
//! recovery function, tested for every state in `model` and `actors/node`.)

use ferric_model::{NodeStatus, ProvisionState};
use ferric_testkit::Fleet;
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

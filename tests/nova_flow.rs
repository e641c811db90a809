//! Nova's ironic driver, as openstacksdk calls Ferric for it (`tests/clients/nova_flow.py`, in
//! the order of openstack/nova `nova/virt/ironic/driver.py`): the resource tracker's list, the
//! claim, instance_info, one VIF per network, validate, deploy with a config drive, a reboot,
//! then destroy (volume targets, VIFs unplugged, tear down). Between spawn and destroy, and after
//! it, etcd is checked: the claim and the VIFs are recorded (port records and VIF index keys),
//! and tear down leaves nothing of the instance behind.

use ferric_model::ProvisionState;
use ferric_testkit::http::{http, run_venv, Reply};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const VERSION: (&str, &str) = ("X-OpenStack-Ironic-API-Version", "1.95");

fn call(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let body = body.map(|b| b.to_string());
    http(
        gw.port,
        method,
        path,
        &[VERSION, ("Content-Type", "application/json")],
        body.as_deref().map(str::as_bytes),
    )
    .expect("gateway answers")
}

async fn etcd_get(fleet: &Fleet, rest: &str) -> Option<String> {
    let mut kv = fleet.inspect.client().kv_client();
    let resp = kv.get(fleet.inspect.key(rest), None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
}

fn nova(gw: &Gateway, node: &str, phase: &str, fleet: &Fleet) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nova_flow.py");
    let out = run_venv("python", &[script, &gw.url, node, phase], &[], TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !stdout.contains("OK") {
        fleet.fail(&format!(
            "Nova's {phase} failed: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.proc.log_tail(30)
        ));
    }
    stdout
}

async fn wait_state(fleet: &Fleet, node: &str, want: ProvisionState) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(st) = fleet.status(node).await {
            if st.provision_state == want {
                return;
            }
        }
        if std::time::Instant::now() > deadline {
            fleet.fail(&format!("node {node} did not reach {want:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nova_spawn_reboot_and_destroy_through_openstacksdk() {
    let mut fleet = Fleet::new("nova-flow").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);

    // Enrolled as an operator would: a node with two NICs, made available.
    let r = call(
        &gw,
        "POST",
        "/v1/nodes",
        Some(&json!({"driver": "fake-hardware", "name": "nova-0", "resource_class": "baremetal"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let node = r.json()["uuid"].as_str().unwrap().to_string();
    for mac in ["52:54:00:aa:00:01", "52:54:00:aa:00:02"] {
        let r = call(
            &gw,
            "POST",
            "/v1/ports",
            Some(&json!({"node_uuid": node, "address": mac, "pxe_enabled": mac.ends_with('1')})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    for verb in ["manage", "provide"] {
        let r = call(
            &gw,
            "PUT",
            &format!("/v1/nodes/{node}/states/provision"),
            Some(&json!({"target": verb})),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        let want = if verb == "manage" {
            ProvisionState::Manageable
        } else {
            ProvisionState::Available
        };
        wait_state(&fleet, &node, want).await;
    }

    let out = nova(&gw, &node, "spawn", &fleet);
    let spawned: Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("the spawn prints its instance and VIFs");
    let instance = spawned["instance"].as_str().unwrap();
    let spec = fleet.spec(&node).await;
    assert_eq!(
        spec.instance_uuid.map(|u| u.to_string()).as_deref(),
        Some(instance),
        "the claim is in etcd"
    );
    assert!(spec.instance_info.contains("image_source"));
    assert_eq!(
        fleet.status(&node).await.unwrap().provision_state,
        ProvisionState::Active
    );
    for vif in spawned["vifs"].as_array().unwrap() {
        let vif = vif.as_str().unwrap();
        assert!(
            etcd_get(&fleet, &format!("index/vif/{vif}"))
                .await
                .is_some(),
            "VIF {vif} is recorded in etcd"
        );
    }
    let history = fleet.node_history(&node).await;
    let text = format!("{history:?}");
    assert!(text.contains("reboot"), "the reboot is in the history");

    nova(&gw, &node, "destroy", &fleet);
    let spec = fleet.spec(&node).await;
    assert_eq!(
        spec.instance_uuid, None,
        "tear down cleared instance_uuid in etcd"
    );
    assert_eq!(
        spec.instance_info, "{}",
        "tear down cleared instance_info in etcd"
    );
    assert_eq!(
        fleet.status(&node).await.unwrap().provision_state,
        ProvisionState::Available
    );
    for vif in spawned["vifs"].as_array().unwrap() {
        let vif = vif.as_str().unwrap();
        assert!(
            etcd_get(&fleet, &format!("index/vif/{vif}"))
                .await
                .is_none(),
            "VIF {vif} is gone from etcd"
        );
    }
}

//! Metal3's baremetal-operator, one host from registration to deprovisioning and deletion,
//! replayed request by request as its Ironic provisioner makes them
//! (metal3-io/baremetal-operator `pkg/provisioner/ironic/`: `factory.go`'s driver gate,
//! `register.go`, `ironic.go`'s `findExistingHost`, `createNodePort`, `configureNode`,
//! `inspecthardware.go`, `validateNode`, `Provision`, `GetFirmwareSettings`, `Deprovision`,
//! `Delete`), at the
//! microversion it picks on Ferric (1.95), with gophercloud's request shapes (JSON Patch `add`
//! for every change, `remove` for a cleared field). The gateway, a conductor and etcd are real
//! processes; the host is a `ferric sim` Redfish system whose agent heartbeats.
//!
//! Inspection is Metal3's default, in-band: the simulated ramdisk posts its inventory to
//! `/v1/continue_inspection`, and the operator reads it back (`inspecthardware.go`).

use ferric_testkit::fleet::Sim;
use ferric_testkit::http::{api_at, Reply};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What the operator negotiates on Ferric (`clients/features.go`).
const VERSION: &str = "1.95";

fn call(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Reply {
    api_at(gw.port, method, path, VERSION, body.as_ref())
}

fn ok(r: Reply, status: u16) -> Value {
    assert_eq!(r.status, status, "{} {}", r.head, r.body);
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Polls the node as the operator's reconcile loop does, until `want` with no target.
fn settle(gw: &Gateway, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = ok(call(gw, "GET", &format!("/v1/nodes/{id}"), None), 200);
        if n["provision_state"] == want && n["target_provision_state"].is_null() {
            return n;
        }
        assert!(
            !n["provision_state"]
                .as_str()
                .is_some_and(|s| s.ends_with("failed")),
            "the host failed: {n}"
        );
        assert!(Instant::now() < deadline, "never {want}: {n}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn provision(gw: &Gateway, id: &str, body: Value) {
    ok(
        call(
            gw,
            "PUT",
            &format!("/v1/nodes/{id}/states/provision"),
            Some(body),
        ),
        202,
    );
}

/// The operator's `getPorts`: `fields=node_uuid,uuid,address` and a node or address filter.
fn ports(gw: &Gateway, filter: &str) -> Vec<Value> {
    let r = call(
        gw,
        "GET",
        &format!("/v1/ports?fields=node_uuid,uuid,address&{filter}"),
        None,
    );
    ok(r, 200)["ports"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_operator_registers_provisions_and_deletes_a_host() {
    let mut fleet = Fleet::new("metal3").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 1, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    // The host's boot MAC, as the BareMetalHost names it: the machine's PXE NIC.
    let nics = sim.system(0).await["nics"].clone();
    let boot_mac = nics[0]["mac"].as_str().unwrap().to_string();
    let second_mac = nics[1]["mac"].as_str().unwrap().to_string();
    assert_eq!(nics[0]["pxe"], true, "{nics}");
    let boot_mac = boot_mac.as_str();

    // factory.go: the provisioner is "not ready" until Ironic lists drivers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = ok(call(&gw, "GET", "/v1/drivers", None), 200);
        if d["drivers"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no drivers: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // findExistingHost: by name (namespace~name, then the bare name), then by boot MAC.
    for name in ["metal3~host-0", "host-0"] {
        let r = call(&gw, "GET", &format!("/v1/nodes/{name}"), None);
        assert_eq!(r.status, 404, "{}", r.body);
    }
    assert!(ports(&gw, &format!("address={boot_mac}")).is_empty());

    // enrollNode: the Redfish host with every interface named.
    let driver_info = json!({
        "redfish_address": sim.url,
        "redfish_system_id": "/redfish/v1/Systems/sim-0",
        "redfish_username": "admin",
        "redfish_password": "password",
        "redfish_verify_ca": false,
    });
    let node = ok(
        call(
            &gw,
            "POST",
            "/v1/nodes",
            Some(json!({
                "driver": "redfish",
                "bios_interface": "redfish",
                "boot_interface": "ipxe",
                "name": "metal3~host-0",
                "driver_info": driver_info,
                "firmware_interface": "redfish",
                "deploy_interface": "direct",
                "inspect_interface": "agent",
                "management_interface": "redfish",
                "power_interface": "redfish",
                "raid_interface": "redfish",
                "vendor_interface": "no-vendor",
                "disable_power_off": false,
                "properties": {"capabilities": "boot_mode:uefi", "cpu_arch": "x86_64"},
            })),
        ),
        201,
    );
    let id = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(node["provision_state"], "enroll");
    assert_eq!(node["driver_info"]["redfish_password"], "******");

    // createPortsForNode → createNodePort: the boot MAC as a PXE port, once.
    assert!(ports(&gw, &format!("node_uuid={id}")).is_empty());
    assert!(ports(&gw, &format!("address={boot_mac}")).is_empty());
    ok(
        call(
            &gw,
            "POST",
            "/v1/ports",
            Some(json!({"node_uuid": id, "address": boot_mac, "pxe_enabled": true})),
        ),
        201,
    );
    let found = ports(&gw, &format!("address={boot_mac}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["node_uuid"], id.as_str());

    // configureNode: deploy image in driver_info, automated_clean, capabilities.
    let patched = ok(
        call(
            &gw,
            "PATCH",
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/driver_info/deploy_kernel", "value": "http://images/ipa.kernel"},
                {"op": "add", "path": "/driver_info/deploy_ramdisk", "value": "http://images/ipa.initramfs"},
                {"op": "add", "path": "/automated_clean", "value": true},
                {"op": "add", "path": "/properties/capabilities", "value": "boot_mode:uefi"},
            ])),
        ),
        200,
    );
    assert_eq!(patched["automated_clean"], true, "{patched}");
    assert_eq!(
        patched["driver_info"]["deploy_kernel"],
        "http://images/ipa.kernel"
    );

    // Register: enroll → manage (verifying) → manageable.
    sim.agent(
        0,
        &json!({"api_url": gw.url, "node": id, "interval_ms": 200}),
    )
    .await;
    provision(&gw, &id, json!({"target": "manage"}));
    let managed = settle(&gw, &id, "manageable");
    assert_eq!(managed["power_state"], "power off", "{managed}");

    // inspecthardware.go: inspect (the ramdisk posts its inventory), then the inventory.
    provision(&gw, &id, json!({"target": "inspect"}));
    let inspected = settle(&gw, &id, "manageable");
    assert_eq!(inspected["properties"]["cpus"], 8, "{inspected}");
    assert_eq!(inspected["properties"]["memory_mb"], 32768, "{inspected}");
    assert_eq!(inspected["properties"]["local_gb"], 99, "{inspected}");
    assert_eq!(inspected["properties"]["cpu_arch"], "x86_64", "{inspected}");
    assert_eq!(
        inspected["properties"]["capabilities"], "boot_mode:uefi",
        "the operator's properties stay: {inspected}"
    );
    let inv = ok(
        call(&gw, "GET", &format!("/v1/nodes/{id}/inventory"), None),
        200,
    );
    assert_eq!(
        inv["inventory"]["interfaces"][0]["mac_address"], boot_mac,
        "{inv}"
    );
    assert_eq!(
        inv["inventory"]["system_vendor"]["serial_number"],
        "FSIM00000000"
    );
    assert_eq!(inv["plugin_data"]["root_disk"]["name"], "/dev/sda", "{inv}");
    // The second NIC became a port, not for PXE; the simulator logged one accepted post.
    let found = ports(&gw, &format!("address={second_mac}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["node_uuid"], id.as_str());
    let posts: Vec<Value> = sim
        .commands(0)
        .into_iter()
        .filter(|c| c["op"] == "inspection" && c["status"] == 202)
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");

    // HostFirmwareSettings: the BIOS settings with their schema, cached when managed.
    let bios = ok(
        call(
            &gw,
            "GET",
            &format!("/v1/nodes/{id}/bios?detail=True"),
            None,
        ),
        200,
    );
    let turbo = bios["bios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ProcTurboMode")
        .cloned()
        .unwrap_or_else(|| panic!("no ProcTurboMode in {bios}"));
    assert_eq!(turbo["attribute_type"], "Enumeration", "{turbo}");
    assert_eq!(turbo["allowable_values"], json!(["Enabled", "Disabled"]));

    // Provision from manageable: provide (automated cleaning through the agent) → available.
    provision(&gw, &id, json!({"target": "provide"}));
    settle(&gw, &id, "available");

    // setUpForProvisioning: instance_uuid, instance_info, driver_info; a cleared boot_iso is
    // not in instance_info, so the operator sends no remove for it.
    let uid = "9b3a2f0e-2c1d-4f7a-9e55-0d6f1c2b3a40";
    ok(
        call(
            &gw,
            "PATCH",
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/instance_uuid", "value": uid},
                {"op": "add", "path": "/instance_info/capabilities", "value": {"boot_mode": "uefi"}},
                {"op": "add", "path": "/instance_info/root_device", "value": {"name": "/dev/sda"}},
                {"op": "add", "path": "/instance_info/image_source", "value": "http://images/centos.qcow2"},
                {"op": "add", "path": "/instance_info/image_disk_format", "value": "qcow2"},
                {"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
                {"op": "add", "path": "/instance_info/image_os_hash_value", "value": "c0ffee"},
                {"op": "add", "path": "/driver_info/force_persistent_boot_device", "value": "Default"},
            ])),
        ),
        200,
    );
    // validateNode: boot and deploy must pass.
    let v = ok(
        call(&gw, "GET", &format!("/v1/nodes/{id}/validate"), None),
        200,
    );
    assert_eq!(v["boot"]["result"], true, "{v}");
    assert_eq!(v["deploy"]["result"], true, "{v}");
    // Provision: active with the config drive as a dict.
    provision(
        &gw,
        &id,
        json!({
            "target": "active",
            "configdrive": {
                "meta_data": {"uuid": uid, "metal3-namespace": "metal3", "metal3-name": "host-0",
                              "local-hostname": "host-0", "local_hostname": "host-0", "name": "host-0"},
                "user_data": "#cloud-config\n",
            },
        }),
    );
    let active = settle(&gw, &id, "active");
    assert_eq!(active["instance_uuid"], uid, "{active}");
    assert_eq!(active["instance_info"]["configdrive"], "******", "{active}");
    assert_eq!(active["last_error"], Value::Null);
    let view = sim.system(0).await;
    assert_eq!(
        view["run"]["from"], "Hdd",
        "the host runs its image: {view}"
    );
    // Each ramdisk boot (inspection, cleaning, deploy) looked its node up and got a token, and
    // the heartbeats that carried it were taken (the simulator's log).
    let cmds = sim.commands(0);
    let lookups = cmds
        .iter()
        .filter(|c| c["op"] == "lookup" && c["status"] == 200)
        .count();
    assert!(lookups >= 3, "lookups: {cmds:?}");
    let refused: Vec<&Value> = cmds
        .iter()
        .filter(|c| c["op"] == "heartbeat" && c["status"] == 400)
        .collect();
    assert!(refused.is_empty(), "heartbeats refused: {refused:?}");

    // Deprovision: automated_clean in sync (no change: no PATCH), then deleted → cleaning →
    // available, the instance gone.
    provision(&gw, &id, json!({"target": "deleted"}));
    let torn = settle(&gw, &id, "available");
    assert_eq!(torn["instance_uuid"], Value::Null, "{torn}");
    assert_eq!(torn["instance_info"], json!({}), "{torn}");

    // Delete: the node and its port go, by uuid, in available.
    let r = call(&gw, "DELETE", &format!("/v1/nodes/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(ports(&gw, &format!("address={boot_mac}")).is_empty());
    let (_, left) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key("ports/"))
        .await
        .unwrap();
    assert_eq!(left.len(), 0, "ports left in etcd");
    let r = call(&gw, "GET", "/v1/nodes/metal3~host-0", None);
    assert_eq!(r.status, 404, "{}", r.body);
}

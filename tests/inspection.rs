//! In-band inspection through real processes: a conductor boots a `ferric sim` Redfish machine
//! into the ramdisk, and the test plays the ramdisk's inspection callback
//! (`POST /v1/continue_inspection`, no credentials, IPA's data shape) against the gateway,
//! good and bad. What the node became is checked in the API's answers, the `baremetal` CLI's
//! `node inventory save`, and etcd (`inventory/<uuid>`, the ports).

use ferric_testkit::cli::NoauthCli;
use ferric_testkit::fleet::Sim;
use ferric_testkit::http::{api_at, Reply};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOOT_MAC: &str = "52:54:00:1c:00:01";
const SECOND_MAC: &str = "52:54:01:1c:00:01";

fn call(gw: &Gateway, method: &str, path: &str, version: &str, body: Option<&Value>) -> Reply {
    api_at(gw.port, method, path, version, body)
}

/// What IPA sends: its inventory and the plugin data it adds.
fn ipa_data(macs: &[&str], error: Option<&str>) -> Value {
    let interfaces: Vec<Value> = macs
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"name": format!("eth{i}"), "mac_address": m, "has_carrier": true}))
        .collect();
    json!({
        "inventory": {
            "interfaces": interfaces,
            "cpu": {"model_name": "Simulated CPU", "count": 24, "architecture": "x86_64",
                    "frequency": "2400.000", "flags": ["vmx"], "socket_count": 2},
            "memory": {"total": 68719476736u64, "physical_mb": 65536},
            "disks": [{"name": "/dev/sda", "size": 480103981056u64, "rotational": false},
                      {"name": "/dev/sdb", "size": 3840755982336u64, "rotational": false}],
            "boot": {"current_boot_mode": "uefi", "pxe_interface": BOOT_MAC},
            "bmc_address": "127.0.0.1",
            "system_vendor": {"manufacturer": "Ferric", "product_name": "sim", "serial_number": "S1"},
        },
        "boot_interface": format!("01-{}", BOOT_MAC.replace(':', "-")),
        "configuration": {"collectors": ["default"], "managers": []},
        "error": error,
    })
}

fn wait_state(gw: &Gateway, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = call(gw, "GET", &format!("/v1/nodes/{id}"), "1.95", None).json();
        if n["provision_state"] == want {
            return n;
        }
        assert!(Instant::now() < deadline, "never {want}: {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_data_sets_properties_creates_ports_and_is_served() {
    let mut fleet = Fleet::new("inspection").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 2, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let cli = NoauthCli::new(&fleet, &gw);

    let mut ids = Vec::new();
    for system in 0..2 {
        let info: Value = serde_json::from_str(&sim.driver_info(system, "password")).unwrap();
        let r = call(
            &gw,
            "POST",
            "/v1/nodes",
            "1.95",
            Some(
                &json!({"driver": "redfish", "name": format!("insp-{system}"),
                         "inspect_interface": "agent", "driver_info": info,
                         "properties": {"capabilities": "boot_mode:uefi"}}),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.json()["uuid"].as_str().unwrap().to_string());
    }
    let (id, other) = (ids[0].clone(), ids[1].clone());
    // The boot MAC is known (as Metal3 knows it); the second NIC is found by inspection.
    let r = call(
        &gw,
        "POST",
        "/v1/ports",
        "1.95",
        Some(&json!({"node_uuid": id, "address": BOOT_MAC, "pxe_enabled": true})),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Not waiting for inspection data: 404, and nothing stored.
    let early = call(
        &gw,
        "POST",
        "/v1/continue_inspection",
        "1.84",
        Some(&ipa_data(&[BOOT_MAC, SECOND_MAC], None)),
    );
    assert_eq!(early.status, 404, "{}", early.body);

    for node in [&id, &other] {
        for verb in ["manage", "inspect"] {
            let r = call(
                &gw,
                "PUT",
                &format!("/v1/nodes/{node}/states/provision"),
                "1.95",
                Some(&json!({ "target": verb })),
            );
            assert_eq!(r.status, 202, "{}", r.body);
            if verb == "manage" {
                wait_state(&gw, node, "manageable");
            }
        }
        wait_state(&gw, node, "inspect wait");
    }
    // The machine was booted into the ramdisk for it (the simulator's own view).
    let view = sim.system(0).await;
    assert_eq!(view["run"]["from"], "Pxe", "{view}");

    // Bad input, each refused with nothing changed.
    let big = json!({"inventory": {"interfaces": [{"mac_address": BOOT_MAC}],
                                   "blob": "x".repeat(1_100_000)}});
    for (body, status, needle) in [
        (json!({"inventory": {"interfaces": []}}), 400, "non-empty"),
        (
            json!({"nothing": 1}),
            400,
            "'inventory' is a required property",
        ),
        (
            ipa_data(&["52:54:00:ff:ff:ff"], None),
            404,
            "No node waiting",
        ),
        (big, 413, ""),
    ] {
        let r = call(&gw, "POST", "/v1/continue_inspection", "1.84", Some(&body));
        assert_eq!(r.status, status, "{}", r.body);
        assert!(r.fault().contains(needle), "{needle:?}: {}", r.body);
    }
    let old = call(
        &gw,
        "POST",
        "/v1/continue_inspection",
        "1.83",
        Some(&ipa_data(&[BOOT_MAC], None)),
    );
    assert_eq!(old.status, 404, "{}", old.body);
    assert_eq!(
        call(&gw, "GET", &format!("/v1/nodes/{id}"), "1.95", None).json()["provision_state"],
        "inspect wait"
    );

    // The ramdisk's data (no credentials): the node is found by its boot MAC.
    let r = call(
        &gw,
        "POST",
        "/v1/continue_inspection",
        "1.84",
        Some(&ipa_data(&[BOOT_MAC, SECOND_MAC], None)),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["uuid"], id.as_str());
    let node = wait_state(&gw, &id, "manageable");
    assert_eq!(node["last_error"], Value::Null, "{node}");
    let props = &node["properties"];
    assert_eq!(props["cpus"], 24, "{node}");
    assert_eq!(props["memory_mb"], 65536, "{node}");
    assert_eq!(props["local_gb"], 446, "{node}");
    assert_eq!(props["cpu_arch"], "x86_64", "{node}");
    assert_eq!(props["capabilities"], "boot_mode:uefi", "kept: {node}");
    // Ports: the known one kept, the second NIC's created, not for PXE.
    let ports = call(
        &gw,
        "GET",
        &format!("/v1/ports/detail?node={id}"),
        "1.95",
        None,
    )
    .json();
    let mut got: Vec<(String, bool)> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["address"].as_str().unwrap().to_string(),
                p["pxe_enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (BOOT_MAC.to_string(), true),
            (SECOND_MAC.to_string(), false)
        ]
    );
    // Inspection powers the machine off when it is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.power(0).await != "Off" {
        assert!(
            Instant::now() < deadline,
            "sim-0 still {}",
            sim.power(0).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The inventory as stored and served: the API, the CLI, etcd.
    let served = call(
        &gw,
        "GET",
        &format!("/v1/nodes/{id}/inventory"),
        "1.81",
        None,
    );
    assert_eq!(served.status, 200, "{}", served.body);
    let served = served.json();
    assert_eq!(served["inventory"]["cpu"]["count"], 24);
    assert_eq!(
        served["plugin_data"]["configuration"]["collectors"][0],
        "default"
    );
    assert!(served["plugin_data"].get("inventory").is_none());
    let out = cli.ok(&["node", "inventory", "save", "insp-0"]);
    let saved: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        saved["inventory"]["memory"]["physical_mb"], 65536,
        "{saved}"
    );
    assert_eq!(
        call(
            &gw,
            "GET",
            &format!("/v1/nodes/{id}/inventory"),
            "1.80",
            None
        )
        .status,
        404
    );
    let none = call(
        &gw,
        "GET",
        &format!("/v1/nodes/{other}/inventory"),
        "1.81",
        None,
    );
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(none.fault().contains("could not be found"));
    let mut kv = fleet.inspect.client().kv_client();
    let stored = kv
        .get(fleet.inspect.key(&format!("inventory/{id}")), None)
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 1, "inventory/<uuid> in etcd");

    // A ramdisk that reports an error (by node_uuid, 1.84): inspection fails with it.
    let r = call(
        &gw,
        "POST",
        &format!("/v1/continue_inspection?node_uuid={other}"),
        "1.84",
        Some(&ipa_data(&["52:54:00:1c:00:02"], Some("no disks found"))),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let failed = wait_state(&gw, &other, "inspect failed");
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no disks found")),
        "{failed}"
    );
    assert!(failed["properties"].get("cpus").is_none(), "{failed}");

    // Deleting the node deletes its inspection data.
    let r = call(&gw, "DELETE", &format!("/v1/nodes/{id}"), "1.95", None);
    assert_eq!(r.status, 204, "{}", r.body);
    let stored = kv
        .get(fleet.inspect.key(&format!("inventory/{id}")), None)
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 0, "inventory/<uuid> left behind");
}

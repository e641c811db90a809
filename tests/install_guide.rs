//! Ironic's install guide, enrollment to undeploy, with the real `baremetal` CLI against
//! `ferric gateway` and a real `ferric conductor` over a real etcd. The machine is a `ferric sim`
//! Redfish system whose ramdisk agent heartbeats, so cleaning and the `direct` deploy run as
//! they would on hardware. Each step's outcome is checked in what the CLI shows and, for what
//! happened to the machine, in the simulator's own view and request log.

use ferric_testkit::cli::NoauthCli;
use ferric_testkit::fleet::Sim;
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};

/// A field of one row of the CLI's JSON output, whatever its label ("Address", "address").
fn field<'a>(row: &'a Value, name: &str) -> &'a Value {
    let norm = |k: &str| k.to_ascii_lowercase().replace(' ', "_");
    row.as_object()
        .and_then(|o| o.iter().find(|(k, _)| norm(k) == name).map(|(_, v)| v))
        .unwrap_or(&Value::Null)
}

fn validation<'a>(rows: &'a Value, interface: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| field(r, "interface") == interface)
        .unwrap_or_else(|| panic!("no {interface} in {rows}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_guide_enrollment_through_deploy_and_undeploy() {
    let mut fleet = Fleet::new("install-guide").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 1, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let cli = NoauthCli::new(&fleet, &gw);

    // "Enrollment": which drivers are there, and what they take.
    let drivers = cli.json(&["driver", "list"]);
    let redfish = drivers
        .as_array()
        .unwrap()
        .iter()
        .find(|d| field(d, "supported_driver(s)") == "redfish" || d["name"] == "redfish")
        .cloned()
        .unwrap_or_else(|| panic!("no redfish driver in {drivers}"));
    assert!(redfish.to_string().contains("c1"), "{redfish}");
    let props = cli.json(&["driver", "property", "list", "redfish"]);
    let keys: Vec<&str> = props
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| field(p, "property").as_str())
        .collect();
    for k in [
        "redfish_address",
        "redfish_system_id",
        "redfish_username",
        "deploy_kernel",
    ] {
        assert!(keys.contains(&k), "{k} missing from {props}");
    }

    let node = cli.json(&[
        "node",
        "create",
        "--driver",
        "redfish",
        "--name",
        "ig-0",
        "--driver-info",
        &format!("redfish_address={}", sim.url),
        "--driver-info",
        "redfish_system_id=/redfish/v1/Systems/sim-0",
        "--driver-info",
        "redfish_username=admin",
        "--driver-info",
        "redfish_password=password",
        "--boot-interface",
        "ipxe",
        "--deploy-interface",
        "direct",
        "--network-interface",
        "flat",
        "--resource-class",
        "baremetal-gold",
        "--property",
        "cpus=8",
        "--property",
        "memory_mb=16384",
        "--property",
        "local_gb=100",
        "--property",
        "cpu_arch=x86_64",
    ]);
    let id = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(node["provision_state"], "enroll", "{node}");
    assert_eq!(node["driver_info"]["redfish_password"], "******", "{node}");
    assert_eq!(node["network_interface"], "flat", "{node}");
    assert_eq!(node["resource_class"], "baremetal-gold", "{node}");
    cli.ok(&[
        "node",
        "set",
        "ig-0",
        "--driver-info",
        "deploy_kernel=http://images.example/ipa.kernel",
        "--driver-info",
        "deploy_ramdisk=http://images.example/ipa.initramfs",
    ]);

    // The NIC as a port (upper case in, lower case stored), with its switch port.
    let port = cli.json(&[
        "port",
        "create",
        "52:54:00:AB:CD:01",
        "--node",
        &id,
        "--physical-network",
        "physnet1",
        "--local-link-connection",
        "switch_id=00:1c:73:00:00:01",
        "--local-link-connection",
        "port_id=Ethernet1/7",
        "--pxe-enabled",
        "true",
    ]);
    assert_eq!(port["address"], "52:54:00:ab:cd:01", "{port}");
    assert_eq!(port["local_link_connection"]["port_id"], "Ethernet1/7");
    let ports = cli.json(&["port", "list", "--node", "ig-0"]);
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
    let by_mac = cli.json(&["port", "list", "--address", "52:54:00:ab:cd:01"]);
    assert_eq!(by_mac.as_array().unwrap().len(), 1, "{by_mac}");

    // Validation before the image is known: deploy says what is missing, the rest is ready.
    let rows = cli.json(&["node", "validate", "ig-0"]);
    for ok in [
        "power",
        "management",
        "boot",
        "network",
        "storage",
        "console",
    ] {
        assert_eq!(field(validation(&rows, ok), "result"), true, "{ok}: {rows}");
    }
    let deploy = validation(&rows, "deploy");
    assert_eq!(field(deploy, "result"), false, "{rows}");
    assert!(
        field(deploy, "reason")
            .as_str()
            .unwrap_or_default()
            .contains("image_source"),
        "{rows}"
    );

    cli.ok(&[
        "node",
        "add",
        "trait",
        "ig-0",
        "CUSTOM_GOLD",
        "HW_CPU_X86_VMX",
    ]);
    let traits = cli.ok(&["node", "trait", "list", "ig-0", "-f", "value"]);
    assert_eq!(
        traits.lines().collect::<Vec<_>>(),
        ["CUSTOM_GOLD", "HW_CPU_X86_VMX"]
    );

    // The ramdisk's agent: heartbeats to the gateway whenever the machine boots from the
    // network.
    sim.agent(
        0,
        &json!({"api_url": gw.url, "node": id, "interval_ms": 200}),
    )
    .await;
    cli.ok(&["node", "manage", "ig-0", "--wait", "60"]);
    assert_eq!(cli.field("ig-0", "provision_state"), "manageable");
    cli.ok(&["node", "provide", "ig-0", "--wait", "120"]);
    assert_eq!(cli.field("ig-0", "provision_state"), "available");
    // Cleaning ran on the machine: it was booted from the network, and its agent was heard.
    let heartbeats = || {
        sim.commands(0)
            .into_iter()
            .filter(|c| c["op"] == "heartbeat" && c["node"] == id.as_str() && c["status"] == 202)
            .count()
    };
    let cleaned = heartbeats();
    assert!(cleaned >= 1, "{:?}", sim.commands(0));

    // Deploy: the image in instance_info, a VIF, a config drive.
    cli.ok(&[
        "node",
        "set",
        "ig-0",
        "--instance-info",
        "image_source=http://images.example/ubuntu.qcow2",
        "--instance-info",
        "image_checksum=0f343b0931126a20f133d67c2b018a3b",
        "--instance-info",
        "root_gb=10",
    ]);
    let rows = cli.json(&["node", "validate", "ig-0"]);
    assert_eq!(field(validation(&rows, "deploy"), "result"), true, "{rows}");
    cli.ok(&["node", "vif", "attach", "ig-0", "vif-0001"]);
    let vifs = cli.ok(&["node", "vif", "list", "ig-0", "-f", "value"]);
    assert_eq!(vifs.trim(), "vif-0001");
    let port_now = cli.json(&["port", "show", "52:54:00:ab:cd:01", "--address"]);
    assert_eq!(
        port_now["internal_info"]["tenant_vif_port_id"], "vif-0001",
        "{port_now}"
    );
    cli.ok(&[
        "node",
        "deploy",
        "ig-0",
        "--config-drive",
        r##"{"meta_data": {"hostname": "ig-0"}, "user_data": "#!/bin/sh\necho hi\n"}"##,
        "--wait",
        "120",
    ]);
    let shown = cli.json(&["node", "show", "ig-0"]);
    assert_eq!(shown["provision_state"], "active", "{shown}");
    assert_eq!(shown["last_error"], Value::Null, "{shown}");
    assert_eq!(shown["instance_info"]["configdrive"], "******", "{shown}");
    assert_eq!(
        shown["instance_info"]["image_source"],
        "http://images.example/ubuntu.qcow2"
    );
    assert!(heartbeats() > cleaned, "the deploy boot's agent was heard");
    // The machine runs what was written to its disk: it was told to boot from the disk and
    // reset after that (the simulator's view and log).
    let view = sim.system(0).await;
    assert_eq!(view["run"]["from"], "Hdd", "{view}");
    assert_eq!(view["power"], "On", "{view}");

    // Undeploy: the VIF goes first (as Nova does), then tear down and cleaning.
    cli.ok(&["node", "vif", "detach", "ig-0", "vif-0001"]);
    assert_eq!(
        cli.ok(&["node", "vif", "list", "ig-0", "-f", "value"])
            .trim(),
        ""
    );
    cli.ok(&["node", "undeploy", "ig-0", "--wait", "120"]);
    let after = cli.json(&["node", "show", "ig-0"]);
    assert_eq!(after["provision_state"], "available", "{after}");
    assert_eq!(after["instance_info"], json!({}), "{after}");
    assert_eq!(after["instance_uuid"], Value::Null, "{after}");
    // The node's history tells the story in order.
    let history = cli.json(&["node", "history", "list", "ig-0", "--long"]);
    let text = history.to_string();
    for step in ["manage", "provide", "deploy", "undeploy"] {
        assert!(
            text.contains(&format!("{step}:")),
            "{step} not in {history}"
        );
    }
}

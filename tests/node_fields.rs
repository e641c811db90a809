//! The node fields, traits, drivers and lifecycle details that real Ironic clients rely on,
//! through the real clients against `ferric gateway` and real `ferric conductor` processes
//! over a real etcd: the `baremetal` CLI (python-ironicclient), Metal3-style raw HTTP (JSON
//! Patch, get by name with `fields`) and openstacksdk. What the clients see is checked, and
//! what etcd holds (the decoded spec) where it matters.

use ferric_testkit::cli::{text, NoauthCli};
use ferric_testkit::http::{api, http, run_venv, Reply};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use ferric_testkit::cli::CLI_TIMEOUT;

/// A column of the CLI's JSON output: its label ("Name") or its field name ("name").
fn col<'a>(row: &'a Value, label: &str) -> &'a Value {
    match row.get(label) {
        Some(v) => v,
        None => &row[label.to_ascii_lowercase()],
    }
}

fn names_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["name"]
                .as_str()
                .or(n["Name"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn baremetal_cli_drivers_fields_traits_and_lifecycle() {
    let mut fleet = Fleet::new("node-fields-cli").await;
    fleet.start_conductor("c1", &[]);
    fleet.start_conductor("c2", &["--drivers", "fake-hardware,ipmi"]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let cli = NoauthCli::new(&fleet, &gw);
    // The gateway sees both conductors before the drivers are listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api(gw.port, "GET", "/v1/conductors", None).json()["conductors"]
        .as_array()
        .map_or(0, |c| c.len())
        < 2
    {
        assert!(Instant::now() < deadline, "conductors never registered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Drivers: from the live conductors' records.
    let drivers = cli.json(&["driver", "list"]);
    let by_name = |name: &str| -> Value {
        drivers
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {drivers}"))
    };
    assert_eq!(by_name("ipmi")["hosts"], "c1, c2");
    assert_eq!(by_name("redfish")["hosts"], "c1");
    by_name("fake-hardware");
    let ipmi = cli.json(&["driver", "show", "ipmi"]);
    assert_eq!(ipmi["default_power_interface"], "ipmitool", "{ipmi}");
    assert_eq!(ipmi["default_deploy_interface"], "direct", "{ipmi}");
    assert_eq!(ipmi["enabled_storage_interfaces"], "noop", "{ipmi}");
    assert_eq!(ipmi["type"], "dynamic");
    let props = cli.json(&["driver", "property", "list", "redfish"]);
    let keys: Vec<&str> = props
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["property"].as_str())
        .collect();
    for k in ["redfish_address", "redfish_system_id", "redfish_password"] {
        assert!(keys.contains(&k), "{k} missing from {props}");
    }
    let ipmi_props = cli.json(&["driver", "property", "list", "ipmi"]);
    assert!(ipmi_props.to_string().contains("ipmi_address"));
    let detail = cli.json(&["driver", "list", "--long"]);
    assert!(detail.to_string().contains("ipmitool"), "{detail}");

    // Enroll; the fake deploy interface is told to fail in cleaning, so a provide that reaches
    // `available` proves cleaning was skipped.
    let node = cli.json(&[
        "node",
        "create",
        "--driver",
        "fake-hardware",
        "--name",
        "nf-0",
        "--driver-info",
        "fake_fail_states=cleaning",
    ]);
    let id = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(node["deploy_interface"], "fake", "{node}");
    assert_eq!(node["automated_clean"], Value::Null);
    cli.ok(&[
        "node",
        "set",
        "nf-0",
        "--description",
        "rack 4, slot 2",
        "--owner",
        "proj-a",
        "--lessee",
        "proj-b",
        "--shard",
        "s1",
        "--no-automated-clean",
    ]);
    let shown = cli.json(&["node", "show", "nf-0"]);
    assert_eq!(shown["description"], "rack 4, slot 2", "{shown}");
    assert_eq!(shown["owner"], "proj-a");
    assert_eq!(shown["lessee"], "proj-b");
    assert_eq!(shown["shard"], "s1");
    assert_eq!(shown["automated_clean"], false);
    let spec = fleet.spec(&id).await;
    assert_eq!(spec.description.as_deref(), Some("rack 4, slot 2"));
    assert_eq!(spec.owner.as_deref(), Some("proj-a"));
    assert_eq!(spec.lessee.as_deref(), Some("proj-b"));
    assert_eq!(spec.shard.as_deref(), Some("s1"));
    assert_eq!(spec.automated_clean, Some(false));
    // A second node, to see the filters choose.
    cli.ok(&[
        "node",
        "create",
        "--driver",
        "fake-hardware",
        "--name",
        "nf-1",
    ]);
    for filter in [
        &["--owner", "proj-a"][..],
        &["--lessee", "proj-b"],
        &["--shards", "s1"],
        &["--description-contains", "slot 2"],
    ] {
        let mut args = vec!["node", "list"];
        args.extend(filter);
        let got = cli.json(&args);
        assert_eq!(names_of(&got), ["nf-0"], "{filter:?}: {got}");
    }
    let unsharded = cli.json(&["node", "list", "--unsharded"]);
    assert_eq!(names_of(&unsharded), ["nf-1"], "{unsharded}");

    // Traits.
    cli.ok(&[
        "node",
        "add",
        "trait",
        "nf-0",
        "CUSTOM_GOLD",
        "HW_CPU_X86_AVX2",
    ]);
    let traits = cli.ok(&["node", "trait", "list", "nf-0", "-f", "value"]);
    let mut got: Vec<&str> = traits.lines().collect();
    got.sort();
    assert_eq!(got, ["CUSTOM_GOLD", "HW_CPU_X86_AVX2"]);
    let err = cli.refused(&["node", "add", "trait", "nf-0", "gold"]);
    assert!(err.contains("not valid"), "{err}");
    cli.ok(&["node", "remove", "trait", "nf-0", "HW_CPU_X86_AVX2"]);
    assert_eq!(fleet.spec(&id).await.traits, ["CUSTOM_GOLD"]);
    let listed = cli.json(&["node", "list", "--fields", "uuid", "name", "traits"]);
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| col(n, "Name") == "nf-0")
        .cloned()
        .unwrap_or_else(|| panic!("{listed}"));
    let shown_traits = col(&mine, "Traits").to_string();
    assert!(
        shown_traits.contains("CUSTOM_GOLD") && !shown_traits.contains("AVX2"),
        "{listed}"
    );

    // Protected only in active: refused in enroll with Ironic's message.
    let err = cli.refused(&["node", "set", "nf-0", "--protected"]);
    assert!(
        err.contains("can only be made protected in provision states 'active' or 'rescue'"),
        "{err}"
    );
    assert!(!fleet.spec(&id).await.protected);

    // manage, provide: automated_clean false skips cleaning (which would fail here).
    cli.ok(&["node", "manage", "nf-0", "--wait", "120"]);
    cli.ok(&["node", "provide", "nf-0", "--wait", "120"]);
    assert_eq!(cli.field("nf-0", "provision_state"), "available");
    assert_eq!(cli.field("nf-0", "reservation"), "None");

    // Validate: every interface true for a fake node with its instance_info.
    cli.ok(&[
        "node",
        "set",
        "nf-0",
        "--instance-info",
        "image_source=http://images/x.qcow2",
        "--instance-uuid",
        "5b1b0b7e-2f3a-4c2e-9a51-0c2d3e4f5a6b",
    ]);
    let validate = cli.json(&["node", "validate", "nf-0"]);
    for row in validate.as_array().unwrap() {
        assert_eq!(col(row, "Result"), &json!(true), "{validate}");
    }
    assert!(validate.as_array().unwrap().len() >= 10, "{validate}");

    // 409 while a transition is under way, and the client's own retries (409 and 503, 2 s
    // apart) carry a change through once it ends: each fake step takes 3 s here.
    cli.ok(&["node", "set", "nf-0", "--driver-info", "fake_step_secs=3"]);
    cli.ok(&["node", "deploy", "nf-0"]);
    let err = cli.refused(&["node", "set", "nf-0", "--extra", "rack=4"]);
    assert!(
        err.contains("can not be updated while a state transition is in progress")
            && err.contains("HTTP 409"),
        "{err}"
    );
    let started = Instant::now();
    cli.ok(&["node", "set", "nf-0", "--extra", "rack=4"]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the change went through at once, not after a retry"
    );
    assert_eq!(cli.field("nf-0", "provision_state"), "active");
    let extra: Value = serde_json::from_str(&fleet.spec(&id).await.extra).unwrap();
    // The client sends `4` as JSON (python-ironicclient deserializes values).
    assert_eq!(extra, json!({"rack": 4}));
    cli.ok(&["node", "unset", "nf-0", "--driver-info", "fake_step_secs"]);
    cli.ok(&[
        "node",
        "set",
        "nf-0",
        "--protected",
        "--protected-reason",
        "production",
    ]);
    assert_eq!(cli.field("nf-0", "protected_reason"), "production");
    let err = cli.refused(&["node", "undeploy", "nf-0"]);
    assert!(
        err.contains("is protected and cannot be undeployed, rebuilt or deleted"),
        "{err}"
    );
    let err = cli.refused(&["node", "rebuild", "nf-0"]);
    assert!(err.contains("protected"), "{err}");
    let spec = fleet.spec(&id).await;
    assert!(spec.protected && spec.provision_request.as_ref().map(|r| r.seq) == Some(3));
    cli.ok(&["node", "unset", "nf-0", "--protected"]);
    let spec = fleet.spec(&id).await;
    assert!(!spec.protected);
    assert_eq!(
        spec.protected_reason, None,
        "clearing protected clears its reason"
    );

    // Undeploy clears instance_info and instance_uuid (and skips cleaning again).
    cli.ok(&["node", "undeploy", "nf-0", "--wait", "120"]);
    assert_eq!(cli.field("nf-0", "provision_state"), "available");
    let shown = cli.json(&["node", "show", "nf-0"]);
    assert_eq!(shown["instance_info"], json!({}), "{shown}");
    assert_eq!(shown["instance_uuid"], Value::Null, "{shown}");
    let spec = fleet.spec(&id).await;
    assert_eq!(spec.instance_info, "{}");
    assert_eq!(spec.instance_uuid, None);

    // Delete in available.
    cli.ok(&["node", "delete", "nf-0"]);
    let snap = fleet.snapshot().await.unwrap();
    assert!(snap.spec(&id).is_none(), "{id} still in etcd");
}

fn call(port: u16, method: &str, path: &str, version: &str, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string());
    http(
        port,
        method,
        path,
        &[("X-OpenStack-Ironic-API-Version", version)],
        body.as_deref().map(str::as_bytes),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn expect(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{} {}", r.head, r.body);
    if !needle.is_empty() {
        let fault = r.fault();
        assert!(fault.contains(needle), "{fault:?} lacks {needle:?}");
    }
}

/// Waits until the node's provision state is `want` with nothing pending.
fn wait_state(fleet: &Fleet, port: u16, node: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = call(port, "GET", &format!("/v1/nodes/{node}"), "1.81", None).json();
        if n["provision_state"] == want && n["target_provision_state"].is_null() {
            return;
        }
        if Instant::now() > deadline {
            fleet.fail(&format!("{node} never reached {want}: {n}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn metal3_http_openstacksdk_and_bad_input() {
    let mut fleet = Fleet::new("node-fields-http").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let p = gw.port;
    // Metal3 enrolls with its interfaces, gets the node by name with `fields`, and PATCHes
    // automated_clean on every host.
    let r = call(
        p,
        "POST",
        "/v1/nodes",
        "1.81",
        Some(
            json!({"driver": "fake-hardware", "name": "m3-0", "boot_interface": "ipxe",
                    "deploy_interface": "fake", "network_data": {"links": [], "networks": [], "services": []}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["uuid"].as_str().unwrap().to_string();
    let r = call(
        p,
        "GET",
        "/v1/nodes/m3-0?fields=uuid,name,provision_state,boot_interface",
        "1.81",
        None,
    );
    let n = r.json();
    let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["boot_interface", "links", "name", "provision_state", "uuid"],
        "{n}"
    );
    assert_eq!(n["boot_interface"], "ipxe");
    let r = call(
        p,
        "PATCH",
        "/v1/nodes/m3-0",
        "1.81",
        Some(json!([{"op": "replace", "path": "/automated_clean", "value": false}])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["automated_clean"], false);
    assert_eq!(
        r.json()["network_data"],
        json!({"links": [], "networks": [], "services": []})
    );
    let spec = fleet.spec(&id).await;
    assert_eq!(spec.automated_clean, Some(false));
    assert_eq!(
        spec.network_data,
        r#"{"links":[],"networks":[],"services":[]}"#
    );

    // Metal3 enrolls a Redfish host with firmware, RAID and inspect interfaces `redfish`:
    // accepted, and validate says Ferric does not implement them (boot and deploy pass).
    let r = call(
        p,
        "POST",
        "/v1/nodes",
        "1.95",
        Some(
            json!({"driver": "redfish", "name": "m3-rf", "boot_interface": "ipxe",
                    "deploy_interface": "direct", "firmware_interface": "redfish",
                    "raid_interface": "redfish", "inspect_interface": "redfish",
                    "driver_info": {"redfish_address": "https://192.0.2.1",
                                    "redfish_system_id": "/redfish/v1/Systems/1"},
                    "instance_info": {"image_source": "http://images/x.qcow2"}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = call(p, "GET", "/v1/nodes/m3-rf/validate", "1.81", None).json();
    for ok in [
        "boot",
        "deploy",
        "power",
        "management",
        "network",
        "storage",
        "console",
    ] {
        assert_eq!(v[ok]["result"], true, "{ok}: {v}");
    }
    assert_eq!(v["raid"]["result"], false, "{v}");
    assert!(
        v["raid"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not implement"),
        "{v}"
    );
    let r = call(p, "DELETE", "/v1/nodes/m3-rf", "1.81", None);
    assert_eq!(r.status, 204, "{}", r.body);

    // Bad input.
    let patch = |ops: Value, version: &str| call(p, "PATCH", "/v1/nodes/m3-0", version, Some(ops));
    expect(
        &patch(
            json!([{"op": "replace", "path": "/provision_state", "value": "active"}]),
            "1.81",
        ),
        400,
        "Cannot patch /provision_state",
    );
    expect(
        &patch(
            json!([{"op": "replace", "path": "/power_interface", "value": "ipmitool"}]),
            "1.81",
        ),
        400,
        "'ironic.hardware.interfaces.power' entrypoint: ipmitool. Valid interfaces are fake.",
    );
    expect(
        &patch(
            json!([{"op": "replace", "path": "/protected", "value": true}]),
            "1.81",
        ),
        409,
        "can only be made protected",
    );
    expect(
        &patch(
            json!([{"op": "add", "path": "/retired_reason", "value": "old"}]),
            "1.81",
        ),
        400,
        "only be set when retired is True",
    );
    expect(
        &patch(
            json!([{"op": "replace", "path": "/network_data", "value":
                {"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "not-a-mac"}],
                 "networks": [], "services": []}}]),
            "1.81",
        ),
        400,
        "Invalid network_data: links[0]: ethernet_mac_address",
    );
    // A field of a newer microversion: hidden below it, set below it → 406.
    let old = call(p, "GET", "/v1/nodes/m3-0", "1.49", None).json();
    for hidden in [
        "owner",
        "description",
        "lessee",
        "retired",
        "shard",
        "network_data",
    ] {
        assert!(old.get(hidden).is_none(), "{hidden} shown at 1.49: {old}");
    }
    assert!(old.get("automated_clean").is_some());
    expect(
        &patch(
            json!([{"op": "replace", "path": "/owner", "value": "p"}]),
            "1.49",
        ),
        406,
        "",
    );
    expect(
        &patch(
            json!([{"op": "replace", "path": "/shard", "value": "s"}]),
            "1.81",
        ),
        406,
        "",
    );
    expect(
        &call(p, "GET", "/v1/nodes/m3-0?fields=uuid,traits", "1.36", None),
        406,
        "",
    );
    expect(
        &call(p, "GET", "/v1/nodes/m3-0/traits", "1.36", None),
        406,
        "",
    );
    expect(
        &call(p, "GET", "/v1/nodes/m3-0?fields=uuid,bogus", "1.81", None),
        400,
        "Field bogus is not a valid field.",
    );
    let many: Vec<String> = (0..51).map(|i| format!("CUSTOM_T{i}")).collect();
    expect(
        &call(
            p,
            "PUT",
            "/v1/nodes/m3-0/traits",
            "1.81",
            Some(json!({ "traits": many })),
        ),
        400,
        "as it would exceed the maximum number of traits per node (51 vs. 50)",
    );
    expect(
        &call(p, "PUT", "/v1/nodes/m3-0/traits/custom_lower", "1.81", None),
        400,
        "not valid",
    );
    assert!(fleet.spec(&id).await.traits.is_empty());
    let fifty: Vec<String> = (0..50).map(|i| format!("CUSTOM_T{i:02}")).collect();
    let r = call(
        p,
        "PUT",
        "/v1/nodes/m3-0/traits",
        "1.81",
        Some(json!({ "traits": fifty })),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(fleet.spec(&id).await.traits, fifty);
    expect(
        &call(
            p,
            "DELETE",
            "/v1/nodes/m3-0/traits/CUSTOM_NOPE",
            "1.81",
            None,
        ),
        404,
        "doesn't have a trait",
    );
    // Drivers by raw HTTP.
    let r = call(
        p,
        "GET",
        "/v1/drivers/fake-hardware/raid/logical_disk_properties",
        "1.81",
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({}));
    expect(
        &call(p, "GET", "/v1/drivers/idrac", "1.81", None),
        404,
        "idrac",
    );
    // 409 answers carry no `Retry-After` (python-ironicclient crashes on one; clients retry
    // 409 by status code).
    let r = patch(
        json!([{"op": "add", "path": "/instance_uuid", "value": "5b1b0b7e-2f3a-4c2e-9a51-0c2d3e4f5a6b"}]),
        "1.81",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = patch(
        json!([{"op": "replace", "path": "/instance_uuid", "value": "6b1b0b7e-2f3a-4c2e-9a51-0c2d3e4f5a6b"}]),
        "1.81",
    );
    expect(&r, 409, "is associated with instance");
    assert_eq!(r.header("retry-after"), None, "{}", r.head);
    patch(json!([{"op": "remove", "path": "/instance_uuid"}]), "1.81");

    // Retired: set in active, refused provide, tear down ends in manageable.
    let verb = |v: &str| {
        call(
            p,
            "PUT",
            "/v1/nodes/m3-0/states/provision",
            "1.81",
            Some(json!({"target": v})),
        )
    };
    assert_eq!(verb("manage").status, 202);
    wait_state(&fleet, p, "m3-0", "manageable");
    assert_eq!(verb("provide").status, 202);
    wait_state(&fleet, p, "m3-0", "available");
    expect(
        &patch(
            json!([{"op": "replace", "path": "/retired", "value": true}]),
            "1.81",
        ),
        409,
        "can not have 'retired' set in provision state 'available'",
    );
    assert_eq!(verb("active").status, 202);
    wait_state(&fleet, p, "m3-0", "active");
    // Protected: undeploy, rebuild and delete are Ironic's `NodeProtected`, a 403.
    let r = patch(
        json!([{"op": "replace", "path": "/protected", "value": true},
               {"op": "replace", "path": "/protected_reason", "value": "prod"}]),
        "1.81",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    const PROTECTED: &str = "is protected and cannot be undeployed, rebuilt or deleted";
    expect(&verb("deleted"), 403, PROTECTED);
    expect(&verb("rebuild"), 403, PROTECTED);
    expect(
        &call(p, "DELETE", "/v1/nodes/m3-0", "1.81", None),
        403,
        PROTECTED,
    );
    let r = patch(
        json!([{"op": "replace", "path": "/protected", "value": false}]),
        "1.81",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["protected_reason"], Value::Null, "{}", r.body);
    let r = patch(
        json!([{"op": "replace", "path": "/retired", "value": true},
               {"op": "replace", "path": "/retired_reason", "value": "end of life"}]),
        "1.81",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = call(p, "GET", "/v1/nodes?retired=true", "1.81", None).json();
    assert_eq!(names_of(&listed["nodes"]), ["m3-0"], "{listed}");
    assert_eq!(verb("deleted").status, 202);
    wait_state(&fleet, p, "m3-0", "manageable");
    expect(&verb("provide"), 400, "because it is retired");
    let spec = fleet.spec(&id).await;
    assert!(spec.retired);
    assert_eq!(spec.retired_reason.as_deref(), Some("end of life"));

    // The cluster default of automated_clean (`ferric ctl sync set`): false skips cleaning for
    // nodes that do not say otherwise (the fake interface would fail it here).
    fleet
        .ctl_ok(&["sync", "set", "--automated-clean", "false"])
        .await;
    let shown = fleet.ctl_ok(&["sync", "show", "--json"]).await;
    assert!(shown.contains("\"automated_clean\": false"), "{shown}");
    let r = call(
        p,
        "POST",
        "/v1/nodes",
        "1.81",
        Some(json!({"driver": "fake-hardware", "name": "m3-1",
                    "driver_info": {"fake_fail_states": "cleaning"}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id1 = r.json()["uuid"].as_str().unwrap().to_string();
    let verb1 = |v: &str| {
        call(
            p,
            "PUT",
            "/v1/nodes/m3-1/states/provision",
            "1.81",
            Some(json!({"target": v})),
        )
    };
    assert_eq!(verb1("manage").status, 202);
    wait_state(&fleet, p, "m3-1", "manageable");
    assert_eq!(verb1("provide").status, 202);
    wait_state(&fleet, p, "m3-1", "available");
    assert_eq!(
        fleet.spec(&id1).await.automated_clean,
        None,
        "the default is not written"
    );

    // conductor_group is updatable and placement follows it: a conductor of group rack2
    // takes the node over.
    fleet.start_conductor("c2", &["--conductor-group", "rack2"]);
    let r = call(
        p,
        "PATCH",
        "/v1/nodes/m3-1",
        "1.81",
        Some(json!([{"op": "replace", "path": "/conductor_group", "value": "rack2"}])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = call(p, "GET", "/v1/nodes/m3-1", "1.81", None).json();
        if n["conductor"] == "c2" && n["conductor_group"] == "rack2" {
            break;
        }
        if Instant::now() > deadline {
            fleet.fail(&format!("m3-1 never moved to c2: {n}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // openstacksdk: traits, validate_node(required=...), reservation after manage.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_fields.py");
    let out = run_venv("python", &[script, &gw.url, "sdkf"], &[], CLI_TIMEOUT);
    if !out.status.success() {
        fleet.fail(&format!(
            "openstacksdk flow failed: {}\n{}",
            text(&out),
            gw.proc.log_tail(30)
        ));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

//! Ports, port groups, VIFs and volume targets through `ferric gateway`, driven by the real
//! `baremetal` CLI and openstacksdk and by raw HTTP for the refusals, with real conductors over
//! a real etcd. What the clients print is checked, and so is what etcd holds: the port records
//! under their node and the MAC index entries (the independent record).

use ferric_testkit::cli::{text, NoauthCli};
use ferric_testkit::http::{api, http, run_venv, Reply};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::Duration;

use ferric_testkit::cli::CLI_TIMEOUT;

/// The value of one etcd key under the fleet's prefix.
async fn etcd_get(fleet: &Fleet, rest: &str) -> Option<String> {
    let mut kv = fleet.inspect.client().kv_client();
    let resp = kv.get(fleet.inspect.key(rest), None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
}

async fn etcd_keys(fleet: &Fleet, rest: &str) -> Vec<String> {
    let (_, kvs) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key(rest))
        .await
        .unwrap();
    kvs.into_iter().map(|kv| kv.key).collect()
}

/// A column of the CLI's JSON output, whatever its case ("UUID" or "uuid").
fn field<'a>(row: &'a Value, name: &str) -> &'a str {
    row.as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {row}"))
}

fn post(gw: &Gateway, path: &str, body: &Value) -> Reply {
    api(gw.port, "POST", path, Some(&body.to_string()))
}

fn port_body(node: &str, mac: &str) -> Value {
    json!({"node_uuid": node, "address": mac})
}

#[tokio::test]
async fn ports_vifs_and_volume_targets_with_the_baremetal_cli_and_openstacksdk() {
    let mut fleet = Fleet::new("ports-cli").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let ids = fleet
        .create_nodes(2, &["--name", "pc", "--driver", "fake-hardware"])
        .await;
    let (node, other) = (&ids[0], &ids[1]);
    let cli = NoauthCli::new(&fleet, &gw);

    // Create, list, show by address, set, as the install guide does.
    let p = cli.json(&[
        "port",
        "create",
        "--node",
        node,
        "52:54:00:12:34:56",
        "--pxe-enabled",
        "true",
    ]);
    assert_eq!(p["address"], "52:54:00:12:34:56", "{p}");
    assert_eq!(p["pxe_enabled"], true, "{p}");
    assert_eq!(p["node_uuid"], node.as_str(), "{p}");
    let port = p["uuid"].as_str().unwrap().to_string();
    let listed = cli.json(&["port", "list", "--node", node]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(field(&listed[0], "uuid"), port.as_str(), "{listed}");
    assert!(cli
        .json(&["port", "list", "--node", other])
        .as_array()
        .unwrap()
        .is_empty());
    let shown = cli.json(&["port", "show", "--address", "52:54:00:12:34:56"]);
    assert_eq!(shown["uuid"], port.as_str(), "{shown}");
    cli.ok(&["port", "set", &port, "--extra", "rack=r1"]);
    let shown = cli.json(&["port", "show", &port]);
    assert_eq!(shown["extra"], json!({"rack": "r1"}), "{shown}");
    // etcd: the record under its node and the MAC index entry pointing at it.
    let record_key = format!("ports/{node}/{port}");
    assert!(etcd_get(&fleet, &record_key).await.is_some());
    assert_eq!(
        etcd_get(&fleet, "index/port-mac/52:54:00:12:34:56").await,
        Some(fleet.inspect.key(&record_key))
    );

    // Port groups.
    let g = cli.json(&[
        "port",
        "group",
        "create",
        "--node",
        node,
        "--name",
        "bond0",
        "--address",
        "52:54:00:aa:bb:cc",
    ]);
    assert_eq!(g["name"], "bond0", "{g}");
    assert_eq!(g["mode"], "active-backup", "{g}");
    let groups = cli.json(&["port", "group", "list", "--node", node]);
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(field(&groups[0], "name"), "bond0", "{groups}");

    // VIFs: attach, attach again (success), list, detach.
    cli.ok(&["node", "vif", "attach", node, "vif-cli-1"]);
    cli.ok(&["node", "vif", "attach", node, "vif-cli-1"]);
    let vifs = cli.json(&["node", "vif", "list", node]);
    assert_eq!(vifs.as_array().map(Vec::len), Some(1), "{vifs}");
    assert_eq!(field(&vifs[0], "id"), "vif-cli-1", "{vifs}");
    let shown = cli.json(&["port", "show", &port]);
    assert_eq!(
        shown["internal_info"]["tenant_vif_port_id"], "vif-cli-1",
        "{shown}"
    );
    assert!(etcd_get(&fleet, "index/vif/vif-cli-1").await.is_some());
    cli.ok(&["node", "vif", "detach", node, "vif-cli-1"]);
    assert!(cli
        .json(&["node", "vif", "list", node])
        .as_array()
        .unwrap()
        .is_empty());
    assert!(etcd_get(&fleet, "index/vif/vif-cli-1").await.is_none());

    // Volume targets.
    let t = cli.json(&[
        "volume",
        "target",
        "create",
        "--node",
        node,
        "--type",
        "iscsi",
        "--boot-index",
        "0",
        "--volume-id",
        "vol-1",
    ]);
    assert_eq!(t["volume_id"], "vol-1", "{t}");
    let targets = cli.json(&["volume", "target", "list", "--node", node]);
    assert_eq!(targets.as_array().unwrap().len(), 1, "{targets}");
    let dup = cli.run(&[
        "volume",
        "target",
        "create",
        "--node",
        node,
        "--type",
        "iscsi",
        "--boot-index",
        "0",
        "--volume-id",
        "vol-2",
    ]);
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("boot index '0'"),
        "{}",
        text(&dup)
    );

    // Delete: record and index entry gone.
    cli.ok(&["port", "delete", &port]);
    assert!(etcd_get(&fleet, &record_key).await.is_none());
    assert!(etcd_get(&fleet, "index/port-mac/52:54:00:12:34:56")
        .await
        .is_none());

    // openstacksdk, including the cloud layer's get_machine_by_mac.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_ports.py");
    let out = run_venv(
        "python",
        &[script, &gw.url, other, "52:54:00:de:ad:01"],
        &[],
        CLI_TIMEOUT,
    );
    if !out.status.success() {
        fleet.fail(&format!(
            "openstacksdk ports flow failed: {}\n{}",
            text(&out),
            gw.proc.log_tail(30)
        ));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[tokio::test]
async fn refusals_vif_rules_races_corrupt_records_and_node_delete() {
    let mut fleet = Fleet::new("ports-rules").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let gw2 = Gateway::start(&fleet, dir.path(), "gw2", &[]);
    let ids = fleet
        .create_nodes(4, &["--name", "pr", "--driver", "fake-hardware"])
        .await;
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);

    // Bad input.
    let r = post(&gw, "/v1/ports", &port_body(a, "52:54:00:00:00:01"));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(&gw, "/v1/ports", &port_body(b, "52:54:00:00:00:01"));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        r.fault(),
        "A port with MAC address 52:54:00:00:00:01 already exists."
    );
    let r = post(&gw, "/v1/ports", &port_body(b, "52:54:00:00:00:0z"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.fault().contains("Expected a MAC address"), "{}", r.body);
    let unknown = uuid::Uuid::new_v4().to_string();
    let r = post(&gw, "/v1/ports", &port_body(&unknown, "52:54:00:00:00:02"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.fault(), format!("Node {unknown} could not be found."));
    let r = post(
        &gw,
        "/v1/ports",
        &json!({"node_uuid": a, "address": "52:54:00:00:00:03", "colour": "red"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.fault().contains("'colour' was unexpected"), "{}", r.body);
    // `fields` naming a field ports do not have: Ironic's 400 and message.
    let r = api(gw.port, "GET", "/v1/ports?fields=uuid,colour", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.fault(),
        r#"Field(s) "colour" are not valid"#,
        "{}",
        r.body
    );
    let big = "x".repeat(2 * 1024 * 1024);
    let r = post(
        &gw,
        "/v1/ports",
        &json!({"node_uuid": a, "address": "52:54:00:00:00:04", "extra": {"big": big}}),
    );
    assert_eq!(r.status, 413);
    let port = api(gw.port, "GET", "/v1/ports?address=52:54:00:00:00:01", None).json()["ports"][0]
        ["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    for path in ["/internal_info", "/uuid"] {
        let patch = json!([{"op": "replace", "path": path, "value": "x"}]).to_string();
        let r = api(gw.port, "PATCH", &format!("/v1/ports/{port}"), Some(&patch));
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.fault().starts_with(&format!("Cannot patch {path}")),
            "{}",
            r.body
        );
    }
    // Upper-case MAC: normalised, so it is the same MAC.
    let r = post(&gw, "/v1/ports", &port_body(b, "52:54:00:00:00:0A"));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["address"], "52:54:00:00:00:0a");
    let r = post(&gw2, "/v1/ports", &port_body(c, "52:54:00:00:00:0a"));
    assert_eq!(r.status, 409, "{}", r.body);

    // Two gateways create the same MAC at once: exactly one wins.
    for round in 0..5 {
        let mac = format!("52:54:00:00:01:{round:02x}");
        let (ga, gb) = (gw.port, gw2.port);
        let (b1, b2) = (
            port_body(a, &mac).to_string(),
            port_body(b, &mac).to_string(),
        );
        let t1 = std::thread::spawn(move || api(ga, "POST", "/v1/ports", Some(&b1)).status);
        let t2 = std::thread::spawn(move || api(gb, "POST", "/v1/ports", Some(&b2)).status);
        let mut codes = [t1.join().unwrap(), t2.join().unwrap()];
        codes.sort();
        assert_eq!(codes, [201, 409], "round {round}");
    }

    // VIFs on c: a non-PXE port, then a PXE one. Ironic prefers PXE-enabled ports.
    let r = post(
        &gw,
        "/v1/ports",
        &json!({"node_uuid": c, "address": "52:54:00:00:02:01", "pxe_enabled": false}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let non_pxe = r.json()["uuid"].as_str().unwrap().to_string();
    let r = post(&gw, "/v1/ports", &port_body(c, "52:54:00:00:02:02"));
    let pxe = r.json()["uuid"].as_str().unwrap().to_string();
    let vifs = format!("/v1/nodes/{c}/vifs");
    assert_eq!(post(&gw, &vifs, &json!({"id": "v1"})).status, 204);
    let shown = api(gw.port, "GET", &format!("/v1/ports/{pxe}"), None).json();
    assert_eq!(
        shown["internal_info"]["tenant_vif_port_id"], "v1",
        "{shown}"
    );
    // The same VIF again: success, nothing changes.
    assert_eq!(post(&gw2, &vifs, &json!({"id": "v1"})).status, 204);
    assert_eq!(post(&gw, &vifs, &json!({"id": "v2"})).status, 204);
    let shown = api(gw.port, "GET", &format!("/v1/ports/{non_pxe}"), None).json();
    assert_eq!(
        shown["internal_info"]["tenant_vif_port_id"], "v2",
        "{shown}"
    );
    let r = post(&gw, &vifs, &json!({"id": "v3"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.fault(),
        "Unable to attach VIF v3, not enough free physical ports."
    );
    // v1 on another node: a genuine conflict.
    let r = post(&gw, &format!("/v1/nodes/{a}/vifs"), &json!({"id": "v1"}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.fault().contains("VIF v1 is already attached"),
        "{}",
        r.body
    );
    let r = api(gw.port, "DELETE", &format!("{vifs}/nope"), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.fault(),
        format!("Unable to detach VIF nope from node {c} because it is not attached to it.")
    );
    let listed = api(gw.port, "GET", &vifs, None).json();
    assert_eq!(
        listed,
        json!({"vifs": [{"id": "v2"}, {"id": "v1"}]}),
        "{listed}"
    );
    // Below 1.28 there is no such resource.
    let r = http(
        gw.port,
        "GET",
        &vifs,
        &[("X-OpenStack-Ironic-API-Version", "1.27")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 404);

    // Two VIFs at once on a node with one free port (d), through two gateways: one wins, and
    // the winner's VIF is never overwritten by the loser (found by this test: the loser chose
    // from an older copy and then wrote over the record it read again).
    for round in 0..5 {
        let mac = format!("52:54:00:00:03:{round:02x}");
        let r = post(&gw, "/v1/ports", &port_body(d, &mac));
        assert_eq!(r.status, 201, "{}", r.body);
        let path = format!("/v1/nodes/{d}/vifs");
        let (p1, p2) = (path.clone(), path);
        let (ga, gb) = (gw.port, gw2.port);
        let (v1, v2) = (format!("r{round}-a"), format!("r{round}-b"));
        let t1 = std::thread::spawn(move || {
            api(ga, "POST", &p1, Some(&json!({"id": v1}).to_string())).status
        });
        let t2 = std::thread::spawn(move || {
            api(gb, "POST", &p2, Some(&json!({"id": v2}).to_string())).status
        });
        let mut codes = [t1.join().unwrap(), t2.join().unwrap()];
        codes.sort();
        assert_eq!(codes, [204, 400], "round {round}");
    }
    let on_d = api(gw.port, "GET", &format!("/v1/nodes/{d}/vifs"), None).json();
    assert_eq!(on_d["vifs"].as_array().unwrap().len(), 5, "{on_d}");

    // 1.67: a VIF onto a named port, even a non-PXE one while a PXE port is free.
    let r = post(
        &gw,
        "/v1/ports",
        &json!({"node_uuid": b, "address": "52:54:00:00:04:01", "pxe_enabled": false}),
    );
    let named = r.json()["uuid"].as_str().unwrap().to_string();
    let bvifs = format!("/v1/nodes/{b}/vifs");
    let r = post(&gw, &bvifs, &json!({"id": "vp", "port_uuid": named}));
    assert_eq!(r.status, 204, "{}", r.body);
    let shown = api(gw.port, "GET", &format!("/v1/ports/{named}"), None).json();
    assert_eq!(
        shown["internal_info"]["tenant_vif_port_id"], "vp",
        "{shown}"
    );
    let r = post(
        &gw,
        &bvifs,
        &json!({"id": "vq", "port_uuid": named, "portgroup_uuid": named}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(&gw, &bvifs, &json!({"id": "not a name!"}));
    assert_eq!(r.status, 400, "{}", r.body);

    // Volume records change only on a powered-off node; deletion also in deletable states.
    let r = post(
        &gw,
        "/v1/volume/targets",
        &json!({"node_uuid": b, "volume_type": "iscsi", "boot_index": 0, "volume_id": "vb"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let target = r.json()["uuid"].as_str().unwrap().to_string();
    let r = api(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{b}/states/power"),
        Some(r#"{"target": "power on"}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let on = ferric_testkit::process::wait_until(Duration::from_secs(20), || {
        api(gw.port, "GET", &format!("/v1/nodes/{b}"), None).json()["power_state"] == "power on"
    });
    assert!(on, "node b never powered on");
    let patch = json!([{"op": "add", "path": "/extra/x", "value": "y"}]).to_string();
    let r = api(
        gw.port,
        "PATCH",
        &format!("/v1/volume/targets/{target}"),
        Some(&patch),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.fault(),
        format!("The requested action \"volume target update\" can not be performed on node \"{b}\" while it is in state \"power on\".")
    );
    // b is in `enroll`: a state nodes may be deleted in.
    let r = api(
        gw.port,
        "DELETE",
        &format!("/v1/volume/targets/{target}"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);

    // Nova's cleanup after a failed spawn: a list, never a 404.
    let t = api(
        gw.port,
        "GET",
        &format!("/v1/volume/targets?node={c}&detail=True"),
        None,
    );
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.json(), json!({"targets": []}));
    let r = http(
        gw.port,
        "GET",
        "/v1/volume",
        &[("X-OpenStack-Ironic-API-Version", "1.31")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(api(gw.port, "GET", "/v1/volume", None).status, 200);
    let vol = api(gw.port, "GET", &format!("/v1/nodes/{c}/volume"), None).json();
    assert!(vol["targets"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v1/nodes/{c}/volume/targets")));
    let shown = api(gw.port, "GET", &format!("/v1/nodes/{c}"), None).json();
    for sub in ["ports", "portgroups", "volume"] {
        let href = shown[sub][0]["href"].as_str().unwrap_or_default();
        assert!(
            href.ends_with(&format!("/v1/nodes/{c}/{sub}")),
            "{sub}: {shown}"
        );
    }

    // Pagination with next links over ports.
    let page = api(gw.port, "GET", "/v1/ports?limit=3", None).json();
    assert_eq!(page["ports"].as_array().unwrap().len(), 3, "{page}");
    let next = page["next"].as_str().expect("a full page has next");
    assert!(next.contains("limit=3&marker="), "{next}");
    let path = &next[next.find("/v1/").unwrap()..];
    let page2 = api(gw.port, "GET", path, None).json();
    assert_eq!(page2["ports"].as_array().unwrap().len(), 3, "{page2}");
    assert_ne!(page["ports"][0]["uuid"], page2["ports"][0]["uuid"]);
    let fields = api(
        gw.port,
        "GET",
        &format!("/v1/nodes/{c}/ports?fields=uuid,pxe_enabled&pxe_enabled=false"),
        None,
    )
    .json();
    assert_eq!(
        fields["ports"],
        json!([{"uuid": non_pxe, "pxe_enabled": false, "links": fields["ports"][0]["links"]}]),
        "{fields}"
    );

    let a_count = api(gw.port, "GET", &format!("/v1/nodes/{a}/ports"), None).json()["ports"]
        .as_array()
        .unwrap()
        .len();
    assert!(a_count >= 1);

    // A corrupt port record (written here): logged, left out, the rest served, nobody panics.
    let bogus = uuid::Uuid::new_v4();
    let mut kv = fleet.inspect.client().kv_client();
    kv.put(
        fleet.inspect.key(&format!("ports/{a}/{bogus}")),
        "\x01garbage",
        None,
    )
    .await
    .unwrap();
    let logged = ferric_testkit::process::wait_until(Duration::from_secs(10), || {
        gw.proc.log().contains("unreadable port record")
    });
    assert!(logged, "{}", gw.proc.log_tail(20));
    let r = api(gw.port, "GET", &format!("/v1/nodes/{a}/ports"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["ports"].as_array().unwrap().len(),
        a_count,
        "{}",
        r.body
    );
    assert_eq!(
        api(gw.port, "GET", &format!("/v1/ports/{bogus}"), None).status,
        404
    );

    // Node delete takes its ports and their index entries with it (the corrupt one too).
    let a_ports = etcd_keys(&fleet, &format!("ports/{a}/")).await;
    assert_eq!(a_ports.len(), a_count + 1, "{a_ports:?}");
    let r = api(gw.port, "DELETE", &format!("/v1/nodes/{a}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(etcd_keys(&fleet, &format!("ports/{a}/")).await.is_empty());
    assert!(etcd_get(&fleet, "index/port-mac/52:54:00:00:00:01")
        .await
        .is_none());
    let index = etcd_keys(&fleet, "index/port-mac/").await;
    let record_keys: Vec<String> = etcd_keys(&fleet, "ports/").await;
    for i in &index {
        let holder = etcd_get(&fleet, &i[fleet.inspect.prefix.len()..])
            .await
            .unwrap();
        assert!(
            record_keys.contains(&holder),
            "{i} points at a deleted record {holder}"
        );
    }
    // An index entry whose record is gone (as a hand-deleted record would leave) is taken over.
    kv.put(
        fleet.inspect.key("index/port-mac/52:54:00:00:09:09"),
        fleet
            .inspect
            .key(&format!("ports/{b}/{}", uuid::Uuid::new_v4())),
        None,
    )
    .await
    .unwrap();
    let r = post(&gw, "/v1/ports", &port_body(b, "52:54:00:00:09:09"));
    assert_eq!(r.status, 201, "{}", r.body);
    let taken_by = r.json()["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        etcd_get(&fleet, "index/port-mac/52:54:00:00:09:09").await,
        Some(fleet.inspect.key(&format!("ports/{b}/{taken_by}")))
    );

    // The MAC is free again.
    let r = post(&gw2, "/v1/ports", &port_body(b, "52:54:00:00:00:01"));
    assert_eq!(r.status, 201, "{}", r.body);

    for (name, p) in [("gw1", &gw.proc), ("gw2", &gw2.proc)] {
        assert!(p.is_running(), "{name} exited");
        assert!(!p.log().contains("panicked"), "{name} panicked");
    }
    assert!(fleet.conductor("c1").is_running());
    assert!(!fleet.conductor("c1").log().contains("panicked"));
}

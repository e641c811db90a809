//! BIOS settings through the real `baremetal` CLI against `ferric gateway` and a real
//! `ferric conductor` over a real etcd. The BMCs are real processes: `ferric sim` (a Redfish
//! service with a `Bios` resource and attribute registry) and sushy-tools' fake driver (a Redfish
//! system without BIOS settings). What the CLI shows is checked against the BMC's own request
//! log (the settings were read once, when the node was managed, and never on an API read) and
//! against etcd (`bios/<uuid>`, written by the conductor, gone with the node).

use ferric_model::{decode, BiosRecord};
use ferric_testkit::cli::NoauthCli;
use ferric_testkit::fleet::Sim;
use ferric_testkit::http::{api_at, Reply};
use ferric_testkit::sushy::Sushy;
use ferric_testkit::{Fleet, Gateway};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A field of one row of the CLI's JSON output, whatever its label ("BIOS setting name",
/// "Attribute Type", "attribute_type").
fn field<'a>(row: &'a Value, name: &str) -> &'a Value {
    let norm = |k: &str| {
        k.to_ascii_lowercase()
            .replace(' ', "_")
            .trim_start_matches("bios_setting_")
            .to_string()
    };
    row.as_object()
        .and_then(|o| o.iter().find(|(k, _)| norm(k) == name).map(|(_, v)| v))
        .unwrap_or(&Value::Null)
}

fn at(gw: &Gateway, version: &str, path: &str) -> Reply {
    api_at(gw.port, "GET", path, version, None)
}

async fn bios_key(fleet: &Fleet, id: &str) -> Option<BiosRecord> {
    let mut kv = fleet.inspect.client().kv_client();
    let resp = kv
        .get(fleet.inspect.key(&format!("bios/{id}")), None)
        .await
        .unwrap();
    resp.kvs()
        .first()
        .map(|kv| decode::<BiosRecord>(kv.value()).expect("a readable BIOS record"))
}

/// Requests the simulator logged for the system's `Bios` resource.
fn bios_reads(sim: &Sim, system: usize) -> usize {
    sim.commands(system)
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/Bios")))
        .count()
}

fn wait_state(cli: &NoauthCli, node: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = cli.field(node, "provision_state");
        if now == state {
            return;
        }
        if Instant::now() > deadline {
            cli.fleet
                .fail(&format!("{node} stayed {now}, never {state}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn bios_settings_are_cached_on_manage_and_served_without_asking_the_bmc() {
    let mut fleet = Fleet::new("bios").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 2, &[]).await;
    let sushy = Sushy::start(dir.path()).await;
    let sushy_system = sushy.first_system().await;
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let cli = NoauthCli::new(&fleet, &gw);

    let info = |k: &str, v: &str| format!("{k}={v}");
    let node = cli.json(&[
        "node",
        "create",
        "--driver",
        "redfish",
        "--name",
        "bios-sim",
        "--bios-interface",
        "redfish",
        "--driver-info",
        &info("redfish_address", &sim.url),
        "--driver-info",
        "redfish_system_id=/redfish/v1/Systems/sim-0",
        "--driver-info",
        "redfish_username=admin",
        "--driver-info",
        "redfish_password=password",
    ]);
    let id = node["uuid"].as_str().unwrap().to_string();
    cli.ok(&[
        "node",
        "create",
        "--driver",
        "redfish",
        "--name",
        "bios-sushy",
        "--bios-interface",
        "redfish",
        "--driver-info",
        &info("redfish_address", &sushy.url),
        "--driver-info",
        &info("redfish_system_id", &sushy_system),
    ]);

    // The same kind of machine behind the default `no-bios` interface (as in Ironic's default
    // configuration): nothing is read from it.
    cli.ok(&[
        "node",
        "create",
        "--driver",
        "redfish",
        "--name",
        "bios-none",
        "--driver-info",
        &info("redfish_address", &sim.url),
        "--driver-info",
        "redfish_system_id=/redfish/v1/Systems/sim-1",
        "--driver-info",
        "redfish_username=admin",
        "--driver-info",
        "redfish_password=password",
    ]);
    assert_eq!(cli.field("bios-none", "bios_interface"), "no-bios");

    // Nothing cached before the node is managed: an empty list, and the BMC was not asked.
    let before = cli.json(&["node", "bios", "setting", "list", "bios-sim"]);
    assert_eq!(before, Value::Array(vec![]), "{before}");
    assert_eq!(bios_reads(&sim, 0), 0);

    cli.ok(&["node", "manage", "bios-sim"]);
    cli.ok(&["node", "manage", "bios-sushy"]);
    cli.ok(&["node", "manage", "bios-none"]);
    for node in ["bios-sim", "bios-sushy", "bios-none"] {
        wait_state(&cli, node, "manageable");
    }
    let valid = cli.json(&["node", "validate", "bios-sim"]);
    let bios_row = valid
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Interface"] == "bios")
        .cloned()
        .unwrap_or_else(|| panic!("no bios in {valid}"));
    assert_eq!(bios_row["Result"], true, "{valid}");

    // Cached by verification, before the node became manageable: the conductor's record in
    // etcd, and one read of the Bios resource in the BMC's log, by that conductor.
    let record = bios_key(&fleet, &id).await.expect("bios/<uuid> in etcd");
    assert_eq!(record.conductor, "c1");
    assert_eq!(bios_reads(&sim, 0), 1, "{:?}", sim.commands(0));
    let by_conductor = sim
        .commands(0)
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/Bios")))
        .all(|e| e["client"] == "c1" && e["status"] == 200);
    assert!(by_conductor, "{:?}", sim.commands(0));

    let list = cli.json(&["node", "bios", "setting", "list", "bios-sim"]);
    let rows = list.as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| field(r, "name").as_str())
        .collect();
    assert_eq!(
        names,
        [
            "BootMode",
            "NumCores",
            "ProcTurboMode",
            "ProcVirtualization",
            "SecureBoot",
            "SerialNumber"
        ],
        "{list}"
    );
    let value_of = |name: &str| {
        rows.iter()
            .find(|r| field(r, "name") == name)
            .map(|r| field(r, "value").clone())
            .unwrap()
    };
    // Values as Ironic stores them: text, booleans as Python writes them.
    assert_eq!(value_of("NumCores"), "8");
    assert_eq!(value_of("SecureBoot"), "False");
    assert_eq!(value_of("SerialNumber"), "FSIM00000000");
    assert_eq!(value_of("BootMode"), "Uefi");

    // Registry fields (1.74): the list with --long, and one setting.
    let long = cli.json(&["node", "bios", "setting", "list", "bios-sim", "--long"]);
    let boot = long
        .as_array()
        .unwrap()
        .iter()
        .find(|r| field(r, "name") == "BootMode")
        .cloned()
        .unwrap_or_else(|| panic!("no BootMode in {long}"));
    assert_eq!(field(&boot, "attribute_type"), "Enumeration", "{boot}");
    assert_eq!(
        field(&boot, "allowable_values"),
        &serde_json::json!(["Bios", "Uefi"]),
        "{boot}"
    );
    assert_eq!(field(&boot, "reset_required"), true, "{boot}");
    let cores = cli.json(&["node", "bios", "setting", "show", "bios-sim", "NumCores"]);
    assert_eq!(cores["value"], "8", "{cores}");
    assert_eq!(cores["attribute_type"], "Integer", "{cores}");
    assert_eq!(cores["read_only"], true, "{cores}");
    assert_eq!(
        (&cores["lower_bound"], &cores["upper_bound"]),
        (&1.into(), &256.into())
    );
    let serial = cli.json(&[
        "node",
        "bios",
        "setting",
        "show",
        "bios-sim",
        "SerialNumber",
    ]);
    assert_eq!(serial["unique"], true, "{serial}");
    assert_eq!(serial["max_length"], 16, "{serial}");
    let picked = cli.json(&[
        "node",
        "bios",
        "setting",
        "list",
        "bios-sim",
        "--fields",
        "name",
        "read_only",
    ]);
    assert_eq!(field(&picked[0], "read_only"), false, "{picked}");
    assert!(field(&picked[0], "attribute_type").is_null(), "{picked}");

    // All those reads came from the cache: the BMC was asked once, at manage.
    assert_eq!(bios_reads(&sim, 0), 1, "{:?}", sim.commands(0));

    // Ironic's answers for what is not there, and below the microversions.
    let missing = cli.refused(&["node", "bios", "setting", "show", "bios-sim", "NoSuch"]);
    assert!(
        missing.contains("doesn't have a BIOS setting 'NoSuch'"),
        "{missing}"
    );
    let old = at(&gw, "1.39", &format!("/v1/nodes/{id}/bios"));
    assert_eq!(old.status, 404, "{}", old.body);
    let plain = at(&gw, "1.73", &format!("/v1/nodes/{id}/bios/NumCores"));
    assert_eq!(plain.status, 200, "{}", plain.body);
    let plain = plain.json();
    assert_eq!(plain["NumCores"]["value"], "8");
    assert!(plain["NumCores"].get("read_only").is_none(), "{plain}");
    assert!(plain["NumCores"]["links"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v1/nodes/{id}/bios/NumCores")));
    let detail_at_73 = at(&gw, "1.73", &format!("/v1/nodes/{id}/bios?detail=True"));
    assert_eq!(detail_at_73.status, 400, "{}", detail_at_73.body);
    let both = at(
        &gw,
        "1.74",
        &format!("/v1/nodes/{id}/bios?detail=True&fields=name"),
    );
    assert_eq!(both.status, 400, "{}", both.body);
    assert!(both
        .fault()
        .contains("Can not specify ?detail=True and fields"));
    let unknown = at(
        &gw,
        "1.74",
        &format!("/v1/nodes/{id}/bios?fields=name,colour"),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(unknown.fault().contains("colour"), "{}", unknown.body);

    assert_eq!(
        cli.json(&["node", "bios", "setting", "list", "bios-none"]),
        Value::Array(vec![])
    );
    assert_eq!(bios_reads(&sim, 1), 0, "{:?}", sim.commands(1));

    // A Redfish system without a Bios resource (sushy-tools' fake driver): managed all the
    // same, nothing cached.
    assert_eq!(
        cli.json(&["node", "bios", "setting", "list", "bios-sushy"]),
        Value::Array(vec![])
    );

    // The cache goes with the node.
    cli.ok(&["node", "delete", "bios-sim"]);
    assert!(
        bios_key(&fleet, &id).await.is_none(),
        "bios/<uuid> left behind"
    );
}

//! The real Ansible `openstack.cloud` collection's bare-metal modules against a real Ferric
//! cluster (one `ferric conductor` over a real etcd, `ferric gateway` with no auth) and a
//! `ferric sim` Redfish machine whose ramdisk agent heartbeats. The playbook
//! `tests/clients/ansible_enroll.yml` enrolls a node with two NICs (`baremetal_node`: create,
//! manage, ports, provide with automated cleaning), describes one port and adds another
//! (`baremetal_port`), reads them back (`baremetal_node_info` by name and by MAC,
//! `baremetal_port_info` by MAC and by node) and deploys the node (`baremetal_node_action`:
//! instance_info, validate, deploy with a config drive). What the modules returned is checked
//! against the independent records: the API's own answer, etcd (the node's spec, the port
//! records and their MAC index) and the simulator's view of the machine. The playbook then runs
//! again and must change nothing, except the one task the collection cannot see as unchanged
//! (the node's masked BMC password; Ironic masks it too). Last, `ansible_retire.yml` undeploys
//! the node, removes a port and unregisters the node with its NICs, and etcd must hold nothing
//! of them.

use ferric_model::{decode, PortRecord, ProvisionState};
use ferric_testkit::fleet::Sim;
use ferric_testkit::http::{api, pyvenv};
use ferric_testkit::process::{file_tail, run_bounded};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(300);
const MACS: [&str; 3] = [
    "52:54:00:a5:b1:01",
    "52:54:00:a5:b1:02",
    "52:54:00:a5:b1:03",
];

/// Runs `tests/clients/<playbook>.yml` with `vars` (as an extra-vars file), Ansible kept inside
/// a directory of its own under `dir` (its home, temporary files, configuration and openstacksdk's
/// log), with the virtualenv's site-packages (where `scripts/install-collections.py` put
/// openstack.cloud) as the only collection path, bounded by [`PLAYBOOK_TIMEOUT`]. Returns the
/// report the playbook wrote (what each task returned), or fails the test with Ansible's output.
fn run_playbook(
    fleet: &Fleet,
    gw: &Gateway,
    dir: &Path,
    playbook: &str,
    run: &str,
    vars: &Value,
) -> Value {
    let venv = pyvenv();
    let site = std::fs::read_dir(venv.join("lib"))
        .expect("the virtualenv's lib")
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("ansible_collections/openstack/cloud").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "openstack.cloud is not in {}: run scripts/install-deps.sh",
                venv.display()
            )
        });
    let home = dir.join(format!("ansible-{run}"));
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    let config = home.join("ansible.cfg");
    std::fs::write(&config, "").unwrap();
    let report = home.join("report.json");
    let mut vars = vars.clone();
    vars["report"] = json!(report);
    let sdk_log = home.join("sdk.log");
    vars["sdk_log"] = json!(sdk_log);
    let vars_file = home.join("vars.json");
    std::fs::write(&vars_file, vars.to_string()).unwrap();

    let playbook = format!(
        "{}/tests/clients/{playbook}.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = Command::new(venv.join("bin/ansible-playbook"));
    cmd.args(["-i", "localhost,", "-c", "local"])
        .arg("-e")
        .arg(format!("@{}", vars_file.display()))
        .arg(&playbook)
        .current_dir(&home)
        // Nothing of the machine's user leaks in (no ~/.ansible, no clouds.yaml, no OS_*).
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                venv.join("bin").display()
            ),
        )
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("ANSIBLE_CONFIG", &config)
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", home.join("tmp"))
        .env("ANSIBLE_COLLECTIONS_PATH", &site)
        .env("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "false")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "false")
        .env("ANSIBLE_LOCALHOST_WARNING", "false");
    let out = run_bounded(cmd, PLAYBOOK_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        fleet.fail(&format!(
            "ansible-playbook ({run}) failed ({}):\n{stdout}\n{}\n--- openstacksdk's log:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            file_tail(&sdk_log, 30),
            gw.proc.log_tail(40)
        ));
    }
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| fleet.fail(&format!("no report from the {run} run ({e}):\n{stdout}")));
    serde_json::from_str(&text).unwrap_or_else(|e| fleet.fail(&format!("report: {e}: {text}")))
}

/// Which tasks of a report said they changed something.
fn changed(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = report
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["changed"] == true)
        .map(|(k, _)| k.clone())
        .collect();
    out.sort();
    out
}

/// The port records etcd holds under `node`.
async fn port_records(fleet: &Fleet, node: &str) -> Vec<PortRecord> {
    let (_, kvs) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key(&format!("ports/{node}/")))
        .await
        .unwrap();
    kvs.iter()
        .map(|kv| decode::<PortRecord>(&kv.value).expect("a port record"))
        .collect()
}

async fn etcd_get(fleet: &Fleet, rest: &str) -> Option<String> {
    let mut kv = fleet.inspect.client().kv_client();
    let resp = kv.get(fleet.inspect.key(rest), None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
}

/// The heartbeats the machine's agent sent for `node` and the API accepted (the sim's log).
fn heartbeats_of(sim: &Sim, node: &str) -> usize {
    sim.commands(0)
        .into_iter()
        .filter(|c| c["op"] == "heartbeat" && c["node"] == node && c["status"] == 202)
        .count()
}

fn ports_by_address(gw: &Gateway, mac: &str) -> Vec<Value> {
    let r = api(
        gw.port,
        "GET",
        &format!("/v1/ports/detail?address={mac}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["ports"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansible_openstack_cloud_enrolls_describes_and_deploys_a_node() {
    let mut fleet = Fleet::new("ansible").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 1, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);

    // The node's UUID is the playbook's (the module takes `id`), so the machine's ramdisk agent
    // can be told it before enrollment, as a ramdisk learns it from lookup on real hardware.
    let id = uuid::Uuid::new_v4().to_string();
    let name = "ansible-0";
    sim.agent(
        0,
        &json!({"api_url": gw.url, "node": id, "interval_ms": 200}),
    )
    .await;
    let vars = json!({
        "endpoint": gw.url,
        "sim": sim.url,
        "node_id": id,
        "node_name": name,
        "macs": MACS,
    });

    let first = run_playbook(&fleet, &gw, dir.path(), "ansible_enroll", "first", &vars);
    assert_eq!(
        changed(&first),
        ["deployed", "enrolled", "port_added", "port_changed"],
        "the first run changes what it creates and nothing it only reads"
    );

    // What the modules returned.
    let node = &first["enrolled"]["node"];
    assert_eq!(node["id"], id.as_str(), "{node}");
    assert_eq!(node["provision_state"], "available", "{node}");
    assert_eq!(node["driver_info"]["redfish_password"], "******", "{node}");
    for info in ["node_by_name", "node_by_mac", "all_nodes"] {
        let nodes = first[info]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1, "{info}: {nodes:?}");
        assert_eq!(nodes[0]["id"], id.as_str(), "{info}: {nodes:?}");
        assert_eq!(nodes[0]["name"], name, "{info}: {nodes:?}");
    }
    assert_eq!(first["node_by_unknown_mac"]["nodes"], json!([]));
    let by_mac = first["port_by_mac"]["ports"].as_array().unwrap();
    assert_eq!(by_mac.len(), 1, "{by_mac:?}");
    let port = &by_mac[0];
    assert_eq!(port["address"], MACS[0], "stored in lower case: {port}");
    assert_eq!(port["node_id"], id.as_str(), "{port}");
    assert_eq!(port["physical_network"], "physnet1", "{port}");
    assert_eq!(
        port["local_link_connection"],
        json!({"switch_id": "00:1c:73:00:00:01", "port_id": "Ethernet1/7"}),
        "{port}"
    );
    assert_eq!(port["extra"], json!({"rack": "r12"}), "{port}");
    assert_eq!(port["is_pxe_enabled"], true, "{port}");
    let mut of_node: Vec<&str> = first["ports_of_node"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect();
    of_node.sort();
    assert_eq!(of_node, MACS, "{}", first["ports_of_node"]);

    // The API's own answer.
    let r = api(gw.port, "GET", &format!("/v1/nodes/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = r.json();
    assert_eq!(shown["name"], name, "{shown}");
    assert_eq!(shown["driver"], "redfish", "{shown}");
    assert_eq!(shown["resource_class"], "baremetal-ansible", "{shown}");
    assert_eq!(shown["boot_interface"], "ipxe", "{shown}");
    assert_eq!(shown["deploy_interface"], "direct", "{shown}");
    assert_eq!(shown["network_interface"], "flat", "{shown}");
    assert_eq!(shown["provision_state"], "active", "{shown}");
    assert_eq!(shown["last_error"], Value::Null, "{shown}");
    // The module sends properties as strings (its option types); they are stored as given.
    assert_eq!(
        shown["properties"],
        json!({"cpu_arch": "x86_64", "cpus": "8", "memory_mb": "16384", "local_gb": "100",
               "capabilities": "boot_mode:uefi"}),
        "{shown}"
    );
    assert_eq!(
        shown["instance_info"]["image_source"], "http://images.example/ubuntu.qcow2",
        "{shown}"
    );
    for (i, mac) in MACS.iter().enumerate() {
        // Asked in upper case, found in lower case.
        let found = ports_by_address(&gw, &mac.to_uppercase());
        assert_eq!(found.len(), 1, "{mac}: {found:?}");
        assert_eq!(found[0]["address"], *mac, "{found:?}");
        assert_eq!(found[0]["node_uuid"], id.as_str(), "{found:?}");
        assert_eq!(found[0]["pxe_enabled"], i != 2, "{found:?}");
    }

    // etcd: the spec (the real password, not the mask), the port records and their MAC index.
    let spec = fleet.spec(&id).await;
    let driver_info: Value = serde_json::from_str(&spec.driver_info).unwrap();
    assert_eq!(driver_info["redfish_password"], "password", "{driver_info}");
    assert_eq!(
        spec.name.as_ref().map(|n| n.to_string()).as_deref(),
        Some(name)
    );
    let records = port_records(&fleet, &id).await;
    let mut addresses: Vec<&str> = records.iter().map(|p| p.address.as_str()).collect();
    addresses.sort();
    assert_eq!(addresses, MACS, "{records:?}");
    for p in &records {
        let key = format!("ports/{id}/{}", p.uuid);
        assert_eq!(
            etcd_get(&fleet, &format!("index/port-mac/{}", p.address)).await,
            Some(fleet.inspect.key(&key)),
            "the MAC index of {}",
            p.address
        );
    }
    let described = records.iter().find(|p| p.address == MACS[0]).unwrap();
    assert_eq!(described.physical_network.as_deref(), Some("physnet1"));
    assert!(described.pxe_enabled);
    assert!(
        !records
            .iter()
            .find(|p| p.address == MACS[2])
            .unwrap()
            .pxe_enabled
    );

    // The machine: cleaned and deployed with its agent heard, running from its disk.
    assert!(heartbeats_of(&sim, &id) >= 2, "{:?}", sim.commands(0));
    let view = sim.system(0).await;
    assert_eq!(view["run"]["from"], "Hdd", "{view}");
    assert_eq!(view["power"], "On", "{view}");
    assert_eq!(
        fleet.status(&id).await.unwrap().provision_state,
        ProvisionState::Active
    );

    // The same playbook again: nothing to do but the node's driver_info, which the module
    // compares with the API's masked password and so always sends again (against Ironic too).
    let second = run_playbook(&fleet, &gw, dir.path(), "ansible_enroll", "second", &vars);
    assert_eq!(
        changed(&second),
        ["enrolled"],
        "the second run changes nothing else: {second}"
    );
    let again = api(gw.port, "GET", &format!("/v1/nodes/{id}"), None).json();
    for field in [
        "name",
        "driver",
        "properties",
        "resource_class",
        "provision_state",
        "instance_info",
    ] {
        assert_eq!(again[field], shown[field], "{field} after the second run");
    }
    let spec = fleet.spec(&id).await;
    let driver_info: Value = serde_json::from_str(&spec.driver_info).unwrap();
    assert_eq!(
        driver_info["redfish_password"], "password",
        "the module sent the real password back, not the mask"
    );
    assert_eq!(port_records(&fleet, &id).await, records, "ports untouched");

    // Undeploy (tear down and cleaning), a port removed, then the node with its NICs' ports.
    let cleaned_before = heartbeats_of(&sim, &id);
    let retire = run_playbook(&fleet, &gw, dir.path(), "ansible_retire", "retire", &vars);
    assert_eq!(
        changed(&retire),
        ["port_removed", "removed", "undeployed"],
        "{retire}"
    );
    assert_eq!(retire["node_by_name"]["nodes"], json!([]), "{retire}");
    for r in retire["ports_by_mac"]["results"].as_array().unwrap() {
        assert_eq!(r["ports"], json!([]), "{r}");
    }
    assert!(
        heartbeats_of(&sim, &id) > cleaned_before,
        "the tear down's cleaning heard the agent"
    );
    let r = api(gw.port, "GET", &format!("/v1/nodes/{id}"), None);
    assert_eq!(r.status, 404, "{}", r.body);
    for mac in MACS {
        assert!(ports_by_address(&gw, mac).is_empty(), "{mac}");
        assert_eq!(
            etcd_get(&fleet, &format!("index/port-mac/{mac}")).await,
            None,
            "the MAC index of {mac}"
        );
    }
    assert!(port_records(&fleet, &id).await.is_empty());
    let snapshot = fleet.snapshot().await.unwrap();
    assert!(snapshot.spec(&id).is_none(), "the node's spec is gone");
}

//! The real OpenStack clients against `ferric gateway`: the `baremetal` CLI
//! (python-ironicclient) and openstacksdk, unchanged, driving real `ferric conductor` processes
//! over a real etcd, under `noauth` and under `http_basic`. What the clients print is checked,
//! and so is what etcd holds.

use ferric_testkit::cli::Baremetal;
use ferric_testkit::http::run_venv;
use ferric_testkit::Fleet;
use ferric_testkit::Gateway;
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

const CLI_TIMEOUT: Duration = Duration::from_secs(180);

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Cli<'a> {
    fleet: &'a Fleet,
    gw: &'a Gateway,
    env: Vec<(&'static str, String)>,
    baremetal: Baremetal,
    /// Whether provision verbs use the client's own `--wait`.
    client_waits: bool,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.baremetal.run(args, &env, CLI_TIMEOUT)
    }

    /// A provision verb with its wait. The client polls verbs that clean (`provide`,
    /// `undeploy`) every 10 s after a first look that comes right after the 202, before any
    /// conductor can have acted; the noauth flow runs the client's own `--wait`, the other
    /// flow polls the node itself every 200 ms.
    fn provision(&self, node: &str, verb: &str, want: &str) {
        if self.client_waits {
            self.ok(&["node", verb, node, "--wait", "120"]);
            assert_eq!(self.field(node, "provision_state"), want);
        } else {
            self.ok(&["node", verb, node]);
            self.wait_field(node, "provision_state", want);
        }
    }

    /// Runs `baremetal ...`; fails the test (with all logs) unless it exits 0.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            self.fleet.fail(&format!(
                "`baremetal {}` failed: {}\n{}",
                args.join(" "),
                text(&out),
                self.gw.proc.log_tail(30)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    fn field(&self, node: &str, field: &str) -> String {
        self.ok(&["node", "show", node, "-f", "value", "-c", field])
            .trim()
            .to_string()
    }

    /// Polls `node show` until `field` reads `want` (bounded).
    fn wait_field(&self, node: &str, field: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = self.field(node, field);
            if got == want {
                return;
            }
            if Instant::now() > deadline {
                self.fleet
                    .fail(&format!("{node} {field} stayed {got:?}, wanted {want:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The CLI flow of the issue: create, list with filters and pagination, show, set/unset
/// properties (PATCH), manage, provide, power on/off/soft off, maintenance set/unset with a
/// reason, boot device, delete.
async fn baremetal_flow(fleet: &Fleet, cli: &Cli<'_>, tag: &str) {
    let names: Vec<String> = (0..3).map(|i| format!("{tag}-{i}")).collect();
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut args = vec![
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            n,
            "--property",
            "cpus=4",
            "--driver-info",
            "ipmi_password=hunter2",
            "--driver-info",
            "ipmi_username=admin",
        ];
        if i == 2 {
            args.extend(["--resource-class", "gold"]);
        }
        let node = cli.json(&args);
        assert_eq!(node["provision_state"], "enroll", "{node}");
        assert_eq!(node["driver_info"]["ipmi_password"], "******", "{node}");
        ids.push(node["uuid"].as_str().unwrap().to_string());
    }
    fleet.note(&format!("{tag}: created {ids:?}"));
    // The secret is stored for the conductor, masked for the client.
    let stored = fleet.inspect.snapshot().await.unwrap();
    let spec = stored.spec(&ids[0]).unwrap().unwrap();
    assert!(spec.driver_info.contains("hunter2"));

    let listed = cli.json(&["node", "list"]);
    let mine: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| names.iter().any(|x| n["name"] == x.as_str()))
        .collect();
    assert_eq!(mine.len(), 3, "{listed}");
    let gold = cli.json(&["node", "list", "--resource-class", "gold"]);
    assert_eq!(gold.as_array().unwrap().len(), 1, "{gold}");
    assert_eq!(gold[0]["name"], names[2].as_str());
    let maint = cli.json(&["node", "list", "--maintenance"]);
    assert!(maint
        .as_array()
        .unwrap()
        .iter()
        .all(|n| !names.iter().any(|x| n["name"] == x.as_str())));
    let enrolled = cli.json(&[
        "node",
        "list",
        "--provision-state",
        "enroll",
        "--driver",
        "fake-hardware",
    ]);
    assert!(enrolled.as_array().unwrap().len() >= 3, "{enrolled}");
    // Pagination: pages of one, in name order, continuing from a marker.
    let first = cli.json(&["node", "list", "--limit", "1", "--sort", "name:asc"]);
    assert_eq!(first.as_array().unwrap().len(), 1, "{first}");
    let marker = first[0]["uuid"].as_str().unwrap().to_string();
    let second = cli.json(&[
        "node", "list", "--limit", "1", "--sort", "name:asc", "--marker", &marker,
    ]);
    assert_eq!(second.as_array().unwrap().len(), 1);
    assert!(
        second[0]["name"].as_str() > first[0]["name"].as_str(),
        "{first} then {second}"
    );
    // limit 0 = every page, following `next` links.
    let all = cli.json(&["node", "list", "--limit", "0"]);
    assert_eq!(
        all.as_array().unwrap().len(),
        listed.as_array().unwrap().len()
    );

    let n0 = names[0].as_str();
    let show = cli.json(&["node", "show", n0]);
    assert_eq!(show["uuid"], ids[0].as_str());
    cli.ok(&[
        "node",
        "set",
        n0,
        "--property",
        "memory_mb=2048",
        "--extra",
        "rack=r9",
    ]);
    cli.ok(&["node", "unset", n0, "--property", "cpus"]);
    let show = cli.json(&["node", "show", n0]);
    assert_eq!(
        show["properties"],
        serde_json::json!({"memory_mb": 2048}),
        "{show}"
    );
    assert_eq!(show["extra"]["rack"], "r9");

    cli.ok(&["node", "manage", n0, "--wait", "120"]);
    assert_eq!(cli.field(n0, "provision_state"), "manageable");
    cli.provision(n0, "provide", "available");

    cli.ok(&["node", "power", "on", n0]);
    cli.wait_field(n0, "power_state", "power on");
    cli.ok(&["node", "power", "off", "--soft", n0]);
    cli.wait_field(n0, "power_state", "power off");
    cli.ok(&["node", "power", "on", n0]);
    cli.wait_field(n0, "power_state", "power on");
    cli.ok(&["node", "power", "off", n0]);
    cli.wait_field(n0, "power_state", "power off");

    cli.ok(&["node", "maintenance", "set", n0, "--reason", "fan failure"]);
    assert_eq!(cli.field(n0, "maintenance"), "True");
    assert_eq!(cli.field(n0, "maintenance_reason"), "fan failure");
    cli.ok(&["node", "maintenance", "unset", n0]);
    assert_eq!(cli.field(n0, "maintenance"), "False");
    assert_eq!(cli.field(n0, "maintenance_reason"), "None");

    // The provisioning path to an instance and back (Ferric's `fake` deploy interface).
    cli.ok(&["node", "deploy", n0, "--wait", "120"]);
    assert_eq!(cli.field(n0, "provision_state"), "active");
    cli.provision(n0, "undeploy", "available");

    cli.ok(&["node", "boot", "device", "set", n0, "pxe", "--persistent"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let bd = cli.json(&["node", "boot", "device", "show", n0]);
        if bd["boot_device"] == "pxe" && bd["persistent"] == true {
            break;
        }
        if Instant::now() > deadline {
            fleet.fail(&format!("boot device never became pxe/persistent: {bd}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let history = cli.json(&["node", "history", "list", n0]);
    assert!(!history.as_array().unwrap().is_empty(), "{history}");

    // A refused action: Ironic's message reaches the user, nothing changes.
    let out = cli.run(&["node", "adopt", n0]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("adopt"),
        "{}",
        text(&out)
    );

    // Delete: allowed in available (Ironic's default `allow_deleting_available_nodes`); the
    // others in enroll.
    assert_eq!(cli.field(n0, "provision_state"), "available");
    for n in &names {
        cli.ok(&["node", "delete", n]);
    }
    let left = cli.json(&["node", "list"]);
    assert!(left
        .as_array()
        .unwrap()
        .iter()
        .all(|n| !names.iter().any(|x| n["name"] == x.as_str())));
    let snap = fleet.inspect.snapshot().await.unwrap();
    for id in &ids {
        assert!(snap.spec(id).is_none(), "{id} still in etcd");
    }
}

fn start_fleet_conductors(fleet: &mut Fleet) {
    fleet.start_conductor("c1", &[]);
    fleet.start_conductor("c2", &[]);
}

#[tokio::test]
async fn baremetal_cli_and_openstacksdk_noauth() {
    let mut fleet = Fleet::new("gw-cli-noauth").await;
    start_fleet_conductors(&mut fleet);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let cli = Cli {
        fleet: &fleet,
        gw: &gw,
        env: vec![
            ("OS_ENDPOINT", gw.url.clone()),
            ("OS_AUTH_TYPE", "none".into()),
        ],
        baremetal: Baremetal::start(),
        client_waits: true,
    };
    baremetal_flow(&fleet, &cli, "cli").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_flow.py");
    let out = run_venv("python", &[script, &gw.url, "sdk"], &[], CLI_TIMEOUT);
    if !out.status.success() {
        fleet.fail(&format!(
            "openstacksdk flow failed: {}\n{}",
            text(&out),
            gw.proc.log_tail(30)
        ));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    // The OpenAPI document the gateway serves is valid OpenAPI (checked by an independent
    // validator).
    let check = format!(
        "import json, urllib.request; from openapi_spec_validator import validate; validate(json.load(urllib.request.urlopen('{}/v1/ferric/openapi.json'))); print('valid')",
        gw.url
    );
    let out = run_venv("python", &["-c", &check], &[], CLI_TIMEOUT);
    assert!(
        out.status.success(),
        "openapi.json is not valid: {}",
        text(&out)
    );
}

#[tokio::test]
async fn baremetal_cli_and_openstacksdk_http_basic() {
    let mut fleet = Fleet::new("gw-cli-basic").await;
    start_fleet_conductors(&mut fleet);
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    std::fs::write(&htpasswd, format!("# users of the test\nops:{hash}\n")).unwrap();
    let gw = Gateway::start(
        &fleet,
        dir.path(),
        "gw-basic",
        &[
            "--auth",
            "http_basic",
            "--auth-file",
            &htpasswd.to_string_lossy(),
        ],
    );
    let env = |password: &str| {
        vec![
            ("OS_ENDPOINT", gw.url.clone()),
            ("OS_AUTH_TYPE", "http_basic".to_string()),
            ("OS_USERNAME", "ops".to_string()),
            ("OS_PASSWORD", password.to_string()),
        ]
    };
    let wrong = Cli {
        fleet: &fleet,
        gw: &gw,
        env: env("guess"),
        baremetal: Baremetal::start(),
        client_waits: false,
    };
    let out = wrong.run(&["node", "list"]);
    assert!(
        !out.status.success(),
        "a wrong password was accepted: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );
    let cli = Cli {
        fleet: &fleet,
        gw: &gw,
        env: env("s3cret"),
        baremetal: Baremetal::start(),
        client_waits: false,
    };
    baremetal_flow(&fleet, &cli, "basic").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_flow.py");
    let out = run_venv(
        "python",
        &[script, &gw.url, "sdkb", "ops", "s3cret"],
        &[],
        CLI_TIMEOUT,
    );
    if !out.status.success() {
        fleet.fail(&format!(
            "openstacksdk flow failed: {}\n{}",
            text(&out),
            gw.proc.log_tail(30)
        ));
    }
}

//! The web dashboard in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/dashboard/dashboard.test.mjs`, run with `node --test`), against a cluster of real
//! processes: etcd, two conductors, a gateway with token auth (an admin and a reader token) and
//! the simulated fleet (Redfish BMCs whose command log is the independent record of what the
//! page's actions did, and serial consoles that echo what is typed).
//!
//! This file builds the cluster and the nodes the browser tests need, then runs them:
//! 1,000 nodes (10 on the simulated BMCs with serial consoles, the rest fake hardware); one
//! with its console enabled; one whose description and maintenance reason are HTML and script
//! (they must render as text); one with a long history (it must page, 25 entries at a time). Screenshots of
//! every page are kept in `target/dashboard-screenshots/`. The gateway is restarted on its port
//! whenever it dies: the browser tests SIGKILL it to see the page resume its event stream where
//! it stopped and its console reconnect.

use ferric_cluster::{Cluster, EtcdConfig};
use ferric_model::{now_ms, NodeId, NodeName, NodeSpec};
use ferric_testkit::http::http;
use ferric_testkit::{Fleet, Gateway, Sim};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "dashboard-admin-token";
const READER: &str = "dashboard-reader-token";
const V: (&str, &str) = ("X-OpenStack-Ironic-API-Version", "1.95");
const NODES: usize = 1000;
const SIM_NODES: usize = 10;

fn call(gw: &Gw, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let body = body.map(|b| b.to_string());
    let r = http(
        gw.port,
        method,
        path,
        &[("Authorization", auth.as_str()), V],
        body.as_deref().map(str::as_bytes),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn ok(gw: &Gw, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, doc) = call(gw, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {doc}"
    );
    doc
}

/// The gateway's address (the process behind it may be restarted).
struct Gw {
    port: u16,
}

/// Keeps a gateway running on one port: when its process dies (the browser tests SIGKILL it),
/// starts another on the same port and writes its pid to `pid_file`.
struct Restarter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Gateway>>,
}

impl Restarter {
    fn start(
        first: Gateway,
        etcd: String,
        prefix: String,
        dir: PathBuf,
        args: Vec<String>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pid_file = dir.join("gateway.pid");
        std::fs::write(&pid_file, first.proc.pid().to_string()).unwrap();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut gw = first;
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                if !gw.proc.is_running() {
                    n += 1;
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let name = format!("g1-restart{n}");
                    gw = Gateway::start_at(&etcd, &prefix, &dir, &name, gw.port, &args);
                    std::fs::write(&pid_file, gw.proc.pid().to_string()).unwrap();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            gw
        });
        Restarter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Restarter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The gateway it returns is dropped here: killed by pid and reaped.
            let _ = t.join();
        }
    }
}

/// Where playwright-core is installed (`scripts/install-deps.sh`).
fn node_modules() -> PathBuf {
    std::env::var_os("FERRIC_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| ferric_testkit::workspace_root().join("target/node/node_modules"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_browser() {
    let modules = node_modules();
    assert!(
        modules.join("playwright-core").is_dir(),
        "playwright-core is not installed in {} (scripts/install-deps.sh installs it)",
        modules.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium} (scripts/install-deps.sh installs Debian's)"
    );

    let mut fleet = Fleet::new("dashboard").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(dir.path(), SIM_NODES, &[]).await;
    for c in ["c1", "c2"] {
        fleet.start_conductor(c, &["--lease-ttl", "3"]);
    }
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{ADMIN} admin\n{READER} reader\n")).unwrap();
    let tokens = tokens.display().to_string();
    let gw_args = vec![
        "--auth".to_string(),
        "token".to_string(),
        "--auth-file".to_string(),
        tokens,
    ];
    let first = Gateway::start(
        &fleet,
        dir.path(),
        "g1",
        &gw_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let gw = Gw { port: first.port };
    let url = first.url.clone();
    let _restarter = Restarter::start(
        first,
        fleet.url(),
        fleet.prefix.clone(),
        dir.path().to_path_buf(),
        gw_args,
    );

    // The fleet: SIM_NODES redfish nodes with the sim's serial consoles, the rest fake.
    let mut cfg = EtcdConfig::new(&fleet.url());
    cfg.prefix = fleet.prefix.clone();
    let cluster = Cluster::connect(&cfg).await.expect("connect to etcd");
    let now = now_ms();
    let specs: Vec<NodeSpec> = (0..NODES)
        .map(|i| {
            let mut s = if i < SIM_NODES {
                let mut s = NodeSpec::new(NodeId::new_random(), "redfish", now);
                s.driver_info = sim.driver_info(i, "password");
                s.interfaces
                    .insert("console_interface".into(), "ferric-sim".into());
                s
            } else {
                NodeSpec::new(NodeId::new_random(), "fake-hardware", now)
            };
            s.name = NodeName::parse(&format!("dash-{i:04}")).ok();
            s.interfaces
                .insert("deploy_interface".into(), "fake".into());
            s
        })
        .collect();
    let ids: Vec<String> = cluster
        .create_nodes(specs)
        .await
        .expect("create nodes")
        .into_iter()
        .map(|r| r.expect("node created").to_string())
        .collect();
    fleet
        .wait_until(Duration::from_secs(60), "every node is owned", async || {
            let (_, s) = call(&gw, "GET", "/v1/ferric/summary", None);
            (s["nodes"] == NODES && s["unowned"] == 0)
                .then_some(())
                .ok_or_else(|| s.to_string())
        })
        .await;

    // The console node: on, console enabled, serving.
    let console = ids[0].clone();
    ok(
        &gw,
        "PUT",
        &format!("/v1/nodes/{console}/states/power"),
        Some(json!({"target": "power on"})),
    );
    fleet
        .wait_until(
            Duration::from_secs(30),
            "the console node is on",
            async || {
                let (_, n) = call(&gw, "GET", &format!("/v1/nodes/{console}"), None);
                (n["power_state"] == "power on" && n["target_power_state"].is_null())
                    .then_some(())
                    .ok_or_else(|| n.to_string())
            },
        )
        .await;
    ok(
        &gw,
        "PUT",
        &format!("/v1/nodes/{console}/states/console"),
        Some(json!({"enabled": true})),
    );
    fleet
        .wait_until(
            Duration::from_secs(30),
            "the console is enabled",
            async || {
                let (_, c) = call(
                    &gw,
                    "GET",
                    &format!("/v1/nodes/{console}/states/console"),
                    None,
                );
                (c["console_enabled"] == true && !c["console_info"].is_null())
                    .then_some(())
                    .ok_or_else(|| c.to_string())
            },
        )
        .await;

    // HTML and script where a careless page would interpret them.
    let xss = ids[SIM_NODES].clone();
    ok(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{xss}"),
        Some(
            json!([{"op": "add", "path": "/description", "value": "<img src=x onerror=window.__xss=1>"}]),
        ),
    );
    ok(
        &gw,
        "PUT",
        &format!("/v1/nodes/{xss}/maintenance"),
        Some(json!({"reason": "<script>window.__xss=2</script>"})),
    );

    // A long history: maintenance flips (the owner records each flip it sees; flips closer
    // together than its watch are seen as one, so fewer entries than flips).
    let history = ids[SIM_NODES + 1].clone();
    for i in 0..110 {
        ok(
            &gw,
            "PUT",
            &format!("/v1/nodes/{history}/maintenance"),
            Some(json!({"reason": format!("flip {i}")})),
        );
        ok(
            &gw,
            "DELETE",
            &format!("/v1/nodes/{history}/maintenance"),
            None,
        );
    }
    fleet
        .wait_until(
            Duration::from_secs(60),
            "over 200 history entries",
            async || {
                let (_, h) = call(
                    &gw,
                    "GET",
                    &format!("/v1/nodes/{history}/history?limit=1000"),
                    None,
                );
                let n = h["history"].as_array().map_or(0, Vec::len);
                (n >= 60).then_some(()).ok_or(format!("{n} entries"))
            },
        )
        .await;

    // The node list's search finds a node by a port's MAC (any case) and by a name's part.
    let with_port = ids[SIM_NODES + 2].clone();
    ok(
        &gw,
        "POST",
        "/v1/ports",
        Some(json!({"node_uuid": with_port, "address": "52:54:00:aa:bb:cc"})),
    );
    fleet
        .wait_until(
            Duration::from_secs(10),
            "the MAC search finds the node",
            async || {
                let (_, found) = call(&gw, "GET", "/v1/ferric/nodes?q=52:54:00:AA:BB:CC", None);
                (found["total"] == 1 && found["nodes"][0]["uuid"] == with_port.as_str())
                    .then_some(())
                    .ok_or_else(|| found.to_string())
            },
        )
        .await;
    let (_, found) = call(&gw, "GET", "/v1/ferric/nodes?q=DASH-099&limit=5", None);
    assert_eq!(found["total"], 10, "{found}");
    assert_eq!(found["nodes"].as_array().map(Vec::len), Some(5), "{found}");
    assert!(found["next"].is_string(), "{found}");

    let nodes: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "uuid": id,
                "name": format!("dash-{i:04}"),
                "system": (i < SIM_NODES).then(|| format!("sim-{i}")),
            })
        })
        .collect();
    let nodes_json = dir.path().join("nodes.json");
    std::fs::write(&nodes_json, serde_json::to_vec(&nodes).unwrap()).unwrap();
    let pids = ["c1", "c2"]
        .map(|c| format!("{c}={}", fleet.conductor(c).pid()))
        .join(",");
    let shots = ferric_testkit::workspace_root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let script = ferric_testkit::workspace_root().join("tests/dashboard/dashboard.test.mjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("CHROMIUM", &chromium)
        .env("FERRIC_URL", &url)
        .env("FERRIC_BIN", ferric_testkit::fleet::ferric_bin())
        .env("ETCD_URL", fleet.url())
        .env("FERRIC_PREFIX", &fleet.prefix)
        .env("GATEWAY_PID_FILE", dir.path().join("gateway.pid"))
        .env("FERRIC_ADMIN_TOKEN", ADMIN)
        .env("FERRIC_READER_TOKEN", READER)
        .env("SIM_URL", &sim.url)
        .env("NODES_JSON", &nodes_json)
        .env("CONSOLE_NODE", &console)
        .env("CONDUCTOR_PIDS", &pids)
        .env("XSS_NODE", &xss)
        .env("HISTORY_NODE", &history)
        .env("SCREENSHOTS", &shots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("run node");
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .unwrap_or_else(|_| fleet.fail("the browser tests took over 10 minutes"))
        .expect("node ran");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    fleet.ensure(out.status.success(), || {
        format!("the browser tests failed:\n{text}")
    });
    // node --test reports what ran: the browser tests must not have been skipped.
    fleet.ensure(
        text.contains("# fail 0") && !text.contains("# pass 0"),
        || format!("unexpected test report:\n{text}"),
    );
}

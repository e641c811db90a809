//! The deploy agent of simulated machines, over real sockets: inspection data and heartbeats reach
//! a tiny Ironic API stand-in on 127.0.0.1:0 that records what it got, only while a system runs a
//! PXE boot; power off, restarts, `stop_after`, `fail_after` and `inspect` are checked in what
//! that API received and in the simulator's command log. Intervals are short and real; every wait
//! is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
mod support;

use ferric_sim::{LogOp, SimConfig, SimState};
use ferric_testkit::serve::Served;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

const INTERVAL_MS: u64 = 50;
const AUTH: &str = "Basic YWRtaW46cGFzc3dvcmQ=";

/// One heartbeat or inspection post as the API received it.
#[derive(Debug, Clone)]
struct Got {
    /// A heartbeat's node; empty for an inspection post (its request names none).
    node: String,
    api_version: Option<String>,
    user_agent: Option<String>,
    content_type: Option<String>,
    body: Value,
}

impl Got {
    fn new(node: String, headers: &HeaderMap, body: Value) -> Got {
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Got {
            node,
            api_version: h("x-openstack-ironic-api-version"),
            user_agent: h("user-agent"),
            content_type: h("content-type"),
            body,
        }
    }
}

type Record = Arc<Mutex<Vec<Got>>>;

/// The node uuid the stand-in names when it accepts inspection data.
const INSPECTED: &str = "11111111-2222-3333-4444-555555555555";

/// The Ironic API stand-in: records every heartbeat (answers `status`) and every inspection post
/// (answers the inspection status given, with Ironic's bodies).
struct Api {
    url: String,
    got: Record,
    inspections: Record,
    /// Lookups: the query string as `node`, no body.
    lookups: Record,
    _stop: oneshot::Sender<()>,
}

/// The token the stand-in issues to the first lookup (later ones get `******`, as Ironic).
const ISSUED: &str = "issued-by-the-stand-in";

/// Ironic's answer to an inspection post with status `status`.
fn inspection_answer(status: StatusCode) -> (StatusCode, Json<Value>) {
    let body = if status == StatusCode::ACCEPTED {
        json!({ "uuid": INSPECTED })
    } else {
        let fault =
            json!({"faultstring": format!("simulated {}", status.as_u16()), "debuginfo": null});
        json!({ "error_message": fault.to_string() })
    };
    (status, Json(body))
}

impl Api {
    /// Heartbeats answered `status`, inspection posts 404 (no node waits for inspection).
    async fn start(status: StatusCode) -> Api {
        Api::with_inspection(status, StatusCode::NOT_FOUND).await
    }

    async fn with_inspection(status: StatusCode, inspection: StatusCode) -> Api {
        let got: Record = Arc::default();
        let inspections: Record = Arc::default();
        let lookups: Record = Arc::default();
        let app = Router::new()
            .route(
                "/v1/heartbeat/{node}",
                post(
                    move |State(got): State<Record>,
                          Path(node): Path<String>,
                          headers: HeaderMap,
                          Json(body): Json<Value>| async move {
                        got.lock().unwrap().push(Got::new(node, &headers, body));
                        status
                    },
                ),
            )
            .with_state(got.clone())
            .route(
                "/v1/continue_inspection",
                post({
                    let inspections = inspections.clone();
                    move |headers: HeaderMap, Json(body): Json<Value>| async move {
                        inspections
                            .lock()
                            .unwrap()
                            .push(Got::new(String::new(), &headers, body));
                        inspection_answer(inspection)
                    }
                }),
            )
            .route(
                "/v1/lookup",
                axum::routing::get({
                    let lookups = lookups.clone();
                    move |headers: HeaderMap, uri: axum::http::Uri| async move {
                        let mut l = lookups.lock().unwrap();
                        let token = if l.is_empty() { ISSUED } else { "******" };
                        let query = uri.query().unwrap_or("").to_string();
                        l.push(Got::new(query, &headers, Value::Null));
                        Json(json!({"node": {"uuid": "n"}, "config": {"agent_token": token}}))
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Api {
            url,
            got,
            inspections,
            lookups,
            _stop: stop,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn inspections(&self) -> Vec<Got> {
        self.inspections.lock().unwrap().clone()
    }

    fn lookups(&self) -> Vec<Got> {
        self.lookups.lock().unwrap().clone()
    }

    fn count(&self, node: &str) -> usize {
        self.got().iter().filter(|g| g.node == node).count()
    }
}

/// The simulator on a real socket, with a small client for its Redfish and control APIs.
struct Sim {
    base: String,
    state: Arc<SimState>,
    http: reqwest::Client,
    served: Served,
}

impl Sim {
    async fn start(systems: usize) -> Sim {
        Sim::start_logged(systems, None).await
    }

    /// With the command log also in the file `log`.
    async fn start_logged(systems: usize, log: Option<std::path::PathBuf>) -> Sim {
        let support::InProcess { state, served, .. } = support::start(SimConfig {
            systems,
            log_path: log,
            // Restarts complete quickly.
            behaviour: ferric_sim::Behaviour {
                graceful_shutdown_secs: Some(0.05),
                ..Default::default()
            },
            ..SimConfig::default()
        })
        .await;
        Sim {
            base: served.url(),
            state,
            http: reqwest::Client::new(),
            served,
        }
    }

    async fn stop(mut self) {
        self.served.stop(WAIT, "the simulator stops").await;
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the control API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn agent(&self, id: &str, body: Value) {
        let (status, v) = self
            .control(
                reqwest::Method::PUT,
                &format!("/sim/systems/{id}/agent"),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }

    async fn view(&self, id: &str) -> Value {
        let (status, v) = self
            .control(reqwest::Method::GET, &format!("/sim/systems/{id}"), None)
            .await;
        assert_eq!(status, 200);
        v
    }

    async fn redfish(&self, method: reqwest::Method, path: &str, body: Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", AUTH)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{path} {body}");
    }

    async fn boot_override(&self, id: &str, target: &str, enabled: &str) {
        self.redfish(
            reqwest::Method::PATCH,
            &format!("/redfish/v1/Systems/{id}"),
            json!({"Boot": {"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled}}),
        )
        .await;
    }

    async fn reset(&self, id: &str, reset: &str) {
        self.redfish(
            reqwest::Method::POST,
            &format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
            json!({ "ResetType": reset }),
        )
        .await;
    }

    /// Heartbeat entries of the command log for `system`.
    fn heartbeats(&self, system: &str) -> Vec<ferric_sim::LogEntry> {
        self.entries(LogOp::Heartbeat, system)
    }

    /// Inspection entries of the command log for `system`.
    fn inspections(&self, system: &str) -> Vec<ferric_sim::LogEntry> {
        self.entries(LogOp::Inspection, system)
    }

    fn entries(&self, op: LogOp, system: &str) -> Vec<ferric_sim::LogEntry> {
        self.state
            .log()
            .since(0)
            .into_iter()
            .filter(|e| e.op == op && e.system == system)
            .collect()
    }
}

/// Polls `check` every 10 ms until it holds; panics after `within`.
async fn until<F: Fn() -> bool>(within: Duration, what: &str, check: F) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Waits until `id`'s agent neither runs nor has a heartbeat in flight: its counts are final.
async fn agent_done(sim: &Sim, id: &str) {
    until(
        WAIT,
        "the agent stopped and its last heartbeat was answered",
        || {
            sim.state
                .view(id)
                .unwrap()
                .agent
                .is_some_and(|a| !a.facts.running && !a.facts.in_flight)
        },
    )
    .await;
}

/// Waits `n` intervals and a margin: long enough that a running agent would have sent.
async fn quiet_period() {
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 6)).await;
}

fn agent_body(api: &Api, node: &str) -> Value {
    json!({ "api_url": api.url, "node": node, "interval_ms": INTERVAL_MS })
}

#[tokio::test]
async fn the_agent_heartbeats_only_while_the_system_runs_a_pxe_boot() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(2).await;
    sim.agent("sim-0", agent_body(&api, "node-0")).await;
    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["running"], false);
    assert_eq!(v["agent"]["node"], "node-0");

    // Booting from disk: no agent.
    sim.reset("sim-0", "On").await;
    quiet_period().await;
    assert_eq!(api.count("node-0"), 0);
    assert_eq!(sim.view("sim-0").await["agent"]["running"], false);

    // A PXE boot (once): the agent heartbeats, with the token the view shows.
    sim.boot_override("sim-0", "Pxe", "Once").await;
    sim.reset("sim-0", "ForceRestart").await;
    until(WAIT, "three heartbeats arrived", || {
        api.count("node-0") >= 3
    })
    .await;
    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["running"], true, "{v}");
    assert_eq!(v["run"]["from"], "Pxe");
    assert_eq!(
        v["boot"]["enabled"], "Disabled",
        "the once override was consumed"
    );
    let token = v["agent"]["active_token"]
        .as_str()
        .expect("a token")
        .to_string();
    assert_eq!(token, ISSUED, "the token its lookup was issued");
    let got = api.got();
    for g in &got {
        assert_eq!(g.api_version.as_deref(), Some("1.72"));
        assert_eq!(g.user_agent.as_deref(), Some("ferric-sim-agent"));
        assert_eq!(g.body["agent_token"], token.as_str());
        // The simulator's own command API of the system.
        assert_eq!(g.body["callback_url"], format!("{}/agent/sim-0", sim.base));
        assert!(g.body["agent_version"]
            .as_str()
            .is_some_and(|s| s.starts_with("ferric-sim")));
        assert!(g.body.get("agent_status").is_none());
    }
    assert_eq!(v["agent"]["last_status"], 202);

    // Power off: heartbeats stop; what was sent is in the log, as the API saw it.
    sim.reset("sim-0", "ForceOff").await;
    // A heartbeat in flight at the power off still lands; after that, nothing.
    agent_done(&sim, "sim-0").await;
    let after_off = api.count("node-0");
    quiet_period().await;
    assert_eq!(api.count("node-0"), after_off, "heartbeats after power off");
    let log = sim.heartbeats("sim-0");
    assert_eq!(log.len(), after_off, "the log and the API agree");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, Some(i as u64 + 1));
        assert_eq!(e.node.as_deref(), Some("node-0"));
        assert_eq!(e.status, Some(202));
        assert_eq!(e.method, "POST");
        assert_eq!(e.path, "/v1/heartbeat/node-0");
        assert_eq!(e.client.as_deref(), Some("ferric-sim-agent"));
    }
    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["heartbeats_sent"], after_off as u64);

    // The once override is gone: the next power on boots from disk.
    sim.reset("sim-0", "On").await;
    quiet_period().await;
    assert_eq!(api.count("node-0"), after_off);
    // The other system never had an agent.
    assert!(sim.heartbeats("sim-1").is_empty());
}

#[tokio::test]
async fn a_restart_into_pxe_starts_a_fresh_agent_and_into_disk_stops_it() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(1).await;
    sim.agent("sim-0", agent_body(&api, "n0")).await;
    sim.boot_override("sim-0", "Pxe", "Continuous").await;
    sim.reset("sim-0", "On").await;
    until(WAIT, "two heartbeats", || api.count("n0") >= 2).await;
    let first_token = sim.view("sim-0").await["agent"]["active_token"].clone();

    // A graceful restart (completes after 50 ms) boots PXE again: new token, count from 1.
    sim.reset("sim-0", "GracefulRestart").await;
    until(WAIT, "a heartbeat of the second boot", || {
        api.got()
            .iter()
            .any(|g| g.body["agent_token"] != first_token)
    })
    .await;
    let v = sim.view("sim-0").await;
    assert_eq!(v["run"]["boot"], 2);
    assert_ne!(v["agent"]["active_token"], first_token);
    let firsts = sim
        .heartbeats("sim-0")
        .iter()
        .filter(|e| e.seq == Some(1))
        .count();
    assert_eq!(firsts, 2, "the count restarts with the boot");

    // A restart into disk: the agent stops.
    sim.boot_override("sim-0", "Hdd", "Continuous").await;
    sim.reset("sim-0", "ForceRestart").await;
    agent_done(&sim, "sim-0").await;
    let n = api.count("n0");
    quiet_period().await;
    assert_eq!(api.count("n0"), n);
    assert_eq!(sim.view("sim-0").await["run"]["from"], "Hdd");
}

#[tokio::test]
async fn stop_after_hangs_the_ramdisk_without_powering_off() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(1).await;
    let mut body = agent_body(&api, "n0");
    body["stop_after"] = json!(3);
    body["token"] = json!("fixed-token");
    sim.agent("sim-0", body).await;
    sim.boot_override("sim-0", "Pxe", "Once").await;
    sim.reset("sim-0", "On").await;
    until(WAIT, "the agent stopped by itself", || {
        sim.state
            .view("sim-0")
            .unwrap()
            .agent
            .is_some_and(|a| a.facts.heartbeats_sent == 3 && !a.facts.running)
    })
    .await;
    quiet_period().await;
    assert_eq!(api.count("n0"), 3);
    assert_eq!(sim.heartbeats("sim-0").len(), 3);
    assert!(api
        .got()
        .iter()
        .all(|g| g.body["agent_token"] == "fixed-token"));
    let v = sim.view("sim-0").await;
    assert_eq!(v["power"], "On", "still powered");
    assert_eq!(v["agent"]["active_token"], "fixed-token");
}

#[tokio::test]
async fn fail_after_reports_an_agent_error_from_the_next_heartbeat_on() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(1).await;
    let mut body = agent_body(&api, "n0");
    body["fail_after"] = json!(2);
    body["stop_after"] = json!(4);
    sim.agent("sim-0", body).await;
    sim.boot_override("sim-0", "Pxe", "Once").await;
    sim.reset("sim-0", "On").await;
    until(WAIT, "four heartbeats", || api.count("n0") == 4).await;
    let got = api.got();
    for g in &got[..2] {
        assert!(g.body.get("agent_status").is_none(), "{}", g.body);
    }
    for g in &got[2..] {
        assert_eq!(g.body["agent_status"], "error");
        assert_eq!(g.body["agent_status_message"], "simulated agent failure");
    }
    until(WAIT, "the log has all four", || {
        sim.heartbeats("sim-0").len() == 4
    })
    .await;
    let actions: Vec<Option<String>> = sim
        .heartbeats("sim-0")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [None, None, Some("error".into()), Some("error".into())]
    );
}

#[tokio::test]
async fn errors_and_refusals_are_recorded_as_the_last_status() {
    let api = Api::start(StatusCode::NOT_FOUND).await;
    let sim = Sim::start(2).await;
    sim.agent("sim-0", agent_body(&api, "n0")).await;
    // Nothing listens on this port (bound, then closed).
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    sim.agent(
        "sim-1",
        json!({"api_url": dead_url, "node": "n1", "interval_ms": INTERVAL_MS}),
    )
    .await;
    for id in ["sim-0", "sim-1"] {
        sim.boot_override(id, "Pxe", "Once").await;
        sim.reset(id, "On").await;
    }
    until(WAIT, "both agents sent", || {
        !sim.heartbeats("sim-0").is_empty() && !sim.heartbeats("sim-1").is_empty()
    })
    .await;
    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["last_status"], 404);
    let v = sim.view("sim-1").await;
    let err = v["agent"]["last_status"].as_str().expect("an error text");
    assert!(err.contains("connect"), "{err}");
    let e = &sim.heartbeats("sim-1")[0];
    assert_eq!(e.status, None);
    assert!(e.detail.as_deref().is_some_and(|d| d.contains("connect")));
    assert_eq!(sim.heartbeats("sim-0")[0].status, Some(404));
    // Failing heartbeats do not stop the agent.
    assert_eq!(v["agent"]["running"], true);
}

#[tokio::test]
async fn agent_configuration_is_validated_and_can_be_removed() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(3).await;
    for bad in [
        json!({"api_url": "ftp://127.0.0.1/", "node": "n"}),
        json!({"api_url": "http://", "node": "n"}),
        json!({"api_url": api.url, "node": "n", "interval_ms": 10}),
        json!({"api_url": api.url, "node": "n", "interval_ms": 60_001}),
        json!({"api_url": api.url, "node": "n", "intervall_ms": 100}),
        json!({"api_url": api.url}),
    ] {
        let (status, v) = sim
            .control(
                reqwest::Method::PUT,
                "/sim/systems/sim-0/agent",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (status, _) = sim
        .control(
            reqwest::Method::PUT,
            "/sim/systems/nope/agent",
            Some(agent_body(&api, "n")),
        )
        .await;
    assert_eq!(status, 404);
    assert!(sim.view("sim-0").await["agent"].is_null());

    // The fleet-wide form, all or nothing.
    let (status, _) = sim
        .control(
            reqwest::Method::PUT,
            "/sim/agents",
            Some(json!({"api_url": api.url, "interval_ms": INTERVAL_MS,
                        "nodes": {"sim-0": "a", "sim-9": "b"}})),
        )
        .await;
    assert_eq!(status, 404);
    assert!(sim.view("sim-0").await["agent"].is_null());
    let (status, v) = sim
        .control(
            reqwest::Method::PUT,
            "/sim/agents",
            Some(json!({"api_url": api.url, "interval_ms": INTERVAL_MS,
                        "nodes": {"sim-0": "a", "sim-2": "c"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["systems"], 2);
    assert_eq!(sim.view("sim-2").await["agent"]["node"], "c");
    assert!(sim.view("sim-1").await["agent"].is_null());

    // Removing a running agent stops it at once.
    sim.boot_override("sim-2", "Pxe", "Once").await;
    sim.reset("sim-2", "On").await;
    until(WAIT, "sim-2 heartbeats", || api.count("c") >= 1).await;
    let (status, _) = sim
        .control(reqwest::Method::DELETE, "/sim/systems/sim-2/agent", None)
        .await;
    assert_eq!(status, 204);
    // At most the one heartbeat in flight at the DELETE lands; the agent sends no more.
    let n = api.count("c");
    quiet_period().await;
    assert!(
        api.count("c") <= n + 1,
        "heartbeats after the agent was removed"
    );
    assert!(sim.view("sim-2").await["agent"].is_null());

    // Configuring an agent on a system already running the ramdisk starts it now.
    sim.agent("sim-2", agent_body(&api, "c2")).await;
    until(WAIT, "the new agent heartbeats", || api.count("c2") >= 1).await;
    let (status, _) = sim
        .control(reqwest::Method::DELETE, "/sim/agents", None)
        .await;
    assert_eq!(status, 204);
    assert!(sim.view("sim-0").await["agent"].is_null());
}

#[tokio::test]
async fn agents_end_when_the_simulator_stops() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(1).await;
    sim.agent("sim-0", agent_body(&api, "n0")).await;
    sim.boot_override("sim-0", "Pxe", "Continuous").await;
    // Powered on from inside (the control API) boots like a Redfish power on.
    let (status, _) = sim
        .control(
            reqwest::Method::PUT,
            "/sim/systems/sim-0/behaviour",
            Some(json!({"power": "On"})),
        )
        .await;
    assert_eq!(status, 200);
    until(WAIT, "heartbeats", || api.count("n0") >= 2).await;

    let state = sim.state.clone();
    sim.stop().await;
    // At most the one heartbeat in flight at the stop lands.
    let n = api.count("n0");
    quiet_period().await;
    assert!(api.count("n0") <= n + 1, "an agent outlived the simulator");
    // A heartbeat cut off by the stop is not in the log; every logged one reached the API.
    let logged = state
        .log()
        .since(0)
        .iter()
        .filter(|e| e.op == LogOp::Heartbeat)
        .count();
    assert!(logged >= 2 && logged <= api.count("n0"));
}

#[tokio::test]
async fn a_whole_fleet_is_configured_in_one_request_and_from_the_library() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(5_000).await;
    let spec = ferric_sim::FleetAgentSpec {
        api_url: api.url.clone(),
        interval_ms: 1_000,
        token: None,
        stop_after: None,
        fail_after: None,
        nodes: (0..5_000)
            .map(|i| {
                (
                    format!("sim-{i}"),
                    format!("00000000-0000-0000-0000-{i:012}"),
                )
            })
            .collect(),
    };
    // About 300 KB: over the limit of other control bodies.
    assert!(serde_json::to_vec(&spec).unwrap().len() > ferric_sim::MAX_BODY_BYTES);
    let n = ferric_sim::put_agents(&sim.base, &spec)
        .await
        .expect("configured");
    assert_eq!(n, 5_000);
    let v = sim.view("sim-4999").await;
    assert_eq!(v["agent"]["node"], "00000000-0000-0000-0000-000000004999");
    assert_eq!(v["agent"]["running"], false, "off systems run no agent");

    let mut bad = spec.clone();
    bad.interval_ms = 1;
    match ferric_sim::put_agents(&sim.base, &bad).await {
        Err(ferric_sim::RemoteError::Refused { status: 400, .. }) => {}
        other => panic!("expected a 400, got {other:?}"),
    }
    // In-process, as `ferric sim --agents` does.
    let mut one = spec.clone();
    one.nodes = [("sim-1".to_string(), "x".to_string())].into();
    assert_eq!(sim.state.configure_agents(&one).unwrap(), 1);
    assert_eq!(sim.view("sim-1").await["agent"]["node"], "x");
    one.nodes = [("sim-5000".to_string(), "x".to_string())].into();
    assert!(sim.state.configure_agents(&one).is_err());
}

const GIB: u64 = 1 << 30;

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

/// Checks `data` is IPA's inspection data for the system `view` shows (its NICs, its inventory).
fn assert_ipa_shape(data: &Value, view: &Value) {
    assert_eq!(
        keys(data),
        sorted(&[
            "inventory",
            "root_disk",
            "boot_interface",
            "configuration",
            "error"
        ])
    );
    let inv = &data["inventory"];
    assert_eq!(
        keys(inv),
        sorted(&[
            "interfaces",
            "cpu",
            "disks",
            "memory",
            "bmc_address",
            "bmc_v6address",
            "system_vendor",
            "boot",
            "hostname"
        ])
    );
    assert_eq!(inv, &view["inventory"], "the view shows what is sent");
    let nics = view["nics"].as_array().expect("the view lists NICs");
    assert_eq!(nics.len(), 2);
    let ifaces = inv["interfaces"].as_array().unwrap();
    let sent: Vec<&Value> = ifaces.iter().map(|i| &i["mac_address"]).collect();
    let shown: Vec<&Value> = nics.iter().map(|n| &n["mac"]).collect();
    assert_eq!(sent, shown);
    for i in ifaces {
        assert_eq!(
            keys(i),
            sorted(&[
                "name",
                "mac_address",
                "ipv4_address",
                "ipv6_address",
                "has_carrier",
                "lldp",
                "vendor",
                "product",
                "client_id",
                "biosdevname",
                "speed_mbps",
                "pci_address",
                "driver"
            ])
        );
    }
    let pxe = nics.iter().find(|n| n["pxe"] == true).expect("a PXE NIC");
    assert_eq!(pxe["name"], "eth0");
    assert_eq!(inv["boot"]["pxe_interface"], pxe["mac"]);
    assert_eq!(data["boot_interface"], pxe["mac"]);
    assert_eq!(inv["boot"]["current_boot_mode"], "uefi");
    assert_eq!(
        keys(&inv["cpu"]),
        sorted(&[
            "model_name",
            "frequency",
            "count",
            "architecture",
            "flags",
            "socket_count"
        ])
    );
    assert_eq!(keys(&inv["memory"]), sorted(&["total", "physical_mb"]));
    let disks = inv["disks"].as_array().unwrap();
    for d in disks {
        assert_eq!(
            keys(d),
            sorted(&[
                "name",
                "model",
                "size",
                "rotational",
                "wwn",
                "serial",
                "vendor",
                "wwn_with_extension",
                "wwn_vendor_extension",
                "hctl",
                "by_path"
            ])
        );
    }
    assert_eq!(data["root_disk"], disks[0], "the smallest disk is the root");
    assert_eq!(
        data["configuration"],
        json!({"collectors": ["default"], "managers": []})
    );
    assert_eq!(data["error"], Value::Null);
}

#[tokio::test]
async fn the_agent_posts_ipas_inspection_data_once_per_pxe_boot_then_heartbeats() {
    let api = Api::with_inspection(StatusCode::ACCEPTED, StatusCode::ACCEPTED).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.log");
    let sim = Sim::start_logged(3, Some(file.clone())).await;
    sim.agent("sim-1", agent_body(&api, "n1")).await;
    // Booting from disk: nothing is sent.
    sim.reset("sim-1", "On").await;
    quiet_period().await;
    assert!(api.inspections().is_empty());

    sim.boot_override("sim-1", "Pxe", "Continuous").await;
    sim.reset("sim-1", "ForceRestart").await;
    until(WAIT, "heartbeats after the inspection", || {
        api.count("n1") >= 3
    })
    .await;
    let got = api.inspections();
    assert_eq!(got.len(), 1, "one post per boot");
    let g = &got[0];
    assert_eq!(g.api_version.as_deref(), Some("1.84"));
    assert_eq!(g.user_agent.as_deref(), Some("ferric-sim-agent"));
    assert_eq!(g.content_type.as_deref(), Some("application/json"));
    let view = sim.view("sim-1").await;
    assert_ipa_shape(&g.body, &view);
    // What system index 1 has.
    let inv = &g.body["inventory"];
    assert_eq!(inv["interfaces"][0]["mac_address"], "52:54:00:00:00:01");
    assert_eq!(inv["interfaces"][1]["mac_address"], "52:54:01:00:00:01");
    assert_eq!(inv["cpu"]["count"], 16);
    assert_eq!(inv["cpu"]["architecture"], "x86_64");
    assert_eq!(inv["memory"]["physical_mb"], 65_536);
    assert_eq!(inv["disks"][0]["size"], 100 * GIB);
    assert_eq!(inv["disks"][1]["size"], 1024 * GIB);
    assert_eq!(g.body["root_disk"]["name"], "/dev/sda");
    assert_eq!(inv["system_vendor"]["serial_number"], "FSIM00000001");
    assert_eq!(inv["hostname"], "sim-1");

    // The agent's facts and the log.
    assert_eq!(view["agent"]["inspect"], true);
    assert_eq!(view["agent"]["inspection_status"], 202);
    assert_eq!(view["agent"]["inspection_uuid"], INSPECTED);
    let entries = sim.inspections("sim-1");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.method.as_str(), e.path.as_str()),
        ("POST", "/v1/continue_inspection")
    );
    assert_eq!(e.status, Some(202));
    assert_eq!(e.client.as_deref(), Some("ferric-sim-agent"));
    assert_eq!(e.node.as_deref(), Some("n1"));
    assert_eq!(e.detail, None);
    let first_heartbeat = &sim.heartbeats("sim-1")[0];
    assert!(
        e.index < first_heartbeat.index,
        "the inspection goes before the first heartbeat"
    );

    // A second PXE boot posts again, once.
    let boot_one = api.count("n1");
    sim.reset("sim-1", "ForceRestart").await;
    until(WAIT, "heartbeats of the second boot", || {
        api.inspections().len() == 2 && api.count("n1") >= boot_one + 2
    })
    .await;
    assert_eq!(api.inspections().len(), 2);
    assert_eq!(
        api.inspections()[1].body,
        api.inspections()[0].body,
        "the same machine"
    );
    assert_eq!(sim.view("sim-1").await["run"]["boot"], 3);

    // Power off: the count is final; the log file has one inspection entry per PXE boot.
    sim.reset("sim-1", "ForceOff").await;
    agent_done(&sim, "sim-1").await;
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let inspections: Vec<&Value> = lines.iter().filter(|l| l["op"] == "inspection").collect();
    assert_eq!(inspections.len(), 2);
    for l in &inspections {
        assert_eq!(l["system"], "sim-1");
        assert_eq!(l["status"], 202);
        assert_eq!(l["node"], "n1");
        assert_eq!(l["path"], "/v1/continue_inspection");
    }
    // The other systems never sent anything.
    assert!(sim.inspections("sim-0").is_empty() && sim.inspections("sim-2").is_empty());
}

#[tokio::test]
async fn refused_and_failed_inspections_are_recorded_and_heartbeats_go_on() {
    let not_waiting = Api::with_inspection(StatusCode::ACCEPTED, StatusCode::NOT_FOUND).await;
    let malformed = Api::with_inspection(StatusCode::ACCEPTED, StatusCode::BAD_REQUEST).await;
    let sim = Sim::start(3).await;
    sim.agent("sim-0", agent_body(&not_waiting, "n0")).await;
    sim.agent("sim-1", agent_body(&malformed, "n1")).await;
    // Nothing listens on this port (bound, then closed).
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    sim.agent(
        "sim-2",
        json!({"api_url": dead_url, "node": "n2", "interval_ms": INTERVAL_MS}),
    )
    .await;
    for id in ["sim-0", "sim-1", "sim-2"] {
        sim.boot_override(id, "Pxe", "Once").await;
        sim.reset(id, "On").await;
    }
    until(WAIT, "heartbeats after each answer", || {
        not_waiting.count("n0") >= 3
            && malformed.count("n1") >= 3
            && sim.heartbeats("sim-2").len() >= 3
    })
    .await;
    assert_eq!(not_waiting.inspections().len(), 1);
    assert_eq!(malformed.inspections().len(), 1);

    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["inspection_status"], 404);
    assert_eq!(v["agent"]["inspection_uuid"], Value::Null);
    assert_eq!(v["agent"]["running"], true);
    let e = &sim.inspections("sim-0")[0];
    assert_eq!(e.status, Some(404));
    assert_eq!(e.detail.as_deref(), Some("simulated 404"));

    let v = sim.view("sim-1").await;
    assert_eq!(v["agent"]["inspection_status"], 400);
    let e = &sim.inspections("sim-1")[0];
    assert_eq!(e.status, Some(400));
    assert_eq!(
        e.detail.as_deref(),
        Some("simulated 400"),
        "Ironic's faultstring"
    );

    let v = sim.view("sim-2").await;
    let err = v["agent"]["inspection_status"]
        .as_str()
        .expect("an error text");
    assert!(err.contains("connect"), "{err}");
    let entries = sim.inspections("sim-2");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, None);
    assert!(entries[0]
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("connect")));
    assert_eq!(v["agent"]["running"], true);
}

#[tokio::test]
async fn an_agent_without_inspection_only_heartbeats() {
    let api = Api::with_inspection(StatusCode::ACCEPTED, StatusCode::ACCEPTED).await;
    let sim = Sim::start(1).await;
    let mut body = agent_body(&api, "n0");
    body["inspect"] = json!(false);
    sim.agent("sim-0", body).await;
    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["inspect"], false);
    sim.boot_override("sim-0", "Pxe", "Continuous").await;
    sim.reset("sim-0", "On").await;
    until(WAIT, "three heartbeats", || api.count("n0") >= 3).await;
    sim.reset("sim-0", "ForceRestart").await;
    until(WAIT, "heartbeats of the second boot", || {
        sim.heartbeats("sim-0")
            .iter()
            .filter(|e| e.seq == Some(1))
            .count()
            == 2
    })
    .await;
    assert!(api.inspections().is_empty());
    assert!(sim.inspections("sim-0").is_empty());
    let v = sim.view("sim-0").await;
    assert_eq!(v["agent"]["inspection_status"], Value::Null);
    assert!(v["agent"]["heartbeats_sent"].as_u64().unwrap() >= 1);
    // An invalid value is refused like any other.
    let (status, _) = sim
        .control(
            reqwest::Method::PUT,
            "/sim/systems/sim-0/agent",
            Some(json!({"api_url": api.url, "node": "n0", "inspect": "no"})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn stop_after_zero_sends_no_inspection_either() {
    let api = Api::with_inspection(StatusCode::ACCEPTED, StatusCode::ACCEPTED).await;
    let sim = Sim::start(1).await;
    let mut body = agent_body(&api, "n0");
    body["stop_after"] = json!(0);
    sim.agent("sim-0", body).await;
    sim.boot_override("sim-0", "Pxe", "Once").await;
    sim.reset("sim-0", "On").await;
    quiet_period().await;
    assert!(api.inspections().is_empty());
    assert_eq!(api.count("n0"), 0);
    assert_eq!(sim.view("sim-0").await["power"], "On");
}

#[tokio::test]
async fn the_agent_looks_its_node_up_and_heartbeats_with_the_issued_token() {
    let api = Api::start(StatusCode::ACCEPTED).await;
    let sim = Sim::start(3).await;
    sim.agent("sim-2", agent_body(&api, "n2")).await;
    sim.boot_override("sim-2", "Pxe", "Continuous").await;
    sim.reset("sim-2", "On").await;
    until(WAIT, "heartbeats after the lookup", || api.count("n2") >= 2).await;
    let lookups = api.lookups();
    assert_eq!(lookups.len(), 1, "one lookup per boot");
    assert_eq!(lookups[0].api_version.as_deref(), Some("1.62"));
    assert_eq!(
        lookups[0].node,
        "addresses=52%3A54%3A00%3A00%3A00%3A02%2C52%3A54%3A01%3A00%3A00%3A02&node_uuid=n2"
    );
    for g in api.got().iter().filter(|g| g.node == "n2") {
        assert_eq!(g.body["agent_token"], ISSUED, "{:?}", g.body);
    }
    let view = sim.view("sim-2").await;
    assert_eq!(view["agent"]["lookup_status"], 200);
    assert_eq!(view["agent"]["active_token"], ISSUED);
    let logged = sim.entries(LogOp::Lookup, "sim-2");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].status, Some(200));
    assert_eq!(logged[0].path, "/v1/lookup");

    // The next boot's lookup gets `******`: the agent heartbeats with its own token.
    let before = api.count("n2");
    sim.reset("sim-2", "ForceRestart").await;
    until(WAIT, "heartbeats of the second boot", || {
        api.lookups().len() == 2 && api.count("n2") >= before + 2
    })
    .await;
    let last = api
        .got()
        .into_iter()
        .rev()
        .find(|g| g.node == "n2")
        .unwrap();
    assert_ne!(last.body["agent_token"], ISSUED);
    assert_ne!(last.body["agent_token"], "******");

    // A fixed token, or `lookup: false`: no lookup at all.
    for (system, node, extra) in [
        ("sim-0", "n0", json!({"token": "fixed-token"})),
        ("sim-1", "n1", json!({"lookup": false})),
    ] {
        let mut body = agent_body(&api, node);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        sim.agent(system, body).await;
        sim.boot_override(system, "Pxe", "Continuous").await;
        sim.reset(system, "On").await;
    }
    until(WAIT, "heartbeats of both", || {
        api.count("n0") >= 2 && api.count("n1") >= 2
    })
    .await;
    assert_eq!(api.lookups().len(), 2, "no lookups from sim-0 and sim-1");
}

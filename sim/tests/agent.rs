//! The deploy agent of simulated machines, over real sockets: heartbeats reach a tiny Ironic API
//! stand-in on 127.0.0.1:0 that records what it got, only while a system runs a PXE boot; power
//! off, restarts, `stop_after` and `fail_after` are checked in what that API received and in the
//! simulator's command log. Intervals are short and real; every wait is bounded.

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

/// One heartbeat as the API received it.
#[derive(Debug, Clone)]
struct Got {
    node: String,
    api_version: Option<String>,
    user_agent: Option<String>,
    body: Value,
}

/// The Ironic API stand-in: records every heartbeat, answers `status`.
struct Api {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    _stop: oneshot::Sender<()>,
}

impl Api {
    async fn start(status: StatusCode) -> Api {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = Router::new()
            .route(
                "/v1/heartbeat/{node}",
                post(
                    move |State(got): State<Arc<Mutex<Vec<Got>>>>,
                          Path(node): Path<String>,
                          headers: HeaderMap,
                          Json(body): Json<Value>| async move {
                        let h = |k: &str| {
                            headers
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .map(String::from)
                        };
                        got.lock().unwrap().push(Got {
                            node,
                            api_version: h("x-openstack-ironic-api-version"),
                            user_agent: h("user-agent"),
                            body,
                        });
                        status
                    },
                ),
            )
            .with_state(got.clone());
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
            _stop: stop,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
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
        let support::InProcess { state, served, .. } = support::start(SimConfig {
            systems,
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
        self.state
            .log()
            .since(0)
            .into_iter()
            .filter(|e| e.op == LogOp::Heartbeat && e.system == system)
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
    assert_eq!(token.len(), 32);
    let got = api.got();
    for g in &got {
        assert_eq!(g.api_version.as_deref(), Some("1.72"));
        assert_eq!(g.user_agent.as_deref(), Some("ferric-sim-agent"));
        assert_eq!(g.body["agent_token"], token.as_str());
        assert_eq!(
            g.body["callback_url"],
            "http://sim-0.ferric-sim.invalid:9999/"
        );
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

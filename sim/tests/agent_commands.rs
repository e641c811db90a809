//! The agents' command API over real sockets, driven the way Ironic's agent client drives IPA:
//! the heartbeat names the `callback_url`, commands are POSTed under it and polled until done;
//! checked in the answers, in the system's view (power, agent facts), in the heartbeats a tiny
//! Ironic API stand-in received and in the simulator's command log. Every wait is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ferric_sim::{LogEntry, LogOp, SimConfig, SimState};
use ferric_testkit::serve::Served;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

const AUTH: &str = "Basic YWRtaW46cGFzc3dvcmQ=";
const TOKEN: &str = "t0k";
const WAIT: Duration = Duration::from_secs(10);

/// Heartbeats the stand-in received: their bodies and when.
type Beats = Arc<Mutex<Vec<(Instant, Value)>>>;

/// An Ironic API stand-in that accepts every heartbeat.
struct Api {
    url: String,
    beats: Beats,
    _served: Served,
}

impl Api {
    async fn start() -> Api {
        let beats: Beats = Arc::default();
        let app = Router::new().route(
            "/v1/heartbeat/{node}",
            post({
                let beats = beats.clone();
                move |Path(_node): Path<String>, Json(body): Json<Value>| async move {
                    beats.lock().unwrap().push((Instant::now(), body));
                    StatusCode::ACCEPTED
                }
            }),
        );
        let served = Served::start(|listener: TcpListener, stop| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .unwrap();
        })
        .await;
        Api {
            url: served.url(),
            beats,
            _served: served,
        }
    }

    fn beats(&self) -> Vec<(Instant, Value)> {
        self.beats.lock().unwrap().clone()
    }
}

/// The simulator on a loopback port and a client for it.
struct Sim {
    base: String,
    state: Arc<SimState>,
    http: reqwest::Client,
    _served: Served,
}

impl Sim {
    async fn start() -> Sim {
        let support::InProcess { state, served, .. } = support::start(SimConfig {
            systems: 2,
            ..SimConfig::default()
        })
        .await;
        Sim {
            base: served.url(),
            state,
            http: reqwest::Client::builder()
                .user_agent("ferric-conductor/c1")
                .build()
                .unwrap(),
            _served: served,
        }
    }

    /// Configures `id`'s agent (fixed token, no inspection) and PXE boots it.
    async fn boot_agent(&self, id: &str, api: &Api, extra: Value) {
        let mut spec = json!({"api_url": api.url, "node": format!("node-{id}"),
            "token": TOKEN, "inspect": false, "interval_ms": 1_500, "command_ms": 100});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let resp = self
            .http
            .put(format!("{}/sim/systems/{id}/agent", self.base))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let redfish = |method: reqwest::Method, path: String, body: Value| {
            self.http
                .request(method, format!("{}{path}", self.base))
                .header("Authorization", AUTH)
                .json(&body)
                .send()
        };
        let r = redfish(
            reqwest::Method::PATCH,
            format!("/redfish/v1/Systems/{id}"),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 204);
        let r = redfish(
            reqwest::Method::POST,
            format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
            json!({"ResetType": "On"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 204);
    }

    async fn view(&self, id: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}/sim/systems/{id}", self.base))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    fn entries(&self, op: LogOp, system: &str) -> Vec<LogEntry> {
        self.state
            .log()
            .since(0)
            .into_iter()
            .filter(|e| e.op == op && e.system == system)
            .collect()
    }
}

/// A client of one agent's command API, as Ironic's agent client uses it.
struct Agent<'a> {
    http: &'a reqwest::Client,
    /// `<callback_url>/v1/commands/`.
    commands: String,
}

impl Agent<'_> {
    async fn post(&self, name: &str, params: Value, query: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}?agent_token={TOKEN}{query}", self.commands))
            .json(&json!({"name": name, "params": params}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str, query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}?{query}", self.commands))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Polls command `id` until it is no longer RUNNING.
    async fn until_done(&self, id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, v) = self.get(id, &format!("agent_token={TOKEN}")).await;
            assert_eq!(status, 200, "{v}");
            if v["command_status"] != "RUNNING" {
                return v;
            }
            assert!(Instant::now() < deadline, "command {id} never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a GET of the list goes unanswered for `patience`.
    async fn unanswered(&self, patience: Duration) -> bool {
        let req = self
            .http
            .get(format!("{}?agent_token={TOKEN}", self.commands))
            .timeout(patience)
            .send()
            .await;
        matches!(req, Err(e) if e.is_timeout())
    }
}

/// Waits until `check` holds; panics after `WAIT`.
async fn until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the first heartbeat of `api` and returns its agent's command API.
async fn first_heartbeat<'a>(sim: &'a Sim, api: &Api) -> Agent<'a> {
    until("the first heartbeat", || !api.beats().is_empty()).await;
    let callback = api.beats()[0].1["callback_url"]
        .as_str()
        .unwrap()
        .to_string();
    Agent {
        http: &sim.http,
        commands: format!("{callback}/v1/commands/"),
    }
}

#[tokio::test]
async fn commands_run_one_at_a_time_and_power_off_powers_the_system_off() {
    let api = Api::start().await;
    let sim = Sim::start().await;
    sim.boot_agent("sim-0", &api, json!({})).await;
    let agent = first_heartbeat(&sim, &api).await;
    assert_eq!(
        agent.commands,
        format!("{}/agent/sim-0/v1/commands/", sim.base),
        "the default callback_url is the simulator's own agent API"
    );

    // IPA's token check.
    for query in ["", "agent_token=wrong"] {
        let (status, v) = agent.get("", query).await;
        assert_eq!(
            (status, v),
            (
                401,
                json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."})
            )
        );
    }
    let (status, v) = agent.get("", &format!("agent_token={TOKEN}")).await;
    assert_eq!((status, v), (200, json!({"commands": []})));

    // An asynchronous deploy step: RUNNING, the agent busy until it is done.
    let step = json!({"step": "write_image", "interface": "deploy", "priority": 80,
        "args": {"image_info": {"id": "img-1", "urls": ["http://images/img-1"]}}});
    let params = json!({"step": step, "node": {"uuid": "node-sim-0"}, "ports": [],
        "deployment_version": null});
    let (status, v) = agent.post("deploy.execute_deploy_step", params, "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["command_name"], "execute_deploy_step");
    assert_eq!(v["command_status"], "RUNNING");
    let posted_at = Instant::now();
    let id = v["id"].as_str().unwrap().to_string();
    let (status, v) = agent.post("standby.sync", json!({}), "").await;
    assert_eq!(
        (status, v),
        (
            409,
            json!({"faultcode": "Client",
                   "faultstring": "Agent is busy: executing command execute_deploy_step"})
        )
    );
    let beats_before = api.beats().len();
    let done = agent.until_done(&id).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    assert_eq!(done["command_error"], Value::Null);
    assert_eq!(done["command_result"]["deploy_step"], step);
    // IPA heartbeats as soon as an asynchronous command finishes, not an interval later.
    until("the forced heartbeat", || api.beats().len() > beats_before).await;
    let forced = api.beats()[beats_before].0;
    assert!(
        forced.duration_since(posted_at) < Duration::from_millis(1_200),
        "the heartbeat came {:?} after the command was posted",
        forced.duration_since(posted_at)
    );

    // The whole-disk image's root uuid, then a bootloader install waited for.
    let (status, v) = agent
        .post("standby.get_partition_uuids", json!({}), "&wait=true")
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["command_result"]["root uuid"], "0xfe000000");
    // IPA 13's install_bootloader takes no other argument: Python's TypeError.
    let mut params = json!({"root_uuid": "0xfe000000", "efi_system_part_uuid": null,
        "prep_boot_part_uuid": null, "target_boot_mode": "uefi", "software_raid": false});
    let (status, v) = agent
        .post("image.install_bootloader", params.clone(), "&wait=true")
        .await;
    assert_eq!((status, &v["command_status"]), (200, &json!("FAILED")));
    assert!(
        v["command_error"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("unexpected keyword argument 'software_raid'")),
        "{v}"
    );
    params.as_object_mut().unwrap().remove("software_raid");
    let (status, v) = agent
        .post("image.install_bootloader", params, "&wait=true")
        .await;
    assert_eq!((status, &v["command_status"]), (200, &json!("SUCCEEDED")));

    // The list, in issue order, and the view of the agent.
    let (_, list) = agent.get("", &format!("agent_token={TOKEN}")).await;
    let names: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "execute_deploy_step",
            "get_partition_uuids",
            "install_bootloader",
            "install_bootloader"
        ]
    );
    let view = sim.view("sim-0").await;
    assert_eq!(view["agent"]["commands"][0]["step"], "deploy.write_image");
    assert_eq!(view["agent"]["commands"][0]["status"], "SUCCEEDED");
    assert_eq!(view["agent"]["command_ms"], 100);

    // Power off through the agent: the machine goes off, the agent stops answering.
    let (status, v) = agent.post("standby.power_off", json!({}), "").await;
    assert_eq!((status, &v["command_status"]), (200, &json!("RUNNING")));
    let mut off = false;
    let deadline = Instant::now() + WAIT;
    while !off {
        assert!(Instant::now() < deadline, "the system never powered off");
        tokio::time::sleep(Duration::from_millis(20)).await;
        off = sim.view("sim-0").await["power"] == "Off";
    }
    let beats = api.beats().len();
    assert!(agent.unanswered(Duration::from_millis(300)).await);
    assert_eq!(api.beats().len(), beats, "no heartbeat after the power off");

    // The log: every request, the POSTs with their command and step, the power off.
    let log = sim.entries(LogOp::AgentCommand, "sim-0");
    let posts: Vec<(&str, Option<&str>, Option<u16>)> = log
        .iter()
        .filter(|e| e.method == "POST")
        .map(|e| (e.action.as_deref().unwrap(), e.detail.as_deref(), e.status))
        .collect();
    assert_eq!(
        posts,
        [
            (
                "deploy.execute_deploy_step",
                Some("deploy.write_image"),
                Some(200)
            ),
            ("standby.sync", None, Some(409)),
            ("standby.get_partition_uuids", None, Some(200)),
            ("image.install_bootloader", None, Some(200)),
            ("image.install_bootloader", None, Some(200)),
            ("standby.power_off", None, Some(200)),
        ]
    );
    for e in &log {
        assert!(
            e.path.starts_with("/agent/sim-0/v1/commands/"),
            "{}",
            e.path
        );
        assert!(!e.path.contains("agent_token"));
        assert_eq!(e.client.as_deref(), Some("c1"));
        assert_eq!(e.node.as_deref(), Some("node-sim-0"));
    }
    assert!(log.iter().any(|e| e.action.as_deref() == Some("poll")));
    assert_eq!(log.iter().filter(|e| e.status == Some(401)).count(), 2);
    until("the held request is logged", || {
        sim.entries(LogOp::AgentCommand, "sim-0")
            .iter()
            .any(|e| e.status.is_none() && e.action.as_deref() == Some("list"))
    })
    .await;
    let power = sim.entries(LogOp::AgentPower, "sim-0");
    assert_eq!(power.len(), 1);
    assert_eq!(power[0].action.as_deref(), Some("ForceOff"));
}

#[tokio::test]
async fn garbage_death_and_exit_end_the_conversation() {
    let api = Api::start().await;
    let sim = Sim::start().await;

    // Something else answers at the callback URL.
    sim.boot_agent("sim-0", &api, json!({"garbage_commands": true}))
        .await;
    let agent = first_heartbeat(&sim, &api).await;
    let resp = sim
        .http
        .post(format!("{}?agent_token={TOKEN}", agent.commands))
        .json(&json!({"name": "standby.sync", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "<html>not an agent</html>");
    assert_eq!(sim.view("sim-0").await["agent"]["commands"], json!([]));

    // An agent that dies with its first command: accepted, never finished, then silence.
    let api1 = Api::start().await;
    sim.boot_agent(
        "sim-1",
        &api1,
        json!({"die_after_commands": 1, "interval_ms": 100}),
    )
    .await;
    let agent = first_heartbeat(&sim, &api1).await;
    let (status, v) = agent.post("standby.power_off", json!({}), "").await;
    assert_eq!((status, &v["command_status"]), (200, &json!("RUNNING")));
    assert!(agent.unanswered(Duration::from_millis(300)).await);
    let view = sim.view("sim-1").await;
    assert_eq!(view["agent"]["died"], true);
    assert_eq!(view["agent"]["running"], false);
    assert_eq!(view["power"], "On", "the command never finished");
    assert_eq!(view["agent"]["commands"][0]["status"], "RUNNING");
    let beats = api1.beats().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(api1.beats().len(), beats, "a dead agent does not heartbeat");

    // finalize_rescue: answered, then IPA exits.
    sim.boot_agent("sim-1", &api1, json!({"die_after_commands": null}))
        .await;
    let agent = first_heartbeat(&sim, &api1).await;
    until("the new run's heartbeat", || api1.beats().len() > beats).await;
    let (status, v) = agent
        .post(
            "rescue.finalize_rescue",
            json!({"rescue_password": "$6$x", "hashed": true}),
            "",
        )
        .await;
    assert_eq!((status, &v["command_status"]), (200, &json!("SUCCEEDED")));
    assert!(agent.unanswered(Duration::from_millis(300)).await);
    assert_eq!(sim.view("sim-1").await["power"], "On");
}

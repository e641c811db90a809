//! The conductor drives `ferric sim`'s agents through ironic-python-agent's command API, through
//! real processes (etcd, a conductor, a gateway, the simulator). What was asked of each agent is
//! read from the simulator's own log; what the node did, from the API.
//!
//! - Full flows: manual cleaning with the request's steps, automated cleaning with IPA's
//!   prioritised steps, deploy, rescue (`finalize_rescue` with the password) and unrescue,
//!   servicing with the request's steps.
//! - Failures: a command that ends FAILED, an agent that answers garbage, an agent that dies
//!   with a command running: each ends cleaning in `clean failed` with the agent's error.

use ferric_testkit::fleet::Sim;
use ferric_testkit::http::{api_at, Reply};
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn call(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> Reply {
    api_at(gw.port, method, path, "1.95", body)
}

/// Waits until the node rests in `want` (a resting state: no target).
fn rest_in(gw: &Gateway, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = call(gw, "GET", &format!("/v1/nodes/{id}"), None).json();
        if n["provision_state"] == want && n["target_provision_state"].is_null() {
            return n;
        }
        assert!(Instant::now() < deadline, "never {want}: {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn provision(gw: &Gateway, id: &str, body: Value) {
    let r = call(
        gw,
        "PUT",
        &format!("/v1/nodes/{id}/states/provision"),
        Some(&body),
    );
    assert_eq!(r.status, 202, "{body}: {}", r.body);
}

/// The commands posted to system `system`'s agent since log index `from`, as
/// `name [interface.step]`.
fn posted(sim: &Sim, system: usize, from: u64) -> Vec<String> {
    sim.commands(system)
        .into_iter()
        .filter(|c| c["op"] == "agent_command" && c["method"] == "POST")
        .filter(|c| c["index"].as_u64().unwrap_or(0) >= from)
        .map(|c| {
            let action = c["action"].as_str().unwrap_or("?").to_string();
            match c["detail"].as_str() {
                Some(step) => format!("{action} {step}"),
                None => action,
            }
        })
        .collect()
}

/// The next log index of the simulator (entries from here on are new).
fn mark(sim: &Sim) -> u64 {
    (0..8)
        .flat_map(|s| sim.commands(s))
        .filter_map(|c| c["index"].as_u64())
        .max()
        .map_or(0, |i| i + 1)
}

async fn enroll(fleet: &Fleet, gw: &Gateway, sim: &Sim, system: usize, agent: Value) -> String {
    let info: Value = serde_json::from_str(&sim.driver_info(system, "password")).unwrap();
    let r = call(
        gw,
        "POST",
        "/v1/nodes",
        Some(&json!({
            "driver": "redfish",
            "name": format!("ipa-{system}"),
            "driver_info": info,
            "instance_info": {"image_source": "http://images/os.qcow2",
                              "image_os_hash_algo": "sha256", "image_os_hash_value": "c0ffee"},
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["uuid"].as_str().unwrap().to_string();
    let mut a = json!({"api_url": gw.url, "node": id, "interval_ms": 300, "inspect": false});
    for (k, v) in agent.as_object().unwrap() {
        a[k] = v.clone();
    }
    sim.agent(system, &a).await;
    provision(gw, &id, json!({"target": "manage"}));
    rest_in(gw, &id, "manageable");
    let _ = fleet;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_flow_runs_ipas_commands_in_ironics_order() {
    let mut fleet = Fleet::new("agent-commands").await;
    fleet.start_conductor("c1", &["--agent-poll-interval", "0.3"]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 1, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let id = enroll(&fleet, &gw, &sim, 0, json!({})).await;

    // Manual cleaning: the request's steps, in the request's order.
    let m = mark(&sim);
    provision(
        &gw,
        &id,
        json!({"target": "clean", "clean_steps": [
            {"interface": "deploy", "step": "burnin_cpu"},
            {"interface": "deploy", "step": "erase_devices_metadata"},
        ]}),
    );
    rest_in(&gw, &id, "manageable");
    assert_eq!(
        posted(&sim, 0, m),
        [
            "clean.get_clean_steps",
            "clean.execute_clean_step deploy.burnin_cpu",
            "clean.execute_clean_step deploy.erase_devices_metadata",
        ]
    );
    // A step the agent does not offer fails manual cleaning before anything runs.
    let m = mark(&sim);
    provision(
        &gw,
        &id,
        json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "no_such_step"}]}),
    );
    let n = rest_in(&gw, &id, "clean failed");
    assert!(
        n["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not offer the clean step \"deploy.no_such_step\"")),
        "{n}"
    );
    // The failure and its maintenance are seen together (Ironic saves them together), so the
    // maintenance left below is not set again after.
    assert_eq!(n["maintenance"], true, "{n}");
    assert_eq!(n["fault"], "clean failure", "{n}");
    assert_eq!(posted(&sim, 0, m), ["clean.get_clean_steps"]);
    let r = call(&gw, "DELETE", &format!("/v1/nodes/{id}/maintenance"), None);
    assert_eq!(r.status, 202, "{}", r.body);
    provision(&gw, &id, json!({"target": "manage"}));
    rest_in(&gw, &id, "manageable");

    // Automated cleaning: IPA's steps with a priority, highest first.
    let m = mark(&sim);
    provision(&gw, &id, json!({"target": "provide"}));
    rest_in(&gw, &id, "available");
    assert_eq!(
        posted(&sim, 0, m),
        [
            "clean.get_clean_steps",
            "clean.execute_clean_step deploy.erase_devices_metadata",
            "clean.execute_clean_step deploy.erase_devices",
        ]
    );

    // Deploy: Ironic's order; the instance then boots from disk.
    let m = mark(&sim);
    provision(&gw, &id, json!({"target": "active"}));
    let n = rest_in(&gw, &id, "active");
    assert_eq!(n["last_error"], Value::Null, "{n}");
    assert_eq!(
        posted(&sim, 0, m),
        [
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step deploy.write_image",
            "standby.get_partition_uuids",
            "image.install_bootloader",
            "standby.power_off",
        ]
    );
    let view = sim.system(0).await;
    assert_eq!(view["run"]["from"], "Hdd", "{view}");
    assert_eq!(view["power"], "On", "{view}");

    // A heartbeat for a node that expects no agent carries no token the node knows (its
    // agent's token went when the agent's work ended): refused, as Ironic's conductor refuses
    // it, and nothing is asked of the agent it names.
    let m = mark(&sim);
    let callback = view["agent"]["callback_url"]
        .as_str()
        .unwrap_or("http://127.0.0.1:9/");
    let r = call(
        &gw,
        "POST",
        &format!("/v1/heartbeat/{id}"),
        Some(&json!({"callback_url": callback, "agent_token": "stray", "agent_version": "1"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("Invalid or missing agent token received."),
        "{}",
        r.body
    );
    std::thread::sleep(Duration::from_secs(2));
    let n = rest_in(&gw, &id, "active");
    assert_eq!(n["last_error"], Value::Null, "{n}");
    assert_eq!(posted(&sim, 0, m), Vec::<String>::new());

    // Rescue: the rescue ramdisk gets the password; unrescue boots the instance again.
    let m = mark(&sim);
    provision(
        &gw,
        &id,
        json!({"target": "rescue", "rescue_password": "s3cret"}),
    );
    rest_in(&gw, &id, "rescue");
    assert_eq!(posted(&sim, 0, m), ["rescue.finalize_rescue"]);
    provision(&gw, &id, json!({"target": "unrescue"}));
    rest_in(&gw, &id, "active");
    assert_eq!(sim.system(0).await["run"]["from"], "Hdd");

    // Servicing: the request's steps.
    let m = mark(&sim);
    provision(
        &gw,
        &id,
        json!({"target": "service", "service_steps": [
            {"interface": "deploy", "step": "burnin_cpu", "args": {}},
        ]}),
    );
    rest_in(&gw, &id, "active");
    assert_eq!(
        posted(&sim, 0, m),
        [
            "service.get_service_steps",
            "service.execute_service_step deploy.burnin_cpu",
        ]
    );
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commands_garbage_and_dead_agents_fail_the_state_with_the_error() {
    let mut fleet = Fleet::new("agent-failures").await;
    fleet.start_conductor(
        "c1",
        &[
            "--agent-poll-interval",
            "0.3",
            "--agent-command-timeout",
            "1",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 3, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let cases = [
        (
            json!({"fail_command": "erase_devices"}),
            "clean.execute_clean_step (deploy.erase_devices) failed on the agent: simulated failure of erase_devices",
        ),
        (json!({"garbage_commands": true}), "not JSON"),
        (
            // get_clean_steps, then the first step: it runs, and the agent is gone.
            json!({"die_after_commands": 2, "command_ms": 500}),
            "stopped answering (3 calls in a row for clean.execute_clean_step (deploy.erase_devices_metadata))",
        ),
    ];
    let mut ids = Vec::new();
    for (system, (agent, _)) in cases.iter().enumerate() {
        ids.push(enroll(&fleet, &gw, &sim, system, agent.clone()).await);
    }
    for id in &ids {
        provision(&gw, id, json!({"target": "provide"}));
    }
    for (id, (_, error)) in ids.iter().zip(&cases) {
        let n = rest_in(&gw, id, "clean failed");
        let last = n["last_error"].as_str().unwrap_or_default();
        assert!(last.contains(error), "{id}: {last}");
        assert_eq!(n["fault"], "clean failure", "{n}");
    }
    // The dead agent's command was posted once and polled until the attempts ran out.
    let reqs: Vec<Value> = sim
        .commands(2)
        .into_iter()
        .filter(|c| c["op"] == "agent_command")
        .collect();
    let posts = reqs.iter().filter(|c| c["method"] == "POST").count();
    assert_eq!(posts, 2, "{reqs:?}");
    fleet.check_fencing_history().await;
}

/// The agent's TLS is verified against the certificate it sent with its heartbeat
/// (`agent_verify_ca`, as IPA's automatic TLS sends it); without one, against the system's
/// roots, which do not know the agent's self-signed certificate: the calls fail and so does
/// the state, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_tls_is_verified_against_the_certificate_it_sent() {
    let mut fleet = Fleet::new("agent-tls").await;
    fleet.start_conductor(
        "c1",
        &[
            "--agent-poll-interval",
            "0.3",
            "--agent-command-timeout",
            "2",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 2, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let mut ids = Vec::new();
    for system in 0..2 {
        let info: Value = serde_json::from_str(&sim.driver_info(system, "password")).unwrap();
        let r = call(
            &gw,
            "POST",
            "/v1/nodes",
            Some(
                &json!({"driver": "redfish", "name": format!("tls-{system}"),
                         "driver_info": info}),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["uuid"].as_str().unwrap().to_string();
        provision(&gw, &id, json!({"target": "manage"}));
        rest_in(&gw, &id, "manageable");
        provision(&gw, &id, json!({"target": "provide"}));
        ids.push(id);
    }
    // The test plays the ramdisk: IPA's command API over HTTPS, and its heartbeat.
    let mut agents = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while call(&gw, "GET", &format!("/v1/nodes/{id}"), None).json()["provision_state"]
            != "clean wait"
        {
            assert!(Instant::now() < deadline, "{id} never waits for its agent");
            std::thread::sleep(Duration::from_millis(100));
        }
        // As IPA starts: the lookup gives the token of this boot, the heartbeats carry it.
        let r = call(&gw, "GET", &format!("/v1/lookup?node_uuid={id}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.json()["config"]["agent_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in the lookup's answer: {}", r.body))
            .to_string();
        let agent = ferric_testkit::ipa::IpaAgent::start_tls(dir.path(), &format!("ipa-{i}"));
        agent.set_token(&token);
        let mut hb = json!({"callback_url": agent.url(), "agent_token": token,
                            "agent_version": "13.0.0"});
        if i == 0 {
            hb["agent_verify_ca"] = json!(agent.cert_pem().expect("the agent's certificate"));
        }
        let r = call(&gw, "POST", &format!("/v1/heartbeat/{id}"), Some(&hb));
        assert_eq!(r.status, 202, "{}", r.body);
        agents.push(agent);
    }
    rest_in(&gw, &ids[0], "available");
    assert_eq!(agents[0].calls().len(), 3, "{:?}", agents[0].calls());
    let n = rest_in(&gw, &ids[1], "clean failed");
    let error = n["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("stopped answering") && error.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert!(agents[1].calls().is_empty(), "{:?}", agents[1].calls());
}

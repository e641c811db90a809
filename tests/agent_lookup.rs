//! The ramdisk's lookup and its agent token, through real processes: a conductor boots a
//! `ferric sim` Redfish machine into the ramdisk for cleaning, and the test plays
//! ironic-python-agent's API client (`GET /v1/lookup`, then heartbeats with the token), with
//! IPA's own command API (its application and command machinery; commands that touch no
//! hardware) as the agent the conductor drives. What the gateway keeps is checked in etcd
//! (`agent-tokens/<uuid>` holds the token's SHA-256 only, and goes when the agent's work ends),
//! what the node did in the API's answers, and what the conductor asked in the agent's record.

use ferric_model::{decode, AgentTokenRecord};
use ferric_testkit::fleet::Sim;
use ferric_testkit::http::{api_at, run_venv, Reply};
use ferric_testkit::ipa::IpaAgent;
use ferric_testkit::{Fleet, Gateway};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

fn call(gw: &Gateway, method: &str, path: &str, version: &str, body: Option<&Value>) -> Reply {
    api_at(gw.port, method, path, version, body)
}

fn wait_state(gw: &Gateway, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = call(gw, "GET", &format!("/v1/nodes/{id}"), "1.95", None).json();
        // A wait state has a target; a resting state has none.
        let waits = want.contains("wait");
        if n["provision_state"] == want && n["target_provision_state"].is_null() != waits {
            return n;
        }
        assert!(Instant::now() < deadline, "never {want}: {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn etcd_token(fleet: &Fleet, id: &str) -> Option<AgentTokenRecord> {
    let mut kv = fleet.inspect.client().kv_client();
    let resp = kv
        .get(fleet.inspect.key(&format!("agent-tokens/{id}")), None)
        .await
        .unwrap();
    resp.kvs()
        .first()
        .map(|kv| decode::<AgentTokenRecord>(kv.value()).expect("a readable token record"))
}

fn heartbeat(gw: &Gateway, id: &str, token: &str, agent: &IpaAgent) -> Reply {
    call(
        gw,
        "POST",
        &format!("/v1/heartbeat/{id}"),
        "1.68",
        Some(
            &json!({"callback_url": agent.url(), "agent_version": "10.1.0",
                     "agent_token": token}),
        ),
    )
}

/// What IPA's automated cleaning runs: its steps with a priority, highest first.
const CLEANING: [&str; 3] = [
    "clean.get_clean_steps",
    "clean.execute_clean_step deploy.erase_devices_metadata",
    "clean.execute_clean_step deploy.erase_devices",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_issues_one_token_per_boot_and_heartbeats_must_carry_it() {
    let mut fleet = Fleet::new("agent-lookup").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), 2, &[]).await;
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let nics = sim.system(0).await["nics"].clone();
    let (eth0, eth1) = (
        nics[0]["mac"].as_str().unwrap().to_string(),
        nics[1]["mac"].as_str().unwrap().to_string(),
    );
    let info: Value = serde_json::from_str(&sim.driver_info(0, "password")).unwrap();
    let r = call(
        &gw,
        "POST",
        "/v1/nodes",
        "1.95",
        Some(&json!({"driver": "redfish", "name": "lk-0", "driver_info": info})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["uuid"].as_str().unwrap().to_string();
    let r = call(
        &gw,
        "POST",
        "/v1/ports",
        "1.95",
        Some(&json!({"node_uuid": id, "address": eth0})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let lookup = |query: &str, version: &str| {
        call(&gw, "GET", &format!("/v1/lookup?{query}"), version, None)
    };
    let by_macs = format!("addresses={},{}", eth0.to_uppercase(), eth1);

    // Not in a state an agent works in: the same 404 as for an unknown node.
    let r = lookup(&by_macs, "1.68");
    assert_eq!(r.status, 404, "{}", r.body);
    for verb in ["manage", "provide"] {
        let r = call(
            &gw,
            "PUT",
            &format!("/v1/nodes/{id}/states/provision"),
            "1.95",
            Some(&json!({ "target": verb })),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        if verb == "manage" {
            wait_state(&gw, &id, "manageable");
        }
    }
    wait_state(&gw, &id, "clean wait");
    assert!(
        etcd_token(&fleet, &id).await.is_none(),
        "no token before a lookup"
    );
    // With no token issued, every heartbeat is refused, as Ironic's conductor refuses it:
    // nobody may name a callback URL for the node before its agent looked it up.
    let r = call(
        &gw,
        "POST",
        &format!("/v1/heartbeat/{id}"),
        "1.68",
        Some(
            &json!({"callback_url": "http://127.0.0.1:9/", "agent_version": "10.1.0",
                      "agent_token": "guessed"}),
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // Bad lookups.
    for (query, version, status) in [
        ("", "1.68", 400),
        ("addresses=zz:zz", "1.68", 400),
        ("addresses=52:54:00:ff:ff:ff", "1.68", 404),
        (by_macs.as_str(), "1.21", 404),
    ] {
        let r = lookup(query, version);
        assert_eq!(r.status, status, "{query} at {version}: {}", r.body);
    }

    // The first lookup of the boot gets the token; etcd keeps its hash only.
    let first = lookup(&by_macs, "1.68");
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["node"]["uuid"], id.as_str(), "{first}");
    assert_eq!(first["config"]["agent_token_required"], true);
    assert_eq!(first["config"]["heartbeat_timeout"], 300);
    assert_eq!(
        first["config"]["agent_skip_bmc_detect"], true,
        "a redfish node"
    );
    let token = first["config"]["agent_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64, "{first}");
    let stored = etcd_token(&fleet, &id).await.expect("agent-tokens/<uuid>");
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored.sha256, hash);
    assert!(!stored.sha256.contains(&token));
    // Later lookups (by uuid too) see it masked, until the per-node limit says 429.
    let again = lookup(&format!("node_uuid={id}"), "1.68");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["config"]["agent_token"], "******");
    let mut limited = None;
    for n in 2..40 {
        let r = lookup(&by_macs, "1.68");
        if r.status == 429 {
            limited = Some(n);
            break;
        }
        assert_eq!(r.json()["config"]["agent_token"], "******");
    }
    assert_eq!(
        limited,
        Some(20),
        "the 21st lookup of the window is refused"
    );

    // A heartbeat without the token, or with another, is refused and recorded nowhere.
    let agent0 = IpaAgent::start(dir.path(), "ipa-0");
    agent0.set_token(&token);
    for bad in ["", "not-the-token"] {
        let r = heartbeat(&gw, &id, bad, &agent0);
        assert_eq!(r.status, 400, "{}", r.body);
    }
    let mut kv = fleet.inspect.client().kv_client();
    let hb = kv
        .get(fleet.inspect.key(&format!("heartbeats/{id}")), None)
        .await
        .unwrap();
    assert_eq!(hb.kvs().len(), 0, "a refused heartbeat is not recorded");
    assert_eq!(
        call(&gw, "GET", &format!("/v1/nodes/{id}"), "1.95", None).json()["provision_state"],
        "clean wait"
    );

    // With the token, the conductor drives the agent through IPA's command API (with the
    // token: IPA refuses commands without it) and cleaning goes on to its end; the token goes
    // with the agent's work.
    assert!(agent0.calls().is_empty());
    let r = heartbeat(&gw, &id, &token, &agent0);
    assert_eq!(r.status, 202, "{}", r.body);
    wait_state(&gw, &id, "available");
    assert_eq!(agent0.calls(), CLEANING);
    let deadline = Instant::now() + Duration::from_secs(30);
    while etcd_token(&fleet, &id).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "agent-tokens/<uuid> outlived the cleaning"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = lookup(&by_macs, "1.68");
    assert_eq!(r.status, 404, "{}", r.body);

    // ironic-python-agent's own API client, on a second machine: it looks its node up by
    // MAC, gets the token once, is refused with a wrong one and accepted with its own.
    let nics1 = sim.system(1).await["nics"].clone();
    let macs1: Vec<String> = (0..2)
        .map(|i| nics1[i]["mac"].as_str().unwrap().to_string())
        .collect();
    let info: Value = serde_json::from_str(&sim.driver_info(1, "password")).unwrap();
    let r = call(
        &gw,
        "POST",
        "/v1/nodes",
        "1.95",
        Some(&json!({"driver": "redfish", "name": "lk-1", "driver_info": info})),
    );
    let id1 = r.json()["uuid"].as_str().unwrap().to_string();
    let r = call(
        &gw,
        "POST",
        "/v1/ports",
        "1.95",
        Some(&json!({"node_uuid": id1, "address": macs1[0]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for verb in ["manage", "provide"] {
        let r = call(
            &gw,
            "PUT",
            &format!("/v1/nodes/{id1}/states/provision"),
            "1.95",
            Some(&json!({ "target": verb })),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        if verb == "manage" {
            wait_state(&gw, &id1, "manageable");
        }
    }
    wait_state(&gw, &id1, "clean wait");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ipa_client.py");
    let agent1 = IpaAgent::start(dir.path(), "ipa-1");
    let port = agent1.port.to_string();
    let token_file = agent1.token_file.display().to_string();
    let out = run_venv(
        "python",
        &[script, &gw.url, &macs1.join(","), &port, &token_file],
        &[],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "IPA's client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ipa: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(ipa["node"], id1.as_str(), "{ipa}");
    assert_eq!(ipa["token_required"], true, "{ipa}");
    assert_eq!(ipa["second_token"], "******", "{ipa}");
    assert!(
        ipa["wrong_token"]
            .as_str()
            .is_some_and(|w| w.starts_with("refused") && w.contains("agent token")),
        "{ipa}"
    );
    assert_eq!(ipa["heartbeat"], "accepted", "{ipa}");
    let issued = etcd_token(&fleet, &id1).await;
    let hash: String = Sha256::digest(ipa["token"].as_str().unwrap().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The accepted heartbeat carries cleaning on through the agent's API; the token is wiped
    // when it ends.
    if let Some(rec) = issued {
        assert_eq!(rec.sha256, hash);
    }
    wait_state(&gw, &id1, "available");
    assert_eq!(agent1.calls(), CLEANING);
}

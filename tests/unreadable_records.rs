//! Issue 11: records in etcd that cannot be decoded never make a node vanish. Real `ferric`
//! conductors and gateway over a real etcd; garbage is written into one node's spec, another's
//! status and a third's history; the real `baremetal` CLI and the API must still list and
//! show all three with the error, the other nodes keep working, every conductor stays up, and
//! the broken node can be deleted and its name enrolled again. Checked against etcd's keys.

use ferric_testkit::cli::Baremetal;
use ferric_testkit::http::http;
use ferric_testkit::{Fleet, Gateway};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn run(bm: &Baremetal, gw: &Gateway, fleet: &Fleet, args: &[&str]) -> String {
    let env = [("OS_ENDPOINT", gw.url.as_str()), ("OS_AUTH_TYPE", "none")];
    let out: Output = bm.run(args, &env, CLI_TIMEOUT);
    if !out.status.success() {
        fleet.fail(&format!(
            "`baremetal {}` failed: exit {:?}\n{}\n{}\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gw.proc.log_tail(30)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(bm: &Baremetal, gw: &Gateway, fleet: &Fleet, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    let out = run(bm, gw, fleet, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn api_get(gw: &Gateway, path: &str) -> Value {
    let r = http(
        gw.port,
        "GET",
        path,
        &[("X-OpenStack-Ironic-API-Version", "latest")],
        None,
    )
    .expect("gateway answers");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).expect("JSON")
}

#[tokio::test]
async fn unreadable_spec_status_and_history_stay_visible_and_repairable() {
    let mut fleet = Fleet::new("unreadable").await;
    fleet.start_conductor("c1", &[]);
    fleet.start_conductor("c2", &[]);
    let pids: Vec<(String, u32)> = ["c1", "c2"]
        .iter()
        .map(|n| (n.to_string(), fleet.conductor(n).pid()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let ids = fleet
        .create_nodes(5, &["--name", "rec", "--driver", "fake-hardware"])
        .await;
    fleet
        .wait_settled(Duration::from_secs(20), &["c1", "c2"])
        .await;
    let names: Vec<String> = (0..5).map(|i| format!("rec-{i}")).collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let a_name = names[0].as_str();

    // The damage: garbage in A's spec, B's status and one of C's history entries.
    let mut kv = fleet.inspect.client().kv_client();
    let key = |rest: String| fleet.inspect.key(&rest);
    kv.put(key(format!("nodes/{a}")), "garbage", None)
        .await
        .unwrap();
    kv.put(key(format!("status/{b}")), "garbage", None)
        .await
        .unwrap();
    kv.put(key(format!("history/{c}/{:020}", 0)), "garbage", None)
        .await
        .unwrap();
    fleet.note("garbage written");
    // The gateway learns of writes it did not make through its watch: wait (bounded) until
    // its answers reflect them, so the client below sees the damage, not an earlier copy.
    fleet
        .wait_until(
            Duration::from_secs(10),
            "the gateway shows the damaged records",
            async || {
                let nodes = api_get(&gw, "/v1/nodes?fields=uuid,last_error");
                let err = |id: &str| {
                    nodes["nodes"]
                        .as_array()
                        .and_then(|l| l.iter().find(|n| n["uuid"] == id))
                        .and_then(|n| n["last_error"].as_str())
                        .unwrap_or("")
                        .to_string()
                };
                let (ea, eb) = (err(a), err(b));
                if ea.contains("spec record") && eb.contains("status record") {
                    Ok(())
                } else {
                    Err(format!("a: {ea:?}, b: {eb:?}"))
                }
            },
        )
        .await;

    // Visible, with the error, through the real client and the API.
    let bm = Baremetal::start();
    let listed = json(
        &bm,
        &gw,
        &fleet,
        &["node", "list", "--fields", "uuid", "name", "last_error"],
    );
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5, "{listed:?}");
    let row = |id: &str| {
        listed
            .iter()
            .find(|n| n["UUID"] == id || n["uuid"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"))
            .clone()
    };
    let last_error = |n: &Value| {
        n.get("Last Error")
            .or(n.get("last_error"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    assert!(last_error(&row(a)).contains("spec record"), "{:?}", row(a));
    assert!(
        last_error(&row(b)).contains("status record"),
        "{:?}",
        row(b)
    );
    let shown = json(&bm, &gw, &fleet, &["node", "show", a_name]);
    assert_eq!(shown["uuid"], a.as_str());
    assert!(shown["last_error"]
        .as_str()
        .unwrap()
        .contains("cannot be read"));
    let history = api_get(&gw, &format!("/v1/nodes/{c}/history"));
    let first = &history["history"][0];
    assert_eq!(first["severity"], "ERROR", "{history}");
    assert!(first["event"]
        .as_str()
        .unwrap()
        .contains("cannot be decoded"));
    let detail = api_get(&gw, "/v1/nodes/detail");
    assert_eq!(detail["nodes"].as_array().unwrap().len(), 5);

    // The other nodes are unaffected: a power request on each completes (their owners' watch
    // and actors go on), and every conductor is still the same live process.
    for id in &ids[3..] {
        assert_eq!(last_error(&row(id)), "", "{:?}", row(id));
        run(&bm, &gw, &fleet, &["node", "power", "on", id]);
        let seq = fleet.spec(id).await.power_request.map_or(0, |r| r.seq);
        assert!(seq > 0, "the request is in etcd");
        fleet
            .wait_power_done(id, seq, Duration::from_secs(15))
            .await;
    }
    let snap = fleet.snapshot().await.unwrap();
    for (name, pid) in &pids {
        let proc = fleet.conductor(name);
        assert!(proc.is_running() && proc.pid() == *pid, "{name} exited");
        assert!(snap.conductor(name).is_some(), "{name} left the cluster");
    }

    // `ferric ctl node repair` shows the raw record and what is wrong with it.
    let report = fleet.ctl_ok(&["node", "repair", a_name]).await;
    assert!(report.contains("spec: UNREADABLE"), "{report}");
    assert!(report.contains("raw text garbage"), "{report}");
    assert!(
        report.contains(&format!("names/{a_name} -> {a}")),
        "{report}"
    );
    let report = fleet.ctl_ok(&["node", "repair", b]).await;
    assert!(report.contains("status: UNREADABLE"), "{report}");
    // And who owns the node, by the same rule as everyone (its bucket's holder here), as etcd
    // has it.
    let holder = snap.holder(b).map(|(h, _)| h);
    assert!(holder.is_some(), "{b} has no owner in etcd");
    let holder = holder.unwrap_or_default();
    assert!(report.contains(&format!("owner: {holder}")), "{report}");
    assert!(
        report.contains(&format!("bucket {}: held by {holder}", &b[..3])),
        "{report}"
    );

    // Recoverable: delete frees the name, which can be enrolled again.
    run(&bm, &gw, &fleet, &["node", "delete", a_name]);
    let snap = fleet.snapshot().await.unwrap();
    assert!(snap.spec(a).is_none(), "the spec is gone from etcd");
    let (_, kvs) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key(&format!("names/{a_name}")))
        .await
        .unwrap();
    assert!(kvs.is_empty(), "the name is free");
    let created = json(
        &bm,
        &gw,
        &fleet,
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            a_name,
        ],
    );
    let new_id = created["uuid"].as_str().unwrap().to_string();
    assert_ne!(&new_id, a);
    let (_, kvs) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key(&format!("names/{a_name}")))
        .await
        .unwrap();
    assert_eq!(
        kvs.first().map(|kv| kv.value.clone()),
        Some(new_id.into_bytes())
    );
    for (name, pid) in &pids {
        let proc = fleet.conductor(name);
        assert!(proc.is_running() && proc.pid() == *pid, "{name} exited");
    }
}

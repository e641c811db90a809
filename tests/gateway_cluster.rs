//! Gateways as processes in a cluster: two gateways see the same state, a SIGKILLed gateway
//! loses no request it accepted (the conductors carry every one out), and the wire protocol
//! answers malformed, oversized and racing requests with Ironic's codes and nothing lost.

use ferric_testkit::http::{api, http};
use ferric_testkit::Fleet;
use ferric_testkit::Gateway;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn create(port: u16, name: &str) -> String {
    let r = api(
        port,
        "POST",
        "/v1/nodes",
        Some(&json!({"driver": "fake-hardware", "name": name}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["uuid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn two_gateways_see_one_cluster_and_a_killed_gateway_loses_nothing() {
    let mut fleet = Fleet::new("gw-two").await;
    fleet.start_conductor("c1", &[]);
    fleet.start_conductor("c2", &[]);
    let dir = tempfile::tempdir().unwrap();
    let a = Gateway::start(&fleet, dir.path(), "gw-a", &[]);
    let b = Gateway::start(&fleet, dir.path(), "gw-b", &[]);

    let ids: Vec<String> = (0..20)
        .map(|i| create(a.port, &format!("two-{i}")))
        .collect();
    // Written through A, read through B (B follows etcd's watch; bounded wait).
    let wanted = ids.clone();
    fleet
        .wait_until(
            Duration::from_secs(20),
            "gateway B lists every node A created",
            async || {
                let r = api(b.port, "GET", "/v1/nodes?limit=1000", None);
                let got: Vec<String> = r.json()["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["uuid"].as_str().unwrap().to_string())
                    .collect();
                if wanted.iter().all(|id| got.contains(id)) {
                    Ok(())
                } else {
                    Err(format!("B lists {} of {}", got.len(), wanted.len()))
                }
            },
        )
        .await;
    // A change through B is seen through A.
    let r = api(
        b.port,
        "PATCH",
        "/v1/nodes/two-0",
        Some(r#"[{"op": "add", "path": "/extra/via", "value": "b"}]"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    fleet
        .wait_until(Duration::from_secs(20), "A shows B's change", async || {
            let r = api(a.port, "GET", "/v1/nodes/two-0", None);
            (r.json()["extra"]["via"] == "b")
                .then_some(())
                .ok_or(r.body)
        })
        .await;

    // Concurrent PATCHes of one node through both gateways: each is 200 (retried
    // compare-and-swap) or 409 (too much contention), and every 200 is in etcd.
    let mut handles = Vec::new();
    for i in 0..16 {
        let port = if i % 2 == 0 { a.port } else { b.port };
        handles.push(std::thread::spawn(move || {
            let body = format!(r#"[{{"op": "add", "path": "/extra/k{i}", "value": {i}}}]"#);
            (i, api(port, "PATCH", "/v1/nodes/two-1", Some(&body)).status)
        }));
    }
    let results: Vec<(i32, u16)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let snap = fleet.snapshot().await.unwrap();
    let extra: Value = serde_json::from_str(&snap.spec(&ids[1]).unwrap().unwrap().extra).unwrap();
    for (i, status) in &results {
        assert!(*status == 200 || *status == 409, "{results:?}");
        if *status == 200 {
            assert_eq!(
                extra[format!("k{i}")],
                *i,
                "accepted patch k{i} lost: {extra}"
            );
        }
    }

    // Wait until both conductors run all nodes, then send a burst of power requests through A
    // and SIGKILL A right after the last 202: every accepted request is in etcd and carried out.
    fleet
        .wait_until(
            Duration::from_secs(60),
            "every node is reserved",
            async || {
                let snap = fleet.snapshot().await?;
                let held = ids.iter().filter(|id| snap.holder(id).is_some()).count();
                (held == ids.len())
                    .then_some(())
                    .ok_or(format!("{held} held"))
            },
        )
        .await;
    let mut accepted = Vec::new();
    for id in &ids {
        let r = api(
            a.port,
            "PUT",
            &format!("/v1/nodes/{id}/states/power"),
            Some(r#"{"target": "power on"}"#),
        );
        if r.status == 202 {
            accepted.push(id.clone());
        } else {
            assert_eq!(r.status, 409, "{}", r.body);
        }
    }
    a.proc.signal(Signal::SIGKILL);
    assert!(a.proc.wait_exit(Duration::from_secs(5)).await.is_some());
    assert!(!accepted.is_empty());
    let snap = fleet.snapshot().await.unwrap();
    for id in &accepted {
        let spec = snap.spec(id).unwrap().unwrap();
        assert!(
            spec.power_request.is_some(),
            "accepted request for {id} is not in etcd"
        );
    }
    let accepted2 = accepted.clone();
    fleet
        .wait_until(
            Duration::from_secs(60),
            "every accepted power request is carried out",
            async || {
                let r = api(
                    b.port,
                    "GET",
                    "/v1/nodes?limit=1000&fields=uuid,power_state",
                    None,
                );
                let on = r.json()["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| {
                        accepted2.iter().any(|id| n["uuid"] == id.as_str())
                            && n["power_state"] == "power on"
                    })
                    .count();
                (on == accepted2.len())
                    .then_some(())
                    .ok_or(format!("{on} of {} on", accepted2.len()))
            },
        )
        .await;
}

#[tokio::test]
async fn wire_errors_have_ironic_codes_and_bodies() {
    let mut fleet = Fleet::new("gw-wire").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw-w", &[]);
    let id = create(gw.port, "wire-0");

    let r = api(gw.port, "POST", "/v1/nodes", Some("{\"driver\": "));
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("not valid JSON"), "{}", r.fault());
    let r = api(
        gw.port,
        "POST",
        "/v1/nodes",
        Some(r#"{"driver": "fake-hardware", "size": 3}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("'size' was unexpected"), "{}", r.fault());
    let r = api(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{id}/states/power"),
        Some(r#"{"target": 7}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("target"), "{}", r.fault());
    let r = api(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{id}/states/provision"),
        Some(r#"{"target": "teleport"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("teleport"), "{}", r.fault());
    // A 3 MiB body: 413 before it is read in full.
    let big = format!(
        r#"{{"driver": "fake-hardware", "extra": {{"x": "{}"}}}}"#,
        "y".repeat(3 << 20)
    );
    let r = http(
        gw.port,
        "POST",
        "/v1/nodes",
        &[("X-OpenStack-Ironic-API-Version", "latest")],
        Some(big.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.fault().contains("larger than"));
    let r = http(
        gw.port,
        "GET",
        "/v1/nodes",
        &[("X-OpenStack-Ironic-API-Version", "1.200")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 406);
    assert_eq!(
        r.header("X-OpenStack-Ironic-API-Maximum-Version")
            .as_deref(),
        Some("1.95")
    );
    assert!(r.fault().contains("[1.1, 1.95]"));
    let snap = fleet.snapshot().await.unwrap();
    assert_eq!(snap.nodes.len(), 1, "refused requests created nothing");

    // A provision request racing a PATCH of the same node. Whichever lands first wins: a PATCH
    // after the verb is refused like Ironic refuses changes during a transition (409); a PATCH
    // before it is applied and kept. Either way nothing accepted is lost.
    let port = gw.port;
    let id2 = id.clone();
    let t = std::thread::spawn(move || {
        api(
            port,
            "PATCH",
            &format!("/v1/nodes/{id2}"),
            Some(r#"[{"op": "add", "path": "/extra/race", "value": 1}]"#),
        )
    });
    let r = api(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{id}/states/provision"),
        Some(r#"{"target": "manage"}"#),
    );
    let patched = t.join().unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let snap = fleet.snapshot().await.unwrap();
    let spec = snap.spec(&id).unwrap().unwrap();
    assert!(
        spec.provision_request.is_some(),
        "the accepted verb is in etcd"
    );
    match patched.status {
        200 => assert!(spec.extra.contains("race"), "the accepted patch is in etcd"),
        409 => {
            assert!(
                patched.fault().contains("state transition"),
                "{}",
                patched.fault()
            );
            assert!(
                !spec.extra.contains("race"),
                "a refused patch changed the node"
            );
        }
        other => panic!("PATCH racing a verb answered {other}: {}", patched.body),
    }

    // The event stream of the extension API answers with server-sent events.
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/ferric/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut text = String::new();
    while !text.contains(&id) && start.elapsed() < Duration::from_secs(10) {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains(&id), "{text}");
}

#[tokio::test]
async fn noauth_is_refused_off_loopback_unless_forced() {
    let fleet = Fleet::new("gw-noauth").await;
    let dir = tempfile::tempdir().unwrap();
    let port = ferric_testkit::free_port();
    let args: Vec<String> = [
        "gateway",
        "--etcd",
        &fleet.url(),
        "--prefix",
        &fleet.prefix,
        "--listen",
        &format!("0.0.0.0:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = ferric_testkit::Proc::spawn(
        "gw-open",
        env!("CARGO_BIN_EXE_ferric"),
        &args,
        dir.path().join("gw-open.log"),
    );
    let status = p
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "a noauth gateway on 0.0.0.0 kept running\n{}",
                p.log_tail(20)
            )
        });
    assert!(!status.success());
    assert!(p.log().contains("--allow-insecure-noauth"), "{}", p.log());
    // A missing auth file for http_basic is an error at start, not an open door.
    let args: Vec<String> = [
        "gateway",
        "--etcd",
        &fleet.url(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--auth",
        "http_basic",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = ferric_testkit::Proc::spawn(
        "gw-basic",
        env!("CARGO_BIN_EXE_ferric"),
        &args,
        dir.path().join("gw-basic.log"),
    );
    let status = p.wait_exit(Duration::from_secs(20)).await.expect("exits");
    assert!(!status.success());
    assert!(p.log().contains("--auth-file"), "{}", p.log());
}

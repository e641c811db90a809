//! `ferric gateway --auth keystone` against a real Keystone (PyPI `keystone`, sqlite, fernet
//! tokens) that the test bootstraps and serves: tokens issued by Keystone to an admin, a system
//! reader, Nova's service user and a project member; the real `baremetal` CLI with Keystone
//! password auth; invalid, revoked and unvalidatable tokens. What each caller may do is checked
//! against Ironic's default policies, and what happened against etcd.

use ferric_testkit::cli::Baremetal;
use ferric_testkit::http::{http, Reply};
use ferric_testkit::keystone::{Keystone, Scope, ADMIN_PASSWORD};
use ferric_testkit::{Fleet, Gateway};
use std::time::{Duration, Instant};

const CLI_TIMEOUT: Duration = Duration::from_secs(180);
const VERSION: (&str, &str) = ("X-OpenStack-Ironic-API-Version", "1.95");

fn call(gw: &Gateway, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let mut headers = vec![VERSION, ("Content-Type", "application/json")];
    if let Some(t) = token {
        headers.push(("X-Auth-Token", t));
    }
    http(gw.port, method, path, &headers, body.map(str::as_bytes)).expect("gateway answers")
}

/// keystonemiddleware's 401: its JSON body and a challenge naming Keystone.
fn assert_keystone_401(r: &Reply, ks: &Keystone, what: &str) {
    assert_eq!(r.status, 401, "{what}: {} {}", r.status, r.body);
    let body = r.json();
    assert_eq!(body["error"]["code"], 401, "{what}: {}", r.body);
    assert_eq!(
        body["error"]["message"], "The request you have made requires authentication.",
        "{what}"
    );
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(format!("Keystone uri=\"{}\"", ks.url).as_str()),
        "{what}"
    );
}

/// Reads `/v1/ferric/events` with `token` (resuming after `after`) until `until` appears
/// (bounded); says on `ready` when the stream has opened.
fn read_events(
    port: u16,
    token: &str,
    after: Option<i64>,
    until: &str,
    ready: std::sync::mpsc::Sender<()>,
) -> String {
    use std::io::{Read, Write};
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let resume = after.map_or(String::new(), |r| format!("Last-Event-ID: {r}\r\n"));
    let req = format!(
        "GET /v1/ferric/events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n{resume}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut text = String::new();
    let mut said = false;
    while !text.contains(until) && start.elapsed() < Duration::from_secs(30) {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // Quiet for a while (read timeout): go on waiting, within the bound.
            Err(_) => continue,
        };
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !said && text.contains("event: ready") {
            said = true;
            let _ = ready.send(());
        }
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[tokio::test]
async fn keystone_tokens_and_ironic_policies() {
    let mut fleet = Fleet::new("keystone-auth").await;
    fleet.start_conductor("c1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let ks = Keystone::start(dir.path()).await;
    // The gateway's own user validates tokens; `service` is the role Keystone's
    // `identity:validate_token` policy grants that to.
    ks.user("ironic", "ironic-pw", "service", Scope::Project("service"))
        .await;
    ks.user("nova", "nova-pw", "service", Scope::Project("service"))
        .await;
    ks.user("auditor", "auditor-pw", "reader", Scope::System)
        .await;
    ks.user("alice", "alice-pw", "member", Scope::Project("demo"))
        .await;
    ks.user("bob", "bob-pw", "manager", Scope::Project("demo"))
        .await;
    let gw = Gateway::start(
        &fleet,
        dir.path(),
        "gw-ks",
        &[
            "--auth",
            "keystone",
            "--keystone-url",
            &ks.url,
            "--keystone-user",
            "ironic",
            "--keystone-password",
            "ironic-pw",
            "--keystone-cache-time",
            "2",
            "--compute-callers",
            "role:service",
        ],
    );

    // No token, and tokens Keystone never issued: keystonemiddleware's 401.
    assert_keystone_401(&call(&gw, "GET", "/v1/nodes", None, None), &ks, "no token");
    assert_keystone_401(
        &call(&gw, "GET", "/v1/nodes", Some("gAAAAABnot-a-token"), None),
        &ks,
        "garbage token",
    );
    // Version discovery stays public.
    assert_eq!(call(&gw, "GET", "/v1", None, None).status, 200);

    // The admin, through the real `baremetal` CLI with Keystone password auth and a system
    // scoped token, finding the gateway in Keystone's catalog.
    ks.register("baremetal", &gw.url).await;
    let bm = Baremetal::start();
    let admin_env = [
        ("OS_AUTH_TYPE", "password"),
        ("OS_AUTH_URL", &format!("{}/v3", ks.url)),
        ("OS_USERNAME", "admin"),
        ("OS_PASSWORD", ADMIN_PASSWORD),
        ("OS_USER_DOMAIN_ID", "default"),
        ("OS_SYSTEM_SCOPE", "all"),
        ("OS_INTERFACE", "public"),
    ];
    let out = bm.run(
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "ks-node",
            "-f",
            "value",
            "-c",
            "uuid",
        ],
        &admin_env,
        CLI_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "admin could not create a node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uuid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let spec = fleet.spec(&uuid).await;
    assert_eq!(spec.name.as_ref().map(|n| n.as_str()), Some("ks-node"));

    // A system reader reads and may not change.
    let reader = ks.token("auditor", "auditor-pw", Scope::System).await;
    let r = call(&gw, "GET", "/v1/nodes", Some(&reader), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["nodes"][0]["uuid"], uuid.as_str());
    let patch = r#"[{"op": "add", "path": "/extra/rack", "value": "4"}]"#;
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&reader),
        Some(patch),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.fault().contains("may only read"), "{}", r.fault());
    assert_eq!(
        fleet.spec(&uuid).await.extra,
        "{}",
        "the reader's PATCH changed nothing"
    );

    // Nova's user (`service` in the service project) acts on every node but does not enroll or
    // delete; what it asks for is recorded under its Keystone name.
    let nova = ks.token("nova", "nova-pw", Scope::Project("service")).await;
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&nova),
        Some(patch),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let extra: serde_json::Value = serde_json::from_str(&fleet.spec(&uuid).await.extra).unwrap();
    assert_eq!(extra["rack"], "4");
    let r = call(
        &gw,
        "DELETE",
        &format!("/v1/nodes/{uuid}"),
        Some(&nova),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        &gw,
        "POST",
        "/v1/nodes",
        Some(&nova),
        Some(r#"{"driver": "fake-hardware"}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        &gw,
        "PUT",
        &format!("/v1/nodes/{uuid}/states/power"),
        Some(&nova),
        Some(r#"{"target": "power on"}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let spec = fleet.spec(&uuid).await;
    assert_eq!(
        spec.power_request.as_ref().map(|p| p.requested_by.as_str()),
        Some("api:nova"),
        "the power request is recorded as Nova's"
    );

    // A project member sees only the nodes its project owns or leases; others do not exist
    // for it. As the owner's member it changes what Ironic lets owners' members change; as a
    // lessee it sees the fields Ironic keeps to owners redacted.
    let demo = ks.project("demo").await;
    let alice = ks.token("alice", "alice-pw", Scope::Project("demo")).await;
    let r = call(&gw, "GET", "/v1/nodes", Some(&alice), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["nodes"],
        serde_json::json!([]),
        "no node is demo's yet"
    );
    let r = call(&gw, "GET", &format!("/v1/nodes/{uuid}"), Some(&alice), None);
    assert_eq!(r.status, 404, "{}", r.body);
    let admin = ks.token("admin", ADMIN_PASSWORD, Scope::System).await;
    let leased = {
        let body = format!(
            r#"{{"driver": "fake-hardware", "name": "leased", "lessee": "{demo}", "driver_info": {{"x": "y"}}}}"#
        );
        let r = call(&gw, "POST", "/v1/nodes", Some(&admin), Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["uuid"].as_str().unwrap().to_string()
    };
    let set_owner = format!(r#"[{{"op": "add", "path": "/owner", "value": "{demo}"}}]"#);
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&admin),
        Some(&set_owner),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&gw, "GET", "/v1/nodes?fields=uuid", Some(&alice), None);
    let mut seen: Vec<String> = r.json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uuid"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut want = vec![uuid.clone(), leased.clone()];
    want.sort();
    assert_eq!(
        seen, want,
        "demo's member sees the owned and the leased node"
    );
    let owned = call(&gw, "GET", &format!("/v1/nodes/{uuid}"), Some(&alice), None).json();
    assert!(owned["driver_info"].is_object() && owned["driver_info"].get("content").is_none());
    let lessee_view = call(
        &gw,
        "GET",
        &format!("/v1/nodes/{leased}"),
        Some(&alice),
        None,
    )
    .json();
    assert_eq!(
        lessee_view["driver_info"]["content"],
        "** Redacted - requires baremetal:node:get:driver_info permission. **"
    );
    assert!(lessee_view["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("Redacted")));
    let extra = r#"[{"op": "add", "path": "/extra/team", "value": "demo"}]"#;
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{leased}"),
        Some(&alice),
        Some(extra),
    );
    assert_eq!(r.status, 200, "a lessee's member may set extra: {}", r.body);
    let info = r#"[{"op": "add", "path": "/driver_info/x", "value": "z"}]"#;
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{leased}"),
        Some(&alice),
        Some(info),
    );
    assert_eq!(
        r.status, 403,
        "a lessee may not change driver_info: {}",
        r.body
    );
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&alice),
        Some(info),
    );
    assert_eq!(r.status, 200, "an owner's member may: {}", r.body);
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&alice),
        Some(&set_owner),
    );
    assert_eq!(r.status, 403, "only the system changes owner: {}", r.body);
    let r = call(
        &gw,
        "DELETE",
        &format!("/v1/nodes/{uuid}"),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 403, "a member does not delete: {}", r.body);
    let r = call(&gw, "GET", "/v1/conductors", Some(&alice), None);
    assert_eq!(r.status, 403, "conductors are the system's: {}", r.body);
    // Ports follow their node: demo's member reads the ports of demo's nodes only.
    let other = {
        let r = call(
            &gw,
            "POST",
            "/v1/nodes",
            Some(&admin),
            Some(r#"{"driver": "fake-hardware", "name": "other"}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["uuid"].as_str().unwrap().to_string()
    };
    let mut port_of = std::collections::HashMap::new();
    for (node, mac) in [(&uuid, "52:54:00:dd:00:01"), (&other, "52:54:00:dd:00:02")] {
        let body = format!(r#"{{"node_uuid": "{node}", "address": "{mac}"}}"#);
        let r = call(&gw, "POST", "/v1/ports", Some(&admin), Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
        port_of.insert(node.clone(), r.json()["uuid"].as_str().unwrap().to_string());
    }
    let r = call(&gw, "GET", "/v1/ports", Some(&alice), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let ports: Vec<String> = r.json()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ports,
        vec!["52:54:00:dd:00:01"],
        "demo's member sees its node's port only"
    );
    let r = call(
        &gw,
        "GET",
        &format!("/v1/ports/{}", port_of[&other]),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        &gw,
        "GET",
        &format!("/v1/ports/{}", port_of[&uuid]),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &gw,
        "GET",
        &format!("/v1/nodes/{other}/ports"),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let body = format!(r#"{{"node_uuid": "{uuid}", "address": "52:54:00:dd:00:03"}}"#);
    let r = call(&gw, "POST", "/v1/ports", Some(&alice), Some(&body));
    assert_eq!(r.status, 403, "{}", r.body);
    // The owner's manager creates, changes and deletes its node's ports (Ironic's
    // SYSTEM_ADMIN_OR_OWNER_ADMIN); not those of a node it only leases, nor of another's node.
    let bob = ks.token("bob", "bob-pw", Scope::Project("demo")).await;
    let r = call(&gw, "POST", "/v1/ports", Some(&bob), Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let bobs = r.json()["uuid"].as_str().unwrap().to_string();
    let pxe_off = r#"[{"op": "replace", "path": "/pxe_enabled", "value": false}]"#;
    let r = call(
        &gw,
        "PATCH",
        &format!("/v1/ports/{bobs}"),
        Some(&bob),
        Some(pxe_off),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &gw,
        "GET",
        "/v1/ports/detail?address=52:54:00:dd:00:03",
        Some(&admin),
        None,
    );
    assert_eq!(r.json()["ports"][0]["pxe_enabled"], false, "{}", r.body);
    let on_leased = format!(r#"{{"node_uuid": "{leased}", "address": "52:54:00:dd:00:04"}}"#);
    let r = call(&gw, "POST", "/v1/ports", Some(&bob), Some(&on_leased));
    assert_eq!(r.status, 403, "a lessee's manager: {}", r.body);
    let on_other = format!(r#"{{"node_uuid": "{other}", "address": "52:54:00:dd:00:05"}}"#);
    let r = call(&gw, "POST", "/v1/ports", Some(&bob), Some(&on_other));
    assert_eq!(
        r.status, 400,
        "another project's node does not exist: {}",
        r.body
    );
    let r = call(
        &gw,
        "DELETE",
        &format!("/v1/ports/{}", port_of[&other]),
        Some(&bob),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        &gw,
        "DELETE",
        &format!("/v1/ports/{bobs}"),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 403, "a member does not delete ports: {}", r.body);
    let r = call(
        &gw,
        "DELETE",
        &format!("/v1/ports/{bobs}"),
        Some(&bob),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // Volume targets: the lessee's manager may create them too.
    let target = format!(
        r#"{{"node_uuid": "{leased}", "volume_type": "iscsi", "boot_index": 0, "volume_id": "vol-1"}}"#
    );
    let r = call(
        &gw,
        "POST",
        "/v1/volume/targets",
        Some(&alice),
        Some(&target),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(&gw, "POST", "/v1/volume/targets", Some(&bob), Some(&target));
    assert_eq!(r.status, 201, "{}", r.body);
    // What etcd holds: the port bob deleted is gone, the one on another node is untouched.
    let (_, ports) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key("ports/"))
        .await
        .unwrap();
    let keys: Vec<String> = ports.into_iter().map(|kv| kv.key).collect();
    assert!(!keys.iter().any(|k| k.ends_with(&bobs)), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with(&port_of[&other])),
        "{keys:?}"
    );
    let leased_spec = fleet.spec(&leased).await;
    assert_eq!(
        leased_spec.driver_info, r#"{"x":"y"}"#,
        "the lessee's refused PATCH changed nothing"
    );
    assert!(leased_spec.extra.contains("demo"));

    // A revoked token: one never used is refused at once; one already validated is trusted
    // for at most the cache time (2 s here), then refused.
    let unused = ks.token("auditor", "auditor-pw", Scope::System).await;
    ks.revoke(&unused).await;
    assert_keystone_401(
        &call(&gw, "GET", "/v1/nodes", Some(&unused), None),
        &ks,
        "revoked before use",
    );
    ks.revoke(&reader).await;
    let revoked_at = Instant::now();
    let refused = loop {
        let r = call(&gw, "GET", "/v1/nodes", Some(&reader), None);
        if r.status == 401 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(30),
            "a revoked token is still accepted after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_keystone_401(&refused, &ks, "revoked after use");

    // The dashboard's sign-in with user, password and project: the gateway gets the user a
    // project-scoped token from Keystone, as Horizon does; the session cookie then stands for
    // that caller with the project's policies (what alice's own token sees, no more).
    let json = [("Content-Type", "application/json")];
    let r = http(
        gw.port,
        "POST",
        "/dashboard/api/session",
        &json,
        Some(br#"{"username": "alice", "password": "alice-pw", "project": "demo"}"#),
    )
    .expect("gateway answers");
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.json();
    assert_eq!(session["user"], "alice", "{session}");
    assert_eq!(session["role"], "member", "{session}");
    assert!(session["project"].is_string(), "{session}");
    let set_cookie = r.header("set-cookie").unwrap_or_default();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
    let with_cookie = |method: &str, path: &str, csrf: Option<&str>, body: Option<&str>| {
        let mut h = vec![
            VERSION,
            ("Content-Type", "application/json"),
            ("Cookie", cookie.as_str()),
        ];
        if let Some(t) = csrf {
            h.push(("X-CSRF-Token", t));
        }
        http(gw.port, method, path, &h, body.map(str::as_bytes)).expect("gateway answers")
    };
    let by_cookie = with_cookie("GET", "/v1/ferric/summary", None, None);
    let by_token = call(&gw, "GET", "/v1/ferric/summary", Some(&alice), None);
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);
    assert_eq!(
        by_cookie.json()["nodes"],
        by_token.json()["nodes"],
        "{}",
        by_cookie.body
    );
    assert_eq!(
        with_cookie("GET", "/v1/nodes", None, None).json()["nodes"],
        call(&gw, "GET", "/v1/nodes", Some(&alice), None).json()["nodes"]
    );
    // A write with the cookie needs the session's CSRF token; a member's write is then judged
    // by the project's policies like her token's.
    let maint = format!("/v1/nodes/{uuid}/maintenance");
    let r = with_cookie("PUT", &maint, None, Some(r#"{"reason": "x"}"#));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.fault().contains("CSRF"), "{}", r.fault());
    let csrf = session["csrf"].as_str().unwrap_or_default();
    let by_cookie = with_cookie("PUT", &maint, Some(csrf), Some(r#"{"reason": "x"}"#));
    let by_token = call(&gw, "PUT", &maint, Some(&alice), Some(r#"{"reason": "x"}"#));
    assert_eq!(
        by_cookie.status, by_token.status,
        "{} / {}",
        by_cookie.body, by_token.body
    );
    // The change stream shows a project-scoped caller its project's nodes only: through the
    // gateway's shared watch (from now) and through a watch of its own (resumed from long ago),
    // never another project's node or the conductors.
    let foreign = {
        let r = call(
            &gw,
            "POST",
            "/v1/nodes",
            Some(&admin),
            Some(r#"{"driver": "fake-hardware", "name": "foreign"}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["uuid"].as_str().unwrap().to_string()
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let live = std::thread::spawn({
        let (port, alice) = (gw.port, alice.clone());
        move || read_events(port, &alice, None, "stream-mark", ready_tx)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("alice's stream opens");
    // What a stream shows comes in revision order: once demo's node shows the change made
    // after the foreign node's, the foreign node's would have come before it.
    for (node, reason) in [(&foreign, "foreign-mark"), (&uuid, "stream-mark")] {
        let r = call(
            &gw,
            "PUT",
            &format!("/v1/nodes/{node}/maintenance"),
            Some(&admin),
            Some(&format!(r#"{{"reason": "{reason}"}}"#)),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let (tx, _) = std::sync::mpsc::channel();
    let resumed = read_events(gw.port, &alice, Some(1), "stream-mark", tx);
    let live = live.join().expect("the stream reader");
    for (how, text) in [("live", &live), ("resumed", &resumed)] {
        assert!(text.contains("stream-mark"), "{how}: {text}");
        assert!(
            !text.contains(&foreign) && !text.contains("foreign-mark"),
            "{how}: alice's stream shows another project's node: {text}"
        );
        assert!(
            !text.contains(r#""record":"conductor""#),
            "{how}: alice's stream shows conductors: {text}"
        );
    }
    assert!(
        resumed.contains(&leased),
        "the resumed stream shows the leased node's enrollment: {resumed}"
    );
    let r = call(
        &gw,
        "GET",
        &format!("/v1/ferric/events?node={foreign}"),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // Wrong credentials: 401, and no session.
    let r = http(
        gw.port,
        "POST",
        "/dashboard/api/session",
        &json,
        Some(br#"{"username": "alice", "password": "wrong", "project": "demo"}"#),
    )
    .expect("gateway answers");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.header("set-cookie").is_none(),
        "{:?}",
        r.header("set-cookie")
    );

    // Keystone down: a token the gateway has not validated is 503 (retry), not 401, so no
    // client throws its credentials away.
    let fresh = ks.token("nova", "nova-pw", Scope::Project("service")).await;
    drop(ks);
    let r = call(&gw, "GET", "/v1/nodes", Some(&fresh), None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.fault().contains("authentication service"),
        "{}",
        r.fault()
    );
    assert!(
        !gw.proc.log().contains("nova-pw")
            && !gw.proc.log().contains("ironic-pw")
            && !gw.proc.log().contains("alice-pw"),
        "a password reached the gateway's log"
    );
}

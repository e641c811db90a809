//! Serial consoles through the gateway against a real etcd: Ironic's `states/console` (shapes,
//! errors, what etcd holds after a PUT) and the console websocket over real sockets, proxied to
//! stand-in conductor console servers (small axum websocket servers on 127.0.0.1:0 that log
//! what they see: the secret, the mode, every frame) and, end to end, to the conductor's real
//! console server (`ferric_console`) with its in-process fake console: bytes both ways, the
//! owner changing (4001) or dying, the bound on reconnecting, close codes passed on, 1009, 4429,
//! the refusals before the upgrade, and a browser's credentials offered as a subprotocol.

mod support;

use axum::extract::ws::{CloseFrame, Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferric_gateway::Auth;
use ferric_testkit::viewer::{self, close_frame, next, next_json, until_type, Ws, WAIT};
use futures::SinkExt;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::World;
use tokio::sync::{broadcast, mpsc};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-0123456789";

fn tokens() -> Auth {
    Auth::token_file(&format!("{ADMIN} admin\n{READER} reader\n"), "tokens").expect("tokens")
}

// --- a stand-in conductor console server ------------------------------------------------------

#[derive(Debug)]
enum Seen {
    /// A viewer was accepted: the Authorization header and the mode it asked for.
    Connected {
        auth: String,
        mode: String,
        node: String,
    },
    /// A frame from the gateway.
    Frame(Message),
    /// The session ended: "closed by the gateway (<code>)", "dropped", "closed by us".
    Ended(String),
}

#[derive(Debug, Clone)]
enum Cmd {
    Close(u16, String),
    /// Drop every connection without a close frame.
    Kill,
    /// Send this many 64 KiB binary frames.
    Flood(usize),
    /// Stop reading and writing, keeping the connection open (SIGSTOP, a partition).
    Freeze,
}

#[derive(Clone)]
struct FakeState {
    name: String,
    secret: String,
    seen: mpsc::UnboundedSender<Seen>,
    cmd: broadcast::Sender<Cmd>,
    /// Answer this many upgrade requests with 404 ("no console of this node runs here").
    refuse: Arc<AtomicUsize>,
}

struct FakeConsole {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    state: FakeState,
    server: tokio::task::JoinHandle<()>,
}

impl FakeConsole {
    async fn start(name: &str, secret: &str) -> FakeConsole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let state = FakeState {
            name: name.into(),
            secret: secret.into(),
            seen: tx,
            cmd: broadcast::channel(16).0,
            refuse: Arc::new(AtomicUsize::new(0)),
        };
        let app = axum::Router::new()
            .route("/console/{uuid}/ws", axum::routing::get(fake_viewer))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeConsole {
            addr,
            seen,
            state,
            server,
        }
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn refuse(&self, n: usize) {
        self.state.refuse.store(n, Ordering::SeqCst);
    }

    fn send(&self, cmd: Cmd) {
        let _ = self.state.cmd.send(cmd);
    }

    /// The conductor dies: connections dropped, nothing listening any more.
    fn kill(&self) {
        self.send(Cmd::Kill);
        self.server.abort();
    }

    async fn next(&mut self) -> Seen {
        timeout(WAIT, self.seen.recv())
            .await
            .expect("the fake console saw something in time")
            .expect("fake console alive")
    }

    async fn connected(&mut self) -> (String, String, String) {
        loop {
            if let Seen::Connected { auth, mode, node } = self.next().await {
                return (auth, mode, node);
            }
        }
    }

    async fn frame(&mut self) -> Message {
        loop {
            match self.next().await {
                Seen::Frame(m) => return m,
                Seen::Connected { .. } => {}
                Seen::Ended(why) => panic!("session ended ({why}) while waiting for a frame"),
            }
        }
    }

    async fn ended(&mut self) -> String {
        loop {
            if let Seen::Ended(why) = self.next().await {
                return why;
            }
        }
    }
}

impl Drop for FakeConsole {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn fake_viewer(
    State(f): State<FakeState>,
    Path(node): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if auth != format!("Bearer {}", f.secret) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong console secret").into_response();
    }
    if f.refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::NOT_FOUND, "no console of this node runs here").into_response();
    }
    let mode = q.get("mode").cloned().unwrap_or_default();
    let _ = f.seen.send(Seen::Connected {
        auth,
        mode: mode.clone(),
        node: node.clone(),
    });
    ws.on_upgrade(move |socket| fake_session(f, socket, node, mode))
}

async fn fake_session(f: FakeState, mut socket: WebSocket, node: String, mode: String) {
    let mut cmds = f.cmd.subscribe();
    let hello = json!({"type": "hello", "node": node, "conductor": f.name, "mode": mode});
    if socket
        .send(AxMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let ended = loop {
        tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(AxMessage::Binary(b))) => {
                    let _ = f.seen.send(Seen::Frame(Message::Binary(b.clone())));
                    let echo = [b"echo:".as_slice(), &b].concat();
                    if socket.send(AxMessage::Binary(echo.into())).await.is_err() {
                        break "dropped".to_string();
                    }
                }
                Some(Ok(AxMessage::Text(t))) => {
                    let _ = f.seen.send(Seen::Frame(Message::Text(t.as_str().into())));
                    if socket.send(AxMessage::Text(format!("echo:{}", t.as_str()).into())).await.is_err() {
                        break "dropped".to_string();
                    }
                }
                Some(Ok(AxMessage::Close(c))) => {
                    break format!("closed by the gateway ({})", c.map_or(1005, |c| c.code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break "dropped".to_string(),
            },
            c = cmds.recv() => match c {
                Ok(Cmd::Close(code, reason)) => {
                    let _ = socket.send(AxMessage::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    let _ = timeout(Duration::from_secs(2), async {
                        while let Some(Ok(_)) = socket.recv().await {}
                    }).await;
                    break "closed by us".to_string();
                }
                Ok(Cmd::Flood(n)) => {
                    let mut failed = false;
                    for _ in 0..n {
                        let frame = AxMessage::Binary(vec![b'x'; 64 * 1024].into());
                        match timeout(WAIT, socket.send(frame)).await {
                            Ok(Ok(())) => {}
                            _ => {
                                failed = true;
                                break;
                            }
                        }
                    }
                    if failed {
                        break "dropped while flooding".to_string();
                    }
                }
                Ok(Cmd::Freeze) => {
                    while !matches!(cmds.recv().await, Ok(Cmd::Kill) | Err(_)) {}
                    break "killed".to_string();
                }
                Ok(Cmd::Kill) | Err(_) => break "killed".to_string(),
            },
        }
    };
    let _ = f.seen.send(Seen::Ended(ended));
}

// --- a viewer ---------------------------------------------------------------------------------

fn ws_url(addr: SocketAddr, id: &str, query: &str) -> String {
    format!("ws://{addr}/v1/nodes/{id}/console/ws{query}")
}

/// Opens a viewer; Err((status, Ironic faultstring)) when refused before the upgrade.
async fn try_viewer(url: &str, token: Option<&str>) -> Result<Ws, (u16, String)> {
    viewer::connect_bearer(url, token)
        .await
        .map_err(|r| (r.status, r.fault()))
}

/// Opens a viewer sending `headers`; also the upgrade's response headers.
async fn try_viewer_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, HeaderMap), (u16, String)> {
    viewer::connect(url, headers)
        .await
        .map_err(|r| (r.status, r.fault()))
}

async fn viewer(addr: SocketAddr, id: &str) -> Ws {
    try_viewer(&ws_url(addr, id, ""), None)
        .await
        .expect("viewer accepted")
}

/// One world with stand-in conductors `c1` (and `c2`) serving consoles, a node held by `c1`
/// with its console enabled, and the gateway on a loopback port.
struct Rig {
    w: World,
    id: String,
    secret: String,
    c1: FakeConsole,
    c2: FakeConsole,
    addr: SocketAddr,
    /// Dropping it shuts the gateway down.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn rig(reconnect: Duration) -> Rig {
    let mut w = World::with_config(Auth::NoAuth, |c| c.console_reconnect = reconnect).await;
    let secret = w.cluster.console_secret().await.expect("secret");
    let c1 = FakeConsole::start("c1", &secret).await;
    let c2 = FakeConsole::start("c2", &secret).await;
    w.start_conductor_at("c1", &c1.address()).await;
    w.start_conductor_at("c2", &c2.address()).await;
    let id = w.enroll(json!({"driver": "fake-hardware"})).await;
    w.own("c1", &id).await;
    w.call(
        "PUT",
        &format!("/v1/nodes/{id}/states/console"),
        Some(json!({"enabled": true})),
    )
    .await
    .expect(202);
    let (addr, stop) = w.serve().await;
    Rig {
        w,
        id,
        secret,
        c1,
        c2,
        addr,
        stop: Some(stop),
    }
}

// --- states/console ---------------------------------------------------------------------------

#[tokio::test]
async fn states_console_get_and_put_like_ironic() {
    let mut w = World::new().await;
    w.start_conductor("c1").await;
    let id = w
        .enroll(json!({"driver": "fake-hardware", "name": "con-1"}))
        .await;
    let path = format!("/v1/nodes/{id}/states/console");
    let r = w.get(&path).await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"console_enabled": false, "console_info": null})
    );

    let r = w.call("PUT", &path, Some(json!({"enabled": true}))).await;
    r.expect(202);
    assert_eq!(
        r.header("location"),
        Some(format!("http://ferric.test:6385/v1/nodes/{id}/states/console").as_str())
    );
    assert!(r.text.is_empty(), "{}", r.text);
    // The intent is in etcd's record of the node.
    let view = w.cluster.get_node(&id).await.unwrap();
    assert!(view.spec.console_enabled);

    let r = w.get(&path).await;
    r.expect(200);
    assert_eq!(r.json["console_enabled"], true);
    assert_eq!(r.json["console_info"]["type"], "websocket");
    assert_eq!(
        r.json["console_info"]["url"],
        format!("ws://ferric.test:6385/v1/nodes/{id}/console/ws")
    );
    assert_eq!(r.json["console_info"]["ferric"]["state"], "starting");
    assert_eq!(
        w.get(&format!("/v1/nodes/{id}")).await.json["console_enabled"],
        true
    );
    assert_eq!(
        w.get(&format!("/v1/nodes/{id}/states")).await.json["console_enabled"],
        true
    );

    // The same value again: accepted, nothing written.
    w.call("PUT", &path, Some(json!({"enabled": "true"})))
        .await
        .expect(202);
    assert_eq!(
        w.cluster.get_node(&id).await.unwrap().spec_rev,
        view.spec_rev
    );

    // The owner's console record shows in Ferric's extras.
    let token = w.own("c1", &id).await;
    let rec = ferric_model::ConsoleRecord {
        conductor: "c1".into(),
        address: "127.0.0.1:1".into(),
        interface: "fake".into(),
        pid: None,
        started_at_ms: 1_700_000_000_000,
        active_since_ms: Some(1_700_000_001_000),
        state: "active".into(),
        last_error: None,
        session: "fake (in-process echo terminal)".into(),
    };
    let uuid: ferric_model::NodeId = id.parse().unwrap();
    w.cluster
        .put_console(&uuid, token, w.lease_of("c1"), &rec)
        .await
        .unwrap();
    let r = w.get(&path).await;
    let extras = &r.json["console_info"]["ferric"];
    assert_eq!(extras["state"], "active", "{}", r.text);
    assert_eq!(extras["conductor"], "c1");
    assert_eq!(extras["interface"], "fake");
    assert_eq!(extras["active_since"], "2023-11-14T22:13:21.000000+00:00");

    // Maintenance does not block consoles; by name works; disabling clears the info.
    w.call(
        "PUT",
        &format!("/v1/nodes/{id}/maintenance"),
        Some(json!({"reason": "looking"})),
    )
    .await
    .expect(202);
    let r = w
        .call(
            "PUT",
            "/v1/nodes/con-1/states/console",
            Some(json!({"enabled": false})),
        )
        .await;
    r.expect(202);
    assert_eq!(
        r.header("location"),
        Some("http://ferric.test:6385/v1/nodes/con-1/states/console")
    );
    assert!(!w.cluster.get_node(&id).await.unwrap().spec.console_enabled);
    assert_eq!(
        w.get(&path).await.json,
        json!({"console_enabled": false, "console_info": null})
    );
    w.call("PUT", &path, Some(json!({"enabled": true})))
        .await
        .expect(202);
    assert_eq!(w.get(&path).await.json["console_enabled"], true);

    // The OpenAPI document describes both console endpoints.
    let doc = w.get("/v1/ferric/openapi.json").await.json;
    assert!(doc["paths"]["/v1/nodes/{node}/states/console"]["put"].is_object());
    assert!(doc["paths"]["/v1/nodes/{node}/console/ws"]["get"]["responses"]["409"].is_object());
    let shape = &doc["components"]["schemas"]["ConsoleState"]["properties"];
    assert!(shape["console_info"]["properties"]["url"].is_object());
}

#[tokio::test]
async fn states_console_refusals_in_ironic_format() {
    let mut w = World::with_auth(tokens()).await;
    let admin = [
        ("X-OpenStack-Ironic-API-Version", "1.95"),
        ("Authorization", "Bearer admin-token-0123456789"),
    ];
    let reader = [
        ("X-OpenStack-Ironic-API-Version", "1.95"),
        ("Authorization", "Bearer reader-token-0123456789"),
    ];
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(r#"{"driver": "fake-hardware"}"#),
            &admin,
        )
        .await;
    r.expect(201);
    let id = r.json["uuid"].as_str().unwrap().to_string();
    let path = format!("/v1/nodes/{id}/states/console");

    // No conductor serves the driver: enabling would wait unseen.
    w.call_with("PUT", &path, Some(r#"{"enabled": true}"#), &admin)
        .await
        .expect_error(503, "No conductor is alive");
    w.start_conductor("c1").await;

    for (body, needle) in [
        ("{}", "Missing mandatory parameter: enabled"),
        (
            r#"{"enabled": null}"#,
            "Missing mandatory parameter: enabled",
        ),
        (
            r#"{"enabled": "maybe"}"#,
            "Invalid enabled: Unrecognized value 'maybe'",
        ),
        (r#"{"enabled": 2}"#, "Invalid enabled"),
        (r#"{"enabled": {"on": true}}"#, "Invalid enabled"),
        (r#"{"enabled": true, "x": 1}"#, "Unexpected arguments: x"),
        ("[true]", "must be a JSON object"),
        ("enabled", "not valid JSON"),
    ] {
        w.call_with("PUT", &path, Some(body), &admin)
            .await
            .expect_error(400, needle);
    }
    assert!(!w.cluster.get_node(&id).await.unwrap().spec.console_enabled);

    let unknown = "/v1/nodes/4b0c8f2e-0000-4000-8000-000000000000/states/console";
    w.call_with("GET", unknown, None, &admin)
        .await
        .expect_error(404, "could not be found");
    w.call_with("PUT", unknown, Some(r#"{"enabled": true}"#), &admin)
        .await
        .expect_error(404, "could not be found");

    // Readers read; they may not switch consoles. Nobody unauthenticated does either.
    w.call_with("PUT", &path, Some(r#"{"enabled": true}"#), &reader)
        .await
        .expect_error(403, "Access was denied");
    w.call_with("GET", &path, None, &reader).await.expect(200);
    let anonymous = [("X-OpenStack-Ironic-API-Version", "1.95")];
    w.call_with("GET", &path, None, &anonymous)
        .await
        .expect_error(401, "Authentication required");
    w.call_with("PUT", &path, Some(r#"{"enabled": true}"#), &anonymous)
        .await
        .expect_error(401, "Authentication required");

    // An explicit no-console interface cannot be enabled (Ironic's UnsupportedDriverExtension).
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(r#"{"driver": "fake-hardware", "console_interface": "no-console"}"#),
            &admin,
        )
        .await;
    r.expect(201);
    let quiet = r.json["uuid"].as_str().unwrap().to_string();
    w.call_with(
        "PUT",
        &format!("/v1/nodes/{quiet}/states/console"),
        Some(r#"{"enabled": true}"#),
        &admin,
    )
    .await
    .expect_error(400, "does not support console");

    // A plain GET of the websocket is told what it is.
    w.call_with("PUT", &path, Some(r#"{"enabled": true}"#), &admin)
        .await
        .expect(202);
    w.call_with("GET", &format!("/v1/nodes/{id}/console/ws"), None, &admin)
        .await
        .expect_error(503, "No conductor holds node");
    w.own("c1", &id).await;
    w.call_with("GET", &format!("/v1/nodes/{id}/console/ws"), None, &admin)
        .await
        .expect_error(503, "serves no consoles");
}

// --- the console websocket --------------------------------------------------------------------

#[tokio::test]
async fn console_ws_passes_frames_both_ways_with_the_cluster_secret() {
    let mut r = rig(Duration::from_secs(10)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["conductor"], "c1");
    // The conductor saw the cluster's secret (as etcd holds it) and the admin's default mode.
    let (auth, mode, node) = r.c1.connected().await;
    assert_eq!(auth, format!("Bearer {}", r.secret));
    assert_eq!(mode, "rw");
    assert_eq!(node, r.id);

    ws.send(Message::Binary(b"ls -l\r".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        r.c1.frame().await,
        Message::Binary(b"ls -l\r".to_vec().into())
    );
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(b"echo:ls -l\r".to_vec().into())
    );
    // Text stays text, both ways; an empty frame (a keepalive) passes too.
    ws.send(Message::Text("uptime".into())).await.unwrap();
    assert_eq!(r.c1.frame().await, Message::Text("uptime".into()));
    assert_eq!(next(&mut ws).await, Message::Text("echo:uptime".into()));
    ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    assert_eq!(r.c1.frame().await, Message::Binary(Vec::new().into()));
    // Exactly 64 KiB is fine.
    let big = vec![b'a'; 64 * 1024];
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    assert_eq!(r.c1.frame().await, Message::Binary(big.into()));

    // The viewer's close reaches the conductor.
    ws.close(None).await.unwrap();
    let why = r.c1.ended().await;
    assert!(why.starts_with("closed by the gateway"), "{why}");

    // mode=ro is passed on.
    let mut ws = try_viewer(&ws_url(r.addr, &r.id, "?mode=ro"), None)
        .await
        .expect("ro viewer");
    assert_eq!(next_json(&mut ws).await["mode"], "ro");
    assert_eq!(r.c1.connected().await.1, "ro");
}

#[tokio::test]
async fn console_ws_refusals_before_the_upgrade() {
    let mut w = World::with_config(tokens(), |c| {
        c.console_reconnect = Duration::from_secs(1);
        c.public_url = None;
    })
    .await;
    let secret = w.cluster.console_secret().await.unwrap();
    let c1 = FakeConsole::start("c1", &secret).await;
    w.start_conductor_at("c1", &c1.address()).await;
    w.start_conductor("c-blind").await;
    let admin = [
        ("X-OpenStack-Ironic-API-Version", "1.95"),
        ("Authorization", "Bearer admin-token-0123456789"),
    ];
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(r#"{"driver": "fake-hardware"}"#),
            &admin,
        )
        .await;
    let id = r.json["uuid"].as_str().unwrap().to_string();
    let (addr, _stop) = w.serve().await;
    let url = ws_url(addr, &id, "");

    // Unauthenticated: 401 before anything else.
    assert_eq!(try_viewer(&url, None).await.unwrap_err().0, 401);
    // Unknown node: 404; console not enabled: 409 (Ironic's error body).
    let (status, fault) = try_viewer(
        &ws_url(addr, "4b0c8f2e-0000-4000-8000-000000000000", ""),
        Some(ADMIN),
    )
    .await
    .unwrap_err();
    assert_eq!(status, 404);
    assert!(fault.contains("could not be found"), "{fault}");
    let (status, fault) = try_viewer(&url, Some(ADMIN)).await.unwrap_err();
    assert_eq!(status, 409);
    assert_eq!(fault, format!("Console is not enabled for node {id}"));

    w.call_with(
        "PUT",
        &format!("/v1/nodes/{id}/states/console"),
        Some(r#"{"enabled": true}"#),
        &admin,
    )
    .await
    .expect(202);
    // The console URL follows the Host the client used (no public URL configured).
    let r = w
        .call_with(
            "GET",
            &format!("/v1/nodes/{id}/states/console"),
            None,
            &admin,
        )
        .await;
    assert_eq!(
        r.json["console_info"]["url"],
        format!("ws://ignored.test/v1/nodes/{id}/console/ws")
    );

    // Nobody holds the node; its holder serves no consoles: 503.
    let (status, fault) = try_viewer(&url, Some(ADMIN)).await.unwrap_err();
    assert_eq!(status, 503);
    assert!(fault.contains("No conductor holds node"), "{fault}");
    w.own("c-blind", &id).await;
    let (status, fault) = try_viewer(&url, Some(ADMIN)).await.unwrap_err();
    assert_eq!(status, 503);
    assert!(
        fault.contains("Conductor c-blind serves no consoles"),
        "{fault}"
    );
    w.stop_conductor("c-blind").await;
    w.own("c1", &id).await;

    // Modes: a reader gets ro by default and may not ask for rw; garbage is 400.
    let (status, fault) = try_viewer(&ws_url(addr, &id, "?mode=rw"), Some(READER))
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    assert!(fault.contains("mode"), "{fault}");
    let (status, _) = try_viewer(&ws_url(addr, &id, "?mode=write"), Some(ADMIN))
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    let (status, _) = try_viewer(&ws_url(addr, &id, "?mode=ro&x=1"), Some(ADMIN))
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    let mut c1 = c1;
    let mut ws = try_viewer(&url, Some(READER)).await.expect("reader viewer");
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    assert_eq!(c1.connected().await.1, "ro");
    let mut ws = try_viewer(&url, Some(ADMIN)).await.expect("admin viewer");
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    assert_eq!(c1.connected().await.1, "rw");

    // The holder's console server is not there (console not open yet, for longer than the
    // bound): 503 once the bound is spent, not a hung handshake.
    c1.refuse(1000);
    let started = Instant::now();
    let (status, fault) = try_viewer(&url, Some(ADMIN)).await.unwrap_err();
    assert_eq!(status, 503);
    assert!(fault.contains("HTTP 404"), "{fault}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// base64url without padding (RFC 4648 §5), as a browser's `btoa` plus two replaces makes it.
fn b64url(s: &str) -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(DIGITS[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// What a browser's `new WebSocket(url, ["ferric.console", "ferric.auth." + b64url(token)])`
/// sends.
fn browser_offer(token: &str) -> String {
    format!("ferric.console, ferric.auth.{}", b64url(token))
}

#[tokio::test]
async fn console_ws_takes_credentials_from_a_subprotocol_like_a_browser() {
    assert_eq!(b64url("admin:secret"), "YWRtaW46c2VjcmV0");
    // Digits 62 and 63 are where base64url differs ("fn5+", "Pz8/" in standard base64).
    assert_eq!(b64url("~~~"), "fn5-");
    assert_eq!(b64url("???"), "Pz8_");
    let mut w =
        World::with_config(tokens(), |c| c.console_reconnect = Duration::from_secs(5)).await;
    let secret = w.cluster.console_secret().await.unwrap();
    let mut c1 = FakeConsole::start("c1", &secret).await;
    w.start_conductor_at("c1", &c1.address()).await;
    let admin = [
        ("X-OpenStack-Ironic-API-Version", "1.95"),
        ("Authorization", "Bearer admin-token-0123456789"),
    ];
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(r#"{"driver": "fake-hardware"}"#),
            &admin,
        )
        .await;
    let id = r.json["uuid"].as_str().unwrap().to_string();
    w.own("c1", &id).await;
    w.call_with(
        "PUT",
        &format!("/v1/nodes/{id}/states/console"),
        Some(r#"{"enabled": true}"#),
        &admin,
    )
    .await
    .expect(202);
    let (addr, _stop) = w.serve().await;
    let url = ws_url(addr, &id, "");
    let protocol = |h: &HeaderMap| {
        h.get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string())
    };

    // The admin token as a subprotocol: accepted, `ferric.console` selected (never the auth
    // one), the admin's rw mode, frames both ways.
    let offer = browser_offer(ADMIN);
    let (mut ws, resp) = try_viewer_with(&url, &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .expect("admin viewer by subprotocol");
    assert_eq!(protocol(&resp).as_deref(), Some("ferric.console"));
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let (auth, mode, _) = c1.connected().await;
    assert_eq!(auth, format!("Bearer {secret}"));
    assert_eq!(mode, "rw");
    ws.send(Message::Binary(b"id\r".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(b"echo:id\r".to_vec().into())
    );
    ws.close(None).await.unwrap();

    // A reader's token: ro by default, 403 for rw (before the upgrade, Ironic's body).
    let offer = browser_offer(READER);
    let (mut ws, resp) = try_viewer_with(&url, &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .expect("reader viewer by subprotocol");
    assert_eq!(protocol(&resp).as_deref(), Some("ferric.console"));
    assert_eq!(next_json(&mut ws).await["mode"], "ro");
    assert_eq!(c1.connected().await.1, "ro");
    ws.close(None).await.unwrap();
    let (status, fault) = try_viewer_with(
        &ws_url(addr, &id, "?mode=rw"),
        &[("Sec-WebSocket-Protocol", &offer)],
    )
    .await
    .unwrap_err();
    assert_eq!(status, 403);
    assert!(fault.contains("mode rw"), "{fault}");

    // A wrong token, garbage, no credentials at all: 401 in Ironic's format.
    let wrong = browser_offer("not-a-token-0123456789");
    for (offer, expected) in [
        (wrong.as_str(), "Invalid token."),
        ("ferric.console, ferric.auth.%%%", "Invalid token."),
        ("ferric.console", "Authentication required (bearer token)."),
    ] {
        let (status, fault) = try_viewer_with(&url, &[("Sec-WebSocket-Protocol", offer)])
            .await
            .unwrap_err();
        assert_eq!((status, fault.as_str()), (401, expected), "{offer}");
    }
    let (status, _) = try_viewer(&url, None).await.unwrap_err();
    assert_eq!(status, 401);

    // Headers work as before (selecting `ferric.console` when it is offered), and a request
    // with both is judged by its header alone.
    let (mut ws, resp) = try_viewer_with(&url, &[("Authorization", &format!("Bearer {ADMIN}"))])
        .await
        .expect("admin viewer by header");
    assert_eq!(protocol(&resp), None);
    assert_eq!(next_json(&mut ws).await["mode"], "rw");
    ws.close(None).await.unwrap();
    let (mut ws, resp) = try_viewer_with(
        &url,
        &[
            ("Authorization", &format!("Bearer {READER}")),
            ("Sec-WebSocket-Protocol", &wrong),
        ],
    )
    .await
    .expect("the header decides");
    assert_eq!(protocol(&resp).as_deref(), Some("ferric.console"));
    assert_eq!(next_json(&mut ws).await["mode"], "ro");
    ws.close(None).await.unwrap();
    let (status, fault) = try_viewer_with(
        &url,
        &[
            ("Authorization", "Bearer not-a-token-0123456789"),
            ("Sec-WebSocket-Protocol", &browser_offer(ADMIN)),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!((status, fault.as_str()), (401, "Invalid token."));

    // Only the console websocket takes credentials from a subprotocol.
    let r = w
        .call_with(
            "GET",
            &format!("/v1/nodes/{id}"),
            None,
            &[("Sec-WebSocket-Protocol", &browser_offer(ADMIN))],
        )
        .await;
    r.expect_error(401, "Authentication required");
}

#[tokio::test]
async fn console_ws_follows_the_node_to_its_new_owner_after_4001() {
    let mut r = rig(Duration::from_secs(20)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    assert_eq!(next_json(&mut ws).await["conductor"], "c1");
    r.c1.connected().await;
    // The old owner no longer has the console; the new one has not opened it yet.
    r.c1.refuse(1000);
    r.c2.refuse(2);
    r.c1.send(Cmd::Close(4001, "owner changed; reconnect".into()));
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "reconnecting", "{m}");
    assert!(m["reason"].as_str().unwrap().contains("4001"), "{m}");
    // The node moves: c1's lease ends, c2 takes the reservation.
    r.w.stop_conductor("c1").await;
    r.w.own("c2", &r.id).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m, json!({"type": "reconnected", "conductor": "c2"}));
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["conductor"], "c2");
    let (auth, mode, _) = r.c2.connected().await;
    assert_eq!(auth, format!("Bearer {}", r.secret));
    assert_eq!(mode, "rw");
    ws.send(Message::Binary(b"after".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        r.c2.frame().await,
        Message::Binary(b"after".to_vec().into())
    );
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(b"echo:after".to_vec().into())
    );
}

#[tokio::test]
async fn console_ws_reconnects_when_the_conductor_dies() {
    let mut r = rig(Duration::from_secs(20)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    assert_eq!(next_json(&mut ws).await["conductor"], "c1");
    r.c1.connected().await;
    // SIGKILL, as far as the gateway can tell: the connection drops, nothing listens.
    r.c1.kill();
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "reconnecting", "{m}");
    // Its lease expires (here: is revoked) and c2 takes the node over.
    r.w.stop_conductor("c1").await;
    r.w.own("c2", &r.id).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "reconnected", "conductor": "c2"})
    );
    assert_eq!(next_json(&mut ws).await["conductor"], "c2");
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Text("echo:still here".into()));
}

#[tokio::test]
async fn console_ws_leaves_a_frozen_conductor_once_it_lost_the_node() {
    let mut r = rig(Duration::from_secs(20)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    assert_eq!(next_json(&mut ws).await["conductor"], "c1");
    r.c1.connected().await;
    // SIGSTOP: the connection stays open and silent; only its lease ending says anything.
    r.c1.send(Cmd::Freeze);
    r.w.stop_conductor("c1").await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "reconnecting", "{m}");
    assert!(
        m["reason"].as_str().unwrap().contains("no longer holds"),
        "{m}"
    );
    r.w.own("c2", &r.id).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "reconnected", "conductor": "c2"})
    );
    assert_eq!(next_json(&mut ws).await["conductor"], "c2");
    ws.send(Message::Binary(b"thawed".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(b"echo:thawed".to_vec().into())
    );
    r.c1.kill();
}

#[tokio::test]
async fn console_ws_closes_with_1011_once_the_bound_is_spent() {
    let mut r = rig(Duration::from_millis(1500)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    next_json(&mut ws).await;
    r.c1.connected().await;
    r.c1.refuse(1000);
    let started = Instant::now();
    r.c1.send(Cmd::Close(4001, "owner changed; reconnect".into()));
    assert_eq!(next_json(&mut ws).await["type"], "reconnecting");
    // Keystrokes while away go nowhere and do not break anything.
    ws.send(Message::Binary(b"lost".to_vec().into()))
        .await
        .unwrap();
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains("not back"), "{reason}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test]
async fn console_ws_passes_other_close_codes_on() {
    let mut r = rig(Duration::from_secs(10)).await;
    for (code, reason) in [
        (4410, "console disabled"),
        (4408, "idle for 600 s; reconnect to continue"),
        (4429, "viewer too slow"),
        (4404, "console not here"),
    ] {
        let mut ws = viewer(r.addr, &r.id).await;
        next_json(&mut ws).await;
        r.c1.connected().await;
        r.c1.send(Cmd::Close(code, reason.into()));
        assert_eq!(close_frame(&mut ws).await, (code, reason.to_string()));
        r.c1.ended().await;
    }
}

#[tokio::test]
async fn console_ws_viewers_are_told_when_the_gateway_shuts_down() {
    let mut r = rig(Duration::from_secs(10)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    next_json(&mut ws).await;
    r.c1.connected().await;
    r.stop.take();
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1001, "{reason}");
    let why = r.c1.ended().await;
    assert!(why.starts_with("closed by the gateway"), "{why}");
}

#[tokio::test]
async fn console_ws_closes_1009_on_a_frame_over_64_kib_without_forwarding_it() {
    let mut r = rig(Duration::from_secs(10)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    next_json(&mut ws).await;
    r.c1.connected().await;
    ws.send(Message::Binary(vec![b'z'; 64 * 1024 + 1].into()))
        .await
        .unwrap();
    let (code, _) = close_frame(&mut ws).await;
    assert_eq!(code, 1009);
    // The conductor saw no frame: only the gateway leaving.
    match r.c1.next().await {
        Seen::Ended(why) => assert!(why.starts_with("closed by the gateway"), "{why}"),
        other => panic!("the conductor saw {other:?}"),
    }
}

#[tokio::test]
async fn console_ws_closes_a_viewer_that_does_not_read_with_4429() {
    let mut r = rig(Duration::from_secs(10)).await;
    let mut ws = viewer(r.addr, &r.id).await;
    next_json(&mut ws).await;
    r.c1.connected().await;
    // 128 MiB of output, which the viewer does not read: the gateway gives up on it (and
    // leaves the conductor) instead of buffering.
    r.c1.send(Cmd::Flood(2048));
    let why = r.c1.ended().await;
    assert!(
        why.contains("closed by the gateway") || why.contains("dropped"),
        "{why}"
    );
    let mut bytes = 0usize;
    let close = loop {
        match next(&mut ws).await {
            Message::Binary(b) => bytes += b.len(),
            Message::Close(f) => break f.expect("a close code"),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4429, "{close:?}");
    assert!(bytes < 64 * 1024 * 1024, "{bytes} bytes reached the viewer");
}

// --- end to end: the conductor's real console server ------------------------------------------

struct RealConductor {
    service: Option<ferric_console::ConsoleService>,
    _dir: tempfile::TempDir,
}

async fn real_console_server(name: &str, secret: &str) -> RealConductor {
    let dir = tempfile::tempdir().unwrap();
    let settings = ferric_console::ConsoleSettings::new(name, dir.path());
    let service =
        ferric_console::ConsoleService::start(ferric_console::ConsoleConfig::new(secret, settings))
            .await
            .expect("console server starts");
    RealConductor {
        service: Some(service),
        _dir: dir,
    }
}

impl RealConductor {
    fn address(&self) -> String {
        self.service.as_ref().unwrap().local_addr().to_string()
    }

    /// Runs the node's (fake) console here, recording it as the real owner does.
    async fn open(
        &self,
        w: &World,
        id: &str,
        token: ferric_model::FenceToken,
        lease: i64,
    ) -> ractor::ActorRef<ferric_console::ConsoleMsg> {
        let args = ferric_console::ConsoleArgs {
            node: id.parse().unwrap(),
            target: ferric_console::ConsoleTarget::Fake,
            ctx: self.service.as_ref().unwrap().context(),
            record: Some(ferric_console::RecordTo {
                cluster: w.cluster.clone(),
                lease,
                token,
            }),
            notify: Arc::new(|_| {}),
        };
        let (actor, _) = ractor::Actor::spawn(None, ferric_console::ConsoleActor, args)
            .await
            .expect("console actor");
        actor
    }
}

/// Reads until the output contains `needle` (bounded).
async fn output_until(ws: &mut Ws, needle: &str) {
    viewer::read_until(ws, needle.as_bytes()).await;
}

#[tokio::test]
async fn console_ws_through_the_real_console_server_across_a_handover() {
    let mut w = World::with_config(Auth::NoAuth, |c| {
        c.console_reconnect = Duration::from_secs(20)
    })
    .await;
    let secret = w.cluster.console_secret().await.unwrap();
    let mut c1 = real_console_server("c1", &secret).await;
    let mut c2 = real_console_server("c2", &secret).await;
    w.start_conductor_at("c1", &c1.address()).await;
    w.start_conductor_at("c2", &c2.address()).await;
    let id = w.enroll(json!({"driver": "fake-hardware"})).await;
    let token = w.own("c1", &id).await;
    w.call(
        "PUT",
        &format!("/v1/nodes/{id}/states/console"),
        Some(json!({"enabled": true})),
    )
    .await
    .expect(202);
    let actor1 = c1.open(&w, &id, token, w.lease_of("c1")).await;
    let (addr, _stop) = w.serve().await;

    let mut ws = viewer(addr, &id).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["conductor"], "c1");
    assert_eq!(hello["writer"], true);
    output_until(&mut ws, "fake$ ").await;
    ws.send(Message::Binary(b"whoami\r".to_vec().into()))
        .await
        .unwrap();
    output_until(&mut ws, "whoami").await;
    // Ironic's answer shows the session as its conductor recorded it.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = w.get(&format!("/v1/nodes/{id}/states/console")).await;
        if r.json["console_info"]["ferric"]["state"] == "active" {
            assert_eq!(r.json["console_info"]["ferric"]["conductor"], "c1");
            break;
        }
        assert!(Instant::now() < deadline, "never active: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hand-over: c1 stops the console (4001 to its viewers) and lets the node go; c2 takes it.
    ferric_console::ConsoleActor::stop_and_wait(
        &actor1,
        ferric_console::StopReason::OwnerChanged,
        Duration::from_secs(10),
    )
    .await;
    let m = until_type(&mut ws, "reconnecting").await;
    assert!(m["reason"].as_str().unwrap().contains("4001"), "{m}");
    w.stop_conductor("c1").await;
    let token = w.own("c2", &id).await;
    let actor2 = c2.open(&w, &id, token, w.lease_of("c2")).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m, json!({"type": "reconnected", "conductor": "c2"}));
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["conductor"], "c2");
    ws.send(Message::Binary(b"on c2\r".to_vec().into()))
        .await
        .unwrap();
    output_until(&mut ws, "on c2").await;

    // Disabled for good: 4410 reaches the viewer as it is.
    ferric_console::ConsoleActor::stop_and_wait(
        &actor2,
        ferric_console::StopReason::Disabled,
        Duration::from_secs(10),
    )
    .await;
    let (code, _) = close_frame(&mut ws).await;
    assert_eq!(code, 4410);
    for c in [&mut c1, &mut c2] {
        c.service.take().unwrap().shutdown().await;
    }
}

//! The serial console websocket of simulated machines, over real sockets: one session at a time
//! (409 for a second), `DELETE` frees it at once, boot output kept while nobody is connected and
//! replayed first, echo and line answers, oversized messages closed with 1009, and the sessions in
//! the command log.

use std::sync::Arc;
use std::time::Duration;

mod support;

use ferric_sim::{LogOp, SimState, MAX_FRAME_BYTES};
use ferric_testkit::serve::Served;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A serial log entry: kind, system, status, session number, detail.
type SessionLine<'a> = (LogOp, &'a str, Option<u16>, Option<u64>, Option<&'a str>);

const AUTH: &str = "Basic YWRtaW46cGFzc3dvcmQ=";
const WAIT: Duration = Duration::from_secs(10);

struct Sim {
    addr: std::net::SocketAddr,
    state: Arc<SimState>,
    http: reqwest::Client,
    served: Served,
}

impl Sim {
    async fn start() -> Sim {
        let support::InProcess {
            addr,
            state,
            served,
        } = support::start_systems(2).await;
        Sim {
            addr,
            state,
            http: reqwest::Client::new(),
            served,
        }
    }

    fn url(&self, id: &str) -> String {
        format!("ws://{}/sim/systems/{id}/serial", self.addr)
    }

    async fn connect(&self, id: &str) -> Ws {
        let (ws, resp) = timeout(WAIT, tokio_tungstenite::connect_async(self.url(id)))
            .await
            .expect("the handshake does not hang")
            .expect("a session");
        assert_eq!(resp.status().as_u16(), 101);
        ws
    }

    async fn reset(&self, id: &str, reset: &str) {
        let resp = self
            .http
            .post(format!(
                "http://{}/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
                self.addr
            ))
            .header("Authorization", AUTH)
            .json(&serde_json::json!({ "ResetType": reset }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }

    async fn deactivate(&self, id: &str) -> u16 {
        self.http
            .delete(format!("http://{}/sim/systems/{id}/serial", self.addr))
            .header("User-Agent", "ferric-conductor/c2")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn serial_log(&self) -> Vec<ferric_sim::LogEntry> {
        self.state
            .log()
            .since(0)
            .into_iter()
            .filter(|e| matches!(e.op, LogOp::SerialOpen | LogOp::SerialClose))
            .collect()
    }
}

/// Reads binary output until it ends with `suffix`; everything read.
async fn read_until(ws: &mut Ws, suffix: &str) -> String {
    let mut got = Vec::new();
    let read = async {
        while !got.ends_with(suffix.as_bytes()) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                other => panic!(
                    "expected output, got {other:?} after {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
    };
    timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {suffix:?} in time"));
    String::from_utf8_lossy(&got).into_owned()
}

/// The close frame that ends the session (output before it is skipped).
async fn close_frame(ws: &mut Ws) -> Option<tungstenite::protocol::CloseFrame> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    timeout(WAIT, read).await.expect("a close frame in time")
}

fn boot_lines(id: &str, from: &str, what: &str) -> String {
    format!("ferric-sim {id} booting from {from}\r\nLoading {what} ...\r\n\r\n{id} login: ")
}

#[tokio::test]
async fn boot_output_is_kept_then_replayed_and_input_is_echoed() {
    let sim = Sim::start().await;
    // Nobody is connected while the machine boots.
    sim.reset("sim-0", "On").await;
    let mut ws = sim.connect("sim-0").await;
    let boot = boot_lines("sim-0", "Hdd", "the operating system");
    assert_eq!(read_until(&mut ws, "login: ").await, boot);

    ws.send(Message::binary(b"root".to_vec())).await.unwrap();
    assert_eq!(read_until(&mut ws, "root").await, "root");
    // A text frame counts as its bytes; CR LF ends one line.
    ws.send(Message::text("\r\n")).await.unwrap();
    assert_eq!(
        read_until(&mut ws, "login: ").await,
        "\r\nyou typed: root\r\n\r\nsim-0 login: "
    );
    // Garbage is just bytes.
    ws.send(Message::binary(vec![0xff, 0x00, b'\n']))
        .await
        .unwrap();
    let got = read_until(&mut ws, "login: ").await;
    assert!(got.starts_with("\u{fffd}\u{0}\r\nyou typed: "), "{got:?}");

    // A restart while connected: the boot lines come live.
    sim.reset("sim-0", "ForceRestart").await;
    assert_eq!(read_until(&mut ws, "login: ").await, boot);
    assert_eq!(
        sim.state.view("sim-0").unwrap().serial.session,
        Some(1),
        "the view shows the open session"
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn an_off_machine_prints_and_echoes_nothing() {
    let sim = Sim::start().await;
    let mut ws = sim.connect("sim-1").await;
    ws.send(Message::binary(b"hello\r".to_vec())).await.unwrap();
    // The pong comes after the server has handled the input before the ping.
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    match timeout(WAIT, ws.next()).await.expect("a pong in time") {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"p"),
        other => panic!("expected only a pong, got {other:?}"),
    }
    // Then power on: the first output is the boot, not an echo.
    sim.reset("sim-1", "On").await;
    assert_eq!(
        read_until(&mut ws, "login: ").await,
        boot_lines("sim-1", "Hdd", "the operating system")
    );
}

#[tokio::test]
async fn a_second_session_is_refused_until_the_first_is_deactivated() {
    let sim = Sim::start().await;
    let mut first = sim.connect("sim-0").await;
    match tokio_tungstenite::connect_async(sim.url("sim-0")).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 409);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains("in use")),
                "{body}"
            );
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // Another system's console is independent.
    let _other = sim.connect("sim-1").await;

    // DELETE frees it at once and closes the first session.
    assert_eq!(sim.deactivate("sim-0").await, 204);
    let mut second = sim.connect("sim-0").await;
    let frame = close_frame(&mut first).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Normal);
    // The second session works; the first's late input cannot reach the port.
    sim.reset("sim-0", "On").await;
    assert_eq!(
        read_until(&mut second, "login: ").await,
        boot_lines("sim-0", "Hdd", "the operating system")
    );
    // Nothing open is fine too.
    assert_eq!(sim.deactivate("sim-1").await, 204);
    assert_eq!(sim.deactivate("sim-1").await, 204);
    assert_eq!(sim.deactivate("nope").await, 404);

    let log = sim.serial_log();
    let summary: Vec<SessionLine> = log
        .iter()
        .map(|e| {
            (
                e.op,
                e.system.as_str(),
                e.status,
                e.seq,
                e.detail.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (LogOp::SerialOpen, "sim-0", Some(101), Some(1), None),
            (
                LogOp::SerialOpen,
                "sim-0",
                Some(409),
                Some(1),
                Some("session 1 is open")
            ),
            (LogOp::SerialOpen, "sim-1", Some(101), Some(1), None),
            (
                LogOp::SerialClose,
                "sim-0",
                None,
                Some(1),
                Some("deactivated")
            ),
            (LogOp::SerialOpen, "sim-0", Some(101), Some(2), None),
            (
                LogOp::SerialClose,
                "sim-1",
                None,
                Some(1),
                Some("deactivated")
            ),
        ]
    );
    let deactivations: Vec<_> = log
        .iter()
        .filter(|e| e.op == LogOp::SerialClose)
        .map(|e| (e.method.as_str(), e.client.as_deref()))
        .collect();
    assert_eq!(
        deactivations,
        [("DELETE", Some("c2")), ("DELETE", Some("c2"))]
    );
}

#[tokio::test]
async fn a_closed_session_frees_the_console_and_is_logged() {
    let sim = Sim::start().await;
    let mut ws = sim.connect("sim-0").await;
    ws.close(None).await.unwrap();
    // The server answers the close; then the console is free again.
    let _ = timeout(WAIT, async { while ws.next().await.is_some() {} }).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.state.view("sim-0").unwrap().serial.session.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _again = sim.connect("sim-0").await;
    let closes: Vec<_> = sim
        .serial_log()
        .into_iter()
        .filter(|e| e.op == LogOp::SerialClose)
        .map(|e| (e.seq, e.detail))
        .collect();
    assert_eq!(
        closes,
        [(Some(1), Some("closed by the client".to_string()))]
    );
}

#[tokio::test]
async fn a_message_over_64_kib_closes_the_session_with_1009() {
    let sim = Sim::start().await;
    sim.reset("sim-0", "On").await;
    // Just at the limit: fine (echoed).
    let mut ws = sim.connect("sim-0").await;
    read_until(&mut ws, "login: ").await;
    ws.send(Message::binary(vec![b'a'; MAX_FRAME_BYTES]))
        .await
        .unwrap();
    let echo = read_until(&mut ws, &"a".repeat(64)).await;
    assert!(echo.len() <= MAX_FRAME_BYTES);
    // One byte more: closed with 1009.
    ws.send(Message::binary(vec![b'b'; MAX_FRAME_BYTES + 1]))
        .await
        .unwrap();
    let frame = close_frame(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Size);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.state.view("sim-0").unwrap().serial.session.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let close = sim
        .serial_log()
        .into_iter()
        .find(|e| e.op == LogOp::SerialClose)
        .expect("the close is logged");
    assert_eq!(close.detail.as_deref(), Some("message too large"));

    // Far over the limit (cut off by the websocket layer): still 1009.
    let mut ws = sim.connect("sim-0").await;
    ws.send(Message::binary(vec![b'c'; 2 * 1024 * 1024]))
        .await
        .unwrap();
    let frame = close_frame(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Size);
}

#[tokio::test]
async fn plain_requests_and_unknown_systems_are_refused() {
    let sim = Sim::start().await;
    let resp = sim
        .http
        .get(format!("http://{}/sim/systems/sim-0/serial", sim.addr))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("websocket")));
    match tokio_tungstenite::connect_async(sim.url("sim-9")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    assert!(sim.serial_log().is_empty());
}

#[tokio::test]
async fn sessions_end_when_the_simulator_stops() {
    let mut sim = Sim::start().await;
    let mut ws = sim.connect("sim-0").await;
    let state = sim.state.clone();
    sim.served.signal_stop();
    let frame = close_frame(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Away);
    sim.served
        .stopped(WAIT, "a session must not keep the server from stopping")
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while state.view("sim-0").unwrap().serial.session.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
